"""SecurityHubPublisher end to end against moto + the emulator (DynamoDB ledger included)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from securityhub import emulator, ids
from securityhub.aws import AccountTarget, SessionFactory
from securityhub.findings import EcsContainer, RuntimeFinding, ScannerInfo, Severity
from securityhub.hub import PublishSummary, RepositoryScope, SecurityHubPublisher
from securityhub.ledger import Ledger
from tests.securityhub.conftest import (
    ACCOUNT,
    DIGEST_A,
    DIGEST_B,
    FAST_GATEWAY,
    REGION,
    Clock,
    image,
    observe,
    secret,
    vuln,
)


@pytest.fixture
def publisher(sessions: SessionFactory, table: str, clock: Clock) -> SecurityHubPublisher:
    return SecurityHubPublisher(sessions, table, clock=clock, gateway_options=FAST_GATEWAY)


def hub_state(sessions: SessionFactory) -> dict[str, dict[str, Any]]:
    client = sessions.client("securityhub", REGION)
    pages = client.get_paginator("get_findings").paginate(
        Filters={"Id": [{"Value": "containerscan/", "Comparison": "PREFIX"}]}
    )
    return {f["Id"]: f for page in pages for f in page["Findings"]}


def counts(summary: PublishSummary) -> dict[str, int]:
    return {k: v for k, v in summary.as_dict().items() if k != "errors" and v}


def test_create_then_unchanged_run_imports_nothing(
    publisher: SecurityHubPublisher, sessions: SessionFactory, clock: Clock
) -> None:
    a, b = image(DIGEST_A), image(DIGEST_B)
    run = [observe(a, vuln(a), vuln(a, "CVE-2024-0002"), secret(a)), observe(b, vuln(b))]
    assert counts(publisher.publish(REGION, run)) == {"created": 4}
    state = emulator.set_faults(emulator.Faults())
    clock.advance(hours=6)
    assert counts(publisher.publish(REGION, run)) == {"unchanged": 4}
    assert state.calls.get("BatchImportFindings", 0) == 0  # zero ingestion events
    clock.advance(days=7)
    assert counts(publisher.publish(REGION, run)) == {"refreshed": 4}
    found = hub_state(sessions)
    assert len(found) == 4 and {f["RecordState"] for f in found.values()} == {"ACTIVE"}
    assert {f["CreatedAt"] for f in found.values()} == {"2026-11-01T12:00:00.000Z"}
    assert {f["UpdatedAt"] for f in found.values()} == {"2026-11-08T18:00:00.000Z"}


def test_change_archive_reactivate_keep_created_at(
    publisher: SecurityHubPublisher, sessions: SessionFactory, clock: Clock
) -> None:
    a = image()
    publisher.publish(REGION, [observe(a, vuln(a), vuln(a, "CVE-2024-0002"))])
    clock.advance(hours=1)
    changed = vuln(a, severity=Severity.CRITICAL, fixed="2.0")
    assert counts(publisher.publish(REGION, [observe(a, changed)])) == {"updated": 1, "archived": 1}
    clock.advance(hours=1)
    summary = publisher.publish(REGION, [observe(a, changed, vuln(a, "CVE-2024-0002"))])
    assert counts(summary) == {"reactivated": 1, "unchanged": 1}
    found = hub_state(sessions)
    fid = ids.finding_id(changed)
    assert found[fid]["Vulnerabilities"][0]["VulnerablePackages"][0]["FixedInVersion"] == "2.0"
    assert {f["CreatedAt"] for f in found.values()} == {"2026-11-01T12:00:00.000Z"}
    assert {f["RecordState"] for f in found.values()} == {"ACTIVE"}


def test_failed_scan_is_untouched_and_partial_kinds_spare_secrets(
    publisher: SecurityHubPublisher, sessions: SessionFactory, clock: Clock
) -> None:
    a, b = image(DIGEST_A), image(DIGEST_B)
    publisher.publish(REGION, [observe(a, vuln(a), secret(a)), observe(b, vuln(b), secret(b))])
    before_b = {k: v for k, v in hub_state(sessions).items() if DIGEST_B[7:] in k}
    clock.advance(hours=1)
    # b failed to scan (not passed); a was scanned for packages only and is now clean.
    summary = publisher.publish(REGION, [observe(a, kinds=("vulnerability",))])
    assert counts(summary) == {"archived": 1}
    after = hub_state(sessions)
    assert after[ids.finding_id(secret(a))]["RecordState"] == "ACTIVE"
    assert after[ids.finding_id(vuln(a))]["RecordState"] == "ARCHIVED"
    assert {k: v for k, v in after.items() if DIGEST_B[7:] in k} == before_b


def test_repository_scope_archives_vanished_digests(
    publisher: SecurityHubPublisher, sessions: SessionFactory, clock: Clock
) -> None:
    a, b = image(DIGEST_A), image(DIGEST_B)
    other = image(DIGEST_B, "team/other")
    publisher.publish(
        REGION, [observe(a, vuln(a)), observe(b, vuln(b), secret(b)), observe(other, vuln(other))]
    )
    clock.advance(hours=1)
    scope = RepositoryScope(ACCOUNT, REGION, "team/app", frozenset({DIGEST_A}), clock.now)
    summary = publisher.publish(REGION, [], repositories=[scope])
    assert counts(summary) == {"archived": 2}
    state = {k: f["RecordState"] for k, f in hub_state(sessions).items()}
    assert state[ids.finding_id(vuln(a))] == "ACTIVE"  # present, not rescanned: untouched
    assert state[ids.finding_id(vuln(b))] == state[ids.finding_id(secret(b))] == "ARCHIVED"
    assert state[ids.finding_id(vuln(other))] == "ACTIVE"  # another repository


def test_absence_from_a_listing_older_than_the_publish_archives_nothing(
    publisher: SecurityHubPublisher, sessions: SessionFactory, clock: Clock
) -> None:
    """A wide sweep lists {a}; a push run publishes b; the sweep's publish keeps b."""
    a, b = image(DIGEST_A), image(DIGEST_B)
    publisher.publish(REGION, [observe(a, vuln(a))])
    clock.advance(hours=1)
    listed_at = clock.now  # the wide sweep's listing: b not pushed yet
    clock.advance(minutes=5)
    publisher.publish(REGION, [observe(b, vuln(b), secret(b))])  # the push run
    clock.advance(minutes=5)
    listing = RepositoryScope(ACCOUNT, REGION, "team/app", frozenset({DIGEST_A}), listed_at)
    asked: list[list[str]] = []

    def exists(repo: RepositoryScope, digests: list[str]) -> set[str]:
        asked.append(list(digests))
        return set(digests)  # ECR: b is there

    summary = publisher.publish(REGION, [], repositories=[listing], exists=exists)
    assert counts(summary) == {"kept_absent": 1}
    assert asked == [[DIGEST_B]]  # one batched direct check, only for the unproven image
    # without a direct check the unproven image is kept too
    assert counts(publisher.publish(REGION, [], repositories=[listing])) == {"kept_absent": 1}
    state = {k: f["RecordState"] for k, f in hub_state(sessions).items()}
    assert set(state.values()) == {"ACTIVE"} and len(state) == 3
    # ECR says b is gone (deleted after the push): now it is archived
    summary = publisher.publish(REGION, [], repositories=[listing], exists=lambda r, d: set())
    assert counts(summary) == {"archived": 2}
    # and a listing taken well after a publish proves absence without asking
    clock.advance(hours=1)
    later = RepositoryScope(ACCOUNT, REGION, "team/app", frozenset(), clock.now)
    assert counts(publisher.publish(REGION, [], repositories=[later], exists=None)) == {
        "archived": 1
    }


