"""Install the tracer's seccomp-bpf filter into a process that is already running.

Attach mode seizes processes that were started without the sidecar. To make only the
policy's syscalls stop (as launch mode does), the filter is installed from inside the
process: one of its threads, stopped under ptrace, is made to run

    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fprog)

and then put back exactly where it was. This is pdig's `-S` (falcosecurity/pdig) and what
CRIU's compel does for its parasite code. How, on x86_64:

1. PTRACE_INTERRUPT the thread and wait for its stop (a signal that arrives first is taken
   off and queued again with tgkill afterwards); save its registers.
2. Find a `syscall` instruction (0f 05) in its executable mappings, the vDSO first: x86
   decodes from wherever rip points, so any such byte pair executes as `syscall`. Nothing
   in the process's code is written.
3. Write the sock_fprog and the BPF program below the thread's stack pointer and the
   128-byte red zone the SysV ABI reserves there (saved and written back afterwards).
4. For each call: registers = saved with rip at the instruction, rax = number, arguments in
   rdi/rsi/rdx and orig_rax = -1 (so the kernel's syscall-restart logic leaves our registers
   alone); PTRACE_SYSCALL to the entry stop, PTRACE_SYSCALL to the exit stop, read rax.
5. Restore the registers. A thread interrupted inside a blocking syscall sits there with
   rax = -ERESTART* (kernel-internal codes): on a normal return to user space without a
   signal the kernel would rewind rip by 2 and reload rax with the syscall number (or
   restart_syscall). Resuming from our exit stop does not pass through that logic, so it
   is done here, as `arch_do_signal_or_restart` does.

TSYNC applies the filter (and no_new_privs) to every thread of the process; threads and
children created later inherit it. The kernel refuses TSYNC when another thread has a
filter that is not an ancestor of the caller's (it returns that thread's id), and prctl or
seccomp may be refused by a filter the process already has (container runtimes' default
profiles allow both; a profile that denies them returns an error, which is a refusal here).
A process in strict seccomp mode would be killed by the prctl: it is refused before
anything runs, as are stopped processes and threads with differing filter counts (TSYNC
would otherwise spread one thread's private filter to all).

The caller must have seized every thread with PTRACE_O_TRACESECCOMP (a TRACE filter without
it fails each watched syscall with ENOSYS) and PTRACE_O_EXITKILL (so nothing keeps running
with the filter and no tracer) before calling `install_filter`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import struct
import time
from collections.abc import Sequence

from securityhub.errors import TracerError
from sidecar import ptrace as pt
from sidecar.seccomp import Insn

# <linux/seccomp.h>
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
PR_SET_NO_NEW_PRIVS = 38  # <linux/prctl.h>
# arch/x86/entry/syscalls/syscall_64.tbl
NR_PRCTL = 157
NR_SECCOMP = 317
NR_RESTART_SYSCALL = 219
SYSCALL_INSN = b"\x0f\x05"
ARG_REGISTERS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")  # the x86_64 syscall ABI
SYSCALL_INSN_LEN = 2
USER_CS_64 = 0x33  # arch/x86/include/asm/segment.h __USER_CS; 0x23 is a 32-bit process
RED_ZONE = 128  # System V x86_64 ABI §3.2.2: below rsp, owned by the running function
# include/linux/errno.h: kernel-internal codes a thread stopped inside a syscall holds.
ERESTARTSYS = 512
ERESTARTNOINTR = 513
ERESTARTNOHAND = 514
ERESTART_RESTARTBLOCK = 516
# /proc/PID/status "Seccomp:" values (Documentation/filesystems/proc.rst).
SECCOMP_MODE_STRICT = 1
# How long a thread may take to reach its stop after PTRACE_INTERRUPT (one in
# uninterruptible sleep does not stop); it is then traced the old way.
STOP_TIMEOUT = 5.0
# Stops other than ours (signals arriving meanwhile) tolerated during one injection.
MAX_FOREIGN_STOPS = 100
# Largest executable mapping searched for a syscall instruction.
MAX_SCAN_BYTES = 16 << 20

_MASK = (1 << 64) - 1
_NO_SYSCALL = _MASK  # -1


class InjectionRefused(TracerError):
    """The process cannot take the filter; the tracer traces it the old way. `stopped`:
    the thread was left in a ptrace-stop (registers restored) and must be resumed."""

    def __init__(self, message: str, stopped: bool = False) -> None:
        super().__init__(
            message,
            "the process is traced with a stop per syscall instead (safe to detach); "
            "launch mode (`sidecar run`) filters it from the start",
        )
        self.stopped = stopped


class ThreadGone(TracerError):
    """The thread exited (or was killed) during the injection; `status` is its wait status,
    which the caller's event loop will not see again."""

    def __init__(self, tid: int, status: int) -> None:
        super().__init__(f"thread {tid} ended during the filter injection")
        self.status = status


