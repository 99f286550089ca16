"""The risk score: the documented table and worked examples, held to the numbers."""

from __future__ import annotations

import pytest

from securityhub.exposure import FALSE, TRUE, UNKNOWN, Exposure
from securityhub.findings import Severity
from securityhub.risk import Exploitability, exploit_points, score, urgent

RUNNING_LOADED = Exposure(in_use=True, running_tasks=2, in_use_by=("prod/web",), loaded=TRUE)
IDLE = Exposure(in_use=False)


def test_the_documented_examples() -> None:
    """The three examples of the module doc and the README, exactly."""
    kev = Exploitability(kev=True, epss=0.97)
    assert score(Severity.CRITICAL, kev, RUNNING_LOADED) == 100
    assert score(Severity.CRITICAL, kev, IDLE) == 70
    never_loaded = Exposure(in_use=True, running_tasks=1, loaded=FALSE)
    assert score(Severity.MEDIUM, Exploitability(epss=0.02), never_loaded) == 25


@pytest.mark.parametrize(
    ("epss", "points"),
    [(None, 0), (0.0, 0), (0.0099, 0), (0.01, 5), (0.1, 10), (0.49, 10), (0.5, 20)],
)
def test_epss_enters_by_bands(epss: float | None, points: int) -> None:
    assert exploit_points(Exploitability(epss=epss)) == points


def test_kev_outranks_any_epss_and_a_public_exploit_counts() -> None:
    assert exploit_points(Exploitability(kev=True, epss=0.0)) == 30
    assert exploit_points(Exploitability(exploit_available=True)) == 10
    assert exploit_points(Exploitability(exploit_available=True, epss=0.6)) == 20


def test_unknown_in_use_sits_between_running_and_idle() -> None:
    signals = Exploitability()
    values = [
        score(Severity.HIGH, signals, Exposure(in_use=state)) for state in (True, None, False)
    ]
    assert values == [50, 40, 30]


def test_never_loaded_lowers_the_score_and_it_stays_in_range() -> None:
    low = Exposure(in_use=False, loaded=FALSE)
    assert score(Severity.INFORMATIONAL, Exploitability(), low) == 0  # clamped, not negative
    unknown = Exposure(in_use=True, loaded=UNKNOWN)
    loaded = Exposure(in_use=True, loaded=TRUE)
    assert (
        score(Severity.HIGH, Exploitability(), loaded)
        - score(Severity.HIGH, Exploitability(), unknown)
        == 10
    )


def test_urgent_needs_exploitability_and_a_running_image() -> None:
    running = Exposure(in_use=True)
    assert urgent(Exploitability(kev=True), running, 0.1)
    assert urgent(Exploitability(epss=0.1), running, 0.1)
    assert not urgent(Exploitability(epss=0.09), running, 0.1)
    assert not urgent(Exploitability(kev=True), IDLE, 0.1)
    assert not urgent(Exploitability(kev=True), Exposure(in_use=None), 0.1)  # unknown: no
    assert not urgent(Exploitability(exploit_available=True), running, 0.1)
