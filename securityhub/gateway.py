"""The Security Hub gateway: BatchImportFindings and GetFindings, within the quotas.

- Batches of at most 100 findings and 6 MB (API model `BatchImportFindingsRequestFindingList`
  max 100; partner guide: 6 MB per request).
- Client-side token buckets under the published rates (service-2.json throttling section):
  BatchImportFindings 10 requests/s, GetFindings 3 requests/s, per account and region.
- botocore (standard mode, a few attempts) retries each HTTP call; on top of it the gateway
  retries, through the one retry helper (`securityhub.retry`), single `FailedFindings` entries
  with a transient ErrorCode and whole calls botocore gave up on with a transient code
  (TooManyRequestsException, LimitExceededException, InternalException...), honouring
  Retry-After. A throttled batch so costs at most `max_attempts` x botocore's attempts calls.
- `InvalidInput` entries are permanent: reported with the field named in the message and
  counted as failed, never retried and never dropped silently.
- Whole-call AccessDenied / InvalidAccess fail every finding of the call (the usual cause:
  AwsAccountId or ProductArn not the caller's, or Security Hub not enabled in the region).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from securityhub.aws import error_code
from securityhub.errors import SecurityHubError
from securityhub.logs import fields, get_logger
from securityhub.retry import Retrier, RetryPolicy

log = get_logger("securityhub.gateway")

# BatchImportFindings: 1-100 findings per request (botocore service-2.json).
MAX_BATCH_FINDINGS = 100
# 6 MB per request (partner guide, "guidelines-batchimportfindings"); the envelope
# `{"Findings":[...]}` and separators are counted by `batches()`.
MAX_BATCH_BYTES = 6 * 1024 * 1024
# Rate limits per account and region (service-2.json): BatchImportFindings 10/s (burst 30),
# GetFindings 3/s (burst 6). Stay at the sustained rate.
IMPORT_RATE = 10.0
GET_FINDINGS_RATE = 3.0
# GetFindings MaxResults: 1-100.
MAX_PAGE_SIZE = 100
MAX_ATTEMPTS = 10
BACKOFF_BASE = 0.2
BACKOFF_CAP = 20.0  # botocore's standard retry cap
# Whole-call error codes worth retrying (botocore standard retry: throttling + 5xx).
TRANSIENT_CALL_ERRORS = frozenset(
    {
        "TooManyRequestsException",
        "LimitExceededException",
        "ThrottlingException",
        "Throttling",
        "InternalException",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
    }
)
# FailedFindings ErrorCodes worth retrying. Any code not known to be permanent is treated as
# transient too: the model does not enumerate them (reference section 1).
PERMANENT_FINDING_ERRORS = frozenset({"InvalidInput", "InvalidAccess", "FindingSizeExceeded"})
_FIELD = re.compile(r"data(?:\.([\w.\[\]/-]+))?(?: should have required property '([^']+)')?")


def invalid_field(message: str) -> str:
    """The ASFF field an InvalidInput message names ('data.Title ...' -> 'Title')."""
    match = _FIELD.search(message or "")
    if not match:
        return "unknown"
    return match.group(1) or match.group(2) or "unknown"


def encoded(doc: Any) -> int:
    return len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def batches(findings: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Split into requests of at most 100 findings and 6 MB each, keeping the order."""
    out: list[list[Mapping[str, Any]]] = []
    current: list[Mapping[str, Any]] = []
    size = len('{"Findings":[]}')
    for finding in findings:
        item = encoded(finding) + 1  # the comma
        if current and (len(current) >= MAX_BATCH_FINDINGS or size + item > MAX_BATCH_BYTES):
            out.append(current)
            current, size = [], len('{"Findings":[]}')
        current.append(finding)
        size += item
    if current:
        out.append(current)
    return out


class RateLimiter:
    """A token bucket: `rate` calls per second on average, bursts of at most `burst`."""

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until one is available; returns the time slept."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


@dataclass
class ImportOutcome:
    """What happened to each finding handed to `import_findings`."""

    accepted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # Id -> reason
    invalid_fields: dict[str, str] = field(default_factory=dict)  # Id -> ASFF field
    calls: int = 0
    retried_calls: int = 0
    retried_findings: int = 0