def refusal(pid: int) -> str | None:
    """Why the process's state refuses a filter before anything is tried, or None."""
    try:
        status = _status(pid)
    except OSError as exc:
        return f"cannot read /proc/{pid}/status: {exc.strerror}"
    if status.get("State", "").startswith(("T", "t")):
        return "the process is stopped"
    if status.get("Seccomp") == str(SECCOMP_MODE_STRICT):
        return "the process is in strict seccomp mode (any other syscall kills it)"
    counts = set()
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                counts.add(_status(int(task)).get("Seccomp_filters"))
    if len(counts) > 1:
        return "its threads have different seccomp filters (TSYNC would fail or spread one)"
    return None


def install_filter(tid: int, program: Sequence[Insn]) -> None:
    """Install `program` into the process of the seized, running thread `tid` (all its
    threads, TSYNC). On return, and on InjectionRefused, the thread is in a ptrace-stop with
    its registers restored (the caller resumes it); signals that arrived meanwhile are
    queued again. ThreadGone when it died meanwhile."""
    signals: list[int] = []
    try:
        pt.interrupt(tid)
    except pt.PtraceError as exc:
        raise InjectionRefused(f"cannot interrupt thread {tid}: {exc}") from exc
    _wait_first_stop(tid, signals)
    try:
        saved = pt.X86_64Regs()
        pt.getregs_x86_64(tid, saved)
        _inject(tid, saved, _pack(program), signals)
    except InjectionRefused as exc:
        exc.stopped = True
        raise
    except pt.PtraceError as exc:  # ESRCH: killed meanwhile; its exit status is still due
        raise InjectionRefused(f"ptrace failed during the injection: {exc}", True) from exc
    finally:
        _requeue(tid, signals)


def live_thread(pid: int, tids: set[int]) -> int:
    """The thread to inject into: the leader unless it has exited (a zombie), which no
    longer runs code."""
    for tid in sorted(tids, key=lambda t: t != pid):
        try:
            if not _status(tid).get("State", "").startswith(("Z", "X")):
                return tid
        except OSError:
            continue
    return pid


