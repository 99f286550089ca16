"""The sweep: from a validated ScanRequest to Security Hub, S3 and an alert.

    for each (account, region): one ECR client (the account's role assumed if needed)
      -> repositories (paginated) -> include/exclude globs, shard
      -> images (paginated) -> index platforms -> selection
    -> de-duplicate by digest (one scan per digest per run, whatever the tags/repositories)
    -> cache lookup (BatchGetItem)            hit: stored findings, re-bound to each image
    -> scan the misses in a bounded pool      per-image timeout, failures recorded per image
    -> per (account, region): publish observations + repository scopes, in the owner account
    -> tags, outputs (status.json, results, raw reports), one SNS alert

Correlation rules this module keeps (DESIGN.md): an image whose scan failed is NOT passed
to `publish`, so its findings stay untouched; a repository scope (the digests present) is
passed only for repositories whose image list was read completely, so findings of deleted
images are archived there and nowhere else; an account or region that could not be
enumerated contributes nothing and touches nothing. A repository deleted entirely is found
through the ledger's directory of repositories: when the repository listing of an (account,
region) completed, each known repository absent from it that this request would have
selected (globs, shard) is passed as a scope with no digests, so its findings are archived;
a narrow run never names what it did not look at.

New findings (the alert, `new_findings` in the status) are the ones this run created or
reactivated in Security Hub (`PublishSummary.new_ids`), not a difference against a cached
scan result: a rescan after a scanner upgrade or an expired cache alerts on nothing old.

Exit codes: 0 done; 3 partial (an image, a repository, a region or an import failed);
4 findings at or above `--fail-on`; 2 and 1 come from exceptions (bad request, fatal).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

from check.alerts import build_alert, send_alert
from check.cache import CachedResult, CacheKey, ScanCache
from check.config import RunConfig
from check.ecr import EcrRegistry, ImageInfo, expand_indexes, selectable
from check.exploits import ExploitSignals, annotate_all, for_run
from check.outputs import RunOutputs, image_dir
from check.progress import Progress
from check.request import AccountSpec, ScanRequest
from check.scanner import KINDS_BY_SCAN_TYPE, RegistryAuth, Scanner, ScanTarget
from check.selection import select_images, select_repositories
from check.serialize import findings_to_dicts, rebind
from check.tagging import TagOutcome, tag_image
from securityhub.aws import AccountTarget, SessionFactory, endpoint_problem
from securityhub.errors import (
    EXIT_OK,
    EXIT_PARTIAL,
    AwsError,
    ConfigurationError,
    ContainerscanError,
)
from securityhub.findings import Observation, ScannerInfo, Severity
from securityhub.logs import fields, get_logger

log = get_logger("check.sweep")

EXIT_FINDINGS = 4  # --fail-on: findings at or above the threshold
# Repositories are published as soon as all their images are done, overlapping with the
# scans still running: at once when the publisher is idle, else in a group once it holds
# this many findings (five full BatchImportFindings calls of 100 when all are new) or this
# many repositories.
PUBLISH_BATCH_FINDINGS = 500
PUBLISH_BATCH_REPOSITORIES = 50
MAX_REPORTED_ERRORS = 50
# Repositories whose images are listed in parallel within one account and region.
ENUMERATION_THREADS = 8
# Scan results are written to the cache in batches of this many (one BatchWriteItem).
CACHE_FLUSH = 25


class Publisher(Protocol):
    """`securityhub.hub.SecurityHubPublisher`, as the sweep uses it."""

    def publish(
        self,
        region: str,
        observations: Sequence[Observation],
        *,
        repositories: Sequence[Any] = (),
        target: AccountTarget | None = None,
        exists: Callable[[Any, Sequence[str]], Any] | None = None,
    ) -> Any: ...

    def known_repositories(self, account_id: str, region: str) -> frozenset[str]: ...


# ------------------------------------------------------------------------------- data


@dataclass
class RepositoryPlan:
    name: str
    immutable: bool
    present: frozenset[str]  # every digest DescribeImages listed: the scope for archiving
    images: list[ImageInfo]  # selected, indexes expanded
    complete: bool = True
    vanished: bool = False  # known to the ledger, absent from a complete listing
    listed_at: datetime | None = None  # when its listing began: what absence can prove


@dataclass
class RegionPlan:
    account_id: str
    region: str
    target: AccountTarget | None
    registry: EcrRegistry | None
    repositories: list[RepositoryPlan] = field(default_factory=list)
    error: str | None = None
    estate: Any = None  # check.priority.Estate: what runs here (None: a dry run without it)


@dataclass
class ImageRecord:
    """One (account, region, repository, digest) of this run and what happened to it."""

    plan: RegionPlan
    repository: RepositoryPlan
    image: ImageInfo
    outcome: str = "selected"  # selected | scanned | cached | failed
    error: str | None = None
    findings: tuple[Any, ...] = ()
    new_findings: tuple[Any, ...] = ()
    changed_findings: tuple[Any, ...] = ()  # new, or updated (content changed) by this run
    kinds: frozenset[str] = frozenset()
    duration_s: float = 0.0
    tag: TagOutcome | None = None
    rematched: bool = False  # a stored inventory re-matched instead of a scan (reevaluate)
    cached_at: datetime | None = None  # a cache hit: when the reused result was stored
    notes: tuple[str, ...] = ()  # what the scanner said about this scan (skipped results...)

    @property
    def resource(self) -> Any:
        return self.image.resource(self.plan.account_id, self.plan.region)

    def as_dict(self) -> dict[str, Any]:
        severities = Counter(f.severity.name for f in self.findings)
        doc = {
            "account_id": self.plan.account_id,
            "region": self.plan.region,
            "repository": self.image.repository,
            "digest": self.image.digest,
            "tags": list(self.image.tags),
            "platform": self.image.platform,
            "index_digest": self.image.index_digest,
            "outcome": self.outcome,
            "error": self.error,
            "findings": len(self.findings),
            "severities": dict(severities),
            "new_findings": len(self.new_findings),
            "duration_s": round(self.duration_s, 3),
            "cached_at": self.cached_at.isoformat() if self.cached_at else None,
            "tagging": self.tag.outcome if self.tag else None,
            "rematched": self.rematched or None,
            "notes": list(self.notes),
        }
        return {k: v for k, v in doc.items() if v not in (None, [], {})}


@dataclass
class RunStatus:
    run_id: str
    started_at: datetime
    request: ScanRequest
    scanner: ScannerInfo | None = None
    finished_at: datetime | None = None
    records: list[ImageRecord] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    security_hub: dict[str, Any] = field(default_factory=dict)
    tagging: list[TagOutcome] = field(default_factory=list)
    alert: dict[str, Any] | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    unique_digests: int = 0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase
    corrupt_cache: int = 0  # unreadable scan cache items (their images scanned again)

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _by_repository: dict[int, list[ImageRecord]] = field(default_factory=dict, repr=False)

    def records_of(self, repository: RepositoryPlan) -> list[ImageRecord]:
        """The records of one repository (indexed on first use, after enumeration)."""
        with self._lock:
            if not self._by_repository and self.records:
                index: dict[int, list[ImageRecord]] = defaultdict(list)
                for record in self.records:
                    index[id(record.repository)].append(record)
                self._by_repository = dict(index)
        return self._by_repository.get(id(repository), [])

    def add_error(self, scope: str, error: str) -> None:
        with self._lock:
            self.errors.append({"scope": scope, "error": error})

    def add_summary(self, scope: str, doc: Mapping[str, Any]) -> None:
        """Sum the counts of several publish calls of one scope; keep their errors."""
        with self._lock:
            total = self.security_hub.setdefault(scope, {})
            for key, value in doc.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    total[key] = total.get(key, 0) + value
                elif isinstance(value, list | tuple):
                    total[key] = [*total.get(key, []), *value][:MAX_REPORTED_ERRORS]
                else:
                    total[key] = value

    @property
    def failed(self) -> list[ImageRecord]:
        return [r for r in self.records if r.outcome == "failed"]

    @property
    def exit_code(self) -> int:
        if self.request.fail_on is not None and any(
            f.severity >= self.request.fail_on for r in self.records for f in r.findings
        ):
            return EXIT_FINDINGS
        if self.failed or self.errors:
            return EXIT_PARTIAL
        return EXIT_OK

    def counts(self) -> dict[str, Any]:
        outcomes = Counter(r.outcome for r in self.records)
        severities: Counter[str] = Counter()
        for record in self.records:
            severities.update(f.severity.name for f in record.findings)
        return {
            "images": len(self.records),
            "unique_digests": self.unique_digests,
            # "selected" images were never scanned (a dry run, or a run that stopped early)
            "not_scanned": outcomes.get("selected", 0),
            **{k: outcomes.get(k, 0) for k in ("scanned", "cached", "failed")},
            "rematched": sum(1 for r in self.records if r.rematched),
            "findings": sum(len(r.findings) for r in self.records),
            "new_findings": sum(len(r.new_findings) for r in self.records),
            # unreadable state met and worked around: cache items (rescanned), ledger items
            # (their findings re-imported as unknown)
            "corrupt_state": {
                "cache": self.corrupt_cache,
                "ledger": sum(int(s.get("corrupt", 0)) for s in self.security_hub.values()),
            },
            "severities": {
                s.name: severities[s.name] for s in reversed(Severity) if severities[s.name]
            },
        }

    def as_dict(self) -> dict[str, Any]:
        finished = self.finished_at or datetime.now(UTC)
        code = self.exit_code
        return {
            "run_id": self.run_id,
            "status": {EXIT_OK: "done", EXIT_PARTIAL: "partial", EXIT_FINDINGS: "findings"}.get(
                code, "failed"
            ),
            "exit_code": code,
            "started_at": self.started_at.isoformat(),
            "finished_at": finished.isoformat(),
            "duration_s": round((finished - self.started_at).total_seconds(), 3),
            "phases": self.phases,
            "request": self.request.as_dict(),
            "scanner": asdict(self.scanner) if self.scanner else None,
            "counts": self.counts(),
            "errors": self.errors,
            "security_hub": self.security_hub,
            "tagging": Counter(t.outcome for t in self.tagging) if self.tagging else {},
            "tagging_problems": [
                asdict(t) for t in self.tagging if t.outcome in ("immutable", "failed")
            ],
            "alert": self.alert,
            "outputs": self.outputs,
            "images": [r.as_dict() for r in self.records],
        }


def new_run_id(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


# ------------------------------------------------------------------------------ sweep


class Sweep:
    """One run. Everything it talks to is passed in; `run()` does the work."""

    def __init__(
        self,
        request: ScanRequest,
        config: RunConfig,
        sessions: SessionFactory,
        *,
        scanner: Scanner | None,
        publisher: Publisher | None,
        cache: ScanCache | None = None,
        outputs: RunOutputs | None = None,
        sns: Any | None = None,
        progress_stream: TextIO | None = None,
        clock: Callable[[], datetime] | None = None,
        reevaluator: Any = None,
        loaded: Any = None,
    ) -> None:
        self.request = request
        self.reevaluator = reevaluator  # check.reevaluate.Reevaluator
        self.loaded = loaded  # check.loaded.LoadedJoin
        self.config = config
        self.sessions = sessions
        self.scanner = scanner
        self.publisher = publisher
        self.cache = cache
        self.outputs = outputs or RunOutputs()
        self.sns = sns
        self.progress_stream = progress_stream
        self.clock = clock or (lambda: datetime.now(UTC))
        self._auth: dict[tuple[str, str], RegistryAuth | AwsError] = {}
        self._auth_lock = threading.Lock()
        self._enumeration_errors: list[dict[str, str]] = []
        self._pending: list[tuple[CacheKey, ScannerInfo, Sequence[Any], str | None]] = []
        self._pending_lock = threading.Lock()
        self.exploit_signals: ExploitSignals | None = None

    # ---------------------------------------------------------------- enumeration

    def _targets(self) -> list[tuple[AccountSpec | None, AccountTarget | None]]:
        if not self.request.accounts:
            return [(None, None)]
        own = self._own_account()
        out: list[tuple[AccountSpec | None, AccountTarget | None]] = []
        for spec in self.request.accounts:
            role = spec.role_arn
            if role is None and self.config.role_name and spec.account_id != own:
                role = f"arn:aws:iam::{spec.account_id}:role/{self.config.role_name}"
            external_id = spec.external_id or (self.config.external_id if role else None)
            target = (
                None
                if spec.account_id == own and spec.role_arn is None
                else (AccountTarget(spec.account_id, role, external_id))
            )
            out.append((spec, target))
        return out

    def _own_account(self) -> str | None:
        try:
            return self.sessions.account_id(None)
        except AwsError as exc:
            log.warning("cannot identify the caller's account", extra=fields(error=exc.message))
            return None

    def enumerate(self) -> list[RegionPlan]:
        regions = self.request.regions or (self.sessions.region(),)
        plans = []
        for spec, target in self._targets():
            for region in regions:
                plans.append(self._enumerate_region(spec, target, region))
        return plans

    def _enumerate_region(
        self, spec: AccountSpec | None, target: AccountTarget | None, region: str
    ) -> RegionPlan:
        account_id = spec.account_id if spec else "self"
        plan = RegionPlan(account_id, region, target, None)
        try:
            if target is not None and target.role_arn is None:
                own = self._own_account()
                raise ConfigurationError(
                    f"account {account_id} is not the caller's account ({own}) and no role is set",
                    "give the account a role in the request or set CONTAINERSCAN_ROLE_NAME",
                )
            account_id = self.sessions.account_id(target)
            if spec and account_id != spec.account_id:
                raise ConfigurationError(
                    f"the session for {spec.account_id} acts in account {account_id}",
                    "check the role ARN in the request",
                )
            plan.account_id = account_id
            client = self.sessions.client("ecr", region, target)
            plan.registry = registry = EcrRegistry(client, account_id, region)
            plan.estate = self._estate(account_id, region, target, client)
            exact = [g for g in self.request.repositories if not any(c in g for c in "*?[")]
            names = exact if len(exact) == len(self.request.repositories) else None
            listed_at = self.clock()
            repositories = registry.repositories(names)
        except ContainerscanError as exc:
            unreachable = endpoint_problem(exc)
            if unreachable is not None:  # every region would fail alike: a configuration error
                raise unreachable from exc
            plan.error = exc.message
            log.error(
                "cannot enumerate",
                extra=fields(account=account_id, region=region, error=exc.message),
            )
            return plan
        wanted = set(
            select_repositories(
                (r.name for r in repositories),
                self.request.repositories,
                self.request.exclude,
                account_id=account_id,
                region=region,
                shard=self.request.shard,
            )
        )
        chosen = [r for r in repositories if r.name in wanted]
        for name in self._vanished(account_id, region, {r.name for r in repositories}):
            plan.repositories.append(
                RepositoryPlan(
                    name, False, frozenset(), [], complete=True, vanished=True, listed_at=listed_at
                )
            )
        # DescribeImages is latency-bound (one call per repository and 1,000 images); a few
        # threads hide the round trips. botocore's adaptive retry absorbs throttling.
        with ThreadPoolExecutor(max_workers=ENUMERATION_THREADS, thread_name_prefix="ecr") as pool:
            plans = pool.map(
                lambda r: self._enumerate_repository(registry, r, plan.estate), chosen
            )
            for repository, (repo_plan, error) in zip(chosen, plans, strict=True):
                plan.repositories.append(repo_plan)
                if error:
                    self._enumeration_errors.append(
                        {"scope": f"{account_id}/{region}/{repository.name}", "error": error}
                    )
        log.info(
            "enumerated",
            extra=fields(
                account=account_id,
                region=region,
                repositories=len(plan.repositories),
                vanished=sum(1 for r in plan.repositories if r.vanished),
                images=sum(len(r.images) for r in plan.repositories),
            ),
        )
        return plan

    def _estate(self, account_id: str, region: str, target: Any, ecr: Any) -> Any:
        """What runs in (account, region): ECS tasks and Lambda images (check.priority)."""
        from check.inuse import InUseHistory
        from check.priority import read_estate

        history = None
        if self.config.table and not self.request.dry_run:
            history = InUseHistory(self.sessions.client("dynamodb"), self.config.table)
        estate = read_estate(
            self.sessions,
            target,
            ecr,
            region=region,
            account_id=account_id,
            now=self.clock(),
            history=history,
        )
        estate.loaded = self.loaded
        for error in estate.errors:
            self._enumeration_errors.append({"scope": f"{account_id}/{region}", "error": error})
        return estate

    def _vanished(self, account_id: str, region: str, listed: set[str]) -> list[str]:
        """Repositories with findings in the ledger that the complete listing no longer has,
        among those this request selects (the same globs and shard as listed ones)."""
        if self.publisher is None:  # a dry run: nothing is archived
            return []
        try:
            known = self.publisher.known_repositories(account_id, region)
        except AwsError as exc:
            # Cannot tell which repositories were deleted: their findings stay (and the run
            # says so). Everything listed is still swept.
            self._enumeration_errors.append(
                {"scope": f"{account_id}/{region}", "error": f"ledger: {exc.message}"}
            )
            return []
        gone = select_repositories(
            known - listed,
            self.request.repositories,
            self.request.exclude,
            account_id=account_id,
            region=region,
            shard=self.request.shard,
        )
        for name in gone:
            log.info(
                "repository deleted; its findings are archived",
                extra=fields(account=account_id, region=region, repository=name),
            )
        return gone

    def _enumerate_repository(
        self, registry: EcrRegistry, repository: Any, estate: Any = None
    ) -> tuple[RepositoryPlan, str | None]:
        listed_at = self.clock()
        try:
            images = registry.images(repository.name)
            platforms = registry.platforms(repository.name, images)
        except AwsError as exc:
            # Not fully enumerated: no scope, so nothing in it can be archived.
            empty = RepositoryPlan(
                repository.name, repository.immutable, frozenset(), [], complete=False
            )
            return empty, exc.message
        candidates = selectable(images, platforms)
        # A digest named explicitly (scan-image, a push event) is scanned even when it is a
        # platform image of an index, which is otherwise reached only through the index.
        named = {d for d in self.request.selection.images if d.startswith("sha256:")}
        if named:
            have = {i.digest for i in candidates}
            candidates += [i for i in images if i.digest in named - have and not i.is_artifact]
        in_use = None
        if self.request.selection.in_use_only and estate is not None:
            in_use = estate.running_digests(platforms)
        chosen = select_images(candidates, self.request.selection, in_use)
        return (
            RepositoryPlan(
                repository.name,
                repository.immutable,
                frozenset(i.digest for i in images),
                expand_indexes(images, chosen, platforms),
                listed_at=listed_at,
            ),
            None,
        )

    # ----------------------------------------------------------------------- run

    def run(self) -> RunStatus:
        if not self.request.dry_run:
            # Configuration problems stop the run before any work (exit code 2).
            if self.scanner is None:
                raise ConfigurationError(
                    "no scanner is configured", "pass --scanner or install qscanner"
                )
            if self.publisher is None:
                raise ConfigurationError(
                    "CONTAINERSCAN_TABLE is not set: the Security Hub ledger lives there",
                    "set CONTAINERSCAN_TABLE (containerscan init creates it), or use --dry-run",
                )
        started = self.clock()
        status = RunStatus(self.config.run_id or new_run_id(started), started, self.request)
        mark = time.monotonic()

        def phase(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            status.phases[name] = round(now - mark, 3)
            mark = now

        self._enumeration_errors = []
        plans = self.enumerate()
        status.errors.extend(self._enumeration_errors)
        for plan in plans:
            if plan.error:
                status.errors.append(
                    {"scope": f"{plan.account_id}/{plan.region}", "error": plan.error}
                )
            for repository in plan.repositories:
                for image in repository.images:
                    status.records.append(ImageRecord(plan, repository, image))
        by_digest: dict[str, list[ImageRecord]] = defaultdict(list)
        for record in status.records:
            by_digest[record.image.digest].append(record)
        status.unique_digests = len(by_digest)
        log.info(
            "selected",
            extra=fields(run_id=status.run_id, images=len(status.records), digests=len(by_digest)),
        )
        phase("enumerate_s")
        if self.request.dry_run:
            status.finished_at = self.clock()
            return status
        assert self.scanner is not None
        # Issue 10: KEV / EPSS exploit signals on every vulnerability finding (check.exploits).
        self.exploit_signals = for_run(os.environ, lambda: self.sessions.client("s3"))
        status.scanner = ScannerInfo(self.scanner.name, self._scanner_version())
        publishing = _Publishing(self, status, plans)
        try:
            self._scan_all(status, by_digest, publishing.done)
            phase("scan_s")
        finally:
            publishing.finish()
        phase("publish_s")  # what was left to publish once the last scan ended
        self._tag(status)
        self._alert(status)
        phase("tag_alert_s")
        status.finished_at = self.clock()
        self._write_status(status)
        phase("status_s")
        counts = status.counts()
        log.info(
            "sweep finished",
            extra=fields(
                run_id=status.run_id,
                exit_code=status.exit_code,
                errors=len(status.errors),
                **{k: v for k, v in counts.items() if k != "severities"},
            ),
        )
        return status

    def _scanner_version(self) -> str:
        assert self.scanner is not None
        try:
            return self.scanner.version()
        except ContainerscanError as exc:
            log.warning(
                "scanner version unknown; the cache is not used", extra=fields(error=exc.message)
            )
            self.cache = None
            return "unknown"

    def _key(self, digest: str, status: RunStatus) -> CacheKey:
        assert status.scanner is not None
        return CacheKey(
            digest, status.scanner.name, status.scanner.version, tuple(self.request.scan_types)
        )

    def _scan_all(
        self,
        status: RunStatus,
        by_digest: Mapping[str, list[ImageRecord]],
        on_done: Callable[[list[ImageRecord]], None] = lambda records: None,
    ) -> None:
        cached: dict[CacheKey, CachedResult] = {}
        if self.cache is not None and by_digest:
            try:
                cached = self.cache.get_many([self._key(d, status) for d in by_digest])
            except AwsError as exc:
                log.warning(
                    "scan cache unavailable; scanning everything", extra=fields(error=exc.message)
                )
        now = self.clock()
        progress = Progress(len(by_digest), stream=self.progress_stream)
        workroot = self.config.workdir or Path(tempfile.mkdtemp(prefix="containerscan-"))
        try:
            with ThreadPoolExecutor(
                max_workers=max(1, self.config.pool_size), thread_name_prefix="scan"
            ) as pool:
                futures = {}
                for digest, records in by_digest.items():
                    hit = cached.get(self._key(digest, status))
                    if hit is not None and hit.fresh(now) and not self.request.force:
                        # In the pool too: writing its results is an S3 round trip.
                        future = pool.submit(self._use_cached, records, hit, status, workroot)
                    else:
                        future = pool.submit(self._rematch_or_scan, records, workroot, status)
                    futures[future] = records
                for future in as_completed(futures):
                    progress.advance(future.result())
                    on_done(futures[future])
                    self._flush_cache(CACHE_FLUSH)
        finally:
            self._flush_cache(1)
            progress.finish()
            if self.cache is not None:
                status.corrupt_cache = len(self.cache.unreadable)
            if self.config.workdir is None:
                shutil.rmtree(workroot, ignore_errors=True)

    def _use_cached(
        self, records: list[ImageRecord], hit: CachedResult, status: RunStatus, workroot: Path
    ) -> str:
        """A cache hit: the stored findings, re-bound to each image holding the digest.

        Stored findings that do not bind (a corrupt item) make it a miss: the digest is
        scanned, which overwrites the item.
        """
        try:
            bound = [hit.findings_for(record.resource) for record in records]
        except (ContainerscanError, KeyError, ValueError, TypeError, AttributeError) as exc:
            assert self.cache is not None
            self.cache.unreadable_item(hit.key, f"findings unreadable: {type(exc).__name__}")
            return self._scan_one(records, workroot, status)
        for record, findings in zip(records, bound, strict=True):
            record.outcome = "cached"
            record.findings = annotate_all(findings, self.exploit_signals)
            record.kinds = _kinds(hit.scan_types)
            record.cached_at = hit.stored_at
        # No results.json: the findings are the cached result's, written by the run that
        # scanned the digest; an unchanged night writes no object per image (status.json
        # says which images were cached, and when).
        return "cached"

    def _rematch_or_scan(
        self, records: list[ImageRecord], workroot: Path, status: RunStatus
    ) -> str:
        """A stored inventory re-matched (no registry call), else a scan (check.reevaluate)."""
        first = records[0]
        result = None
        if self.reevaluator is not None and status.scanner is not None:
            try:
                result = self.reevaluator.rematch(
                    first.image.digest, first.resource, status.scanner.version,
                    self.request.scan_types,
                )  # fmt: skip
            except Exception:
                # The unit of work: a bug in re-evaluation costs this image a scan, no more.
                log.exception(
                    "re-evaluation failed; scanning", extra=fields(digest=first.image.digest)
                )
                result = None
        if result is None:
            return self._scan_one(records, workroot, status)
        for record in records:
            record.outcome = "cached"
            record.rematched = True
            record.kinds = result.kinds
            record.findings = annotate_all(
                rebind(result.findings, record.resource), self.exploit_signals
            )
        if self.cache is not None:
            self._to_cache(self._key(first.image.digest, status), result.scanner, result.findings,
                           None)  # fmt: skip
        self._write_results(
            status, records, result.scanner, result.scan_types, result.findings, notes=result.notes
        )
        return "cached"

    def _to_cache(
        self, key: CacheKey, scanner: ScannerInfo, findings: Sequence[Any], policy: str | None
    ) -> None:
        with self._pending_lock:
            self._pending.append((key, scanner, findings, policy))

    def _flush_cache(self, at_least: int) -> None:
        """Write pending results in batches (BatchWriteItem), from the main thread."""
        with self._pending_lock:
            if self.cache is None or len(self._pending) < at_least:
                return
            pending, self._pending = self._pending, []
        self.cache.put_many(pending)

    def _registry_auth(self, plan: RegionPlan) -> RegistryAuth | None:
        key = (plan.account_id, plan.region)
        with self._auth_lock:
            if key not in self._auth:
                assert plan.registry is not None
                try:
                    self._auth[key] = plan.registry.auth()
                except AwsError as exc:
                    self._auth[key] = exc
            found = self._auth[key]
        if isinstance(found, AwsError):
            raise found
        return found

    def _scan_one(self, records: list[ImageRecord], workroot: Path, status: RunStatus) -> str:
        """Scan one digest for every record holding it; returns the progress outcome."""
        assert self.scanner is not None
        first = records[0]
        digest = first.image.digest
        workdir = workroot / digest.replace(":", "-")
        started = time.monotonic()
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            auth = self._registry_auth(first.plan)
            target = ScanTarget(
                image=first.resource, scan_types=tuple(self.request.scan_types), auth=auth
            )
            result = self.scanner.scan(target, workdir, self.config.image_timeout)
        except ContainerscanError as exc:
            return self._failed(records, exc.message, started, digest)
        except OSError as exc:
            return self._failed(records, f"{type(exc).__name__}: {exc}", started, digest)
        except Exception as exc:
            # The unit of work: a bug in one scanner or parser must cost one image, not the
            # sweep (DESIGN: "A scanner failure affects only its image"). Logged with the
            # traceback so the bug is found.
            log.exception("scanner raised an unexpected error", extra=fields(digest=digest))
            return self._failed(
                records, f"internal error: {type(exc).__name__}: {exc}", started, digest
            )
        duration = time.monotonic() - started
        if self.reevaluator is not None:
            self.reevaluator.keep(result, digest)  # its inventory, for re-evaluation
        kinds = result.kinds
        for record in records:
            record.outcome = "scanned"
            record.duration_s = duration
            record.kinds = kinds
            record.notes = result.notes
            record.findings = annotate_all(
                rebind(result.findings, record.resource), self.exploit_signals
            )
        if self.cache is not None:
            self._to_cache(
                self._key(digest, status), result.scanner, result.findings, result.policy_result
            )
        self._write_results(
            status, records, result.scanner, result.scan_types, result.findings,
            policy_result=result.policy_result, notes=result.notes, raw_files=result.raw_files,
        )  # fmt: skip
        log.info(
            "scanned",
            extra=fields(
                digest=digest,
                repository=first.image.repository,
                findings=len(result.findings),
                duration_s=round(duration, 2),
            ),
        )
        return "scanned"

    def _write_results(
        self,
        status: RunStatus,
        records: Sequence[ImageRecord],
        scanner: ScannerInfo,
        scan_types: Sequence[str],
        findings: Sequence[Any],
        *,
        policy_result: str | None = None,
        notes: Sequence[str] = (),
        raw_files: Sequence[Path] = (),
        cached_at: datetime | None = None,
    ) -> None:
        """runs/<id>/images/<digest>/results.json (+ raw/ for fresh scans)."""
        if not self.outputs.enabled:
            return
        digest = records[0].image.digest
        base = image_dir(status.run_id, digest)
        self.outputs.write_json(
            f"{base}/results.json",
            {
                "digest": digest,
                "scanner": asdict(scanner),
                "scan_types": list(scan_types),
                "policy_result": policy_result,
                "notes": list(notes),
                "cached_at": cached_at.isoformat() if cached_at else None,
                "images": [
                    {
                        "account_id": r.plan.account_id,
                        "region": r.plan.region,
                        "repository": r.image.repository,
                        "tags": list(r.image.tags),
                        "platform": r.image.platform,
                    }
                    for r in records
                ],
                "findings": findings_to_dicts(findings),
            },
        )
        for path in raw_files:
            self.outputs.write_file(f"{base}/raw/{Path(path).name}", Path(path))
        plan, image = records[0].plan, records[0].image
        registry = f"{plan.account_id}.dkr.ecr.{plan.region}.amazonaws.com"
        self.outputs.write_sbom(base, raw_files, image_name=f"{registry}/{image.repository}",
                                digest=digest, tool_version=scanner.version)

    def _failed(self, records: list[ImageRecord], error: str, started: float, digest: str) -> str:
        duration = time.monotonic() - started
        for record in records:
            record.outcome = "failed"
            record.error = error
            record.duration_s = duration
        log.warning(
            "scan failed; the image's findings stay untouched",
            extra=fields(digest=digest, repository=records[0].image.repository, error=error),
        )
        return "failed"

    # ------------------------------------------------------------------- publish

    def _publish_batch(
        self, status: RunStatus, plan: RegionPlan, repositories: Sequence[RepositoryPlan]
    ) -> None:
        """One publish call: the observations and scopes of some repositories of one region."""
        from securityhub.hub import RepositoryScope

        assert self.publisher is not None
        for repository in repositories:
            for r in status.records_of(repository):
                if plan.estate is not None and r.outcome in ("scanned", "cached"):
                    r.findings = plan.estate.apply(r.findings, r.image.digest, r.image.index_digest)
        observations = [
            Observation(resource=r.resource, kinds=r.kinds, findings=r.findings)
            for repository in repositories
            for r in status.records_of(repository)
            if r.outcome in ("scanned", "cached")
        ]
        scopes = [
            RepositoryScope(plan.account_id, plan.region, r.name, r.present, r.listed_at)
            for r in repositories
            if r.complete
        ]
        if not observations and not scopes:
            return
        scope = f"{plan.account_id}/{plan.region}"
        try:
            summary = self.publisher.publish(
                plan.region,
                observations,
                repositories=scopes,
                target=plan.target,
                exists=self._exists_check(plan),
            )
        except ContainerscanError as exc:
            status.add_error(scope, f"Security Hub: {exc.message}")
            log.error("publish failed", extra=fields(scope=scope, error=exc.message))
            return
        self._mark_new(status, repositories, summary)
        doc = summary.as_dict() if hasattr(summary, "as_dict") else asdict(summary)
        status.add_summary(scope, doc)
        if doc.get("failed"):
            status.add_error(scope, f"Security Hub: {doc['failed']} finding(s) not imported")
        log.info(
            "published",
            extra=fields(
                scope=scope,
                repositories=len(repositories),
                **{k: v for k, v in doc.items() if k != "errors"},
            ),
        )

    def _exists_check(self, plan: RegionPlan) -> Callable[[Any, Sequence[str]], set[str]] | None:
        """ECR by digest (BatchGetImage): which of the digests absent from a listing exist."""
        registry = plan.registry
        if registry is None:
            return None

        def exists(scope: Any, digests: Sequence[str]) -> set[str]:
            return registry.existing(scope.repository, digests)

        return exists

    def _mark_new(
        self, status: RunStatus, repositories: Sequence[RepositoryPlan], summary: Any
    ) -> None:
        """Each record's new findings: those the publish created or reactivated."""
        from securityhub.ids import finding_id

        new_ids = frozenset(getattr(summary, "new_ids", ()))
        changed_ids = new_ids | frozenset(getattr(summary, "updated_ids", ()))
        if not changed_ids:
            return
        prefix = self.config.finding_prefix
        for repository in repositories:
            for record in status.records_of(repository):
                ids = {id(f): finding_id(f, prefix) for f in record.findings}
                record.new_findings = tuple(f for f in record.findings if ids[id(f)] in new_ids)
                record.changed_findings = tuple(
                    f for f in record.findings if ids[id(f)] in changed_ids
                )

    # ------------------------------------------------------------ tags and alert

    def _tag(self, status: RunStatus) -> None:
        tag = self.config.tag_scanned
        if not tag:
            return
        for record in status.records:
            if record.outcome not in ("scanned", "cached") or tag in record.image.tags:
                continue
            if record.plan.registry is None:
                continue
            record.tag = tag_image(
                record.plan.registry,
                record.image.repository,
                record.image.digest,
                tag,
                immutable=record.repository.immutable,
            )
            status.tagging.append(record.tag)

    def _alert(self, status: RunStatus) -> None:
        from check.alerts import EXPLOITABLE

        mode = self.config.alert_mode
        new = [
            f
            for r in status.records
            for f in (r.changed_findings if mode == EXPLOITABLE else r.new_findings)
        ]
        alert = build_alert(
            status.run_id,
            new,
            self.config.alert_threshold,
            locations=self.outputs.locations(status.run_id),
            mode=mode,
            epss=self.config.alert_epss,
        )
        if alert is None:
            return
        status.alert = {
            "findings": alert.count,
            "mode": mode,
            "threshold": self.config.alert_threshold.name
            if mode != EXPLOITABLE
            else f"EPSS {self.config.alert_epss:g}",
        }
        if self.sns is not None and self.config.sns_topic_arn:
            status.alert["message_id"] = send_alert(self.sns, self.config.sns_topic_arn, alert)

    def _write_status(self, status: RunStatus) -> None:
        if not self.outputs.enabled:
            return
        status.outputs = {"locations": self.outputs.locations(status.run_id)}
        doc = status.as_dict()
        self.outputs.write_json(f"runs/{status.run_id}/status.json", doc)
        self.outputs.write_status_page(doc)
        status.outputs["written"] = self.outputs.written
        if self.outputs.errors:
            status.outputs["errors"] = list(self.outputs.errors)


