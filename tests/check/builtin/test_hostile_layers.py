"""Hostile layers: every case fails or finishes within its deadline, in bounded memory.

Each scan runs in the scanner's child process (check.builtin.sandbox); its peak resident
set (wait4's ru_maxrss) and wall time are measured and printed. The cases are the ones
the audit found: a PAX header that asks tarfile for gigabytes, zero padding after the gzip
stream, whiteouts that were applied N x M, a registry that drips bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from check.builtin.image import apply_whiteouts
from check.builtin.sandbox import run_isolated
from check.builtin.scanner import BuiltinScanner, scan_reference
from check.builtin.tarstream import MAX_TAR_HEADER
from securityhub.errors import ImageError, ScanError
from tests.check.builtin.images import OCI_CONFIG, OCI_MANIFEST, Layer, sha256, write_oci_layout
from tests.check.builtin.images import Blobs as _Blobs

MAX_PEAK_RSS = 300 * 1024 * 1024
DEADLINE_SLACK = 1.0  # seconds past the deadline a scan may take to stop
SITE = "usr/lib/python3/dist-packages"
FIGURES: list[str] = []


def _blobs(stored: list[bytes], diff_ids: list[str] | None) -> _Blobs:
    """Config and manifest around layers as stored (gzip or not), diff ids optional."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids or []}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(b), "size": len(b)} for b in stored]}).encode()
    return _Blobs(config, manifest, tuple(stored))


def _scan(tmp_path: Path, blobs: _Blobs, timeout: float, types=("pkg", "secret")):
    write_oci_layout(tmp_path / "img", [(blobs, "linux/amd64")])
    scanner = BuiltinScanner(vuln_db=tmp_path)  # an empty database: reading is the test
    started = time.monotonic()
    try:
        result = scan_reference(f"oci-layout:{tmp_path / 'img'}", scanner=scanner,
                                timeout=timeout, scan_types=types, workdir=tmp_path / "w")
    except ScanError as exc:
        result = exc
    return result, time.monotonic() - started, scanner.last_peak_rss or 0


def _record(case: str, seconds: float, peak: int, timeout: float, outcome: object) -> None:
    kind = type(outcome).__name__
    FIGURES.append(f"{case}: {kind} in {seconds:.2f} s (deadline {timeout:.0f} s), "
                   f"peak RSS {peak / 1048576:.0f} MB")
    print(FIGURES[-1])
    assert seconds <= timeout + DEADLINE_SLACK, FIGURES[-1]
    assert 0 < peak < MAX_PEAK_RSS, FIGURES[-1]