def _inject(tid: int, saved: pt.X86_64Regs, blob: bytes, signals: list[int]) -> None:
    if saved.cs != USER_CS_64:
        raise InjectionRefused("a 32-bit process (only x86_64 code is injected)")
    try:
        mem = os.open(f"/proc/{tid}/mem", os.O_RDWR)
    except OSError as exc:
        raise InjectionRefused(f"cannot open its memory: {exc.strerror}") from exc
    try:
        insn = _find_syscall_insn(tid, mem)
        base = (saved.rsp - RED_ZONE - len(blob)) & ~0xF
        try:
            previous = os.pread(mem, len(blob), base)
            os.pwrite(mem, _fprog(base, blob), base)
        except OSError as exc:
            raise InjectionRefused(f"cannot write below its stack pointer: {exc}") from exc
        try:
            result = _call(tid, saved, insn, NR_PRCTL, (PR_SET_NO_NEW_PRIVS, 1), signals=signals)
            if result != 0:
                raise InjectionRefused(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {_error(result)}")
            args = (SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, base)
            result = _call(tid, saved, insn, NR_SECCOMP, args, signals=signals)
            if result > 0:
                raise InjectionRefused(
                    f"seccomp TSYNC refused: thread {result} has a conflicting filter"
                )
            if result != 0:
                raise InjectionRefused(f"seccomp(SECCOMP_SET_MODE_FILTER) failed: {_error(result)}")
        finally:
            with contextlib.suppress(OSError):
                os.pwrite(mem, previous, base)
            try:
                pt.setregs_x86_64(tid, _restored(saved))
            except pt.PtraceError as exc:
                if exc.errno != errno.ESRCH:
                    raise
                # Gone: ThreadGone (if its exit status was read here) carries on upwards.
    finally:
        os.close(mem)


def _pack(program: Sequence[Insn]) -> bytes:
    """The sock_filter array, preceded by room for the sock_fprog that points at it."""
    return bytes(16) + b"".join(struct.pack("<HBBI", *insn) for insn in program)


def _fprog(base: int, blob: bytes) -> bytes:
    """struct sock_fprog {u16 len; (padding); struct sock_filter *filter;} at `base`."""
    count = (len(blob) - 16) // 8
    return struct.pack("<H6xQ", count, base + 16) + blob[16:]


def _call(
    tid: int,
    saved: pt.X86_64Regs,
    insn: int,
    nr: int,
    args: tuple[int, ...],
    *,
    signals: list[int],
) -> int:
    """Run one syscall in the stopped thread; its result (negative: -errno)."""
    regs = pt.X86_64Regs.from_buffer_copy(saved)
    regs.rip = insn
    regs.rax = nr
    regs.orig_rax = _NO_SYSCALL
    for name, value in zip(ARG_REGISTERS, (args + (0,) * 6)[:6], strict=True):
        setattr(regs, name, value & _MASK)
    pt.setregs_x86_64(tid, regs)
    _to_syscall_stop(tid, signals)  # entry
    pt.getregs_x86_64(tid, regs)
    if regs.orig_rax != nr:
        raise InjectionRefused(f"the thread entered syscall {regs.orig_rax}, not {nr}")
    _to_syscall_stop(tid, signals)  # exit
    pt.getregs_x86_64(tid, regs)
    return _signed(regs.rax)


def _restored(saved: pt.X86_64Regs) -> pt.X86_64Regs:
    """The saved registers, with the restart of an interrupted syscall already applied."""
    regs = pt.X86_64Regs.from_buffer_copy(saved)
    if _signed(saved.orig_rax) >= 0:
        code = -_signed(saved.rax)
        if code in (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND):
            regs.rax = saved.orig_rax
            regs.rip = saved.rip - SYSCALL_INSN_LEN
        elif code == ERESTART_RESTARTBLOCK:
            regs.rax = NR_RESTART_SYSCALL
            regs.rip = saved.rip - SYSCALL_INSN_LEN
    regs.orig_rax = _NO_SYSCALL
    return regs


def _wait_first_stop(tid: int, signals: list[int]) -> None:
    """Wait for the stop PTRACE_INTERRUPT asked for (or a signal-delivery stop before it)."""
    deadline = time.monotonic() + STOP_TIMEOUT
    while True:
        got, status = os.waitpid(tid, pt.WALL | os.WNOHANG)
        if got == 0:
            if time.monotonic() > deadline:
                raise InjectionRefused(f"thread {tid} did not stop within {STOP_TIMEOUT:g} s")
            time.sleep(0.001)
            continue
        _check_alive(tid, status)
        sig, event = os.WSTOPSIG(status), status >> 16
        if event == pt.PTRACE_EVENT_STOP:
            if sig in (signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
                with contextlib.suppress(pt.PtraceError):
                    pt.listen(tid)  # keep its group-stop; the event loop resumes it later
                raise InjectionRefused("the process is stopped")
            return
        if event == 0 and sig != pt.SYSCALL_TRAP:
            signals.append(sig)  # taken off now, queued again at the end
            return
        pt.cont(tid)  # an event queued before ours (fork, exec): let it pass


def _to_syscall_stop(tid: int, signals: list[int]) -> None:
    """PTRACE_SYSCALL until the thread's next syscall stop, setting signals aside."""
    for _ in range(MAX_FOREIGN_STOPS):
        pt.syscall(tid)
        _, status = os.waitpid(tid, pt.WALL)
        _check_alive(tid, status)
        sig, event = os.WSTOPSIG(status), status >> 16
        if event == 0 and sig == pt.SYSCALL_TRAP:
            return
        if event == 0:
            signals.append(sig)
    raise InjectionRefused(f"thread {tid} kept stopping for other reasons")


def _check_alive(tid: int, status: int) -> None:
    if not os.WIFSTOPPED(status):
        raise ThreadGone(tid, status)


def _requeue(tid: int, signals: list[int]) -> None:
    tgid = _tgid(tid)
    for sig in signals:
        with contextlib.suppress(OSError):
            _tgkill(tgid, tid, sig)


def _find_syscall_insn(tid: int, mem: int) -> int:
    """The address of a `0f 05` in an executable mapping, the vDSO first."""
    try:
        with open(f"/proc/{tid}/maps") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise InjectionRefused(f"cannot read its mappings: {exc.strerror}") from exc
    regions = []
    for line in lines:
        parts = line.split()
        if len(parts) < 2 or "x" not in parts[1]:
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        vdso = len(parts) > 5 and parts[5] == "[vdso]"
        if parts[-1] == "[vsyscall]":
            continue  # emulated or unreadable
        regions.append((not vdso, start, min(end, start + MAX_SCAN_BYTES)))
    for _, start, end in sorted(regions):
        try:
            data = os.pread(mem, end - start, start)
        except OSError:
            continue
        offset = data.find(SYSCALL_INSN)
        if offset >= 0:
            return start + offset
    raise InjectionRefused("no syscall instruction found in its executable mappings")


def _status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def _tgid(tid: int) -> int:
    try:
        return int(_status(tid).get("Tgid", tid))
    except (OSError, ValueError):
        return tid


NR_TGKILL = 234


def _tgkill(tgid: int, tid: int, sig: int) -> None:
    """tgkill(2) (Python's signal.pthread_kill takes pthread ids, not thread ids)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(NR_TGKILL, tgid, tid, sig) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _error(result: int) -> str:
    code = -result
    return f"{errno.errorcode.get(code, code)} ({os.strerror(code)})"
