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
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from securityhub import ids

# Security Hub deletes ACTIVE findings 90 days after their last UpdatedAt (user guide,
# "securityhub-findings"); a weekly keep-alive stays far below that.
DEFAULT_REFRESH_INTERVAL = timedelta(days=7)
ACTIVE = "ACTIVE"
ARCHIVED = "ARCHIVED"


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


def vanished_scopes(
    entries: Iterable[LedgerEntry],
    repository_prefix: str,
    present_digests: Iterable[str],
    all_kinds: frozenset[str],
) -> list[ObservedScope]:
    """Image scopes of a fully enumerated repository whose digest is no longer present.

    Their findings are archived: every kind, because the image itself is gone.
    `repository_prefix` is `ids.repository_scope(account, region, repository)`.
    """
    prefix = repository_prefix
    present = {prefix + ids.component(d) for d in present_digests}
    gone = {e.scope for e in entries if e.scope.startswith(prefix) and e.scope not in present}
    return [ObservedScope(scope, all_kinds) for scope in sorted(gone)]
