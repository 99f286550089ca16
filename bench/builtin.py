"""Benchmark of the built-in scanner: inventory and match a large generated image.

    python -m bench.builtin                 # 100 MB and 500 MB images, 5,000 package files
    python -m bench.builtin --sizes 500     # one size
    python -m bench.builtin --real          # the real-content image only (about 129 MB)
    CONTAINERSCAN_VULN_DB=DIR python -m bench.builtin   # another advisory database

The real-content image (issue 13: "129 MB, 13.9k files, 147 packages, <= 2.5 s") is built
from this machine's own files: 120 real Debian packages from the apt cache
(/var/cache/apt/archives, unpacked with `dpkg-deb --fsys-tarfile`, with the dpkg status
stanzas and `info/*.list` files dpkg would write), the Python distributions of
/usr/lib/python3, and /usr/share files up to the size. Real text, real package metadata,
real binaries: what the secret rules and the inventory meet in production.

The image is an OCI layout in a temporary directory (deleted afterwards): a dpkg database,
Python distributions named after real PyPI projects of the advisory data (so matching does
real work), Node packages, and package files (text and incompressible binaries) filling it
to the target size, gzip layers. Each scan runs in a fresh child process so that its peak
RSS (from wait4's rusage) measures the scan alone, not the generator; the image itself is
read in the scanner's own grandchild (`check.builtin.sandbox`), whose peak is reported too.

Targets (issue 6): under 30 s and under 300 MB for 500 MB; memory independent of the size.
Timings are noisy on a shared 2-core machine; the memory figure is not.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

PACKAGE_FILES = 5000
DPKG_PACKAGES = 400  # x 4 files
PY_DISTS = 400  # x 5 files (METADATA, RECORD, 3 modules)
NODE_PACKAGES = 700  # x 2 files (package.json, index.js)
REPO = Path(__file__).resolve().parents[1]


def default_advisories() -> Path:
    from check.quickstart.data import advisories_dir

    return Path(os.environ.get("CONTAINERSCAN_VULN_DB") or advisories_dir())


class _LayerWriter:
    """A gzip tar layer written to disk as it is built; digests computed on the way."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("wb")
        self._blob_hash = hashlib.sha256()
        self._tar_hash = hashlib.sha256()
        outer = self

        class _Sink(io.RawIOBase):
            def writable(self) -> bool:
                return True

            def write(self, data) -> int:  # type: ignore[override]
                outer._blob_hash.update(data)
                outer._file.write(data)
                return len(data)

        self._gzip = gzip.GzipFile(fileobj=_Sink(), mode="wb", compresslevel=1, mtime=0)

        class _TarSink(io.RawIOBase):
            def writable(self) -> bool:
                return True

            def write(self, data) -> int:  # type: ignore[override]
                outer._tar_hash.update(data)
                outer._gzip.write(data)
                return len(data)

        self.tar = tarfile.open(fileobj=_TarSink(), mode="w|", format=tarfile.PAX_FORMAT)

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> tuple[str, str, int]:
        self.tar.close()
        self._gzip.close()
        self._file.close()
        return ("sha256:" + self._blob_hash.hexdigest(), "sha256:" + self._tar_hash.hexdigest(),
                self.path.stat().st_size)


def _pypi_names(advisories: Path, count: int) -> list[str]:
    vulns = advisories / "pypa-osv" / "vulns"
    names = sorted(p.name for p in vulns.iterdir()) if vulns.is_dir() else []
    names += [f"benchpkg{i}" for i in range(count - len(names))]
    return names[:count]


