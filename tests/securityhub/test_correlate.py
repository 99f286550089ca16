"""The correlation plan: a pure function, every row of its table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from securityhub import ids
from securityhub.correlate import (
    ACTIVE,
    ARCHIVED,
    Action,
    LedgerEntry,
    Observed,
    ObservedScope,
    plan,
    vanished_scopes,
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


def test_vanished_scopes_of_a_repository() -> None:
    prefix = ids.repository_scope(ACCOUNT, REGION, "team/app")
    other = ids.image_scope(image(DIGEST_B, "team/app2"))
    scopes = vanished_scopes(
        [entry("a"), entry("b", SCOPE_B), entry("o", other)], prefix, [DIGEST_A], BOTH
    )
    assert scopes == [ObservedScope(SCOPE_B, BOTH)]
    result = plan(scopes, [], [entry("a"), entry("b", SCOPE_B), entry("o", other)], NOW)
    assert actions(result) == {"b": Action.ARCHIVE}
