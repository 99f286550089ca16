"""Re-evaluation, pure parts: stored inventories round-trip, the match memo changes nothing."""

from __future__ import annotations

import pytest

from check.builtin.scanner import BuiltinScanner
from check.inventories import StoredInventory, decode, encode
from check.quickstart.data import advisories_dir
from check.reevaluate import can_rematch, code_version, rematch
from securityhub.findings import EcrImage

IMAGE = EcrImage("123456789012", "us-east-1", "app", "sha256:" + "e" * 64)


def _stored(requests_version: str, layer: str) -> StoredInventory:
    packages = [
        {"name": "requests", "version": requests_version, "package_manager": "pip",
         "file_path": f"app/requests-{requests_version}.dist-info/METADATA", "layer": layer},
        {"name": "musl", "version": "1.1.22-r2", "package_manager": "apk",
         "file_path": "lib/apk/db/installed", "source_name": "musl", "layer": layer,
         "files": 3},  # a count, as the built-in scanner's raw output has it
    ]  # fmt: skip
    return StoredInventory(IMAGE.digest, "builtin", "1.0", "1.0+db.old", ("pkg", "secret"),
                           {"os": {"id": "alpine", "version_id": "3.10.2"},
                            "packages": packages})  # fmt: skip


def test_encode_decode_and_what_can_stand_in_for_a_scan() -> None:
    stored = _stored("2.22.0", "sha256:" + "1" * 64)
    assert decode(encode(stored), "x") == stored
    with pytest.raises(ValueError, match="not a stored inventory"):
        decode(b"not gzip", "s3://bucket/key")
    scanner = BuiltinScanner(vuln_db=advisories_dir())
    assert code_version("1.0+db.3f2a") == "1.0"
    assert can_rematch(scanner, stored, "1.0+db.new", ("pkg",))
    assert not can_rematch(scanner, stored, "2.0+db.new", ("pkg",))  # new scanner code
    assert not can_rematch(scanner, None, "1.0+db.new", ("pkg",))


def test_the_memo_gives_the_same_findings_with_each_image_own_files() -> None:
    scanner = BuiltinScanner(vuln_db=advisories_dir())
    first, second = _stored("2.22.0", "sha256:" + "1" * 64), _stored("2.22.0", "sha256:" + "2" * 64)
    memo: dict = {}  # type: ignore[type-arg]
    shared = [rematch(scanner, s, IMAGE, ("pkg",), memo).findings for s in (first, second)]
    alone = [rematch(scanner, s, IMAGE, ("pkg",)).findings for s in (first, second)]
    assert shared == alone and shared[0]
    assert "CVE-2023-32681" in {f.vulnerability_id for f in shared[0]}  # requests < 2.31.0
    layers = {p.layer for f in shared[1] for p in f.packages}
    assert layers == {"sha256:" + "2" * 64}  # the second image's own layer, not the first's