def test_same_millisecond_rerun_still_increases_updated_at(
    publisher: SecurityHubPublisher, sessions: SessionFactory
) -> None:
    a = image()
    publisher.publish(REGION, [observe(a, vuln(a))])
    summary = publisher.publish(REGION, [observe(a, vuln(a, fixed="3.0"))])  # clock not moved
    assert counts(summary) == {"updated": 1}
    (stored,) = hub_state(sessions).values()
    assert stored["UpdatedAt"] == "2026-11-01T12:00:00.001Z"
    assert stored["Vulnerabilities"][0]["VulnerablePackages"][0]["FixedInVersion"] == "3.0"


def test_runtime_findings_update_and_are_never_archived(
    publisher: SecurityHubPublisher, sessions: SessionFactory, clock: Clock
) -> None:
    container = EcsContainer(
        ACCOUNT,
        REGION,
        "arn:aws:ecs:us-east-1:1:cluster/c",
        "arn:aws:ecs:us-east-1:1:task/c/1",
        "web",
        "app",
    )
    finding = RuntimeFinding(
        container,
        "shell",
        "process",
        Severity.HIGH,
        "alert",
        "/bin/sh",
        ScannerInfo("containerscan-sidecar"),
        count=1,
    )
    from securityhub.findings import Observation

    def run(*findings: RuntimeFinding, task: str = "1") -> PublishSummary:
        c = dataclasses.replace(container, task_arn=f"arn:aws:ecs:us-east-1:1:task/c/{task}")
        return publisher.publish(
            REGION,
            [
                Observation(
                    c,
                    frozenset({"runtime"}),
                    tuple(dataclasses.replace(f, resource=c) for f in findings),
                )
            ],
        )

    assert counts(run(finding)) == {"created": 1}
    clock.advance(minutes=5)
    assert counts(run(dataclasses.replace(finding, count=7), task="2")) == {"updated": 1}
    clock.advance(minutes=5)
    assert counts(run(task="3")) == {}
    (stored,) = hub_state(sessions).values()
    assert stored["RecordState"] == "ACTIVE"
    assert stored["ProductFields"]["containerscan/runtime/count"] == "7"


