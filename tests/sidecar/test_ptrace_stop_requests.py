"""`ptrace.StopRequests` (the tracer's per-stop requests with prebuilt C arguments) on a real
child: the registers it reads are the binding's, resuming delivers the signal asked for,
and failures raise PtraceError with the kernel's errno, as the typed wrappers do."""

from __future__ import annotations

import errno
import os
import signal

import pytest

from sidecar import ptrace as pt
from sidecar.syscalls import native_arch

pytestmark = pytest.mark.ptrace


def _stopped_child() -> int:
    pid = os.fork()
    if pid == 0:  # the tracee: stop, one getppid, then wait for SIGUSR1 to end it
        try:
            pt.traceme()
            os.kill(os.getpid(), signal.SIGSTOP)
            os.getppid()
            signal.pause()
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, pt.WALL)
    assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP
    pt.setoptions(pid, pt.PTRACE_O_TRACESYSGOOD | pt.PTRACE_O_EXITKILL)
    return pid


@pytest.mark.skipif(native_arch().name != "x86_64", reason="PTRACE_GETREGS is x86_64's")
def test_registers_resume_and_signal_delivery() -> None:
    getppid = native_arch().number("getppid")
    pid = _stopped_child()
    try:
        fast_regs, typed_regs = pt.X86_64Regs(), pt.X86_64Regs()
        requests = pt.StopRequests(fast_regs)
        requests.resume(pid, pt.PTRACE_SYSCALL, 0)
        while True:  # up to getppid's entry stop
            _, status = os.waitpid(pid, pt.WALL)
            assert os.WSTOPSIG(status) == pt.SYSCALL_TRAP
            assert requests.getregs(pid)
            pt.getregs_x86_64(pid, typed_regs)
            assert bytes(fast_regs) == bytes(typed_regs)
            if fast_regs.orig_rax == getppid:
                break
            requests.resume(pid, pt.PTRACE_SYSCALL, 0)
        requests.resume(pid, pt.PTRACE_CONT, 0)  # runs into pause()
        os.kill(pid, signal.SIGUSR1)
        _, status = os.waitpid(pid, pt.WALL)  # signal-delivery stop
        assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGUSR1
        requests.resume(pid, pt.PTRACE_CONT, signal.SIGUSR1)  # deliver it: default kills
        _, status = os.waitpid(pid, pt.WALL)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGUSR1
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass  # reaped above
    # The thread is gone: reading fails softly, resuming raises with ESRCH.
    assert not requests.getregs(pid)
    with pytest.raises(pt.PtraceError) as raised:
        requests.resume(pid, pt.PTRACE_CONT, 0)
    assert raised.value.errno == errno.ESRCH
