"""Progress of a sweep: a live line on a terminal, periodic structured logs in ECS.

On a terminal the line is rewritten in place (`\\r`) at most every `TTY_INTERVAL` seconds.
Elsewhere (ECS, CI) one `sweep progress` log record with counts and an ETA every
`LOG_INTERVAL` seconds, which CloudWatch Logs Insights can query by field.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from securityhub import terminal
from securityhub.logs import fields, get_logger

log = get_logger("check.progress")

TTY_INTERVAL = 0.2
LOG_INTERVAL = 30.0


class Progress:
    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        log_interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.stream = stream
        self.interactive = (
            interactive
            if interactive is not None
            else bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())
        )
        self.log_interval = log_interval
        self.clock = clock
        self.started = clock()
        self.counts = {"scanned": 0, "cached": 0, "failed": 0}
        self._last = self.started
        self._lock = threading.Lock()

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def advance(self, outcome: str) -> None:
        with self._lock:
            self.counts[outcome] = self.counts.get(outcome, 0) + 1
            now = self.clock()
            interval = TTY_INTERVAL if self.interactive else self.log_interval
            if now - self._last >= interval or self.done == self.total:
                self._last = now
                self._emit(now)

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        elapsed = now - self.started
        done = self.done
        eta = (elapsed / done * (self.total - done)) if done else 0.0
        parts = " ".join(f"{k} {v}" for k, v in self.counts.items())
        return f"[{done}/{self.total}] {parts}  elapsed {elapsed:.0f}s  eta {eta:.0f}s"

    def _emit(self, now: float) -> None:
        if self.interactive and self.stream is not None:
            self.stream.write("\r" + self.line(now) + "\x1b[K")
            self.stream.flush()
        else:
            elapsed = now - self.started
            log.info(
                "sweep progress",
                extra=fields(
                    done=self.done, total=self.total, elapsed_s=round(elapsed, 1), **self.counts
                ),
            )

    def finish(self) -> None:
        if self.interactive and self.stream is not None:
            self.stream.write("\r" + self.line() + "\x1b[K\n")
            self.stream.flush()


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain text table (the summary at the end of a run); every cell escaped."""
    return terminal.table(rows, columns)