def test_rejected_findings_are_counted_and_not_recorded(
    publisher: SecurityHubPublisher, sessions: SessionFactory, table: str, clock: Clock
) -> None:
    a = image()
    bad = ids.finding_id(vuln(a, "CVE-BAD"))
    emulator.set_faults(emulator.Faults(invalid_ids=frozenset({bad})))
    summary = publisher.publish(REGION, [observe(a, vuln(a), vuln(a, "CVE-BAD"))])
    assert summary.created == 1 and summary.failed == 1
    assert summary.errors[0].startswith(bad) and "InvalidInput (Title)" in summary.errors[0]
    ledger = Ledger(sessions.client("dynamodb"), table)
    assert [e.finding_id for e in ledger.scope_entries(ids.image_scope(a))] == [
        ids.finding_id(vuln(a))
    ]
    emulator.set_faults()
    clock.advance(hours=1)
    assert counts(publisher.publish(REGION, [observe(a, vuln(a), vuln(a, "CVE-BAD"))])) == {
        "created": 1,
        "unchanged": 1,
    }


def test_cross_account_target_imports_into_the_spoke(
    publisher: SecurityHubPublisher, sessions: SessionFactory
) -> None:
    # moto maps AssumeRole credentials to the role's account, as AWS does.
    spoke = "210987654321"
    target = AccountTarget(spoke, f"arn:aws:iam::{spoke}:role/containerscan-spoke")
    a = dataclasses.replace(image(), account_id=spoke)
    assert counts(publisher.publish(REGION, [observe(a, vuln(a))], target=target)) == {"created": 1}
    spoke_hub = sessions.client("securityhub", REGION, target)
    (found,) = spoke_hub.get_findings()["Findings"]
    assert found["AwsAccountId"] == spoke
    assert found["ProductArn"] == f"arn:aws:securityhub:{REGION}:{spoke}:product/{spoke}/default"
    assert hub_state(sessions) == {}  # nothing in the hub account
    assert counts(publisher.publish(REGION, [observe(a, vuln(a))], target=target)) == {
        "unchanged": 1
    }


def test_oversized_finding_is_trimmed_and_accepted(
    publisher: SecurityHubPublisher, sessions: SessionFactory
) -> None:
    a = image()
    summary = publisher.publish(REGION, [observe(a, vuln(a, packages=4000))])
    assert counts(summary) == {"created": 1}
    (stored,) = hub_state(sessions).values()
    assert "affected packages listed" in stored["Description"]
    assert 0 < len(stored["Vulnerabilities"][0]["VulnerablePackages"]) < 4000


def test_summary_as_dict_and_addition() -> None:
    one = PublishSummary(created=1, failed=1, stale=1, errors=("x: y",))
    total = one + PublishSummary(archived=2, corrupt=1, stale=2, kept_absent=1)
    assert total.as_dict() == {
        "created": 1,
        "updated": 0,
        "refreshed": 0,
        "archived": 2,
        "reactivated": 0,
        "unchanged": 0,
        "failed": 1,
        "stale": 3,
        "corrupt": 1,
        "kept_absent": 1,
        "errors": ["x: y"],
    }
    assert total.imported == 3


