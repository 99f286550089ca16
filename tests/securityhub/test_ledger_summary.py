"""Repository summaries: an unchanged repository is judged without reading its entries, and no
summary ever vouches for a state the ledger does not hold (moto, with the emulator's
all-or-nothing TransactWriteItems)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securityhub import ids
from securityhub.aws import SessionFactory
from securityhub.correlate import (
    ARCHIVED,
    LedgerEntry,
    Observed,
    Summary,
    summarize,
    summary_holds,
)
from securityhub.hub import RepositoryScope, SecurityHubPublisher
from securityhub.ledger import (
    Ledger,
    LedgerRecord,
    SummaryRead,
    SummaryWrite,
    parse_summary,
    partition_of,
    summary_key,
)
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

WHEN = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SCOPE_A = ids.image_scope(image(DIGEST_A))
SCOPE_B = ids.image_scope(image(DIGEST_B))
PARTITION = partition_of(SCOPE_A)


def entry(fid: str, scope: str = SCOPE_A, fp: str = "fp", **changes: Any) -> LedgerEntry:
    return dataclasses.replace(
        LedgerEntry(fid, scope, "vulnerability", fp, WHEN, WHEN, WHEN), **changes
    )


def seen(e: LedgerEntry) -> Observed:
    return Observed(e.finding_id, e.scope, e.kind, e.fingerprint)


def record(e: LedgerEntry) -> LedgerRecord:
    return LedgerRecord(e, ACCOUNT, REGION, {"Id": e.finding_id})


# ---------------------------------------------------------------------------- pure logic


def test_summary_is_the_documented_digest_of_the_active_entries() -> None:
    entries = [entry("f2", SCOPE_B), entry("f1"), entry("old", record_state=ARCHIVED)]
    summary = summarize(entries)
    lines = sorted(
        f"{e.scope}\x1f{e.kind}\x1f{e.finding_id}\x1f{e.fingerprint}" for e in entries[:2]
    )
    assert summary == Summary(hashlib.sha256("\n".join(lines).encode()).hexdigest(), 2, WHEN)
    assert summarize([]) == Summary(hashlib.sha256(b"").hexdigest(), 0, None)


def test_summary_holds_only_when_plan_would_change_nothing() -> None:
    entries = [entry("f1"), entry("f2"), entry("s1", kind="secret")]
    summary = summarize(entries)
    now = WHEN + timedelta(days=1)
    same = [seen(e) for e in entries]
    assert summary_holds(summary, same, now)
    assert summary_holds(summary, list(reversed(same)), now)  # order does not matter
    assert not summary_holds(summary, same[:2], now)  # s1 not observed: archive (or failed)
    assert not summary_holds(summary, [*same, seen(entry("f3"))], now)  # a new finding
    assert not summary_holds(summary, [seen(entry("f1", fp="other")), *same[1:]], now)
    moved = [seen(entry("f1", SCOPE_B)), *same[1:]]  # the same Id in another image
    assert not summary_holds(summary, moved, now)
    assert not summary_holds(summary, same, WHEN + timedelta(days=7))  # a refresh is due
    # an ARCHIVED entry observed again must be reactivated: it is not in the summary
    archived = summarize([entry("f1"), entry("f2", record_state=ARCHIVED)])
    assert not summary_holds(archived, [seen(entry("f1")), seen(entry("f2"))], now)


SUMMARY_ITEM: dict[str, dict[str, Any]] = {
    **summary_key(PARTITION),
    "stamp": {"S": "ab" * 16},
    "format": {"N": "1"},
    "digest": {"S": "0" * 64},
    "count": {"N": "3"},
    "oldest": {"S": "2026-11-01T12:00:00.000Z"},
}
ATTRIBUTE = st.one_of(
    st.fixed_dictionaries({"S": st.text(max_size=70)}),
    st.fixed_dictionaries({"N": st.from_regex(r"-?\d{1,20}(\.\d)?", fullmatch=True)}),
    st.fixed_dictionaries({"B": st.binary(max_size=20)}),
    st.just({"NULL": True}),
    st.just({}),
)


@settings(max_examples=300, deadline=None)
@given(
    drop=st.sets(st.sampled_from(list(SUMMARY_ITEM))),
    replace=st.dictionaries(st.sampled_from(list(SUMMARY_ITEM)), ATTRIBUTE, max_size=3),
)
def test_any_summary_shape_reads_as_a_summary_a_tombstone_or_a_named_problem(
    drop: set[str], replace: dict[str, dict[str, Any]]
) -> None:
    item = {k: v for k, v in SUMMARY_ITEM.items() if k not in drop} | replace
    read = parse_summary(item)
    if read.summary is not None:
        assert read.stamp and read.problem is None
        assert len(read.summary.digest) == 64 and read.summary.count >= 0
    else:
        assert read.problem or "digest" not in item  # a tombstone, or what is wrong


# ------------------------------------------------------------------------ the ledger


def _ledger(sessions: SessionFactory, table: str) -> Ledger:
    return Ledger(sessions.client("dynamodb"), table)


def test_entries_and_their_summary_land_in_one_transaction_per_99_entries(
    sessions: SessionFactory, table: str
) -> None:
    ledger = _ledger(sessions, table)
    counted: Counter[str] = Counter()
    ledger.client.meta.events.register(
        "before-call.dynamodb", lambda model, **_: counted.update([model.name])
    )
    entries = [entry(f"f{i:03d}", SCOPE_A if i % 2 else SCOPE_B) for i in range(150)]
    write = SummaryWrite(summarize(entries), ledger.summaries([PARTITION])[PARTITION])
    assert write.read == SummaryRead()  # nothing yet
    assert ledger.record(map(record, entries), summaries={PARTITION: write}) == (150, 0)
    assert counted["TransactWriteItems"] == 2 and counted["PutItem"] == 0
    read = _ledger(sessions, table).summaries([PARTITION])[PARTITION]
    assert read.summary == summarize(_ledger(sessions, table).partition_entries(SCOPE_A))
    assert read.stamp and read.problem is None


def test_a_stale_entry_keeps_the_later_observation_and_leaves_a_tombstone(
    sessions: SessionFactory, table: str
) -> None:
    ledger = _ledger(sessions, table)
    later = entry("f1", updated_at=WHEN + timedelta(seconds=5), fp="later")
    ledger.record([record(later)])  # another run's later observation
    ours = [entry("f1"), entry("f2")]
    read = ledger.summaries([PARTITION])[PARTITION]
    write = SummaryWrite(summarize(ours), read)
    assert ledger.record(map(record, ours), summaries={PARTITION: write}) == (1, 1)
    stored = {e.finding_id: e for e in ledger.partition_entries(SCOPE_A)}
    assert stored["f1"].fingerprint == "later" and "f2" in stored
    after = ledger.summaries([PARTITION])[PARTITION]
    assert after.summary is None and after.stamp and after.problem is None  # a tombstone


def test_a_write_between_read_and_publish_makes_the_summary_a_tombstone(
    sessions: SessionFactory, table: str
) -> None:
    ledger = _ledger(sessions, table)
    ledger.record([record(entry("f1"))])
    read = ledger.summaries([PARTITION])[PARTITION]  # our run reads the summary ...
    # ... another run writes the partition (a push run: no summary of its own) ...
    other = entry("f9", SCOPE_B, updated_at=WHEN + timedelta(seconds=1))
    _ledger(sessions, table).record([record(other)])
    # ... and our summary, computed without f9, must not be written
    mine = entry("f1", updated_at=WHEN + timedelta(seconds=2), fp="new")
    write = SummaryWrite(summarize([mine]), read)
    assert ledger.record([record(mine)], summaries={PARTITION: write}) == (1, 0)
    assert ledger.summaries([PARTITION])[PARTITION].summary is None
    # nothing to write but the summary: a conditional PutItem, refused as well
    assert ledger.record([], summaries={PARTITION: write}) == (0, 0)
    assert ledger.summaries([PARTITION])[PARTITION].summary is None
    # after a fresh read it lands
    fresh = SummaryWrite(
        summarize(ledger.partition_entries(SCOPE_A)), ledger.summaries([PARTITION])[PARTITION]
    )
    ledger.record([], summaries={PARTITION: fresh})
    assert ledger.summaries([PARTITION])[PARTITION].summary == fresh.summary


def test_deletions_tombstone_the_summary(sessions: SessionFactory, table: str) -> None:
    ledger = _ledger(sessions, table)
    entries = [entry("f1"), entry("f2")]
    write = SummaryWrite(summarize(entries), SummaryRead())
    ledger.record(map(record, entries), summaries={PARTITION: write})
    assert ledger.summaries([PARTITION])[PARTITION].summary == write.summary
    assert ledger.forget(entries[:1]) == 1
    assert ledger.summaries([PARTITION])[PARTITION].summary is None


def test_a_corrupt_summary_is_counted_and_overwritten(sessions: SessionFactory, table: str) -> None:
    client = sessions.client("dynamodb")
    client.put_item(TableName=table, Item=summary_key(PARTITION) | {"digest": {"S": "zz"}})
    ledger = _ledger(sessions, table)
    read = ledger.summaries([PARTITION])[PARTITION]
    assert read.summary is None and read.stamp is None and "stamp" in (read.problem or "")
    assert list(ledger.corrupt) == [(summary_key(PARTITION)["pk"]["S"], "summary")]
    write = SummaryWrite(summarize([]), read)
    ledger.record([], summaries={PARTITION: write})
    assert _ledger(sessions, table).summaries([PARTITION])[PARTITION].summary == write.summary


# ---------------------------------------------------------------------- the publisher


@pytest.fixture
def publisher(sessions: SessionFactory, table: str, clock: Clock) -> SecurityHubPublisher:
    return SecurityHubPublisher(sessions, table, clock=clock, gateway_options=FAST_GATEWAY)


def _counting(publisher: SecurityHubPublisher) -> Counter[str]:
    """Count the DynamoDB calls of the publisher's ledgers (they share one client)."""
    counted: Counter[str] = Counter()
    publisher.ledger().client.meta.events.register(
        "before-call.dynamodb", lambda model, **_: counted.update([model.name])
    )
    return counted


