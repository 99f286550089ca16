"""QScanner's `*-ScanResult.json`: image metadata, package inventory, secrets.

Shape (reference 3.2; QScanner is Trivy-derived, so empty arrays may be omitted):

    { SchemaVersion, QScannerVersion,
      ScansPerformed[]{ ScanType, ScanDuration, Status: "SUCCESS"|"FAILED", PartialScanInfo },
      Metadata{ ScanStartTime, ScanEndTime,
                TargetMetadata{ ImageMetadata{ ImageID, RepoTags[], RepoDigests[], OS,
                                               Architecture } } },
      OSResults[]{ Target, Packages[]{ Name, Version, Release, Arch, SrcName, SrcVersion } },
      SCAResults[]{ Target, Packages[]{ Name, Version, Language, Licenses[], PURL, FilePath } },
      SecretResults[]{ Target, Secrets[]{ RuleID, Category, Severity, Title, StartLine,
                                          EndLine, Match, Layer{Digest} } } }

`Metadata.TargetMetadata.ImageMetadata` is where a real 4.x file keeps the image fields
(nelssec/qualys-lambda 51fbc57); the older `Metadata.Target` spelling is accepted too.
SchemaVersion 5 (Qualys's QScanner 4.8.0 README, reference section 8): `ScanDuration` is an
integer of nanoseconds (older files: a Go duration string such as "0.4s"), `OS` and
`Architecture` may sit at target level beside the image's ID, RepoTags and RepoDigests, and
secret `RuleID`s are UUIDs (so the finding's title comes from `Title`/`Category`).

Secrets: `Match` (masked or not) is never read. A SecretFinding carries the rule, the file
and the line only, so no secret value can reach a finding, a log or Security Hub.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from check.reports.document import Node, load_json, opt_str
from check.reports.packages import package_manager
from securityhub.findings import (
    QUALYS_SEVERITY,
    EcrImage,
    ScannerInfo,
    SecretFinding,
    Severity,
)

# ScansPerformed[].ScanType values -> our scan types ("os" and "sca" are older names for
# what 4.x calls "pkg").
_SCAN_TYPES = {"pkg": "pkg", "os": "pkg", "sca": "pkg", "secret": "secret"}  # nosec B105 # names


@dataclass(frozen=True)
class ImageMetadata:
    image_id: str | None = None
    os: str | None = None
    architecture: str | None = None
    repo_tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, str]:
        """Flat string fields for ScanResult.metadata (empty ones left out)."""
        out = {
            "image_id": self.image_id or "",
            "os": self.os or "",
            "architecture": self.architecture or "",
            "repo_tags": ",".join(self.repo_tags),
            "repo_digests": ",".join(self.repo_digests),
        }
        return {key: value for key, value in out.items() if value}

    def matches_digest(self, digest: str) -> bool | None:
        """Whether the scanned image is `digest`; None when the report does not say."""
        if not self.repo_digests:
            return None
        return any(entry.rsplit("@", 1)[-1] == digest for entry in self.repo_digests)


@dataclass(frozen=True)
class InventoryPackage:
    name: str
    version: str
    package_manager: str | None = None
    file_path: str | None = None


@dataclass(frozen=True)
class ScanStatus:
    scan_type: str  # as QScanner names it
    status: str  # SUCCESS, FAILED, ...
    duration_s: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status.upper() == "SUCCESS"


@dataclass(frozen=True)
class QScannerScanResult:
    qscanner_version: str | None
    scans: tuple[ScanStatus, ...]
    metadata: ImageMetadata
    inventory: tuple[InventoryPackage, ...]
    secrets: tuple[SecretFinding, ...]

    def failed_scan_types(self) -> frozenset[str]:
        """Our scan types ("pkg", "secret") whose QScanner scans did not succeed."""
        return frozenset(
            _SCAN_TYPES[s.scan_type.lower()]
            for s in self.scans
            if not s.succeeded and s.scan_type.lower() in _SCAN_TYPES
        )

    def package_index(self) -> dict[str, list[InventoryPackage]]:
        index: dict[str, list[InventoryPackage]] = {}
        for package in self.inventory:
            index.setdefault(package.name, []).append(package)
        return index


def parse_scan_result(
    data: bytes | str,
    source: str,
    *,
    image: EcrImage,
    scanner: ScannerInfo,
    severity_map: Mapping[int, Severity] = QUALYS_SEVERITY,
) -> QScannerScanResult:
    """Parse one `*-ScanResult.json`; malformed content raises ReportParseError."""
    root = load_json(data, source)
    version_node = root.opt("QScannerVersion")
    scans = tuple(_scan_status(node) for node in _array(root, "ScansPerformed"))
    metadata = _metadata(root.get("Metadata"))
    os_manager = package_manager(metadata.os)
    inventory: list[InventoryPackage] = []
    for result in _array(root, "OSResults"):
        target_manager = package_manager(opt_str(result, "Target")) or os_manager
        for pkg in _array(result, "Packages"):
            version = pkg.get("Version").text()
            release = opt_str(pkg, "Release")
            inventory.append(
                InventoryPackage(
                    name=pkg.get("Name").string(),
                    version=f"{version}-{release}" if release else version,
                    package_manager=target_manager,
                )
            )
    for result in _array(root, "SCAResults"):
        for pkg in _array(result, "Packages"):
            inventory.append(
                InventoryPackage(
                    name=pkg.get("Name").string(),
                    version=pkg.get("Version").text(),
                    package_manager=package_manager(opt_str(pkg, "Language")),
                    file_path=opt_str(pkg, "FilePath") or opt_str(result, "Target"),
                )
            )
    secrets: dict[tuple[str, ...], SecretFinding] = {}
    for result in _array(root, "SecretResults"):
        file_path = result.get("Target").string()
        for node in _array(result, "Secrets"):
            finding = _secret(node, file_path, image, scanner, severity_map)
            secrets.setdefault(finding.identity(), finding)  # one per (rule, file, line)
    return QScannerScanResult(
        qscanner_version=version_node.text() if version_node else None,
        scans=scans,
        metadata=metadata,
        inventory=tuple(inventory),
        secrets=tuple(secrets[key] for key in sorted(secrets)),
    )


def _array(node: Node, key: str) -> list[Node]:
    child = node.opt(key)
    return [] if child is None else list(child.items())


def _scan_status(node: Node) -> ScanStatus:
    duration = node.opt("ScanDuration")
    return ScanStatus(
        scan_type=node.get("ScanType").string(),
        status=node.get("Status").string(),
        duration_s=_duration(duration) if duration is not None else None,
    )


_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|h|m|s)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
NANOSECONDS = 1e9


def _duration(node: Node) -> float:
    """Seconds from integer nanoseconds (SchemaVersion 5) or a Go duration ("1m0.4s")."""
    value = node.value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / NANOSECONDS
    text = node.string()
    pos, total = 0, 0.0
    for match in _GO_DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise node.error(f"expected nanoseconds or a Go duration, got {text!r}")
    return total


def _metadata(node: Node) -> ImageMetadata:
    target = node.opt("TargetMetadata") or node.opt("Target")
    image = target.opt("ImageMetadata") if target is not None else None
    image = image or target
    if image is None or target is None:
        return ImageMetadata()
    tags = image.opt("RepoTags")
    digests = image.opt("RepoDigests")

    def either(*keys: str) -> str | None:  # the image's level, else the target's
        return opt_str(image, *keys) or opt_str(target, *keys)

    return ImageMetadata(
        image_id=either("ImageID", "ImageId", "ID"),
        os=either("OS", "OperatingSystem"),
        architecture=either("Architecture"),
        repo_tags=tags.strings() if tags else (),
        repo_digests=digests.strings() if digests else (),
    )


def secret_severity(node: Node, severity_map: Mapping[int, Severity]) -> Severity:
    """A label ("HIGH") or a Qualys number (4, "4")."""
    value = node.value
    if (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and value.strip().isdigit()
    ):
        number = node.integer()
        if number not in severity_map:
            raise node.error(f"unknown severity {number}; expected one of {sorted(severity_map)}")
        return severity_map[number]
    try:
        return Severity.parse(node.string())
    except ValueError as exc:
        raise node.error(str(exc)) from None


def _secret(
    node: Node,
    file_path: str,
    image: EcrImage,
    scanner: ScannerInfo,
    severity_map: Mapping[int, Severity],
) -> SecretFinding:
    rule_id = node.get("RuleID").string()
    line = node.get("StartLine").integer()
    if line < 0:
        raise node.get("StartLine").error(f"negative line number {line}")
    layer = node.opt("Layer")
    return SecretFinding(
        resource=image,
        rule_id=rule_id,
        category=opt_str(node, "Category") or "Generic",
        title=opt_str(node, "Title") or rule_id,
        severity=secret_severity(node.get("Severity"), severity_map),
        scanner=scanner,
        file_path=file_path,
        line=line,
        layer=opt_str(layer, "Digest", "DiffID") if layer is not None else None,
    )
