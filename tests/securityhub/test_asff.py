"""ASFF building: required fields, details, limits, trimming, fingerprints, timestamps."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from securityhub import asff
from securityhub.findings import (
    EcsContainer,
    Package,
    ProcessInfo,
    RuntimeFinding,
    ScannerInfo,
    Severity,
)
from tests.securityhub.conftest import ACCOUNT, REGION, image, secret, vuln

CTX = asff.BuildContext(ACCOUNT, REGION)
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def stamped(content: dict) -> dict:
    return asff.stamp(
        content, created_at=NOW, first_observed_at=NOW, updated_at=NOW, last_observed_at=NOW
    )


def test_vulnerability_has_required_fields_and_details() -> None:
    doc = stamped(asff.build(vuln(image(), packages=2), CTX))
    for name in (
        "SchemaVersion",
        "Id",
        "ProductArn",
        "GeneratorId",
        "AwsAccountId",
        "CreatedAt",
        "UpdatedAt",
        "Title",
        "Description",
        "Resources",
    ):
        assert doc[name], name
    assert doc["ProductArn"] == f"arn:aws:securityhub:{REGION}:{ACCOUNT}:product/{ACCOUNT}/default"
    assert doc["FindingProviderFields"]["Types"] == [asff.TYPE_CVE]
    assert doc["FindingProviderFields"]["Severity"] == {"Label": "HIGH", "Original": "4"}
    v = doc["Vulnerabilities"][0]
    assert v["Id"] == "CVE-2024-0001" and v["FixAvailable"] == "YES"
    assert [p["Name"] for p in v["VulnerablePackages"]] == ["openssl", "openssl1"]
    assert v["VulnerablePackages"][0]["FixedInVersion"] == "1.1.1w-1"
    assert v["Cvss"][0]["BaseScore"] == 7.5
    assert v["ReferenceUrls"] and v["Vendor"]["Name"] == "NVD"
    details = doc["Resources"][0]["Details"]["AwsEcrContainerImage"]
    assert details["RepositoryName"] == "team/app" and details["ImageDigest"].startswith("sha256:")
    assert doc["Resources"][0]["Type"] == "AwsEcrContainerImage"
    assert doc["ProductFields"]["containerscan/qualys/qid"] == "38170"
    assert doc["ProductFields"]["containerscan/scanner/version"] == "4.8.0-2"
    assert doc["RecordState"] == "ACTIVE" and doc["CreatedAt"] == "2026-11-01T12:00:00.000Z"


def test_severity_mapping_is_configurable() -> None:
    finding = dataclasses.replace(vuln(image()), vendor_severity="5", severity=Severity.LOW)
    assert asff.build(finding, CTX)["Severity"]["Label"] == "CRITICAL"
    custom = asff.BuildContext(ACCOUNT, REGION, severity_map={"5": Severity.MEDIUM})
    assert asff.build(finding, custom)["Severity"]["Label"] == "MEDIUM"
    unmapped = dataclasses.replace(finding, vendor_severity="urgent")
    assert asff.build(unmapped, CTX)["Severity"]["Label"] == "LOW"


def test_fix_available_no_without_fixed_versions() -> None:
    img = image()
    none = vuln(img, fixed=None)
    assert asff.build(none, CTX)["Vulnerabilities"][0]["FixAvailable"] == "NO"


def test_secret_never_carries_a_value_and_names_the_file() -> None:
    doc = asff.build(secret(image(), 12), CTX)
    assert doc["Types"] == [asff.TYPE_SECRET]
    assert "/app/.env:12" in doc["Description"]
    assert doc["ProductFields"]["containerscan/secret/line"] == "12"


def test_runtime_finding_has_process_action_and_ttp_types() -> None:
    container = EcsContainer(
        ACCOUNT,
        REGION,
        "arn:aws:ecs:us-east-1:1:cluster/c",
        "arn:aws:ecs:us-east-1:1:task/c/abc",
        "web",
        "app",
        "nginx:1.25",
    )
    finding = RuntimeFinding(
        container,
        "egress-not-allowed",
        "network",
        Severity.MEDIUM,
        "block",
        "203.0.113.9:4444",
        ScannerInfo("containerscan-sidecar"),
        process=ProcessInfo(42, 1, "/usr/bin/curl"),
        ip="203.0.113.9",
        port=4444,
        protocol="tcp",
        count=3,
        blocked=True,
    )
    doc = asff.build(finding, CTX)
    assert doc["Process"] == {"Name": "curl", "Path": "/usr/bin/curl", "Pid": 42, "ParentPid": 1}
    connection = doc["Action"]["NetworkConnectionAction"]
    assert doc["Action"]["ActionType"] == "NETWORK_CONNECTION"
    assert connection["RemoteIpDetails"] == {"IpAddressV4": "203.0.113.9"}
    assert connection["RemotePortDetails"] == {"Port": 4444} and connection["Blocked"] is True
    assert "Unusual Behaviors/Network Flow" in doc["Types"]
    # Three levels naming the detection, as GuardDuty Runtime Monitoring does.
    assert "TTPs/Command and Control/egress-not-allowed" in doc["Types"]
    assert connection["ConnectionDirection"] == "OUT"  # the API spells it IN | OUT
    assert doc["ProductFields"]["containerscan/runtime/count"] == "3"
    resources = {r["Type"]: r for r in doc["Resources"]}
    assert resources["AwsEcsContainer"]["Details"]["AwsEcsContainer"] == {
        "Name": "app",
        "Image": "nginx:1.25",
    }
    assert resources["AwsEcsTask"]["Id"] == "arn:aws:ecs:us-east-1:1:task/c/abc"
    assert resources["AwsEcsCluster"]["Details"]["AwsEcsCluster"]["ClusterName"] == "c"
    assert "AwsEcrContainerImage" not in resources  # nginx from Docker Hub, no digest


def test_runtime_finding_meets_the_image_vulnerabilities_on_the_same_resource() -> None:
    img = image()
    container = EcsContainer(
        ACCOUNT,
        REGION,
        f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/prod",
        f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/prod/0123456789abcdef",
        "web",
        "app",
        f"{img.registry}/{img.repository}:1.0",
        img.digest,
    )
    finding = RuntimeFinding(
        container,
        "Execution:Runtime-NewBinaryExecuted",
        "process",
        Severity.HIGH,
        "alert",
        "/tmp/x",
        ScannerInfo("containerscan-sidecar"),
        process=ProcessInfo(
            7,
            1,
            "/tmp/x",
            args=("/tmp/x", "--password=hunter2hunter2", "--token", "abcdef123456", "-v"),
            launched_at=NOW,
            user="1000",
        ),
    )
    doc = asff.build(finding, CTX)
    vuln_doc = asff.build(vuln(img), CTX)
    by_type = {r["Type"]: r for r in doc["Resources"]}
    assert by_type["AwsEcrContainerImage"]["Id"] == vuln_doc["Resources"][0]["Id"]
    assert "TTPs/Execution/Execution:Runtime-NewBinaryExecuted" in doc["Types"]
    assert doc["Process"]["LaunchedAt"] == "2026-11-01T12:00:00.000Z"
    fields = doc["ProductFields"]
    assert fields["containerscan/runtime/process/user"] == "1000"
    assert fields["containerscan/runtime/process/command-line"] == (
        "/tmp/x --password=*** --token *** -v"
    )
    assert "hunter2" not in str(doc) and "abcdef123456" not in str(doc)


def test_partitions_in_product_and_resource_arns() -> None:
    for region, part in (("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov"),
                         ("eu-west-1", "aws")):  # fmt: skip
        doc = asff.build(vuln(image(region=region)), asff.BuildContext(ACCOUNT, region))
        assert doc["ProductArn"] == f"arn:{part}:securityhub:{region}:{ACCOUNT}:product/{ACCOUNT}/default"
        resource = doc["Resources"][0]
        assert resource["Partition"] == part
        assert resource["Id"].startswith(f"arn:{part}:ecr:{region}:{ACCOUNT}:repository/team/app/")


def test_field_limits_are_enforced_by_truncation() -> None:
    finding = dataclasses.replace(
        vuln(image()),
        title="T" * 1000,
        description="D" * 5000,
        remediation="R" * 2000,
        qid="Q" * 5000,
        packages=(Package("p" * 1000, "1.0", "1.1"),),
    )
    doc = asff.build(finding, CTX)
    assert len(doc["Title"]) == asff.MAX_TITLE and doc["Title"].endswith("...")
    assert len(doc["Description"]) == asff.MAX_DESCRIPTION
    assert len(doc["Remediation"]["Recommendation"]["Text"]) == asff.MAX_RECOMMENDATION_TEXT
    assert len(doc["ProductFields"]["containerscan/qualys/qid"]) == asff.MAX_PRODUCT_FIELD_VALUE


def test_oversized_finding_is_trimmed_not_rejected() -> None:
    huge = vuln(image(), packages=3000)
    doc = asff.build(huge, CTX)
    kept = len(doc["Vulnerabilities"][0]["VulnerablePackages"])
    assert asff.encoded_size(stamped(doc)) < asff.MAX_FINDING_BYTES
    assert 0 < kept < 3000
    assert f"{kept} of 3000 affected packages" in doc["Description"]
    assert doc["ProductFields"]["containerscan/trimmed"] == f"packages {kept} of 3000"
    assert len(doc["Description"]) <= asff.MAX_DESCRIPTION


def test_fingerprint_ignores_timestamps_and_sees_content() -> None:
    content = asff.build(vuln(image()), CTX)
    one = stamped(content)
    two = asff.stamp(
        content,
        created_at=NOW,
        first_observed_at=NOW,
        updated_at=NOW + timedelta(days=3),
        last_observed_at=NOW + timedelta(days=3),
        record_state="ARCHIVED",
    )
    assert asff.fingerprint(one) == asff.fingerprint(two) == asff.fingerprint(content)
    changed = asff.build(vuln(image(), fixed="9.9"), CTX)
    assert asff.fingerprint(changed) != asff.fingerprint(content)


def test_next_updated_at_is_strictly_later() -> None:
    assert asff.next_updated_at(NOW, None) == NOW
    assert asff.next_updated_at(NOW, NOW) == NOW + asff.UPDATED_AT_STEP
    skewed = NOW + timedelta(minutes=5)  # the ledger's clock was ahead
    assert asff.next_updated_at(NOW, skewed) > skewed
    assert asff.next_updated_at(NOW + timedelta(seconds=1), NOW) == NOW + timedelta(seconds=1)


def test_timestamps_round_trip() -> None:
    text = asff.timestamp(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
    assert text == "2026-01-02T03:04:05.678Z"
    assert asff.parse_timestamp(text) == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def test_provider_content_strips_service_fields() -> None:
    content = stamped(asff.build(vuln(image()), CTX))
    read_back = dict(
        content,
        ProductName="Default",
        Workflow={"Status": "NEW"},
        ProductFields={**content["ProductFields"], "aws/securityhub/FindingId": "x"},
    )
    assert asff.fingerprint(asff.provider_content(read_back)) == asff.fingerprint(content)
