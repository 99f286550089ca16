"""The Security Hub layer's API: publish what a run observed, correlated with the ledger.

    publisher = SecurityHubPublisher(sessions, table=os.environ["CONTAINERSCAN_TABLE"])
    summary = publisher.publish("eu-west-1", observations, repositories=scopes, target=spoke)

One `publish` call handles one (account, region): the findings are imported into the
account of `target` (the image owner; None = the caller), in `region`, with that account's
default product ARN. What is touched:

- every `Observation` is a scope observed completely for its `kinds`: its findings are
  created, updated (content changed), refreshed (unchanged, last import older than the
  refresh interval) or reactivated (archived before); its ledger findings of those kinds
  that were not observed are archived. Images whose scan failed are simply not passed, and
  keep their findings untouched.
- every `RepositoryScope` (a repository whose image list was fully enumerated) archives the
  findings of digests no longer present in it, when their absence is proven: the listing
  (`listed_at`) was taken after the image's findings were last published, or `exists` (a
  direct check, ECR by digest) says the image is gone. An image another run published after
  this run's listing (a push during a wide sweep) is never archived by it.
- runtime findings (`EcsContainer` resources) are created and updated (count, last seen),
  and never archived by absence: a quiet period is not evidence that the behaviour stopped.
  Their count is imported as the caller reports it (the sidecar sends cumulative counts);
  the publisher does not add counts up.

An unchanged repository costs no ledger read of its own: the summaries of the publish's
repositories (or the ones `prefetch` read for a whole sweep, 100 per BatchGetItem) are
compared with what was observed (correlate.summary_holds), and only the partitions whose
summary is missing, invalid or different are read entry by entry. Those get their summary
written with their entries (ledger.py says how it stays true under concurrent runs).

The ledger is written only for findings Security Hub accepted, after the import, each entry
only if no other run recorded a later observation meanwhile (`stale` counts those: Security
Hub ignored that import too, its UpdatedAt being older). Corrupt ledger items are counted in
`corrupt` and their findings re-imported as unknown, which repairs them.
`PublishSummary.new_ids` names the findings this call created or reactivated in Security Hub
(accepted imports only): what a run reports as new, e.g. in its alert. A repository deleted
entirely is archived by passing it as a `RepositoryScope` with no digests; the repositories
the ledger holds findings for are `known_repositories(account, region)`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from securityhub import asff, ids
from securityhub.aws import AccountTarget, SessionFactory
from securityhub.correlate import (
    ACTIVE,
    ARCHIVED,
    Action,
    Change,
    LedgerEntry,
    Observed,
    ObservedScope,
    absent_images,
    plan,
    proven_gone,
    summarize,
    summary_holds,
)
from securityhub.errors import ContainerscanError
from securityhub.findings import EcrImage, Finding, Observation, RuntimeFinding, Severity
from securityhub.gateway import Gateway
from securityhub.ledger import (
    Ledger,
    LedgerRecord,
    SummaryRead,
    SummaryWrite,
    partition_of,
    summary_key,
)
from securityhub.logs import fields, get_logger

log = get_logger("securityhub.hub")

IMAGE_KINDS = frozenset({"vulnerability", "secret"})
MAX_REPORTED_ERRORS = 50  # PublishSummary.errors keeps the first ones; `failed` counts all
# GetFindings: at most 20 values per filter attribute (Security Hub API, StringFilter lists).
GET_FINDINGS_IDS = 20


@dataclass(frozen=True)
class RepositoryScope:
    """A repository whose image list was fully enumerated."""

    account_id: str
    region: str
    repository: str
    present_digests: frozenset[str]
    # When the listing began (the lister's clock); None: unknown, so absence proves nothing
    # without a direct check.
    listed_at: datetime | None = None


# A direct check of digests absent from a listing: the ones that still exist.
ExistsCheck = Callable[[RepositoryScope, Sequence[str]], Collection[str]]


@dataclass(frozen=True)
class PublishSummary:
    """Counts of one publish, and the failures (Id: reason); `as_dict()` for status.json."""

    created: int = 0
    updated: int = 0
    refreshed: int = 0
    archived: int = 0
    reactivated: int = 0
    unchanged: int = 0
    failed: int = 0
    stale: int = 0  # ledger writes dropped: another run recorded a later observation
    corrupt: int = 0  # ledger items that could not be read (logged, treated as unknown)
    kept_absent: int = 0  # images absent from a listing, not proven gone: findings kept
    errors: tuple[str, ...] = ()
    # Ids created or reactivated by this publish (accepted by Security Hub), sorted. Not in
    # `as_dict()`: status.json keeps counts (`created`, `reactivated`), not every Id.
    new_ids: tuple[str, ...] = ()
    # Ids this publish updated (content changed), sorted; not in `as_dict()` either.
    updated_ids: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["errors"] = list(self.errors)
        del out["new_ids"]
        del out["updated_ids"]
        return out

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.refreshed + self.archived + self.reactivated

    def __add__(self, other: PublishSummary) -> PublishSummary:
        return PublishSummary(
            created=self.created + other.created,
            updated=self.updated + other.updated,
            refreshed=self.refreshed + other.refreshed,
            archived=self.archived + other.archived,
            reactivated=self.reactivated + other.reactivated,
            unchanged=self.unchanged + other.unchanged,
            failed=self.failed + other.failed,
            stale=self.stale + other.stale,
            corrupt=self.corrupt + other.corrupt,
            kept_absent=self.kept_absent + other.kept_absent,
            errors=(self.errors + other.errors)[:MAX_REPORTED_ERRORS],
            new_ids=self.new_ids + other.new_ids,
            updated_ids=self.updated_ids + other.updated_ids,
        )


@dataclass(frozen=True)
class _Built:
    finding: Finding
    scope: str
    content: dict[str, Any]
    fingerprint: str


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _partition_of_repository(repo: RepositoryScope) -> str:
    return partition_of(ids.repository_scope(repo.account_id, repo.region, repo.repository))


class SecurityHubPublisher:
    """Correlates observations with the ledger and imports the difference."""

    def __init__(
        self,
        sessions: SessionFactory,
        table: str,
        *,
        prefix: str = ids.DEFAULT_PREFIX,
        refresh_interval: timedelta = timedelta(days=7),
        severity_map: Mapping[str, Severity] | None = None,
        clock: Callable[[], datetime] | None = None,
        gateway_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.sessions = sessions
        self.table = table
        self.prefix = ids.validate_prefix(prefix)
        self.refresh_interval = refresh_interval
        self.severity_map = (
            dict(severity_map) if severity_map is not None else asff.default_severity_map()
        )
        self.clock = clock or _utcnow
        self.gateway_options = dict(gateway_options or {})
        self._gateways: dict[tuple[str, str | None], Gateway] = {}
        # partition -> its summary as `prefetch` read it; each is used by one publish
        self._prefetched: dict[str, SummaryRead] = {}

    # --------------------------------------------------------------------- plumbing
    def ledger(self) -> Ledger:
        """The ledger lives in the caller's account and default region."""
        return Ledger(self.sessions.client("dynamodb"), self.table)

    def gateway(self, region: str, target: AccountTarget | None = None) -> Gateway:
        """One gateway (and so one pair of rate limiters) per account and region."""
        key = (region, target.role_arn if target else None)
        if key not in self._gateways:
            client = self.sessions.client("securityhub", region, target)
            self._gateways[key] = Gateway(client, **self.gateway_options)
        return self._gateways[key]

    def known_repositories(self, account_id: str, region: str) -> frozenset[str]:
        """The repositories of (account, region) the ledger holds findings for (one Query)."""
        return frozenset(self.ledger().known_repositories(account_id, region))

    def prefetch(self, repositories: Sequence[RepositoryScope]) -> None:
        """Read the ledger summaries of `repositories` ahead of their publishes (a sweep
        knows them all once it has listed them): one BatchGetItem per 100 repositories
        instead of one per publish. A summary read earlier is as safe as one read at publish
        time (it may only make a publish read entries it could have skipped)."""
        partitions = [_partition_of_repository(r) for r in repositories]
        self._prefetched.update(self.ledger().summaries(partitions, remember=False))

    def _summaries(self, ledger: Ledger, partitions: Collection[str]) -> dict[str, SummaryRead]:
        """The summaries of `partitions`: prefetched ones (used once), the rest read now."""
        out: dict[str, SummaryRead] = {}
        for partition in partitions:
            read = self._prefetched.pop(partition, None)
            if read is not None:
                out[partition] = read
                if read.problem:  # counted by the publish that acts on it
                    key = summary_key(partition)
                    ledger.remember_corrupt(key, f"summary: {read.problem}")
        missing = [p for p in partitions if p not in out]
        return out | (ledger.summaries(missing) if missing else {})

    # ---------------------------------------------------------------------- publish
    def publish(
        self,
        region: str,
        observations: Sequence[Observation],
        *,
        repositories: Sequence[RepositoryScope] = (),
        target: AccountTarget | None = None,
        exists: ExistsCheck | None = None,
    ) -> PublishSummary:
        """Import what changed in `region` for the observed scopes; see the module doc."""
        now = self.clock()
        account = self.sessions.account_id(target)
        ctx = asff.BuildContext(account, region, self.prefix, self.severity_map)
        ledger = self.ledger()

        scopes: list[ObservedScope] = []
        built: dict[str, _Built] = {}
        for observation in observations:
            scope = ids.resource_scope(observation.resource)
            archivable = isinstance(observation.resource, EcrImage)
            scopes.append(ObservedScope(scope, frozenset(observation.kinds), archivable))
            for finding in observation.findings:
                content = asff.build(finding, ctx)
                fid = content["Id"]
                if fid in built:
                    log.warning(
                        "two findings with one Id in an observation; keeping the last",
                        extra=fields(finding_id=fid),
                    )
                built[fid] = _Built(finding, scope, content, asff.fingerprint(content))

        observed = [
            Observed(fid, b.scope, b.finding.kind, b.fingerprint) for fid, b in built.items()
        ]
        whole = {_partition_of_repository(r) for r in repositories}
        reads = self._summaries(ledger, whole)
        quiet, quiet_unchanged = self._unchanged(reads, observed, now)
        if quiet:  # unchanged repositories: nothing to read, plan or write
            scopes = [s for s in scopes if partition_of(s.scope) not in quiet]
            repositories = [r for r in repositories if _partition_of_repository(r) not in quiet]
            observed = [o for o in observed if partition_of(o.scope) not in quiet]

        entries = self._ledger_entries(ledger, scopes, repositories)
        kept_absent = 0
        for repo in repositories:
            gone, kept = self._gone(repo, entries.values(), exists)
            scopes += [ObservedScope(scope, IMAGE_KINDS) for scope in gone]
            kept_absent += kept
        the_plan = plan(scopes, observed, entries.values(), now, self.refresh_interval)

        gateway = self.gateway(region, target)
        documents, records, errors = self._documents(
            the_plan.changes, built, ledger, ctx, now, gateway=gateway
        )
        actions = {c.finding_id: c.action for c in the_plan.changes}
        outcome = gateway.import_findings([d for d, _ in documents])
        accepted = set(outcome.accepted)
        written = [records[fid] for fid in outcome.accepted if fid in records]
        rebuilt = self._rebuilt(ledger, whole - quiet, reads, entries, written)
        recorded = ledger.record(written, published_at=now, summaries=rebuilt)

        counts: dict[Action, int] = defaultdict(int)
        for fid in accepted:
            counts[actions[fid]] += 1
        new_ids = tuple(
            sorted(f for f in accepted if actions[f] in (Action.CREATE, Action.REACTIVATE))
        )
        errors += [f"{fid}: {reason}" for fid, reason in outcome.failed.items()]
        summary = PublishSummary(
            created=counts[Action.CREATE],
            updated=counts[Action.UPDATE],
            refreshed=counts[Action.REFRESH],
            archived=counts[Action.ARCHIVE],
            reactivated=counts[Action.REACTIVATE],
            unchanged=the_plan.unchanged + quiet_unchanged,
            failed=len(errors),
            stale=recorded.stale,
            corrupt=len(ledger.corrupt),
            kept_absent=kept_absent,
            errors=tuple(errors[:MAX_REPORTED_ERRORS]),
            new_ids=new_ids,
            updated_ids=tuple(sorted(f for f in accepted if actions[f] is Action.UPDATE)),
        )
        log.info(
            "published findings to Security Hub",
            extra=fields(account=account, region=region, calls=outcome.calls, **summary.as_dict()),
        )
        return summary

    def _unchanged(
        self, reads: Mapping[str, SummaryRead], observed: Sequence[Observed], now: datetime
    ) -> tuple[set[str], int]:
        """(the partitions whose summary says the plan is empty, how many findings they hold)."""
        by_partition: dict[str, list[Observed]] = defaultdict(list)
        for o in observed:
            by_partition[partition_of(o.scope)].append(o)
        quiet = {
            partition
            for partition, read in reads.items()
            if read.summary is not None
            and summary_holds(read.summary, by_partition[partition], now, self.refresh_interval)
        }
        return quiet, sum(len(by_partition[p]) for p in quiet)

    @staticmethod
    def _rebuilt(
        ledger: Ledger,
        partitions: Collection[str],
        reads: Mapping[str, SummaryRead],
        entries: Mapping[str, LedgerEntry],
        written: Sequence[LedgerRecord],
    ) -> dict[str, SummaryWrite]:
        """The summaries of the partitions read whole, as they will be once `written` lands;
        none for a partition with corrupt items (the next read must meet them)."""
        after: dict[str, dict[str, LedgerEntry]] = {p: {} for p in partitions}
        for entry in entries.values():
            after.get(partition_of(entry.scope), {})[entry.finding_id] = entry
        for record in written:
            after.get(partition_of(record.entry.scope), {})[record.entry.finding_id] = record.entry
        damaged = {pk for pk, _ in ledger.corrupt}
        return {
            partition: SummaryWrite(summarize(state.values()), reads[partition])
            for partition, state in after.items()
            if partition not in damaged and partition in reads
        }

    def _gone(
        self,
        repo: RepositoryScope,
        entries: Collection[LedgerEntry],
        exists: ExistsCheck | None,
    ) -> tuple[list[str], int]:
        """(image scopes of `repo` proven gone, how many absent ones are kept)."""
        prefix = ids.repository_scope(repo.account_id, repo.region, repo.repository)
        absent = absent_images(entries, prefix, repo.present_digests)
        proven, unsure = proven_gone(absent, repo.listed_at)
        kept = unsure
        if unsure and exists is not None:
            try:
                still = set(exists(repo, [a.digest for a in unsure]))
            except ContainerscanError as exc:  # cannot tell: nothing is archived
                log.warning("cannot check absent images", extra=fields(error=exc.message))
                still = {a.digest for a in unsure}
            proven += [a for a in unsure if a.digest not in still]
            kept = [a for a in unsure if a.digest in still]
        for item in kept:
            log.info(
                "image absent from the listing but not proven gone; its findings stay",
                extra=fields(scope=item.scope, last_published=asff.timestamp(item.last_published)),
            )
        return [a.scope for a in proven], len(kept)

    def _ledger_entries(
        self,
        ledger: Ledger,
        scopes: Sequence[ObservedScope],
        repositories: Sequence[RepositoryScope],
    ) -> dict[str, LedgerEntry]:
        """Ledger entries of every observed scope: one Query per partition or scope."""
        partitions: dict[str, list[str]] = defaultdict(list)
        for scope in scopes:
            partitions[partition_of(scope.scope)].append(scope.scope)
        whole = {_partition_of_repository(r) for r in repositories}
        entries: dict[str, LedgerEntry] = {}
        for partition, members in partitions.items():
            if partition in whole or len(members) > 1:
                continue
            for entry in ledger.scope_entries(members[0]):
                entries[entry.finding_id] = entry
        for partition in whole | {p for p, m in partitions.items() if len(m) > 1}:
            for entry in ledger.partition_entries(partition.removeprefix("ledger#")):
                entries[entry.finding_id] = entry
        return entries

    @staticmethod
    def _hub_copies(finding_ids: Sequence[str], gateway: Gateway) -> dict[str, Any]:
        """The findings as Security Hub holds them (GetFindings by Id, 20 per call): the rare
        archive whose ledger copy is missing. The import that follows repairs the copy."""
        out: dict[str, Any] = {}
        for start in range(0, len(finding_ids), GET_FINDINGS_IDS):
            chunk = finding_ids[start : start + GET_FINDINGS_IDS]
            filters = {"Id": [{"Value": fid, "Comparison": "EQUALS"} for fid in chunk]}
            try:
                for finding in gateway.get_findings(filters):
                    out[str(finding["Id"])] = asff.provider_content(finding)
            except ContainerscanError as exc:
                log.warning("cannot read findings to archive", extra=fields(error=exc.message))
                break
        return out

    def _documents(
        self,
        changes: Sequence[Change],
        built: Mapping[str, _Built],
        ledger: Ledger,
        ctx: asff.BuildContext,
        now: datetime,
        *,
        gateway: Gateway,
    ) -> tuple[list[tuple[dict[str, Any], str]], dict[str, LedgerRecord], list[str]]:
        documents: list[tuple[dict[str, Any], str]] = []
        records: dict[str, LedgerRecord] = {}
        errors: list[str] = []
        archived = [c.entry for c in changes if c.action is Action.ARCHIVE and c.entry]
        stored = ledger.stored_findings(archived) if archived else {}
        lost = [e.finding_id for e in archived if e.finding_id not in stored]
        if lost:  # too large to keep, or an unreadable copy: Security Hub has the finding
            stored |= self._hub_copies(lost, gateway)
        for change in changes:
            entry = change.entry
            previous = entry.updated_at if entry else None
            updated_at = asff.next_updated_at(now, previous)
            if change.action is Action.ARCHIVE:
                if entry is None:  # plan() always sets the entry of an ARCHIVE
                    continue
                copy = stored.get(change.finding_id)
                if copy is None:
                    errors.append(
                        f"{change.finding_id}: no stored copy to archive; run "
                        "`containerscan reconcile`"
                    )
                    continue
                doc = dict(copy, RecordState=ARCHIVED, UpdatedAt=asff.timestamp(updated_at))
                new_entry = LedgerEntry(
                    change.finding_id,
                    entry.scope,
                    entry.kind,
                    entry.fingerprint,
                    entry.created_at,
                    entry.first_observed_at,
                    updated_at,
                    ARCHIVED,
                )
            else:
                item = built[change.finding_id]
                first_seen = now
                last_seen = now
                if isinstance(item.finding, RuntimeFinding):
                    first_seen = item.finding.first_seen or now
                    last_seen = item.finding.last_seen or now
                created_at = entry.created_at if entry else updated_at
                first_observed = entry.first_observed_at if entry else min(first_seen, now)
                doc = asff.stamp(
                    item.content,
                    created_at=created_at,
                    first_observed_at=first_observed,
                    updated_at=updated_at,
                    last_observed_at=last_seen,
                    record_state=ACTIVE,
                )
                new_entry = LedgerEntry(
                    change.finding_id,
                    item.scope,
                    item.finding.kind,
                    item.fingerprint,
                    created_at,
                    first_observed,
                    updated_at,
                    ACTIVE,
                )
            documents.append((doc, change.finding_id))
            records[change.finding_id] = LedgerRecord(new_entry, ctx.account_id, ctx.region, doc)
        return documents, records, errors