def _repo(*digests: str, listed_at: datetime | None = None) -> RepositoryScope:
    return RepositoryScope(ACCOUNT, REGION, "team/app", frozenset(digests), listed_at)


def test_an_unchanged_repository_costs_one_summary_read_and_nothing_else(
    publisher: SecurityHubPublisher, clock: Clock
) -> None:
    a, b = image(DIGEST_A), image(DIGEST_B)
    run = [observe(a, vuln(a), secret(a)), observe(b, vuln(b))]
    counted = _counting(publisher)
    first = publisher.publish(REGION, run, repositories=[_repo(DIGEST_A, DIGEST_B)])
    assert first.created == 3
    assert counted["TransactWriteItems"] == 1 and counted["PutItem"] == 0  # entries + summary
    counted.clear()
    clock.advance(hours=6)
    again = publisher.publish(REGION, run, repositories=[_repo(DIGEST_A, DIGEST_B)])
    assert (again.unchanged, again.imported) == (3, 0)
    assert dict(counted) == {"BatchGetItem": 1}  # the summary; no Query, no write
    # prefetched for a whole sweep: the publish itself reads nothing
    counted.clear()
    publisher.prefetch([_repo(DIGEST_A, DIGEST_B)])
    assert publisher.publish(REGION, run, repositories=[_repo(DIGEST_A, DIGEST_B)]).unchanged == 3
    assert dict(counted) == {"BatchGetItem": 1}


