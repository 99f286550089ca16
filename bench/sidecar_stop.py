"""The tracer's own CPU time per watched stop, in process (no CLI, no sinks, no pipeline).

    python -m bench.sidecar_stop [--stops 100000] [--runs 3]

A tracee loops on one watched syscall under `Tracer` with the real `Engine`, everything
pinned to CPU 0 as in bench/sidecar.py. Printed per stop, median of the runs: the tracer's
user and system CPU (getrusage of this process, start-up subtracted with a one-stop run),
the tracee's, and the wall time of the whole loop. Cases:

- quiet open: FIM on every open (the bench's policy), the tracee opens /dev/null read-only:
  a stop the engine rejects without an event (the commonest stop of that policy);
- via symlink, relative: the same with a path the kernel resolves through a symlink
  (`/lib/os-release` on merged-/usr) or from a dirfd: the cost of resolving it as the kernel will
  (sidecar/resolve.py: an O_PATH open and a readlink of it);
- write open: an open for writing outside the watched paths: quiet at entry, stopped again
  at its exit and judged by its fd (two stops per call);
- event: a syscallFiltering rule on getppid: every stop builds a SyscallEvent and a
  RuntimeEvent (submitted to a list here, not to the pipeline).

User CPU is the Python side of a stop (what code changes move); system CPU is the waitpid,
PTRACE_GETREGS, PTRACE_CONT and the /proc/PID/mem read (plus the context switches). Other
jobs share this machine's CPUs: read the medians, and compare runs made back to back.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.sidecar import FIM_EVERY_OPEN, STOPS

PIN_CPU = 0
CASES = {
    "quiet open": (FIM_EVERY_OPEN, "os.close(os.open('/dev/null', os.O_RDONLY))"),
    # Path resolution (issue 12): an absolute path through a symlink (/lib on merged-/usr:
    # the full O_PATH open + readlink), and a relative one (resolved from the thread's cwd).
    "via symlink": (FIM_EVERY_OPEN, "os.close(os.open('/lib/os-release', os.O_RDONLY))"),
    "relative": (FIM_EVERY_OPEN, "os.close(os.open('null', os.O_RDONLY, dir_fd=DEV))"),
    # An open for writing outside the watched paths: quiet at entry, then stopped again at
    # its exit and judged by the fd it returns (two stops).
    "write open": (FIM_EVERY_OPEN, "os.close(os.open('/dev/null', os.O_WRONLY))"),
    "event": (STOPS, "os.getppid()"),
}


def _measure(policy: Path, call: str, stops: int) -> tuple[float, float, float, float, float]:
    """(tracer user, tracer sys, tracee user, tracee sys, wall) in seconds for one run,
    in a forked child so that each run's rusage is its own."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the measuring child
        os.close(read)
        code = 1
        try:
            os.sched_setaffinity(0, {PIN_CPU})
            figures = _traced_run(policy, call, stops)
            os.write(write, " ".join(map(str, figures)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not data:
        raise RuntimeError("the measuring child failed")
    user, system, tracee_user, tracee_system, wall = map(float, data.split())
    return user, system, tracee_user, tracee_system, wall


def _traced_run(policy: Path, call: str, stops: int) -> tuple[float, ...]:
    from sidecar.engine import Engine
    from sidecar.events import RuntimeEvent
    from sidecar.policy import load_policies
    from sidecar.tracer import Tracer

    engine = Engine(load_policies([policy]))
    events: list[RuntimeEvent] = []
    tracer = Tracer(engine.requirements(), engine.evaluate, events.append)
    code = f"import os\nDEV = os.open('/dev', os.O_RDONLY)\nfor _ in range({stops}): {call}\n"
    before = resource.getrusage(resource.RUSAGE_SELF)
    tracer.launch([sys.executable, "-c", code])
    tracer.start()
    started = time.perf_counter()
    if tracer.run() != 0:
        raise RuntimeError("the tracee failed")
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    tracee = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (
        after.ru_utime - before.ru_utime,
        after.ru_stime - before.ru_stime,
        tracee.ru_utime,
        tracee.ru_stime,
        wall,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stops", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    print("tracer CPU per watched stop, in process, pinned to one CPU (shared machine: noisy)")
    print(f"  {'case':<11} {'tracer user':>12} {'tracer sys':>11} {'tracee u+s':>11} {'wall':>8}")
    with tempfile.TemporaryDirectory(prefix="bench-stop-") as tmp:
        for name, (text, call) in CASES.items():
            policy = Path(tmp) / "policy.yaml"
            policy.write_text(text)
            base = _measure(policy, call, 1)  # start-up: imports, policy, fork, exec
            runs = [_measure(policy, call, opts.stops) for _ in range(opts.runs)]
            per = [
                statistics.median((r[i] - base[i]) / opts.stops * 1e6 for r in runs)
                for i in range(5)
            ]
            print(
                f"  {name:<11} {per[0]:>9.2f} us {per[1]:>8.2f} us {per[2] + per[3]:>8.2f} us"
                f" {per[4]:>5.2f} us"
            )


if __name__ == "__main__":
    main()