def _kinds(scan_types: Sequence[str]) -> frozenset[str]:
    return frozenset(KINDS_BY_SCAN_TYPE[t] for t in scan_types if t in KINDS_BY_SCAN_TYPE)


# ----------------------------------------------------------------------------- wiring


def build_sweep(
    request: ScanRequest,
    config: RunConfig,
    *,
    sessions: SessionFactory | None = None,
    scanner: Scanner | None = None,
    progress_stream: TextIO | None = None,
) -> Sweep:
    """A Sweep wired from the configuration: the CLI's and the launchers' way in.

    Clients come from one SessionFactory; the cache, the ledger and the outputs live in the
    caller's account and default region, the scans and imports in each image's account.
    """
    sessions = sessions or SessionFactory(
        default_region=request.regions[0] if request.regions else None
    )
    publisher = cache = None
    if not request.dry_run:
        if scanner is None:
            from check.scanners import make_scanner

            scanner = make_scanner(request.scanner or config.scanner)
        if config.table:
            from securityhub.hub import SecurityHubPublisher

            publisher = SecurityHubPublisher(sessions, config.table, prefix=config.finding_prefix)
    s3 = sessions.client("s3") if config.bucket and not request.dry_run else None
    if config.table and not request.dry_run:
        cache = ScanCache(
            sessions.client("dynamodb"),
            config.table,
            ttl_days=config.cache_ttl_days,
            s3=s3,
            bucket=config.bucket,
            prefix=config.prefix,
            kms_key_id=config.kms_key_id,
        )
    outputs = RunOutputs(
        s3=s3,
        bucket=config.bucket if s3 is not None else None,
        prefix=config.prefix,
        kms_key_id=config.kms_key_id,
        local_dir=config.output_dir if not request.dry_run else None,
    )
    sns = None
    if config.sns_topic_arn and not request.dry_run:
        # arn:aws:sns:<region>:<account>:<name>: publish in the topic's own region.
        sns = sessions.client("sns", config.sns_topic_arn.split(":")[3])
    reevaluator = store = loaded = None
    if s3 is not None and config.bucket and scanner is not None:
        from check.inventories import InventoryStore
        from check.reevaluate import Reevaluator

        store = InventoryStore(s3, config.bucket, config.prefix, config.kms_key_id)
        reevaluator = Reevaluator(store, scanner)
    if config.table and not request.dry_run:
        from check.loaded import LoadedJoin
        from securityhub.loaded import LoadedTable

        table = LoadedTable(sessions.client("dynamodb"), config.table)
        loaded = LoadedJoin(table, store, config.loaded_window)
    return Sweep(
        request,
        config,
        sessions,
        reevaluator=reevaluator,
        loaded=loaded,
        scanner=scanner,
        publisher=publisher,
        cache=cache,
        outputs=outputs,
        sns=sns,
        progress_stream=progress_stream,
    )