def generate(root: Path, size_mb: int, advisories: Path) -> dict[str, int]:
    """An OCI layout of about `size_mb` MB with PACKAGE_FILES files that belong to packages."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    text_files = DPKG_PACKAGES * 3 + PY_DISTS * 5 + NODE_PACKAGES * 2
    binaries = PACKAGE_FILES - text_files
    binary_size = size_mb * 1024 * 1024 // binaries
    layers = []
    # Layer 1: the OS and its packages (copyright, docs, a .so each).
    writer = _LayerWriter(root / "layer1")
    writer.add("etc/os-release", b'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian 12"\n')
    status = io.StringIO()
    counter = 0
    for i in range(DPKG_PACKAGES):
        name = f"libbench{i}"
        status.write(f"Package: {name}\nStatus: install ok installed\nVersion: 1.{i}-1\n"
                     f"Architecture: amd64\nDescription: bench package {i}\n\n")
        writer.add(f"usr/share/doc/{name}/copyright", (f"Copyright {i}\n" * 40).encode())
        writer.add(f"usr/share/doc/{name}/changelog", (f"* change {i}\n" * 60).encode())
        writer.add(f"usr/lib/{name}/README", (f"token = value{i}\n" * 20).encode())
    writer.add("var/lib/dpkg/status", status.getvalue().encode())
    per_layer = binaries // 3
    for _ in range(per_layer):
        writer.add(f"usr/lib/x86_64-linux-gnu/libbench{counter}.so", os.urandom(binary_size))
        counter += 1
    layers.append(writer.close())
    # Layer 2: Python distributions named after real advisory subjects.
    writer = _LayerWriter(root / "layer2")
    site = "usr/lib/python3/dist-packages"
    for name in _pypi_names(advisories, PY_DISTS):
        info = f"{site}/{name}-0.0.1.dist-info"
        writer.add(f"{info}/METADATA",
                   f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n\n".encode())
        writer.add(f"{info}/RECORD", f"{name}/__init__.py,,\n".encode())
        for module in ("__init__", "core", "util"):
            writer.add(f"{site}/{name}/{module}.py",
                       (f"def f_{module}():\n    return {module!r}\n" * 50).encode())
    for _ in range(per_layer):
        writer.add(f"{site}/_bench/ext{counter}.so", os.urandom(binary_size))
        counter += 1
    layers.append(writer.close())
    # Layer 3: Node packages.
    writer = _LayerWriter(root / "layer3")
    for i in range(NODE_PACKAGES):
        base = f"app/node_modules/bench-{i}"
        writer.add(f"{base}/package.json",
                   json.dumps({"name": f"bench-{i}", "version": f"1.0.{i}"}).encode())
        writer.add(f"{base}/index.js", (f"module.exports = {i};\n" * 30).encode())
    while counter < binaries:
        writer.add(f"app/native/addon{counter}.node", os.urandom(binary_size))
        counter += 1
    layers.append(writer.close())

    _write_layout(root, layers)
    return {"files": PACKAGE_FILES + 2, "compressed_bytes": sum(s for _, _, s in layers)}


def _write_layout(root: Path, layers: list[tuple[str, str, int]]) -> None:
    """Move the written layers into place; write config, manifest and index."""
    blobs = root / "blobs" / "sha256"
    for position, (digest, _, _) in enumerate(layers, 1):
        os.replace(root / f"layer{position}", blobs / digest.split(":")[1])
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [d for _, d, _ in layers]}}
                        ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    (blobs / config_digest.split(":")[1]).write_bytes(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": d, "size": s} for d, _, s in layers],
    }).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    (blobs / manifest_digest.split(":")[1]).write_bytes(manifest)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
         "size": len(manifest)}]}))


REAL_TARGET_BYTES = 129 * 1024 * 1024
REAL_TARGET_FILES = 13900
REAL_DEBS = 120
APT_CACHE = Path("/var/cache/apt/archives")


def _real_debs(count: int) -> list[Path]:
    """The smallest real .debs of the apt cache (deterministic: by size, then name)."""
    debs = sorted(APT_CACHE.glob("*.deb"), key=lambda p: (p.stat().st_size, p.name))
    return debs[:count]


def _add_deb(writer: _LayerWriter, deb: Path, status: io.StringIO) -> int:
    """Unpack one .deb into the layer as dpkg would install it; bytes added."""
    control = subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True,
                             text=True).stdout.rstrip("\n")
    name = control.split("\n", 1)[0].partition(":")[2].strip()
    status.write(control.replace("\n", "\nStatus: install ok installed\n", 1) + "\n\n")
    fsys = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True,
                          capture_output=True).stdout
    listed, added = [], 0
    with tarfile.open(fileobj=io.BytesIO(fsys), mode="r:") as tar:
        for member in tar:
            path = os.path.normpath("/" + member.name)
            if path != "/":
                listed.append(path)
            if member.isfile():
                data = tar.extractfile(member)
                if data is not None:
                    writer.add(path.lstrip("/"), data.read())
                    added += member.size
    writer.add(f"var/lib/dpkg/info/{name}.list", ("\n".join(listed) + "\n").encode())
    return added


def _host_files(top: Path) -> list[Path]:
    found = []
    for directory, subdirs, names in os.walk(top):
        subdirs.sort()
        for name in sorted(names):
            path = Path(directory) / name
            if path.is_file() and not path.is_symlink():
                found.append(path)
    return found


def generate_real(root: Path) -> dict[str, int]:
    """An OCI layout of real files (see the module docstring), about REAL_TARGET_BYTES."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layers, total, files = [], 0, 0
    writer = _LayerWriter(root / "layer1")
    writer.add("etc/os-release", Path("/etc/os-release").read_bytes())
    status = io.StringIO()
    for deb in _real_debs(REAL_DEBS):
        total += _add_deb(writer, deb, status)
    writer.add("var/lib/dpkg/status", status.getvalue().encode())
    layers.append(writer.close())
    writer = _LayerWriter(root / "layer2")
    for path in _host_files(Path("/usr/lib/python3")):
        data = path.read_bytes()
        writer.add(str(path).lstrip("/"), data)
        total, files = total + len(data), files + 1
    layers.append(writer.close())
    writer = _LayerWriter(root / "layer3")
    for path in _host_files(Path("/usr/share")):
        if total >= REAL_TARGET_BYTES or files >= REAL_TARGET_FILES:
            break
        size = path.stat().st_size
        if size > 4 * 1024 * 1024:
            continue
        writer.add(str(path).lstrip("/"), path.read_bytes())
        total, files = total + size, files + 1
    layers.append(writer.close())
    _write_layout(root, layers)
    return {"files": files, "compressed_bytes": sum(s for _, _, s in layers),
            "bytes": total}


