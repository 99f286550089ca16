"""The one retry helper: attempts, full-jitter backoff, Retry-After, an overall deadline."""

from __future__ import annotations

import random

import pytest
from botocore.exceptions import ClientError

from securityhub.retry import Retrier, RetryPolicy, retry_after


def _throttled(headers: dict[str, str]) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "TooManyRequestsException", "Message": "slow down"},
            "ResponseMetadata": {"HTTPStatusCode": 429, "HTTPHeaders": headers},
        },
        "BatchImportFindings",
    )


def test_attempts_and_full_jitter_backoff_within_the_cap() -> None:
    slept: list[float] = []
    retrier = Retrier(RetryPolicy(6, base=0.1, cap=0.5), sleep=slept.append, rng=random.Random(3))
    attempts = retrier.attempts()
    assert list(attempts) == [0, 1, 2, 3, 4, 5]
    assert attempts.made == 6 and len(slept) == 5
    for n, delay in enumerate(slept, start=1):
        assert 0 <= delay <= min(0.5, 0.1 * 2**n)
    assert attempts.slept == pytest.approx(sum(slept))


def test_a_loop_that_succeeds_stops_sleeping() -> None:
    slept: list[float] = []
    retrier = Retrier(RetryPolicy(5), sleep=slept.append)
    for attempt in retrier.attempts():
        if attempt == 1:
            break
    assert len(slept) == 1


def test_retry_after_is_honoured_and_capped() -> None:
    assert retry_after(_throttled({"retry-after": "3"})) == 3.0
    assert retry_after(_throttled({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"})) is None
    assert retry_after(_throttled({})) is None
    assert retry_after(ValueError("no response")) is None
    slept: list[float] = []
    retrier = Retrier(RetryPolicy(3, base=0.01, cap=5.0), sleep=slept.append)
    attempts = retrier.attempts()
    for attempt in attempts:
        attempts.after(_throttled({"retry-after": "2" if attempt == 0 else "60"}))
    assert slept == [2.0, 5.0]  # the server's wait, never beyond the cap


def test_the_deadline_ends_the_loop_on_the_injected_clock() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    retrier = Retrier(
        RetryPolicy(100, base=1.0, cap=1.0, deadline=3.5), sleep=sleep, clock=lambda: now[0]
    )
    attempts = retrier.attempts()
    for _ in attempts:
        attempts.after(seconds=1.0)
    assert attempts.made == 4 and now[0] == 3.0  # a fifth attempt would end past 3.5 s
    assert attempts.out_of_time


def test_a_policy_needs_an_attempt() -> None:
    with pytest.raises(ValueError, match="at least one attempt"):
        RetryPolicy(0)
