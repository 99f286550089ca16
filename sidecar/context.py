"""Where the sidecar runs: the ECS task (metadata endpoint v4), a pid's container, and the
heartbeat's figures.

ECS injects `ECS_CONTAINER_METADATA_URI_V4` into every container (Fargate platform 1.4+):
`GET $URI` describes this container (`Name`, `DockerId`), `GET $URI/task` the task
(`TaskARN`, `Cluster`, `Family`, `Revision`, `Containers[]` with `Name`, `DockerId`, `Image`,
`ImageID`). The endpoint is link-local and unauthenticated; it answers in milliseconds, so
one short timeout and no retries beyond one. Outside ECS the variable is absent and there
is no context (events still flow; Security Hub findings need one).

A process's container comes from /proc/PID/cgroup: the last path component of its cgroup is
the container's id (`/ecs/<task id>/<task id>-<n>` on Fargate, `/docker/<64 hex>` or
`docker-<64 hex>.scope` elsewhere), matched against the task's `DockerId`s.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from securityhub.errors import ConfigurationError
from securityhub.logs import fields, get_logger

log = get_logger("sidecar.context")

METADATA_ENV = "ECS_CONTAINER_METADATA_URI_V4"
# The endpoint is local to the task; a slow answer means it is not there.
METADATA_TIMEOUT = 2.0
METADATA_ATTEMPTS = 2
_SCOPE = re.compile(r"^(?:docker|cri-containerd|crio|libpod)-([0-9a-f]{64})\.scope$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class TaskContext:
    """The ECS task the sidecar runs in (the shape `sidecar.sinks` reads)."""

    task_arn: str
    cluster_arn: str
    task_family: str
    revision: str = ""
    account_id: str | None = None
    region: str | None = None
    container_name: str | None = None  # the sidecar's own container
    launch_type: str | None = None
    containers: Mapping[str, str] = field(default_factory=dict)  # DockerId -> Name
    images: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)
    partition: str = "aws"  # the task ARN's: aws, aws-cn, aws-us-gov

    @property
    def task_definition_arn(self) -> str | None:
        """`arn:<partition>:ecs:<region>:<account>:task-definition/<family>:<revision>`, the
        ARN ECS gives the task definition (the metadata names its family and revision)."""
        if not (self.region and self.account_id and self.revision.isdigit()):
            return None
        if not self.task_family or self.task_family == "unknown":
            return None
        return (
            f"arn:{self.partition}:ecs:{self.region}:{self.account_id}:"
            f"task-definition/{self.task_family}:{self.revision}"
        )

    @classmethod
    def from_metadata(cls, task: Mapping[str, Any], me: Mapping[str, Any] | None) -> TaskContext:
        """Build from the `/task` and container documents of the metadata endpoint."""
        task_arn = str(task.get("TaskARN") or "")
        if not task_arn.startswith("arn:"):
            raise ConfigurationError(
                "the ECS task metadata has no TaskARN",
                f"is {METADATA_ENV} the task metadata endpoint v4?",
            )
        parts = task_arn.split(":")
        region, account = (parts[3], parts[4]) if len(parts) > 5 else (None, None)
        cluster = str(task.get("Cluster") or "")
        if cluster and not cluster.startswith("arn:") and region and account:
            # The task ARN's partition (aws, aws-cn, aws-us-gov): the cluster is in it too.
            cluster = f"arn:{parts[1]}:ecs:{region}:{account}:cluster/{cluster}"
        containers: dict[str, str] = {}
        images: dict[str, tuple[str | None, str | None]] = {}
        for item in task.get("Containers") or []:
            name = item.get("Name")
            if not name:
                continue
            if item.get("DockerId"):
                containers[str(item["DockerId"])] = str(name)
            digest = item.get("ImageID")
            images[str(name)] = (item.get("Image"), str(digest) if digest else None)
        return cls(
            task_arn=task_arn,
            cluster_arn=cluster or "unknown",
            task_family=str(task.get("Family") or "unknown"),
            revision=str(task.get("Revision") or ""),
            account_id=account,
            region=region,
            container_name=(me or {}).get("Name"),
            launch_type=task.get("LaunchType"),
            containers=containers,
            images=images,
            partition=parts[1] or "aws",
        )

    @property
    def task_id(self) -> str:
        return self.task_arn.rsplit("/", 1)[-1]

    def container_of(self, pid: int) -> str | None:
        """The container name of `pid` (its id when the task does not list it)."""
        cid = container_id(pid)
        if cid is None:
            return None
        return self.containers.get(cid) or _short(cid)


def seconds_from(
    environ: Mapping[str, str], name: str, default: float, *, zero: str | None = None
) -> float:
    """A number of seconds from the environment variable `name` (`default` when unset or
    empty). It must be positive; 0 too when `zero` says what 0 means. Anything else is a
    ConfigurationError naming the variable, its value and an example."""
    raw = environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if math.isfinite(value) and (value > 0 or (zero is not None and value == 0)):
        return value
    example = f"use e.g. {default:g}" + (f", or 0 for {zero}" if zero is not None else "")
    kind = "a number of seconds" if zero is not None else "a positive number of seconds"
    raise ConfigurationError(f"{name}={raw!r} is not {kind}", example)


def _get_json(url: str) -> Any:
    last: Exception | None = None
    for _ in range(METADATA_ATTEMPTS):
        try:
            # The URL comes from ECS itself (a link-local http endpoint).
            with urllib.request.urlopen(url, timeout=METADATA_TIMEOUT) as resp:  # noqa: S310
                return json.loads(resp.read())
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError, OSError) as exc:
            last = exc
            time.sleep(0.2)
    raise ConfigurationError(
        f"cannot read the ECS task metadata at {url}: {last}",
        "the sidecar must run in an ECS task (Fargate platform 1.4 or later); "
        f"unset {METADATA_ENV} to run without task context",
    )


def discover(environ: Mapping[str, str]) -> TaskContext | None:
    """The task context from the metadata endpoint, or None outside ECS."""
    base = environ.get(METADATA_ENV)
    if not base:
        return None
    base = base.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ConfigurationError(f"{METADATA_ENV} is not an http URL: {base!r}")
    task = _get_json(f"{base}/task")
    me = _get_json(base)
    context = TaskContext.from_metadata(task, me)
    log.info(
        "ECS task context",
        extra=fields(
            task=context.task_arn, family=context.task_family, container=context.container_name
        ),
    )
    return context


def container_id(pid: int) -> str | None:
    """The container id in `pid`'s cgroup path, or None when it runs in no container."""
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            text = fh.read()
    except OSError:
        return None
    return container_id_from_cgroup(text)


