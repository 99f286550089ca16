"""Where runtime events go: JSON lines, SNS, Security Hub, Qualys CRS.

Every sink has a `name` and `send(batch)`; the pipeline calls `send` from the sink's own
thread, so a sink may block (retries, backoff) without stalling anything else. A sink raises
`SinkError` when a batch could not be delivered; the pipeline counts it and goes on.

- `JsonLinesSink`: one JSON object per event (`RuntimeEvent.as_dict`) on stdout (CloudWatch
  through the awslogs driver) or appended to `--events-file` (created 0600). Every event.
- The alert sinks get only `alert` and `block` events, filtered by the destination's
  `eventType` when the policy names some:
  - `SnsSink`: one message per batch (split to stay under SNS's 256 KB), to SNS_TOPIC_ARN.
  - `SecurityHubSink`: events aggregated into `RuntimeFinding`s per (task family,
    container, rule, subject) with cumulative counts, published through
    `securityhub.hub.SecurityHubPublisher`: a loop of blocked connects is one finding whose
    count grows, not thousands of findings.
  - `QualysSink`: batched JSON POSTed to `qualysIntegration.endpoint` (or the gateway of
    QUALYS_POD) with the QUALYS_ACCESS_TOKEN bearer token, retried with exponential backoff
    and jitter on 429/5xx/connection errors (Retry-After honoured). A redirect is never
    followed (the token would go with it) and any non-2xx answer means not delivered.
    Qualys documents no public CRS ingestion API, so the path is an assumption
    (`QUALYS_EVENTS_PATH`, used when the endpoint has none).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import urllib3
from urllib3.util.retry import Retry

from securityhub.errors import ConfigurationError, ContainerscanError
from securityhub.logs import fields, get_logger, register_secret
from sidecar.events import RuntimeEvent
from sidecar.policy_model import Policy

log = get_logger("sidecar.sinks")

SCANNER_NAME = "containerscan-sidecar"
ALERT_ACTIONS = frozenset({"alert", "block"})
# RuntimeEvent.category -> the policy's `eventType` words (seed: "Event Types Sent to Qualys").
EVENT_TYPES = {
    "process": "process_execution",
    "file": "file_change",
    "network": "network_connection",
    "software": "software_installation",
    "syscall": "syscall",
    "anomaly": "anomaly",
}
# SNS Publish: a message is at most 256 KiB (262,144 bytes), the subject at most 100
# characters (SNS API reference, Publish).
SNS_MAX_MESSAGE_BYTES = 262_144
SNS_MAX_SUBJECT = 100
# Room left for the JSON envelope around the events of one SNS message.
_SNS_ENVELOPE_BYTES = 1_024
# Qualys gateways per platform (shared/reference/qscanner.md 1.6; EU3 is not known).
QUALYS_GATEWAYS = {
    "US1": "https://gateway.qg1.apps.qualys.com",
    "US2": "https://gateway.qg2.apps.qualys.com",
    "US3": "https://gateway.qg3.apps.qualys.com",
    "US4": "https://gateway.qg4.apps.qualys.com",
    "EU1": "https://gateway.qg1.apps.qualys.eu",
    "EU2": "https://gateway.qg2.apps.qualys.eu",
    "CA1": "https://gateway.qg1.apps.qualys.ca",
    "IN1": "https://gateway.qg1.apps.qualys.in",
    "AU1": "https://gateway.qg1.apps.qualys.com.au",
    "UK1": "https://gateway.qg1.apps.qualys.co.uk",
    "AE1": "https://gateway.qg1.apps.qualys.ae",
    "KSA1": "https://gateway.qg1.apps.qualysksa.com",
}
# No documented CRS ingestion API exists: this path is our assumption, used only when the
# configured endpoint has no path of its own.
QUALYS_EVENTS_PATH = "/crs/v1/events"
QUALYS_TIMEOUT = 10.0  # seconds per HTTP request
QUALYS_ATTEMPTS = 5
QUALYS_BACKOFF = 0.5  # seconds, doubled per attempt, with full jitter
QUALYS_MAX_BACKOFF = 20.0
# The longest Retry-After honoured: the sink has its own thread, so waiting costs only that
# sink's queue; past this a gateway's answer is taken as "much later" and capped.
QUALYS_MAX_RETRY_AFTER = 300.0
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# Security Hub sink: at most this many (container, rule, subject) aggregates are remembered.
MAX_RUNTIME_AGGREGATES = 10_000


class SinkError(ContainerscanError):
    """A sink could not deliver a batch (after its retries)."""


class Sink(Protocol):
    name: str

    def send(self, batch: Sequence[RuntimeEvent]) -> None: ...


def _alerts(batch: Sequence[RuntimeEvent], event_types: frozenset[str]) -> list[RuntimeEvent]:
    return [
        e
        for e in batch
        if e.action in ALERT_ACTIONS
        and (not event_types or EVENT_TYPES.get(e.category, e.category) in event_types)
    ]


def _line(event: RuntimeEvent) -> str:
    return json.dumps(event.as_dict(), default=str, separators=(",", ":"), ensure_ascii=False)


# ------------------------------------------------------------------------- JSON lines


class JsonLinesSink:
    """Every event as one JSON line on a stream (stdout) or a file."""

    def __init__(self, stream: IO[str], name: str = "stdout", *, owns: bool = False) -> None:
        self.name = name
        self._stream = stream
        self._owns = owns

    @classmethod
    def to_file(cls, path: str | Path) -> JsonLinesSink:
        """Append to `path`, created readable by the owner only (events name files, IPs)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return cls(os.fdopen(fd, "a", encoding="utf-8"), name="file", owns=True)

    def send(self, batch: Sequence[RuntimeEvent]) -> None:
        try:
            self._stream.write("".join(_line(e) + "\n" for e in batch))
            self._stream.flush()
        except OSError as exc:
            raise SinkError(f"cannot write events to {self.name}: {exc}") from exc

    def close(self) -> None:
        if self._owns:
            self._stream.close()


