"""The risk score: one number per image finding, to work the list from the top.

    risk = severity + exploit + in use + loaded, clamped to 0..100

| part     | value                                                                  |
|----------|------------------------------------------------------------------------|
| severity | CRITICAL 40, HIGH 30, MEDIUM 20, LOW 10, INFORMATIONAL 0               |
| exploit  | in CISA KEV 30; else EPSS >= 0.5: 20, >= 0.1: 10, >= 0.01: 5;          |
|          | a public exploit (ExploitAvailable) without those: at least 10; else 0 |
| in use   | running (ECS task or Lambda function) 20; unknown 10; not running 0    |
| loaded   | loaded by a running process 10; unknown 0; never loaded -20            |

A CRITICAL in KEV, running and loaded scores 100; the same CRITICAL in an image nobody runs
scores 70; a MEDIUM with EPSS 0.02 that runs but whose library was never loaded scores 25.
EPSS enters by bands, not as a raw probability, so that a finding's score and its place in
the list do not move with EPSS's daily drift (the raw `EpssScore` is in the finding too).

`urgent()` is the default alert: exploited or likely to be (KEV, or EPSS at or above the
alert threshold) AND running. Pure functions of data; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from securityhub.exposure import FALSE, TRUE, Exposure
from securityhub.findings import Severity

SEVERITY_POINTS = {
    Severity.CRITICAL: 40,
    Severity.HIGH: 30,
    Severity.MEDIUM: 20,
    Severity.LOW: 10,
    Severity.INFORMATIONAL: 0,
}
KEV_POINTS = 30
# (lowest EPSS probability, points), highest band first.
EPSS_BANDS = ((0.5, 20), (0.1, 10), (0.01, 5))
EXPLOIT_AVAILABLE_POINTS = 10
IN_USE_POINTS = {True: 20, None: 10, False: 0}
LOADED_POINTS = {TRUE: 10, FALSE: -20}
MAX_RISK = 100
# The default alert's EPSS threshold: FIRST's EPSS probability of exploitation in 30 days.
DEFAULT_ALERT_EPSS = 0.1


@dataclass(frozen=True)
class Exploitability:
    """What is known of a vulnerability's exploitation."""

    kev: bool = False  # in CISA's Known Exploited Vulnerabilities catalog
    epss: float | None = None  # FIRST EPSS probability, 0..1
    exploit_available: bool | None = None  # a public exploit exists (scanner's word)


def signals_of(finding: Any) -> Exploitability:
    """The exploit signals a normalized finding carries (`check.exploits` sets `kev` and
    `epss` on vulnerability findings; secrets have none)."""
    return Exploitability(
        kev=bool(getattr(finding, "kev", False)),
        epss=getattr(finding, "epss", None),
        exploit_available=getattr(finding, "exploit_available", None),
    )


def exploit_points(signals: Exploitability) -> int:
    if signals.kev:
        return KEV_POINTS
    points = 0
    if signals.epss is not None:
        points = next((p for low, p in EPSS_BANDS if signals.epss >= low), 0)
    if signals.exploit_available:
        points = max(points, EXPLOIT_AVAILABLE_POINTS)
    return points


def score(severity: Severity, signals: Exploitability, exposure: Exposure) -> int:
    """The documented risk score (module doc), 0..100."""
    total = (
        SEVERITY_POINTS[severity]
        + exploit_points(signals)
        + IN_USE_POINTS[exposure.in_use]
        + LOADED_POINTS.get(exposure.loaded, 0)
    )
    return max(0, min(MAX_RISK, total))


def urgent(signals: Exploitability, exposure: Exposure, epss_threshold: float) -> bool:
    """Exploitable (KEV, or EPSS at or above the threshold) in a running image."""
    exploitable = signals.kev or (signals.epss is not None and signals.epss >= epss_threshold)
    return bool(exploitable and exposure.in_use)


def risk_of(finding: Any) -> int:
    """The finding's score as attached by the sweep (-1 when it has none): a sort key."""
    exposure = getattr(finding, "exposure", None)
    return exposure.risk if exposure is not None and exposure.risk is not None else -1
