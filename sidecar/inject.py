"""Install the tracer's seccomp-bpf filter into a process that is already running.

Attach mode seizes processes that were started without the sidecar. To make only the
policy's syscalls stop (as launch mode does), the filter is installed from inside the
process: one of its threads, stopped under ptrace, is made to run

    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fprog)

and then put back exactly where it was. This is pdig's `-S` (falcosecurity/pdig) and what
CRIU's compel does for its parasite code. The steps, with each architecture's ABI (`Abi`):

1. PTRACE_INTERRUPT the thread and wait for its stop (a signal that arrives first is taken
   off and queued again with tgkill afterwards); save its registers.
2. Find a syscall instruction in its executable mappings, the vDSO first: x86_64's
   `syscall` (0f 05), which executes from any byte address, or aarch64's `svc #0`
   (0xd4000001, little-endian), at a 4-byte-aligned address. Nothing in the process's code
   is written.
3. Write the sock_fprog and the BPF program below the thread's stack pointer (below the
   128-byte red zone the SysV x86_64 ABI reserves there; AAPCS64 has none), 16-byte
   aligned; the bytes there are saved and written back afterwards.
4. For each call: registers = saved with the program counter at the instruction, the
   number and arguments in the ABI's registers (x86_64: rax, rdi/rsi/rdx; aarch64: x8,
   x0-x2) and, on x86_64, orig_rax = -1 (so the kernel's syscall-restart logic leaves our
   registers alone); PTRACE_SYSCALL to the entry stop, PTRACE_SYSCALL to the exit stop,
   read the result (rax, x0).
5. Restore the registers, with the restart of an interrupted syscall. The two kernels
   differ in when they rewind. x86_64 (arch_do_signal_or_restart) does it after the
   ptrace stop: the stopped thread holds rax = -ERESTART* and the rewind (rip -= 2, rax =
   orig_rax or restart_syscall) is done here, as the kernel would. arm64 (do_signal in
   arch/arm64/kernel/signal.c) does it before, "so that a debugger will see the already
   changed PC": the thread stops with x0 = orig_x0 and pc on its `svc`, and only after the
   stop, for -ERESTART_RESTARTBLOCK, sets x8 = __NR_restart_syscall. That last step
   depends on a return code the thread no longer holds, so the tracer lets the kernel take
   it: a thread stopped on an `svc` is resumed to that syscall's entry stop (the one the
   kernel restarts, restart_syscall included, or the one it was about to make); that
   entry runs prctl instead (number changed through NT_ARM_SYSTEM_CALL), and the restored
   registers are the entry's, with pc back on the `svc`.

TSYNC applies the filter (and no_new_privs) to every thread of the process; threads and
children created later inherit it. The kernel refuses TSYNC when another thread has a
filter that is not an ancestor of the caller's (it returns that thread's id), and prctl or
seccomp may be refused by a filter the process already has (container runtimes' default
profiles allow both; a profile that denies them returns an error, which is a refusal here).
A process in strict seccomp mode would be killed by the prctl: it is refused before
anything runs, as are stopped processes, 32-bit processes, and threads with differing
filter counts (TSYNC would otherwise spread one thread's private filter to all).

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
from typing import ClassVar, Generic, TypeVar

from securityhub.errors import TracerError
from sidecar import ptrace as pt
from sidecar.seccomp import Insn
from sidecar.syscalls import AARCH64, X86_64, Arch, native_arch

# <linux/seccomp.h>
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
PR_SET_NO_NEW_PRIVS = 38  # <linux/prctl.h>
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
STACK_ALIGN = 16  # both ABIs keep the stack pointer 16-byte aligned

_MASK = (1 << 64) - 1
_NO_SYSCALL = _MASK  # -1

R = TypeVar("R", pt.X86_64Regs, pt.Aarch64Regs)


class Abi(Generic[R]):
    """What the injection needs to know of one architecture: its registers, its syscall
    instruction and calling convention, and its syscall-restart rules."""

    arch: ClassVar[Arch]
    insn: ClassVar[bytes]  # the syscall instruction
    insn_align: ClassVar[int]  # instructions start at multiples of this
    stack_gap: ClassVar[int]  # bytes below the stack pointer the ABI lets code use

    def new_regs(self) -> R:
        raise NotImplementedError

    def getregs(self, tid: int, regs: R) -> None:
        raise NotImplementedError

    def setregs(self, tid: int, regs: R) -> None:
        raise NotImplementedError

    def refusal(self, regs: R) -> str | None:
        """Why this thread's state cannot take the calls (a 32-bit process), or None."""
        raise NotImplementedError

    def stack_pointer(self, regs: R) -> int:
        raise NotImplementedError

    def program_counter(self, regs: R) -> int:
        raise NotImplementedError

    def prepare(self, saved: R, insn: int, nr: int, args: tuple[int, ...]) -> R:
        """The registers that make the thread run syscall `nr` at the instruction `insn`."""
        raise NotImplementedError

    def entered(self, regs: R) -> int:
        """The syscall number at an entry stop."""
        raise NotImplementedError

    def result(self, regs: R) -> int:
        """The return value at an exit stop (negative: -errno)."""
        raise NotImplementedError

    def restored(self, saved: R) -> R:
        """The registers to put back after the calls (pure)."""
        raise NotImplementedError

    def restore(self, tid: int, regs: R) -> None:
        """Put `regs` back at our last exit stop so that the thread returns to user space
        with them, and nothing of the syscall we ran is restarted."""
        self.setregs(tid, regs)

    def pending(self, word: bytes) -> bool:
        """Whether a thread whose program counter points at `word` is to be resumed to that
        syscall's entry stop first (see the module docstring, step 5)."""
        return False

    def replace(self, tid: int, entry: R, nr: int, args: tuple[int, ...]) -> None:
        """At an entry stop: make the kernel run `nr(args)` instead."""
        raise NotImplementedError

    def rewound(self, entry: R) -> R:
        """The registers that make the syscall seen at an entry stop run again (pure)."""
        raise NotImplementedError


