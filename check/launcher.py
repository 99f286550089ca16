"""The launcher: starts the check as ECS Fargate tasks and answers for the runs it started.

One Lambda handler (`handler`, deployed by cloudformation/containerscan.yaml) serves three
event sources, each a plain function testable without Lambda:

- API Gateway (REST API, Lambda proxy integration, IAM authorization):
  `POST /scans` validates the body with the check's request model (`check.request`),
  answers 400 with every field error, starts the run and answers 202 with the run id, the
  task ARNs and the status URL. `{"shards": N}` beside the request splits a large sweep into
  N tasks (`--shard i/N` each: ECS is the distributed engine). `GET /scans/{runId}` answers
  with the run's `status.json` once the check wrote it, the tasks' ECS state meanwhile, and
  404 for a run it never started.
- EventBridge "ECR Image Action" PUSH events: a single-image run. A digest already in the
  scan cache (`check.cache`) for the deployed scanner version still gets its task: a push of
  a scanned digest to another repository (dev/app -> prod/app, a promotion) must publish
  that repository's findings, and the task does so from the cache without invoking the
  scanner (the sweep's cache lookup); the answer says `cached`.
- The EventBridge schedule: the nightly sweep (`CONTAINERSCAN_SWEEP_REQUEST`, split into
  `CONTAINERSCAN_SWEEP_SHARDS` tasks).

Each task gets the request document and its run id as container overrides
(`CONTAINERSCAN_REQUEST`, `CONTAINERSCAN_RUN_ID`), or, when the overrides would pass ECS's
8 KiB limit, the document is written to S3 and the task gets its location
(`CONTAINERSCAN_REQUEST_URI` and `sweep --request-uri`). Tasks run on Fargate in the
configured private subnets with no public IP. While a task has written no `status.json`
under its run id, its ECS state and container exit code stand for it (0 done, 3 partial,
4 findings, anything else failed).

What the launcher records, under `<prefix>runs/<run-id>/` in the results bucket:
`launch.json` (the request, each shard's run id and task ARN or failure), and, when a task
could not be started after the retries, a `status.json` saying so: nothing half-started is
left without a status. RunTask is retried on throttling, server errors and capacity
failures (the same client token each time, so a retry never starts a second task).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from securityhub.aws import error_code
from securityhub.errors import AwsError, ConfigurationError, ValidationError
from securityhub.logs import fields, get_logger

log = get_logger("check.launcher")

# ECS RunTask: "A total of 8192 characters are allowed for overrides. This limit includes the
# JSON formatting characters of the override structure" (ECS API reference, TaskOverride).
OVERRIDES_MAX = 8192
# ECS RunTask startedBy: up to 36 letters, numbers, hyphens and underscores.
STARTED_BY = "containerscan-launcher"
# ECS RunTask clientToken: up to 64 characters; idempotent for 1 hour.
CLIENT_TOKEN_MAX = 64
# ECS DescribeTasks: at most 100 tasks per call.
DESCRIBE_TASKS_MAX = 100
# A sweep split into more tasks than this is almost surely a typo.
MAX_SHARDS = 100
# RunTask attempts per shard (botocore already retried throttling inside each attempt).
RUN_TASK_ATTEMPTS = 4
RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 8.0
# Errors and failure reasons worth another RunTask attempt.
RETRYABLE_ERRORS = frozenset({
    "ThrottlingException", "Throttling", "TooManyRequestsException", "ServerException",
    "ServiceUnavailableException", "RequestLimitExceeded",
})  # fmt: skip
RETRYABLE_REASONS = ("RESOURCE:", "AGENT", "Capacity is unavailable", "Timeout")
# Time kept in hand at the end of the Lambda's run to record the launch (launch.json and a
# failure status.json): retries and further shards stop when less than this is left.
RECORD_RESERVE_SECONDS = 5.0

# The check's exit codes (check/commands.py) as run statuses.
EXIT_STATUS = {0: "done", 3: "partial", 4: "findings"}
RUN_ID_RE = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}")
REQUEST_ENV = "CONTAINERSCAN_REQUEST"
REQUEST_URI_ENV = "CONTAINERSCAN_REQUEST_URI"
RUN_ID_ENV = "CONTAINERSCAN_RUN_ID"
# The launcher-only key of a POST /scans body: how many tasks share the sweep.
SHARDS_KEY = "shards"
# How long the status page link of GET /scans/{runId} works (a presigned S3 URL; it also ends
# when the Lambda's role credentials that signed it expire).
STATUS_PAGE_LINK_SECONDS = 3600
# status.json "status" values, worst first, to summarize several shards.
STATUS_ORDER = ("failed_to_start", "failed", "partial", "findings", "unknown", "running",
                "pending", "done")  # fmt: skip


def new_run_id(now: datetime) -> str:
    """The check's run id format (check.sweep.new_run_id): time, then 8 random hex digits."""
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def shard_run_id(run_id: str, index: int, count: int) -> str:
    """Each task's own run id; a single-task run keeps the run's id."""
    return run_id if count == 1 else f"{run_id}-{index}of{count}"


