"""The one retry policy of containerscan's own loops (everything botocore does not retry).

botocore retries each HTTP call itself (standard mode, a few attempts: see aws.py). What it
cannot retry is a *partial* success: BatchImportFindings' transient `FailedFindings`,
DynamoDB's `UnprocessedItems`/`UnprocessedKeys`, ECS RunTask's capacity failures, and a call
that botocore gave up on but the caller still wants to try once more. Every such loop runs
through `Retrier.attempts()`:

    attempts = retrier.attempts()
    for attempt in attempts:
        response = call(pending)
        pending = response.get("UnprocessedItems")
        if not pending:
            break
    else:
        give up

Between attempts it sleeps with full jitter, uniform(0, min(cap, base * 2**attempt)) (AWS
Architecture Blog, "Exponential Backoff And Jitter"), or the server's `Retry-After` when it
sent one (`attempts.after(exc)`), and stops early (`attempts.out_of_time`) rather than start
a wait whose longest possible length would end past `deadline` seconds on the injected clock.
Sleep, clock and random source are injectable, so tests wait for nothing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# botocore's standard retry mode caps a single backoff at 20 s (botocore/retries/standard.py);
# the same cap keeps our loops in step with it.
DEFAULT_CAP = 20.0


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts (the first included), the backoff base and cap, an overall budget."""

    attempts: int = 8
    base: float = 0.05
    cap: float = DEFAULT_CAP
    deadline: float | None = None  # seconds from the first attempt; None: no budget

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy needs at least one attempt")


def retry_after(exc: BaseException) -> float | None:
    """The `Retry-After` seconds of a botocore ClientError's HTTP response, if it sent one."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):  # an HTTP date: not worth parsing, use the backoff
        return None
    return seconds if seconds is not None and seconds >= 0 else None


class Attempts:
    """One retry loop: iterate for the attempt numbers; `after(exc)` passes a Retry-After."""

    def __init__(self, retrier: Retrier) -> None:
        self._retrier = retrier
        self._hint: float | None = None
        self.made = 0
        self.slept = 0.0
        self.out_of_time = False

    def after(self, exc: BaseException | None = None, seconds: float | None = None) -> None:
        """The next pause honours the server's Retry-After (from `exc`) or `seconds`."""
        self._hint = seconds if seconds is not None else (retry_after(exc) if exc else None)

    def __iter__(self) -> Iterator[int]:
        policy = self._retrier.policy
        started = self._retrier.clock()
        for attempt in range(policy.attempts):
            if attempt:
                longest = self._retrier.ceiling(attempt, self._hint)
                if policy.deadline is not None and (
                    self._retrier.clock() - started + longest > policy.deadline
                ):
                    self.out_of_time = True
                    return
                delay = self._retrier.delay(attempt, self._hint)
                self._hint = None
                self._retrier.sleep(delay)
                self.slept += delay
            self.made += 1
            yield attempt


class Retrier:
    """Hands out `Attempts` under one policy; thread-safe (each loop has its own state)."""

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.clock = clock
        self._random = rng or random.Random()  # noqa: S311 - jitter, not security

    def ceiling(self, attempt: int, hint: float | None = None) -> float:
        """The longest pause before `attempt`."""
        if hint is not None:
            return min(hint, self.policy.cap)
        return min(self.policy.cap, self.policy.base * 2**attempt)

    def delay(self, attempt: int, hint: float | None = None) -> float:
        """The pause before `attempt` (1-based retries): Retry-After if given, else jitter."""
        if hint is not None:
            return self.ceiling(attempt, hint)
        return self._random.uniform(0, self.ceiling(attempt))

    def attempts(self) -> Attempts:
        return Attempts(self)

    def with_policy(self, **changes: Any) -> Retrier:
        """The same sleep, clock and random source under a changed policy."""
        from dataclasses import replace

        return Retrier(
            replace(self.policy, **changes), sleep=self.sleep, clock=self.clock, rng=self._random
        )
