"""Attach each image finding's exposure (in use, loaded) and risk score, before publishing.

One call from the sweep per image record: `Prioritizer.apply(findings, ...)` returns the
findings with `exposure` set (`securityhub.exposure`), the risk computed by
`securityhub.risk.score`. What it needs per (account, region) is read once by the sweep:
the in-use index (`check.inuse.read_in_use`), the last time each digest was seen in use
(`check.inuse.InUseHistory`), and what the sidecars saw loaded (`check.loaded`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from check.inuse import InUseHistory, InUseIndex, Usage, read_in_use
from securityhub import risk
from securityhub.aws import error_code
from securityhub.exposure import UNKNOWN, Exposure
from securityhub.findings import VulnerabilityFinding

# finding -> "true" | "false" | "unknown" (check.loaded.LoadedJoin.state)
LoadedState = Callable[[VulnerabilityFinding], str]


def exposure_of(
    usage: Usage | None, last_in_use_at: datetime | None, observed_at: datetime
) -> Exposure:
    """The in-use part of an image's exposure; `usage` None means the listing failed."""
    if usage is None:
        return Exposure(in_use=None, last_in_use_at=last_in_use_at)
    if usage.in_use:
        return Exposure(True, usage.running_tasks, usage.users, observed_at)
    return Exposure(False, 0, (), last_in_use_at)


def apply(
    findings: Sequence[Any], base: Exposure, loaded: LoadedState | None = None
) -> tuple[Any, ...]:
    """`findings` with their exposure and risk set (a new tuple; findings are frozen)."""
    out = []
    for finding in findings:
        state = UNKNOWN
        if loaded is not None and isinstance(finding, VulnerabilityFinding):
            state = loaded(finding)
        exposure = dataclasses.replace(base, loaded=state)
        exposure = dataclasses.replace(
            exposure,
            risk=risk.score(finding.severity, risk.signals_of(finding), exposure),
        )
        out.append(dataclasses.replace(finding, exposure=exposure))
    return tuple(out)


@dataclass
class Estate:
    """What one (account, region) runs, read once per sweep, and its findings' exposure."""

    in_use: InUseIndex
    last_seen: Mapping[str, datetime] = field(default_factory=dict)
    # (digest, finding, index digest) -> state: check.loaded.LoadedJoin
    loaded: Callable[[str, VulnerabilityFinding, str | None], str] | None = None
    errors: list[str] = field(default_factory=list)

    def exposure(self, digest: str, index_digest: str | None = None) -> Exposure:
        usage = self.in_use.usage(digest, index_digest)
        last = self.last_seen.get(digest) or (
            self.last_seen.get(index_digest) if index_digest else None
        )
        return exposure_of(usage, last, self.in_use.observed_at)

    def running_digests(self, platforms: Mapping[str, Sequence[Any]]) -> frozenset[str] | None:
        """Digests in use, an index counted when one of its platform images is; None when
        the listing was incomplete (`in_use_only` then skips nothing)."""
        if not self.in_use.complete:
            return None
        running = self.in_use.digests()
        indexes = {i for i, refs in platforms.items() if any(r.digest in running for r in refs)}
        return running | indexes

    def apply(self, findings: Sequence[Any], digest: str, index_digest: str | None = None):
        loaded = self.loaded
        state = (lambda f: loaded(digest, f, index_digest)) if loaded is not None else None
        return apply(findings, self.exposure(digest, index_digest), state)


def read_estate(
    sessions: Any,
    target: Any,
    ecr: Any,
    *,
    region: str,
    account_id: str,
    now: datetime,
    history: InUseHistory | None = None,
) -> Estate:
    """In-use index and history of one (account, region); failures are in `errors`."""
    index = read_in_use(
        sessions.client("ecs", region, target),
        sessions.client("lambda", region, target),
        ecr,
        account_id=account_id,
        region=region,
        now=now,
    )
    estate = Estate(index, errors=list(index.errors))
    if history is not None:
        try:
            estate.last_seen = history.last_seen(account_id, region)
            history.record(account_id, region, index.digests(), now)
        except (ClientError, BotoCoreError) as exc:
            estate.errors.append(f"in-use history: {error_code(exc)}")
    return estate
