"""The correlation plan: what to import so Security Hub equals what this run observed.

`plan()` is a pure function of
- the scopes this run observed *completely* (an image scanned successfully, with the finding
  kinds its scan covered; a runtime container, which is never archived by absence),
- the findings observed (Id, scope, kind, content fingerprint),
- the ledger entries of those scopes (what was imported before),
- the time and the refresh interval,

and returns one change per finding that needs an import:

| observed | ledger entry              | action                                   |
|----------|---------------------------|------------------------------------------|
| yes      | none                      | CREATE                                   |
| yes      | ARCHIVED                  | REACTIVATE                               |
| yes      | ACTIVE, other fingerprint | UPDATE                                   |
| yes      | ACTIVE, same fingerprint  | REFRESH if last import >= interval ago   |
| no       | ACTIVE, in a scope and of a kind fully observed, scope archivable | ARCHIVE |
| no       | anything else             | untouched                                |

Ledger entries outside the observed scopes are never touched, whatever the caller passes:
an image whose scan failed, timed out or was not selected keeps its findings as they were.
A scan that covered only `vulnerability` never archives the image's `secret` findings.

An image absent from a repository listing is archived only when its absence is *proven*
(`proven_gone`): the listing was taken after its findings were last published (by more than
`CLOCK_SKEW`), so an image another run published after this run listed the repository (a
push during a wide sweep) is not taken for deleted. The others are asked about directly
(ECR by digest) by the caller, and kept unless ECR says they do not exist.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import unquote

from securityhub import ids

# Security Hub deletes ACTIVE findings 90 days after their last UpdatedAt (user guide,
# "securityhub-findings"); a weekly keep-alive stays far below that.
DEFAULT_REFRESH_INTERVAL = timedelta(days=7)
ACTIVE = "ACTIVE"
ARCHIVED = "ARCHIVED"
# A listing proves an image gone only when taken this long after the image's last publish:
# more than the clock skew between two tasks (ECS tasks keep NTP time to milliseconds) and
# ECR's propagation of a push to DescribeImages. Closer calls are asked of ECR directly.
CLOCK_SKEW = timedelta(seconds=60)


class Action(enum.Enum):
    CREATE = "created"
    UPDATE = "updated"
    REFRESH = "refreshed"
    ARCHIVE = "archived"
    REACTIVATE = "reactivated"


@dataclass(frozen=True)
class LedgerEntry:
    """What the ledger knows of one imported finding."""

    finding_id: str
    scope: str
    kind: str
    fingerprint: str
    created_at: datetime
    first_observed_at: datetime
    updated_at: datetime
    record_state: str = ACTIVE
    # When a run last wrote this entry (its publish clock); None for entries written before
    # it was kept, whose updated_at stands in. Not part of equality: Security Hub has no such
    # field, and reconcile compares entries with the hub's.
    published_at: datetime | None = field(default=None, compare=False)

    @property
    def last_published(self) -> datetime:
        return max(self.published_at or self.updated_at, self.updated_at)


@dataclass(frozen=True)
class Observed:
    """One finding this run observed, reduced to what planning needs."""

    finding_id: str
    scope: str
    kind: str
    fingerprint: str


@dataclass(frozen=True)
class ObservedScope:
    """A scope observed completely for `kinds`; `archivable=False` for runtime scopes."""

    scope: str
    kinds: frozenset[str]
    archivable: bool = True


@dataclass(frozen=True)
class Change:
    action: Action
    finding_id: str
    entry: LedgerEntry | None
    observed: Observed | None


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    unchanged: int  # observed, same content, refresh not due
    untouched: int  # ledger entries the run did not see and may not archive

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action is action)

    def counts(self) -> dict[str, int]:
        out = {a.value: 0 for a in Action}
        for change in self.changes:
            out[change.action.value] += 1
        out["unchanged"] = self.unchanged
        out["untouched"] = self.untouched
        return out


def plan(
    scopes: Iterable[ObservedScope],
    observed: Iterable[Observed],
    entries: Iterable[LedgerEntry],
    now: datetime,
    refresh_interval: timedelta = DEFAULT_REFRESH_INTERVAL,
) -> Plan:
    """The imports that make Security Hub match this run, inside the observed scopes only."""
    by_scope: dict[str, ObservedScope] = {}
    for given in scopes:
        known = by_scope.get(given.scope)
        if known is not None:  # the same scope twice: union of what was covered
            given = ObservedScope(  # noqa: PLW2901
                given.scope, known.kinds | given.kinds, known.archivable and given.archivable
            )
        by_scope[given.scope] = given
    seen: dict[str, Observed] = {}
    for item in observed:
        if item.scope in by_scope:  # a finding outside every observed scope is not planned
            seen[item.finding_id] = item
    ledger: dict[str, LedgerEntry] = {}
    for entry in entries:
        ledger[entry.finding_id] = entry

    changes: list[Change] = []
    unchanged = 0
    refresh_before = now - refresh_interval
    for finding_id, item in seen.items():
        known_entry = ledger.get(finding_id)
        if known_entry is None:
            changes.append(Change(Action.CREATE, finding_id, None, item))
        elif known_entry.record_state != ACTIVE:
            changes.append(Change(Action.REACTIVATE, finding_id, known_entry, item))
        elif known_entry.fingerprint != item.fingerprint:
            changes.append(Change(Action.UPDATE, finding_id, known_entry, item))
        elif known_entry.updated_at <= refresh_before:
            changes.append(Change(Action.REFRESH, finding_id, known_entry, item))
        else:
            unchanged += 1

    untouched = 0
    for finding_id, entry in ledger.items():
        if finding_id in seen:
            continue
        scope = by_scope.get(entry.scope)
        if (
            scope is not None
            and scope.archivable
            and entry.kind in scope.kinds
            and entry.record_state == ACTIVE
        ):
            changes.append(Change(Action.ARCHIVE, finding_id, entry, None))
        else:
            untouched += 1
    return Plan(tuple(changes), unchanged, untouched)


@dataclass(frozen=True)
class Absent:
    """An image scope with ledger entries that a repository listing did not show."""

    scope: str
    digest: str
    last_published: datetime  # the latest publish of any of its findings


def absent_images(
    entries: Iterable[LedgerEntry], repository_prefix: str, present_digests: Iterable[str]
) -> list[Absent]:
    """The image scopes with ACTIVE ledger entries whose digest the listing lacks."""
    present = {repository_prefix + ids.component(d) for d in present_digests}
    latest: dict[str, datetime] = {}
    for entry in entries:
        if (
            entry.record_state == ACTIVE
            and entry.scope.startswith(repository_prefix)
            and entry.scope not in present
        ):
            when = entry.last_published
            if entry.scope not in latest or when > latest[entry.scope]:
                latest[entry.scope] = when
    return [
        Absent(scope, unquote(scope[len(repository_prefix) :]), when)
        for scope, when in sorted(latest.items())
    ]


def proven_gone(
    absent: Iterable[Absent], listed_at: datetime | None, skew: timedelta = CLOCK_SKEW
) -> tuple[list[Absent], list[Absent]]:
    """(proven gone by the listing, to be checked directly): see the module doc.

    `listed_at` None (when the listing was taken is unknown) proves nothing.
    """
    proven: list[Absent] = []
    unsure: list[Absent] = []
    for item in absent:
        if listed_at is not None and item.last_published + skew < listed_at:
            proven.append(item)
        else:
            unsure.append(item)
    return proven, unsure


@dataclass(frozen=True)
class Summary:
    """What a partition's ACTIVE ledger entries amount to (see the module doc)."""

    digest: str  # sha256 (hex) of the sorted (scope, kind, finding Id, fingerprint) lines
    count: int
    oldest: datetime | None  # the oldest UpdatedAt among them; None when there are none


def _digest(rows: Iterable[tuple[str, str, str, str]]) -> tuple[str, int]:
    # \x1f (unit separator) cannot occur in a scope, kind, Id or hex fingerprint.
    lines = sorted("\x1f".join(row) for row in rows)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest(), len(lines)


def summarize(entries: Iterable[LedgerEntry]) -> Summary:
    """The summary of a partition's entries (the ARCHIVED ones do not count)."""
    active = [e for e in entries if e.record_state == ACTIVE]
    digest, count = _digest((e.scope, e.kind, e.finding_id, e.fingerprint) for e in active)
    return Summary(digest, count, min((e.updated_at for e in active), default=None))


def summary_holds(
    summary: Summary,
    observed: Iterable[Observed],
    now: datetime,
    refresh_interval: timedelta = DEFAULT_REFRESH_INTERVAL,
) -> bool:
    """True when `plan()` over the summarized partition, with `observed` (this run's findings
    of that partition, every one in a completely observed scope), would change nothing."""
    if summary.oldest is not None and summary.oldest <= now - refresh_interval:
        return False  # a refresh is due
    digest, count = _digest((o.scope, o.kind, o.finding_id, o.fingerprint) for o in observed)
    return count == summary.count and digest == summary.digest
