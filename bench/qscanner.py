"""What running and parsing a scanner costs us, apart from the scanner's own work.

1. Parsing: a large QScanner SARIF report (2,000 QIDs, 3 packages each) with its
   ScanResult (6,000 packages, 500 secrets), and the stored Trivy/Grype reports repeated.
2. Running: scans of a clean image through `QScanner.scan` with the stand-in
   (tests/bin/qscanner), against the bare cost of starting the stand-in (`version`) with
   subprocess.run, so the difference is what the runner adds per image (process group,
   pidfd, capped output files, report parsing of an empty report).

Other work shares this 2-core machine: read the figures as orders of magnitude.

    python -m bench.qscanner
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from check.qscanner import QScanner
from check.reports.grype import parse_grype
from check.reports.sarif import parse_sarif
from check.reports.scanresult import parse_scan_result
from check.reports.trivy import parse_trivy
from check.scanner import RegistryAuth, ScanTarget
from securityhub.findings import EcrImage, ScannerInfo

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "bin" / "qscanner"
REPORTS = ROOT / "tests" / "data" / "reports"
DIGEST = "sha256:" + "ab" * 32
IMAGE = EcrImage("123456789012", "us-east-1", "bench/app", DIGEST)
SCANNER = ScannerInfo("qscanner", "4.8.0-2")
QIDS = 2_000
RUNS = 30


def big_sarif() -> bytes:
    rules, results = [], []
    for i in range(QIDS):
        qid = 370_000 + i
        rules.append(
            {
                "id": str(qid),
                "shortDescription": {"text": f"Update for pkg{i}"},
                "properties": {"severity": 1 + i % 5, "cve-ids": [f"CVE-2024-{10000 + i}"]},
            }
        )
        results.append(
            {
                "ruleId": str(qid),
                "message": {"text": f"Update for pkg{i}"},
                "properties": {
                    "QID": qid,
                    "vulnerableSoftware": [
                        {
                            "name": f"pkg{i}-{j}",
                            "installedVersion": "1.0.0-r0",
                            "fixedVersion": "1.0.1-r0",
                            "layerSHA": DIGEST,
                        }
                        for j in range(3)
                    ],
                },
            }
        )
    doc = {
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "QScanner", "rules": rules}}, "results": results}],
    }
    return json.dumps(doc).encode()


def big_scan_result() -> bytes:
    packages = [
        {"Name": f"pkg{i}-{j}", "Version": "1.0.0-r0"} for i in range(QIDS) for j in range(3)
    ]
    secrets = [
        {
            "RuleID": "generic-api-key",
            "Category": "Generic",
            "Severity": "HIGH",
            "Title": "Generic API key",
            "StartLine": i,
            "Match": "****",
        }
        for i in range(500)
    ]
    doc = {
        "Metadata": {"TargetMetadata": {"ImageMetadata": {"OS": "alpine 3.19.1"}}},
        "OSResults": [{"Target": "alpine 3.19.1", "Packages": packages}],
        "SecretResults": [{"Target": "/app/config.env", "Secrets": secrets}],
    }
    return json.dumps(doc).encode()


def timed(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_parsing() -> None:
    sarif, scan_result = big_sarif(), big_scan_result()
    inv = parse_scan_result(scan_result, "s.json", image=IMAGE, scanner=SCANNER)
    t_inv = timed(lambda: parse_scan_result(scan_result, "s.json", image=IMAGE, scanner=SCANNER))
    t_sarif = timed(
        lambda: parse_sarif(
            sarif, "r.sarif.json", image=IMAGE, scanner=SCANNER, inventory=inv.package_index()
        )
    )
    findings = parse_sarif(sarif, "r", image=IMAGE, scanner=SCANNER).findings
    print(
        f"SARIF {len(sarif) / 1e6:.1f} MB, {len(findings)} findings x 3 packages: "
        f"{t_sarif * 1000:.0f} ms ({t_sarif / len(findings) * 1e6:.0f} us per finding)"
    )
    print(
        f"ScanResult {len(scan_result) / 1e6:.1f} MB, {len(inv.inventory)} packages, "
        f"{len(inv.secrets)} secrets: {t_inv * 1000:.0f} ms"
    )
    trivy = (REPORTS / "trivy-api.json").read_bytes()
    grype = (REPORTS / "grype-api.json").read_bytes()
    t_trivy = timed(lambda: parse_trivy(trivy, "t", image=IMAGE, scanner=SCANNER), 50)
    t_grype = timed(lambda: parse_grype(grype, "g", image=IMAGE, scanner=SCANNER), 50)
    print(
        f"stored Trivy report: {t_trivy * 1000:.2f} ms; stored Grype report: "
        f"{t_grype * 1000:.2f} ms"
    )


def bench_runner() -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "QSCANNER_PATH": str(STANDIN),
        "QUALYS_POD": "US1",
        "QUALYS_ACCESS_TOKEN": "bench-token-0123456789",
    }
    scanner = QScanner.from_config(environ=env)
    target = ScanTarget(IMAGE, ("pkg", "secret"), RegistryAuth("AWS", "bench-password-123"))
    bare, runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(RUNS):
            start = time.perf_counter()
            subprocess.run([str(STANDIN), "--version"], env=env, capture_output=True, check=True)
            bare.append(time.perf_counter() - start)
            start = time.perf_counter()
            scanner.scan(target, Path(tmp) / str(i), 60)
            runs.append(time.perf_counter() - start)
    b, r = statistics.median(bare), statistics.median(runs)
    print(f"stand-in start (`qscanner --version` via subprocess.run): median {b * 1000:.1f} ms")
    print(
        f"QScanner.scan of a clean image with the stand-in: median {r * 1000:.1f} ms "
        f"(p90 {sorted(runs)[int(RUNS * 0.9)] * 1000:.1f} ms)"
    )
    print(f"-> runner + stand-in scan work beyond a bare start: {(r - b) * 1000:.1f} ms per image")


if __name__ == "__main__":
    bench_parsing()
    bench_runner()