def _pax_bomb(declared: int, kind: bytes = b"x") -> bytes:
    """A gzip layer whose first member (a PAX header by default) declares `declared` bytes
    of zeros.

    Built from one raw-deflate block of 1 MiB of zeros repeated (after a full flush the
    compressor's output for the same input is the same), so a few MB of gzip hold GBs.
    """
    header = tarfile.TarInfo("././@PaxHeader" if kind == b"x" else "var/log/huge.log")
    header.type = kind
    header.size = declared
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
    head = compressor.compress(header.tobuf(tarfile.USTAR_FORMAT)) + \
        compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(b"\0" * 1048576) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert block == compressor.compress(b"\0" * 1048576) + compressor.flush(zlib.Z_FULL_FLUSH)
    body = head + block * (declared // 1048576 + 1) + compressor.flush()
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + body + b"\0" * 8  # CRC never reached


def test_a_huge_pax_header_is_refused_before_it_is_read(tmp_path):
    layer = _pax_bomb(2_900_000_000)
    assert len(layer) < 16 * 1048576
    result, seconds, peak = _scan(tmp_path, _blobs([layer], None), timeout=10)
    assert isinstance(result, ImageError), result
    assert "extended header" in result.message and str(MAX_TAR_HEADER) in result.message
    _record(f"PAX header of 2.9 GB in a {len(layer) / 1048576:.1f} MB gzip layer", seconds,
            peak, 10, result)


def test_a_decompression_bomb_is_stopped_at_the_deadline(tmp_path):
    layer = _pax_bomb(8_000_000_000, kind=tarfile.REGTYPE)  # 8 GB of zeros, one file
    result, seconds, peak = _scan(tmp_path, _blobs([layer], None), timeout=1)
    assert isinstance(result, ScanError) and "timed out" in result.message, result
    _record(f"an 8 GB file in a {len(layer) / 1048576:.0f} MB gzip layer", seconds, peak, 1,
            result)


def test_zero_padding_after_the_gzip_stream_is_skipped_in_bulk(tmp_path):
    tar = Layer().file(f"{SITE}/a-1.0.dist-info/METADATA",
                       "Metadata-Version: 2.1\nName: a\nVersion: 1.0\n").bytes()
    stored = gzip.compress(tar, mtime=0) + b"\0" * (64 * 1048576)
    result, seconds, peak = _scan(tmp_path, _blobs([stored], [sha256(tar)]), timeout=3)
    assert not isinstance(result, Exception), result
    inventory = json.loads((tmp_path / "w" / "builtin-inventory.json").read_text())
    assert [p["name"] for p in inventory["packages"]] == ["a"]
    _record("64 MiB of zero padding after the gzip stream", seconds, peak, 3, result)


def test_garbage_after_the_gzip_stream_is_refused(tmp_path):
    tar = Layer().file("etc/hostname", "x\n").bytes()
    stored = gzip.compress(tar, mtime=0) + b"\0\0garbage"
    result, _, _ = _scan(tmp_path, _blobs([stored], [sha256(tar)]), timeout=5)
    assert isinstance(result, ImageError) and "trailing garbage" in result.message


def test_many_whiteouts_over_many_files_are_applied_fast(tmp_path):
    count = 20000
    lower = Layer()
    for i in range(count):
        lower.file(f"{SITE}/p{i}-1.0.dist-info/METADATA",
                   f"Metadata-Version: 2.1\nName: p{i}\nVersion: 1.0\n")
    upper = Layer()
    for i in range(0, count, 2):  # every other package removed, one whiteout each
        upper.whiteout(f"{SITE}/p{i}-1.0.dist-info")
    for i in range(count // 2):  # and whiteouts of paths that never existed
        upper.whiteout(f"opt/none/{i}")
    tars = [lower.bytes(), upper.bytes()]
    stored = [gzip.compress(t, compresslevel=1, mtime=0) for t in tars]
    result, seconds, peak = _scan(tmp_path, _blobs(stored, [sha256(t) for t in tars]),
                                  timeout=5, types=("pkg",))
    assert not isinstance(result, Exception), result
    inventory = json.loads((tmp_path / "w" / "builtin-inventory.json").read_text())
    names = {p["name"] for p in inventory["packages"]}
    assert len(names) == count // 2 and "p1" in names and "p0" not in names
    _record(f"{count} files and {count} whiteouts "
            f"({sum(map(len, stored)) // 1024} KB image)", seconds, peak, 5, result)


def test_whiteouts_remove_subtrees_and_opaque_directories():
    entries = {"a/b": 1, "a/b/c": 2, "a/bc": 3, "d/e": 4, "d/f/g": 5, "x": 6}
    apply_whiteouts(entries, deleted=["a/b"], opaque=["d"])
    assert entries == {"a/bc": 3, "x": 6}


class _DrippingRegistry(BaseHTTPRequestHandler):
    """Serves one image; its layer blob arrives one byte every 0.2 s, forever."""

    blobs: ClassVar[dict[str, bytes]] = {}
    manifest: bytes = b""
    drip: str = ""

    def log_message(self, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        if "/manifests/" in self.path:
            body, kind = self.manifest, OCI_MANIFEST
        elif "/blobs/" in self.path and self.path.rsplit("/", 1)[1] in self.blobs:
            body, kind = self.blobs[self.path.rsplit("/", 1)[1]], "application/octet-stream"
        else:
            body, kind = b"{}", "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            if self.path.endswith(self.drip):
                for byte in body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            else:
                self.wfile.write(body)
        except OSError:
            return  # the scanner hung up (killed at its deadline)


@pytest.mark.parametrize("isolate", [True, False], ids=["killed", "registry-deadline"])
def test_a_slow_dripping_registry_is_cut_at_the_deadline(tmp_path, isolate):
    tar = Layer().file("etc/os-release", "ID=debian\n").bytes()
    blobs = _blobs([gzip.compress(tar, mtime=0)], [sha256(tar)])
    handler = type("Handler", (_DrippingRegistry,), {
        "blobs": blobs.all(), "manifest": blobs.manifest, "drip": sha256(blobs.layers[0])})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        # Killed by the sandbox, or (not isolated) stopped by the registry client's deadline.
        scanner = BuiltinScanner(vuln_db=tmp_path, isolate=isolate)
        started = time.monotonic()
        with pytest.raises(ScanError, match="timed out") as caught:
            scan_reference(f"{host}/app@{blobs.manifest_digest}", scanner=scanner, timeout=3,
                           workdir=tmp_path / "w")
        seconds = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    if isolate:
        _record("a registry dripping one byte every 0.2 s", seconds,
                scanner.last_peak_rss or 0, 3, caught.value)
    else:
        assert seconds <= 3 + DEADLINE_SLACK


def _spin() -> None:
    digest = hashlib.sha256()
    while True:  # a parser stuck in a loop: no deadline check will ever run
        digest.update(b"x")


def test_a_runaway_child_is_killed_at_its_deadline():
    started = time.monotonic()
    with pytest.raises(ScanError, match="killed"):
        run_isolated(_spin, what="runaway", deadline=time.monotonic() + 1)
    assert time.monotonic() - started <= 1 + DEADLINE_SLACK


def test_the_address_space_limit_turns_a_bomb_into_an_image_error():
    measured = []
    with pytest.raises(ImageError, match="more than 64 MiB"):
        run_isolated(lambda: bytearray(512 * 1048576), what="bomb", deadline=None,
                     memory_limit=64 * 1048576, report=lambda p, s: measured.append(p))
    assert measured and measured[0] < MAX_PEAK_RSS


def test_a_lock_another_thread_holds_at_fork_time_is_not_inherited_held():
    """A sweep scans from several threads; the log masker's lock may be held at fork."""
    from securityhub import logs

    def hold() -> None:
        with logs._secrets_lock:
            time.sleep(0.5)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.05)
    outcome = run_isolated(lambda: logs.register_secret("a-registry-token-1234") or "ok",
                           what="lock", deadline=time.monotonic() + 5)
    holder.join()
    assert outcome.value == "ok"