# -------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class LauncherConfig:
    """What the stack tells the launcher, from the Lambda's environment."""

    cluster: str
    task_definition: str
    container: str
    subnets: tuple[str, ...]
    security_groups: tuple[str, ...]
    bucket: str
    prefix: str = "containerscan/"
    table: str | None = None
    kms_key_id: str | None = None
    sweep_request: str = "{}"
    sweep_shards: int = 1
    scan_types: tuple[str, ...] = ()
    cache_ttl_days: int = 30
    # The deployed scanner, for the push-event cache check (both or neither).
    scanner: str | None = None
    scanner_version: str | None = None
    platform_version: str = "LATEST"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LauncherConfig:
        env = os.environ if environ is None else environ
        problems: list[tuple[str, str]] = []

        def text(name: str, required: bool = False) -> str:
            value = env.get(name, "").strip()
            if required and not value:
                problems.append((name, "is not set"))
            return value

        def listed(name: str) -> tuple[str, ...]:
            values = tuple(v.strip() for v in text(name, True).split(",") if v.strip())
            if not values and not any(p[0] == name for p in problems):
                problems.append((name, "lists nothing"))
            return values

        def integer(name: str, default: int, low: int, high: int) -> int:
            raw = text(name)
            if not raw:
                return default
            if not raw.isdigit() or not low <= int(raw) <= high:
                problems.append((name, f"expected an integer from {low} to {high}, got {raw!r}"))
                return default
            return int(raw)

        prefix = env.get("CONTAINERSCAN_PREFIX", "containerscan/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        scanner, version = text("CONTAINERSCAN_SCANNER"), text("CONTAINERSCAN_SCANNER_VERSION")
        if bool(scanner) != bool(version):
            problems.append((
                "CONTAINERSCAN_SCANNER_VERSION",
                "set CONTAINERSCAN_SCANNER and CONTAINERSCAN_SCANNER_VERSION together",
            ))
        config = cls(
            cluster=text("CONTAINERSCAN_CLUSTER", True),
            task_definition=text("CONTAINERSCAN_TASK_DEFINITION", True),
            container=text("CONTAINERSCAN_CONTAINER_NAME") or "check",
            subnets=listed("CONTAINERSCAN_SUBNETS"),
            security_groups=listed("CONTAINERSCAN_SECURITY_GROUPS"),
            bucket=text("CONTAINERSCAN_BUCKET", True),
            prefix=prefix,
            table=text("CONTAINERSCAN_TABLE") or None,
            kms_key_id=text("CONTAINERSCAN_KMS_KEY_ID") or None,
            sweep_request=text("CONTAINERSCAN_SWEEP_REQUEST") or "{}",
            sweep_shards=integer("CONTAINERSCAN_SWEEP_SHARDS", 1, 1, MAX_SHARDS),
            scan_types=tuple(t.strip() for t in text("SCAN_TYPES").split(",") if t.strip()),
            cache_ttl_days=integer("CACHE_TTL_DAYS", 30, 1, 3650),
            scanner=scanner or None,
            scanner_version=version or None,
            platform_version=text("CONTAINERSCAN_PLATFORM_VERSION") or "LATEST",
        )
        if problems:
            raise ValidationError(
                "the launcher's configuration is invalid", problems,
                "the stack sets these variables; redeploy cloudformation/containerscan.yaml",
            )
        return config


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ShardLaunch:
    index: int  # 1-based
    count: int
    run_id: str
    task_arn: str | None = None
    failure: str | None = None

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"shard": f"{self.index}/{self.count}", "run_id": self.run_id}
        if self.task_arn:
            doc["task_arn"] = self.task_arn
        if self.failure:
            doc["failure"] = self.failure
        return doc


