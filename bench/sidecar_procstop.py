"""The tracer's CPU per *process* stop (fork, exec, exit), in process, pinned to one CPU.

    python -m bench.sidecar_procstop [--runs 3] [--spawns 300] [--tar-runs 4] [--profile]

Under the minimal policy (execve, connect) none of a workload's own syscalls stops: what a
traced workload pays is its process stops. Two fork+exec-heavy workloads:

- `true`: a shell loop running `/bin/true` N times (dash forks, the child execs an absolute
  path: one fork event, one initial stop, one execve seccomp stop, one exec event, one exit);
- `tar`: the file-heavy driver of bench/sidecar.py (`subprocess.run(["tar", ...])` N times
  from Python: a vfork each, and an execve per PATH entry until one is found: the
  failed ones are execvp's probes, which the tracer must recognise and drop).

Each runs untraced, under `strace -f --seccomp-bpf -e trace=execve,connect`, and under the
real `Tracer` with the real `Engine` in wrap mode (`launch`) and in attach mode with the
filter injected (`configure_attach(seccomp_filter=True)`): wall clock and CPU (tracer +
workload) side by side in each round, medians of the rounds. Then, from one more run of each
tracer mode with the dispatch timed, the tracer's CPU (its thread's CPU clock around each
dispatch; on one CPU a resume can run the tracee inside the call, which this clock does not
count) per stop kind and per spawned process. `--profile`: where the process stops go
(cProfile over the tracer's loop, the `true` workload, both modes).

Everything (the measuring child, its tracer and its workload) runs on CPU 0. Other jobs share
this machine: compare the rows of one run, and read the CPU figures before the wall clock.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.sidecar import DRIVER, EXAMPLES, WORKLOAD_PYTHON, make_archive
from bench.sidecar_stop import PIN_CPU, _in_child  # pinned to CPU 0, rusage its own

if TYPE_CHECKING:
    from sidecar.tracer import Tracer

MODES = ("untraced", "strace", "wrap", "attach")
STRACE = ["strace", "-f", "-qq", "--seccomp-bpf", "-o", "/dev/null", "-e", "trace=execve,connect"]
# Waits for a line on stdin (the gate: attach mode attaches first), then spawns.
TRUE_LOOP = 'read go; i=0; while [ "$i" -lt {n} ]; do /bin/true; i=$((i + 1)); done'


class Workload:
    """A command that waits at a gate (attach mode opens it once the filter is in)."""

    def __init__(self, name: str, argv: list[str], spawns: int, gate: Path | None) -> None:
        self.name = name
        self.argv = argv
        self.spawns = spawns  # processes it starts after the gate
        self.gate = gate  # a file to create; None: a line on stdin


def workloads(work: Path, spawns: int, tar_runs: int) -> list[Workload]:
    driver = work / "driver.py"
    driver.write_text(DRIVER)
    archive = make_archive(work)
    out: list[Workload] = [Workload("true", ["sh", "-c", TRUE_LOOP.format(n=spawns)], spawns, None)]
    if tar_runs:
        gate = work / "go"
        dest = work / "dest"
        argv = [WORKLOAD_PYTHON, str(driver), "files", str(work / "out"), "", str(gate)]
        out.append(Workload("tar", argv, tar_runs, gate))
        out[-1].argv[4] = f"{archive},{tar_runs},{dest}"
    return out


def _fresh(load: Workload) -> None:
    """A clean destination and a closed gate for the next run."""
    if load.gate is not None:
        load.gate.unlink(missing_ok=True)
        dest = load.gate.parent / "dest"
        subprocess.run(["rm", "-rf", str(dest)], check=True)
        dest.mkdir()


def _tracer(policy: Path) -> Tracer:
    from sidecar.engine import Engine
    from sidecar.events import RuntimeEvent
    from sidecar.policy import load_policies
    from sidecar.tracer import Tracer

    engine = Engine(load_policies([policy]))
    events: list[RuntimeEvent] = []
    return Tracer(engine.requirements(), engine.evaluate, events.append)


def _measured(
    load: Workload, mode: str, policy: Path, timed: dict[str, list[int]] | None, profile: bool
) -> str:
    """In the measuring child: one run; "wall tracer_cpu total_cpu" (seconds), then the
    timed dispatches (kind=count:ns ...) or the profile."""
    stdin_r, stdin_w = os.pipe()
    os.dup2(stdin_r, 0)
    os.close(stdin_r)
    if mode in ("untraced", "strace"):
        argv = load.argv if mode == "untraced" else [*STRACE, *load.argv]
        started = time.perf_counter()
        _open_gate(load, stdin_w)
        subprocess.run(argv, check=True, stdin=0)
        wall = time.perf_counter() - started
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return _figures(load, wall, 0.0, kids.ru_utime + kids.ru_stime)
    tracer = _tracer(policy)
    if timed is not None:
        _time_dispatch(tracer, timed)
    if mode == "wrap":
        tracer.launch(load.argv)
        tracer.start()
    else:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the workload, waiting at its gate
            os.close(stdin_w)
            os.execvp(load.argv[0], load.argv)
        _wait_exec(pid, load.argv)
        tracer.configure_attach(seccomp_filter=True)
        tracer.attach([pid])
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    _open_gate(load, stdin_w)
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    status = tracer.run()
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    if status != 0:
        raise RuntimeError(f"{load.name} failed under the tracer ({mode}): {status}")
    tracer_cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    line = _figures(load, wall, tracer_cpu, tracer_cpu + kids.ru_utime + kids.ru_stime)
    if timed is not None:
        line += "\n" + " ".join(f"{k}={v[0]}:{v[1]}" for k, v in timed.items())
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(22)
        line += "\n" + text.getvalue()
    return line


def _wait_exec(pid: int, argv: list[str]) -> None:
    """Until the forked workload has exec'd (attaching to the fork itself would trace the
    rest of its exec, and the Python in it)."""
    want = "\0".join(argv).encode() + b"\0"
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/cmdline").read_bytes() != want:
        if time.monotonic() > deadline:
            raise RuntimeError("the workload did not start")
        time.sleep(0.001)


def _figures(load: Workload, wall: float, tracer: float, total: float) -> str:
    """ "wall tracer_cpu total_cpu" (seconds). The tar driver times itself from its gate
    (its Python start-up excluded, as in bench/sidecar.py): its own wall clock, and its
    own, its children's and its tracer's CPU."""
    if load.gate is not None:
        wall, total = map(float, (load.gate.parent / "out").read_text().split())
    return f"{wall} {tracer} {total}"


def _open_gate(load: Workload, stdin_w: int) -> None:
    os.write(stdin_w, b"go\n")
    os.close(stdin_w)
    if load.gate is not None:
        load.gate.write_text("go")


def _time_dispatch(tracer: Tracer, timed: dict[str, list[int]]) -> None:
    """Wrap the tracer's dispatch: per stop kind, [count, tracer thread CPU ns]."""
    from sidecar import ptrace as pt
    from sidecar.tracer import SECCOMP_STOP_STATUS

    dispatch = tracer._dispatch
    regs = tracer._regs
    name_of = tracer.arch.name_of
    clock = time.thread_time_ns
    events = {
        pt.PTRACE_EVENT_FORK: "fork-event",
        pt.PTRACE_EVENT_VFORK: "vfork-event",
        pt.PTRACE_EVENT_CLONE: "clone-event",
        pt.PTRACE_EVENT_EXEC: "exec-event",
        pt.PTRACE_EVENT_STOP: "initial-stop",
    }

    def timing(tid: int, status: int) -> None:
        start = clock()
        dispatch(tid, status)
        spent = clock() - start
        if status == SECCOMP_STOP_STATUS:
            nr = regs.orig_rax if isinstance(regs, pt.X86_64Regs) else regs.regs[8]
            kind = f"seccomp-{name_of(nr)}"
        elif os.WIFEXITED(status) or os.WIFSIGNALED(status):
            kind = "exit"
        elif os.WIFSTOPPED(status) and status >> 16:
            kind = events.get(status >> 16, f"event-{status >> 16}")
        elif os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP:
            kind = "initial-stop"
        else:
            kind = "other"
        entry = timed.setdefault(kind, [0, 0])
        entry[0] += 1
        entry[1] += spent

    tracer._dispatch = timing  # type: ignore[method-assign]