def test_new_ids_name_what_was_created_or_reactivated(
    publisher: SecurityHubPublisher, clock: Clock
) -> None:
    a = image()
    first, second = vuln(a), vuln(a, "CVE-2024-0002")
    created = publisher.publish(REGION, [observe(a, first, second)])
    assert created.new_ids == tuple(sorted(ids.finding_id(f) for f in (first, second)))
    clock.advance(hours=1)
    changed = vuln(a, fixed="9.9")  # an update is not new, nor is an archive
    summary = publisher.publish(REGION, [observe(a, changed)])
    assert counts(summary) == {"updated": 1, "archived": 1} and summary.new_ids == ()
    clock.advance(days=8)  # refreshed and unchanged are not new either
    assert publisher.publish(REGION, [observe(a, changed)]).new_ids == ()
    clock.advance(hours=1)
    back = publisher.publish(REGION, [observe(a, changed, second)])
    assert counts(back) == {"reactivated": 1, "unchanged": 1}
    assert back.new_ids == (ids.finding_id(second),)
    assert "new_ids" not in back.as_dict()  # status.json keeps the counts


def test_new_ids_leave_out_rejected_findings(publisher: SecurityHubPublisher, clock: Clock) -> None:
    a = image()
    bad = ids.finding_id(vuln(a, "CVE-BAD"))
    emulator.set_faults(emulator.Faults(invalid_ids=frozenset({bad})))
    summary = publisher.publish(REGION, [observe(a, vuln(a), vuln(a, "CVE-BAD"))])
    assert summary.new_ids == (ids.finding_id(vuln(a)),)
    emulator.set_faults()
    clock.advance(hours=1)
    # Imported by the next run: new then.
    assert publisher.publish(REGION, [observe(a, vuln(a), vuln(a, "CVE-BAD"))]).new_ids == (bad,)


def test_known_repositories_and_a_repository_deleted_entirely(
    publisher: SecurityHubPublisher, sessions: SessionFactory, clock: Clock
) -> None:
    a, b = image(DIGEST_A), image(DIGEST_B)
    other = image(DIGEST_A, "team/other")
    elsewhere = image(DIGEST_A, "team/app", region="eu-west-1")
    publisher.publish(REGION, [observe(a, vuln(a)), observe(b, secret(b))])
    publisher.publish(REGION, [observe(other, vuln(other))])
    publisher.publish("eu-west-1", [observe(elsewhere, vuln(elsewhere))])
    assert publisher.known_repositories(ACCOUNT, REGION) == {"team/app", "team/other"}
    assert publisher.known_repositories(ACCOUNT, "eu-west-1") == {"team/app"}
    assert publisher.known_repositories("210987654321", REGION) == frozenset()
    clock.advance(hours=1)
    gone = RepositoryScope(ACCOUNT, REGION, "team/app", frozenset(), clock.now)
    summary = publisher.publish(REGION, [], repositories=[gone])
    assert counts(summary) == {"archived": 2}
    state = {k: f["RecordState"] for k, f in hub_state(sessions).items()}
    assert state[ids.finding_id(vuln(other))] == "ACTIVE"
    assert state[ids.finding_id(vuln(a))] == state[ids.finding_id(secret(b))] == "ARCHIVED"
    assert counts(publisher.publish(REGION, [], repositories=[gone])) == {}


def test_reconcile_rebuilds_the_repository_directory(
    publisher: SecurityHubPublisher, sessions: SessionFactory, table: str
) -> None:
    from securityhub.gateway import Gateway
    from securityhub.ledger import directory_key
    from securityhub.reconcile import Reconciler

    a, other = image(), image(DIGEST_B, "team/other")
    publisher.publish(REGION, [observe(a, vuln(a)), observe(other, secret(other))])
    dynamodb = sessions.client("dynamodb")
    key = directory_key(ACCOUNT, REGION)
    for name in ("team/app", "team/other"):  # a ledger older than the directory
        dynamodb.delete_item(TableName=table, Key={"pk": {"S": key}, "sk": {"S": name}})
    assert publisher.known_repositories(ACCOUNT, REGION) == frozenset()
    gateway = Gateway(sessions.client("securityhub", REGION), **FAST_GATEWAY)
    reconciler = Reconciler(gateway, Ledger(dynamodb, table), ACCOUNT, REGION)
    assert reconciler.run(ids.DEFAULT_PREFIX).matching == 2
    assert publisher.known_repositories(ACCOUNT, REGION) == {"team/app", "team/other"}
