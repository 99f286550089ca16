"""Re-evaluation without rescanning: match a stored inventory against today's advisories.

Amazon Inspector re-evaluates the stored inventory of an image when a new CVE is published;
this is the same for the built-in scanner. Its version is `1.0+db.<fingerprint>`: the code
version, then the advisory database's fingerprint, so a database update misses the scan
cache for every digest. For a digest whose inventory was kept (`check.inventories`) by the
same scanner code, with the scan types now asked for, the sweep calls `rematch` instead of
pulling the image: the packages are matched again (`AdvisoryDatabase.match`, the scanner's
own code), the secret findings of the original scan are reused (they depend on the image
bytes and the scanner code, both unchanged), and the result is cached under the new
version. No registry call, no image read.

QScanner and the external scanners keep their inventory to themselves; their images are
rescanned as before.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from check.inventories import StoredInventory
from check.scanner import ScanResult
from check.serialize import findings_from_dicts, findings_to_dicts
from securityhub.findings import EcrImage, SecretFinding
from securityhub.logs import fields, get_logger

log = get_logger("check.reevaluate")

DB_SEPARATOR = "+db."
BUILTIN = "builtin"
INVENTORY_FILE = "builtin-inventory.json"  # check.builtin.scanner.INVENTORY_FILE


def code_version(scanner_version: str) -> str:
    """`1.0+db.3f2a...` -> `1.0`: what the inventory depends on (not the advisories)."""
    return scanner_version.split(DB_SEPARATOR, 1)[0]


def can_rematch(scanner: Any, stored: StoredInventory | None, version: str,
                scan_types: Sequence[str]) -> bool:  # fmt: skip
    """The stored inventory can stand in for a scan by this scanner at this version."""
    return (
        stored is not None
        and getattr(scanner, "name", None) == BUILTIN
        and hasattr(scanner, "database")
        and stored.scanner == BUILTIN
        and stored.code_version == code_version(version)
        and set(scan_types) <= set(stored.scan_types)
    )


def _known(cls: Any, doc: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclass_fields(cls)}
    return {k: v for k, v in doc.items() if k in names}


def packages_of(inventory: Mapping[str, Any]) -> tuple[Any, list[Any]]:
    """(OsInfo | None, [InstalledPackage]) from a stored inventory document."""
    from check.builtin.inventory import InstalledPackage, OsInfo

    os_doc = inventory.get("os")
    os_info = None
    if isinstance(os_doc, Mapping):
        values = _known(OsInfo, os_doc)
        values["id_like"] = tuple(values.get("id_like", ()))
        os_info = OsInfo(**values)
    packages = []
    for doc in inventory["packages"]:
        values = _known(InstalledPackage, doc)
        for name, value in values.items():  # JSON lists back to the dataclass's tuples
            if isinstance(value, list):
                values[name] = tuple(value)
        if "files" in values and not isinstance(values["files"], tuple):
            del values["files"]  # a count, not the paths
        packages.append(InstalledPackage(**values))
    return os_info, packages


# (name, version, manager, source name, source version, os) -> [(advisory, fixed version)]
MatchMemo = dict[tuple[Any, ...], list[tuple[Any, str | None]]]


def match_all(database: Any, packages: Sequence[Any], os_info: Any, memo: MatchMemo) -> list[Any]:
    """`database.match` for every package, memoized across inventories: thousands of images
    share their base packages, and the same package at the same version on the same OS
    matches the same advisories (only the file and layer, kept per package, differ)."""
    from check.builtin.advisories import Match

    out = []
    for package in packages:
        key = (package.name, package.version, package.package_manager, package.source_name,
               package.source_version, os_info)  # fmt: skip
        found = memo.get(key)
        if found is None:
            found = [(m.advisory, m.fixed_version) for m in database.match(package, os_info)]
            memo[key] = found
        out += [Match(advisory, package, fixed) for advisory, fixed in found]
    return out


def rematch(
    scanner: Any,
    stored: StoredInventory,
    resource: EcrImage,
    scan_types: Sequence[str],
    memo: MatchMemo | None = None,
) -> ScanResult:
    """The scan result the built-in scanner would give, from the stored inventory."""
    from check.builtin.scanner import vulnerability_findings

    info = scanner.info()
    findings: list[Any] = []
    if "pkg" in scan_types:
        os_info, packages = packages_of(stored.inventory)
        matches = match_all(scanner.database, packages, os_info, {} if memo is None else memo)
        findings += vulnerability_findings(matches, resource, info, scanner.default_severity)
    if "secret" in scan_types:
        findings += [
            f for f in findings_from_dicts(stored.secrets, resource) if isinstance(f, SecretFinding)
        ]
    return ScanResult(
        scanner=info,
        findings=tuple(findings),
        scan_types=tuple(scan_types),
        notes=(f"re-evaluated the inventory stored by {stored.matched_with}; image not pulled",),
    )


def inventory_of(result: ScanResult, digest: str) -> StoredInventory | None:
    """The inventory a built-in scan wrote (its raw `builtin-inventory.json`), to keep."""
    if result.scanner.name != BUILTIN:
        return None
    doc: dict[str, Any]
    if result.inventory is not None:  # the scanner's own Inventory: files owned included
        doc = {
            "os": dataclasses.asdict(result.inventory.os) if result.inventory.os else None,
            "packages": [dataclasses.asdict(p) for p in result.inventory.packages],
        }
    else:
        path = next((Path(p) for p in result.raw_files if Path(p).name == INVENTORY_FILE), None)
        if path is None:
            return None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    secrets = [f for f in result.findings if isinstance(f, SecretFinding)]
    return StoredInventory(
        digest=digest,
        scanner=BUILTIN,
        code_version=code_version(result.scanner.version),
        matched_with=result.scanner.version,
        scan_types=tuple(result.scan_types),
        inventory={"os": doc.get("os"), "packages": doc.get("packages", [])},
        secrets=tuple(findings_to_dicts(secrets)),
    )


class Reevaluator:
    """The sweep's way in: `rematch()` before a scan, `keep()` after one."""

    def __init__(self, store: Any, scanner: Any) -> None:
        self.store = store
        self.scanner = scanner
        self.memo: MatchMemo = {}  # one sweep, one database state (dict ops: thread-safe)

    def rematch(
        self, digest: str, resource: EcrImage, version: str, scan_types: Sequence[str]
    ) -> ScanResult | None:
        """The re-evaluated result, or None (no usable inventory: scan the image)."""
        if getattr(self.scanner, "name", None) != BUILTIN:
            return None  # not even a read: other scanners keep no inventory here
        stored = self.store.get(digest)
        if stored is None or not can_rematch(self.scanner, stored, version, scan_types):
            return None
        from securityhub.errors import ContainerscanError

        try:
            result = rematch(self.scanner, stored, resource, scan_types, self.memo)
        except (ContainerscanError, ValueError, TypeError, KeyError) as exc:
            log.warning(
                "re-evaluation failed; scanning", extra=fields(digest=digest, error=str(exc))
            )
            return None
        self.store.put(dataclasses.replace(stored, matched_with=result.scanner.version))
        return result

    def keep(self, result: ScanResult, digest: str) -> None:
        """Store the inventory of a fresh scan; a failure costs only a later rescan."""
        try:
            stored = inventory_of(result, digest)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("inventory not kept", extra=fields(digest=digest, error=str(exc)))
            return
        if stored is not None:
            self.store.put(stored)