class Gateway:
    """BatchImportFindings / GetFindings for one Security Hub client (account, region)."""

    def __init__(
        self,
        client: Any,
        *,
        import_rate: float = IMPORT_RATE,
        get_rate: float = GET_FINDINGS_RATE,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.max_attempts = max_attempts
        self.retrier = Retrier(
            RetryPolicy(max_attempts, backoff_base, backoff_cap), sleep=sleep, rng=rng
        )
        self.import_limiter = RateLimiter(import_rate, sleep=sleep)
        self.get_limiter = RateLimiter(get_rate, sleep=sleep)

    # ---------------------------------------------------------------------- imports
    def import_findings(self, findings: Sequence[Mapping[str, Any]]) -> ImportOutcome:
        """Import every finding; each ends up in `accepted` or in `failed` with a reason."""
        outcome = ImportOutcome()
        for batch in batches(findings):
            self._import_batch(list(batch), outcome)
        return outcome

    def _import_batch(self, batch: list[Mapping[str, Any]], outcome: ImportOutcome) -> None:
        pending = batch
        attempts = self.retrier.attempts()
        for attempt in attempts:
            self.import_limiter.acquire()
            outcome.calls += 1
            try:
                response = self.client.batch_import_findings(Findings=list(pending))
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc)
                if code in TRANSIENT_CALL_ERRORS:
                    outcome.retried_calls += 1
                    attempts.after(exc)
                    log.debug(
                        "BatchImportFindings throttled or failed; retrying",
                        extra=fields(code=code, attempt=attempt + 1, findings=len(pending)),
                    )
                    continue
                reason = f"{code}: {exc}"
                log.error(
                    "BatchImportFindings rejected the whole request",
                    extra=fields(code=code, findings=len(pending), reason=reason),
                )
                for finding in pending:
                    outcome.failed[str(finding["Id"])] = reason
                return
            failed_ids: dict[str, dict[str, Any]] = {
                str(f.get("Id")): f for f in response.get("FailedFindings", [])
            }
            retry: list[Mapping[str, Any]] = []
            for finding in pending:
                finding_id = str(finding["Id"])
                failure = failed_ids.get(finding_id)
                if failure is None:
                    outcome.accepted.append(finding_id)
                    continue
                code = str(failure.get("ErrorCode", ""))
                message = str(failure.get("ErrorMessage", ""))
                if code in PERMANENT_FINDING_ERRORS:
                    where = invalid_field(message) if code == "InvalidInput" else ""
                    if where:
                        outcome.invalid_fields[finding_id] = where
                    label = f"{code} ({where})" if where else code
                    outcome.failed[finding_id] = f"{label}: {message}"
                    log.error(
                        "Security Hub refused a finding",
                        extra=fields(finding_id=finding_id, code=code, field=where, reason=message),
                    )
                else:
                    retry.append(finding)
            if not retry:
                return
            outcome.retried_findings += len(retry)
            pending = retry
        for finding in pending:
            outcome.failed[str(finding["Id"])] = (
                f"still throttled or failing after {self.max_attempts} attempts"
            )
        log.error(
            "BatchImportFindings gave up on findings",
            extra=fields(findings=len(pending), attempts=self.max_attempts),
        )

    # ---------------------------------------------------------------------- queries
    def get_findings(
        self, filters: Mapping[str, Any], *, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[dict[str, Any]]:
        """Every finding matching `filters`, page by page, rate-limited and retried."""
        params: dict[str, Any] = {"Filters": dict(filters), "MaxResults": page_size}
        while True:
            response = self._get_page(params)
            yield from response.get("Findings", [])
            token = response.get("NextToken")
            if not token:
                return
            params["NextToken"] = token

    def _get_page(self, params: dict[str, Any]) -> dict[str, Any]:
        attempts = self.retrier.attempts()
        for _ in attempts:
            self.get_limiter.acquire()
            try:
                response: dict[str, Any] = self.client.get_findings(**params)
                return response
            except (ClientError, BotoCoreError) as exc:
                if error_code(exc) not in TRANSIENT_CALL_ERRORS:
                    raise SecurityHubError(f"GetFindings failed: {exc}") from exc
                attempts.after(exc)
        raise SecurityHubError(
            f"GetFindings still throttled after {self.max_attempts} attempts",
            "Security Hub allows 3 GetFindings requests per second per account and region; "
            "retry later",
        )
