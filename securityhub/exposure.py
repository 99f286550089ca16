"""Where an image finding stands in the running estate: in use, loaded, and its risk.

`Exposure` is attached to an image finding (`VulnerabilityFinding.exposure`,
`SecretFinding.exposure`) by the sweep just before it is published; scanners never set it
and the scan cache never stores it (it describes the estate tonight, not the image). ASFF
building turns it into `ProductFields`:

    containerscan/InUse           true | false | unknown   (unknown: the listing failed)
    containerscan/RunningTasks    ECS tasks running the image now
    containerscan/InUseBy         cluster/service, cluster/family, lambda/function (bounded)
    containerscan/LastInUseAt     the last sweep that saw it in use (RFC 3339)
    containerscan/LoadedAtRuntime true | false | unknown   (vulnerabilities only)
    containerscan/Risk            0-100, see securityhub.risk

A change of in-use state, of the users, of the loaded state or of the risk is a content
change (the finding is re-imported at once). `RunningTasks` and `LastInUseAt` change with
every scale-out and every night, so they are left out of the content fingerprint
(`VOLATILE_PRODUCT_FIELDS`) and only ride along with imports that happen anyway: an
unchanged night imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

KEY = "containerscan"
IN_USE = f"{KEY}/InUse"
RUNNING_TASKS = f"{KEY}/RunningTasks"
IN_USE_BY = f"{KEY}/InUseBy"
LAST_IN_USE_AT = f"{KEY}/LastInUseAt"
LOADED_AT_RUNTIME = f"{KEY}/LoadedAtRuntime"
RISK = f"{KEY}/Risk"
VOLATILE_PRODUCT_FIELDS = frozenset({RUNNING_TASKS, LAST_IN_USE_AT})
# InUseBy lists at most this many users, then "and N more" (the count keeps it honest).
MAX_IN_USE_BY = 10

TRUE, FALSE, UNKNOWN = "true", "false", "unknown"


@dataclass(frozen=True)
class Exposure:
    """The in-use and loaded state of one image finding, and its risk score."""

    in_use: bool | None = None  # None: unknown
    running_tasks: int = 0
    in_use_by: tuple[str, ...] = ()
    last_in_use_at: datetime | None = None
    loaded: str = UNKNOWN  # TRUE | FALSE | UNKNOWN
    risk: int | None = None

    @property
    def in_use_label(self) -> str:
        return UNKNOWN if self.in_use is None else (TRUE if self.in_use else FALSE)


def _stamp(when: datetime) -> str:
    from securityhub.asff import timestamp

    return timestamp(when)


def in_use_by_text(users: tuple[str, ...]) -> str:
    shown = ", ".join(users[:MAX_IN_USE_BY])
    if len(users) > MAX_IN_USE_BY:
        shown += f" and {len(users) - MAX_IN_USE_BY} more"
    return shown


def product_fields(exposure: Exposure | None, *, vulnerability: bool) -> dict[str, Any]:
    """The ProductFields of an exposure (empty when the finding has none)."""
    if exposure is None:
        return {}
    doc: dict[str, Any] = {
        IN_USE: exposure.in_use_label,
        RUNNING_TASKS: str(exposure.running_tasks) if exposure.in_use is not None else None,
        IN_USE_BY: in_use_by_text(exposure.in_use_by) or None,
        LAST_IN_USE_AT: _stamp(exposure.last_in_use_at) if exposure.last_in_use_at else None,
    }
    if vulnerability:
        doc[LOADED_AT_RUNTIME] = exposure.loaded
    if exposure.risk is not None:
        doc[RISK] = str(exposure.risk)
    return doc
