"""The tracer on real processes under real ptrace, through a stand-in engine.

`workloads/harness.py` runs the real Tracer (launch or attach mode, real seccomp filter) with
a stand-in for the policy engine that records each decoded SyscallEvent and blocks the
paths it is told to. The workloads are real programs in `workloads/`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.ptrace

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = Path(__file__).resolve().parent / "workloads"
HARNESS = [sys.executable, "-m", "tests.sidecar.workloads.harness"]
FIM_SET = (
    "execve,execveat,open,openat,openat2,creat,unlink,unlinkat,rmdir,rename,renameat,"
    "renameat2,chmod,fchmod,fchmodat,chown,fchown,lchown,fchownat,connect,sendto,sendmsg"
)


def harness(
    tmp: Path, mode: str, *args: str, watch: str = "execve,execveat,connect", opts: tuple = ()
) -> list[str]:
    return [
        *HARNESS,
        "--events",
        str(tmp / "events.jsonl"),
        "--stats",
        str(tmp / "stats.json"),
        "--watch",
        watch,
        *opts,
        mode,
        *args,
    ]


def run(tmp: Path, argv: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw)


def events(tmp: Path) -> list[dict]:
    path = tmp / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def stats(tmp: Path) -> dict:
    return json.loads((tmp / "stats.json").read_text())


@pytest.fixture
def listeners() -> Iterator[tuple[int, int, list[bytes]]]:
    """A loopback TCP listener (v4 and v6 on one port when possible) and a UDP socket."""
    tcp = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        tcp.settimeout(30)
        while True:
            try:
                conn, _ = tcp.accept()
            except OSError:
                return
            with conn:
                received.append(conn.recv(16))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield tcp.getsockname()[1], udp.getsockname()[1], received
    tcp.close()
    udp.close()


def fake_pip(tmp: Path) -> dict[str, str]:
    bindir = tmp / "bin"
    bindir.mkdir()
    pip = bindir / "pip"
    pip.write_text('#!/bin/sh\necho pip "$@"\n')
    pip.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}


def test_every_event_type_is_decoded(tmp_path: Path, listeners) -> None:
    port, udp_port, received = listeners
    work = tmp_path / "work"
    work.mkdir()
    env = fake_pip(tmp_path)
    argv = [sys.executable, str(WORKLOADS / "events.py"), str(work), str(port), str(udp_port)]
    proc = run(
        tmp_path,
        harness(tmp_path, "run", "--", *argv, watch=FIM_SET, opts=("--open-read",)),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "step done" in proc.stdout
    evs = events(tmp_path)
    by_kind: dict[str, list[dict]] = {}
    for ev in evs:
        by_kind.setdefault(ev["kind"], []).append(ev)

    execs = {(ev["path"], tuple(ev["argv"])) for ev in by_kind["exec"]}
    # The file that runs, as the kernel resolves it (/bin is a symlink on merged-/usr).
    assert (os.path.realpath("/bin/true"), ("/bin/true",)) in execs
    assert (str(tmp_path / "bin" / "pip"), ("pip", "install", "nothing")) in execs
    # Failed execvp PATH probes are not reported (only existing files).
    assert all(Path(p).exists() for p, _ in execs)

    opens = {(ev["path"], tuple(ev["access"])) for ev in by_kind["open"]}
    assert (str(work / "written.txt"), ("create", "write")) in opens
    assert (str(work / "written.txt"), ("read",)) in opens
    assert (str(work / "viadirfd.txt"), ("create", "write")) in opens

    chmods = [ev for ev in by_kind["chmod"] if ev["path"] == str(work / "written.txt")]
    assert chmods and chmods[0]["mode"] == 0o640
    chowns = [ev for ev in by_kind["chown"] if ev["path"] == str(work / "written.txt")]
    assert chowns and chowns[0]["uid"] == os.getuid()
    renames = by_kind["rename"]
    assert any(
        ev["path"] == str(work / "viadirfd.txt") and ev["path2"] == str(work / "renamed.txt")
        for ev in renames
    )
    assert str(work / "renamed.txt") in {ev["path"] for ev in by_kind["unlink"]}

    connects = {(ev["family"], ev["ip"], ev["port"]) for ev in by_kind["connect"]}
    assert ("inet", "127.0.0.1", port) in connects
    assert ("inet6", "::1", port) in connects
    assert any(
        ev["family"] == "unix" and ev["path"] == str(work / "no.sock") for ev in by_kind["connect"]
    )
    udp = [ev for ev in by_kind["sendto"] if ev["port"] == udp_port]
    assert udp and udp[0]["ip"] == "127.0.0.1" and udp[0]["protocol"] == "udp"
    assert b"hi" in received

    # Every event names its process; pids and parents are consistent.
    root = [ev for ev in by_kind["exec"] if ev["argv"][:1] == [sys.executable]]
    for ev in evs:
        assert ev["pid"] > 0 and ev["tid"] > 0 and ev["exe"]
    assert root or evs


def test_read_only_opens_pass_the_filter_without_a_stop(tmp_path: Path) -> None:
    """The argument condition: with no rule needing reads, read-only opens never stop."""
    work = f"import json, email, http.client, xml.dom.minidom; open('{tmp_path}/w.txt', 'w')"
    argv = [sys.executable, "-c", work]
    counts = {}
    for label, opts in (("reads", ("--open-read",)), ("writes", ())):
        out = tmp_path / label
        out.mkdir()
        proc = run(out, harness(out, "run", "--", *argv, watch="execve,openat,open", opts=opts))
        assert proc.returncode == 0, proc.stderr
        counts[label] = stats(out)["syscall_stops"]
        opened = [ev for ev in events(out) if ev["kind"] == "open"]
        assert str(tmp_path / "w.txt") in {ev["path"] for ev in opened}
        if label == "writes":
            assert all("write" in ev["access"] or "create" in ev["access"] for ev in opened)
    assert counts["reads"] > 50
    assert counts["writes"] < 10
    assert counts["writes"] * 10 < counts["reads"]


def test_unwatched_syscalls_do_not_stop(tmp_path: Path) -> None:
    """Only watched syscalls stop: a minimal policy sees only the execs."""
    argv = [sys.executable, "-c", "import json, email; open('/dev/null', 'w')"]
    proc = run(tmp_path, harness(tmp_path, "run", "--", *argv, watch="execve,connect"))
    assert proc.returncode == 0, proc.stderr
    st = stats(tmp_path)
    assert st["syscall_stops"] <= 5  # the exec itself (PATH probes included)
    assert {ev["kind"] for ev in events(tmp_path)} == {"exec"}


def test_block_kills_only_the_offender(tmp_path: Path) -> None:
    forbidden = tmp_path / "forbidden.txt"
    sibling_ok = tmp_path / "sibling.txt"
    script = (
        f"(sleep 0.3; echo ok > {sibling_ok}) & "
        f"{sys.executable} -c \"import time; open('{forbidden}', 'w').write('x'); time.sleep(5)\"; "
        "echo offender=$?; wait; echo parent alive"
    )
    proc = run(
        tmp_path,
        harness(
            tmp_path,
            "run",
            "--",
            "/bin/sh",
            "-c",
            script,
            watch="execve,openat,open",
            opts=("--block", str(forbidden)),
        ),
    )
    assert proc.returncode == 0, proc.stderr
    assert "offender=137" in proc.stdout  # SIGKILL
    assert "parent alive" in proc.stdout
    assert not forbidden.exists()  # the open was denied before it ran
    assert sibling_ok.read_text().strip() == "ok"
    st = stats(tmp_path)
    assert st["blocked"] == 1
    assert st["submitted"] == 1


def test_block_denies_with_eperm_in_a_multithreaded_offender(tmp_path: Path) -> None:
    """A thread of a multi-threaded process hits the rule: the whole process dies."""
    forbidden = tmp_path / "forbidden.txt"
    code = (
        "import threading, time\n"
        f"t = threading.Thread(target=lambda: open('{forbidden}', 'w'))\n"
        "t.start(); t.join(); time.sleep(5); print('survived')\n"
    )
    proc = run(
        tmp_path,
        harness(
            tmp_path,
            "run",
            "--",
            sys.executable,
            "-c",
            code,
            watch="openat",
            opts=("--block", str(forbidden)),
        ),
    )
    assert proc.returncode == 128 + signal.SIGKILL
    assert "survived" not in proc.stdout
    assert not forbidden.exists()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/bin/sh", "-c", "exit 7"], 7),
        (["/bin/sh", "-c", "kill -TERM $$"], 128 + signal.SIGTERM),
        (["/bin/true"], 0),
        (["/nonexistent/command"], 127),
    ],
)
def test_the_exit_status_propagates(tmp_path: Path, argv: list[str], expected: int) -> None:
    proc = run(tmp_path, harness(tmp_path, "run", "--", *argv))
    assert proc.returncode == expected, proc.stderr


def test_signals_are_forwarded_to_the_workload(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    got = tmp_path / "usr1"
    code = (
        "import signal, sys, time, pathlib\n"
        f"signal.signal(signal.SIGUSR1, lambda *a: pathlib.Path('{got}').write_text('1'))\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
        f"pathlib.Path('{ready}').write_text('1')\n"
        "while True: time.sleep(0.05)\n"
    )
    proc = subprocess.Popen(
        harness(tmp_path, "run", "--", sys.executable, "-c", code),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(ready.exists)
        proc.send_signal(signal.SIGUSR1)
        _wait_for(got.exists)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 42
    finally:
        proc.kill()
        proc.communicate()


def test_hundreds_of_short_lived_processes_and_threads(tmp_path: Path) -> None:
    argv = [sys.executable, str(WORKLOADS / "busy.py"), "300", "200"]
    start = time.monotonic()
    proc = run(
        tmp_path, harness(tmp_path, "run", "--", *argv, watch="execve,connect,openat"), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "busy done 300 200" in proc.stdout
    st = stats(tmp_path)
    assert st["processes"] >= 300
    assert st["threads"] == 0  # every traced thread's exit was seen
    assert st["zombies"] == 0
    assert time.monotonic() - start < 100


def _wait_for(predicate, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def test_only_successful_execs_are_reported(tmp_path: Path) -> None:
    """A failed exec (EACCES on a file without the x bit) ran nothing: no event."""
    not_exec = tmp_path / "notexec"
    not_exec.write_text("#!/bin/sh\necho never\n")
    not_exec.chmod(0o644)
    script = f"{not_exec}; /bin/true; echo rc=$?"
    proc = run(
        tmp_path, harness(tmp_path, "run", "--", "/bin/sh", "-c", script, opts=("--report-exec",))
    )
    assert proc.returncode == 0, proc.stderr
    assert "rc=0" in proc.stdout and "never" not in proc.stdout
    st = stats(tmp_path)
    assert str(not_exec) in {ev["path"] for ev in events(tmp_path)}  # seen at the stop
    # reported: what ran, the files the kernel executed (merged-/usr: /bin is a symlink)
    assert st["submitted_paths"] == [os.path.realpath("/bin/sh"), os.path.realpath("/bin/true")]


def test_process_only_policy_can_still_block_an_exec(tmp_path: Path) -> None:
    """Launch mode filters execve even for a process-only policy, so a block denies it."""
    script = "/bin/true; echo rc=$?"
    proc = run(
        tmp_path,
        harness(
            tmp_path,
            "run",
            "--",
            "/bin/sh",
            "-c",
            script,
            watch="execve,execveat",
            opts=("--process-only", "--block", "true"),
        ),
    )
    assert proc.returncode == 0, proc.stderr
    assert "rc=137" in proc.stdout
    st = stats(tmp_path)
    assert st["blocked"] == 1 and st["syscall_stops"] >= 2


def test_group_stop_of_the_workload_is_kept_until_sigcont(tmp_path: Path) -> None:
    """The workload stops itself (SIGSTOP): it stays stopped under the tracer, as without
    one (PTRACE_LISTEN), until a SIGCONT, forwarded by the sidecar, resumes it."""
    marker = tmp_path / "resumed"
    script = f"kill -STOP $$; echo yes > {marker}"
    proc = subprocess.Popen(
        harness(tmp_path, "run", "--", "/bin/sh", "-c", script),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        assert proc.poll() is None
        assert not marker.exists()  # still stopped
        proc.send_signal(signal.SIGCONT)
        assert proc.wait(timeout=10) == 0
        assert marker.read_text() == "yes\n"
    finally:
        proc.kill()
        proc.communicate()