class _Publishing:
    """Publishes each repository once all its images are done, on one background thread.

    A repository is a correlation scope of its own (its ledger partition, its RepositoryScope),
    so publishing groups of finished repositories while others are still scanning is the same
    as publishing everything at the end, only sooner. One thread keeps the publisher's calls
    sequential. Repositories that could not be enumerated completely are never published.
    """

    def __init__(self, sweep: Sweep, status: RunStatus, plans: Sequence[RegionPlan]) -> None:
        self.sweep = sweep
        self.status = status
        self.remaining: dict[int, int] = {}
        self.owner: dict[int, RegionPlan] = {}
        self.pending: dict[int, list[RepositoryPlan]] = defaultdict(list)
        self.pending_findings: dict[int, int] = defaultdict(int)
        self.plans = {id(p): p for p in plans if not p.error and p.registry is not None}
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish")
        self.futures: list[Any] = []
        self._prefetch()
        for plan in self.plans.values():
            for repository in plan.repositories:
                if not repository.complete:
                    continue
                self.owner[id(repository)] = plan
                self.remaining[id(repository)] = len(repository.images)
                if not repository.images:  # nothing selected: its scope still archives
                    self._ready(plan, repository, 0)

    def _prefetch(self) -> None:
        """Let the publisher read the ledger summaries of every complete repository at once
        (100 per call) rather than per publish; failing that, each publish reads its own."""
        from securityhub.hub import RepositoryScope

        prefetch = getattr(self.sweep.publisher, "prefetch", None)
        if prefetch is None:
            return
        scopes = [
            RepositoryScope(plan.account_id, plan.region, r.name, r.present, r.listed_at)
            for plan in self.plans.values()
            for r in plan.repositories
            if r.complete
        ]
        if not scopes:
            return
        try:
            prefetch(scopes)
        except ContainerscanError as exc:
            log.warning("cannot read ledger summaries ahead", extra=fields(error=exc.message))

    def done(self, records: list[ImageRecord]) -> None:
        """A digest's records are final (scanned, cached or failed)."""
        for record in records:
            key = id(record.repository)
            if key not in self.remaining:
                continue
            self.remaining[key] -= 1
            if self.remaining[key] == 0:
                findings = sum(len(r.findings) for r in self.status.records_of(record.repository))
                self._ready(self.owner[key], record.repository, findings)

    def _ready(self, plan: RegionPlan, repository: RepositoryPlan, findings: int) -> None:
        key = id(plan)
        self.pending[key].append(repository)
        self.pending_findings[key] += findings
        idle = all(f.done() for f in self.futures)
        if (
            idle
            or self.pending_findings[key] >= PUBLISH_BATCH_FINDINGS
            or len(self.pending[key]) >= PUBLISH_BATCH_REPOSITORIES
        ):
            self._flush(key)

    def _flush(self, key: int) -> None:
        repositories = self.pending.pop(key, [])
        self.pending_findings.pop(key, None)
        if repositories and self.sweep.publisher is not None:
            self.futures.append(
                self.executor.submit(
                    self.sweep._publish_batch, self.status, self.plans[key], repositories
                )
            )

    def finish(self) -> None:
        """Publish what is left and wait for every publish call."""
        try:
            for key in list(self.pending):
                self._flush(key)
            for future in self.futures:
                future.result()
        finally:
            self.executor.shutdown(wait=True)
