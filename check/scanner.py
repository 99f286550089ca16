"""The interface every image scanner implements (QScanner, Trivy, Grype, the built-in one).

A scanner takes one image by its immutable reference and returns normalized findings. It
raises `securityhub.errors.ScanError` (or a subclass) when that image cannot be scanned;
the sweep records the error for that image and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from securityhub.findings import EcrImage, Finding, ScannerInfo

SCAN_TYPES = frozenset({"pkg", "secret"})
DEFAULT_SCAN_TYPES = ("pkg", "secret")
# Which normalized finding kinds a scan type covers completely.
KINDS_BY_SCAN_TYPE = {"pkg": "vulnerability", "secret": "secret"}  # nosec B105 - names


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for the registry; handed to scanners through their environment only."""

    username: str
    password: str

    def __repr__(self) -> str:  # never print the password, whoever logs this object
        return f"RegistryAuth(username={self.username!r}, password='***')"


@dataclass(frozen=True)
class ScanTarget:
    image: EcrImage
    scan_types: tuple[str, ...] = DEFAULT_SCAN_TYPES
    auth: RegistryAuth | None = None
    # Where the image bytes are when not in a registry: "oci-layout:DIR", "docker-archive:FILE".
    source: str | None = None


@dataclass(frozen=True)
class ScanResult:
    scanner: ScannerInfo
    findings: tuple[Finding, ...]
    scan_types: tuple[str, ...]
    raw_files: tuple[Path, ...] = ()
    # QScanner's policy evaluation outcome when it ran one: "ALLOW", "DENY", "AUDIT".
    policy_result: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    # What the scanner said about the image, as (key, value) pairs: os, architecture,
    # image_id, repo_tags... (QScanner's ScanResult.json metadata). Informational only.
    metadata: tuple[tuple[str, str], ...] = ()
    # The package inventory when the scanner built one (the built-in scanner's
    # `Inventory`, file ownership included): kept per digest by check.reevaluate.
    inventory: Any = field(default=None, compare=False, repr=False)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(KINDS_BY_SCAN_TYPE[t] for t in self.scan_types if t in KINDS_BY_SCAN_TYPE)


class Scanner(Protocol):
    """What the sweep needs of a scanner."""

    name: str

    def version(self) -> str:
        """The scanner's version; part of the cache key."""
        ...

    def scan(self, target: ScanTarget, workdir: Path, timeout: float) -> ScanResult:
        """Scan one image. Write raw outputs under `workdir`. Raise ScanError on failure."""
        ...
