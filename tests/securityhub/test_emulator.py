"""The Security Hub emulator: the reference's semantics on top of moto."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from securityhub import emulator
from tests.securityhub.conftest import ACCOUNT, REGION

ARN = f"arn:aws:securityhub:{REGION}:{ACCOUNT}:product/{ACCOUNT}/default"
NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})


def finding(fid: str, updated: str = "2026-11-01T00:00:00.000Z", **extra: Any) -> dict[str, Any]:
    doc = {
        "SchemaVersion": "2018-10-08",
        "Id": fid,
        "ProductArn": ARN,
        "GeneratorId": "containerscan/vulnerability/",
        "AwsAccountId": ACCOUNT,
        "CreatedAt": "2026-11-01T00:00:00.000Z",
        "UpdatedAt": updated,
        "Title": f"title {fid}",
        "Description": "d",
        "Severity": {"Label": "HIGH"},
        "Types": ["Software and Configuration Checks/Vulnerabilities/CVE"],
        "Resources": [{"Type": "Other", "Id": f"res/{fid}"}],
    }
    doc.update(extra)
    return doc


@pytest.fixture
def hub(aws: None) -> Any:
    return boto3.client("securityhub", REGION, config=NO_RETRY)


def ids_of(hub: Any, **filters: Any) -> list[str]:
    return sorted(f["Id"] for f in hub.get_findings(Filters=filters)["Findings"])


def test_record_state_default_and_filters(hub: Any) -> None:
    hub.batch_import_findings(
        Findings=[
            finding("cs/a/1"),
            finding("cs/a/2"),
            finding("cs/b/1"),
            finding("csx/1", RecordState="ARCHIVED"),
        ]
    )
    assert ids_of(hub, Id=[{"Value": "cs/", "Comparison": "PREFIX"}]) == [
        "cs/a/1",
        "cs/a/2",
        "cs/b/1",
    ]
    assert ids_of(
        hub,
        Id=[
            {"Value": "cs/a/1", "Comparison": "EQUALS"},
            {"Value": "cs/b/", "Comparison": "PREFIX"},
        ],
    ) == ["cs/a/1", "cs/b/1"]
    assert ids_of(hub, RecordState=[{"Value": "ACTIVE", "Comparison": "EQUALS"}]) == [
        "cs/a/1",
        "cs/a/2",
        "cs/b/1",
    ]
    assert ids_of(hub, RecordState=[{"Value": "ARCHIVED", "Comparison": "EQUALS"}]) == ["csx/1"]
    assert ids_of(hub, ResourceId=[{"Value": "res/cs/b/1", "Comparison": "EQUALS"}]) == ["cs/b/1"]
    assert ids_of(hub, Region=[{"Value": "eu-west-1", "Comparison": "EQUALS"}]) == []
    assert (
        len(
            ids_of(
                hub,
                AwsAccountId=[{"Value": ACCOUNT, "Comparison": "EQUALS"}],
                ProductArn=[{"Value": ARN, "Comparison": "EQUALS"}],
                GeneratorId=[{"Value": "containerscan/", "Comparison": "PREFIX"}],
            )
        )
        == 4
    )
    assert ids_of(
        hub,
        Id=[
            {"Value": "cs/", "Comparison": "PREFIX"},
            {"Value": "cs/a/", "Comparison": "PREFIX_NOT_EQUALS"},
        ],
    ) == ["cs/b/1"]


def test_pagination(hub: Any) -> None:
    hub.batch_import_findings(Findings=[finding(f"cs/{i:03d}") for i in range(100)])
    hub.batch_import_findings(Findings=[finding(f"cs/{i:03d}") for i in range(100, 130)])
    pages = list(hub.get_paginator("get_findings").paginate(PaginationConfig={"PageSize": 40}))
    assert [len(p["Findings"]) for p in pages] == [40, 40, 40, 10]
    assert len({f["Id"] for p in pages for f in p["Findings"]}) == 130


def test_older_or_equal_updated_at_is_ignored(hub: Any) -> None:
    hub.batch_import_findings(Findings=[finding("cs/1", "2026-11-02T00:00:00.000Z")])
    for stale in ("2026-11-02T00:00:00.000Z", "2026-11-01T00:00:00Z"):
        response = hub.batch_import_findings(Findings=[finding("cs/1", stale, Title="stale")])
        assert response["SuccessCount"] == 1  # silently ignored, as Security Hub does
    assert hub.get_findings()["Findings"][0]["Title"] == "title cs/1"
    hub.batch_import_findings(Findings=[finding("cs/1", "2026-11-02T00:00:00.001Z", Title="new")])
    assert hub.get_findings()["Findings"][0]["Title"] == "new"


def test_workflow_new_on_reactivation_and_kept_otherwise(hub: Any, aws: None) -> None:
    from moto.securityhub.models import securityhub_backends

    hub.batch_import_findings(Findings=[finding("cs/1")])
    stored = securityhub_backends[ACCOUNT][REGION].findings[0]
    stored.data["Workflow"] = {"Status": "RESOLVED"}  # what a user's BatchUpdateFindings does
    hub.batch_import_findings(
        Findings=[finding("cs/1", "2026-11-02T00:00:00Z", Workflow={"Status": "NEW"})]
    )
    assert (
        hub.get_findings()["Findings"][0]["Workflow"]["Status"] == "RESOLVED"
    )  # import can't change it
    hub.batch_import_findings(
        Findings=[finding("cs/1", "2026-11-03T00:00:00Z", RecordState="ARCHIVED")]
    )
    hub.batch_import_findings(
        Findings=[finding("cs/1", "2026-11-04T00:00:00Z", RecordState="ACTIVE")]
    )
    assert hub.get_findings()["Findings"][0]["Workflow"]["Status"] == "NEW"


def test_more_than_100_findings_rejected(hub: Any) -> None:
    with pytest.raises(ClientError) as caught:
        hub.batch_import_findings(Findings=[finding(f"cs/{i}") for i in range(101)])
    assert caught.value.response["Error"]["Code"] == "InvalidInputException"
    assert hub.get_findings()["Findings"] == []


@pytest.mark.parametrize(
    "change",
    [
        {"AwsAccountId": "210987654321"},
        {"ProductArn": f"arn:aws:securityhub:eu-west-1:{ACCOUNT}:product/{ACCOUNT}/default"},
    ],
)
def test_foreign_account_or_region_is_access_denied(hub: Any, change: dict[str, str]) -> None:
    with pytest.raises(ClientError) as caught:
        hub.batch_import_findings(Findings=[finding("cs/ok"), finding("cs/bad", **change)])
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    assert hub.get_findings()["Findings"] == []  # the whole request failed


def test_invalid_findings_come_back_in_failed_findings(hub: Any) -> None:
    response = hub.batch_import_findings(
        Findings=[
            finding("cs/ok"),
            finding("cs/long", Title="x" * 300),
            finding("cs/rec", Remediation={"Recommendation": {"Text": "y" * 600}}),
        ]
    )
    assert response["SuccessCount"] == 1 and response["FailedCount"] == 2
    messages = {f["Id"]: f["ErrorMessage"] for f in response["FailedFindings"]}
    assert "data.Title" in messages["cs/long"]
    assert "data.Remediation.Recommendation.Text" in messages["cs/rec"]
    assert {f["ErrorCode"] for f in response["FailedFindings"]} == {"InvalidInput"}


def test_injected_throttling_and_failed_findings(hub: Any) -> None:
    state = emulator.set_faults(emulator.Faults(throttle=0.5, seed=3))
    outcomes = []
    for i in range(40):
        try:
            hub.batch_import_findings(Findings=[finding(f"cs/{i}")])
            outcomes.append("ok")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
    assert set(outcomes) == {"ok", "TooManyRequestsException"}
    assert state.throttled == outcomes.count("TooManyRequestsException")
    emulator.set_faults(emulator.Faults(failed=1.0, invalid_ids=frozenset({"cs/x"})))
    response = hub.batch_import_findings(Findings=[finding("cs/x"), finding("cs/y")])
    codes = {f["Id"]: f["ErrorCode"] for f in response["FailedFindings"]}
    assert codes == {"cs/x": "InvalidInput", "cs/y": "InternalFailure"}


def test_faults_parse_from_text() -> None:
    parsed = emulator.Faults.parse("throttle=0.3, failed=0.05,code=InternalError,seed=9")
    assert (parsed.throttle, parsed.failed, parsed.failed_code, parsed.seed) == (
        0.3,
        0.05,
        "InternalError",
        9,
    )
    with pytest.raises(ValueError):
        emulator.Faults.parse("speed=3")


def test_server_mode_with_faults_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(emulator.FAULTS_ENV, "throttle=1.0")
    with emulator.LocalServer() as endpoint:
        assert endpoint.startswith("http://127.0.0.1:")
        client = boto3.client("securityhub", REGION, endpoint_url=endpoint, config=NO_RETRY)
        with pytest.raises(ClientError) as caught:
            client.batch_import_findings(Findings=[finding("cs/1")])
        assert caught.value.response["Error"]["Code"] == "TooManyRequestsException"
        emulator.set_faults()  # the server runs in this process: faults are controllable
        client.batch_import_findings(Findings=[finding("cs/1"), finding("other/1")])
        found = client.get_findings(Filters={"Id": [{"Value": "cs/", "Comparison": "PREFIX"}]})
        assert [f["Id"] for f in found["Findings"]] == ["cs/1"]
        assert found["Findings"][0]["RecordState"] == "ACTIVE"
    emulator.set_faults()
