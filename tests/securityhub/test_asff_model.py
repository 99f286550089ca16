"""Every finding kind against botocore's Security Hub model and the ASFF rules of
shared/reference/securityhub.md, and an image finding against a real Amazon Inspector one.

What is checked comes from outside the project: botocore's service model (shapes, required
members, enums, patterns), the archived ASFF user guide's limits and Types taxonomy (as the
reference quotes them), and `tests/data/inspector/inspector-ecr-finding-openssl.json`, a
real Inspector v2 ECR finding exported from Security Hub (shared/reference/samples: from
DefectDojo's test data, account ids replaced).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator

from securityhub import asff
from securityhub.findings import (
    Cvss,
    EcrImage,
    EcsContainer,
    Package,
    ProcessInfo,
    RuntimeFinding,
    ScannerInfo,
    SecretFinding,
    Severity,
    VulnerabilityFinding,
)

INSPECTOR = Path(__file__).resolve().parents[1] / "data" / "inspector"
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
MODEL = botocore.session.get_session().get_service_model("securityhub")
FINDING_SHAPE = MODEL.operation_model("BatchImportFindings").input_shape

# ASFF limits (reference section 3, from service-2.json and the archived user guide).
LIMITS = {
    "Id": 512,
    "GeneratorId": 512,
    "Title": 256,
    "Description": 1024,
    "Remediation.Recommendation.Text": 512,
    "Severity.Original": 64,
    "Process.Name": 64,
    "Process.Path": 512,
    "Resources.Region": 16,
    "Resources.Type": 256,
    "Action.NetworkConnectionAction.Protocol": 64,
}
# The Types taxonomy: namespace -> categories (archived securityhub-findings-format-type-
# taxonomy.md, as the reference lists it).
TAXONOMY = {
    "Software and Configuration Checks": {
        "Vulnerabilities",
        "AWS Security Best Practices",
        "Industry and Regulatory Standards",
    },
    "TTPs": {
        "Initial Access", "Execution", "Persistence", "Privilege Escalation",
        "Defense Evasion", "Credential Access", "Discovery", "Lateral Movement",
        "Collection", "Command and Control",
    },
    "Effects": {
        "Data Exposure", "Data Exfiltration", "Data Destruction", "Denial of Service",
        "Resource Consumption",
    },
    "Unusual Behaviors": {
        "Application", "Network Flow", "IP address", "User", "VM", "Container", "Serverless",
        "Process", "Database", "Data",
    },
    "Sensitive Data Identifications": {"PII", "Passwords", "Legal", "Financial", "Security",
                                       "Business"},
}  # fmt: skip
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")
TIMESTAMP_FIELDS = ("CreatedAt", "UpdatedAt", "FirstObservedAt", "LastObservedAt", "LaunchedAt",
                    "ImagePublishedAt", "VendorCreatedAt", "VendorUpdatedAt",
                    "LastKnownExploitAt")  # fmt: skip


def stamped(finding: Any, region: str = "us-east-1") -> dict[str, Any]:
    content = asff.build(finding, asff.BuildContext(finding.resource.account_id, region))
    return asff.stamp(
        content, created_at=NOW, first_observed_at=NOW, updated_at=NOW, last_observed_at=NOW
    )


def _walk(value: Any, shape: Any, path: str, problems: list[str]) -> None:
    """Enums and patterns of the model (ParamValidator checks neither)."""
    if shape.type_name == "structure":
        for key, child in value.items():
            if key not in shape.members:  # ParamValidator says so too; go on with the rest
                problems.append(f"{path}: unknown member {key!r}")
                continue
            _walk(child, shape.members[key], f"{path}.{key}".lstrip("."), problems)
    elif shape.type_name == "list":
        for item in value:
            _walk(item, shape.member, path, problems)
    elif shape.type_name == "map":
        for item in value.values():
            _walk(item, shape.value, path, problems)
    elif shape.type_name == "string":
        if shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} not in {shape.enum}")
        pattern = shape.metadata.get("pattern")
        if pattern and not re.search(pattern, value):
            problems.append(f"{path}: {value!r} does not match {pattern}")
        if path.rsplit(".", 1)[-1] in TIMESTAMP_FIELDS and not TIMESTAMP.fullmatch(value):
            problems.append(f"{path}: {value!r} is not an ASFF timestamp")


def _values(doc: Any, path: str) -> list[Any]:
    """Every value at a dotted path, lists flattened."""
    values = [doc]
    for key in path.split("."):
        found = []
        for value in values:
            items = value if isinstance(value, list) else [value]
            found += [item[key] for item in items if isinstance(item, dict) and key in item]
        values = found
    return values


def problems_of(doc: dict[str, Any]) -> list[str]:
    report = ParamValidator().validate({"Findings": [doc]}, FINDING_SHAPE)
    problems = [report.generate_report()] if report.has_errors() else []
    _walk(doc, FINDING_SHAPE.members["Findings"].member, "", problems)
    for path, limit in LIMITS.items():
        problems += [f"{path}: {len(v)} > {limit}" for v in _values(doc, path) if len(v) > limit]
    types = doc.get("Types", []) + doc.get("FindingProviderFields", {}).get("Types", [])
    assert types, "Types is required by the user guide"
    for text in types:
        levels = text.split("/")
        if (
            len(levels) > 3
            or levels[0] not in TAXONOMY
            or (len(levels) > 1 and levels[1] not in TAXONOMY[levels[0]])
        ):
            problems.append(f"Types: {text!r} is not namespace/category/classifier")
    fields = doc.get("ProductFields", {})
    if len(fields) > 50 or any(len(k) > 128 or len(v) > 2048 for k, v in fields.items()):
        problems.append("ProductFields: over 50 pairs, a key over 128 or a value over 2048")
    if any(k.startswith("aws/") for k in fields):
        problems.append("ProductFields: the aws/ prefix is reserved for AWS")
    if not 1 <= len(doc["Resources"]) <= 32:
        problems.append("Resources: 1-32")
    for direction in _values(doc, "Action.NetworkConnectionAction.ConnectionDirection"):
        if direction not in ("IN", "OUT"):
            problems.append(f"ConnectionDirection {direction!r}: IN or OUT")
    if len(json.dumps(doc).encode()) > asff.MAX_FINDING_BYTES:
        problems.append("over 240 KB")
    return problems


# --------------------------------------------------------------------------- findings


def inspector_like_image() -> EcrImage:
    """The image of the stored Inspector finding."""
    return EcrImage(
        "123456789012",
        "eu-central-1",
        "repo-os",
        "sha256:af965ef68c78374a5f987fce98c0ddfa45801df2395bf012c50b863e65978d74",
        tags=("2023-08-23",),
        pushed_at=datetime(2023, 8, 23, 14, 0, 14, tzinfo=UTC),
        architecture="amd64",
    )


def openssl_vulnerability() -> VulnerabilityFinding:
    """What containerscan's scanners say about the same vulnerability (Debian's openssl)."""
    layer = "sha256:d5fad00d4eb04c332a8728ee7642bff8fb9cd3cec653ca301ab69a4ca075a757"
    return VulnerabilityFinding(
        resource=inspector_like_image(),
        vulnerability_id="CVE-2023-2650",
        title="openssl: Possible DoS translating ASN.1 object identifiers",
        severity=Severity.MEDIUM,
        scanner=ScannerInfo("qscanner", "4.8.0-2"),
        description="Issue summary: Processing some specially crafted ASN.1 object identifiers",
        cves=("CVE-2023-2650",),
        packages=(
            Package(
                "openssl",
                "1.1.1n-0+deb11u4",
                "1.1.1n-0+deb11u5",
                "dpkg",
                layer=layer,
                architecture="AMD64",
            ),
        ),
        cvss=(Cvss("3.1", 6.5, "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:N/I:N/A:H", "NVD"),),
        references=("https://security-tracker.debian.org/tracker/CVE-2023-2650",),
        qid="178564",
        vendor_severity="3",
        vendor="DEBIAN_CVE",
        vendor_url="https://security-tracker.debian.org/tracker/CVE-2023-2650",
        published_at=datetime(2023, 5, 30, tzinfo=UTC),
        exploit_available=False,
        epss=0.0014,
        epss_percentile=0.497,
    )


def kinds() -> dict[str, Any]:
    image = inspector_like_image()
    container = EcsContainer(
        "123456789012", "eu-central-1",
        "arn:aws:ecs:eu-central-1:123456789012:cluster/prod",
        "arn:aws:ecs:eu-central-1:123456789012:task/prod/0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "web", "app",
        f"{image.registry}/{image.repository}:2023-08-23", image.digest,
        "arn:aws:ecs:eu-central-1:123456789012:task-definition/web:26",
    )  # fmt: skip
    process = ProcessInfo(4242, 1, "/usr/bin/curl", ("curl", "--user", "a:b", "http://x"),
                          launched_at=NOW, user="1000")  # fmt: skip
    runtime = RuntimeFinding(
        container, "egress-not-allowed", "network", Severity.HIGH, "block", "203.0.113.9:4444",
        ScannerInfo("containerscan-sidecar", "1.0"), process=process, ip="203.0.113.9",
        port=4444, protocol="tcp", count=3, blocked=True,
    )  # fmt: skip
    kev = VulnerabilityFinding(
        resource=image, vulnerability_id="CVE-2021-44228", title="Log4Shell",
        severity=Severity.CRITICAL, scanner=ScannerInfo("trivy", "0.50.1"),
        packages=(Package("log4j-core", "2.14.1", None, "maven", "/app/lib/log4j-core.jar"),),
        kev=True, kev_date_added=date(2021, 12, 10), exploit_available=True, epss=0.94358,
    )  # fmt: skip
    return {
        "vulnerability": openssl_vulnerability(),
        "vulnerability in KEV, no fix": kev,
        "vulnerability without a CVE": VulnerabilityFinding(
            image,
            "105943",
            "EOL/Obsolete Software: Alpine Linux 3.10 Detected",
            Severity.INFORMATIONAL,
            ScannerInfo("qscanner", "4.8.0-2"),
            qid="105943",
            packages=(Package("alpine-baselayout", "3.1.2-r0", None, "apk"),),
        ),
        "oversized vulnerability": VulnerabilityFinding(
            image,
            "CVE-2024-0727",
            "t" * 400,
            Severity.LOW,
            ScannerInfo("grype", "0.74.7"),
            description="d" * 5000,
            packages=tuple(Package(f"pkg-{i}" * 20, "1.0-1", "1.0-2", "rpm") for i in range(4000)),
        ),
        "secret": SecretFinding(
            image,
            "9f0c1d52-2b7e-4f4e-8d7b-0c1a4c7e2f10",
            "AWS",
            "AWS Access Key ID",
            Severity.CRITICAL,
            ScannerInfo("qscanner", "4.8.0-2"),
            "/app/config/.env",
            3,
        ),
        "runtime network": runtime,
        "runtime process": RuntimeFinding(
            container,
            "Execution:Runtime-NewBinaryExecuted",
            "process",
            Severity.MEDIUM,
            "alert",
            "/tmp/x",
            ScannerInfo("containerscan-sidecar", "1.0"),
            process=ProcessInfo(7, 1, "/tmp/x", launched_at=NOW),
        ),
    }


@pytest.mark.parametrize("kind", list(kinds()))
@pytest.mark.parametrize("region", ["us-east-1", "cn-north-1", "us-gov-west-1"])
def test_every_finding_kind_is_valid_asff(kind: str, region: str) -> None:
    finding = kinds()[kind]
    moved = _in_region(finding, region)
    doc = stamped(moved, region)
    assert problems_of(doc) == []
    partition = {"cn-north-1": "aws-cn", "us-gov-west-1": "aws-us-gov"}.get(region, "aws")
    assert doc["ProductArn"].startswith(f"arn:{partition}:securityhub:{region}:")
    assert {r["Partition"] for r in doc["Resources"]} == {partition}


def _in_region(finding: Any, region: str) -> Any:
    import dataclasses

    resource = finding.resource
    if isinstance(resource, EcrImage):
        return dataclasses.replace(finding, resource=dataclasses.replace(resource, region=region))
    part = {"cn-north-1": "aws-cn", "us-gov-west-1": "aws-us-gov"}.get(region, "aws")
    arns = {
        name: getattr(resource, name)
        .replace("arn:aws:", f"arn:{part}:")
        .replace(":eu-central-1:", f":{region}:")
        for name in ("cluster_arn", "task_arn")
    }
    image = resource.image.replace(".eu-central-1.amazonaws.com", f".{region}.amazonaws.com")
    return dataclasses.replace(
        finding, resource=dataclasses.replace(resource, region=region, image=image, **arns)
    )


def test_the_validator_catches_what_it_should() -> None:
    """The checks above can fail: a misspelled field, a bad enum, an over-long title."""
    doc = stamped(openssl_vulnerability())
    doc["Vulnerabilities"][0]["FixAvailible"] = "YES"
    assert any("FixAvailible" in p for p in problems_of(doc))
    doc = stamped(openssl_vulnerability())
    doc["Vulnerabilities"][0]["ExploitAvailable"] = "MAYBE"
    doc["Title"] = "x" * 300
    doc["Types"] = ["Vulnerabilities/CVE"]
    found = problems_of(doc)
    assert any("ExploitAvailable" in p for p in found) and any("Title" in p for p in found)
    assert any("Types" in p for p in found)


# ------------------------------------------------------------------ against Inspector

# Inspector fields that Security Hub or AWS own, never the provider's to send.
SERVICE_OWNED = {"ProductName", "CompanyName", "WorkflowState", "Workflow", "Workflow.Status"}


def _paths(doc: Any, prefix: str = "") -> dict[str, type]:
    """Every key path (lists: their first element) -> the JSON type there."""
    out: dict[str, type] = {}
    if isinstance(doc, dict):
        for key, value in doc.items():
            path = f"{prefix}.{key}" if prefix else key
            out[path] = type(value)
            out.update(_paths(value, path))
    elif isinstance(doc, list) and doc:
        out.update(_paths(doc[0], prefix))
    return out


def test_an_image_finding_has_inspectors_shape_field_by_field() -> None:
    inspector = json.loads((INSPECTOR / "inspector-ecr-finding-openssl.json").read_text())
    ours = stamped(openssl_vulnerability(), "eu-central-1")
    theirs_paths = {
        p: t
        for p, t in _paths(inspector).items()
        if p not in SERVICE_OWNED and not p.startswith("ProductFields.aws/")
    }
    our_paths = _paths(ours)
    missing = sorted(set(theirs_paths) - set(our_paths))
    assert missing == [], f"Inspector sets these, containerscan does not: {missing}"
    numbers = {int, float}
    mismatched = [
        p
        for p, kind in theirs_paths.items()
        if our_paths[p] is not kind and {our_paths[p], kind} != numbers
    ]
    assert mismatched == []
    # Same input, same value: identity, title form, types, the resource, the package split.
    for path in (
        "Types",
        "Title",
        "Severity.Label",
        "Resources",
        "Vulnerabilities.Id",
        "Vulnerabilities.FixAvailable",
        "Vulnerabilities.ExploitAvailable",
        "Vulnerabilities.EpssScore",
        "Vulnerabilities.Cvss",
        "Vulnerabilities.Vendor.Name",
        "Vulnerabilities.Vendor.Url",
        "FindingProviderFields.Types",
    ):
        theirs, mine = _values(inspector, path), _values(ours, path)
        if path == "Resources":
            # The deliberate difference: the architecture as the API model spells it. And
            # the same instant, written with milliseconds (both are ASFF timestamps).
            theirs = json.loads(json.dumps(theirs).replace('"amd64"', '"x86_64"'))
            mine = json.loads(json.dumps(mine).replace(".000Z", "Z"))
        assert mine == theirs, path
    package, theirs_package = (
        ours["Vulnerabilities"][0]["VulnerablePackages"][0],
        inspector["Vulnerabilities"][0]["VulnerablePackages"][0],
    )
    for key in ("Name", "Version", "Epoch", "Release", "Architecture", "SourceLayerHash"):
        assert package[key] == theirs_package[key], key
    assert package["Remediation"] == "Upgrade openssl to 1.1.1n-0+deb11u5"


@pytest.mark.slow  # runs mypy
def test_mypy_catches_a_misspelled_asff_field(tmp_path: Path) -> None:
    """securityhub/asff.py is typed against mypy-boto3-securityhub's BatchImportFindings
    shapes: the same annotation on a misspelled field is a type error."""
    import subprocess
    import sys

    snippet = tmp_path / "misspelled.py"
    snippet.write_text(
        "from mypy_boto3_securityhub.type_defs import SoftwarePackageTypeDef\n"
        'good: SoftwarePackageTypeDef = {"Name": "openssl", "FixedInVersion": "3.0.13"}\n'
        'bad: SoftwarePackageTypeDef = {"Name": "openssl", "FixedVersion": "3.0.13"}\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--ignore-missing-imports",
         str(snippet)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout
    assert 'misspelled.py:3: error: Extra key "FixedVersion"' in result.stdout
    assert "misspelled.py:2:" not in result.stdout
