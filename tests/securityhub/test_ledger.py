"""The DynamoDB ledger: schema, scope queries, stored findings, TTL."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from securityhub import ids
from securityhub.aws import SessionFactory
from securityhub.correlate import ARCHIVED, LedgerEntry
from securityhub.ledger import (
    CorruptItem,
    Ledger,
    LedgerRecord,
    create_table,
    parse_entry,
    partition_of,
)
from tests.securityhub.conftest import ACCOUNT, DIGEST_A, DIGEST_B, REGION, TABLE, image

WHEN = datetime(2026, 11, 1, 12, 0, 0, 123000, tzinfo=UTC)


def record(
    fid: str, scope: str, kind: str = "vulnerability", state: str = "ACTIVE"
) -> LedgerRecord:
    entry = LedgerEntry(fid, scope, kind, "fp-" + fid, WHEN, WHEN, WHEN, state)
    return LedgerRecord(entry, ACCOUNT, REGION, {"Id": fid, "Title": "t" * 500})


_SCOPE = "ecr/1/r/app@sha256%3Aa"
_GOOD_ITEM: dict[str, dict[str, object]] = {
    "pk": {"S": partition_of(_SCOPE)},
    "sk": {"S": f"{_SCOPE}#f1"},
    "finding_id": {"S": "f1"},
    "scope": {"S": _SCOPE},
    "kind": {"S": "vulnerability"},
    "fingerprint": {"S": "fp"},
    "created_at": {"S": "2026-11-01T12:00:00.000Z"},
    "first_observed_at": {"S": "2026-11-01T12:00:00.000Z"},
    "updated_at": {"S": "2026-11-01T12:00:00.000Z"},
    "published_at": {"S": "2026-11-01T12:00:00.000Z"},
    "record_state": {"S": "ACTIVE"},
}


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


def _at(entry_record: LedgerRecord, when: datetime) -> LedgerRecord:
    entry = dataclasses.replace(entry_record.entry, updated_at=when)
    return dataclasses.replace(entry_record, entry=entry)


def test_a_later_observation_wins_and_a_stale_write_is_dropped_and_counted(
    sessions: SessionFactory, table: str
) -> None:
    """Two runs write one entry in either order: the later UpdatedAt stays (moto evaluates
    DynamoDB's ConditionExpression, as DynamoDB does)."""
    ledger = Ledger(sessions.client("dynamodb"), table)
    scope = ids.image_scope(image(DIGEST_A))
    base = record("f1", scope)
    later = _at(base, WHEN + timedelta(seconds=5))
    assert ledger.record([later]) == (1, 0)
    assert ledger.record([base]) == (0, 1)  # the older observation arrives last: dropped
    (stored,) = ledger.scope_entries(scope)
    assert stored.updated_at == later.entry.updated_at
    assert ledger.record([_at(base, WHEN + timedelta(seconds=6))]) == (1, 0)
    assert ledger.record([base], force=True) == (1, 0)  # reconcile: the hub is the truth
    assert ledger.scope_entries(scope)[0].updated_at == WHEN


def test_corrupt_items_are_skipped_counted_and_then_overwritten(
    sessions: SessionFactory, table: str
) -> None:
    client = sessions.client("dynamodb")
    ledger = Ledger(client, table)
    scope = ids.image_scope(image(DIGEST_A))
    ledger.record([record("f1", scope), record("f2", scope)])
    key = {"pk": {"S": partition_of(scope)}, "sk": {"S": f"{scope}#f1"}}
    client.update_item(
        TableName=table,
        Key=key,
        UpdateExpression="SET updated_at = :g, version = :big",
        ExpressionAttributeValues={":g": {"S": "garbage"}, ":big": {"N": str(10**15)}},
    )
    fresh = Ledger(client, table)
    assert [e.finding_id for e in fresh.scope_entries(scope)] == ["f2"]
    assert fresh.scope_entries(scope) and len(fresh.corrupt) == 1  # remembered once
    ((pk, sk), reason) = next(iter(fresh.corrupt.items()))
    assert (pk, sk) == (key["pk"]["S"], key["sk"]["S"]) and "updated_at" in reason
    # its rewrite is unconditional, whatever version the corrupt item claims
    assert fresh.record([record("f1", scope)]) == (1, 0)
    assert sorted(e.finding_id for e in Ledger(client, table).scope_entries(scope)) == ["f1", "f2"]


ATTRIBUTE = st.one_of(
    st.fixed_dictionaries({"S": st.text(max_size=30)}),
    st.fixed_dictionaries({"N": st.from_regex(r"-?\d{1,20}", fullmatch=True)}),
    st.fixed_dictionaries({"B": st.binary(max_size=20)}),
    st.fixed_dictionaries({"BOOL": st.booleans()}),
    st.just({"NULL": True}),
    st.just({}),
)


@settings(max_examples=300, deadline=None)
@given(
    drop=st.sets(st.sampled_from(list(_GOOD_ITEM))),
    replace=st.dictionaries(st.sampled_from(list(_GOOD_ITEM)), ATTRIBUTE, max_size=4),
)
def test_any_item_shape_parses_or_is_reported_corrupt(
    drop: set[str], replace: dict[str, dict[str, object]]
) -> None:
    item = {k: v for k, v in _GOOD_ITEM.items() if k not in drop} | replace
    try:
        entry = parse_entry(item)
    except CorruptItem as exc:
        assert str(exc)
    else:
        assert entry.finding_id and entry.scope and entry.record_state in ("ACTIVE", "ARCHIVED")
