"""Bypasses of a `block` policy, tried for real: the real CLI (`containerscan sidecar run` and
`attach`), the real Engine and policy, real ptrace and seccomp, real processes
(workloads/bypass.py). For each technique: the effect never lands, and the sidecar's event
names the real target (the protected file, the program that ran, the blocked port).

Where each technique comes from:
- /proc/self/fd reopen, /proc/self/root, symlink and hard link writes, truncate, link/symlink
  into a watched directory: Falco's rules (falcosecurity/rules `falco_rules.yaml`: "Create
  Symlink Over Sensitive Files", "Create Hardlink Over Sensitive Files"; `open_write` lists
  only open/openat/openat2, which these step around) and Tetragon's documented TOCTOU caveat;
- the per-thread cwd (unshare(CLONE_FS)): unshare(2), the fs struct a thread can own;
- io_uring OPENAT/WRITE/CONNECT: Docker's default seccomp profile refuses io_uring_setup
  (moby/profiles `seccomp/default.json`, since 2023) for this reason;
- path swap while stopped: Tetragon's enforcement docs and the ptrace TOCTOU note of
  shared/reference/runtime.md;
- symlinked and fd/memfd exec: Falco "Fileless execution via memfd_create", GuardDuty
  `DefenseEvasion:Runtime/FilelessExecution`, Atomic Red Team T1620 (reflective code loading);
- TCP Fast Open, sendmmsg: sendto(2)/sendmmsg(2); Falco's `outbound` macro lists sendto and
  sendmsg only;
- argument padding: the issue's report (argv cut at 4,096 bytes before matching).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.sidecar import test_tracer
from tests.sidecar.sidecar_cli import attach, cli_env, launch
from tests.sidecar.test_tracer import WORKLOADS

pytestmark = [pytest.mark.ptrace, pytest.mark.slow]
listeners = test_tracer.listeners  # the loopback TCP listener fixture
CLI = [sys.executable, "-m", "check"]
BYPASS = str(WORKLOADS / "bypass.py")
ORIGINAL = b"root:x:0:0:root:/root:/bin/bash\n"


@dataclass
class World:
    """The protected directory, the outside one, the blocked port's listeners."""

    tmp: Path
    protected: Path
    outside: Path
    port: int
    allowed_udp: int
    udp: socket.socket
    accepted: list[bytes]

    def policy(self) -> Path:
        path = self.tmp / "block.yaml"
        path.write_text(textwrap.dedent(f"""\
            apiVersion: security.qualys.com/v1
            kind: TracingPolicy
            metadata:
              name: no-walking-around
            spec:
              fileIntegrityMonitoring:
                paths:
                  - path: {self.protected}
                    recursive: true
                    events: [write, unlink, chmod]
                    severity: critical
                    action: block
              processExecution:
                trackedExecutables:
                  - {{name: forbidden, severity: critical, action: block}}
                  - {{name: "memfd:*", severity: critical, action: block}}
                  - {{name: bash, argsPattern: "/dev/tcp/", severity: critical, action: block}}
              networkMonitoring:
                outboundConnections:
                  allowlist: [127.0.0.0/8]
                  blockedPorts: [{self.port}]
                  blockedPortsAction: block
                  udp: true
              performance:
                batchSize: 1
                batchTimeout: 0.1
            """))  # fmt: skip
        return path

    def udp_received(self) -> list[bytes]:
        got = []
        self.udp.setblocking(False)
        while True:
            try:
                got.append(self.udp.recv(64))
            except BlockingIOError:
                return got


@pytest.fixture
def world(tmp_path: Path, listeners: tuple[int, int, list[bytes]]) -> Iterator[World]:
    tmp = tmp_path.resolve()
    protected, outside = tmp / "protected", tmp / "outside"
    protected.mkdir()
    outside.mkdir()
    (protected / "passwd").write_bytes(ORIGINAL)
    (outside / "payload").write_text("* * * * * root /tmp/pwned\n")
    (outside / "innocent-link").symlink_to(protected / "passwd")
    (outside / "dangling-link").symlink_to(protected / "created-by-dangling")
    os.link(protected / "passwd", outside / "old-hardlink")  # before any sidecar runs
    shutil.copy(shutil.which("touch") or "/usr/bin/touch", outside / "forbidden")
    (outside / "innocent").symlink_to(outside / "forbidden")
    port, _, received = listeners  # a loopback TCP listener recording what reaches it
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", port))
    allowed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    allowed.bind(("127.0.0.1", 0))
    yield World(tmp, protected, outside, port, allowed.getsockname()[1], udp, received)
    udp.close()
    allowed.close()


