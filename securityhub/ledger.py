"""The ledger: what containerscan imported into Security Hub, kept in DynamoDB.

Security Hub's GetFindings is eventually consistent and throttled at 3 requests/s, so the
previous state of a scope is read from this ledger ("read your own writes"), never from
GetFindings on every run. An entry is written only *after* BatchImportFindings accepted the
finding: a crash between the two can cause at most a repeated import, never a lost one.
`containerscan reconcile` repairs the ledger from Security Hub when they drift.

Table schema (one table, `CONTAINERSCAN_TABLE`, shared with the check's scan cache):

    pk (S, hash key)   sk (S, range key)   expires_at (N, TTL, epoch seconds)

Ledger items (everything else in the table uses other `pk` prefixes):

    pk = "ledger#" + partition
         partition = the repository scope `ecr/<account>/<region>/<repository>@` for image
         findings, the container scope `ecs/<account>/<region>/<family>/<container>` for
         runtime findings (ids.py percent-encodes every component)
    sk = scope + "#" + finding Id       (scope: the image or container scope; '#' cannot
                                         occur inside a scope, so prefixes cannot overlap)
    attributes: finding_id, scope, kind, fingerprint, created_at, first_observed_at,
                updated_at (RFC 3339 strings), record_state (ACTIVE|ARCHIVED), account_id,
                region, asff (B: zlib-compressed JSON of the last imported finding, used to
                archive it without GetFindings), expires_at

So "all entries of an image" is a Query on pk with `begins_with(sk, <image scope>#)`, "all
entries of a repository" a Query on pk, "all entries of a runtime container" a Query on pk.

The repository directory: which repositories of an (account, region) hold ledger entries, so
that a sweep can archive the findings of a repository deleted entirely (it no longer appears
in DescribeRepositories, so nothing else would name it):

    pk = "ledger-repos#ecr/<account>/<region>"   (components encoded as in scopes; the pk
                                                 does not start with "ledger#", so Scans of
                                                 ledger entries never see these items)
    sk = the repository name, as ECR spells it
    attributes: account_id, region, repository, expires_at

`record()` writes one directory item per repository among the records it writes (in the same
BatchWriteItem calls: one item per repository and publish, never one per finding), so every
repository with an entry is listed. Rewriting it on each write keeps its `expires_at` (the
write time + the ACTIVE retention) beyond every entry of the repository: once the last entry
expired, the directory item follows. `containerscan reconcile` rewrites it from Security Hub.
`expires_at` follows Security Hub's retention: ACTIVE findings are deleted 90 days after the
last UpdatedAt, ARCHIVED ones after 30 days (Security Hub user guide, "securityhub-findings").

Concurrent runs (a nightly sweep, push runs, API runs: ECS starts them in parallel) write
entries with a conditional PutItem on `version` (the entry's UpdatedAt in epoch
milliseconds): a write lands only when the item is new or holds an older version, so the
later observation wins, as it does in Security Hub (an import with an older UpdatedAt is
ignored), and a stale one is dropped and counted. No lock: nothing is left behind by a task
that crashed. `published_at` is the writing run's clock at publish: a listing taken after it
proves an image gone (correlate.proven_gone).

Repository summaries (so that an unchanged night reads no entries): one item per
repository partition,

    pk = "ledger-summary#" + the repository scope   (not "ledger#...": Scans never see it)
    sk = "summary"
    attributes: stamp (S, random: new with every write), format, digest, count, oldest
                (correlate.Summary: the partition's ACTIVE entries hashed), expires_at

An item without `digest` is a tombstone: the partition changed in a way no summary was
computed for. Readers fetch the summaries of many repositories with BatchGetItem (100 keys a
call) and read a partition's entries only where the summary is missing, a tombstone, corrupt,
or does not match what the run observed (correlate.summary_holds): correctness never depends
on a summary, only the number of reads.

A summary can never vouch for a state the ledger does not hold, because every entry write
of a repository partition changes its summary item *in the same transaction*
(TransactWriteItems, all or nothing): either to the new summary, conditional on the stamp
read before the partition's entries were read (no other write can have come between), or to
a tombstone (a new stamp). A writer that loses a race, a transaction cancelled by a stale
entry, a crash: each leaves a tombstone or the old stamp, never a summary that is wrong, and
the next run simply reads the entries (and writes the summary afresh, conditionally, when it
changes nothing). The entries of a publish go into transactions of up to 99 entries plus the
summary item; when one is cancelled (another run recorded a later observation of one entry,
or wrote the summary meanwhile), its entries are written one by one, each in a transaction
with a tombstone, so the "later observation wins" rule holds per entry as before. The
stamp is random, never a counter, so a summary item deleted by TTL and written again cannot
repeat a stamp someone read before. Reconcile's deletions (BatchWriteItem) tombstone the
summaries of their partitions before and after.

Corrupt items (an attribute missing, of the wrong type, unparsable, or keys that do not match
the attributes) are data, not a crash: each is logged once with its pk/sk and what is wrong,
left out of what the reads return (the finding counts as unknown, so it is re-imported and the
item rewritten unconditionally), and listed in `Ledger.corrupt` for the run's status.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import unquote

from botocore.exceptions import BotoCoreError, ClientError

from securityhub.asff import parse_timestamp, timestamp
from securityhub.aws import error_code
from securityhub.correlate import ACTIVE, ARCHIVED, LedgerEntry, Summary
from securityhub.errors import AwsError
from securityhub.ids import component
from securityhub.logs import fields, get_logger
from securityhub.retry import Retrier, RetryPolicy

log = get_logger("securityhub.ledger")

LEDGER_PREFIX = "ledger#"
SUMMARY_PREFIX = "ledger-summary#"  # repository summaries (see the module doc)
SUMMARY_SORT_KEY = "summary"
SUMMARY_FORMAT = 1
STAMP_ATTRIBUTE = "stamp"
DIRECTORY_PREFIX = "ledger-repos#"  # the repository directory (see the module doc)
SCOPE_SEPARATOR = "#"
TTL_ATTRIBUTE = "expires_at"
# DynamoDB limits (Developer Guide, "Service, account, and table quotas"):
BATCH_WRITE_ITEMS = 25  # BatchWriteItem: at most 25 put/delete requests
BATCH_GET_KEYS = 100  # BatchGetItem: at most 100 keys
MAX_ITEM_BYTES = 400 * 1024  # an item, attribute names and values included
# TransactWriteItems (API reference): at most 100 actions, items of at most 4 MB together.
TRANSACT_ITEMS = 100
TRANSACT_BYTES = 4 * 1024 * 1024
# Keep the stored ASFF well below the item limit; above it the archive falls back to
# re-building from the last observation (see hub.py) or to reconcile.
MAX_STORED_ASFF_BYTES = 300 * 1024
UNPROCESSED_RETRIES = 8
# Conditional writes are single-item PutItem calls; a few in flight hide the round trips.
WRITE_THREADS = 8
VERSION_ATTRIBUTE = "version"
RECORD_STATES = frozenset({ACTIVE, ARCHIVED})
# Security Hub retention (user guide, "securityhub-findings"): 90 days without an update for
# ACTIVE findings, 30 days for ARCHIVED ones.
ACTIVE_RETENTION = timedelta(days=90)
ARCHIVED_RETENTION = timedelta(days=30)

_PROJECTED = (
    "finding_id",
    "scope",
    "kind",
    "fingerprint",
    "created_at",
    "first_observed_at",
    "updated_at",
    "record_state",
    "published_at",
    "pk",
    "sk",
)


def partition_of(scope: str) -> str:
    """The pk of a scope: image scopes share their repository's partition."""
    if scope.startswith("ecr/") and "@" in scope:
        return LEDGER_PREFIX + scope[: scope.index("@") + 1]
    return LEDGER_PREFIX + scope