def run_once(load: Workload, mode: str, policy: Path, how: str = "") -> list[str]:
    _fresh(load)
    timed: dict[str, list[int]] | None = {} if how == "timed" else None
    return _in_child(lambda: _measured(load, mode, policy, timed, how == "profile")).split("\n", 1)


def report(load: Workload, rounds: list[dict[str, list[float]]], timed: dict[str, str]) -> None:
    print(f"\n{load.name}: {load.spawns} spawns after the gate, medians of {len(rounds)} rounds")
    base = {i: statistics.median(r["untraced"][i] for r in rounds) for i in range(3)}
    base_cpu = base[2]
    print(f"  {'mode':<10} {'wall ms':>8} {'ratio':>6} {'CPU ms':>7} {'ratio':>6}  tracer CPU")
    for mode in MODES:
        wall = statistics.median(r[mode][0] for r in rounds)
        cpu = statistics.median(r[mode][2] for r in rounds)
        tracer = statistics.median(r[mode][1] for r in rounds)
        per = f"{tracer / load.spawns * 1e6:6.0f} us per spawn" if tracer else ""
        print(
            f"  {mode:<10} {wall * 1e3:8.1f} {wall / base[0]:5.2f}x {cpu * 1e3:7.1f}"
            f" {cpu / base_cpu:5.2f}x  {per}"
        )
    for mode, line in timed.items():
        kinds = {}
        for item in line.split():
            kind, _, figures = item.rpartition("=")
            count, ns = figures.split(":")
            kinds[kind] = (int(count), int(ns))
        total = sum(ns for _, ns in kinds.values())
        print(
            f"  {mode}: tracer CPU in dispatch {total / 1e6:.1f} ms, "
            f"{total / load.spawns / 1e3:.0f} us per spawn; per stop kind:"
        )
        for kind, (count, ns) in sorted(kinds.items(), key=lambda kv: -kv[1][1]):
            print(f"    {kind:<24} {count:6d} stops {ns / count / 1e3:7.1f} us each")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds of the four modes")
    parser.add_argument("--spawns", type=int, default=300, help="/bin/true runs")
    parser.add_argument("--tar-runs", type=int, default=4, help="tar -x per run; 0: skip")
    parser.add_argument("--only", help="comma-separated workloads (true, tar)")
    parser.add_argument("--profile", action="store_true", help="cProfile the tracer loop")
    opts = parser.parse_args()
    policy = EXAMPLES / "minimal-policy.yaml"
    print(
        f"minimal policy (execve, connect), pinned to CPU {PIN_CPU}; load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    with tempfile.TemporaryDirectory(prefix="bench-procstop-", dir="/dev/shm") as tmp:
        for load in workloads(Path(tmp), opts.spawns, opts.tar_runs):
            if opts.only and load.name not in opts.only.split(","):
                continue
            for mode in MODES:  # warm-up: page cache, first-run effects
                run_once(load, mode, policy)
            rounds = []
            for r in range(opts.runs):
                order = MODES if r % 2 == 0 else tuple(reversed(MODES))
                got = {m: [float(x) for x in run_once(load, m, policy)[0].split()] for m in order}
                rounds.append(got)
            timed = {m: run_once(load, m, policy, "timed")[1] for m in ("wrap", "attach")}
            report(load, rounds, timed)
            if opts.profile and load.name == "true":
                for mode in ("wrap", "attach"):
                    print(f"\n  profile, {mode}:")
                    print(run_once(load, mode, policy, "profile")[1])
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
