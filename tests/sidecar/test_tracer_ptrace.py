"""The ptrace wrappers on a real child: options, syscall stops, PTRACE_GET_SYSCALL_INFO,
registers into a preallocated structure."""

from __future__ import annotations

import ctypes
import os
import signal

import pytest

from sidecar import ptrace as pt
from sidecar.syscalls import native_arch

pytestmark = pytest.mark.ptrace


@pytest.mark.skipif(native_arch().name != "x86_64", reason="register layout of x86_64")
def test_syscall_stops_entry_exit_and_registers() -> None:
    arch = native_arch()
    pid = os.fork()
    if pid == 0:  # the tracee: stop, one getppid, exit
        try:
            pt.traceme()
            os.kill(os.getpid(), signal.SIGSTOP)
            os.getppid()
        finally:
            os._exit(7)
    seen: list[tuple[int, int, bool]] = []
    try:
        _, status = os.waitpid(pid, pt.WALL)
        assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP
        pt.setoptions(pid, pt.PTRACE_O_TRACESYSGOOD | pt.PTRACE_O_EXITKILL)
        regs = pt.X86_64Regs()
        info = ctypes.create_string_buffer(pt.SYSCALL_INFO_SIZE)
        pt.syscall(pid, 0)
        while True:
            _, status = os.waitpid(pid, pt.WALL)
            if os.WIFEXITED(status):
                break
            assert os.WSTOPSIG(status) == pt.SYSCALL_TRAP
            pt.getregs_x86_64(pid, regs)
            op = pt.syscall_info_op(pid, info)
            seen.append((regs.orig_rax, op, regs.rax == (-38 & (2**64 - 1))))
            pt.syscall(pid, 0)
        assert os.WEXITSTATUS(status) == 7
    finally:
        if not seen:
            os.kill(pid, signal.SIGKILL)
    getppid = arch.number("getppid")
    calls = [entry for entry in seen if entry[0] == getppid]
    # One entry (op 1, rax = -ENOSYS) then one exit (op 2, rax = the parent's pid).
    assert [(op, enosys) for _, op, enosys in calls] == [(1, True), (2, False)]
    assert seen[-1][0] == arch.number("exit_group")