@dataclass(frozen=True)
class LaunchResult:
    run_id: str
    source: str
    shards: tuple[ShardLaunch, ...]
    request_location: str  # "overrides" or the s3:// URI of the request document
    created_at: datetime
    request: Mapping[str, Any] = field(repr=False, default_factory=dict)
    record_error: str | None = None

    @property
    def task_arns(self) -> list[str]:
        return [s.task_arn for s in self.shards if s.task_arn]

    @property
    def failures(self) -> list[ShardLaunch]:
        return [s for s in self.shards if s.failure]

    @property
    def status(self) -> str:
        if not self.failures:
            return "started"
        return "failed_to_start" if not self.task_arns else "partially_started"

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "source": self.source,
            "created_at": self.created_at.isoformat(),
            "request": _masked(self.request),
            "request_location": self.request_location,
            "shards": [s.as_dict() for s in self.shards],
        }


def _masked(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The request for records and answers: external ids replaced (they guard the roles)."""
    out = dict(doc)
    accounts = out.get("accounts")
    if isinstance(accounts, list):
        out["accounts"] = [
            {**a, "external_id": "***"} if isinstance(a, Mapping) and a.get("external_id") else a
            for a in accounts
        ]
    return out


@dataclass(frozen=True)
class Response:
    """An API Gateway proxy response."""

    status: int
    body: Mapping[str, Any]

    def as_proxy(self) -> dict[str, Any]:
        return {
            "statusCode": self.status,
            "headers": {"Content-Type": "application/json", "Cache-Control": "no-store"},
            "body": json.dumps(self.body, default=str),
        }


def problems_body(message: str, problems: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {"message": message, "errors": [{"field": f, "problem": p} for f, p in problems]}


# ----------------------------------------------------------------------------- launcher


class Launcher:
    """Starts runs and reports on them. Clients are passed in; nothing is built here."""

    def __init__(
        self,
        config: LauncherConfig,
        *,
        ecs: Any,
        s3: Any,
        cache: Any | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        time_left: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.ecs = ecs
        self.s3 = s3
        self.cache = cache
        self.clock = clock or (lambda: datetime.now(UTC))
        self.sleep = sleep
        # Seconds left before Lambda stops the invocation (context.get_remaining_time_in_millis).
        self.time_left = time_left or (lambda: float("inf"))

    # ------------------------------------------------------------------ validation

    def validate(
        self, doc: Any, source: str, shards: Any = 1
    ) -> tuple[dict[str, Any] | None, int, list[tuple[str, str]]]:
        """(the document, the shard count, []) or (None, 0, every problem by field)."""
        from check.request import validate_request

        problems: list[tuple[str, str]] = []
        count = 1
        valid_count = isinstance(shards, int) and not isinstance(shards, bool)
        if not valid_count or not 1 <= shards <= MAX_SHARDS:
            problems.append(
                (SHARDS_KEY, f"expected an integer from 1 to {MAX_SHARDS}, got {shards!r}")
            )
        else:
            count = shards
        options: dict[str, Any] = {}
        if self.config.scan_types:
            options["default_scan_types"] = self.config.scan_types
        request, found = validate_request(doc, source=source, **options)
        problems.extend(found)
        if request is not None and count > 1 and request.shard is not None:
            problems.append(("shard", f"cannot be combined with {SHARDS_KEY}; give one of them"))
        if problems:
            return None, 0, problems
        return dict(doc), count, []

    # ----------------------------------------------------------------------- start

    def start(self, doc: Mapping[str, Any], source: str, shards: int = 1) -> LaunchResult:
        """Start `shards` tasks for a validated request document and record the launch."""
        created = self.clock()
        run_id = new_run_id(created)
        documents = [
            {**doc, "shard": f"{i}/{shards}"} if shards > 1 else dict(doc)
            for i in range(1, shards + 1)
        ]
        request_location = "overrides"
        overrides = [self._overrides(d, shard_run_id(run_id, i, shards), None)
                     for i, d in enumerate(documents, 1)]
        if any(_size(o) > OVERRIDES_MAX for o in overrides):
            # The request goes to S3 once; each task gets its location and its shard.
            key = self._key(run_id, "request.json")
            self._put_json(key, doc)
            request_location = f"s3://{self.config.bucket}/{key}"
            overrides = [
                self._overrides(None, shard_run_id(run_id, i, shards), request_location,
                                shard=f"{i}/{shards}" if shards > 1 else None)
                for i in range(1, shards + 1)
            ]
            too_big = [o for o in overrides if _size(o) > OVERRIDES_MAX]
            if too_big:
                raise ConfigurationError(f"the task overrides exceed {OVERRIDES_MAX} characters")
        launches = []
        for i, override in enumerate(overrides, 1):
            token = f"{run_id}-{i}"[:CLIENT_TOKEN_MAX]
            arn: str | None
            failure: str | None
            if self.time_left() < RECORD_RESERVE_SECONDS:
                arn, failure = None, "not started: the launcher ran out of time"
            else:
                arn, failure = self._run_task(override, token)
            launches.append(ShardLaunch(i, shards, shard_run_id(run_id, i, shards), arn, failure))
        result = LaunchResult(run_id, source, tuple(launches), request_location, created, doc)
        try:
            self._record(result)
        except AwsError as exc:
            # The tasks run and write their own status; only the launcher's record is lost,
            # so say loudly which tasks belong to the run.
            log.error("run started but its record could not be written", extra=fields(
                run_id=run_id, tasks=result.task_arns, error=str(exc)))
            return replace(result, record_error=exc.message)
        log.info(
            "run launched" if result.status == "started" else "run not fully started",
            extra=fields(run_id=run_id, source=source, shards=shards, status=result.status,
                         tasks=result.task_arns,
                         failures=[f.failure for f in result.failures]),
        )
        return result

    def _overrides(self, doc: Mapping[str, Any] | None, run_id: str, uri: str | None,
                   shard: str | None = None) -> dict[str, Any]:
        environment = [{"name": RUN_ID_ENV, "value": run_id}]
        if doc is not None:
            text = json.dumps(doc, separators=(",", ":"))
            environment.append({"name": REQUEST_ENV, "value": text})
        if uri is not None:
            environment.append({"name": REQUEST_URI_ENV, "value": uri})
        command = ["sweep"]
        if uri is not None:
            # Also as a flag: a check image that cannot read the request from S3 then stops
            # at once with a usage error, instead of sweeping with the default request.
            command += ["--request-uri", uri]
        if shard:
            command += ["--shard", shard]
        return {"containerOverrides": [
            {"name": self.config.container, "command": command, "environment": environment}
        ]}

    def _run_task(self, overrides: Mapping[str, Any], token: str) -> tuple[str | None, str | None]:
        """(task ARN, None) or (None, why it failed after the retries)."""
        from botocore.exceptions import BotoCoreError, ClientError

        from securityhub.retry import Retrier, RetryPolicy

        reason = "not attempted"
        # Full jitter up to 1, 2, 4 s (capped at 8), never a wait that could eat the time kept
        # to record the launch (the deadline).
        retrier = Retrier(
            RetryPolicy(RUN_TASK_ATTEMPTS, RETRY_BASE_SECONDS / 2, RETRY_MAX_SECONDS,
                        deadline=self.time_left() - RECORD_RESERVE_SECONDS),
            sleep=self.sleep,
        )  # fmt: skip
        attempts = retrier.attempts()
        for attempt in attempts:
            if attempt:
                log.warning("RunTask failed; retrying",
                            extra=fields(attempt=attempt + 1, reason=reason))
            try:
                response = self.ecs.run_task(
                    cluster=self.config.cluster,
                    taskDefinition=self.config.task_definition,
                    launchType="FARGATE",
                    platformVersion=self.config.platform_version,
                    count=1,
                    startedBy=STARTED_BY,
                    clientToken=token,
                    networkConfiguration={"awsvpcConfiguration": {
                        "subnets": list(self.config.subnets),
                        "securityGroups": list(self.config.security_groups),
                        "assignPublicIp": "DISABLED",
                    }},
                    overrides=overrides,
                )
            except ClientError as exc:
                code = error_code(exc)
                reason = f"{code}: {exc}"
                if code not in RETRYABLE_ERRORS:
                    return None, reason
            except BotoCoreError as exc:  # connection errors, after botocore's retries
                reason = f"{type(exc).__name__}: {exc}"
            else:
                tasks = response.get("tasks") or []
                if tasks:
                    return str(tasks[0]["taskArn"]), None
                failures = response.get("failures") or [{"reason": "no task and no failure"}]
                reason = "; ".join(
                    f"{f.get('reason')}{': ' + f['detail'] if f.get('detail') else ''}"
                    for f in failures
                )
                reasons = [str(f.get("reason", "")) for f in failures]
                if not any(r.startswith(RETRYABLE_REASONS) for r in reasons):
                    return None, reason
        if attempts.out_of_time:
            return None, f"after {attempts.made} attempts (out of time): {reason}"
        return None, f"after {RUN_TASK_ATTEMPTS} attempts: {reason}"

    def _record(self, result: LaunchResult) -> None:
        """launch.json always; status.json too when a task could not be started."""
        self._put_json(self._key(result.run_id, "launch.json"), result.as_dict())
        if result.failures:
            finished = self.clock()
            self._put_json(self._key(result.run_id, "status.json"), {
                "run_id": result.run_id,
                "status": "failed_to_start",
                "exit_code": 1,
                "started_at": result.created_at.isoformat(),
                "finished_at": finished.isoformat(),
                "request": _masked(result.request),
                "errors": [
                    {"shard": s.index, "run_id": s.run_id, "error": s.failure}
                    for s in result.failures
                ],
                "tasks": result.task_arns,
            })

    # ---------------------------------------------------------------------- status

    def status(self, run_id: str) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) for GET /scans/{runId}."""
        if not RUN_ID_RE.fullmatch(run_id):
            return 400, problems_body("invalid run id", [("runId", f"{run_id!r} is not a run id")])
        launch = self._get_json(self._key(run_id, "launch.json"))
        if launch is None:
            return 404, {"message": f"unknown run {run_id}"}
        shards = launch.get("shards", [])
        if launch.get("status") == "failed_to_start" or len(shards) == 1:
            own = self._get_json(self._key(run_id, "status.json"))
            if own is not None:
                own.setdefault("tasks", [s["task_arn"] for s in shards if s.get("task_arn")])
                own["statusPage"] = self._page_url(run_id)
                return 200, own
        states = self._task_states([s["task_arn"] for s in shards if s.get("task_arn")])
        reports = []
        for shard in shards:
            report: dict[str, Any] = {"shard": shard["shard"], "run_id": shard["run_id"]}
            final = None
            if shard["run_id"] != run_id:
                final = self._get_json(self._key(shard["run_id"], "status.json"))
            if shard.get("failure"):
                report.update(status="failed_to_start", error=shard["failure"])
            elif final is not None:
                report.update(status=final.get("status", "unknown"),
                              exit_code=final.get("exit_code"), counts=final.get("counts"),
                              statusPage=self._page_url(shard["run_id"]))
            else:
                report.update(_from_task(states.get(shard["task_arn"])))
                report["task_arn"] = shard["task_arn"]
            reports.append(report)
        statuses = [r["status"] for r in reports]
        if any(st in ("running", "pending") for st in statuses):
            overall = "running"  # the run is not over while one of its tasks runs
        else:
            overall = min(statuses, key=_rank, default="unknown")
        return 200, {
            "run_id": run_id,
            "status": overall,
            "source": launch.get("source"),
            "created_at": launch.get("created_at"),
            "request": launch.get("request"),
            "shards": reports,
            "tasks": [s["task_arn"] for s in shards if s.get("task_arn")],
        }

    def _task_states(self, arns: Sequence[str]) -> dict[str, dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        states: dict[str, dict[str, Any]] = {}
        for start in range(0, len(arns), DESCRIBE_TASKS_MAX):
            chunk = list(arns[start:start + DESCRIBE_TASKS_MAX])
            try:
                response = self.ecs.describe_tasks(cluster=self.config.cluster, tasks=chunk)
            except (ClientError, BotoCoreError) as exc:
                raise AwsError(f"cannot describe the run's tasks: {error_code(exc)}") from exc
            for task in response.get("tasks", []):
                states[task["taskArn"]] = task
        return states

    # -------------------------------------------------------------------- S3 helpers

    def _page_url(self, run_id: str) -> str:
        """A link to the run's status.html (check/statuspage.py), signed for an hour; signing
        is local, and the reader needs no more than this function's own s3:GetObject."""
        url: str = self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.config.bucket,
                                  "Key": self._key(run_id, "status.html")},
            ExpiresIn=STATUS_PAGE_LINK_SECONDS)
        return url

    def _key(self, run_id: str, name: str) -> str:
        return f"{self.config.prefix}runs/{run_id}/{name}"

    def _put_json(self, key: str, doc: Mapping[str, Any]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        params: dict[str, Any] = {
            "Bucket": self.config.bucket,
            "Key": key,
            "Body": json.dumps(doc, indent=2, default=str).encode(),
            "ContentType": "application/json",
        }
        if self.config.kms_key_id:
            params.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=self.config.kms_key_id)
        else:
            params["ServerSideEncryption"] = "AES256"
        try:
            self.s3.put_object(**params)
        except (ClientError, BotoCoreError) as exc:
            where = f"s3://{self.config.bucket}/{key}"
            raise AwsError(f"cannot write {where}: {error_code(exc)}") from exc

    def _get_json(self, key: str) -> dict[str, Any] | None:
        """The JSON object at `key`, or None when there is none (NoSuchKey)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.s3.get_object(Bucket=self.config.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            where = f"s3://{self.config.bucket}/{key}"
            raise AwsError(f"cannot read {where}: {error_code(exc)}") from exc
        except BotoCoreError as exc:
            raise AwsError(f"cannot read s3://{self.config.bucket}/{key}: {exc}") from exc
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AwsError(f"s3://{self.config.bucket}/{key} is not JSON: {exc}") from exc
        return doc if isinstance(doc, dict) else None

    # ------------------------------------------------------------------ entry points

    def post_scans(self, event: Mapping[str, Any]) -> Response:
        from check.request import document_from_api

        doc, problems = document_from_api(event)
        if doc is None:
            return Response(400, problems_body("the request body is invalid", problems))
        shards = doc.pop(SHARDS_KEY, 1)
        valid, count, problems = self.validate(doc, "api", shards)
        if valid is None:
            return Response(400, problems_body("the scan request is invalid", problems))
        result = self.start(valid, "api", count)
        body: dict[str, Any] = {
            "runId": result.run_id,
            "status": result.status,
            "tasks": result.task_arns,
            "shards": len(result.shards),
            "statusUrl": status_url(event, result.run_id),
        }
        if result.failures:
            body["errors"] = [{"shard": s.index, "error": s.failure} for s in result.failures]
        if result.record_error:
            body["warning"] = f"the run's record was not written: {result.record_error}"
        return Response(202 if result.task_arns else 503, body)

    def get_scan(self, event: Mapping[str, Any]) -> Response:
        run_id = str((event.get("pathParameters") or {}).get("runId", ""))
        code, body = self.status(run_id)
        return Response(code, body)

    def on_ecr_push(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """A single-image run for a pushed image (from the cache when the digest is in it)."""
        from check.request import document_from_event

        doc, problems = document_from_event(event)
        if doc is None:
            raise ValidationError("the ECR event is not a successful push", problems)
        digest = doc["images"][0]
        valid, _, problems = self.validate(doc, "event")
        if valid is None:
            raise ValidationError("the ECR push cannot be scanned", problems)
        cached = self._cached(digest)
        if cached:
            # Skipping would leave this repository's image without findings until the next
            # sweep (a promotion); the task publishes them from the cache, with no scan.
            log.info("pushed image already scanned; its task publishes from the cache",
                     extra=fields(digest=digest, repository=doc["repositories"][0]))
        result = self.start(valid, "event")
        return {"skipped": False, "cached": cached, **result.as_dict()}

    def _cached(self, digest: str) -> bool:
        """Whether the deployed scanner already has a fresh result for `digest`."""
        if self.cache is None or not (self.config.scanner and self.config.scanner_version):
            return False
        from check.cache import CacheKey
        from check.scanner import DEFAULT_SCAN_TYPES

        key = CacheKey(digest, self.config.scanner, self.config.scanner_version,
                       tuple(sorted(self.config.scan_types or DEFAULT_SCAN_TYPES)))
        found = self.cache.get_many([key])
        hit = found.get(key)
        return hit is not None and hit.fresh(self.clock())

    def on_schedule(self) -> dict[str, Any]:
        """The nightly sweep: the configured request, split into the configured shards."""
        from check.request import load_document

        doc = load_document(self.config.sweep_request, "CONTAINERSCAN_SWEEP_REQUEST")
        valid, count, problems = self.validate(doc, "schedule", self.config.sweep_shards)
        if valid is None:
            raise ValidationError("the nightly sweep request is invalid", problems,
                                  "fix the stack's SweepRequest parameter")
        return self.start(valid, "schedule", count).as_dict()


def status_url(event: Mapping[str, Any], run_id: str) -> str:
    """https://<api domain>/<stage>/scans/<runId>, from the API Gateway request context."""
    context = event.get("requestContext") or {}
    domain = context.get("domainName") or (event.get("headers") or {}).get("Host", "")
    stage = context.get("stage", "")
    base = f"https://{domain}/{stage}" if stage and stage != "$default" else f"https://{domain}"
    return f"{base}/scans/{run_id}"