def _workload(world: World, case: str) -> list[str]:
    argv = [sys.executable, BYPASS, case, str(world.protected), str(world.outside), str(world.port)]
    return [*argv, str(world.allowed_udp)] if case == "udp-sendmmsg" else argv


def _launch(world: World, case: str, fd: int | None) -> tuple[list[dict], str]:
    env = cli_env(**({"PROTECTED_FD": str(fd)} if fd is not None else {}))
    fds = () if fd is None else (fd,)
    events = world.tmp / f"events-{case}.jsonl"
    return launch(world.policy(), events, _workload(world, case), env, fds)


def _attach(world: World, case: str, fd: int | None) -> tuple[list[dict], str]:
    env = cli_env(**({"PROTECTED_FD": str(fd)} if fd is not None else {}))
    fds = () if fd is None else (fd,)
    events, go = world.tmp / f"events-{case}.jsonl", world.tmp / f"go-{case}"
    return attach(world.policy(), events, _workload(world, case), env, go, fds)


def _attach_seccomp(world: World, case: str, fd: int | None) -> tuple[list[dict], str]:
    """Attach mode with the policy's filter injected (issue 15's `--seccomp`)."""
    env = cli_env(**({"PROTECTED_FD": str(fd)} if fd is not None else {}))
    fds = () if fd is None else (fd,)
    events, go = world.tmp / f"events-{case}.jsonl", world.tmp / f"go-{case}"
    argv = _workload(world, case)
    return attach(world.policy(), events, argv, env, go, fds, options=("--seccomp",))


RUNNERS = {"launch": _launch, "attach": _attach, "attach-seccomp": _attach_seccomp}


def _blocked(events: list[dict], **match: object) -> list[dict]:
    return [
        e for e in events
        if e["action"] == "block" and all(e.get(k) == v for k, v in match.items())
    ]  # fmt: skip


# What each file case must leave untouched, and the path its event must name.
FILE_CASES = {
    "proc-self-fd": "passwd",
    "proc-self-fd-dir": "cronjob",
    "symlink-write": "passwd",
    "dangling-symlink-create": "created-by-dangling",
    "hardlink-out": "passwd",
    "old-hardlink": "passwd",
    "truncate": "passwd",
    "ftruncate": "passwd",
    "symlink-into": "cron-symlink",
    "hardlink-into": "cron-hardlink",
    "proc-self-root": "passwd",
    "thread-cwd": "thread-job",
    "chroot-write": "passwd",
}


@pytest.mark.parametrize("mode", RUNNERS)
@pytest.mark.parametrize("case", FILE_CASES)
def test_file_bypasses_never_land_and_name_the_real_target(
    world: World, case: str, mode: str
) -> None:
    name = FILE_CASES[case]
    fd = None
    if case == "ftruncate":  # an fd the workload inherits, opened before any monitor
        fd = os.open(world.protected / "passwd", os.O_RDWR)
    try:
        events, output = RUNNERS[mode](world, case, fd)
    finally:
        if fd is not None:
            os.close(fd)
    assert f"attempt {case}" in output, output[-3000:]
    assert f"landed {case}" not in output, output[-3000:]
    target = world.protected / name
    if name == "passwd":
        assert target.read_bytes() == ORIGINAL  # not written, not truncated
    else:
        assert not target.exists() and not target.is_symlink()
    assert not (world.outside / "hardlink").exists()
    assert _blocked(events, path=str(target)), (events, output[-2000:])


@pytest.mark.parametrize("mode", RUNNERS)
def test_io_uring_is_refused_under_a_blocking_policy(world: World, mode: str) -> None:
    events, output = RUNNERS[mode](world, "io-uring", None)
    assert "io_uring_setup errno 1" in output, output[-3000:]  # EPERM, and the process lives
    assert "landed io_uring" not in output
    if mode == "attach":  # launch mode's filter refuses it without a stop: no event there
        assert [e for e in events if e["rule"] == "io_uring:setup" and e["refused"]], events


