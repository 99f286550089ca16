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
"""

from __future__ import annotations

import json
import random
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import BotoCoreError, ClientError

from securityhub.asff import parse_timestamp, timestamp
from securityhub.aws import error_code
from securityhub.correlate import ACTIVE, LedgerEntry
from securityhub.errors import AwsError
from securityhub.ids import component
from securityhub.logs import fields, get_logger

log = get_logger("securityhub.ledger")

LEDGER_PREFIX = "ledger#"
DIRECTORY_PREFIX = "ledger-repos#"  # the repository directory (see the module doc)
SCOPE_SEPARATOR = "#"
TTL_ATTRIBUTE = "expires_at"
# DynamoDB limits (Developer Guide, "Service, account, and table quotas"):
BATCH_WRITE_ITEMS = 25  # BatchWriteItem: at most 25 put/delete requests
BATCH_GET_KEYS = 100  # BatchGetItem: at most 100 keys
MAX_ITEM_BYTES = 400 * 1024  # an item, attribute names and values included
# Keep the stored ASFF well below the item limit; above it the archive falls back to
# re-building from the last observation (see hub.py) or to reconcile.
MAX_STORED_ASFF_BYTES = 300 * 1024
UNPROCESSED_RETRIES = 8
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


def _entry(item: dict[str, Any]) -> LedgerEntry:
    return LedgerEntry(
        finding_id=item["finding_id"]["S"],
        scope=item["scope"]["S"],
        kind=item["kind"]["S"],
        fingerprint=item["fingerprint"]["S"],
        created_at=parse_timestamp(item["created_at"]["S"]),
        first_observed_at=parse_timestamp(item["first_observed_at"]["S"]),
        updated_at=parse_timestamp(item["updated_at"]["S"]),
        record_state=item["record_state"]["S"],
    )


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
        self._sleep = sleep
        self._clock = clock

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
                    yield _entry(item)
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

    def stored_findings(self, entries: Sequence[LedgerEntry]) -> dict[str, dict[str, Any]]:
        """The last imported ASFF of each entry (BatchGetItem, 100 keys per call)."""
        out: dict[str, dict[str, Any]] = {}
        for start in range(0, len(entries), BATCH_GET_KEYS):
            chunk = entries[start : start + BATCH_GET_KEYS]
            keys = [
                {"pk": {"S": partition_of(e.scope)}, "sk": {"S": sort_key(e.scope, e.finding_id)}}
                for e in chunk
            ]
            request: dict[str, Any] = {
                self.table: {
                    "Keys": keys,
                    "ProjectionExpression": "finding_id, asff",
                    "ConsistentRead": True,
                }
            }
            for attempt in range(UNPROCESSED_RETRIES + 1):
                with self._calling("BatchGetItem"):
                    response = self.client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table, []):
                    if "asff" in item:
                        out[item["finding_id"]["S"]] = decompress(item["asff"]["B"])
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                self._backoff(attempt)
            else:
                raise AwsError(f"DynamoDB kept {len(request)} ledger reads unprocessed")
        return out

    def scan_partitions(self) -> Iterator[tuple[str, LedgerEntry, str, str]]:
        """Every ledger entry with (pk, entry, account, region): reconcile only (a Scan)."""
        paginator = self.client.get_paginator("scan")
        params: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "begins_with(#pk, :p)",
            "ExpressionAttributeNames": {"#pk": "pk", "#a": "account_id", "#r": "region"}
            | {f"#{i}": n for i, n in enumerate(_PROJECTED)},
            "ExpressionAttributeValues": {":p": {"S": LEDGER_PREFIX}},
            "ProjectionExpression": "#pk, #a, #r, "
            + ", ".join(f"#{i}" for i in range(len(_PROJECTED))),
        }
        with self._calling("Scan"):
            for page in paginator.paginate(**params):
                for item in page.get("Items", []):
                    yield (
                        item["pk"]["S"],
                        _entry(item),
                        item.get("account_id", {}).get("S", ""),
                        item.get("region", {}).get("S", ""),
                    )

    # ----------------------------------------------------------------------- writes
    def record(self, records: Iterable[LedgerRecord]) -> int:
        """Write entries (BatchWriteItem, 25 per call, unprocessed items retried).

        The directory item of each repository among them goes into the same calls (one per
        repository). Returns the number of entries written.
        """
        records = list(records)
        requests = [{"PutRequest": {"Item": self._item(r)}} for r in records]
        horizon = max((_expiry(r.entry) for r in records), default=0)
        requests += self._directory_requests((r.entry.scope for r in records), horizon)
        self._write(requests)
        return len(records)

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
        self._write(requests)
        return len(requests)

    def _item(self, record: LedgerRecord) -> dict[str, Any]:
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
            for attempt in range(UNPROCESSED_RETRIES + 1):
                with self._calling("BatchWriteItem"):
                    response = self.client.batch_write_item(RequestItems=pending)
                pending = response.get("UnprocessedItems") or {}
                if not pending:
                    break
                self._backoff(attempt)
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

    def _backoff(self, attempt: int) -> None:
        # Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter").
        self._sleep(random.uniform(0, min(5.0, 0.05 * 2**attempt)))  # noqa: S311
