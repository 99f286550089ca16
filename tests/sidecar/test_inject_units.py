"""sidecar.inject's pure parts: the registers put back after an injection, the sock_fprog
laid out in the tracee's memory, and the refusals read from /proc before anything runs.

The restart rules are the kernel's (arch/x86/kernel/signal.c, arch_do_signal_or_restart with
no signal to deliver): -ERESTARTSYS, -ERESTARTNOINTR and -ERESTARTNOHAND rewind rip by the
2-byte syscall instruction and reload rax with orig_rax; -ERESTART_RESTARTBLOCK reloads it
with __NR_restart_syscall (219 on x86_64, arch/x86/entry/syscalls/syscall_64.tbl).
"""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import time

import pytest

from sidecar import inject
from sidecar import ptrace as pt
from sidecar.seccomp import SECCOMP_RET_ALLOW, SECCOMP_RET_TRACE, build_program
from sidecar.syscalls import native_arch

MASK = (1 << 64) - 1
FUTEX = 202  # x86_64


def regs(rip: int, rax: int, orig_rax: int) -> pt.X86_64Regs:
    r = pt.X86_64Regs()
    r.rip, r.rax, r.orig_rax, r.rsp = rip, rax & MASK, orig_rax & MASK, 0x7FFF0000
    return r


@pytest.mark.parametrize("code", [512, 513, 514])
def test_an_interrupted_restartable_syscall_is_restarted(code: int) -> None:
    out = inject._restored(regs(0x401002, -code, FUTEX))
    assert (out.rip, out.rax) == (0x401000, FUTEX)
    assert out.orig_rax == MASK  # -1: the kernel's restart logic leaves it alone
    assert out.rsp == 0x7FFF0000


def test_a_restart_block_syscall_goes_through_restart_syscall() -> None:
    out = inject._restored(regs(0x401002, -516, 230))  # clock_nanosleep
    assert (out.rip, out.rax) == (0x401000, inject.NR_RESTART_SYSCALL)


@pytest.mark.parametrize(
    ("rax", "orig_rax"),
    [(-4, FUTEX), (0, FUTEX), (-512, -1), (12345, -1)],
    ids=["EINTR", "completed", "not-in-a-syscall", "user-code"],
)
def test_anything_else_is_restored_as_it_was(rax: int, orig_rax: int) -> None:
    out = inject._restored(regs(0x401002, rax, orig_rax))
    assert (out.rip, out.rax) == (0x401002, rax & MASK)


def test_the_fprog_points_at_the_program_written_after_it() -> None:
    program = build_program(native_arch(), ["execve", "connect"])
    blob = inject._pack(program)
    laid = inject._fprog(0x7FFF1000, blob)
    count, pointer = struct.unpack_from("<H6xQ", laid)
    assert count == len(program) and pointer == 0x7FFF1000 + 16
    first = struct.unpack_from("<HBBI", laid, 16)
    assert first == program[0]
    actions = {struct.unpack_from("<HBBI", laid, 16 + 8 * i)[3] for i in range(count)}
    assert {SECCOMP_RET_TRACE, SECCOMP_RET_ALLOW} <= actions


def test_a_stopped_process_is_refused_before_anything_runs() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert inject.refusal(proc.pid) is None
        proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while inject.refusal(proc.pid) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert inject.refusal(proc.pid) == "the process is stopped"
    finally:
        proc.kill()
        proc.wait()


def test_a_strict_mode_process_is_refused() -> None:
    # prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT): then only read, write, exit, sigreturn.
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None)\n"
        "os.write(1, b'x')\n"
        "libc.prctl(22, 1, 0, 0, 0)\n"
        "os.read(0, 1)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.read(1) == b"x"
        deadline = time.monotonic() + 10
        while inject._status(proc.pid).get("Seccomp") != "1" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "strict seccomp mode" in (inject.refusal(proc.pid) or "")
    finally:
        proc.kill()
        proc.wait()


def test_a_vanished_process_is_refused() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert "cannot read" in (inject.refusal(proc.pid) or "")