@pytest.mark.parametrize("mode", RUNNERS)
@pytest.mark.parametrize("attempt", range(3))
def test_a_path_swapped_while_stopped_is_caught_before_the_first_write(
    world: World, mode: str, attempt: int
) -> None:
    events, output = RUNNERS[mode](world, "path-swap", None)
    assert "landed path-swap" not in output, output[-3000:]
    target = world.protected / "swapped"
    # The open itself may have created the file (the kernel ran it); not one byte went in.
    assert not target.exists() or target.read_bytes() == b""
    if "no swap won" not in output:
        assert _blocked(events, path=str(target)), (events, output[-2000:])


EXEC_CASES = {"exec-symlink": "forbidden", "exec-fd": "forbidden", "exec-memfd": "memfd:payload"}


@pytest.mark.parametrize("mode", RUNNERS)
@pytest.mark.parametrize("case", EXEC_CASES)
def test_exec_bypasses_never_run_and_name_the_file_that_would_run(
    world: World, case: str, mode: str
) -> None:
    events, output = RUNNERS[mode](world, case, None)
    assert f"attempt {case}" in output, output[-3000:]
    assert not (world.outside / "ran").exists()  # the forbidden program never ran
    expected = EXEC_CASES[case]
    path = expected if expected.startswith("memfd:") else str(world.outside / expected)
    hits = _blocked(events, path=path)
    assert hits, (events, output[-2000:])
    if case == "exec-symlink":
        assert hits[0]["invoked_as"] == str(world.outside / "innocent")
    if case != "exec-memfd":
        assert hits[0]["argv0"] == "innocent"  # argv[0] is reported beside, not as, the program


@pytest.mark.parametrize("mode", RUNNERS)
def test_a_program_that_appears_after_the_monitor_looked_is_still_judged(
    world: World, mode: str
) -> None:
    """execvp's probes of missing programs are not judged at their entry stop; a workload
    that makes the program appear right after that look (a second thread, in a loop) had
    its exec run unjudged. The exec is judged at PTRACE_EVENT_EXEC then, before the new
    program runs an instruction."""
    events, output = RUNNERS[mode](world, "exec-race", None)
    assert "exec-race outcomes" in output, output[-3000:]
    assert "landed exec-race" not in output, output[-3000:]
    assert not (world.outside / "ran").exists()  # the forbidden program never ran
    assert _blocked(events, path=str(world.outside / "forbidden")), (events, output[-2000:])


@pytest.mark.parametrize("mode", RUNNERS)
@pytest.mark.parametrize("case", ["tcp-fastopen", "udp-sendmmsg"])
def test_network_bypasses_never_reach_the_blocked_port(world: World, case: str, mode: str) -> None:
    events, output = RUNNERS[mode](world, case, None)
    assert f"attempt {case}" in output, output[-3000:]
    time.sleep(0.2)  # anything that got through has arrived by now
    assert world.accepted == [] and world.udp_received() == []
    assert _blocked(events, port=world.port, ip="127.0.0.1"), (events, output[-2000:])


@pytest.mark.parametrize("mode", RUNNERS)
def test_a_padded_command_line_is_matched_in_full(world: World, mode: str) -> None:
    events, output = RUNNERS[mode](world, "padded-dev-tcp", None)
    assert "attempt padded-dev-tcp" in output, output[-3000:]
    time.sleep(0.2)
    assert world.accepted == []
    hits = _blocked(events, rule="process:bash")
    assert hits and "args_truncated" not in hits[0], (events, output[-2000:])


@pytest.mark.parametrize("mode", RUNNERS)
@pytest.mark.parametrize("case", ["chroot-exec", "thread-chroot-exec"])
def test_an_exec_after_chroot_is_judged_inside_the_new_root(
    world: World, mode: str, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process's (or one thread's) root changed after the tracer met it (chroot(2) is
    not a syscall the policy watches); the program it runs there is still the one judged."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("needs a static busybox (sh scripts/system-deps.sh test)")
    monkeypatch.setenv("STATIC_PROGRAM", busybox)  # cli_env passes it to the workload
    events, output = RUNNERS[mode](world, case, None)
    assert f"attempt {case}" in output, output[-3000:]
    assert not (world.outside / "jail" / "ran").exists()  # the forbidden program never ran
    hits = [e for e in _blocked(events) if str(e.get("path", "")).endswith("/forbidden")]
    assert hits, (events, output[-2000:])
