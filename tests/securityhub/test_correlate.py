"""The correlation plan: a pure function, every row of its table."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from securityhub import ids
from securityhub.correlate import (
    ACTIVE,
    ARCHIVED,
    Action,
    LedgerEntry,
    Observed,
    ObservedScope,
    absent_images,
    plan,
    proven_gone,
)
from tests.securityhub.conftest import ACCOUNT, DIGEST_A, DIGEST_B, REGION, image

NOW = datetime(2026, 11, 10, tzinfo=UTC)
SCOPE_A = ids.image_scope(image(DIGEST_A))
SCOPE_B = ids.image_scope(image(DIGEST_B))
BOTH = frozenset({"vulnerability", "secret"})


def entry(
    fid: str,
    scope: str = SCOPE_A,
    kind: str = "vulnerability",
    *,
    fp: str = "f1",
    state: str = ACTIVE,
    age: timedelta = timedelta(days=1),
) -> LedgerEntry:
    then = NOW - age
    return LedgerEntry(
        fid, scope, kind, fp, then - timedelta(days=30), then - timedelta(days=30), then, state
    )


def seen(fid: str, scope: str = SCOPE_A, kind: str = "vulnerability", fp: str = "f1") -> Observed:
    return Observed(fid, scope, kind, fp)


def actions(result) -> dict[str, Action]:  # type: ignore[no-untyped-def]
    return {c.finding_id: c.action for c in result.changes}


def test_each_action() -> None:
    result = plan(
        [ObservedScope(SCOPE_A, BOTH)],
        [seen("new"), seen("same"), seen("changed", fp="f2"), seen("back"), seen("old")],
        [
            entry("same"),
            entry("changed"),
            entry("back", state=ARCHIVED),
            entry("old", age=timedelta(days=8)),
            entry("gone"),
            entry("gone-before", state=ARCHIVED),
        ],
        NOW,
    )
    assert actions(result) == {
        "new": Action.CREATE,
        "changed": Action.UPDATE,
        "back": Action.REACTIVATE,
        "old": Action.REFRESH,
        "gone": Action.ARCHIVE,
    }
    assert result.unchanged == 1 and result.untouched == 1
    assert result.counts()["archived"] == 1


def test_refresh_interval_is_a_parameter() -> None:
    result = plan(
        [ObservedScope(SCOPE_A, BOTH)],
        [seen("x")],
        [entry("x", age=timedelta(hours=2))],
        NOW,
        refresh_interval=timedelta(hours=1),
    )
    assert actions(result) == {"x": Action.REFRESH}


def test_findings_outside_observed_scopes_are_never_touched() -> None:
    # Image B failed to scan: it is not an observed scope, its ledger entries stay as they are.
    result = plan(
        [ObservedScope(SCOPE_A, BOTH)],
        [seen("a")],
        [entry("a"), entry("b1", SCOPE_B), entry("b2", SCOPE_B)],
        NOW,
    )
    assert actions(result) == {}
    assert result.untouched == 2
    # An observed finding whose scope is not declared is not planned either.
    stray = plan([ObservedScope(SCOPE_A, BOTH)], [seen("b-new", SCOPE_B)], [], NOW)
    assert stray.changes == ()


def test_partial_scan_kinds_limit_archiving() -> None:
    pkg_only = ObservedScope(SCOPE_A, frozenset({"vulnerability"}))
    result = plan([pkg_only], [], [entry("v"), entry("s", kind="secret")], NOW)
    assert actions(result) == {"v": Action.ARCHIVE}
    assert result.untouched == 1


def test_runtime_scopes_are_never_archived_by_absence() -> None:
    scope = "ecs/1/r/web/app"
    result = plan(
        [ObservedScope(scope, frozenset({"runtime"}), archivable=False)],
        [],
        [entry("r", scope, "runtime")],
        NOW,
    )
    assert result.changes == () and result.untouched == 1


def test_duplicate_scopes_merge_kinds() -> None:
    result = plan(
        [
            ObservedScope(SCOPE_A, frozenset({"vulnerability"})),
            ObservedScope(SCOPE_A, frozenset({"secret"})),
        ],
        [],
        [entry("v"), entry("s", kind="secret")],
        NOW,
    )
    assert set(actions(result)) == {"v", "s"}


def test_absent_images_of_a_repository_and_what_proves_them_gone() -> None:
    prefix = ids.repository_scope(ACCOUNT, REGION, "team/app")
    other = ids.image_scope(image(DIGEST_B, "team/app2"))
    old = entry("b", SCOPE_B, age=timedelta(hours=2))
    recent = dataclasses.replace(
        entry("b2", SCOPE_B, age=timedelta(hours=2)), published_at=NOW - timedelta(seconds=10)
    )
    absent = absent_images([entry("a"), old, entry("o", other)], prefix, [DIGEST_A])
    assert [(a.scope, a.digest) for a in absent] == [(SCOPE_B, DIGEST_B)]
    # the listing came an hour after the last publish: proven
    proven, unsure = proven_gone(absent, NOW - timedelta(hours=1))
    assert [a.scope for a in proven] == [SCOPE_B] and unsure == []
    # one of the image's findings was published (by another run) 10 s before now: the
    # listing of a minute ago proves nothing, nor does a listing of unknown time
    absent = absent_images([old, recent], prefix, [DIGEST_A])
    assert absent[0].last_published == NOW - timedelta(seconds=10)
    assert proven_gone(absent, NOW - timedelta(minutes=1)) == ([], absent)
    assert proven_gone(absent, NOW + timedelta(seconds=30)) == ([], absent)  # within the skew
    assert proven_gone(absent, NOW + timedelta(minutes=2)) == (absent, [])
    assert proven_gone(absent, None) == ([], absent)
    result = plan([ObservedScope(SCOPE_B, BOTH)], [], [entry("a"), old, entry("o", other)], NOW)
    assert actions(result) == {"b": Action.ARCHIVE}
