"""Normalized findings: what the check and the sidecar hand to the Security Hub layer.

These frozen dataclasses are the contract between the three packages. Scanners (QScanner,
Trivy, Grype, the built-in one) and the sidecar's engine produce them; `securityhub.asff`
turns them into ASFF; `securityhub.correlate` plans imports from them. They carry no
secrets: a secret finding names the rule, the file and the line, never the value.

Every finding has `identity()`: the tuple of parts that makes it unique within its resource.
Two observations with the same resource and identity are the same Security Hub finding.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Literal, TypeVar

from securityhub.exposure import Exposure

# ---------------------------------------------------------------------------- severities


class Severity(enum.IntEnum):
    """Security Hub severity labels, ordered so that `>=` compares seriousness."""

    INFORMATIONAL = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Accept a label in any case ('high', 'HIGH'); 'INFO' and 'UNKNOWN' mean INFORMATIONAL."""
        name = text.strip().upper()
        if name in ("INFO", "UNKNOWN", "NONE", "NEGLIGIBLE"):
            return cls.INFORMATIONAL
        try:
            return cls[name]
        except KeyError:
            raise ValueError(
                f"unknown severity {text!r}; use one of {', '.join(s.name for s in cls)}"
            ) from None

    # Severity.Normalized, from the label (Security Hub's own label -> normalized mapping).
    @property
    def normalized(self) -> int:
        return {0: 0, 1: 1, 2: 40, 3: 70, 4: 90}[int(self)]


# Qualys severities 1-5 -> labels; the default mapping, configurable by the user.
QUALYS_SEVERITY = {
    5: Severity.CRITICAL,
    4: Severity.HIGH,
    3: Severity.MEDIUM,
    2: Severity.LOW,
    1: Severity.INFORMATIONAL,
}


# ----------------------------------------------------------------------------- resources

# The partitions whose regions Security Hub serves (AWS General Reference, "ARN format":
# China regions are cn-*, GovCloud us-gov-*); ASFF's Resource.Partition names these.
Partition = Literal["aws", "aws-cn", "aws-us-gov"]


def partition(region: str) -> Partition:
    """The ARN partition of `region`: aws-cn, aws-us-gov or aws."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"



@dataclass(frozen=True)
class EcrImage:
    """An image in ECR, identified by its manifest digest (`sha256:<hex>`)."""

    account_id: str
    region: str
    repository: str
    digest: str
    tags: tuple[str, ...] = ()
    pushed_at: datetime | None = None
    architecture: str | None = None
    # For images outside ECR (a local OCI layout, another registry), the registry host.
    registry_host: str | None = None

    @property
    def registry(self) -> str:
        if self.registry_host:
            return self.registry_host
        return f"{self.account_id}.dkr.ecr.{self.region}.amazonaws.com"

    @property
    def reference(self) -> str:
        """The immutable reference scanners get: `<registry>/<repository>@sha256:<hex>`."""
        return f"{self.registry}/{self.repository}@{self.digest}"

    @property
    def partition(self) -> Partition:
        return partition(self.region)

    @property
    def repository_arn(self) -> str:
        return (
            f"arn:{self.partition}:ecr:{self.region}:{self.account_id}:"
            f"repository/{self.repository}"
        )

    @property
    def resource_id(self) -> str:
        """The ASFF Resource.Id, as Amazon Inspector writes it for ECR images."""
        return f"{self.repository_arn}/{self.digest}"


@dataclass(frozen=True)
class EcsContainer:
    """A container of a running ECS task, the resource of runtime findings."""

    account_id: str
    region: str
    cluster_arn: str
    task_arn: str
    task_family: str
    container_name: str
    image: str | None = None
    image_digest: str | None = None
    task_definition_arn: str | None = None

    @property
    def resource_id(self) -> str:
        return f"{self.task_arn}/{self.container_name}"


Resource = EcrImage | EcsContainer


# ------------------------------------------------------------------------------ findings


@dataclass(frozen=True)
class ScannerInfo:
    """Which tool produced a finding (QScanner 4.8.0-2, trivy 0.50.1, containerscan-sidecar...)."""

    name: str
    version: str = "unknown"


@dataclass(frozen=True)
class Package:
    """An installed package affected by a vulnerability."""

    name: str
    installed_version: str
    fixed_version: str | None = None
    package_manager: str | None = None  # dpkg, apk, rpm, pip, npm, gomod, ...
    file_path: str | None = None
    layer: str | None = None  # the layer digest that brought the package
    epoch: str | None = None
    release: str | None = None
    architecture: str | None = None
    remediation: str | None = None

    @property
    def remediation_text(self) -> str | None:
        """What to do about this package: the scanner's words, else "Upgrade X to Y"."""
        if self.remediation:
            return self.remediation
        return f"Upgrade {self.name} to {self.fixed_version}" if self.fixed_version else None