def _size(overrides: Mapping[str, Any]) -> int:
    return len(json.dumps(overrides, separators=(",", ":")))


def _rank(status: str) -> int:
    return STATUS_ORDER.index(status) if status in STATUS_ORDER else STATUS_ORDER.index("unknown")


def _from_task(task: Mapping[str, Any] | None) -> dict[str, Any]:
    """A shard's state from its ECS task while (or after) it runs without a status.json."""
    if task is None:
        # ECS forgets stopped tasks after about an hour.
        return {"status": "unknown", "error": "the task is no longer known to ECS"}
    last = task.get("lastStatus", "")
    report: dict[str, Any] = {"task_status": last}
    if last in ("PROVISIONING", "PENDING", "ACTIVATING"):
        report["status"] = "pending"
    elif last == "STOPPED":
        exits = [c.get("exitCode") for c in task.get("containers", []) if "exitCode" in c]
        code = exits[0] if exits else None
        report["status"] = EXIT_STATUS.get(code, "failed") if code is not None else "failed"
        if code is not None:
            report["exit_code"] = code
        if report["status"] == "failed":
            report["error"] = task.get("stoppedReason") or task.get("stopCode") or "stopped"
    else:
        report["status"] = "running"
    return report


# ------------------------------------------------------------------------------ handler