class X86_64Abi(Abi[pt.X86_64Regs]):
    """The x86_64 syscall ABI: number in rax, arguments in rdi, rsi, rdx, r10, r8, r9."""

    arch = X86_64
    insn = b"\x0f\x05"  # syscall
    insn_align = 1
    stack_gap = 128  # System V x86_64 ABI §3.2.2: the red zone below rsp
    ARGS = ("rdi", "rsi", "rdx", "r10", "r8", "r9")
    USER_CS_64 = 0x33  # arch/x86/include/asm/segment.h __USER_CS; 0x23 is 32-bit

    def new_regs(self) -> pt.X86_64Regs:
        return pt.X86_64Regs()

    def getregs(self, tid: int, regs: pt.X86_64Regs) -> None:
        pt.getregs_x86_64(tid, regs)

    def setregs(self, tid: int, regs: pt.X86_64Regs) -> None:
        pt.setregs_x86_64(tid, regs)

    def refusal(self, regs: pt.X86_64Regs) -> str | None:
        if regs.cs != self.USER_CS_64:
            return "a 32-bit process (only x86_64 code is injected)"
        return None

    def stack_pointer(self, regs: pt.X86_64Regs) -> int:
        return int(regs.rsp)

    def program_counter(self, regs: pt.X86_64Regs) -> int:
        return int(regs.rip)

    def prepare(
        self, saved: pt.X86_64Regs, insn: int, nr: int, args: tuple[int, ...]
    ) -> pt.X86_64Regs:
        regs = pt.X86_64Regs.from_buffer_copy(saved)
        regs.rip = insn
        regs.rax = nr
        regs.orig_rax = _NO_SYSCALL
        for name, value in zip(self.ARGS, _six(args), strict=True):
            setattr(regs, name, value)
        return regs

    def entered(self, regs: pt.X86_64Regs) -> int:
        return _signed(regs.orig_rax)

    def result(self, regs: pt.X86_64Regs) -> int:
        return _signed(regs.rax)

    def restored(self, saved: pt.X86_64Regs) -> pt.X86_64Regs:
        """arch/x86/kernel/signal.c, arch_do_signal_or_restart with no signal to deliver:
        -ERESTARTSYS/NOINTR/NOHAND rewind rip by the 2-byte instruction and reload rax
        with orig_rax; -ERESTART_RESTARTBLOCK reloads it with __NR_restart_syscall."""
        regs = pt.X86_64Regs.from_buffer_copy(saved)
        if _signed(saved.orig_rax) >= 0:
            code = -_signed(saved.rax)
            if code in (ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND):
                regs.rax = saved.orig_rax
                regs.rip = saved.rip - len(self.insn)
            elif code == ERESTART_RESTARTBLOCK:
                regs.rax = self.arch.number("restart_syscall")
                regs.rip = saved.rip - len(self.insn)
        regs.orig_rax = _NO_SYSCALL
        return regs