def container_id_from_cgroup(text: str) -> str | None:
    """Parse /proc/PID/cgroup (v1 or v2) for a container id."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        parts = [p for p in path.split("/") if p]
        if not parts:
            continue
        last = parts[-1]
        scope = _SCOPE.match(last)
        if scope:
            return scope.group(1)
        if _HEX64.match(last):
            return last
        if len(parts) >= 3 and parts[0] == "ecs":
            return last  # Fargate: /ecs/<task id>/<task id>-<n>
    return None


def _short(cid: str) -> str:
    return cid[:12] if _HEX64.match(cid) else cid


class Heartbeat:
    """Turns cumulative counters into the heartbeat line: rates since the last beat, the
    tracer's own CPU (all its threads: os.times() user + system) as a share of one CPU."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._last_time = clock()
        self._last_cpu = _cpu_seconds()
        self._last_stops = 0

    def beat(self, tracer: Mapping[str, int], pipeline: Mapping[str, Any]) -> dict[str, Any]:
        now = self._clock()
        cpu = _cpu_seconds()
        elapsed = max(now - self._last_time, 1e-9)
        stops = int(tracer.get("stops", 0))
        line = {
            "stops_per_s": round((stops - self._last_stops) / elapsed, 1),
            "stops": stops,
            "syscall_stops": int(tracer.get("syscall_stops", 0)),
            "events": int(tracer.get("events", 0)),
            "blocked": int(tracer.get("blocked", 0)),
            "processes": int(tracer.get("processes", 0)),
            "threads": int(tracer.get("threads", 0)),
            "drops": int(pipeline.get("dropped", 0)),
            "cpu_percent": round(100.0 * (cpu - self._last_cpu) / elapsed, 1),
            "cpu_seconds": round(cpu, 3),
        }
        self._last_time, self._last_cpu, self._last_stops = now, cpu, stops
        return line


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system
