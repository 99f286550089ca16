"""Package managers and the one-finding-per-vulnerability grouping shared by the parsers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from securityhub.findings import Cvss, Package, VulnerabilityFinding, split_by_cve

# Scanner package types / ecosystems -> the package manager names findings carry.
_MANAGERS = {
    "apk": "apk",
    "alpine": "apk",
    "wolfi": "apk",
    "chainguard": "apk",
    "deb": "dpkg",
    "dpkg": "dpkg",
    "debian": "dpkg",
    "ubuntu": "dpkg",
    "rpm": "rpm",
    "redhat": "rpm",
    "centos": "rpm",
    "rocky": "rpm",
    "alma": "rpm",
    "amazon": "rpm",
    "amzn": "rpm",
    "oracle": "rpm",
    "fedora": "rpm",
    "suse": "rpm",
    "opensuse": "rpm",
    "opensuse.leap": "rpm",
    "sles": "rpm",
    "photon": "rpm",
    "mariner": "rpm",
    "azurelinux": "rpm",
    "python": "pip",
    "python-pkg": "pip",
    "pip": "pip",
    "pipenv": "pip",
    "poetry": "pip",
    "pypi": "pip",
    "node-pkg": "npm",
    "npm": "npm",
    "javascript": "npm",
    "node.js": "npm",
    "nodejs": "npm",
    "yarn": "npm",
    "pnpm": "npm",
    "go": "gomod",
    "gomod": "gomod",
    "gobinary": "gomod",
    "go-module": "gomod",
    "golang": "gomod",
    "java": "maven",
    "jar": "maven",
    "pom": "maven",
    "java-archive": "maven",
    "maven": "maven",
    "gradle": "maven",
    "ruby": "gem",
    "gem": "gem",
    "gemspec": "gem",
    "bundler": "gem",
    "rust": "cargo",
    "cargo": "cargo",
    "rust-crate": "cargo",
    "rustbinary": "cargo",
    "php": "composer",
    "composer": "composer",
    "php-composer": "composer",
    ".net": "nuget",
    "dotnet": "nuget",
    "dotnet-core": "nuget",
    "nuget": "nuget",
    "binary": "binary",
}


def cvss_version(vector: str | None, default: str) -> str:
    """The CVSS version a vector names ("CVSS:3.1/AV:N/..." -> "3.1"), else `default`."""
    if vector and vector.startswith("CVSS:"):
        return vector.split("/", 1)[0].removeprefix("CVSS:")
    return default


def package_manager(kind: str | None) -> str | None:
    """The package manager for a scanner's package type or OS family (None if unknown).

    `kind` may be an OS description such as "alpine 3.18.4" or "Amazon Linux 2": the first
    word decides.
    """
    if not kind:
        return None
    key = kind.strip().lower()
    if key in _MANAGERS:
        return _MANAGERS[key]
    first = key.split()[0] if key.split() else key
    return _MANAGERS.get(first)


@dataclass
class _Entry:
    finding: VulnerabilityFinding
    packages: list[Package] = field(default_factory=list)
    cves: list[str] = field(default_factory=list)
    cvss: list[Cvss] = field(default_factory=list)
    references: list[str] = field(default_factory=list)


class FindingGroups:
    """Collects findings so that there is ONE per vulnerability id, with every package.

    Scanners report a vulnerability once per affected package (Trivy, Grype) or once per
    result (QScanner SARIF); Security Hub wants one finding per (image, vulnerability) with
    all the packages. The first occurrence gives title and severity; a later occurrence
    with a higher severity raises it (scanners rate per package source).
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def add(
        self,
        finding: VulnerabilityFinding,
        packages: Iterable[Package] = (),
    ) -> None:
        entry = self._entries.get(finding.vulnerability_id)
        if entry is None:
            entry = self._entries[finding.vulnerability_id] = _Entry(finding)
        elif finding.severity > entry.finding.severity:
            entry.finding = replace(
                entry.finding, severity=finding.severity, vendor_severity=finding.vendor_severity
            )
        _extend_unique(entry.packages, packages)
        _extend_unique(entry.packages, finding.packages)
        _extend_unique(entry.cves, finding.cves)
        _extend_unique(entry.cvss, finding.cvss)
        _extend_unique(entry.references, finding.references)

    def findings(self) -> tuple[VulnerabilityFinding, ...]:
        """The grouped findings, one per (image, CVE) (`split_by_cve`), ordered by id;
        packages ordered by name and version."""
        out = []
        for vuln_id in sorted(self._entries):
            entry = self._entries[vuln_id]
            packages = sorted(
                entry.packages,
                key=lambda p: (p.name, p.installed_version, p.file_path or "", p.layer or ""),
            )
            out.append(
                replace(
                    entry.finding,
                    packages=tuple(packages),
                    cves=tuple(entry.cves),
                    cvss=tuple(entry.cvss),
                    references=tuple(entry.references),
                )
            )
        return split_by_cve(out)


_T = TypeVar("_T")


def _extend_unique(target: list[_T], items: Iterable[_T]) -> None:
    for item in items:
        if item not in target:
            target.append(item)
