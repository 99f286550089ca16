"""Attach mode with the seccomp filter injected through ptrace (`sidecar attach --seccomp`).

Real processes, real ptrace, the real filter: `workloads/injectee.py` is the application,
`workloads/harness.py` runs the real Tracer with a stand-in engine that records every
decoded event. What the tests check comes from the kernel, not from the tracer: the
`Seccomp:` and `NoNewPrivs:` lines of /proc/PID/status, `TracerPid:`, the application's
own files and exit status. Stops are counted to prove that unwatched syscalls no longer stop
(the workload makes 20,000 getppid calls after the injection).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.syscalls import native_arch
from tests.sidecar.test_tracer import ROOT, WORKLOADS, _wait_for, events, stats
from tests.sidecar.test_tracer_attach import start_attach

pytestmark = pytest.mark.ptrace

WATCH = "execve,execveat,open,openat,connect"
UNWATCHED = 20_000  # getppid calls the workload makes after DIR/go


def status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def thread_modes(pid: int) -> list[str]:
    return [status(int(t))["Seccomp"] for t in os.listdir(f"/proc/{pid}/task")]


class App:
    """The injectee and its files; killed (with its sleeper child) at the end."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.dir = tmp / "app"
        self.dir.mkdir()
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKLOADS / "injectee.py"), str(self.dir), *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.pid = self.proc.pid

    def wait_ready(self) -> None:
        _wait_for(lambda: (self.dir / "ready").exists() or self.proc.poll() is not None)
        assert self.proc.poll() is None

    def go_and_wait(self) -> None:
        (self.dir / "go").touch()
        _wait_for(lambda: (self.dir / "done").exists() or self.proc.poll() is not None, 30)
        assert self.proc.poll() is None

    def sleeper(self) -> int:
        return int((self.dir / "sleeper").read_text())

    def kill(self) -> None:
        if (self.dir / "sleeper").exists():
            try:
                os.kill(self.sleeper(), signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[list[App]]:
    started: list[App] = []
    yield started
    for app in started:
        app.kill()


def start_app(apps: list[App], tmp: Path, *args: str) -> App:
    app = App(tmp, *args)
    apps.append(app)
    return app


def attach(tmp: Path, *args: str, seccomp: bool = True) -> subprocess.Popen:
    return start_attach(tmp, *args, watch=WATCH, opts=("--seccomp",) if seccomp else ())


def finish(tracer: subprocess.Popen, app: App) -> str:
    """End the application (filtered processes are never detached), then the tracer."""
    tracer.send_signal(signal.SIGTERM)
    app.kill()
    assert tracer.wait(timeout=15) == 0
    return tracer.stderr.read() if tracer.stderr else ""


def paths(tmp: Path) -> set[str]:
    return {ev["path"] for ev in events(tmp) if ev.get("path")}


def assert_filtered_run(tmp: Path, app: App) -> None:
    """The post-injection work was seen, and cost a handful of stops."""
    seen = paths(tmp)
    assert str(app.dir / "main") in seen
    assert str(app.dir / "child-seccomp") in seen  # written by the forked shell
    execs = [ev for ev in events(tmp) if ev["kind"] == "exec"]
    # the files that run, as the kernel resolves them (/bin is a symlink on merged-/usr)
    ran = {os.path.realpath("/bin/sh"), os.path.realpath("/bin/true")}
    assert ran <= {ev["path"] for ev in execs}
    # The forked shell ran under the inherited filter.
    assert (app.dir / "child-seccomp").read_text().split() == ["Seccomp:", "2"]


def test_single_threaded_process_gets_the_filter(tmp_path: Path, apps) -> None:
    app = start_app(apps, tmp_path)
    app.wait_ready()
    tracer = attach(tmp_path, "--pid", str(app.pid))
    try:
        st = status(app.pid)
        assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "1"
        assert int(st["TracerPid"]) == tracer.pid
        app.go_and_wait()
        _wait_for(lambda: str(app.dir / "main") in paths(tmp_path))
        assert_filtered_run(tmp_path, app)
        # Filtered processes are not detached: SIGTERM leaves them traced.
        tracer.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            tracer.wait(timeout=1)
        assert int(status(app.pid)["TracerPid"]) == tracer.pid
    finally:
        stderr = finish(tracer, app)
    assert "cannot be detached" in stderr
    assert stats(tmp_path)["stops"] < UNWATCHED // 20  # unwatched calls did not stop


def test_fifty_threads_all_get_the_filter(tmp_path: Path, apps) -> None:
    app = start_app(apps, tmp_path, "--threads", "50")
    app.wait_ready()
    tracer = attach(tmp_path, "--pid", str(app.pid))
    try:
        modes = thread_modes(app.pid)
        assert len(modes) == 51 and set(modes) == {"2"}  # TSYNC reached every thread
        app.go_and_wait()
        # Each thread was blocked in a futex wait during the injection and ran on after it.
        expected = {str(app.dir / f"thread-{i}") for i in range(50)}
        _wait_for(lambda: expected <= paths(tmp_path))
        assert_filtered_run(tmp_path, app)
    finally:
        finish(tracer, app)
    assert stats(tmp_path)["stops"] < UNWATCHED // 20


def test_a_process_that_appears_after_attach_gets_the_filter(tmp_path: Path, apps) -> None:
    marker = f"cs-inject-{os.getpid()}"
    tracer = attach(tmp_path, "--match", marker)
    app = start_app(apps, tmp_path, "--threads", "2", "--marker", marker)
    try:
        app.wait_ready()
        _wait_for(lambda: status(app.pid)["TracerPid"] == str(tracer.pid))
        _wait_for(lambda: status(app.pid)["Seccomp"] == "2")
        assert set(thread_modes(app.pid)) == {"2"}
        app.go_and_wait()
        _wait_for(lambda: str(app.dir / "main") in paths(tmp_path))
        assert_filtered_run(tmp_path, app)
    finally:
        finish(tracer, app)
    assert stats(tmp_path)["stops"] < UNWATCHED // 20


def test_killing_the_sidecar_kills_the_application(tmp_path: Path, apps) -> None:
    app = start_app(apps, tmp_path, "--threads", "4")
    app.wait_ready()
    tracer = attach(tmp_path, "--pid", str(app.pid))
    app.go_and_wait()
    sleeper = app.sleeper()  # forked after the injection: filtered and traced too
    assert status(sleeper)["Seccomp"] == "2"
    assert status(sleeper)["TracerPid"] == str(tracer.pid)
    tracer.kill()
    tracer.wait(timeout=10)
    assert app.proc.wait(timeout=10) == -signal.SIGKILL  # EXITKILL
    _wait_for(lambda: not _alive(sleeper))  # nothing runs with the filter and no tracer


def _alive(pid: int) -> bool:
    try:
        return status(pid)["State"][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or during the read
        return False


@pytest.mark.parametrize("own_filter", ["deny-seccomp", "one-thread"])
def test_a_process_that_refuses_is_traced_the_old_way(
    tmp_path: Path, apps, own_filter: str
) -> None:
    """deny-seccomp: the kernel refuses (its own filter fails seccomp(2) with EPERM);
    one-thread: refused before trying (threads with different filters)."""
    app = start_app(apps, tmp_path, "--threads", "3", "--own-filter", own_filter)
    app.wait_ready()
    before = thread_modes(app.pid)
    tracer = attach(tmp_path, "--pid", str(app.pid))
    assert thread_modes(app.pid) == before  # no filter of ours
    app.go_and_wait()
    _wait_for(lambda: str(app.dir / "child-seccomp") in paths(tmp_path))
    expected = {str(app.dir / f"thread-{i}") for i in range(3)}
    assert expected <= paths(tmp_path)
    # The old way is detachable: SIGKILL of the sidecar leaves the application running.
    tracer.kill()
    tracer.wait(timeout=10)
    stderr = tracer.stderr.read() if tracer.stderr else ""
    assert "seccomp filter refused; traced with a stop per syscall" in stderr
    _wait_for(lambda: status(app.pid)["TracerPid"] == "0")
    assert app.proc.poll() is None
    assert status(app.sleeper())["TracerPid"] == "0"


def test_without_the_filter_every_syscall_stops(tmp_path: Path, apps) -> None:
    """The control for the stop counts above: the same run without --seccomp."""
    app = start_app(apps, tmp_path)
    app.wait_ready()
    tracer = attach(tmp_path, "--pid", str(app.pid), seccomp=False)
    try:
        assert status(app.pid)["Seccomp"] == "0"
        app.go_and_wait()
        _wait_for(lambda: str(app.dir / "child-seccomp") in paths(tmp_path))
    finally:
        tracer.send_signal(signal.SIGTERM)
        assert tracer.wait(timeout=15) == 0
    assert stats(tmp_path)["stops"] > UNWATCHED
    assert app.proc.poll() is None  # detached, runs on


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("true", True), ("false", False)])
def test_the_task_definition_switch_sets_the_option(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    """CONTAINERSCAN_ATTACH_SECCOMP (the sidecar template's AttachSeccompFilter) is --seccomp."""
    from sidecar.commands import SECCOMP_ENV, attach

    monkeypatch.setenv(SECCOMP_ENV, value)
    ctx = attach.make_context("attach", ["--all"])
    assert ctx.params["seccomp_filter"] is expected


def test_the_command_injects_through_the_monitor(tmp_path: Path, apps) -> None:
    """`containerscan sidecar attach --seccomp` end to end: the real Monitor and engine."""
    app = start_app(apps, tmp_path, "--threads", "2")
    app.wait_ready()
    log = tmp_path / "sidecar.log"
    argv = [sys.executable, "-m", "check", "sidecar", "attach", "--seccomp", "--pid"]
    with open(log, "w") as stderr:
        sidecar = subprocess.Popen(
            [*argv, str(app.pid), "--events-file", str(tmp_path / "events.jsonl")],
            cwd=ROOT,
            env={
                **os.environ,
                "MONITORING_MODE": "minimal",
                "CONTAINERSCAN_HEARTBEAT_SECONDS": "0",
            },
            stderr=stderr,
        )
    try:
        _wait_for(
            lambda: "seccomp filter installed" in log.read_text() or sidecar.poll() is not None,
            60,
        )
        assert sidecar.poll() is None, log.read_text()
        assert status(app.pid)["Seccomp"] == "2"
        assert status(app.pid)["TracerPid"] == str(sidecar.pid)
    finally:
        sidecar.kill()
        sidecar.wait(timeout=10)
    assert app.proc.wait(timeout=10) == -signal.SIGKILL


def current_syscall(pid: int) -> str:
    """The number of the syscall the thread is blocked in, as the kernel shows it."""
    return Path(f"/proc/{pid}/syscall").read_text().split()[0]


def test_a_sleep_cut_by_the_injection_goes_on_through_restart_syscall(tmp_path: Path) -> None:
    """A relative nanosleep interrupted by the injection returns -ERESTART_RESTARTBLOCK in
    the kernel: it must go on as restart_syscall (which sleeps only what is left), not run
    again from the start. /proc/PID/syscall names the syscall the thread sleeps in."""
    arch = native_arch()
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import ctypes; ctypes.CDLL(None).usleep(600_000_000)"]
    )
    try:
        sleeping = str(arch.number("clock_nanosleep"))  # glibc's usleep
        _wait_for(lambda: current_syscall(sleeper.pid) == sleeping)
        tracer = attach(tmp_path, "--pid", str(sleeper.pid))
        try:
            assert status(sleeper.pid)["Seccomp"] == "2"
            restart = str(arch.number("restart_syscall"))
            _wait_for(lambda: current_syscall(sleeper.pid) == restart)
        finally:
            tracer.kill()
            tracer.wait(timeout=10)
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
    finally:
        sleeper.kill()
        sleeper.wait()


def test_busy_threads_run_on_unharmed_after_the_injection(tmp_path: Path) -> None:
    """Threads caught in a pipe read, a select, a nanosleep, a stat loop and pure computation:
    every one keeps making progress after its process was interrupted and filtered."""
    status_file = tmp_path / "status.json"
    busy = subprocess.Popen([sys.executable, str(WORKLOADS / "restartable.py"), str(status_file)])
    try:
        _wait_for(status_file.exists)

        def counts() -> list[int]:
            return json.loads(status_file.read_text())["counts"]

        tracer = attach(tmp_path, "--pid", str(busy.pid))
        try:
            assert set(thread_modes(busy.pid)) == {"2"}
            after = counts()
            _wait_for(lambda: all(n > m for n, m in zip(counts(), after, strict=True)))
            assert json.loads(status_file.read_text())["errors"] == []
        finally:
            tracer.kill()  # EXITKILL ends the busy process too
            tracer.wait(timeout=10)
        assert busy.wait(timeout=10) == -signal.SIGKILL
    finally:
        busy.kill()
        busy.wait()
