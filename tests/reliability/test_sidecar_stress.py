"""The sidecar's event path while the Qualys gateway is down ("minutes", shortened to 4 s).

A real HTTP server on loopback answers 503 while "down", then 200. Four threads flood the
pipeline with distinct events (nothing aggregates) through the real `QualysSink`. What must
hold: submitting never blocks (the traced application is never stalled), memory stays
bounded by the queues whatever the flood, every event is accounted for (delivered, or
counted as dropped or failed: nothing vanishes), and delivery resumes when the sink is back.
The tracer itself under fork/thread/exec storms and EPERM targets: test_sidecar_tracer_stress.py.
"""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from sidecar.events import RuntimeEvent
from sidecar.pipeline import Pipeline
from sidecar.policy import Performance, Policy
from sidecar.sinks import QualysSink
from tests.reliability.sidecar_world import FIGURES, Gateway, serving

OUTAGE_S = 4.0
PRODUCERS = 4
EVENTS_PER_PRODUCER = 25_000
QUEUE_SIZE = 2_000
SINK_QUEUE_SIZE = 8
BATCH = 100


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with serving(Gateway(up=False)) as server:  # down until the test sets `up`
        yield server


def event(producer: int, i: int) -> RuntimeEvent:
    return RuntimeEvent(
        timestamp=time.time(),
        category="network",
        rule="network:outside-allowlist",
        severity="medium",
        action="alert",
        pid=1000 + producer,
        ppid=1,
        process="/usr/bin/curl",
        syscall="connect",
        ip=f"10.{producer}.{i // 256 % 256}.{i % 256}",
        port=1024 + i % 60000,
    )


@pytest.mark.slow  # the outage lasts 4 s, then the queues drain
def test_a_sink_down_for_a_while_costs_drops_never_memory_or_a_stall(gateway: Gateway) -> None:
    sink = QualysSink(gateway.url, "stress-token-0123456789", attempts=2, backoff=0.05, timeout=2)
    policy = Policy(performance=Performance(sampling_rate=1.0, batch_size=BATCH,
                                            batch_timeout=0.2))  # fmt: skip
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        pipe = Pipeline(policy, [sink], queue_size=QUEUE_SIZE, sink_queue_size=SINK_QUEUE_SIZE)
        slowest_submit = 0.0
        lock = threading.Lock()

        def produce(producer: int) -> None:
            nonlocal slowest_submit
            worst = 0.0
            deadline = time.monotonic() + OUTAGE_S
            i = 0
            # Spread the flood over the outage: the queues fill and stay full.
            while i < EVENTS_PER_PRODUCER:
                started = time.perf_counter()
                pipe.submit(event(producer, i))
                worst = max(worst, time.perf_counter() - started)
                i += 1
                if i % 1000 == 0 and time.monotonic() < deadline:
                    time.sleep(OUTAGE_S / (EVENTS_PER_PRODUCER / 1000) * 0.9)
            with lock:
                slowest_submit = max(slowest_submit, worst)

        threads = [threading.Thread(target=produce, args=(p,)) for p in range(PRODUCERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        during = pipe.stats()
        peak = tracemalloc.get_traced_memory()[1] - baseline
        gateway.up.set()  # the sink is back
        for i in range(50):  # fresh events after the outage are delivered
            pipe.submit(event(9, i))
            time.sleep(0.01)
        pipe.close(timeout=15)
    finally:
        tracemalloc.stop()
    final = pipe.stats()
    total = PRODUCERS * EVENTS_PER_PRODUCER + 50
    worker = final["sinks"][sink.name]

    assert slowest_submit < 0.5, slowest_submit  # never blocked on the dead sink
    assert during["dropped"] > 0 or worker["dropped_batches"] > 0  # the outage really bit
    assert gateway.refused > 0
    # Bounded: the queues hold at most QUEUE_SIZE events + SINK_QUEUE_SIZE batches; 100k
    # events of ~1-2 KB each would be well over 100 MB if anything kept them.
    assert peak < 40 * 1024 * 1024, peak
    # Nothing vanished: every event is accepted by the pipeline or counted as dropped, and
    # every batch is sent, failed or dropped for the sink, with its events.
    assert final["events"] == total
    assert final["accepted"] + final["dropped"] == total
    assert (
        worker["sent_batches"] + worker["failed_batches"] + worker["dropped_batches"]
        == (final["batches"])
    )
    assert worker["sent_events"] == gateway.accepted > 0  # delivery resumed after the outage
    FIGURES["sink outage"] = (
        f"{total} events, peak {peak / 1e6:.1f} MB, slowest submit "
        f"{slowest_submit * 1e3:.2f} ms, {final['dropped']} pipeline drops and "
        f"{worker['dropped_batches']} sink batch drops counted"
    )
    print(
        f"sink outage: {total} events, peak {peak / 1e6:.1f} MB, slowest submit "
        f"{slowest_submit * 1e3:.2f} ms, pipeline drops {final['dropped']}, sink "
        f"{worker}, gateway refused {gateway.refused} posts, accepted {gateway.accepted} events"
    )
