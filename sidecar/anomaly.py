"""Anomaly detection against a learned baseline.

For a learning window (seconds from the first event, or a number of events, whichever ends
first) every executable run, every outbound destination (ip:port) and every directory
written to is recorded as normal. After the window the baseline is frozen: a feature never
seen before adds its weight to the score of the process that showed it, once per process
and feature. When a process's score reaches the threshold (ALERT_THRESHOLD) one anomaly
event fires and the score starts again from zero. A single novelty stays below the default
threshold; a new executable that also connects somewhere new does not.

The baseline is frozen on purpose: learning after the window would teach the detector an
attacker's repeated behaviour. Memory is bounded (features and tracked processes are capped).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from sidecar.events import (
    ACCESS_CREATE,
    ACCESS_WRITE,
    KIND_CHMOD,
    KIND_CONNECT,
    KIND_EXEC,
    KIND_OPEN,
    KIND_RENAME,
    KIND_SENDTO,
    KIND_UNLINK,
    RuntimeEvent,
    SyscallEvent,
)
from sidecar.policy_model import AnomalyDetection

# How much each kind of novelty counts towards ALERT_THRESHOLD (default 0.7).
WEIGHTS = {"executable": 0.5, "destination": 0.4, "written_dir": 0.3}
# Caps that keep a long-running sidecar's memory bounded.
MAX_BASELINE_FEATURES = 100_000
MAX_TRACKED_PROCESSES = 4_096


class AnomalyDetector:
    def __init__(self, config: AnomalyDetection, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._started: float | None = None
        self._learned = 0
        self._learning = True
        self._baseline: dict[str, set[str]] = {kind: set() for kind in WEIGHTS}
        # pid -> (score, novelties already counted for that pid)
        self._scores: dict[int, tuple[float, frozenset[tuple[str, str]]]] = {}

    @property
    def learning(self) -> bool:
        if (
            self._learning
            and self._started is not None
            and (
                self._learned >= self._config.learning_events
                or self._clock() - self._started >= self._config.learning_window
            )
        ):
            self._learning = False
        return self._learning

    def baseline(self) -> dict[str, frozenset[str]]:
        return {kind: frozenset(values) for kind, values in self._baseline.items()}

    def observe(self, event: SyscallEvent) -> RuntimeEvent | None:
        feature = features(event)
        if feature is None:
            return None
        if self._started is None:
            self._started = self._clock()
        kind, value = feature
        if self.learning:
            self._learned += 1
            known = self._baseline[kind]
            if len(known) < MAX_BASELINE_FEATURES:
                known.add(value)
            return None
        if value in self._baseline[kind]:
            return None
        score, seen = self._scores.pop(event.pid, (0.0, frozenset()))
        if feature not in seen:
            score += WEIGHTS[kind]
            seen = seen | {feature}
        if score + 1e-9 >= self._config.alert_threshold:
            self._scores[event.pid] = (0.0, seen)
            self._trim()
            return self._event(event, score, sorted(f"{k}={v}" for k, v in seen))
        self._scores[event.pid] = (score, seen)  # re-inserted: most recent last
        self._trim()
        return None

    def _trim(self) -> None:
        while len(self._scores) > MAX_TRACKED_PROCESSES:
            del self._scores[next(iter(self._scores))]

    def _event(self, event: SyscallEvent, score: float, novelties: list[str]) -> RuntimeEvent:
        process = event.path if event.kind == KIND_EXEC and event.path else event.exe
        return RuntimeEvent(
            timestamp=event.timestamp,
            category="anomaly",
            rule="anomaly:baseline-deviation",
            severity=self._config.severity,
            action=self._config.action,
            pid=event.pid,
            ppid=event.ppid,
            process=process,
            syscall=event.syscall,
            path=event.path,
            ip=event.ip,
            port=event.port,
            container=event.container,
            message=f"behaviour outside the learned baseline (score {score:.2f})",
            score=round(score, 3),
            extra={"novelties": novelties},
        )


def features(event: SyscallEvent) -> tuple[str, str] | None:
    """The baseline feature an event shows, if any."""
    if event.kind == KIND_EXEC:
        path = event.path or event.exe
        return ("executable", path) if path else None
    if event.kind in (KIND_CONNECT, KIND_SENDTO):
        if event.ip is None or event.family not in ("inet", "inet6"):
            return None
        return ("destination", f"{event.ip}:{event.port}")
    written = None
    if event.kind == KIND_OPEN and event.access & {ACCESS_WRITE, ACCESS_CREATE}:
        written = event.path
    elif event.kind in (KIND_UNLINK, KIND_CHMOD):
        written = event.path
    elif event.kind == KIND_RENAME:
        written = event.path2 or event.path
    if written:
        return ("written_dir", os.path.dirname(written) or "/")
    return None
