"""Which images run: ECS tasks and Lambda functions packaged as images, per account and region.

Amazon Inspector tells which ECR images are in use (`inUseCount`, `lastInUseAt`); this is
the same for the sweep, read where the images run rather than guessed from pulls:

- ECS: ListClusters -> ListTasks (desiredStatus RUNNING) -> DescribeTasks, in pages of
  `DESCRIBE_TASKS_MAX`. Each container of a task carries `imageDigest` once the agent has
  pulled it; a container without one (PENDING, or an older agent) names its image by tag,
  resolved through ECR (DescribeImages) when it is a repository of the swept registry.
- Lambda: ListFunctions -> GetFunction for `PackageType: Image`; `Code.ResolvedImageUri`
  pins the digest the function runs.

The result is keyed by digest: a digest is the content, whatever repository or tag it is
reached through. A platform image of a multi-arch index is in use when the index is (ECS
and Lambda record the digest they were given, which is the index digest for a manifest
list). `InUseIndex.complete` is False when a listing failed: in-use state is then unknown,
never "false" (an image must not look idle because an API call was refused).

Parsing is pure (`usage_from_tasks`, `usage_from_functions`); the AWS reads are in
`read_in_use`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from securityhub.aws import error_code
from securityhub.ecrref import parse_ecr_reference
from securityhub.logs import fields, get_logger

log = get_logger("check.inuse")

# DescribeTasks takes at most 100 task ARNs per call (ECS API reference, `tasks`).
DESCRIBE_TASKS_MAX = 100
# ListTasks and ListClusters return at most 100 items per page (ECS API reference).
LIST_PAGE_SIZE = 100
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Usage:
    """How one digest is in use in one account and region."""

    running_tasks: int = 0  # ECS tasks running it (Lambda functions are not tasks)
    users: tuple[str, ...] = ()  # "cluster/service", "cluster/family", "lambda/function"

    @property
    def in_use(self) -> bool:
        return self.running_tasks > 0 or bool(self.users)


@dataclass(frozen=True)
class InUseIndex:
    """Every digest in use in one account and region, as read at `observed_at`."""

    account_id: str
    region: str
    observed_at: datetime
    by_digest: Mapping[str, Usage] = field(default_factory=dict)
    complete: bool = True
    errors: tuple[str, ...] = ()

    def usage(self, digest: str, index_digest: str | None = None) -> Usage | None:
        """The usage of `digest` (or of the index it was reached through); None: unknown.

        An image nobody runs has `Usage()` (not in use) when the listing was complete.
        """
        found = self.by_digest.get(digest) or (
            self.by_digest.get(index_digest) if index_digest else None
        )
        if found is not None:
            return found
        return Usage() if self.complete else None

    def digests(self) -> frozenset[str]:
        return frozenset(self.by_digest)


@dataclass(frozen=True)
class ImageRef:
    """An image as a task or a function names it."""

    repository: str | None  # None: not an ECR image of this account and region
    tag: str | None
    digest: str | None


def parse_image(image: str, account_id: str, region: str) -> ImageRef:
    """`acct.dkr.ecr.region.amazonaws.com/repo:tag@sha256:...` -> its parts."""
    ecr = parse_ecr_reference(image or "")
    if ecr is None:
        digest = image.rsplit("@", 1)[1] if "@" in (image or "") else None
        return ImageRef(None, None, digest if digest and DIGEST_RE.fullmatch(digest) else None)
    ours = ecr.account_id == account_id and ecr.region == region
    return ImageRef(ecr.repository if ours else None, ecr.tag, ecr.digest)


def _user(cluster_arn: str, group: str | None, task_definition_arn: str | None) -> str:
    cluster = cluster_arn.rsplit("/", 1)[-1]
    if group and group.startswith("service:"):
        return f"{cluster}/{group.removeprefix('service:')}"
    family = (task_definition_arn or "").rsplit("/", 1)[-1].split(":", 1)[0]
    return f"{cluster}/{family or 'task'}"


Resolve = Callable[[str, str], str | None]  # (repository, tag) -> digest


def usage_from_tasks(
    tasks: Iterable[Mapping[str, Any]], account_id: str, region: str, resolve: Resolve
) -> dict[str, Usage]:
    """DescribeTasks' tasks -> digest -> Usage. A task counts once per digest it runs."""
    counts: dict[str, int] = defaultdict(int)
    users: dict[str, set[str]] = defaultdict(set)
    for task in tasks:
        # ListTasks(desiredStatus=RUNNING) lists tasks meant to run; one already told to stop
        # (desiredStatus STOPPED) or stopped is not in use any more.
        if "STOPPED" in (task.get("lastStatus"), task.get("desiredStatus")):
            continue
        seen: set[str] = set()
        for container in task.get("containers") or ():
            digest = container.get("imageDigest")
            if not (isinstance(digest, str) and DIGEST_RE.fullmatch(digest)):
                ref = parse_image(str(container.get("image") or ""), account_id, region)
                digest = ref.digest
                if digest is None and ref.repository:
                    digest = resolve(ref.repository, ref.tag or "latest")
            if digest:
                seen.add(digest)
        user = _user(
            str(task.get("clusterArn") or ""), task.get("group"), task.get("taskDefinitionArn")
        )
        for digest in seen:
            counts[digest] += 1
            users[digest].add(user)
    return {d: Usage(counts[d], tuple(sorted(users[d]))) for d in counts}