def sort_key(scope: str, finding_id: str) -> str:
    return f"{scope}{SCOPE_SEPARATOR}{finding_id}"


def directory_key(account_id: str, region: str) -> str:
    """The pk of the repository directory of one (account, region)."""
    return f"{DIRECTORY_PREFIX}ecr/{component(account_id)}/{component(region)}"


def repository_of(scope: str) -> tuple[str, str, str] | None:
    """(account, region, repository) of an image or repository scope; None for runtime ones.

    Scope components are percent-encoded without '/', '@' or '#' (ids.py), so splitting on
    them and decoding gives the parts back.
    """
    if not scope.startswith("ecr/") or "@" not in scope:
        return None
    parts = scope[: scope.index("@")].split("/")
    if len(parts) != 4:
        return None
    _, account, region, repository = (unquote(p) for p in parts)
    return account, region, repository


@dataclass(frozen=True)
class LedgerRecord:
    """An entry to write after a successful import, with the finding as imported."""

    entry: LedgerEntry
    account_id: str
    region: str
    asff: dict[str, Any]


def compress(doc: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps(doc, separators=(",", ":")).encode("utf-8"), 6)


def decompress(blob: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(zlib.decompress(blob).decode("utf-8"))
    return value


class CorruptItem(ValueError):
    """A ledger item that cannot be read as an entry; `reason` says what is wrong."""


class Recorded(NamedTuple):
    written: int  # entries written
    stale: int  # entries not written: the item holds a later observation (another run's)


def _text(item: dict[str, Any], name: str) -> str:
    value = item.get(name)
    if not isinstance(value, dict) or not isinstance(value.get("S"), str):
        raise CorruptItem(f"{name} is missing or not a string")
    if not value["S"]:
        raise CorruptItem(f"{name} is empty")
    text: str = value["S"]
    return text


def _time(item: dict[str, Any], name: str) -> datetime:
    text = _text(item, name)
    try:
        return parse_timestamp(text)
    except ValueError:
        raise CorruptItem(f"{name} is not a timestamp: {text[:40]!r}") from None


def parse_entry(item: dict[str, Any]) -> LedgerEntry:
    """The entry of a ledger item; CorruptItem names the first problem found."""
    state = _text(item, "record_state")
    if state not in RECORD_STATES:
        raise CorruptItem(f"record_state is {state[:20]!r}, not ACTIVE or ARCHIVED")
    published = _time(item, "published_at") if "published_at" in item else None
    entry = LedgerEntry(
        finding_id=_text(item, "finding_id"),
        scope=_text(item, "scope"),
        kind=_text(item, "kind"),
        fingerprint=_text(item, "fingerprint"),
        created_at=_time(item, "created_at"),
        first_observed_at=_time(item, "first_observed_at"),
        updated_at=_time(item, "updated_at"),
        record_state=state,
        published_at=published,
    )
    if "pk" in item and item["pk"].get("S") != partition_of(entry.scope):
        raise CorruptItem("scope does not match the item's pk")
    if "sk" in item and item["sk"].get("S") != sort_key(entry.scope, entry.finding_id):
        raise CorruptItem("scope and finding_id do not match the item's sk")
    return entry


def _key_text(item: dict[str, Any]) -> tuple[str, str]:
    pk, sk = item.get("pk", {}), item.get("sk", {})
    return (
        str(pk.get("S", "?")) if isinstance(pk, dict) else "?",
        str(sk.get("S", "?")) if isinstance(sk, dict) else "?",
    )


def version_of(entry: LedgerEntry) -> int:
    """The item version: UpdatedAt in epoch milliseconds (later observation, higher version)."""
    return round(entry.updated_at.timestamp() * 1000)


def account_region_of(pk: str) -> tuple[str, str] | None:
    """(account, region) a ledger pk names (`ledger#ecr/<account>/<region>/...`), or None."""
    parts = pk.removeprefix(LEDGER_PREFIX).split("/")
    if not pk.startswith(LEDGER_PREFIX) or len(parts) < 3:
        return None
    return unquote(parts[1]), unquote(parts[2])


def summary_key(partition: str) -> dict[str, Any]:
    """The key of the summary item of a ledger partition (its pk, "ledger#...")."""
    scope = partition.removeprefix(LEDGER_PREFIX)
    return {"pk": {"S": SUMMARY_PREFIX + scope}, "sk": {"S": SUMMARY_SORT_KEY}}


def summarized(partition: str) -> bool:
    """Only repository partitions have summaries (runtime ones are never read whole)."""
    return partition.startswith(LEDGER_PREFIX + "ecr/") and partition.endswith("@")


@dataclass(frozen=True)
class SummaryRead:
    """A summary item as read: `stamp` for a conditional write after it (None: no item, or
    no readable stamp), `summary` None when missing, a tombstone or corrupt (`problem`)."""

    stamp: str | None = None
    summary: Summary | None = None
    problem: str | None = None


@dataclass(frozen=True)
class SummaryWrite:
    """The summary of a partition after a publish, and the read it was computed after."""

    summary: Summary
    read: SummaryRead


def parse_summary(item: dict[str, Any]) -> SummaryRead:
    """The read of a summary item; a corrupt one keeps its stamp when that is readable."""
    raw = item.get(STAMP_ATTRIBUTE)
    stamp = raw.get("S") if isinstance(raw, dict) and isinstance(raw.get("S"), str) else None
    try:
        if not stamp:
            raise CorruptItem("stamp is missing or not a string")
        if "digest" not in item:
            return SummaryRead(stamp)  # a tombstone
        fmt = item.get("format", {}).get("N") if isinstance(item.get("format"), dict) else None
        if fmt != str(SUMMARY_FORMAT):
            raise CorruptItem(f"format is {fmt!r}, not {SUMMARY_FORMAT}")
        digest = _text(item, "digest")
        if len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise CorruptItem("digest is not a sha256 in hex")
        count_attr = item.get("count")
        count_text = count_attr.get("N") if isinstance(count_attr, dict) else None
        if not isinstance(count_text, str) or not count_text.isdigit():
            raise CorruptItem("count is missing or not a whole number")
        count = int(count_text)
        oldest = _time(item, "oldest") if count else None
        return SummaryRead(stamp, Summary(digest, count, oldest))
    except CorruptItem as exc:
        return SummaryRead(stamp or None, None, str(exc))


def _expiry(entry: LedgerEntry) -> int:
    keep = ACTIVE_RETENTION if entry.record_state == ACTIVE else ARCHIVED_RETENTION
    return int((entry.updated_at + keep).timestamp())


def create_table(client: Any, table: str) -> bool:
    """Create the table (pk/sk, on demand, TTL on expires_at, SSE) unless it exists.

    Returns True when it was created. DynamoDB encrypts every table at rest; SSESpecification
    asks for the AWS-managed KMS key instead of the owned one so access shows in CloudTrail.
    """
    try:
        client.describe_table(TableName=table)
        created = False
    except client.exceptions.ResourceNotFoundException:
        client.create_table(
            TableName=table,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
            SSESpecification={"Enabled": True, "SSEType": "KMS"},
        )
        client.get_waiter("table_exists").wait(TableName=table)
        created = True
    ttl = client.describe_time_to_live(TableName=table).get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        client.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    return created


class _Cancelled(Exception):
    """A TransactWriteItems call cancelled; `codes` are the reasons, one per action."""

    def __init__(self, error: ClientError, codes: list[str]) -> None:
        super().__init__(str(error))
        self.error = error
        self.codes = codes or ["None"]


def _item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it, near enough: names plus values."""
    size = 0
    for name, value in item.items():
        (kind, data), = value.items()
        size += len(name) + (len(data) if kind == "B" else len(str(data).encode("utf-8")))
    return size


def _chunks(
    puts: list[dict[str, Any]], most: int, budget: int
) -> list[list[dict[str, Any]]]:
    """Consecutive groups of at most `most` puts whose items total at most `budget` bytes."""
    chunks: list[list[dict[str, Any]]] = []
    size = 0
    for params in puts:
        item_size = _item_bytes(params["Item"])
        if not chunks or len(chunks[-1]) >= most or size + item_size > budget:
            chunks.append([])
            size = 0
        chunks[-1].append(params)
        size += item_size
    return chunks


class Ledger:
    """Reads and writes ledger items with a DynamoDB client passed in."""

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.table = table
        self._clock = clock
        self.retrier = Retrier(
            RetryPolicy(UNPROCESSED_RETRIES + 1, base=0.05, cap=5.0), sleep=sleep
        )
        # (pk, sk) -> what is wrong, for every corrupt item this ledger read
        self.corrupt: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def _parse(self, item: dict[str, Any]) -> LedgerEntry | None:
        """The entry, or None for a corrupt item (logged once, remembered in `corrupt`)."""
        try:
            return parse_entry(item)
        except CorruptItem as exc:
            self.remember_corrupt(item, str(exc))
            return None

    def remember_corrupt(self, item: dict[str, Any], reason: str) -> None:
        """Log a corrupt item once (pk/sk, what is wrong) and count it in `corrupt`."""
        key = _key_text(item)
        with self._lock:
            if key in self.corrupt:
                return
            self.corrupt[key] = reason
        log.warning(
            "corrupt ledger item; treated as unknown (a finding is re-imported, a repository "
            "with a corrupt summary has its entries read)",
            extra=fields(pk=key[0], sk=key[1], problem=reason),
        )

    # ------------------------------------------------------------------------ reads
    def _query(self, pk: str, sk_prefix: str | None = None) -> Iterator[LedgerEntry]:
        names = {f"#{i}": name for i, name in enumerate(_PROJECTED)} | {"#pk": "pk"}
        values: dict[str, Any] = {":pk": {"S": pk}}
        condition = "#pk = :pk"
        if sk_prefix is not None:
            names["#sk"] = "sk"
            condition += " AND begins_with(#sk, :sk)"
            values[":sk"] = {"S": sk_prefix}
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ProjectionExpression": ", ".join(f"#{i}" for i in range(len(_PROJECTED))),
            "ConsistentRead": True,
        }
        paginator = self.client.get_paginator("query")
        try:
            for page in paginator.paginate(**params):
                for item in page.get("Items", []):
                    entry = self._parse(item)
                    if entry is not None:
                        yield entry
        except self.client.exceptions.ResourceNotFoundException as exc:
            raise AwsError(
                f"the ledger table {self.table!r} does not exist",
                "run `containerscan init` (or deploy the stack) with CONTAINERSCAN_TABLE set",
            ) from exc
        except (ClientError, BotoCoreError) as exc:
            raise self._failed("Query", exc) from exc

    def scope_entries(self, scope: str) -> list[LedgerEntry]:
        """Every entry of one image or runtime container scope (one Query)."""
        pk = partition_of(scope)
        if scope.startswith("ecr/"):
            return list(self._query(pk, scope + SCOPE_SEPARATOR))
        return list(self._query(pk))

    def partition_entries(self, repository_scope: str) -> list[LedgerEntry]:
        """Every entry of a repository (all its digests) or a runtime container."""
        return list(self._query(partition_of(repository_scope)))

    def known_repositories(self, account_id: str, region: str) -> list[str]:
        """The repositories of (account, region) with ledger entries: the directory, one Query."""
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk"},
            "ExpressionAttributeValues": {":pk": {"S": directory_key(account_id, region)}},
            "ProjectionExpression": "#sk",
            "ConsistentRead": True,
        }
        paginator = self.client.get_paginator("query")
        with self._calling("Query"):
            return [
                item["sk"]["S"]
                for page in paginator.paginate(**params)
                for item in page.get("Items", [])
            ]

    def _batch_get(
        self,
        keys: Sequence[dict[str, Any]],
        projection: str,
        names: dict[str, str] | None = None,
    ) -> Iterator[Any]:
        """The items of `keys` (BatchGetItem, 100 keys per call, strongly consistent); keys
        DynamoDB leaves unprocessed are asked again through the retry helper."""
        for start in range(0, len(keys), BATCH_GET_KEYS):
            request: dict[str, Any] = {
                self.table: {
                    "Keys": list(keys[start : start + BATCH_GET_KEYS]),
                    "ProjectionExpression": projection,
                    "ConsistentRead": True,
                }
                | ({"ExpressionAttributeNames": names} if names else {})
            }
            for _ in self.retrier.attempts():
                with self._calling("BatchGetItem"):
                    response = self.client.batch_get_item(RequestItems=request)
                yield from response.get("Responses", {}).get(self.table, [])
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
            else:
                raise AwsError(f"DynamoDB kept {len(request)} ledger reads unprocessed")

    def stored_findings(self, entries: Sequence[LedgerEntry]) -> dict[str, dict[str, Any]]:
        """The last imported ASFF of each entry (BatchGetItem, 100 keys per call)."""
        out: dict[str, dict[str, Any]] = {}
        keys = [
            {"pk": {"S": partition_of(e.scope)}, "sk": {"S": sort_key(e.scope, e.finding_id)}}
            for e in entries
        ]
        for item in self._batch_get(keys, "finding_id, asff"):
            self._stored(item, out)
        return out

    def summaries(
        self, partitions: Iterable[str], *, remember: bool = True
    ) -> dict[str, SummaryRead]:
        """The summary of each repository partition (pk "ledger#ecr/...@"): BatchGetItem,
        100 per call. A corrupt one reads as missing with its `problem`, and is logged and
        remembered in `corrupt` when `remember` (a read ahead leaves that to its user)."""
        wanted = sorted({p for p in partitions if summarized(p)})
        by_pk = {summary_key(p)["pk"]["S"]: p for p in wanted}
        out = {p: SummaryRead() for p in wanted}
        names = {"#pk": "pk", "#sk": "sk", "#t": STAMP_ATTRIBUTE, "#f": "format"}
        names |= {"#d": "digest", "#c": "count", "#o": "oldest"}  # some are reserved words
        for item in self._batch_get([summary_key(p) for p in wanted], ", ".join(names), names):
            partition = by_pk.get(str(item.get("pk", {}).get("S")))
            if partition is None:
                continue
            read = parse_summary(item)
            if read.problem and remember:
                self.remember_corrupt(item, f"summary: {read.problem}")
            out[partition] = read
        return out

    def _stored(self, item: dict[str, Any], out: dict[str, dict[str, Any]]) -> None:
        """One BatchGetItem answer into `out`; an unreadable stored copy is a corrupt item."""
        if "asff" not in item:
            return
        try:
            finding_id = _text(item, "finding_id")
            blob = item["asff"].get("B")
            if not isinstance(blob, bytes):
                raise CorruptItem("asff is not binary")
            doc = decompress(blob)
            if not isinstance(doc, dict) or doc.get("Id") != finding_id:
                raise CorruptItem("asff is not the finding of this item")
        except (CorruptItem, zlib.error, ValueError, AttributeError) as exc:
            self.remember_corrupt(item, f"asff unreadable: {exc}")
            return
        out[finding_id] = doc

    def scan_partitions(self) -> Iterator[tuple[str, LedgerEntry, str, str]]:
        """Every readable ledger entry with (pk, entry, account, region): reconcile only (a
        Scan). Corrupt items are left out and remembered in `corrupt`."""
        paginator = self.client.get_paginator("scan")
        params: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "begins_with(#pk, :p)",
            "ExpressionAttributeNames": {"#pk": "pk", "#a": "account_id", "#r": "region"}
            | {f"#{i}": n for i, n in enumerate(_PROJECTED)},
            "ExpressionAttributeValues": {":p": {"S": LEDGER_PREFIX}},
            "ProjectionExpression": "#a, #r, " + ", ".join(f"#{i}" for i in range(len(_PROJECTED))),
        }
        with self._calling("Scan"):
            for page in paginator.paginate(**params):
                for item in page.get("Items", []):
                    entry = self._parse(item)
                    if entry is None:
                        continue
                    account = item.get("account_id", {}).get("S", "")
                    region = item.get("region", {}).get("S", "")
                    yield item["pk"]["S"], entry, str(account), str(region)

    # ----------------------------------------------------------------------- writes
    def record(
        self,
        records: Iterable[LedgerRecord],
        *,
        published_at: datetime | None = None,
        force: bool = False,
        summaries: Mapping[str, SummaryWrite] | None = None,
    ) -> Recorded:
        """Write entries, each only if the item holds no later observation (see the module doc).

        Each repository partition's entries go into TransactWriteItems calls together with its
        summary item: the new summary of `summaries[partition]` (conditional on the stamp it
        was computed after) or a tombstone; a partition of `summaries` without entries to
        write gets its summary by a conditional PutItem. Runtime entries are single
        conditional PutItems. A few partitions are written at once. Items this ledger found
        corrupt, and every item when `force` (reconcile: Security Hub is the truth), are
        written unconditionally. The directory item of each repository among them goes into
        BatchWriteItem calls (one per repository).
        """
        records = list(records)
        summaries = dict(summaries or {})
        when = published_at or datetime.fromtimestamp(self._clock(), UTC)
        by_partition: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in records:
            item = self._item(r, when)
            by_partition[item["pk"]["S"]].append(item)
        jobs = [(pk, items, summaries.pop(pk, None)) for pk, items in by_partition.items()]
        stale = 0
        if jobs:
            with ThreadPoolExecutor(
                max_workers=min(WRITE_THREADS, len(jobs)), thread_name_prefix="ledger"
            ) as pool:
                stale = sum(
                    pool.map(lambda j: self._write_partition(j[0], j[1], j[2], force), jobs)
                )
        for partition, write in summaries.items():  # nothing to write but the summary
            if write.read.summary != write.summary:
                self._put_summary(partition, write)
        horizon = max((_expiry(r.entry) for r in records), default=0)
        self._write(self._directory_requests((r.entry.scope for r in records), horizon))
        if stale:
            log.info(
                "ledger entries not written: another run recorded a later observation",
                extra=fields(stale=stale),
            )
        return Recorded(len(records) - stale, stale)

    def _write_partition(
        self,
        partition: str,
        items: list[dict[str, Any]],
        write: SummaryWrite | None,
        force: bool,
    ) -> int:
        """Write one partition's entries (see `record`); how many were stale."""
        puts = [self._put_params(item, force) for item in items]
        if not summarized(partition):
            return sum(not self._put(params) for params in puts)
        chunks = _chunks(puts, TRANSACT_ITEMS - 1, TRANSACT_BYTES - MAX_ITEM_BYTES)
        stamp = write.read.stamp if write else None
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            summary, condition = self._summary_put(
                partition, write.summary if write and last else None, stamp, write is not None
            )
            try:
                self._transact([*chunk, {"Put": summary | condition}])
            except _Cancelled:  # a stale entry or another writer: one at a time from here
                rest = [params for later in chunks[i:] for params in later]
                return sum(not self._put_alone(partition, params) for params in rest)
            stamp = summary["Item"][STAMP_ATTRIBUTE]["S"]
        return 0

    def _put_params(self, item: dict[str, Any], force: bool) -> dict[str, Any]:
        """A PutItem (or transaction Put) of an entry, conditional on its version."""
        params: dict[str, Any] = {"TableName": self.table, "Item": item}
        key = (item["pk"]["S"], item["sk"]["S"])
        if not force and key not in self.corrupt:
            # A version of another type (a corrupt item) never blocks the write.
            params["ConditionExpression"] = (
                "attribute_not_exists(#v) OR NOT attribute_type(#v, :n) OR #v < :v"
            )
            params["ExpressionAttributeNames"] = {"#v": VERSION_ATTRIBUTE}
            params["ExpressionAttributeValues"] = {
                ":v": item[VERSION_ATTRIBUTE],
                ":n": {"S": "N"},
            }
        return params

    def _summary_put(
        self, partition: str, summary: Summary | None, stamp: str | None, conditional: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the Put of a summary item, its condition): `summary` None writes a tombstone; the
        condition (when `conditional`) is that the item still holds `stamp`."""
        item = summary_key(partition) | {STAMP_ATTRIBUTE: {"S": secrets.token_hex(16)}}
        expires = int(self._clock() + ACTIVE_RETENTION.total_seconds())
        if summary is not None:
            item |= {
                "format": {"N": str(SUMMARY_FORMAT)},
                "digest": {"S": summary.digest},
                "count": {"N": str(summary.count)},
            }
            if summary.oldest is not None:
                item["oldest"] = {"S": timestamp(summary.oldest)}
                # never outlive the oldest entry it vouches for
                expires = int((summary.oldest + ACTIVE_RETENTION).timestamp())
        item[TTL_ATTRIBUTE] = {"N": str(expires)}
        put = {"TableName": self.table, "Item": item}
        if not conditional:
            return put, {}
        names = {"#t": STAMP_ATTRIBUTE}
        if stamp is None:  # no item, or one without a readable stamp
            condition = {
                "ConditionExpression": "attribute_not_exists(#t) OR NOT attribute_type(#t, :s)",
                "ExpressionAttributeValues": {":s": {"S": "S"}},
            }
        else:
            condition = {
                "ConditionExpression": "#t = :t",
                "ExpressionAttributeValues": {":t": {"S": stamp}},
            }
        return put, condition | {"ExpressionAttributeNames": names}

    def _put_summary(self, partition: str, write: SummaryWrite) -> None:
        """Write a summary alone (a partition read and found unchanged), if no one wrote the
        partition since it was read; losing that race only costs the next run a Query."""
        put, condition = self._summary_put(partition, write.summary, write.read.stamp, True)
        if not self._put(put | condition):
            log.info("summary not written: the partition changed meanwhile",
                     extra=fields(partition=partition))  # fmt: skip

    def _put_alone(self, partition: str, params: dict[str, Any]) -> bool:
        """One entry and a tombstone of its partition's summary, in one transaction; False
        when the entry holds a later observation (stale). Conflicts with another writer's
        transaction are retried through the retry helper."""
        tombstone, _ = self._summary_put(partition, None, None, False)
        attempts = self.retrier.attempts()
        for _ in attempts:
            try:
                self._transact([params, {"Put": tombstone}])
                return True
            except _Cancelled as exc:
                if exc.codes[0] == "ConditionalCheckFailed":
                    return False
                if "TransactionConflict" not in exc.codes:
                    raise self._failed("TransactWriteItems", exc.error) from exc.error
        raise AwsError(
            f"DynamoDB TransactWriteItems on the ledger table {self.table!r} kept conflicting "
            f"with other writers after {attempts.made} attempts"
        )

    def _transact(self, actions: list[dict[str, Any]]) -> None:
        """TransactWriteItems; `_Cancelled` carries the cancellation reasons. Entries are
        given as PutItem parameters, the rest as transaction actions."""
        items = [a if "Put" in a else {"Put": a} for a in actions]
        try:
            self.client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if error_code(exc) == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons") or []
                raise _Cancelled(exc, [str(r.get("Code", "None")) for r in reasons]) from exc
            raise self._failed("TransactWriteItems", exc) from exc
        except BotoCoreError as exc:
            raise self._failed("TransactWriteItems", exc) from exc

    def _put(self, params: dict[str, Any]) -> bool:
        """One conditional PutItem; False when its condition failed."""
        # botocore retries throttling and 5xx (aws.py): no loop of ours on top of it.
        try:
            self.client.put_item(**params)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise self._failed("PutItem", exc) from exc
        except BotoCoreError as exc:
            raise self._failed("PutItem", exc) from exc
        return True

    def tombstone(self, partitions: Iterable[str]) -> None:
        """Invalidate the summaries of `partitions` (reconcile's deletions, around them)."""
        requests = [
            {"PutRequest": {"Item": self._summary_put(p, None, None, False)[0]["Item"]}}
            for p in sorted({p for p in partitions if summarized(p)})
        ]
        self._write(requests)

    def remember_repositories(self, scopes: Iterable[str]) -> int:
        """Write the directory items of the repositories of `scopes` (reconcile's rebuild)."""
        requests = self._directory_requests(scopes)
        self._write(requests)
        return len(requests)

    def _directory_requests(self, scopes: Iterable[str], horizon: int = 0) -> list[dict[str, Any]]:
        """One put per distinct repository (BatchWriteItem rejects a key given twice)."""
        expires = max(int(self._clock() + ACTIVE_RETENTION.total_seconds()), horizon)
        repositories = {parts for parts in map(repository_of, scopes) if parts is not None}
        return [
            {
                "PutRequest": {
                    "Item": {
                        "pk": {"S": directory_key(account, region)},
                        "sk": {"S": repository},
                        "account_id": {"S": account},
                        "region": {"S": region},
                        "repository": {"S": repository},
                        TTL_ATTRIBUTE: {"N": str(expires)},
                    }
                }
            }
            for account, region, repository in sorted(repositories)
        ]

    def forget_keys(self, keys: Iterable[tuple[str, str]]) -> int:
        """Delete items by (pk, sk): reconcile's removal of corrupt items the hub lacks."""
        keys = list(keys)
        requests = [
            {"DeleteRequest": {"Key": {"pk": {"S": pk}, "sk": {"S": sk}}}} for pk, sk in keys
        ]
        self._delete(requests, [pk for pk, _ in keys])
        return len(requests)

    def forget(self, entries: Iterable[LedgerEntry]) -> int:
        """Delete entries (reconcile: the finding no longer exists in Security Hub)."""
        requests = [
            {
                "DeleteRequest": {
                    "Key": {
                        "pk": {"S": partition_of(e.scope)},
                        "sk": {"S": sort_key(e.scope, e.finding_id)},
                    }
                }
            }
            for e in entries
        ]
        self._delete(requests, [r["DeleteRequest"]["Key"]["pk"]["S"] for r in requests])
        return len(requests)

    def _delete(self, requests: list[dict[str, Any]], partitions: list[str]) -> None:
        """Deletions are BatchWriteItem (no transaction): the summaries of their partitions
        are tombstoned before (no reader trusts them meanwhile) and after (a summary rebuilt
        from a read taken before the deletions landed is invalidated)."""
        if not requests:
            return
        self.tombstone(partitions)
        self._write(requests)
        self.tombstone(partitions)

    def _item(self, record: LedgerRecord, published_at: datetime) -> dict[str, Any]:
        entry = record.entry
        item: dict[str, Any] = {
            "pk": {"S": partition_of(entry.scope)},
            "sk": {"S": sort_key(entry.scope, entry.finding_id)},
            "finding_id": {"S": entry.finding_id},
            "scope": {"S": entry.scope},
            "kind": {"S": entry.kind},
            "fingerprint": {"S": entry.fingerprint},
            "created_at": {"S": timestamp(entry.created_at)},
            "first_observed_at": {"S": timestamp(entry.first_observed_at)},
            "updated_at": {"S": timestamp(entry.updated_at)},
            "record_state": {"S": entry.record_state},
            "account_id": {"S": record.account_id},
            "region": {"S": record.region},
            "published_at": {"S": timestamp(published_at)},
            VERSION_ATTRIBUTE: {"N": str(version_of(entry))},
            TTL_ATTRIBUTE: {"N": str(_expiry(entry))},
        }
        blob = compress(record.asff)
        if len(blob) <= MAX_STORED_ASFF_BYTES:
            item["asff"] = {"B": blob}
        else:
            log.warning(
                "finding too large to keep in the ledger; archiving it needs reconcile",
                extra=fields(finding_id=entry.finding_id, compressed_bytes=len(blob)),
            )
        return item

    def _write(self, requests: list[dict[str, Any]]) -> None:
        for start in range(0, len(requests), BATCH_WRITE_ITEMS):
            pending: dict[str, Any] = {self.table: requests[start : start + BATCH_WRITE_ITEMS]}
            for _ in self.retrier.attempts():
                with self._calling("BatchWriteItem"):
                    response = self.client.batch_write_item(RequestItems=pending)
                pending = response.get("UnprocessedItems") or {}
                if not pending:
                    break
            else:
                raise AwsError(
                    f"DynamoDB kept {len(pending.get(self.table, []))} ledger writes "
                    "unprocessed; the next run repeats those imports"
                )

    def _failed(self, operation: str, exc: BaseException) -> AwsError:
        """A DynamoDB call failed after botocore's retries: the unit of work's error."""
        return AwsError(
            f"DynamoDB {operation} on the ledger table {self.table!r} failed "
            f"({error_code(exc)}): {exc}"
        )

    @contextmanager
    def _calling(self, operation: str) -> Iterator[None]:
        try:
            yield
        except (ClientError, BotoCoreError) as exc:
            raise self._failed(operation, exc) from exc
