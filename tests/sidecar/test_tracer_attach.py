"""Attach mode on real running processes: seize, events, SIGTERM detach, SIGKILL survival."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sidecar.test_tracer import HARNESS, ROOT, WORKLOADS, _wait_for, events, stats

pytestmark = pytest.mark.ptrace


def tracer_pid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    raise AssertionError("no TracerPid")


def ticks(counter: Path) -> int:
    text = counter.read_text().strip()
    return int(text) if text else 0


def still_ticking(counter: Path) -> bool:
    before = ticks(counter)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if ticks(counter) > before + 2:
            return True
    return False


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path, Path]]:
    counter = tmp_path / "counter"
    target = tmp_path / "target.txt"
    proc = subprocess.Popen(
        [sys.executable, str(WORKLOADS / "sleeper.py"), str(counter), str(target)]
    )
    _wait_for(lambda: counter.exists() and ticks(counter) > 0)
    yield proc, counter, target
    proc.kill()
    proc.wait()


def start_attach(tmp_path: Path, *args: str, watch: str, opts: tuple = ()) -> subprocess.Popen:
    ready = tmp_path / "ready"
    argv = [
        *HARNESS,
        "--events",
        str(tmp_path / "events.jsonl"),
        "--stats",
        str(tmp_path / "stats.json"),
        "--watch",
        watch,
        *opts,
        "attach",
        "--ready",
        str(ready),
        *args,
    ]
    proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: ready.exists() or proc.poll() is not None)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    return proc


def test_attach_syscall_events_then_sigterm_detaches(tmp_path: Path, app) -> None:
    proc, counter, target = app
    tracer = start_attach(tmp_path, "--pid", str(proc.pid), watch="openat,execve")
    try:
        assert tracer_pid(proc.pid) == tracer.pid
        _wait_for(lambda: any(ev["path"] == str(target) for ev in events(tmp_path)))
        _wait_for(
            lambda: any(
                ev["kind"] == "exec" and ev["path"] == os.path.realpath("/bin/true")
                for ev in events(tmp_path)
            )
        )
        tracer.send_signal(signal.SIGTERM)
        assert tracer.wait(timeout=10) == 0
    finally:
        tracer.kill()
    assert proc.poll() is None  # the application runs on
    assert tracer_pid(proc.pid) == 0
    for task in os.listdir(f"/proc/{proc.pid}/task"):
        assert tracer_pid(int(task)) == 0  # every thread detached
    assert still_ticking(counter)
    st = stats(tmp_path)
    assert st["threads"] == 0


def test_attach_process_only_reports_execs_without_syscall_stops(tmp_path: Path, app) -> None:
    proc, counter, _ = app
    tracer = start_attach(
        tmp_path, "--pid", str(proc.pid), watch="execve,execveat", opts=("--process-only",)
    )
    try:
        _wait_for(
            lambda: any(
                ev["path"] == "/usr/bin/true" or ev["path"] == "/bin/true"
                for ev in events(tmp_path)
            )
        )
        tracer.send_signal(signal.SIGTERM)
        assert tracer.wait(timeout=10) == 0
    finally:
        tracer.kill()
    st = stats(tmp_path)
    assert st["syscall_stops"] == 0
    exec_events = [ev for ev in events(tmp_path) if ev["kind"] == "exec"]
    assert exec_events and exec_events[0]["argv"] == ["/bin/true"]
    assert exec_events[0]["ppid"] == proc.pid
    assert proc.poll() is None
    assert still_ticking(counter)


def test_sigkill_of_the_sidecar_leaves_the_application_running(tmp_path: Path, app) -> None:
    proc, counter, target = app
    tracer = start_attach(tmp_path, "--pid", str(proc.pid), watch="openat,execve")
    _wait_for(lambda: any(ev["path"] == str(target) for ev in events(tmp_path)))
    tracer.send_signal(signal.SIGKILL)
    tracer.wait(timeout=10)
    assert still_ticking(counter)
    assert proc.poll() is None
    assert tracer_pid(proc.pid) == 0


def test_attach_by_match_picks_up_new_processes(tmp_path: Path) -> None:
    marker = f"cs-match-{os.getpid()}"
    tracer = start_attach(tmp_path, "--match", marker, watch="execve", opts=("--process-only",))
    counter = tmp_path / "late-counter"
    late = subprocess.Popen(
        [sys.executable, str(WORKLOADS / "sleeper.py"), str(counter), str(tmp_path / "t"), marker]
    )
    try:
        _wait_for(lambda: tracer_pid(late.pid) == tracer.pid)
        _wait_for(lambda: any(ev["kind"] == "exec" for ev in events(tmp_path)))
        tracer.send_signal(signal.SIGTERM)
        assert tracer.wait(timeout=10) == 0
        assert late.poll() is None
        assert tracer_pid(late.pid) == 0
        assert still_ticking(counter)
    finally:
        tracer.kill()
        late.kill()
        late.wait()


def test_attach_block_kills_only_the_offender(tmp_path: Path) -> None:
    """In attach mode the syscall is skipped at syscall entry and the process killed; another
    traced process goes on."""
    forbidden = tmp_path / "forbidden.txt"
    offender = subprocess.Popen(
        [sys.executable, str(WORKLOADS / "sleeper.py"), str(tmp_path / "c1"), str(forbidden)]
    )
    bystander = subprocess.Popen(
        [sys.executable, str(WORKLOADS / "sleeper.py"), str(tmp_path / "c2")]
    )
    _wait_for(lambda: (tmp_path / "c1").exists() and (tmp_path / "c2").exists())
    forbidden.unlink(missing_ok=True)
    tracer = start_attach(
        tmp_path,
        "--pid",
        str(offender.pid),
        "--pid",
        str(bystander.pid),
        watch="openat",
        opts=("--block", str(forbidden)),
    )
    try:
        assert offender.wait(timeout=15) == -signal.SIGKILL
        forbidden.unlink(missing_ok=True)  # it may have been written before the attach
        assert bystander.poll() is None
        assert still_ticking(tmp_path / "c2")
        tracer.send_signal(signal.SIGTERM)
        assert tracer.wait(timeout=10) == 0
        assert still_ticking(tmp_path / "c2")
        assert stats(tmp_path)["blocked"] == 1
    finally:
        tracer.kill()
        offender.kill()
        bystander.kill()
        bystander.wait()


def test_attach_process_only_block_kills_the_new_program(tmp_path: Path, app) -> None:
    """Without syscall stops, a blocked exec is killed at PTRACE_EVENT_EXEC, before the new
    program runs; the parent goes on."""
    proc, counter, _ = app
    tracer = start_attach(
        tmp_path,
        "--pid",
        str(proc.pid),
        watch="execve,execveat",
        opts=("--process-only", "--block", "true"),
    )
    try:
        _wait_for(lambda: (tmp_path / "events.jsonl").exists() and len(events(tmp_path)) >= 2)
        tracer.send_signal(signal.SIGTERM)
        assert tracer.wait(timeout=10) == 0
    finally:
        tracer.kill()
    st = stats(tmp_path)
    assert st["blocked"] >= 2 and st["syscall_stops"] == 0
    assert proc.poll() is None
    assert still_ticking(counter)


def test_attach_by_match_with_nothing_to_trace_stops_on_sigterm(tmp_path: Path) -> None:
    tracer = start_attach(
        tmp_path,
        "--match",
        f"no-such-process-{os.getpid()}-x",
        watch="execve",
        opts=("--process-only",),
    )
    try:
        time.sleep(0.5)  # a few /proc scans
        assert tracer.poll() is None  # keeps watching for matches
        tracer.send_signal(signal.SIGTERM)
        assert tracer.wait(timeout=10) == 0
    finally:
        tracer.kill()
    assert stats(tmp_path)["processes"] == 0