def usage_from_functions(
    functions: Iterable[Mapping[str, Any]], account_id: str, region: str, resolve: Resolve
) -> dict[str, Usage]:
    """GetFunction answers -> digest -> Usage ("lambda/<name>")."""
    users: dict[str, set[str]] = defaultdict(set)
    for answer in functions:
        code = answer.get("Code") or {}
        name = (answer.get("Configuration") or {}).get("FunctionName", "function")
        ref = parse_image(str(code.get("ResolvedImageUri") or ""), account_id, region)
        digest = ref.digest
        if digest is None:
            ref = parse_image(str(code.get("ImageUri") or ""), account_id, region)
            digest = ref.digest
            if digest is None and ref.repository:
                digest = resolve(ref.repository, ref.tag or "latest")
        if digest:
            users[digest].add(f"lambda/{name}")
    return {d: Usage(0, tuple(sorted(u))) for d, u in users.items()}


def merge(*parts: Mapping[str, Usage]) -> dict[str, Usage]:
    out: dict[str, Usage] = {}
    for part in parts:
        for digest, usage in part.items():
            known = out.get(digest, Usage())
            out[digest] = Usage(
                known.running_tasks + usage.running_tasks,
                tuple(sorted(set(known.users) | set(usage.users))),
            )
    return out


# --------------------------------------------------------------------------- AWS reads


class _Resolver:
    """Tag -> digest through ECR DescribeImages, once per (repository, tag) per run."""

    def __init__(self, ecr: Any, account_id: str) -> None:
        self.ecr = ecr
        self.account_id = account_id
        self.known: dict[tuple[str, str], str | None] = {}

    def __call__(self, repository: str, tag: str) -> str | None:
        key = (repository, tag)
        if key not in self.known:
            try:
                answer = self.ecr.describe_images(
                    registryId=self.account_id,
                    repositoryName=repository,
                    imageIds=[{"imageTag": tag}],
                )
                details = answer.get("imageDetails") or [{}]
                self.known[key] = details[0].get("imageDigest")
            except (ClientError, BotoCoreError) as exc:
                # A tag deleted since the task started: the task still runs, but by a digest
                # the registry no longer names; nothing to attach it to.
                log.info(
                    "cannot resolve a running image's tag",
                    extra=fields(repository=repository, tag=tag, error=error_code(exc)),
                )
                self.known[key] = None
        return self.known[key]


