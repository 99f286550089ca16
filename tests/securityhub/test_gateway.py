"""The gateway against the emulator: batching, rate limits, retries, every FailedFindings entry."""

from __future__ import annotations

import random
from typing import Any

import pytest

from securityhub import emulator
from securityhub.aws import SessionFactory
from securityhub.errors import SecurityHubError
from securityhub.gateway import (
    MAX_BATCH_BYTES,
    MAX_BATCH_FINDINGS,
    Gateway,
    RateLimiter,
    batches,
    encoded,
    invalid_field,
)
from tests.securityhub.conftest import FAST_GATEWAY, REGION
from tests.securityhub.test_emulator import finding


@pytest.fixture
def gateway(sessions: SessionFactory) -> Gateway:
    return Gateway(sessions.client("securityhub", REGION), rng=random.Random(1), **FAST_GATEWAY)


def test_batches_respect_count_and_size() -> None:
    small = [finding(f"cs/{i}") for i in range(250)]
    assert [len(b) for b in batches(small)] == [100, 100, 50]
    big = [
        finding(f"cs/{i}", Description="x" * 1000, Note={"Text": "y" * 200_000}) for i in range(70)
    ]
    split = batches(big)
    assert all(len(b) <= MAX_BATCH_FINDINGS for b in split)
    assert all(encoded({"Findings": b}) <= MAX_BATCH_BYTES for b in split)
    assert len(split) > 1 and sum(len(b) for b in split) == 70
    assert [f["Id"] for b in split for f in b] == [f["Id"] for f in big]


def test_invalid_field_names_the_field() -> None:
    assert invalid_field(
        "Finding does not adhere ... data.Remediation.Recommendation.Text should NOT"
    ) == ("Remediation.Recommendation.Text")
    assert (
        invalid_field("data should have required property 'FindingProviderFields'")
        == "FindingProviderFields"
    )
    assert invalid_field("something else") == "unknown"


def test_rate_limiter_paces_calls() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(10.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(21):
        limiter.acquire()
    assert now[0] == pytest.approx(2.0)  # 21 calls at 10/s: the first is free
    assert all(s == pytest.approx(0.1) for s in slept)


def test_imports_land_despite_throttling_and_transient_failures(
    gateway: Gateway, sessions: SessionFactory
) -> None:
    state = emulator.set_faults(emulator.Faults(throttle=0.3, failed=0.1, seed=5))
    docs = [finding(f"cs/{i:04d}") for i in range(1000)]
    outcome = gateway.import_findings(docs)
    assert sorted(outcome.accepted) == sorted(d["Id"] for d in docs)
    assert outcome.failed == {}
    assert state.throttled > 0 and state.failed_findings > 0
    assert outcome.retried_calls == state.throttled
    assert outcome.retried_findings == state.failed_findings
    emulator.set_faults()
    stored = list(
        gateway.get_findings({"Id": [{"Value": "cs/", "Comparison": "PREFIX"}]}, page_size=100)
    )
    assert len(stored) == 1000


def test_invalid_input_is_reported_with_the_field_and_not_retried(gateway: Gateway) -> None:
    state = emulator.set_faults(emulator.Faults())
    docs = [finding("cs/ok"), finding("cs/bad", Title="t" * 400)]
    outcome = gateway.import_findings(docs)
    assert outcome.accepted == ["cs/ok"]
    assert outcome.invalid_fields == {"cs/bad": "Title"}
    assert outcome.failed["cs/bad"].startswith("InvalidInput (Title)")
    assert state.calls["BatchImportFindings"] == 1


def test_whole_request_denied_fails_every_finding(gateway: Gateway) -> None:
    docs = [finding("cs/1"), finding("cs/2", AwsAccountId="210987654321")]
    outcome = gateway.import_findings(docs)
    assert outcome.accepted == []
    assert set(outcome.failed) == {"cs/1", "cs/2"}
    assert all("AccessDeniedException" in r for r in outcome.failed.values())


def test_gives_up_after_max_attempts_and_says_so(sessions: SessionFactory) -> None:
    emulator.set_faults(emulator.Faults(throttle=1.0))
    gateway = Gateway(sessions.client("securityhub", REGION), max_attempts=3, **FAST_GATEWAY)
    outcome = gateway.import_findings([finding("cs/1")])
    assert outcome.calls == 3 and "after 3 attempts" in outcome.failed["cs/1"]
    with pytest.raises(SecurityHubError):
        list(gateway.get_findings({}))


def test_get_findings_retries_throttling(gateway: Gateway) -> None:
    gateway.import_findings([finding(f"cs/{i}") for i in range(30)])
    state = emulator.set_faults(emulator.Faults(throttle=0.5, seed=2))
    found: list[Any] = list(gateway.get_findings({}, page_size=5))
    assert len({f["Id"] for f in found}) == 30
    assert state.throttled > 0


class _NoWait:
    """botocore.endpoint's `time` without the retry sleeps: the calls are what is counted."""

    def sleep(self, _seconds: float) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        import time

        return getattr(time, name)


def test_a_batch_throttled_on_every_call_costs_gateway_times_botocore_attempts(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retries do not stack into a storm: with the project's client configuration (botocore
    standard mode, a few attempts) under the gateway's attempts, a batch that is throttled on
    every HTTP call costs exactly their product, each attempt counted by botocore's own
    `before-send` event (the adaptive mode used before cost 110 such calls)."""
    import botocore.endpoint

    from securityhub.aws import SECURITY_HUB_ATTEMPTS
    from securityhub.retry import Retrier

    monkeypatch.setattr(botocore.endpoint, "time", _NoWait())
    client = SessionFactory(REGION).client("securityhub", REGION)  # as the publisher builds it
    sent: list[str] = []
    client.meta.events.register(
        "before-send.securityhub.BatchImportFindings", lambda **_: sent.append("call")
    )
    emulator.set_faults(
        emulator.Faults(throttle=1.0, operations=frozenset({"BatchImportFindings"}))
    )
    slept: list[float] = []
    gateway = Gateway(client, max_attempts=4, sleep=slept.append, import_rate=1e6)
    assert isinstance(gateway.retrier, Retrier)
    outcome = gateway.import_findings([finding("cs/1")])
    assert "after 4 attempts" in outcome.failed["cs/1"]
    assert len(sent) == 4 * SECURITY_HUB_ATTEMPTS == 12
    assert len(slept) == 3  # the gateway waited between its own attempts, through the helper