def scan_child(layout: str, advisories: str) -> None:
    """Runs in the child: scan, print one JSON line of figures."""
    from check.builtin.scanner import BuiltinScanner, scan_reference

    scanner = BuiltinScanner(vuln_db=advisories)
    scanner.database.index()  # the advisory index is built once per process, not per image
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as workdir:
        result = scan_reference(f"oci-layout:{layout}", workdir=Path(workdir), scanner=scanner)
        inventory = json.loads((Path(workdir) / "builtin-inventory.json").read_text())
    print(json.dumps({
        "seconds": round(time.monotonic() - started, 2),
        # The image is read in the scanner's own child process (check.builtin.sandbox).
        "scan_peak_rss_mb": round((scanner.last_peak_rss or 0) / 2**20),
        "packages": len(inventory["packages"]),
        "vulnerabilities": sum(1 for f in result.findings if f.kind == "vulnerability"),
        "secrets": sum(1 for f in result.findings if f.kind == "secret"),
    }))


def run(size_mb: int, advisories: Path) -> dict[str, object]:
    """Scan a generated image of `size_mb` MB, or the real-content image when 0."""
    root = Path(tempfile.mkdtemp(prefix="containerscan-bench-"))
    try:
        started = time.monotonic()
        if size_mb:
            shape = generate(root / "layout", size_mb, advisories)
        else:
            shape = generate_real(root / "layout")
            size_mb = round(shape["bytes"] / 2**20)
        generated = time.monotonic() - started
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.builtin", "--child", str(root / "layout"),
             str(advisories)], stdout=subprocess.PIPE, cwd=REPO)
        assert process.stdout is not None
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise SystemExit(f"scan failed with exit code {process.returncode}")
        figures = json.loads(output.decode().strip().splitlines()[-1])
        return {"size_mb": size_mb, "generate_s": round(generated, 1),
                "compressed_mb": round(int(shape["compressed_bytes"]) / 2**20),
                "peak_rss_mb": round(usage.ru_maxrss / 1024), **figures}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,500", help="image sizes in MB")
    parser.add_argument("--real", action="store_true",
                        help="only the real-content image (see the module docstring)")
    parser.add_argument("--child", nargs=2, metavar=("LAYOUT", "ADVISORIES"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        scan_child(*args.child)
        return
    advisories = default_advisories()
    if not advisories.is_dir():
        raise SystemExit(f"no advisory data at {advisories}; set CONTAINERSCAN_VULN_DB")
    print(f"built-in scanner: {PACKAGE_FILES} package files; advisories {advisories}")
    print(f"{'size':>11} {'gz MB':>6} {'scan s':>7} {'peak RSS MB':>12} {'reader MB':>10} "
          f"{'packages':>9} {'vulns':>6} {'secrets':>8}  (generation s)")
    sizes = [] if args.real else [int(s) for s in args.sizes.split(",")]
    for size in [*sizes, 0]:
        row = run(size, advisories)
        label = "real " if size == 0 else "     "
        print(f"{label}{row['size_mb']:>5}M {row['compressed_mb']:>6} {row['seconds']:>7} "
              f"{row['peak_rss_mb']:>12} {row['scan_peak_rss_mb']:>10} {row['packages']:>9} "
              f"{row['vulnerabilities']:>6} {row['secrets']:>8}  ({row['generate_s']})")
    print("targets: 500M scan < 30 s; real image <= 2.5 s; peak RSS < 300 MB and flat across "
          "sizes (timings are noisy: other work shares this 2-core machine)")


if __name__ == "__main__":
    main()