def _running_tasks(ecs: Any) -> Iterable[dict[str, Any]]:
    clusters = [
        arn
        for page in ecs.get_paginator("list_clusters").paginate(
            PaginationConfig={"PageSize": LIST_PAGE_SIZE}
        )
        for arn in page.get("clusterArns", ())
    ]
    for cluster in clusters:
        arns = [
            arn
            for page in ecs.get_paginator("list_tasks").paginate(
                cluster=cluster,
                desiredStatus="RUNNING",
                PaginationConfig={"PageSize": LIST_PAGE_SIZE},
            )
            for arn in page.get("taskArns", ())
        ]
        for start in range(0, len(arns), DESCRIBE_TASKS_MAX):
            chunk = arns[start : start + DESCRIBE_TASKS_MAX]
            yield from ecs.describe_tasks(cluster=cluster, tasks=chunk).get("tasks", ())


def _image_functions(awslambda: Any) -> Iterable[dict[str, Any]]:
    for page in awslambda.get_paginator("list_functions").paginate():
        for function in page.get("Functions", ()):
            if function.get("PackageType") == "Image":
                yield awslambda.get_function(FunctionName=function["FunctionName"])


def read_in_use(
    ecs: Any, awslambda: Any, ecr: Any, *, account_id: str, region: str, now: datetime
) -> InUseIndex:
    """Read ECS and Lambda in one account and region; a refused listing is recorded, and
    makes the index incomplete (unknown, not idle)."""
    resolve = _Resolver(ecr, account_id)
    parts: list[dict[str, Usage]] = []
    errors: list[str] = []
    try:
        parts.append(usage_from_tasks(list(_running_tasks(ecs)), account_id, region, resolve))
    except (ClientError, BotoCoreError) as exc:
        errors.append(f"ECS: {error_code(exc)}: {exc}")
    try:
        parts.append(
            usage_from_functions(list(_image_functions(awslambda)), account_id, region, resolve)
        )
    except (ClientError, BotoCoreError) as exc:
        errors.append(f"Lambda: {error_code(exc)}: {exc}")
    index = InUseIndex(account_id, region, now, merge(*parts), not errors, tuple(errors))
    log.info(
        "images in use",
        extra=fields(
            account=account_id, region=region, digests=len(index.by_digest), errors=len(errors)
        ),
    )
    return index


# ------------------------------------------------------------------------------ history

HISTORY_PREFIX = "inuse#"
# Keep the last-in-use time a year after the image was last seen running.
HISTORY_RETENTION_DAYS = 400
# BatchWriteItem: at most 25 put requests per call (DynamoDB Developer Guide, quotas).
BATCH_WRITE_ITEMS = 25


class InUseHistory:
    """When each digest was last seen in use, in the check's DynamoDB table.

    Items: pk = "inuse#<account>#<region>", sk = the digest, `last_in_use_at` (RFC 3339),
    `expires_at` (TTL). One Query per (account, region) reads them; each sweep rewrites the
    digests it saw in use, so `LastInUseAt` survives the night a task stops.
    """

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    @staticmethod
    def _pk(account_id: str, region: str) -> str:
        return f"{HISTORY_PREFIX}{account_id}#{region}"

    def last_seen(self, account_id: str, region: str) -> dict[str, datetime]:
        from securityhub.asff import parse_timestamp

        out: dict[str, datetime] = {}
        pages = self.client.get_paginator("query").paginate(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": self._pk(account_id, region)}},
        )
        for page in pages:
            for item in page.get("Items", ()):
                out[item["sk"]["S"]] = parse_timestamp(item["last_in_use_at"]["S"])
        return out

    def record(self, account_id: str, region: str, digests: Iterable[str], now: datetime) -> None:
        from datetime import timedelta

        from securityhub.asff import timestamp

        expires = str(int((now + timedelta(days=HISTORY_RETENTION_DAYS)).timestamp()))
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "pk": {"S": self._pk(account_id, region)},
                        "sk": {"S": digest},
                        "last_in_use_at": {"S": timestamp(now)},
                        "expires_at": {"N": expires},
                    }
                }
            }
            for digest in sorted(set(digests))
        ]
        for start in range(0, len(requests), BATCH_WRITE_ITEMS):
            pending = {self.table: requests[start : start + BATCH_WRITE_ITEMS]}
            for _ in range(5):  # unprocessed items are retried; the adaptive client backs off
                answer = self.client.batch_write_item(RequestItems=pending)
                pending = answer.get("UnprocessedItems") or {}
                if not pending:
                    break