@dataclass(frozen=True)
class Cvss:
    version: str  # "3.1", "2.0"
    base_score: float
    vector: str | None = None
    source: str | None = None  # NVD, vendor, ...
    temporal_score: float | None = None  # Qualys CVSS3Info.temporalScore
    access_vector: str | None = None  # Qualys CVSSInfo.accessVector ("Network", ...)


# Vulnerability ids: CVE-2024-0727. Everything else (a QID, GHSA-..., PYSEC-...) is not a CVE.
CVE_RE = re.compile(r"CVE-\d{4}-\d{4,}")


def is_cve(text: str) -> bool:
    return CVE_RE.fullmatch(text) is not None


@dataclass(frozen=True)
class VulnerabilityFinding:
    """One vulnerability (a CVE when it has one) in one image, with every affected package.

    Security Hub holds one finding per (image, CVE), as Amazon Inspector does:
    `split_by_cve` turns a scanner's grouping (a Qualys QID naming three CVEs) into that.
    """

    resource: EcrImage
    vulnerability_id: str  # a CVE; without one, the scanner's id (a QID, a GHSA, PYSEC-...)
    title: str
    severity: Severity
    scanner: ScannerInfo
    description: str = ""
    cves: tuple[str, ...] = ()  # the ids the source grouped with this one, itself included
    packages: tuple[Package, ...] = ()
    cvss: tuple[Cvss, ...] = ()
    references: tuple[str, ...] = ()
    qid: str | None = None  # the Qualys QID(s) naming it, comma-separated when several
    vendor_severity: str | None = None  # the scanner's own severity, verbatim
    remediation: str | None = None
    exploit_available: bool | None = None
    published_at: datetime | None = None
    # Qualys Detection Score (0-100) and CONFIRMED / POTENTIAL, when QScanner says.
    qds: str | None = None
    type_detected: str | None = None
    # The advisory source (NVD, DEBIAN_CVE, ALPINE, GHSA, QUALYS...), its link and dates.
    vendor: str | None = None
    vendor_url: str | None = None
    vendor_updated_at: datetime | None = None
    # Exploit signals (check.exploits): in CISA's KEV catalogue and since when; FIRST EPSS.
    kev: bool = False
    kev_date_added: date | None = None
    epss: float | None = None
    epss_percentile: float | None = None
    # Set by the sweep before publishing (in use, loaded, risk); never cached, not identity.
    exposure: Exposure | None = field(default=None, compare=False)

    kind = "vulnerability"

    def identity(self) -> tuple[str, ...]:
        return ("vuln", self.vulnerability_id)

    @property
    def fix_available(self) -> Literal["YES", "NO", "PARTIAL"]:
        """ASFF FixAvailable: YES when every package has a fixed version and a remediation
        (the API model's definition), PARTIAL when some do, NO otherwise."""
        fixed = sum(1 for p in self.packages if p.fixed_version and p.remediation_text)
        if self.packages and fixed == len(self.packages):
            return "YES"
        return "PARTIAL" if fixed else "NO"

    @property
    def exploited(self) -> bool:
        """Known to be exploited in the wild (KEV), or so the scanner says."""
        return self.kev or bool(self.exploit_available)


def split_by_cve(findings: Iterable[VulnerabilityFinding]) -> tuple[VulnerabilityFinding, ...]:
    """One finding per (image, CVE): a finding naming several CVEs becomes one per CVE, and
    findings naming the same CVE (two QIDs, two advisories) merge, packages united.

    A finding without a CVE keeps its own id. Idempotent; ordered by resource and id.
    """
    merged: dict[tuple[str, str], VulnerabilityFinding] = {}
    for finding in findings:
        own = [c for c in finding.cves if is_cve(c)]
        if is_cve(finding.vulnerability_id) and finding.vulnerability_id not in own:
            own.insert(0, finding.vulnerability_id)
        # The ids the source grouped: its CVEs, and its own id unless that is the QID
        # (a GHSA naming a CVE stays related to it; a QID goes to ProductFields).
        grouped = (*finding.cves, *([finding.vulnerability_id] if finding.qid is None else []))
        for vuln_id in own or [finding.vulnerability_id]:
            # Sibling CVEs are not kept: each is its own finding (and this stays idempotent).
            cves = _ids(vuln_id, [g for g in grouped if not is_cve(g)]) if own else finding.cves
            part = replace(finding, vulnerability_id=vuln_id, cves=cves)
            key = (part.resource.resource_id, vuln_id)
            merged[key] = _merge(merged[key], part) if key in merged else part
    return tuple(merged[key] for key in sorted(merged))