def test_a_change_a_deletion_and_a_refresh_fall_back_to_the_entries(
    publisher: SecurityHubPublisher, clock: Clock
) -> None:
    a, b = image(DIGEST_A), image(DIGEST_B)
    publisher.publish(REGION, [observe(a, vuln(a)), observe(b, vuln(b))],
                      repositories=[_repo(DIGEST_A, DIGEST_B)])  # fmt: skip
    counted = _counting(publisher)
    clock.advance(hours=1)
    changed = vuln(a, "CVE-2024-0002")
    summary = publisher.publish(REGION, [observe(a, changed), observe(b, vuln(b))],
                                repositories=[_repo(DIGEST_A, DIGEST_B)])  # fmt: skip
    assert (summary.created, summary.archived, summary.unchanged) == (1, 1, 1)
    assert counted["Query"] == 1
    counted.clear()
    clock.advance(hours=1)  # b deleted; a listing taken after b's publish proves it
    gone = publisher.publish(REGION, [observe(a, changed)],
                             repositories=[_repo(DIGEST_A, listed_at=clock.now)])  # fmt: skip
    assert (gone.archived, gone.unchanged, counted["Query"]) == (1, 1, 1)
    counted.clear()
    clock.advance(hours=1)
    quiet = publisher.publish(REGION, [observe(a, changed)], repositories=[_repo(DIGEST_A)])
    assert (quiet.unchanged, quiet.imported, counted["Query"]) == (1, 0, 0)
    clock.advance(days=7)
    due = publisher.publish(REGION, [observe(a, changed)], repositories=[_repo(DIGEST_A)])
    assert (due.refreshed, counted["Query"]) == (1, 1)


