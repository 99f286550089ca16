"""The run's configuration from the environment (and flags that override it).

    CONTAINERSCAN_TABLE        DynamoDB table: the scan cache and Security Hub ledger
    CONTAINERSCAN_BUCKET       S3 bucket for run outputs (optional: no bucket, no S3 output)
    CONTAINERSCAN_PREFIX       key prefix in the bucket (default "containerscan/")
    CONTAINERSCAN_KMS_KEY_ID   SSE-KMS key for the outputs (default SSE-S3, AES256)
    CONTAINERSCAN_ROLE_NAME    the role to assume in accounts that name none
    CONTAINERSCAN_EXTERNAL_ID  its external id
    CONTAINERSCAN_CONCURRENCY  parallel scans (default from CPUs and memory)
    CONTAINERSCAN_IMAGE_TIMEOUT  seconds per image (default 900)
    CONTAINERSCAN_TAG_SCANNED  tag added to each scanned image (default: no tagging)
    CONTAINERSCAN_WORKDIR      where scanners write (default: a temporary directory)
    CONTAINERSCAN_FINDING_PREFIX  Security Hub Id prefix (default "containerscan/")
    CONTAINERSCAN_SCANNER      the scanner when the request names none (default: auto)
    CACHE_TTL_DAYS             scan cache lifetime (default 30)
    SCAN_TYPES                 default scan types (default "pkg,secret")
    SNS_TOPIC_ARN              where the per-run alert goes (optional)
    ALERT_THRESHOLD            lowest severity alerted on in `severity` mode (default HIGH)
    CONTAINERSCAN_ALERT        exploitable (default: KEV or EPSS in a running image) | severity
    CONTAINERSCAN_ALERT_EPSS   EPSS probability that counts as exploitable (default 0.1)
    CONTAINERSCAN_LOADED_WINDOW  seconds an image must have run under the sidecar before
                               "never loaded" is believed (default 3600)

A bad value is a `ValidationError` (exit code 2) listing every bad variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from check.scanner import DEFAULT_SCAN_TYPES
from securityhub.errors import ValidationError
from securityhub.findings import Severity

DEFAULT_CACHE_TTL_DAYS = 30
DEFAULT_IMAGE_TIMEOUT = 900.0
DEFAULT_PREFIX = "containerscan/"
# A QScanner run holds an image's layers in memory and on disk; about 1 GiB per scan is the
# working assumption behind the default pool size (the task's memory / 1 GiB, capped by CPUs).
MEMORY_PER_SCAN = 1 << 30
MAX_DEFAULT_CONCURRENCY = 16
# S3 bucket names: 3-63 characters, lowercase letters, digits, dots and hyphens.
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# DynamoDB table names: 3-255 characters of [a-zA-Z0-9_.-].
TABLE_RE = re.compile(r"[a-zA-Z0-9_.-]{3,255}")
SNS_ARN_RE = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[\w-]{1,256}")
# ECR image tags: 1-300 characters (botocore's ImageTag shape); a tag we write must also be
# pullable by Docker clients, whose grammar is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# Run ids name S3 keys: `20260101T020000Z-1a2b3c4d` from new_run_id() or the launcher.
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def default_concurrency() -> int:
    """min(CPUs, memory / MEMORY_PER_SCAN), at least 1, at most MAX_DEFAULT_CONCURRENCY.

    In ECS the cgroup limit is the task's memory, so it is preferred to the host's.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = _memory_limit()
    by_memory = max(1, memory // MEMORY_PER_SCAN) if memory else MAX_DEFAULT_CONCURRENCY
    return max(1, min(cpus or 1, by_memory, MAX_DEFAULT_CONCURRENCY))


def _memory_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


@dataclass(frozen=True)
class RunConfig:
    table: str | None = None
    bucket: str | None = None
    prefix: str = DEFAULT_PREFIX
    kms_key_id: str | None = None
    sns_topic_arn: str | None = None
    alert_threshold: Severity = Severity.HIGH
    alert_mode: str = "exploitable"  # check.alerts.ALERT_MODES
    alert_epss: float = 0.1  # securityhub.risk.DEFAULT_ALERT_EPSS
    loaded_window: float = 3600.0  # check.loaded.DEFAULT_WINDOW_SECONDS
    cache_ttl_days: int = DEFAULT_CACHE_TTL_DAYS
    scan_types: tuple[str, ...] = DEFAULT_SCAN_TYPES
    concurrency: int = 0  # 0: default_concurrency()
    image_timeout: float = DEFAULT_IMAGE_TIMEOUT
    tag_scanned: str | None = None
    role_name: str | None = None
    external_id: str | None = None
    workdir: Path | None = None
    output_dir: Path | None = None
    finding_prefix: str = DEFAULT_PREFIX
    scanner: str | None = None
    # Set by the launcher, so that GET /scans/{runId} finds this task's status.json.
    run_id: str | None = None

    @property
    def pool_size(self) -> int:
        return self.concurrency or default_concurrency()

    def with_overrides(self, **changes: Any) -> RunConfig:
        """A copy with the flags that were given (None means not given)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RunConfig:
        env = os.environ if environ is None else environ
        problems: list[tuple[str, str]] = []

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def number(name: str, default: float, low: float, high: float) -> float:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                problems.append((name, f"expected a number, got {raw!r}"))
                return default
            if not low <= value <= high:
                problems.append((name, f"must be between {low:g} and {high:g}, got {raw}"))
                return default
            return value

        table, bucket, topic = text("CONTAINERSCAN_TABLE"), text("CONTAINERSCAN_BUCKET"), None
        if table and not TABLE_RE.fullmatch(table):
            problems.append(("CONTAINERSCAN_TABLE", f"{table!r} is not a DynamoDB table name"))
        if bucket and not BUCKET_RE.fullmatch(bucket):
            problems.append(("CONTAINERSCAN_BUCKET", f"{bucket!r} is not an S3 bucket name"))
        if (topic := text("SNS_TOPIC_ARN")) and not SNS_ARN_RE.fullmatch(topic):
            problems.append(("SNS_TOPIC_ARN", f"{topic!r} is not an SNS topic ARN"))
        prefix = env.get("CONTAINERSCAN_PREFIX", DEFAULT_PREFIX)
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        threshold = Severity.HIGH
        if raw := text("ALERT_THRESHOLD"):
            try:
                threshold = Severity.parse(raw)
            except ValueError as exc:
                problems.append(("ALERT_THRESHOLD", str(exc)))
        alert_mode = (text("CONTAINERSCAN_ALERT") or "exploitable").lower()
        if alert_mode not in ("exploitable", "severity"):
            problems.append(("CONTAINERSCAN_ALERT", f"{alert_mode!r}: use exploitable or severity"))
        scan_types: tuple[str, ...] = DEFAULT_SCAN_TYPES
        if raw := text("SCAN_TYPES"):
            scan_types = tuple(p.strip() for p in raw.split(",") if p.strip())
        tag = text("CONTAINERSCAN_TAG_SCANNED")
        if tag and not TAG_RE.fullmatch(tag):
            problems.append(("CONTAINERSCAN_TAG_SCANNED", f"{tag!r} is not a Docker tag"))
        finding_prefix = text("CONTAINERSCAN_FINDING_PREFIX") or DEFAULT_PREFIX
        if not finding_prefix.endswith("/"):
            problems.append(("CONTAINERSCAN_FINDING_PREFIX", "must end with '/'"))
        workdir = text("CONTAINERSCAN_WORKDIR")
        run_id = text("CONTAINERSCAN_RUN_ID")
        if run_id and not RUN_ID_RE.fullmatch(run_id):
            problems.append(
                ("CONTAINERSCAN_RUN_ID", f"{run_id!r} is not a run id (letters, digits, '-', '_')")
            )
        config = cls(
            table=table,
            bucket=bucket,
            prefix=prefix,
            kms_key_id=text("CONTAINERSCAN_KMS_KEY_ID"),
            sns_topic_arn=topic,
            alert_threshold=threshold,
            alert_mode=alert_mode,
            alert_epss=number("CONTAINERSCAN_ALERT_EPSS", 0.1, 0.0, 1.0),
            loaded_window=number("CONTAINERSCAN_LOADED_WINDOW", 3600.0, 0, 30 * 86400),
            cache_ttl_days=int(number("CACHE_TTL_DAYS", DEFAULT_CACHE_TTL_DAYS, 1, 3650)),
            scan_types=scan_types,
            concurrency=int(number("CONTAINERSCAN_CONCURRENCY", 0, 0, 256)),
            image_timeout=number("CONTAINERSCAN_IMAGE_TIMEOUT", DEFAULT_IMAGE_TIMEOUT, 1, 86400),
            tag_scanned=tag,
            role_name=text("CONTAINERSCAN_ROLE_NAME"),
            external_id=text("CONTAINERSCAN_EXTERNAL_ID"),
            workdir=Path(workdir) if workdir else None,
            finding_prefix=finding_prefix,
            scanner=text("CONTAINERSCAN_SCANNER"),
            run_id=run_id,
        )
        if problems:
            raise ValidationError(
                "the configuration in the environment is invalid",
                problems,
                "fix or unset the variables listed above",
            )
        return config