def _ids(first: str, others: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((first, *others)))


def _merge(kept: VulnerabilityFinding, other: VulnerabilityFinding) -> VulnerabilityFinding:
    """`kept` (the first seen) with `other`'s packages, ids and scores added."""
    higher = other if other.severity > kept.severity else kept
    qids = [q for f in (kept, other) for q in (f.qid or "").split(", ") if q]
    return replace(
        kept,
        severity=higher.severity,
        vendor_severity=higher.vendor_severity,
        packages=tuple(sorted(_ids_union(kept.packages, other.packages), key=_package_order)),
        cves=_ids_union(kept.cves, other.cves),
        cvss=_ids_union(kept.cvss, other.cvss),
        references=_ids_union(kept.references, other.references),
        qid=", ".join(dict.fromkeys(qids)) or None,
        qds=max((f.qds for f in (kept, other) if f.qds), key=_score, default=None),
        exploit_available=(
            True
            if True in (kept.exploit_available, other.exploit_available)
            else kept.exploit_available
            if kept.exploit_available is not None
            else other.exploit_available
        ),
    )


_T = TypeVar("_T")


def _package_order(package: Package) -> tuple[str, ...]:
    return (package.name, package.installed_version, package.file_path or "", package.layer or "")


def _ids_union(first: tuple[_T, ...], second: tuple[_T, ...]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys((*first, *second)))


def _score(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return -1.0


@dataclass(frozen=True)
class SecretFinding:
    """A credential found in an image's files. Never carries the secret itself."""

    resource: EcrImage
    rule_id: str  # aws-access-key-id, private-key, github-pat, ...
    category: str  # AWS, PrivateKey, GitHub, Generic, ...
    title: str
    severity: Severity
    scanner: ScannerInfo
    file_path: str
    line: int = 0
    layer: str | None = None
    exposure: Exposure | None = field(default=None, compare=False)  # as for vulnerabilities

    kind = "secret"

    def identity(self) -> tuple[str, ...]:
        return ("secret", self.rule_id, str(self.line), self.file_path)


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    path: str  # the executable
    args: tuple[str, ...] = ()  # captured only where the policy's captureArgs allows
    launched_at: datetime | None = None
    user: str | None = None  # the user name or uid the process runs as
    uid: int | None = None  # its effective uid (the name is the container's for it)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


RUNTIME_CATEGORIES = ("file", "process", "network", "software", "syscall", "anomaly")
RUNTIME_ACTIONS = ("log", "alert", "block")


@dataclass(frozen=True)
class RuntimeFinding:
    """Aggregated runtime events: one per (container, rule, subject), with a count."""

    resource: EcsContainer
    rule: str
    category: str  # one of RUNTIME_CATEGORIES
    severity: Severity
    action: str  # one of RUNTIME_ACTIONS
    subject: str  # what the events are about: a path, an executable, ip:port, a package manager
    scanner: ScannerInfo
    process: ProcessInfo | None = None
    syscall: str | None = None
    path: str | None = None
    ip: str | None = None
    port: int | None = None
    protocol: str | None = None
    package_manager: str | None = None
    description: str = ""
    count: int = 1
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    blocked: bool = False

    kind = "runtime"

    def identity(self) -> tuple[str, ...]:
        return ("runtime", self.rule, self.subject)


Finding = VulnerabilityFinding | SecretFinding | RuntimeFinding


@dataclass(frozen=True)
class Observation:
    """What one unit of work saw of one resource.

    `kinds` says which finding kinds the observation covers completely: an image scanned with
    `pkg` only covers vulnerabilities, so its secret findings must not be archived. Findings
    of kinds outside `kinds` are never touched by correlation.
    """

    resource: Resource
    kinds: frozenset[str]
    findings: tuple[Finding, ...] = field(default_factory=tuple)
