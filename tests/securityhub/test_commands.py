"""`containerscan init | findings | reconcile` with click's CliRunner, against moto."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from check.cli import cli
from securityhub import ids
from securityhub.aws import SessionFactory
from securityhub.findings import Severity
from securityhub.hub import SecurityHubPublisher
from securityhub.ledger import Ledger
from tests.securityhub.conftest import (
    DIGEST_A,
    DIGEST_B,
    FAST_GATEWAY,
    REGION,
    TABLE,
    Clock,
    image,
    observe,
    secret,
    vuln,
)


@pytest.fixture
def runner(aws: None, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("CONTAINERSCAN_TABLE", TABLE)
    monkeypatch.setenv("CONTAINERSCAN_BUCKET", "containerscan-test-outputs")
    return CliRunner()


@pytest.fixture
def published(runner: CliRunner, sessions: SessionFactory) -> SecurityHubPublisher:
    assert runner.invoke(cli, ["init"]).exit_code == 0
    clock = Clock()
    publisher = SecurityHubPublisher(sessions, TABLE, clock=clock, gateway_options=FAST_GATEWAY)
    a, b = image(DIGEST_A), image(DIGEST_B, "team/other")
    # Qualys severity 2 maps to LOW.
    publisher.publish(
        REGION,
        [
            observe(a, vuln(a), secret(a)),
            observe(b, dataclasses.replace(vuln(b), vendor_severity="2")),
        ],
    )
    clock.advance(hours=1)
    publisher.publish(REGION, [observe(a, vuln(a))])  # the secret was removed: archived
    return publisher


def test_init_is_idempotent_and_secures_the_bucket(
    runner: CliRunner, sessions: SessionFactory
) -> None:
    first = runner.invoke(cli, ["init"])
    assert first.exit_code == 0, first.output
    assert "table containerscan-test: created" in first.output
    second = runner.invoke(cli, ["init"])
    assert "table containerscan-test: exists" in second.output
    assert "bucket containerscan-test-outputs: exists" in second.output
    s3 = sessions.client("s3")
    block = s3.get_public_access_block(Bucket="containerscan-test-outputs")
    assert all(block["PublicAccessBlockConfiguration"].values())
    rules = s3.get_bucket_encryption(Bucket="containerscan-test-outputs")[
        "ServerSideEncryptionConfiguration"
    ]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"


def test_init_without_a_table_is_a_usage_error(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONTAINERSCAN_TABLE")
    result = runner.invoke(cli, ["init"])
    assert result.exit_code == 2 and "CONTAINERSCAN_TABLE" in result.output


def test_findings_table_and_filters(runner: CliRunner, published: SecurityHubPublisher) -> None:
    active = runner.invoke(cli, ["findings"])
    assert active.exit_code == 0, active.output
    assert "2 finding(s)" in active.output and "ARCHIVED" not in active.output
    archived = runner.invoke(cli, ["findings", "--state", "archived"])
    assert "1 finding(s)" in archived.output and "AWS access key" in archived.output
    every = runner.invoke(cli, ["findings", "--state", "all", "--output", "json"])
    docs = json.loads(every.output)
    assert len(docs) == 3 and docs[0]["Severity"]["Label"] in ("HIGH", "CRITICAL")
    only_repo = json.loads(
        runner.invoke(cli, ["findings", "--repository", "team/other", "--output", "json"]).output
    )
    assert [
        d["Resources"][0]["Details"]["AwsEcrContainerImage"]["RepositoryName"] for d in only_repo
    ] == ["team/other"]
    low = json.loads(
        runner.invoke(cli, ["findings", "--severity", "low,medium", "--output", "json"]).output
    )
    assert [d["Severity"]["Label"] for d in low] == ["LOW"]
    assert (
        runner.invoke(cli, ["findings", "--prefix", "other/", "--output", "json"]).output.strip()
        == "[]"
    )


def test_findings_rejects_bad_options(runner: CliRunner) -> None:
    assert runner.invoke(cli, ["findings", "--severity", "urgent"]).exit_code == 2
    assert runner.invoke(cli, ["findings", "--prefix", "no-slash"]).exit_code == 2


def test_reconcile_repairs_a_lost_and_a_drifted_ledger(
    runner: CliRunner, published: SecurityHubPublisher, sessions: SessionFactory
) -> None:
    ledger = Ledger(sessions.client("dynamodb"), TABLE)
    scope = ids.image_scope(image(DIGEST_A))
    lost = ledger.scope_entries(scope)
    ledger.forget(lost)  # e.g. a crash after the import, or a lost table
    clean = runner.invoke(cli, ["reconcile", "--dry-run", "--output", "json"])
    report = json.loads(clean.output)
    assert report["missing"] == len(lost) == 2 and report["matching"] == 1 and report["dry_run"]
    assert ledger.scope_entries(scope) == []
    fixed = runner.invoke(cli, ["reconcile"])
    assert fixed.exit_code == 0 and "2 missing" in fixed.output
    restored = {e.finding_id: e for e in ledger.scope_entries(scope)}
    assert {e.finding_id: e for e in lost} == restored  # identical, fingerprints included
    again = json.loads(runner.invoke(cli, ["reconcile", "--output", "json"]).output)
    assert (again["missing"], again["drifted"], again["stale"], again["matching"]) == (0, 0, 0, 3)
    # The repaired ledger lets the next run recognise unchanged findings.
    a = image(DIGEST_A)
    summary = published.publish(REGION, [observe(a, vuln(a))])
    assert (summary.unchanged, summary.imported) == (1, 0)


def test_findings_sort_by_risk(runner: CliRunner, sessions: SessionFactory) -> None:
    """A HIGH that runs comes before a CRITICAL nobody runs; no score sorts last."""
    from securityhub.exposure import Exposure
    from securityhub.risk import Exploitability, score

    def exposed(finding, in_use: bool):  # type: ignore[no-untyped-def]
        exposure = Exposure(in_use=in_use)
        risk = score(finding.severity, Exploitability(), exposure)
        return dataclasses.replace(finding, exposure=dataclasses.replace(exposure, risk=risk))

    assert runner.invoke(cli, ["init"]).exit_code == 0
    publisher = SecurityHubPublisher(sessions, TABLE, gateway_options=FAST_GATEWAY)
    a, b = image(DIGEST_A), image(DIGEST_B, "team/other")

    def finding(img, vid, severity):  # type: ignore[no-untyped-def]
        return dataclasses.replace(vuln(img, vid, severity=severity), vendor_severity=None)

    running = exposed(finding(a, "CVE-2024-0002", Severity.HIGH), True)
    idle = exposed(finding(b, "CVE-2024-0003", Severity.CRITICAL), False)
    plain = finding(b, "CVE-2024-0004", Severity.CRITICAL)  # no exposure: no risk
    publisher.publish(REGION, [observe(a, running), observe(b, idle, plain)])

    output = runner.invoke(cli, ["findings", "--sort", "risk", "--output", "json"]).output
    by_risk = json.loads(output)
    assert [d["Vulnerabilities"][0]["Id"] for d in by_risk] == [
        "CVE-2024-0002",
        "CVE-2024-0003",
        "CVE-2024-0004",
    ]
    assert [d["ProductFields"].get("containerscan/Risk") for d in by_risk] == ["50", "40", None]
    by_severity = json.loads(runner.invoke(cli, ["findings", "--output", "json"]).output)
    assert by_severity[-1]["Vulnerabilities"][0]["Id"] == "CVE-2024-0002"
    table = runner.invoke(cli, ["findings", "--sort", "risk"]).output
    assert table.splitlines()[1].startswith("HIGH 50")
