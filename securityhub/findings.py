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
from dataclasses import dataclass, field
from datetime import datetime

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
    def repository_arn(self) -> str:
        return f"arn:aws:ecr:{self.region}:{self.account_id}:repository/{self.repository}"

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


@dataclass(frozen=True)
class Cvss:
    version: str  # "3.1", "2.0"
    base_score: float
    vector: str | None = None
    source: str | None = None  # NVD, vendor, ...


@dataclass(frozen=True)
class VulnerabilityFinding:
    """One vulnerability in one image, with every affected package."""

    resource: EcrImage
    vulnerability_id: str  # a Qualys QID, a CVE, a GHSA, an ALPINE-CVE...
    title: str
    severity: Severity
    scanner: ScannerInfo
    description: str = ""
    cves: tuple[str, ...] = ()
    packages: tuple[Package, ...] = ()
    cvss: tuple[Cvss, ...] = ()
    references: tuple[str, ...] = ()
    qid: str | None = None
    vendor_severity: str | None = None  # the scanner's own severity, verbatim
    remediation: str | None = None
    exploit_available: bool | None = None
    published_at: datetime | None = None
    # Set by the sweep before publishing (in use, loaded, risk); never cached, not identity.
    exposure: Exposure | None = field(default=None, compare=False)

    kind = "vulnerability"

    def identity(self) -> tuple[str, ...]:
        return ("vuln", self.vulnerability_id)

    @property
    def fix_available(self) -> str:
        """ASFF FixAvailable: YES when every package has a fix, PARTIAL when some do."""
        fixed = sum(1 for p in self.packages if p.fixed_version)
        if self.packages and fixed == len(self.packages):
            return "YES"
        return "PARTIAL" if fixed else "NO"


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
    args: tuple[str, ...] = ()
    launched_at: datetime | None = None

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
