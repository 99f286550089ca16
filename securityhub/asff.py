"""Pure ASFF building: normalized findings in, AWS Security Finding Format documents out.

`build()` returns the finding's *content*: every field except the four timestamps and
RecordState, which depend on the ledger and are added by `stamp()` at import time. The
content `fingerprint()` is a hash of exactly that content, so an unchanged finding is
recognised without comparing documents, and a re-import is needed only when it changes
(or when the refresh interval is due).

Security Hub rules obeyed here (botocore service-2.json, the archived user guide):
- Required: SchemaVersion, Id, ProductArn, GeneratorId, AwsAccountId, CreatedAt, UpdatedAt,
  Title, Description, Resources; Severity and Types go in FindingProviderFields.
- Field limits are enforced by truncation, never by a rejected import (limits below).
- A finding over 240 KB is rejected by BatchImportFindings; such a finding is trimmed here
  (VulnerablePackages capped) and says so in its Description and ProductFields.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # the BatchImportFindings shapes: mypy catches a misspelled ASFF field
    from mypy_boto3_securityhub.type_defs import (
        ActionTypeDef,
        AwsEcrContainerImageDetailsTypeDef,
        AwsEcsContainerDetailsTypeDef,
        AwsEcsTaskDetailsTypeDef,
        AwsSecurityFindingTypeDef,
        CvssTypeDef,
        NetworkConnectionActionTypeDef,
        ProcessDetailsTypeDef,
        RecommendationTypeDef,
        ResourceDetailsTypeDef,
        ResourceTypeDef,
        SeverityTypeDef,
        SoftwarePackageTypeDef,
        VulnerabilityTypeDef,
        VulnerabilityVendorTypeDef,
    )

from securityhub import exposure, ids
from securityhub.ecrref import parse_ecr_reference
from securityhub.findings import (
    QUALYS_SEVERITY,
    EcrImage,
    EcsContainer,
    Finding,
    Package,
    RuntimeFinding,
    SecretFinding,
    Severity,
    VulnerabilityFinding,
    partition,
)
from securityhub.logs import MASK, redact

SCHEMA_VERSION = "2018-10-08"
# Limits from botocore's securityhub service-2.json and the archived ASFF user guide.
MAX_TITLE = 256
MAX_DESCRIPTION = 1024
MAX_RECOMMENDATION_TEXT = 512
MAX_PRODUCT_FIELD_VALUE = 2048
MAX_PRODUCT_FIELD_KEY = 128
MAX_PRODUCT_FIELDS = 50
MAX_SEVERITY_ORIGINAL = 64
MAX_PROCESS_NAME = 64
MAX_PROCESS_PATH = 512
MAX_PROTOCOL = 64
MAX_DETAILS_OTHER_VALUE = 1024  # cloud-custodian#3603
MAX_REFERENCE_URLS = 100  # not a documented limit; keeps findings readable
# Package names in a vulnerability finding's Title before "and N more" (Inspector's form:
# "CVE-2022-32149 - golang.org/x/text, golang.org/x/text and 1 more").
TITLE_PACKAGES = 2
# BatchImportFindings: "An error is returned for any finding larger than 240 Kb". Trim to a
# little below it so the JSON encoding on the wire (escapes) cannot push it over.
MAX_FINDING_BYTES = 240 * 1024
TRIM_TARGET_BYTES = 230 * 1024
ELLIPSIS = "..."

TYPE_CVE = "Software and Configuration Checks/Vulnerabilities/CVE"
TYPE_SECRET = "Sensitive Data Identifications/Passwords"  # noqa: S105 - a type name
PRODUCT_KEY = "containerscan"  # ProductFields keys are `containerscan/...`; `aws/` is reserved

# Runtime category -> ASFF Types (TTPs / Unusual Behaviors taxonomy).
RUNTIME_TYPES: dict[str, tuple[str, ...]] = {
    "file": ("Unusual Behaviors/Container", "TTPs/Persistence"),
    "process": ("Unusual Behaviors/Process", "TTPs/Execution"),
    "network": ("Unusual Behaviors/Network Flow", "TTPs/Command and Control"),
    "software": ("Unusual Behaviors/Container", "TTPs/Persistence"),
    "syscall": ("Unusual Behaviors/Process", "TTPs/Privilege Escalation"),
    "anomaly": ("Unusual Behaviors/Container",),
}
# Timestamps and RecordState: set by `stamp()`, excluded from the fingerprint.
VOLATILE_FIELDS = ("CreatedAt", "UpdatedAt", "FirstObservedAt", "LastObservedAt", "RecordState")


def default_severity_map() -> dict[str, Severity]:
    """Vendor severity (verbatim, as text) -> label: Qualys 5 -> CRITICAL ... 1 -> INFO."""
    return {str(level): label for level, label in QUALYS_SEVERITY.items()}


@dataclass(frozen=True)
class BuildContext:
    """Where a finding is imported: the importing account and the client's region."""

    account_id: str
    region: str
    prefix: str = ids.DEFAULT_PREFIX
    severity_map: Mapping[str, Severity] = field(default_factory=default_severity_map)

    @property
    def product_arn(self) -> str:
        return product_arn(self.region, self.account_id)


