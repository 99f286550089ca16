"""Benchmark of re-evaluation: 10,000 stored inventories re-matched against the advisories.

    python -m bench.reevaluate                  # 10,000 inventories, the shipped advisories
    python -m bench.reevaluate --count 2000
    CONTAINERSCAN_VULN_DB=DIR python -m bench.reevaluate   # another advisory database

What a sweep does for each digest when the advisory database changed (check.reevaluate):
decode the stored inventory (gzip JSON, as read from S3), rebuild its packages, match every
package (AdvisoryDatabase.match) and build the findings. S3 reads are not included (they run
in the scan pool, one GET per digest, latency-bound). The inventories are generated with a
fixed seed: Alpine 3.10 images (apk packages named in the Alpine secdb, one of five
versions each) with 20-40 Python distributions named after the PyPI projects of the PyPA
data (one of three versions each), each image a distinct combination, as a registry of
images built on shared bases is. `--distinct` gives every package a version of its own
(no two images share a package: the worst case for the match memo). The work runs in a child process so its peak RSS (wait4's rusage) is
the re-evaluation's own. The first figure is the one-time advisory index build.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

SEED = 14
APK_PER_IMAGE = (12, 20)
PIP_PER_IMAGE = (20, 40)


def advisories() -> Path:
    from check.quickstart.data import advisories_dir

    return Path(os.environ.get("CONTAINERSCAN_VULN_DB") or advisories_dir())


def _names(root: Path) -> tuple[list[str], list[str]]:
    pypi = sorted(p.name for p in (root / "pypa-osv" / "vulns").iterdir() if p.is_dir())
    import yaml

    secdb = yaml.safe_load((root / "alpine-secdb" / "v3.10" / "main.yaml").read_text())
    apk = sorted({p["pkg"]["name"] for p in secdb["packages"]})
    return apk, pypi


def inventories(count: int, root: Path, distinct: bool = False) -> list[bytes]:
    """`count` distinct stored inventories, encoded as check.inventories stores them."""
    from check.inventories import StoredInventory, encode

    apk, pypi = _names(root)
    rng = random.Random(SEED)
    out = []
    for n in range(count):
        packages: list[dict[str, Any]] = []
        for name in rng.sample(apk, rng.randint(*APK_PER_IMAGE)):
            version = rng.choice(["1.0.0-r0", "1.1.22-r2", "2.4.46-r0", "7.65.1-r0", "99.0-r0"])
            if distinct:
                version += f"-{n}"
            packages.append({"name": name, "version": version, "package_manager": "apk",
                             "file_path": "lib/apk/db/installed", "source_name": name})  # fmt: skip
        for name in rng.sample(pypi, rng.randint(*PIP_PER_IMAGE)):
            version = f"{rng.randint(0, 3)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}"
            if not distinct:
                version = rng.choice(["0.9.1", "1.4.0", "2.2.3"])
            else:
                version += f".post{n}"
            packages.append({"name": name, "version": version, "package_manager": "pip",
                             "file_path": f"usr/lib/python3.7/site-packages/{name}-{version}"
                                          ".dist-info/METADATA"})  # fmt: skip
        digest = f"sha256:{n:064x}"
        stored = StoredInventory(digest, "builtin", "1.0", "1.0+db.old", ("pkg",),
                                 {"os": {"id": "alpine", "version_id": "3.10.2"},
                                  "packages": packages})  # fmt: skip
        out.append(encode(stored))
    return out


def child(count: int, distinct: bool) -> None:
    from check.builtin.scanner import BuiltinScanner
    from check.inventories import decode
    from check.reevaluate import rematch
    from securityhub.findings import EcrImage

    root = advisories()
    blobs = inventories(count, root, distinct)
    scanner = BuiltinScanner(vuln_db=root)
    started = time.perf_counter()
    scanner.database.index()
    indexed = time.perf_counter() - started
    started = time.perf_counter()
    findings = packages = 0
    memo: dict[Any, Any] = {}
    for n, blob in enumerate(blobs):
        stored = decode(blob, f"inventory {n}")
        image = EcrImage("123456789012", "us-east-1", "bench", stored.digest)
        result = rematch(scanner, stored, image, ("pkg",), memo)
        findings += len(result.findings)
        packages += len(stored.inventory["packages"])
    elapsed = time.perf_counter() - started
    print(f"advisory index: {indexed:.2f} s ({scanner.database.records_indexed} records)")
    print(f"re-matched {count} inventories ({packages} packages, {findings} findings) in "
          f"{elapsed:.2f} s: {1000 * elapsed / count:.2f} ms per inventory")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--distinct", action="store_true", help="no package shared")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    if args.child:
        child(args.count, args.distinct)
        return
    import subprocess

    command = [sys.executable, "-m", "bench.reevaluate", "--child", "--count", str(args.count)]
    process = subprocess.Popen(command + (["--distinct"] if args.distinct else []))
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    print(f"peak RSS of the re-evaluating process: {usage.ru_maxrss / 1024:.0f} MB "
          "(generator and inventories included)")
    if process.returncode:
        raise SystemExit(process.returncode)


if __name__ == "__main__":
    main()