class Aarch64Abi(Abi[pt.Aarch64Regs]):
    """The arm64 syscall ABI: number in x8, arguments in x0-x5, result in x0; registers
    through PTRACE_GETREGSET/SETREGSET (NT_PRSTATUS), the number of the current syscall
    through NT_ARM_SYSTEM_CALL."""

    arch = AARCH64
    insn = struct.pack("<I", 0xD4000001)  # svc #0
    insn_align = 4
    stack_gap = 0  # AAPCS64 has no red zone
    NR = 8  # x8
    PSR_MODE32_BIT = 0x10  # arch/arm64/include/uapi/asm/ptrace.h: an AArch32 process

    def __init__(self) -> None:
        self._iov = pt.IoVec()

    def new_regs(self) -> pt.Aarch64Regs:
        return pt.Aarch64Regs()

    def getregs(self, tid: int, regs: pt.Aarch64Regs) -> None:
        pt.getregs_aarch64(tid, regs, self._iov)

    def setregs(self, tid: int, regs: pt.Aarch64Regs) -> None:
        pt.setregs_aarch64(tid, regs, self._iov)

    def refusal(self, regs: pt.Aarch64Regs) -> str | None:
        if regs.pstate & self.PSR_MODE32_BIT:
            return "a 32-bit process (only aarch64 code is injected)"
        return None

    def stack_pointer(self, regs: pt.Aarch64Regs) -> int:
        return int(regs.sp)

    def program_counter(self, regs: pt.Aarch64Regs) -> int:
        return int(regs.pc)

    def prepare(
        self, saved: pt.Aarch64Regs, insn: int, nr: int, args: tuple[int, ...]
    ) -> pt.Aarch64Regs:
        regs = pt.Aarch64Regs.from_buffer_copy(saved)
        regs.pc = insn
        regs.regs[self.NR] = nr
        for index, value in enumerate(_six(args)):
            regs.regs[index] = value
        return regs

    def entered(self, regs: pt.Aarch64Regs) -> int:
        return _signed(regs.regs[self.NR])

    def result(self, regs: pt.Aarch64Regs) -> int:
        return _signed(regs.regs[0])

    def restored(self, saved: pt.Aarch64Regs) -> pt.Aarch64Regs:
        """As saved: at a ptrace stop the kernel has already rewound an interrupted syscall
        (x0 = orig_x0, pc on the `svc`); the thread was resumed to its entry stop before
        the calls when it sat on an `svc` (`pending`), and `saved` is then `rewound`."""
        return pt.Aarch64Regs.from_buffer_copy(saved)

    def restore(self, tid: int, regs: pt.Aarch64Regs) -> None:
        # syscallno = -1 (NO_SYSCALL): the exit of our call is then no syscall to restart
        # for do_signal, whatever x0 holds (x86_64's orig_rax = -1).
        pt.set_syscall_aarch64(tid, -1)
        self.setregs(tid, regs)

    def pending(self, word: bytes) -> bool:
        return word == self.insn

    def replace(self, tid: int, entry: pt.Aarch64Regs, nr: int, args: tuple[int, ...]) -> None:
        regs = self.prepare(entry, int(entry.pc), nr, args)
        self.setregs(tid, regs)
        pt.set_syscall_aarch64(tid, nr)

    def rewound(self, entry: pt.Aarch64Regs) -> pt.Aarch64Regs:
        regs = pt.Aarch64Regs.from_buffer_copy(entry)
        regs.pc = entry.pc - len(self.insn)
        return regs


