"""What the policy engine and the pipeline add to each watched stop.

`Engine.evaluate` and `Pipeline.submit` run on the tracer's stop path, inside the 35 µs p50
budget per watched stop (issue 5). This measures them on a mixed stream of decoded syscalls
for each bundled mode, and the pipeline's throughput to a sink, on this machine (other work
shares the CPU: read the figures as orders of magnitude).

    python -m bench.policy_engine
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from sidecar.engine import Engine
from sidecar.events import (
    ACCESS_CREATE,
    ACCESS_READ,
    ACCESS_WRITE,
    KIND_CONNECT,
    KIND_EXEC,
    KIND_OPEN,
    KIND_UNLINK,
    RuntimeEvent,
    SyscallEvent,
)
from sidecar.pipeline import Pipeline
from sidecar.policy import Performance, Policy, load_policies, policies_dir, resolve_policy

EVENTS = 50_000


def stream(n: int, seed: int = 1) -> list[SyscallEvent]:
    """A service-like mix: mostly reads of libraries, some writes, execs and connects."""
    rng = random.Random(seed)
    out: list[SyscallEvent] = []
    for i in range(n):
        roll = rng.random()
        base: dict[str, Any] = dict(
            timestamp=1000.0 + i,
            pid=100 + i % 50,
            tid=100 + i % 50,
            ppid=1,
            exe="/usr/bin/python3.11",
        )
        if roll < 0.60:
            out.append(
                SyscallEvent(
                    syscall="openat",
                    kind=KIND_OPEN,
                    path=f"/usr/lib/python3.11/m{i % 300}.py",
                    access=frozenset({ACCESS_READ}),
                    **base,
                )
            )
        elif roll < 0.75:
            out.append(
                SyscallEvent(
                    syscall="openat",
                    kind=KIND_OPEN,
                    path=f"/tmp/work/{i % 1000}.json",
                    access=frozenset({ACCESS_WRITE, ACCESS_CREATE}),
                    **base,
                )
            )
        elif roll < 0.80:
            out.append(
                SyscallEvent(
                    syscall="openat",
                    kind=KIND_OPEN,
                    path="/etc/hosts",
                    access=frozenset({ACCESS_WRITE}),
                    **base,
                )
            )
        elif roll < 0.85:
            out.append(
                SyscallEvent(
                    syscall="unlinkat", kind=KIND_UNLINK, path=f"/tmp/work/{i % 1000}.json", **base
                )
            )
        elif roll < 0.93:
            argv = rng.choice(
                [
                    ("/bin/sh", "-c", "ls"),
                    ("pip", "install", "x"),
                    ("/usr/bin/curl", "https://example.com/x"),
                ]
            )
            out.append(
                SyscallEvent(syscall="execve", kind=KIND_EXEC, path=argv[0], argv=argv, **base)
            )
        else:
            ip = rng.choice(["10.0.1.5", "93.184.216.34", "127.0.0.1"])
            out.append(
                SyscallEvent(
                    syscall="connect",
                    kind=KIND_CONNECT,
                    family="inet",
                    ip=ip,
                    port=rng.choice([443, 5432, 22]),
                    **base,
                )
            )
    return out


def time_engine(policy: Policy, events: Sequence[SyscallEvent]) -> tuple[float, float, int]:
    engine = Engine(policy, clock=lambda: 0.0)
    clock = time.perf_counter_ns
    samples: list[int] = []
    emitted = 0
    for event in events:
        start = clock()
        verdict = engine.evaluate(event)
        samples.append(clock() - start)
        emitted += len(verdict.events)
    return statistics.median(samples) / 1000, statistics.fmean(samples) / 1000, emitted


class NullSink:
    name = "null"

    def __init__(self) -> None:
        self.events = 0

    def send(self, batch: Sequence[RuntimeEvent]) -> None:
        self.events += len(batch)


def time_pipeline(n: int) -> None:
    sink = NullSink()
    policy = Policy(performance=Performance(sampling_rate=1.0, batch_size=100, batch_timeout=1.0))
    pipe = Pipeline(policy, [sink], queue_size=n)
    events = [
        RuntimeEvent(
            timestamp=float(i),
            category="network",
            rule="network:outside-allowlist",
            severity="medium",
            action="alert",
            pid=i % 100,
            ppid=1,
            process="/usr/bin/curl",
            syscall="connect",
            ip=f"6.6.{i % 50}.1",
            port=443,
        )
        for i in range(n)
    ]
    start = time.perf_counter()
    for event in events:
        pipe.submit(event)
    submitted = time.perf_counter() - start
    pipe.close(timeout=60)
    drained = time.perf_counter() - start
    stats = pipe.stats()
    print(
        f"pipeline: submit {submitted / n * 1e6:.2f} µs/event on the caller; "
        f"{n} events drained in {drained:.2f} s ({n / drained:,.0f}/s); "
        f"{stats['batches']} batches, {stats['aggregated']} aggregated into "
        f"{sink.events} sink events, dropped {stats['dropped']}"
    )


def main() -> None:
    events = stream(EVENTS)
    print(
        f"engine.evaluate over {EVENTS:,} decoded syscalls (60% read opens, 20% writes, "
        "8% execs, 7% connects); shared 2-vCPU box, figures are noisy"
    )
    modes = {
        "minimal": resolve_policy({"MONITORING_MODE": "minimal"}),
        "balanced": resolve_policy({"MONITORING_MODE": "balanced"}),
        "aggressive": load_policies([policies_dir() / "tracing-policy-schema.yaml"]),
    }
    for name, policy in modes.items():
        p50, mean, emitted = time_engine(policy, events)
        print(f"  {name:<10} p50 {p50:6.2f} µs  mean {mean:6.2f} µs  events emitted {emitted:,}")
    time_pipeline(100_000)


if __name__ == "__main__":
    main()
