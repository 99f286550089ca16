"""The scan cache: normalized results by image digest, in DynamoDB, with a TTL.

It shares the table with the Security Hub ledger (`CONTAINERSCAN_TABLE`): generic string
keys `pk`/`sk`, TTL attribute `expires_at` (epoch seconds). Cache items are

    pk = "cache#<digest>"                      (sha256:<hex>)
    sk = "<scanner>#<scanner version>#<scan types, sorted, comma-joined>"
    expires_at   N  now + CACHE_TTL_DAYS
    stored_at    S  ISO 8601
    findings     N  how many
    payload      B  gzip(JSON {scanner, scan_types, policy_result, notes, findings})
    s3_key       S  instead of payload, when the compressed result is too big for an item

A digest is content: the same digest scanned by the same scanner version for the same scan
types gives the same findings, whichever repository or account holds it, so the key has no
account or repository. A new scanner version misses the cache (a new advisory feed is the
point of upgrading). DynamoDB deletes expired items lazily (typically within a few days), so
`expires_at` is checked on read too.

A cache item that cannot be read (an attribute missing or of the wrong type, a payload that
does not decompress or has another format) is data, not a crash: it is logged once with its
pk/sk and what is wrong, listed in `ScanCache.unreadable` for the run's status, and the image
is scanned again (which overwrites the item).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from check.serialize import FORMAT_VERSION, findings_from_dicts, findings_to_dicts
from securityhub.aws import error_code
from securityhub.errors import AwsError, ReportParseError
from securityhub.findings import EcrImage, Finding, ScannerInfo
from securityhub.logs import fields, get_logger
from securityhub.retry import Retrier, RetryPolicy

log = get_logger("check.cache")

# DynamoDB items are at most 400 KB, attribute names included (DynamoDB quotas); results
# whose compressed payload exceeds this go to S3, leaving room for the other attributes.
ITEM_PAYLOAD_MAX = 350_000
# BatchGetItem reads at most 100 items per call (DynamoDB API reference).
BATCH_GET_MAX = 100
# BatchWriteItem writes at most 25 items per call (DynamoDB API reference).
BATCH_WRITE_MAX = 25
BATCH_GET_RETRIES = 8
PK_PREFIX = "cache#"


@dataclass(frozen=True)
class CacheKey:
    digest: str
    scanner: str
    version: str
    scan_types: tuple[str, ...]

    @property
    def pk(self) -> str:
        return f"{PK_PREFIX}{self.digest}"

    @property
    def sk(self) -> str:
        return f"{self.scanner}#{self.version}#{','.join(sorted(self.scan_types))}"


@dataclass(frozen=True)
class CachedResult:
    """A stored result; `findings` are dicts until bound to an image with `findings_for`."""

    key: CacheKey
    scanner: ScannerInfo
    scan_types: tuple[str, ...]
    findings: tuple[dict[str, Any], ...]
    stored_at: datetime
    expires_at: datetime
    policy_result: str | None = None

    def findings_for(self, image: EcrImage) -> tuple[Finding, ...]:
        return findings_from_dicts(self.findings, image)

    def fresh(self, now: datetime) -> bool:
        return self.expires_at > now


def encode_payload(
    scanner: ScannerInfo,
    scan_types: Sequence[str],
    findings: Iterable[Any],
    policy_result: str | None = None,
) -> bytes:
    doc = {
        "format": FORMAT_VERSION,
        "scanner": {"name": scanner.name, "version": scanner.version},
        "scan_types": list(scan_types),
        "policy_result": policy_result,
        "findings": findings_to_dicts(findings),
    }
    # mtime=0: the same result compresses to the same bytes.
    return gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), mtime=0)


def decode_payload(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(gzip.decompress(data))
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportParseError(f"a cached result is unreadable: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_VERSION:
        raise ReportParseError("a cached result has an unknown format")
    return doc


class ScanCache:
    """Reads and writes cache items; `s3` + `bucket` hold results too big for an item."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        *,
        ttl_days: int = 30,
        s3: Any | None = None,
        bucket: str | None = None,
        prefix: str = "containerscan/",
        kms_key_id: str | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.dynamodb = dynamodb
        self.table = table
        self.ttl = timedelta(days=ttl_days)
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.kms_key_id = kms_key_id
        self.clock = clock or (lambda: datetime.now(UTC))
        self.retrier = Retrier(RetryPolicy(BATCH_GET_RETRIES, base=0.05, cap=2.0), sleep=sleep)
        # (pk, sk) -> what is wrong, for every unreadable item met (logged once each)
        self.unreadable: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def unreadable_item(self, key: CacheKey, reason: str) -> None:
        """Count an unreadable cache item (logged once); the image is scanned again."""
        with self._lock:
            if (key.pk, key.sk) in self.unreadable:
                return
            self.unreadable[(key.pk, key.sk)] = reason
        log.warning(
            "cache item unreadable; the image is scanned again",
            extra=fields(pk=key.pk, sk=key.sk, problem=reason),
        )

    # ----------------------------------------------------------------------------- read

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, CachedResult]:
        """BatchGetItem in chunks of 100, retrying UnprocessedKeys with backoff.

        Expired items are returned too (the caller decides: an expired item is not a hit,
        but it tells which findings were known before). Unreadable items are skipped with
        a warning: the image is simply scanned again.
        """
        by_id = {(k.pk, k.sk): k for k in keys}
        out: dict[CacheKey, CachedResult] = {}
        ids = list(by_id)
        for start in range(0, len(ids), BATCH_GET_MAX):
            request = {
                self.table: {
                    "Keys": [
                        {"pk": {"S": pk}, "sk": {"S": sk}}
                        for pk, sk in ids[start : start + BATCH_GET_MAX]
                    ]
                }
            }
            for _ in self.retrier.attempts():
                try:
                    response = self.dynamodb.batch_get_item(RequestItems=request)
                except (ClientError, BotoCoreError) as exc:
                    raise AwsError(
                        f"cannot read the scan cache {self.table}: {error_code(exc)}: {exc}"
                    ) from exc
                for item in response.get("Responses", {}).get(self.table, ()):
                    key = by_id.get((item["pk"]["S"], item["sk"]["S"]))
                    if key is None:
                        continue
                    try:
                        out[key] = self._load(key, item)
                    except (ReportParseError, AwsError) as exc:
                        self.unreadable_item(key, exc.message)
                    except (KeyError, ValueError, TypeError, AttributeError) as exc:
                        self.unreadable_item(key, f"{type(exc).__name__}: {exc}")
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
            else:
                log.warning(
                    "cache reads left unprocessed; those images are scanned again",
                    extra=fields(count=len(request.get(self.table, {}).get("Keys", ()))),
                )
        return out

    def _load(self, key: CacheKey, item: dict[str, Any]) -> CachedResult:
        if "payload" in item:
            data = item["payload"]["B"]
        else:
            data = self._get_object(item["s3_key"]["S"])
        doc = decode_payload(data)
        findings = doc["findings"]
        if not isinstance(findings, list) or not all(isinstance(f, dict) for f in findings):
            raise ReportParseError("a cached result's findings are not a list of objects")
        return CachedResult(
            key=key,
            scanner=ScannerInfo(**doc["scanner"]),
            scan_types=tuple(doc["scan_types"]),
            findings=tuple(findings),
            stored_at=datetime.fromisoformat(item["stored_at"]["S"]),
            expires_at=datetime.fromtimestamp(int(item["expires_at"]["N"]), UTC),
            policy_result=doc.get("policy_result"),
        )

    def _get_object(self, key: str) -> bytes:
        if self.s3 is None or not self.bucket:
            raise AwsError("a cached result is in S3 but no bucket is configured")
        try:
            return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except (ClientError, BotoCoreError) as exc:
            raise AwsError(
                f"cannot read cached result s3://{self.bucket}/{key}: {error_code(exc)}"
            ) from exc

    # ---------------------------------------------------------------------------- write

    def _item(
        self,
        key: CacheKey,
        scanner: ScannerInfo,
        findings: Sequence[Any],
        policy_result: str | None,
    ) -> dict[str, Any] | None:
        """The DynamoDB item for a result (its payload put in S3 first if too big)."""
        now = self.clock()
        payload = encode_payload(scanner, key.scan_types, findings, policy_result)
        item: dict[str, Any] = {
            "pk": {"S": key.pk},
            "sk": {"S": key.sk},
            "expires_at": {"N": str(int((now + self.ttl).timestamp()))},
            "stored_at": {"S": now.isoformat()},
            "findings": {"N": str(len(findings))},
        }
        if len(payload) <= ITEM_PAYLOAD_MAX:
            item["payload"] = {"B": payload}
            return item
        if self.s3 is None or not self.bucket:
            log.warning(
                "result too big for a cache item and no bucket; not cached",
                extra=fields(digest=key.digest, bytes=len(payload)),
            )
            return None
        s3_key = self._s3_key(key)
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": s3_key,
            "Body": payload,
            "ContentType": "application/json",
            "ContentEncoding": "gzip",
        }
        params.update(sse_params(self.kms_key_id))
        self.s3.put_object(**params)
        item["s3_key"] = {"S": s3_key}
        return item

    def put(
        self,
        key: CacheKey,
        scanner: ScannerInfo,
        findings: Sequence[Any],
        policy_result: str | None = None,
    ) -> bool:
        """Store one result; False (and a warning) when it could not be stored."""
        return self.put_many([(key, scanner, findings, policy_result)]) == 1

    def put_many(
        self, results: Sequence[tuple[CacheKey, ScannerInfo, Sequence[Any], str | None]]
    ) -> int:
        """Store results with BatchWriteItem (25 per call); how many were stored.

        A failure costs only a rescan on the next run, so it is logged, never raised.
        """
        items = []
        for key, scanner, findings, policy_result in results:
            try:
                item = self._item(key, scanner, findings, policy_result)
            except (ClientError, BotoCoreError) as exc:
                log.warning(
                    "cannot store a big result in S3; not cached",
                    extra=fields(digest=key.digest, error=error_code(exc)),
                )
                continue
            if item is not None:
                items.append(item)
        stored = 0
        for start in range(0, len(items), BATCH_WRITE_MAX):
            chunk = items[start : start + BATCH_WRITE_MAX]
            request = {self.table: [{"PutRequest": {"Item": item}} for item in chunk]}
            try:
                for _ in self.retrier.attempts():
                    response = self.dynamodb.batch_write_item(RequestItems=request)
                    request = response.get("UnprocessedItems") or {}
                    if not request:
                        break
            except (ClientError, BotoCoreError) as exc:
                log.warning(
                    "cannot store results in the scan cache",
                    extra=fields(count=len(chunk), error=error_code(exc)),
                )
                continue
            stored += len(chunk) - len(request.get(self.table, ()))
        return stored

    def _s3_key(self, key: CacheKey) -> str:
        name = hashlib.sha256(key.sk.encode()).hexdigest()[:32]
        return f"{self.prefix}cache/{key.digest.replace(':', '-')}/{name}.json.gz"


def sse_params(kms_key_id: str | None) -> dict[str, str]:
    """S3 server-side encryption: SSE-KMS with the given key, else SSE-S3 (AES256)."""
    if kms_key_id:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_id}
    return {"ServerSideEncryption": "AES256"}
