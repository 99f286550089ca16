"""The tracer's own CPU time per watched stop, in process (no CLI, no sinks, no pipeline).

    python -m bench.sidecar_stop [--stops 100000] [--runs 3] [--tar-runs 4]

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

Then the file-heavy workload of bench/sidecar.py (`tar -x` of ~1,400 files into tmpfs) under
the balanced policy (issue 15's wrap-balanced row), in process: the stops one `tar -x` makes,
by kind (a seccomp stop per watched syscall, named; the exit stop of each open for writing,
judged again by its fd), and the tracer's CPU per stop. Both are proxies that other jobs on
the machine move little, unlike wall clock: the stop count not at all, the CPU per stop by
the cache and scheduler noise only.

User CPU is the Python side of a stop (what code changes move); system CPU is the waitpid,
PTRACE_GETREGS, PTRACE_CONT and the /proc/PID/mem read (plus the context switches). Other
jobs share this machine's CPUs: read the medians, and compare runs made back to back.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bench.sidecar import (
    EXAMPLES,
    FIM_EVERY_OPEN,
    STOPS,
    STRACE_BALANCED,
    make_archive,
    strace_known,
)

if TYPE_CHECKING:
    from sidecar.tracer import Tracer

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


def _in_child(work: Callable[[], str]) -> str:
    """`work()` in a forked child pinned to PIN_CPU, so that each run's rusage is its own;
    its answer (text) through a pipe."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the measuring child
        os.close(read)
        code = 1
        try:
            os.sched_setaffinity(0, {PIN_CPU})
            os.write(write, work().encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not data:
        raise RuntimeError("the measuring child failed")
    return data.decode()


def _measure(policy: Path, call: str, stops: int) -> tuple[float, float, float, float, float]:
    """(tracer user, tracer sys, tracee user, tracee sys, wall) in seconds for one run."""
    data = _in_child(lambda: " ".join(map(str, _traced_run(policy, call, stops))))
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
    return _run_measured(tracer, [sys.executable, "-c", code], "the tracee failed")


def _run_measured(tracer: Tracer, argv: list[str], failure: str) -> tuple[float, ...]:
    """Launch `argv` under `tracer` and trace it to its end: (the tracer's user and system
    CPU seconds, its children's user and system CPU seconds so far, the wall clock)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    tracer.launch(argv)
    tracer.start()
    started = time.perf_counter()
    if tracer.run() != 0:
        raise RuntimeError(failure)
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


# strace on issue 15's balanced set, as bench/sidecar.py runs it.
STRACE = ["strace", "-f", "-qq", "--seccomp-bpf", "-o", "/dev/null", "-e"]


def _tar_run(
    archive: Path, dest: Path, runs: int, count: bool, compiled: bool = True
) -> tuple[dict[str, int], float, float, float, float]:
    """In a forked child: the balanced policy over `runs` tar -x of the archive; (stops by
    kind, tracer user s, tracer sys s, wall s of the traced part, the tracees' CPU s). The
    stops are counted by kind only with `count` (the counting costs CPU, and every stop must
    reach Python to be counted: the compiled stop loop is off): else {"all": N}. `compiled`
    False: the Python stop loop (CONTAINERSCAN_SIDECAR_STOPLOOP=python)."""

    def work() -> str:
        kinds, figures = _traced_tar(archive, dest, runs, count, compiled and not count)
        line = " ".join(f"{k}={v}" for k, v in kinds.items())
        return f"{' '.join(map(str, figures))}\n{line}"

    figures, _, line = _in_child(work).partition("\n")
    user, system, wall, tracee = map(float, figures.split())
    kinds = {k: int(v) for k, v in (item.split("=") for item in line.split())}
    return kinds, user, system, wall, tracee


def _traced_tar(
    archive: Path, dest: Path, runs: int, count: bool, compiled: bool
) -> tuple[dict[str, int], tuple[float, ...]]:
    from sidecar import ptrace as pt
    from sidecar.engine import Engine
    from sidecar.events import RuntimeEvent
    from sidecar.policy import load_policies
    from sidecar.tracer import SECCOMP_STOP_STATUS, SYSCALL_STOP_STATUS, Tracer

    policies = [EXAMPLES / "fim-policy.yaml", EXAMPLES / "software-detection-policy.yaml"]
    engine = Engine(load_policies(policies))
    events: list[RuntimeEvent] = []
    tracer = Tracer(engine.requirements(), engine.evaluate, events.append)
    kinds: dict[str, int] = {}
    dispatch = tracer._dispatch
    regs = tracer._regs
    name_of = tracer.arch.name_of

    def counting(tid: int, status: int) -> None:  # the count is read after the call
        dispatch(tid, status)
        if status == SECCOMP_STOP_STATUS:
            nr = regs.orig_rax if isinstance(regs, pt.X86_64Regs) else regs.regs[8]
            kind = name_of(nr)
        elif status == SYSCALL_STOP_STATUS:
            kind = "exit-check"
        else:
            kind = "other"
        kinds[kind] = kinds.get(kind, 0) + 1

    if count:
        tracer._dispatch = counting  # type: ignore[method-assign]
    if not compiled:
        tracer._stoploop_built = True  # no C loop: as CONTAINERSCAN_SIDECAR_STOPLOOP=python
    script = f'for i in $(seq {runs}); do mkdir "$1/$i"; tar -xf "$2" -C "$1/$i"; done'
    argv = ["sh", "-c", script, "sh", str(dest), str(archive)]
    user, system, tracee_user, tracee_system, wall = _run_measured(
        tracer, argv, "tar failed under the tracer"
    )
    return kinds or {"all": tracer.stats.stops}, (user, system, wall, tracee_user + tracee_system)


def tar_report(runs: int, repeats: int) -> None:
    print(f"\nbalanced policy, tar -x x{runs}, in process, pinned (stops are per tar -x)")
    with tempfile.TemporaryDirectory(prefix="bench-stop-tar-", dir="/dev/shm") as tmp:
        work = Path(tmp)
        archive = make_archive(work)
        strace = [*STRACE, "trace=" + ",".join(strace_known(list(STRACE_BALANCED)))]
        kinds = _tar_run(archive, Path(tempfile.mkdtemp(dir=work)), runs, count=True)[0]
        ours, in_python, plain, traced = [], [], [], []
        for _ in range(repeats):  # side by side in each round: ours x2, untraced, strace
            ours.append(_tar_run(archive, Path(tempfile.mkdtemp(dir=work)), runs, count=False))
            in_python.append(
                _tar_run(archive, Path(tempfile.mkdtemp(dir=work)), runs, False, compiled=False)
            )
            plain.append(_plain_tar([], archive, work, runs))
            traced.append(_plain_tar(strace, archive, work, runs))
    total = sum(kinds.values())
    print(f"  stops per tar -x: {total / runs:.0f}")
    for kind, count in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"    {kind:<12} {count / runs:7.0f}")
    for label, runs_of in (("compiled stop loop", ours), ("Python stop loop", in_python)):
        user = statistics.median(r[1] / sum(r[0].values()) * 1e6 for r in runs_of)
        system = statistics.median(r[2] / sum(r[0].values()) * 1e6 for r in runs_of)
        print(
            f"  tracer CPU per stop, {label} (median of {repeats}): "
            f"user {user:.1f} us, sys {system:.1f} us"
        )
    print("  per tar -x, side by side (medians; wall is noisy; CPU = tracer + tar):")
    rows = {
        "wrap balanced (in process)": [(r[3], r[1] + r[2] + r[4]) for r in ours],
        "  the same, Python stop loop": [(r[3], r[1] + r[2] + r[4]) for r in in_python],
        "untraced": plain,
        "strace -f --seccomp-bpf": traced,
    }
    for label, figures in rows.items():
        wall = statistics.median(f[0] for f in figures) / runs
        cpu = statistics.median(f[1] for f in figures) / runs
        print(f"    {label:<28} wall {wall * 1000:5.0f} ms, CPU {cpu * 1000:5.0f} ms")


def _plain_tar(prefix: list[str], archive: Path, work: Path, runs: int) -> tuple[float, float]:
    """(wall s, CPU s of every process) of `runs` tar -x, pinned, under `prefix`."""
    dest = Path(tempfile.mkdtemp(dir=work))
    script = f'for i in $(seq {runs}); do mkdir "$1/$i"; tar -xf "$2" -C "$1/$i"; done'
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        ["taskset", "-c", str(PIN_CPU), *prefix, "sh", "-c", script, "sh", str(dest), str(archive)],
        check=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stops", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tar-runs", type=int, default=4, help="tar -x per run; 0: skip")
    parser.add_argument("--only-tar", action="store_true", help="only the tar -x figures")
    opts = parser.parse_args()
    if opts.only_tar:
        tar_report(opts.tar_runs, opts.runs)
        return
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
    if opts.tar_runs:
        tar_report(opts.tar_runs, opts.runs)


if __name__ == "__main__":
    main()