def test_a_failed_scan_falls_back_and_keeps_the_image_untouched(
    publisher: SecurityHubPublisher, clock: Clock
) -> None:
    a, b = image(DIGEST_A), image(DIGEST_B)
    repo = _repo(DIGEST_A, DIGEST_B)
    publisher.publish(REGION, [observe(a, vuln(a)), observe(b, vuln(b))], repositories=[repo])
    clock.advance(hours=1)
    counted = _counting(publisher)
    summary = publisher.publish(REGION, [observe(a, vuln(a))], repositories=[repo])  # b failed
    assert (summary.unchanged, summary.archived, counted["Query"]) == (1, 0, 1)
    # the partition was read whole and nothing changed: its summary is still good
    counted.clear()
    both = [observe(a, vuln(a)), observe(b, vuln(b))]
    assert publisher.publish(REGION, both, repositories=[repo]).unchanged == 2
    assert counted["Query"] == 0


def test_concurrent_writers_never_leave_a_summary_that_contradicts_the_entries(
    sessions: SessionFactory, table: str
) -> None:
    """Runs that each read the summary, read the entries, change a few and write them with
    their summary, in threads released together, many rounds: after each round the summary
    is a tombstone or exactly the summary of the entries (what a reader may trust)."""
    import random
    import threading

    def run(seed: int, round_no: int, barrier: threading.Barrier) -> None:
        rng = random.Random(seed)
        ledger = _ledger(sessions, table)
        barrier.wait()
        read = ledger.summaries([PARTITION])[PARTITION]
        state = {e.finding_id: e for e in ledger.partition_entries(SCOPE_A)}
        when = WHEN + timedelta(seconds=round_no, milliseconds=seed)
        changed = {
            e.finding_id: e
            for e in (
                # an Id names its image (as real finding Ids do): f0, f2, f4 in A, the rest in B
                entry(f"f{n}", [SCOPE_A, SCOPE_B][n % 2], fp=f"r{round_no}", updated_at=when,
                      record_state=rng.choice(["ACTIVE", "ACTIVE", ARCHIVED]))
                for n in (rng.randrange(6) for _ in range(rng.randrange(0, 3)))
            )
        }  # fmt: skip
        state |= changed
        write = SummaryWrite(summarize(state.values()), read)
        ledger.record(map(record, changed.values()), summaries={PARTITION: write})

    trusted = 0
    for round_no in range(12):
        barrier = threading.Barrier(3)
        threads = [
            threading.Thread(target=run, args=(round_no * 3 + i, round_no, barrier))
            for i in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        reader = _ledger(sessions, table)
        summary = reader.summaries([PARTITION])[PARTITION].summary
        if summary is not None:
            trusted += 1
            assert summary == summarize(reader.partition_entries(SCOPE_A)), round_no
        # the next quiet run rebuilds a tombstone: then there is always one to trust
        run(1000 + round_no, round_no, threading.Barrier(1))
        rebuilt = reader.summaries([PARTITION])[PARTITION].summary
        assert rebuilt == summarize(reader.partition_entries(SCOPE_A)), round_no
    assert trusted  # some concurrent rounds end with a summary to trust


def test_a_transaction_conflict_is_retried_and_a_stale_entry_is_not(
    sessions: SessionFactory, table: str
) -> None:
    """DynamoDB cancels a transaction that meets another one on the same item
    (TransactionConflict): the one-at-a-time writes retry it through the retry helper. The
    conflicts are answered in place of DynamoDB, as botocore parses its answer (moto never
    conflicts), and nothing is written by them."""
    from types import SimpleNamespace

    calls = {"n": 0}

    def conflict(**_: Any) -> Any:
        calls["n"] += 1
        if calls["n"] not in (3, 4):  # the 3rd and 4th TransactWriteItems meet a conflict
            return None
        parsed = {
            "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
            "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}],
            "ResponseMetadata": {"HTTPStatusCode": 400, "HTTPHeaders": {}},
        }
        return SimpleNamespace(status_code=400, headers={}), parsed

    slept: list[float] = []
    ledger = Ledger(sessions.client("dynamodb"), table, sleep=slept.append)
    ledger.record([record(entry("f1", updated_at=WHEN + timedelta(seconds=9)))])
    ledger.client.meta.events.register(
        "before-call.dynamodb.TransactWriteItems", conflict, unique_id="conflict"
    )
    try:
        # 1: the batch, cancelled by the stale f1; 2: f1 alone, stale; 3, 4: f2 alone meets
        # two conflicts; 5: f2 lands
        assert ledger.record([record(entry("f1")), record(entry("f2"))]) == (1, 1)
    finally:
        ledger.client.meta.events.unregister("before-call.dynamodb.TransactWriteItems",
                                             unique_id="conflict")  # fmt: skip
    assert calls["n"] == 5 and len(slept) == 2  # backed off before each retry
    stored = {e.finding_id: e.updated_at for e in ledger.partition_entries(SCOPE_A)}
    assert stored == {"f1": WHEN + timedelta(seconds=9), "f2": WHEN}


def test_unprocessed_summary_reads_are_asked_again(sessions: SessionFactory, table: str) -> None:
    """BatchGetItem may answer only part of its keys (UnprocessedKeys, e.g. under throttling):
    the rest is asked again through the retry helper, after a pause."""
    slept: list[float] = []
    ledger = Ledger(sessions.client("dynamodb"), table, sleep=slept.append)
    partitions = [
        partition_of(ids.image_scope(image(DIGEST_A, f"team/app{i}"))) for i in range(130)
    ]
    for partition in partitions:
        ledger.record([], summaries={partition: SummaryWrite(summarize([]), SummaryRead())})
    calls = {"n": 0}

    def answer_part(parsed: dict[str, Any], **_: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:  # the first call of the first 100 keys: 60 of them unprocessed
            answered = parsed["Responses"][table]
            parsed["Responses"][table] = answered[:40]
            keys = [{"pk": item["pk"], "sk": item["sk"]} for item in answered[40:]]
            parsed["UnprocessedKeys"] = {table: {"Keys": keys, "ConsistentRead": True}}

    ledger.client.meta.events.register(
        "after-call.dynamodb.BatchGetItem", answer_part, unique_id="part"
    )
    try:
        reads = ledger.summaries(partitions)
    finally:
        ledger.client.meta.events.unregister("after-call.dynamodb.BatchGetItem", unique_id="part")
    assert calls["n"] == 3 and len(slept) == 1  # 100 keys, the 60 again, then the last 30
    assert all(read.summary == summarize([]) for read in reads.values()) and len(reads) == 130