ABIS: dict[str, Abi] = {abi.arch.name: abi for abi in (X86_64Abi(), Aarch64Abi())}


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


def install_filter(tid: int, program: Sequence[Insn], arch: Arch | None = None) -> None:
    """Install `program` into the process of the seized, running thread `tid` (all its
    threads, TSYNC). On return, and on InjectionRefused, the thread is in a ptrace-stop with
    its registers restored (the caller resumes it); signals that arrived meanwhile are
    queued again. ThreadGone when it died meanwhile. `arch`: this machine's, by default."""
    arch = arch or native_arch()
    abi = ABIS.get(arch.name)
    if abi is None:
        raise InjectionRefused(f"no filter injection on {arch.name}")
    signals: list[int] = []
    try:
        pt.interrupt(tid)
    except pt.PtraceError as exc:
        raise InjectionRefused(f"cannot interrupt thread {tid}: {exc}") from exc
    _wait_first_stop(tid, signals)
    try:
        _inject(abi, tid, _pack(program), signals)
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


def _inject(abi: Abi, tid: int, blob: bytes, signals: list[int]) -> None:
    saved = abi.new_regs()
    abi.getregs(tid, saved)
    reason = abi.refusal(saved)
    if reason:
        raise InjectionRefused(reason)
    try:
        mem = os.open(f"/proc/{tid}/mem", os.O_RDWR)
    except OSError as exc:
        raise InjectionRefused(f"cannot open its memory: {exc.strerror}") from exc
    try:
        insn = _find_syscall_insn(tid, mem, abi)
        previous = b""
        entry = None
        try:
            if abi.pending(_read(mem, abi.program_counter(saved), len(abi.insn))):
                _to_syscall_stop(tid, signals)  # the entry of the syscall it sits on
                entry = abi.new_regs()
                abi.getregs(tid, entry)
                saved = abi.rewound(entry)
            base = _stack_base(abi.stack_pointer(saved), abi.stack_gap, len(blob))
            try:
                previous = os.pread(mem, len(blob), base)
                os.pwrite(mem, _fprog(base, blob), base)
            except OSError as exc:
                raise InjectionRefused(f"cannot write below its stack pointer: {exc}") from exc
            result = _call(
                abi,
                tid,
                saved,
                insn,
                nr=abi.arch.number("prctl"),
                args=(PR_SET_NO_NEW_PRIVS, 1),
                signals=signals,
                entry=entry,
            )
            if result != 0:
                raise InjectionRefused(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {_error(result)}")
            args = (SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, base)
            nr = abi.arch.number("seccomp")
            result = _call(abi, tid, saved, insn, nr=nr, args=args, signals=signals)
            if result > 0:
                raise InjectionRefused(
                    f"seccomp TSYNC refused: thread {result} has a conflicting filter"
                )
            if result != 0:
                raise InjectionRefused(f"seccomp(SECCOMP_SET_MODE_FILTER) failed: {_error(result)}")
        finally:
            if previous:
                with contextlib.suppress(OSError):
                    os.pwrite(mem, previous, base)
            try:
                abi.restore(tid, abi.restored(saved))
            except pt.PtraceError as exc:
                if exc.errno != errno.ESRCH:
                    raise
                # Gone: ThreadGone (if its exit status was read here) carries on upwards.
    finally:
        os.close(mem)


def _stack_base(sp: int, gap: int, size: int) -> int:
    """Where `size` bytes go below the stack pointer and the ABI's gap, 16-byte aligned."""
    return (sp - gap - size) & ~(STACK_ALIGN - 1)


def _read(mem: int, address: int, size: int) -> bytes:
    try:
        return os.pread(mem, size, address)
    except OSError:
        return b""


def _pack(program: Sequence[Insn]) -> bytes:
    """The sock_filter array, preceded by room for the sock_fprog that points at it."""
    return bytes(16) + b"".join(struct.pack("<HBBI", *insn) for insn in program)


def _fprog(base: int, blob: bytes) -> bytes:
    """struct sock_fprog {u16 len; (padding); struct sock_filter *filter;} at `base`."""
    count = (len(blob) - 16) // 8
    return struct.pack("<H6xQ", count, base + 16) + blob[16:]


def _call(
    abi: Abi,
    tid: int,
    saved: object,
    insn: int,
    *,
    nr: int,
    args: tuple[int, ...],
    signals: list[int],
    entry: object | None = None,
) -> int:
    """Run one syscall in the stopped thread; its result (negative: -errno). `entry`: the
    thread is at a syscall-entry stop (these registers), whose syscall becomes this one."""
    regs = abi.new_regs()
    if entry is None:
        abi.setregs(tid, abi.prepare(saved, insn, nr, args))
        _to_syscall_stop(tid, signals)  # entry
        abi.getregs(tid, regs)
        if abi.entered(regs) != nr:
            raise InjectionRefused(f"the thread entered syscall {abi.entered(regs)}, not {nr}")
    else:
        abi.replace(tid, entry, nr, args)
    _to_syscall_stop(tid, signals)  # exit
    abi.getregs(tid, regs)
    return abi.result(regs)


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


def _find_syscall_insn(tid: int, mem: int, abi: Abi) -> int:
    """The address of the ABI's syscall instruction in an executable mapping, vDSO first."""
    try:
        with open(f"/proc/{tid}/maps") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise InjectionRefused(f"cannot read its mappings: {exc.strerror}") from exc
    for start, end in executable_regions(lines):
        try:
            data = os.pread(mem, end - start, start)
        except OSError:
            continue
        offset = find_insn(data, abi.insn, abi.insn_align)
        if offset >= 0:
            return start + offset
    raise InjectionRefused("no syscall instruction found in its executable mappings")


def executable_regions(maps: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) of the executable mappings in /proc/PID/maps lines, the vDSO first,
    each cut to MAX_SCAN_BYTES; [vsyscall] (emulated or unreadable) left out."""
    regions = []
    for line in maps:
        parts = line.split()
        if len(parts) < 2 or "x" not in parts[1] or parts[-1] == "[vsyscall]":
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        vdso = len(parts) > 5 and parts[5] == "[vdso]"
        regions.append((not vdso, start, min(end, start + MAX_SCAN_BYTES)))
    return [(start, end) for _, start, end in sorted(regions)]


def find_insn(data: bytes, insn: bytes, align: int) -> int:
    """The offset of the first `insn` in `data` at a multiple of `align`, or -1."""
    offset = data.find(insn)
    while offset >= 0 and offset % align:
        offset = data.find(insn, offset + 1)
    return offset


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


def _tgkill(tgid: int, tid: int, sig: int) -> None:
    """tgkill(2) (Python's signal.pthread_kill takes pthread ids, not thread ids)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(native_arch().number("tgkill"), tgid, tid, sig) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _six(args: tuple[int, ...]) -> tuple[int, ...]:
    """Six syscall arguments as unsigned 64-bit register values."""
    return tuple(value & _MASK for value in (args + (0,) * 6)[:6])


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _error(result: int) -> str:
    code = -result
    return f"{errno.errorcode.get(code, code)} ({os.strerror(code)})"