# ------------------------------------------------------------------------------- SNS


class SnsSink:
    name = "sns"

    def __init__(
        self, client: Any, topic_arn: str, event_types: frozenset[str] = frozenset()
    ) -> None:
        self._client = client
        self.topic_arn = topic_arn
        self._event_types = event_types

    def send(self, batch: Sequence[RuntimeEvent]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        alerts = _alerts(batch, self._event_types)
        for chunk in _chunks(
            [_line(e) for e in alerts], SNS_MAX_MESSAGE_BYTES - _SNS_ENVELOPE_BYTES
        ):
            worst = max((json.loads(line)["severity"] for line in chunk), key=_severity_rank)
            subject = f"containerscan runtime: {len(chunk)} {worst} event(s)"
            message = '{"source":"' + SCANNER_NAME + '","events":[' + ",".join(chunk) + "]}"
            params: dict[str, Any] = {
                "TopicArn": self.topic_arn,
                "Subject": subject[:SNS_MAX_SUBJECT],
                "Message": message,
                "MessageAttributes": {"severity": {"DataType": "String", "StringValue": worst}},
            }
            if self.topic_arn.endswith(".fifo"):
                # FIFO topics need a group; the content hash de-duplicates retried publishes
                params["MessageGroupId"] = SCANNER_NAME
                params["MessageDeduplicationId"] = hashlib.sha256(
                    message.encode("utf-8")
                ).hexdigest()
            try:
                self._client.publish(**params)
            except (ClientError, BotoCoreError) as exc:
                raise SinkError(
                    f"SNS publish to {self.topic_arn} failed: {exc}",
                    "check the topic ARN and the task role's sns:Publish permission",
                ) from exc


def _severity_rank(severity: str) -> int:
    return (
        ("low", "medium", "high", "critical").index(severity)
        if severity in ("low", "medium", "high", "critical")
        else -1
    )


def _chunks(lines: list[str], limit: int) -> list[list[str]]:
    """Groups of lines whose joined size stays under `limit` bytes (one oversized line alone)."""
    chunks: list[list[str]] = []
    current: list[str] = []
    size = 0
    for line in lines:
        length = len(line.encode("utf-8")) + 1
        if current and size + length > limit:
            chunks.append(current)
            current, size = [], 0
        current.append(line)
        size += length
    if current:
        chunks.append(current)
    return chunks


# ----------------------------------------------------------------------- Security Hub


@dataclass
class _Aggregate:
    event: RuntimeEvent
    count: int
    first_seen: float
    last_seen: float
    blocked: bool


class SecurityHubSink:
    """Runtime findings per (task family, container, rule, subject), with counts.

    `context` describes the task (see `container_resource`). Counts are cumulative for the
    life of the sidecar; the finding is re-imported with the new count and last-seen time
    each time a batch brings more of the same events.
    """

    name = "security-hub"

    def __init__(
        self,
        publisher: Any,
        context: Any,
        region: str,
        event_types: frozenset[str] = frozenset(),
        version: str = "0.1.0",
    ) -> None:
        self._publisher = publisher
        self._context = context
        self._region = region
        self._event_types = event_types
        self._version = version
        self._aggregates: dict[tuple[str, str, str, str], _Aggregate] = {}
        # aggregates whose latest count Security Hub has not accepted yet (a failed import
        # is retried with the next batch, so no count is lost to a throttled call)
        self._dirty: dict[tuple[str, str, str, str], None] = {}

    def send(self, batch: Sequence[RuntimeEvent]) -> None:
        from securityhub.findings import Observation

        touched = self._dirty
        for event in _alerts(batch, self._event_types):
            container = event.container or _attr(self._context, "container_name") or "unknown"
            family = _attr(self._context, "task_family") or "unknown"
            key = (family, container, event.rule, event.subject())
            first = float(event.extra.get("first_seen", event.timestamp))
            last = float(event.extra.get("last_seen", event.timestamp))
            agg = self._aggregates.pop(key, None)
            if agg is None:
                agg = _Aggregate(event, 0, first, last, False)
            agg.event = event
            agg.count += event.count
            agg.first_seen = min(agg.first_seen, first)
            agg.last_seen = max(agg.last_seen, last)
            agg.blocked |= event.action == "block"
            self._aggregates[key] = agg  # most recent last, for eviction
            touched[key] = None
        while len(self._aggregates) > MAX_RUNTIME_AGGREGATES:
            evicted = next(iter(self._aggregates))
            del self._aggregates[evicted]
            touched.pop(evicted, None)
        if not touched:
            return
        by_container: dict[str, list[Any]] = {}
        for key in touched:
            by_container.setdefault(key[1], []).append(self._finding(key))
        observations = [
            Observation(
                resource=findings[0].resource,
                kinds=frozenset({"runtime"}),
                findings=tuple(findings),
            )
            for findings in by_container.values()
        ]
        try:
            summary = self._publisher.publish(self._region, observations)
        except ContainerscanError as exc:
            raise SinkError(f"Security Hub import failed: {exc.message}", exc.remediation) from exc
        if getattr(summary, "failed", 0):
            raise SinkError(
                f"Security Hub rejected {summary.failed} runtime finding(s): "
                + "; ".join(summary.errors[:3])
            )
        touched.clear()

    def _finding(self, key: tuple[str, str, str, str]) -> Any:
        from securityhub.findings import ProcessInfo, RuntimeFinding, ScannerInfo, Severity

        agg = self._aggregates[key]
        event = agg.event
        return RuntimeFinding(
            resource=container_resource(self._context, key[1], self._region),
            rule=event.rule,
            category=event.category,
            severity=Severity.parse(event.severity),
            action=event.action,
            subject=key[3],
            scanner=ScannerInfo(SCANNER_NAME, self._version),
            process=ProcessInfo(
                pid=event.pid,
                ppid=event.ppid,
                path=event.process,
                args=tuple(event.args or ()),  # present only where captureArgs allows
                # ASFF Process.LaunchedAt and the user, when the tracer recorded them.
                launched_at=_launched_at(event.extra.get("launched_at")),
                user=str(event.extra["user"]) if event.extra.get("user") is not None else None,
                uid=_uid(event.extra.get("uid")),
            ),
            syscall=event.syscall,
            path=event.path,
            ip=event.ip,
            port=event.port,
            protocol=event.extra.get("protocol"),
            package_manager=event.package_manager,
            description=event.message,
            count=agg.count,
            first_seen=datetime.fromtimestamp(agg.first_seen, UTC),
            last_seen=datetime.fromtimestamp(agg.last_seen, UTC),
            blocked=agg.blocked,
        )


def _launched_at(value: Any) -> datetime | None:
    """A process start time from an event's extra fields (epoch seconds), if any."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value, UTC)
    return None


def _uid(value: Any) -> int | None:
    """A uid from an event's extra fields, if any."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _attr(context: Any, name: str) -> Any:
    if context is None:
        return None
    if isinstance(context, Mapping):
        return context.get(name)
    return getattr(context, name, None)


def container_resource(context: Any, container: str, region: str) -> Any:
    """The EcsContainer of `container` in the task `context` describes.

    `context` is the sidecar's ECS context: an object or mapping with `account_id`,
    `region`, `cluster_arn`, `task_arn`, `task_family`, and optionally `container_name`,
    `task_definition_arn` and `images` (container name -> (image, digest)). A
    `container(name)` method returning an `EcsContainer` takes precedence.
    """
    from securityhub.findings import EcsContainer

    method = getattr(context, "container", None)
    if callable(method):
        found = method(container)
        if isinstance(found, EcsContainer):
            return found
    images = _attr(context, "images") or {}
    image, digest = images.get(container, (None, None))
    return EcsContainer(
        account_id=_attr(context, "account_id") or "000000000000",
        region=_attr(context, "region") or region,
        cluster_arn=_attr(context, "cluster_arn") or "unknown",
        task_arn=_attr(context, "task_arn") or "unknown",
        task_family=_attr(context, "task_family") or "unknown",
        container_name=container,
        image=image,
        image_digest=digest,
        task_definition_arn=_attr(context, "task_definition_arn"),
    )


# ------------------------------------------------------------------------ Qualys CRS


class QualysSink:
    name = "qualys-crs"

    def __init__(
        self,
        endpoint: str,
        token: str,
        *,
        event_types: frozenset[str] = frozenset(),
        context: Any = None,
        attempts: int = QUALYS_ATTEMPTS,
        backoff: float = QUALYS_BACKOFF,
        timeout: float = QUALYS_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = qualys_url(endpoint)
        register_secret(token)
        self._token = token
        self._event_types = event_types
        self._context = context
        self._attempts = attempts
        self._backoff = backoff
        self._timeout = timeout
        self._sleep = sleep
        self.retries = 0
        # One pool per sink; TLS verification on (urllib3 2 verifies by default).
        self._http = urllib3.PoolManager(retries=False)

    def send(self, batch: Sequence[RuntimeEvent]) -> None:
        alerts = _alerts(batch, self._event_types)
        if not alerts:
            return
        body = json.dumps(
            {
                "source": SCANNER_NAME,
                "context": _context_doc(self._context),
                "events": [
                    {**e.as_dict(), "eventType": EVENT_TYPES.get(e.category, e.category)}
                    for e in alerts
                ],
            },
            default=str,
        ).encode("utf-8")
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Content-Type": "application/json",
            "User-Agent": SCANNER_NAME,
        }
        last = ""
        for attempt in range(self._attempts):
            retry_after: float | None = None
            try:
                # redirect=False: a 3xx is an answer, never followed, so the bearer token
                # goes to the configured gateway and nowhere else; retries=False: the loop
                # below retries (with Retry-After) and counts what it does.
                response = self._http.request(
                    "POST",
                    self.url,
                    body=body,
                    headers=headers,
                    redirect=False,
                    retries=False,
                    timeout=urllib3.Timeout(total=self._timeout),
                )
            except urllib3.exceptions.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status
                if 200 <= status < 300:
                    return
                last = f"HTTP {status} {response.reason or ''}".strip()
                if status not in _RETRY_STATUSES:
                    raise SinkError(
                        f"Qualys did not accept {len(alerts)} event(s): {last}",
                        _qualys_hint(status, response.headers.get("Location")),
                    )
                retry_after = _retry_after(response.headers.get("Retry-After"))
            if attempt + 1 < self._attempts:
                self.retries += 1
                cap = min(QUALYS_MAX_BACKOFF, self._backoff * (2**attempt))
                if retry_after is not None:
                    self._sleep(min(retry_after, QUALYS_MAX_RETRY_AFTER))
                else:
                    self._sleep(random.uniform(0, cap))  # noqa: S311 - jitter, not crypto
        raise SinkError(
            f"Qualys did not accept {len(alerts)} event(s) after {self._attempts} attempts: {last}",
            "check the network path to the Qualys gateway",
        )


def _qualys_hint(status: int, location: str | None) -> str:
    if status in (401, 403):
        return "check QUALYS_ACCESS_TOKEN"
    if 300 <= status < 400:
        # The Location is not logged in full: it may carry a query string.
        where = urllib.parse.urlsplit(location or "").netloc or "elsewhere"
        return (
            f"the gateway redirects to {where}; the token is never sent there: set "
            "qualysIntegration.endpoint to the final URL"
        )
    return "check qualysIntegration.endpoint"


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds or as an HTTP date (RFC 9110 10.2.3); None when absent/bad."""
    if not value:
        return None
    try:
        return max(0.0, Retry(0).parse_retry_after(value))
    except urllib3.exceptions.InvalidHeader:
        return None


def _context_doc(context: Any) -> dict[str, Any]:
    keys = ("account_id", "region", "cluster_arn", "task_arn", "task_family")
    return {k: v for k in keys if (v := _attr(context, k)) is not None}


def qualys_url(endpoint: str) -> str:
    """The URL events are POSTed to; https only, except to a loopback test server."""
    parsed = urllib.parse.urlsplit(endpoint)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise ConfigurationError(
            f"Qualys endpoint {endpoint!r} is not a URL",
            "write https://gateway.<pod>.apps.qualys.com",
        )
    if parsed.scheme == "http" and parsed.hostname not in _LOOPBACK_HOSTS:
        raise ConfigurationError(
            f"Qualys endpoint {endpoint!r} is not https",
            "the bearer token must not travel in clear text; use the https gateway URL",
        )
    if parsed.path in ("", "/"):
        parsed = parsed._replace(path=QUALYS_EVENTS_PATH)
    return urllib.parse.urlunsplit(parsed)


def qualys_gateway(pod: str) -> str:
    try:
        return QUALYS_GATEWAYS[pod.strip().upper()]
    except KeyError:
        raise ConfigurationError(
            f"QUALYS_POD={pod!r} has no known gateway",
            f"use one of {', '.join(QUALYS_GATEWAYS)}, or set "
            "spec.actions.qualysIntegration.endpoint to the gateway URL",
        ) from None


# ---------------------------------------------------------------------------- factory


def build_sinks(
    policy: Policy,
    environ: Mapping[str, str],
    *,
    events_file: str | Path | None = None,
    sessions: Any = None,
    context: Any = None,
    stdout: IO[str] | None = None,
) -> list[Sink]:
    """The sinks the policy and the environment ask for.

    Always JSON lines on stdout (CONTAINERSCAN_EVENTS_STDOUT=0 turns that off), plus
    `events_file`. With alerts enabled: SNS when SNS_TOPIC_ARN (or a destination's
    `topicArn`) is set; Security Hub when a `security-hub` destination is enabled (needs
    CONTAINERSCAN_TABLE and the ECS context); Qualys when `qualysIntegration` or a
    `qualys-crs` destination is enabled (needs QUALYS_ACCESS_TOKEN; endpoint from the
    policy or QUALYS_POD). A destination that lacks its settings is skipped with a warning:
    the sidecar still starts, because the workload must run.
    """
    sinks: list[Sink] = []
    if environ.get("CONTAINERSCAN_EVENTS_STDOUT", "1") != "0":
        sinks.append(JsonLinesSink(stdout or sys.stdout, "stdout"))
    if events_file:
        sinks.append(JsonLinesSink.to_file(events_file))
    actions = policy.actions
    if not actions.alert_enabled:
        return sinks

    def factory() -> Any:
        nonlocal sessions
        if sessions is None:
            from securityhub.aws import SessionFactory

            sessions = SessionFactory(
                environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
            )
        return sessions

    sns = actions.destination("sns")
    topic = environ.get("SNS_TOPIC_ARN") or (sns.topic_arn if sns else None)
    if topic:
        region = topic.split(":")[3] if topic.count(":") >= 5 else None
        sinks.append(
            SnsSink(factory().client("sns", region), topic, sns.event_types if sns else frozenset())
        )
    elif sns is not None:
        log.warning("SNS destination skipped: set SNS_TOPIC_ARN")

    hub = actions.destination("security-hub")
    if hub is not None:
        table = environ.get("CONTAINERSCAN_TABLE")
        if not table or context is None:
            log.warning(
                "Security Hub destination skipped: needs CONTAINERSCAN_TABLE and the "
                "ECS task context",
                extra=fields(table=table),
            )
        else:
            from securityhub.hub import SecurityHubPublisher

            prefix = environ.get("CONTAINERSCAN_FINDING_PREFIX") or "containerscan/"
            publisher = SecurityHubPublisher(factory(), table, prefix=prefix)
            region = _attr(context, "region") or factory().region()
            sinks.append(SecurityHubSink(publisher, context, region, hub.event_types, _version()))

    qualys = actions.destination("qualys-crs")
    wants_qualys = qualys is not None or (actions.qualys.enabled and actions.qualys.send_events)
    if wants_qualys:
        token = environ.get("QUALYS_ACCESS_TOKEN") or environ.get("QUALYS_TOKEN")
        endpoint = actions.qualys.endpoint
        if environ.get("QUALYS_POD") and not endpoint:
            endpoint = qualys_gateway(environ["QUALYS_POD"])
        if not token or not endpoint:
            log.warning(
                "Qualys CRS destination skipped: needs QUALYS_ACCESS_TOKEN and an "
                "endpoint (qualysIntegration.endpoint or QUALYS_POD)"
            )
        else:
            types = frozenset(
                t
                for d in actions.destinations
                if d.type == "qualys-crs" and d.enabled
                for t in d.event_types
            )
            sinks.append(QualysSink(endpoint, token, event_types=types, context=context))
    return sinks


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("containerscan")
    except PackageNotFoundError:
        return "unknown"