def product_arn(region: str, account_id: str) -> str:
    """The account's default product ARN in the region's partition (aws, aws-cn,
    aws-us-gov); it exists once Security Hub is enabled."""
    return f"arn:{partition(region)}:securityhub:{region}:{account_id}:product/{account_id}/default"


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - len(ELLIPSIS)] + ELLIPSIS


def timestamp(when: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, the form Security Hub stores and filters on."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# Security Hub ignores an import whose UpdatedAt is not strictly later than the stored one.
UPDATED_AT_STEP = timedelta(milliseconds=1)


def next_updated_at(now: datetime, previous: datetime | None) -> datetime:
    """`now`, or just after `previous` when a same-millisecond rerun or skew would tie."""
    now = now.replace(microsecond=(now.microsecond // 1000) * 1000)
    if previous is not None and now <= previous:
        return previous + UPDATED_AT_STEP
    return now


def _severity(finding: Finding, severity_map: Mapping[str, Severity]) -> tuple[Severity, str]:
    original = getattr(finding, "vendor_severity", None)
    if original is not None and str(original) in severity_map:
        return severity_map[str(original)], str(original)
    return finding.severity, str(original) if original is not None else finding.severity.name


def _product_fields(values: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in values.items():
        if value is None or value == "":
            continue
        if len(out) >= MAX_PRODUCT_FIELDS:
            break
        out[truncate(key, MAX_PRODUCT_FIELD_KEY)] = truncate(str(value), MAX_PRODUCT_FIELD_VALUE)
    return out


def _image_resource(image: EcrImage) -> ResourceTypeDef:
    details: AwsEcrContainerImageDetailsTypeDef = {
        "RegistryId": image.account_id,
        "RepositoryName": image.repository,
        "ImageDigest": image.digest,
    }
    if image.tags:
        details["ImageTags"] = list(image.tags)
    if image.architecture:
        details["Architecture"] = asff_architecture(image.architecture)
    if image.pushed_at:
        details["ImagePublishedAt"] = timestamp(image.pushed_at)
    resource_details: ResourceDetailsTypeDef = {"AwsEcrContainerImage": details}
    return {
        "Type": "AwsEcrContainerImage",
        "Id": image.resource_id,
        "Partition": image.partition,
        "Region": image.region,
        "Details": resource_details,
    }


# OCI / Go architecture names -> AwsEcrContainerImage.Architecture as the API model spells
# it ("arm64, i386, or x86_64"); others (arm, ppc64le, s390x) are passed as they are.
_ARCHITECTURES = {
    "amd64": "x86_64",
    "x86_64": "x86_64",
    "x86-64": "x86_64",
    "arm64": "arm64",
    "aarch64": "arm64",
    "386": "i386",
    "i386": "i386",
    "i686": "i386",
}


def asff_architecture(platform: str) -> str:
    """ "linux/arm64/v8" (an ECR image index's platform), "amd64" (QScanner) -> "arm64",
    "x86_64"."""
    parts = platform.lower().split("/")
    arch = parts[1] if len(parts) > 1 else parts[0]
    return _ARCHITECTURES.get(arch, arch)


def ecr_image_of(container: EcsContainer) -> EcrImage | None:
    """The ECR image a container runs, when its URI is ECR's and its digest is known: the
    resource its vulnerability findings are on, so runtime and image findings meet."""
    if not container.image or not container.image_digest:
        return None
    ecr = parse_ecr_reference(container.image)
    if ecr is None or not container.image_digest.startswith("sha256:"):
        return None
    return EcrImage(
        account_id=ecr.account_id,
        region=ecr.region,
        repository=ecr.repository,
        digest=container.image_digest,
        tags=(ecr.tag,) if ecr.tag else (),
    )


def _container_resources(container: EcsContainer) -> list[ResourceTypeDef]:
    """AwsEcsContainer (the finding's subject, first), AwsEcsTask, AwsEcsCluster with the
    task metadata's ARNs, and the container's AwsEcrContainerImage when known."""
    part = partition(container.region)
    ecs_container: AwsEcsContainerDetailsTypeDef = {"Name": container.container_name}
    if container.image:
        ecs_container["Image"] = container.image
    details: ResourceDetailsTypeDef = {"AwsEcsContainer": ecs_container}
    resources: list[ResourceTypeDef] = [
        {
            "Type": "AwsEcsContainer",
            "Id": container.resource_id,
            "Partition": part,
            "Region": container.region,
            "Details": details,
        }
    ]
    cluster_known = container.cluster_arn.startswith("arn:")
    if container.task_arn.startswith("arn:"):
        task: AwsEcsTaskDetailsTypeDef = {}
        if cluster_known:
            task["ClusterArn"] = container.cluster_arn
        if container.task_definition_arn:
            task["TaskDefinitionArn"] = container.task_definition_arn
        task_details: ResourceDetailsTypeDef = {"AwsEcsTask": task}
        resources.append(
            {
                "Type": "AwsEcsTask",
                "Id": container.task_arn,
                "Partition": part,
                "Region": container.region,
                "Details": task_details,
            }
        )
    if cluster_known:
        cluster: ResourceDetailsTypeDef = {
            "AwsEcsCluster": {
                "ClusterArn": container.cluster_arn,
                "ClusterName": container.cluster_arn.rsplit("/", 1)[-1],
            }
        }
        resources.append(
            {
                "Type": "AwsEcsCluster",
                "Id": container.cluster_arn,
                "Partition": part,
                "Region": container.region,
                "Details": cluster,
            }
        )
    image = ecr_image_of(container)
    if image is not None:
        resources.append(_image_resource(image))
    return resources


# Package managers whose versions are [epoch:]version-release (dpkg's revision, rpm's
# release, apk's -rN), split as Inspector splits them.
_SPLIT_VERSIONS = frozenset({"dpkg", "rpm", "apk"})


def split_version(version: str, manager: str | None) -> tuple[str | None, str, str | None]:
    """(epoch, version, release) of an OS package version; others are left whole.

    dpkg `1:1.1.1n-0+deb11u4` -> ("1", "1.1.1n", "0+deb11u4"); rpm `1.1.1k-7.el8` -> ("0",
    "1.1.1k", "7.el8"); apk `1.1.1c-r0` -> (None, "1.1.1c", "r0"). Epoch "0" when dpkg or
    rpm name none (that is what no epoch means for them).
    """
    if manager not in _SPLIT_VERSIONS:
        return None, version, None
    epoch: str | None = None
    rest = version
    head, colon, tail = version.partition(":")
    if colon and head.isdigit() and manager != "apk":
        epoch, rest = head, tail
    upstream, dash, release = rest.rpartition("-")
    if not dash or not upstream:
        upstream, release = rest, ""
    if manager != "apk" and epoch is None:
        epoch = "0"
    return epoch, upstream, release or None


def _package(package: Package) -> SoftwarePackageTypeDef:
    epoch, version, release = split_version(package.installed_version, package.package_manager)
    doc: SoftwarePackageTypeDef = {"Name": package.name, "Version": version}
    if package.epoch or epoch:
        doc["Epoch"] = package.epoch or epoch or ""
    if package.release or release:
        doc["Release"] = package.release or release or ""
    if package.architecture:
        doc["Architecture"] = package.architecture
    if package.package_manager:
        doc["PackageManager"] = package.package_manager
    if package.file_path:
        doc["FilePath"] = package.file_path
    if package.fixed_version:
        doc["FixedInVersion"] = package.fixed_version
    if package.remediation_text:
        doc["Remediation"] = package.remediation_text
    if package.layer:
        doc["SourceLayerHash"] = package.layer
    return doc


def _content() -> AwsSecurityFindingTypeDef:
    """An empty finding for a builder to fill, typed as BatchImportFindings takes it (so
    mypy checks every key and value put in). The one cast: content has no CreatedAt and
    UpdatedAt, which the type requires; `stamp()` adds them at import time."""
    return cast("AwsSecurityFindingTypeDef", {})


def _base(
    finding: Finding, ctx: BuildContext, title: str, description: str, types: tuple[str, ...]
) -> AwsSecurityFindingTypeDef:
    label, original = _severity(finding, ctx.severity_map)
    severity: SeverityTypeDef = {
        "Label": label.name,  # type: ignore[typeddict-item]  # a SeverityLabelType value
        "Normalized": label.normalized,
        "Original": truncate(original, MAX_SEVERITY_ORIGINAL),
    }
    doc = _content()
    doc.update(
        {
            "SchemaVersion": SCHEMA_VERSION,
            "Id": ids.finding_id(finding, ctx.prefix),
            "ProductArn": ctx.product_arn,
            "GeneratorId": ids.generator_id(finding.kind, ctx.prefix),
            "AwsAccountId": ctx.account_id,
            "Region": ctx.region,
            "Types": list(types),
            "Severity": severity,
            "FindingProviderFields": {
                # FindingProviderFields.Severity has Label and Original only (API model).
                "Severity": {"Label": severity["Label"], "Original": severity["Original"]},
                "Types": list(types),
            },
            "Title": truncate(title or finding.kind, MAX_TITLE),
            "Description": truncate(description or title or finding.kind, MAX_DESCRIPTION),
        }
    )
    return doc


def vulnerability_title(finding: VulnerabilityFinding) -> str:
    """Inspector's form: "CVE-2024-0727 - openssl, libssl3", "... - a, b and 3 more"."""
    names = list(dict.fromkeys(p.name for p in finding.packages))
    if not names:
        return (
            f"{finding.vulnerability_id} - {finding.title}"
            if finding.title
            else finding.vulnerability_id
        )
    shown = ", ".join(names[:TITLE_PACKAGES])
    more = len(names) - TITLE_PACKAGES
    return f"{finding.vulnerability_id} - {shown}" + (f" and {more} more" if more > 0 else "")


# Advisory sources, as Inspector names them in Vulnerabilities[].Vendor.Name.
_VENDORS = {"nvd": "NVD", "debian": "DEBIAN_CVE", "alpine": "ALPINE", "ghsa": "GHSA",
            "github": "GHSA", "qualys": "QUALYS", "ubuntu": "UBUNTU_CVE", "redhat": "REDHAT_CVE",
            "amazon": "ALAS", "pypa": "PYPA", "osv": "OSV"}  # fmt: skip


def vendor_name(finding: VulnerabilityFinding) -> str:
    """The advisory source: the scanner's when it says, else what the id's form tells."""
    if finding.vendor:
        key = finding.vendor.split(":", 1)[0].lower()
        return _VENDORS.get(key, finding.vendor.upper())
    vuln_id = finding.vulnerability_id
    if vuln_id.isdigit() or finding.qid == vuln_id:
        return "QUALYS"
    for prefix, name in (("CVE-", "NVD"), ("GHSA-", "GHSA"), ("PYSEC-", "PYPA"),
                         ("ALPINE-", "ALPINE"), ("DSA-", "DEBIAN_CVE")):  # fmt: skip
        if vuln_id.startswith(prefix):
            return name
    return finding.scanner.name.upper()


def _vendor(finding: VulnerabilityFinding) -> VulnerabilityVendorTypeDef:
    vendor: VulnerabilityVendorTypeDef = {"Name": vendor_name(finding)}
    url = finding.vendor_url or (finding.references[0] if finding.references else None)
    if url:
        vendor["Url"] = url
    if finding.vendor_severity:
        vendor["VendorSeverity"] = finding.vendor_severity
    if finding.published_at:
        vendor["VendorCreatedAt"] = timestamp(finding.published_at)
    if finding.vendor_updated_at:
        vendor["VendorUpdatedAt"] = timestamp(finding.vendor_updated_at)
    return vendor


def _cvss(finding: VulnerabilityFinding) -> list[CvssTypeDef]:
    out = []
    for c in finding.cvss:
        doc: CvssTypeDef = {"Version": c.version, "BaseScore": c.base_score}
        if c.vector:
            doc["BaseVector"] = c.vector
        if c.source:
            doc["Source"] = c.source
        out.append(doc)
    return out


def _vulnerability(finding: VulnerabilityFinding, ctx: BuildContext) -> AwsSecurityFindingTypeDef:
    names = list(dict.fromkeys(p.name for p in finding.packages))
    title = vulnerability_title(finding)
    lead = finding.title if finding.title and finding.title != title else ""
    description = "\n\n".join(
        part for part in (lead, finding.description if finding.description != lead else "") if part
    )
    doc = _base(finding, ctx, title, description or title, (TYPE_CVE,))
    vulnerability: VulnerabilityTypeDef = {
        "Id": finding.vulnerability_id,
        "VulnerablePackages": [_package(p) for p in finding.packages],
        "FixAvailable": finding.fix_available,
    }
    related = [c for c in finding.cves if c != finding.vulnerability_id]
    if related:
        vulnerability["RelatedVulnerabilities"] = related
    if finding.cvss:
        vulnerability["Cvss"] = _cvss(finding)
    if finding.references:
        vulnerability["ReferenceUrls"] = list(finding.references[:MAX_REFERENCE_URLS])
    vulnerability["Vendor"] = _vendor(finding)
    # Exploit signals (check.exploits): YES when CISA's KEV lists it (or the scanner says);
    # absent when nobody knows.
    if finding.exploited or finding.exploit_available is not None:
        vulnerability["ExploitAvailable"] = "YES" if finding.exploited else "NO"
    if finding.kev_date_added:
        vulnerability["LastKnownExploitAt"] = timestamp(
            datetime.combine(finding.kev_date_added, datetime.min.time(), UTC)
        )
    if finding.epss is not None:
        vulnerability["EpssScore"] = finding.epss
    doc["Vulnerabilities"] = [vulnerability]
    remediation = finding.remediation or _fixed_versions(finding)
    if remediation:
        recommendation: RecommendationTypeDef = {
            "Text": truncate(remediation, MAX_RECOMMENDATION_TEXT)
        }
        if finding.references:
            recommendation["Url"] = finding.references[0]
        doc["Remediation"] = {"Recommendation": recommendation}
    doc["Resources"] = [_image_resource(finding.resource)]
    temporal = next((c.temporal_score for c in finding.cvss if c.temporal_score is not None), None)
    doc["ProductFields"] = _product_fields(
        {
            f"{PRODUCT_KEY}/scanner/name": finding.scanner.name,
            f"{PRODUCT_KEY}/scanner/version": finding.scanner.version,
            f"{PRODUCT_KEY}/qualys/qid": finding.qid,
            f"{PRODUCT_KEY}/qualys/qds": finding.qds,
            f"{PRODUCT_KEY}/qualys/type-detected": finding.type_detected,
            f"{PRODUCT_KEY}/qualys/cvss-temporal": temporal,
            f"{PRODUCT_KEY}/kind": finding.kind,
            f"{PRODUCT_KEY}/scope": ids.image_scope(finding.resource),
            f"{PRODUCT_KEY}/packages": ", ".join(names),
            f"{PRODUCT_KEY}/kev": "true" if finding.kev else None,
            f"{PRODUCT_KEY}/epss/percentile": finding.epss_percentile,
            **exposure.product_fields(finding.exposure, vulnerability=True),
        }
    )
    return doc


def _fixed_versions(finding: VulnerabilityFinding) -> str:
    fixes = [p.remediation_text for p in finding.packages if p.fixed_version]
    return "; ".join(f for f in fixes if f)


def _secret(finding: SecretFinding, ctx: BuildContext) -> AwsSecurityFindingTypeDef:
    where = f"{finding.file_path}:{finding.line}" if finding.line else finding.file_path
    title = finding.title or f"{finding.category} secret"
    description = (
        f"A {finding.category} credential matching rule {finding.rule_id} was found in "
        f"{where} of the image. The value is not reproduced here."
    )
    doc = _base(finding, ctx, f"{title} in {finding.file_path}", description, (TYPE_SECRET,))
    doc["Remediation"] = {
        "Recommendation": {
            "Text": truncate(
                "Revoke and rotate the credential, remove it from the image and rebuild; "
                "pass secrets at run time (Secrets Manager, task role).",
                MAX_RECOMMENDATION_TEXT,
            )
        }
    }
    doc["Resources"] = [_image_resource(finding.resource)]
    doc["ProductFields"] = _product_fields(
        {
            f"{PRODUCT_KEY}/scanner/name": finding.scanner.name,
            f"{PRODUCT_KEY}/scanner/version": finding.scanner.version,
            f"{PRODUCT_KEY}/kind": finding.kind,
            f"{PRODUCT_KEY}/scope": ids.image_scope(finding.resource),
            f"{PRODUCT_KEY}/secret/rule": finding.rule_id,
            f"{PRODUCT_KEY}/secret/category": finding.category,
            f"{PRODUCT_KEY}/secret/file": finding.file_path,
            f"{PRODUCT_KEY}/secret/line": str(finding.line),
            f"{PRODUCT_KEY}/secret/layer": finding.layer,
            **exposure.product_fields(finding.exposure, vulnerability=False),
        }
    )
    return doc


def runtime_types(finding: RuntimeFinding) -> tuple[str, ...]:
    """Types naming the detection in three levels, as GuardDuty Runtime Monitoring does
    (`TTPs/Execution/Execution:Runtime-NewBinaryExecuted`): the rule is the classifier."""
    classifier = finding.rule.replace("/", "-")
    return tuple(
        f"{t}/{classifier}" if t.startswith("TTPs/") else t
        for t in RUNTIME_TYPES.get(finding.category, ("Unusual Behaviors/Container",))
    )


# `--password=x`, `-p x`, `TOKEN=x`, `Authorization: Bearer x`: masked in command lines.
_SECRET_ARG = re.compile(
    r"(?i)^(-{0,2}[\w.-]*(?:pass(?:word|wd)?|secret|token|key|credential|auth)[\w.-]*[=:])(.+)$"
)
_SECRET_FLAG = re.compile(
    r"(?i)^-{1,2}[\w.-]*(?:pass(?:word|wd)?|secret|token|key|credential)[\w.-]*$"
)
MAX_COMMAND_LINE = 1024


def masked_command_line(args: tuple[str, ...]) -> str:
    """The command line with secret-looking values masked (flag=value, flag value, and every
    registered secret), for ProductFields. Only captured when the policy's captureArgs allows."""
    out: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        match = _SECRET_ARG.match(arg)
        if match:
            out.append(match.group(1) + MASK)
            continue
        hide_next = bool(_SECRET_FLAG.match(arg))
        out.append(arg)
    return truncate(redact(" ".join(out)), MAX_COMMAND_LINE)


def _runtime(finding: RuntimeFinding, ctx: BuildContext) -> AwsSecurityFindingTypeDef:
    types = runtime_types(finding)
    title = f"{finding.rule}: {finding.subject}"
    description = finding.description or (
        f"Runtime rule {finding.rule} ({finding.category}) matched {finding.subject} "
        f"{finding.count} time(s) in container {finding.resource.container_name} of task "
        f"family {finding.resource.task_family}; action {finding.action}."
    )
    doc = _base(finding, ctx, title, description, types)
    if finding.process is not None:
        process: ProcessDetailsTypeDef = {
            "Name": truncate(finding.process.name, MAX_PROCESS_NAME),
            "Path": truncate(finding.process.path, MAX_PROCESS_PATH),
            "Pid": finding.process.pid,
            "ParentPid": finding.process.ppid,
        }
        if finding.process.launched_at:
            process["LaunchedAt"] = timestamp(finding.process.launched_at)
        doc["Process"] = process
    if finding.category == "network" and finding.ip:
        # NetworkConnectionAction.ConnectionDirection is "IN" or "OUT" (API model docs);
        # the sidecar sees the workload's connect() calls: outbound.
        connection: NetworkConnectionActionTypeDef = {
            "ConnectionDirection": "OUT",
            "Blocked": finding.blocked,
        }
        if ":" not in finding.ip:  # RemoteIpDetails has IpAddressV4 only
            connection["RemoteIpDetails"] = {"IpAddressV4": finding.ip}
        if finding.port is not None:
            connection["RemotePortDetails"] = {"Port": finding.port}
        if finding.protocol:
            connection["Protocol"] = truncate(finding.protocol, MAX_PROTOCOL)
        action: ActionTypeDef = {
            "ActionType": "NETWORK_CONNECTION",
            "NetworkConnectionAction": connection,
        }
        doc["Action"] = action
    doc["Resources"] = _container_resources(finding.resource)
    process_info = finding.process
    doc["ProductFields"] = _product_fields(
        {
            f"{PRODUCT_KEY}/scanner/name": finding.scanner.name,
            f"{PRODUCT_KEY}/scanner/version": finding.scanner.version,
            f"{PRODUCT_KEY}/kind": finding.kind,
            f"{PRODUCT_KEY}/scope": ids.container_scope(finding.resource),
            f"{PRODUCT_KEY}/runtime/rule": finding.rule,
            f"{PRODUCT_KEY}/runtime/category": finding.category,
            f"{PRODUCT_KEY}/runtime/action": finding.action,
            f"{PRODUCT_KEY}/runtime/count": str(finding.count),
            f"{PRODUCT_KEY}/runtime/syscall": finding.syscall,
            f"{PRODUCT_KEY}/runtime/path": finding.path,
            f"{PRODUCT_KEY}/runtime/package-manager": finding.package_manager,
            f"{PRODUCT_KEY}/runtime/blocked": "true" if finding.blocked else None,
            f"{PRODUCT_KEY}/runtime/last-seen": (
                timestamp(finding.last_seen) if finding.last_seen else None
            ),
            f"{PRODUCT_KEY}/runtime/task": finding.resource.task_arn,
            f"{PRODUCT_KEY}/runtime/process/user": process_info.user if process_info else None,
            f"{PRODUCT_KEY}/runtime/process/uid": (
                process_info.uid if process_info and process_info.uid is not None else None
            ),
            f"{PRODUCT_KEY}/runtime/process/command-line": (
                masked_command_line(process_info.args)
                if process_info and process_info.args
                else None
            ),
        }
    )
    return doc


def build(finding: Finding, ctx: BuildContext) -> dict[str, Any]:
    """The ASFF content of `finding` (no timestamps, no RecordState), within 240 KB."""
    doc: AwsSecurityFindingTypeDef
    if isinstance(finding, VulnerabilityFinding):
        doc = _vulnerability(finding, ctx)
    elif isinstance(finding, SecretFinding):
        doc = _secret(finding, ctx)
    elif isinstance(finding, RuntimeFinding):
        doc = _runtime(finding, ctx)
    else:  # pragma: no cover - the Finding union is closed
        raise TypeError(f"not a finding: {type(finding).__name__}")
    return trim(doc)


def encoded_size(doc: Mapping[str, Any]) -> int:
    return len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def trim(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Cap VulnerablePackages so the finding stays under 240 KB, and say so in the finding."""
    if encoded_size(doc) <= TRIM_TARGET_BYTES:
        return dict(doc)
    vulns = doc.get("Vulnerabilities") or [{}]
    packages = vulns[0].get("VulnerablePackages", [])
    total = len(packages)
    low, high = 0, total
    while low < high:  # the largest package count that fits
        middle = (low + high + 1) // 2
        candidate = _with_packages(doc, packages[:middle], total)
        if encoded_size(candidate) <= TRIM_TARGET_BYTES:
            low = middle
        else:
            high = middle - 1
    trimmed = _with_packages(doc, packages[:low], total)
    if encoded_size(trimmed) > TRIM_TARGET_BYTES:
        # Packages were not the bulk: drop the remaining free-form lists too.
        for vuln in trimmed.get("Vulnerabilities", []):
            vuln.pop("ReferenceUrls", None)
            vuln.pop("RelatedVulnerabilities", None)
    return trimmed


def _with_packages(doc: Mapping[str, Any], kept: list[Any], total: int) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(doc))
    note = (
        f" [containerscan: {len(kept)} of {total} affected packages listed;"
        " finding trimmed to stay under 240 KB]"
    )
    out["Description"] = truncate(out["Description"], MAX_DESCRIPTION - len(note)) + note
    out["Vulnerabilities"][0]["VulnerablePackages"] = kept
    fields = out.setdefault("ProductFields", {})
    fields[f"{PRODUCT_KEY}/trimmed"] = f"packages {len(kept)} of {total}"
    return out


def fingerprint(content: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the content, timestamps and RecordState left out."""
    stable = {k: v for k, v in content.items() if k not in VOLATILE_FIELDS}
    if "ProductFields" in stable:  # in-use counts and times ride along (securityhub.exposure)
        stable["ProductFields"] = {
            k: v
            for k, v in stable["ProductFields"].items()
            if k not in exposure.VOLATILE_PRODUCT_FIELDS
        }
    text = json.dumps(stable, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def stamp(
    content: Mapping[str, Any],
    *,
    created_at: datetime,
    first_observed_at: datetime,
    updated_at: datetime,
    last_observed_at: datetime,
    record_state: str = "ACTIVE",
) -> dict[str, Any]:
    """The importable finding: content plus timestamps and RecordState."""
    doc = dict(content)
    doc["CreatedAt"] = timestamp(created_at)
    doc["FirstObservedAt"] = timestamp(first_observed_at)
    doc["UpdatedAt"] = timestamp(updated_at)
    doc["LastObservedAt"] = timestamp(last_observed_at)
    doc["RecordState"] = record_state
    return doc


# Fields Security Hub adds or owns; not part of what the provider imported.
SERVICE_FIELDS = (
    "ProductName",
    "CompanyName",
    "Workflow",
    "WorkflowState",
    "ProcessedAt",
    "Note",
    "UserDefinedFields",
    "VerificationState",
    "Sample",
)
SERVICE_PRODUCT_FIELD_PREFIX = "aws/"


def provider_content(finding: Mapping[str, Any]) -> dict[str, Any]:
    """A finding read back from GetFindings, reduced to what the provider imported."""
    doc = {k: v for k, v in finding.items() if k not in SERVICE_FIELDS}
    product_fields = doc.get("ProductFields")
    if isinstance(product_fields, dict):
        doc["ProductFields"] = {
            k: v
            for k, v in product_fields.items()
            if not k.startswith(SERVICE_PRODUCT_FIELD_PREFIX)
        }
    return doc
