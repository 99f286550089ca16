"""The DynamoDB ledger: schema, scope queries, stored findings, TTL."""

from __future__ import annotations

from datetime import UTC, datetime

from securityhub import ids
from securityhub.aws import SessionFactory
from securityhub.correlate import ARCHIVED, LedgerEntry
from securityhub.ledger import Ledger, LedgerRecord, create_table, partition_of
from tests.securityhub.conftest import ACCOUNT, DIGEST_A, DIGEST_B, REGION, TABLE, image

WHEN = datetime(2026, 11, 1, 12, 0, 0, 123000, tzinfo=UTC)


def record(
    fid: str, scope: str, kind: str = "vulnerability", state: str = "ACTIVE"
) -> LedgerRecord:
    entry = LedgerEntry(fid, scope, kind, "fp-" + fid, WHEN, WHEN, WHEN, state)
    return LedgerRecord(entry, ACCOUNT, REGION, {"Id": fid, "Title": "t" * 500})


def test_create_table_is_idempotent_with_ttl_and_sse(sessions: SessionFactory) -> None:
    client = sessions.client("dynamodb")
    assert create_table(client, TABLE) is True
    assert create_table(client, TABLE) is False
    described = client.describe_table(TableName=TABLE)["Table"]
    assert {k["AttributeName"] for k in described["KeySchema"]} == {"pk", "sk"}
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert described["SSEDescription"]["Status"] == "ENABLED"
    ttl = client.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"


def test_scope_and_partition_queries(sessions: SessionFactory, table: str) -> None:
    ledger = Ledger(sessions.client("dynamodb"), table)
    scope_a = ids.image_scope(image(DIGEST_A))
    scope_b = ids.image_scope(image(DIGEST_B))
    scope_other_repo = ids.image_scope(image(DIGEST_A, "team/app2"))
    written = ledger.record(
        [
            record("a1", scope_a),
            record("a2", scope_a, "secret"),
            record("b1", scope_b, state=ARCHIVED),
            record("o1", scope_other_repo),
        ]
    )
    assert written == (4, 0)
    assert sorted(e.finding_id for e in ledger.scope_entries(scope_a)) == ["a1", "a2"]
    repo = ids.repository_scope(ACCOUNT, REGION, "team/app")
    assert sorted(e.finding_id for e in ledger.partition_entries(repo)) == ["a1", "a2", "b1"]
    (b1,) = ledger.scope_entries(scope_b)
    assert b1 == LedgerEntry("b1", scope_b, "vulnerability", "fp-b1", WHEN, WHEN, WHEN, ARCHIVED)
    stored = ledger.stored_findings(ledger.scope_entries(scope_a))
    assert stored["a1"] == {"Id": "a1", "Title": "t" * 500}
    item = sessions.client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": partition_of(scope_b)}, "sk": {"S": f"{scope_b}#b1"}}
    )["Item"]
    # ARCHIVED findings are deleted by Security Hub after 30 days: so is the ledger entry.
    assert int(item["expires_at"]["N"]) == int(WHEN.timestamp()) + 30 * 86400
    assert ledger.forget(ledger.scope_entries(scope_a)) == 2
    assert ledger.scope_entries(scope_a) == []


def test_many_records_are_batched(sessions: SessionFactory, table: str) -> None:
    ledger = Ledger(sessions.client("dynamodb"), table)
    scope = ids.image_scope(image(DIGEST_A))
    ledger.record(record(f"v{i:03d}", scope) for i in range(260))
    entries = ledger.scope_entries(scope)
    assert len(entries) == 260
    assert len(ledger.stored_findings(entries)) == 260


def test_records_list_their_repositories_once_with_a_ttl_beyond_their_entries(
    sessions: SessionFactory, table: str
) -> None:
    from securityhub.ledger import ACTIVE_RETENTION, directory_key

    client = sessions.client("dynamodb")
    ledger = Ledger(client, table, clock=lambda: WHEN.timestamp() + 3600)
    odd = "team/app.v2_x-y"  # ECR allows '/', '.', '_', '-'
    scopes = [
        ids.image_scope(image(DIGEST_A)),
        ids.image_scope(image(DIGEST_B)),
        ids.image_scope(image(DIGEST_A, odd)),
        ids.image_scope(image(DIGEST_A, "team/app", region="eu-west-1")),
        "ecs/123456789012/us-east-1/web/app",  # runtime: no repository
    ]
    assert ledger.record(record(f"f{i}", s) for i, s in enumerate(scopes)).written == 5
    assert sorted(ledger.known_repositories(ACCOUNT, REGION)) == ["team/app", odd]
    assert ledger.known_repositories(ACCOUNT, "eu-west-1") == ["team/app"]
    assert ledger.known_repositories("210987654321", REGION) == []
    item = client.get_item(
        TableName=table, Key={"pk": {"S": directory_key(ACCOUNT, REGION)}, "sk": {"S": odd}}
    )["Item"]
    # Rewritten with every write: the write time + the ACTIVE retention, never before an entry.
    expected = int(WHEN.timestamp() + 3600 + ACTIVE_RETENTION.total_seconds())
    assert int(item["expires_at"]["N"]) == expected
    # The directory is not a ledger entry: reconcile's Scan and partition queries skip it.
    assert sorted(e.finding_id for _pk, e, _a, _r in ledger.scan_partitions()) == [
        f"f{i}" for i in range(5)
    ]
    assert ledger.remember_repositories(scopes) == 3


def test_repository_of_inverts_the_scopes() -> None:
    from securityhub.ledger import repository_of

    for name in ("app", "team/app", "a" * 120 + "/" + "b-c" * 45, "x.y_z/q-1"):
        img = image(DIGEST_A, name)
        assert repository_of(ids.image_scope(img)) == (ACCOUNT, REGION, name)
        assert repository_of(ids.repository_scope(ACCOUNT, REGION, name)) == (
            ACCOUNT,
            REGION,
            name,
        )
    assert repository_of("ecs/1/us-east-1/web/app") is None