def dispatch(launcher: Launcher, event: Mapping[str, Any]) -> dict[str, Any]:
    """Route one Lambda event; API Gateway events get proxy responses."""
    if "httpMethod" in event:
        method = event["httpMethod"]
        resource = event.get("resource") or event.get("path", "")
        try:
            if resource.rstrip("/") == "/scans" and method == "POST":
                return launcher.post_scans(event).as_proxy()
            if resource == "/scans/{runId}" and method == "GET":
                return launcher.get_scan(event).as_proxy()
        except AwsError as exc:
            log.error("request failed", extra=fields(error=str(exc)))
            return Response(502, {"message": exc.message}).as_proxy()
        return Response(404, {"message": f"no route {method} {resource}"}).as_proxy()
    source = event.get("source")
    if source == "aws.ecr":
        return launcher.on_ecr_push(event)
    if source == "aws.events" and event.get("detail-type") == "Scheduled Event":
        return launcher.on_schedule()
    raise ValidationError("unknown event", [("source", f"{source!r} is not handled")])


def build_launcher(
    environ: Mapping[str, str] | None = None, time_left: Callable[[], float] | None = None
) -> Launcher:
    """The launcher with real clients, from the Lambda's environment."""
    from check.cache import ScanCache
    from securityhub.aws import SessionFactory

    config = LauncherConfig.from_env(environ)
    sessions = SessionFactory()
    cache = None
    if config.table:
        cache = ScanCache(sessions.client("dynamodb"), config.table,
                          ttl_days=config.cache_ttl_days, prefix=config.prefix)
    return Launcher(config, ecs=sessions.client("ecs"), s3=sessions.client("s3"), cache=cache,
                    time_left=time_left)


_launcher: Launcher | None = None


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda entry point (cloudformation/containerscan.yaml: check.launcher.handler).

    The launcher is built on the first invocation and reused by the warm container, so a
    burst of events shares the clients; nothing is built at import time.
    """
    global _launcher
    from securityhub import logs

    if _launcher is None:
        logs.configure(os.environ.get("CONTAINERSCAN_LOG_LEVEL", "INFO"), json_lines=True)
        _launcher = build_launcher()
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    _launcher.time_left = (lambda: remaining() / 1000) if remaining else (lambda: float("inf"))
    return dispatch(_launcher, event)
