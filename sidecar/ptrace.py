"""Thin ptrace(2) wrappers over python-ptrace's low-level binding, plus what it lacks.

python-ptrace 0.9.9 defines PTRACE_O_TRACESYSGOOD..TRACEEXIT and the fork/exec events, but
not the seccomp option and event, EXITKILL, or the SEIZE/INTERRUPT/LISTEN requests
(python-ptrace#51); they are defined here from <linux/ptrace.h>. Every call goes through the
binding's generic `ptrace(cmd, pid, a1, a2)`, which raises `PtraceError` (with `.errno`)
when the kernel returns -1.

Registers are read into a caller-owned, preallocated ctypes structure (the binding's
`ptrace_getregs` allocates a new one per call, ~2 µs more per stop). x86_64 uses
PTRACE_GETREGS; aarch64 has no GETREGS and uses PTRACE_GETREGSET with NT_PRSTATUS, and
changes the syscall number through the NT_ARM_SYSTEM_CALL regset.
"""

from __future__ import annotations

import ctypes
import errno
import functools
from typing import Any

from ptrace import PtraceError
from ptrace.binding import func as _binding

__all__ = ["PtraceError"]

# <linux/ptrace.h> requests python-ptrace lacks.
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_GET_SYSCALL_INFO = 0x420E
# Requests it has, repeated so the tracer needs one import.
PTRACE_TRACEME = 0
PTRACE_CONT = 7
PTRACE_KILL = 8
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_SYSCALL = 24
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETSIGINFO = 0x4202
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205

# Options (PTRACE_SETOPTIONS / the data of PTRACE_SEIZE).
PTRACE_O_TRACESYSGOOD = 0x01
PTRACE_O_TRACEFORK = 0x02
PTRACE_O_TRACEVFORK = 0x04
PTRACE_O_TRACECLONE = 0x08
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_TRACEVFORKDONE = 0x20
PTRACE_O_TRACEEXIT = 0x40
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_EXITKILL = 0x100000

# Events: the bits 16..23 of a wait status (status >> 16).
PTRACE_EVENT_FORK = 1
PTRACE_EVENT_VFORK = 2
PTRACE_EVENT_CLONE = 3
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_VFORK_DONE = 5
PTRACE_EVENT_EXIT = 6
PTRACE_EVENT_SECCOMP = 7
PTRACE_EVENT_STOP = 128  # group-stop or PTRACE_INTERRUPT of a SEIZEd tracee

# wait(2): also wait for clone children (threads); <linux/wait.h>.
WALL = 0x40000000
# The stop signal of a syscall stop under PTRACE_O_TRACESYSGOOD.
SYSCALL_TRAP = 0x80 | 5  # SIGTRAP | 0x80

# <elf.h> regset notes.
NT_PRSTATUS = 1
NT_ARM_SYSTEM_CALL = 0x404

PROCESS_FOLLOW_OPTIONS = (
    PTRACE_O_TRACESYSGOOD
    | PTRACE_O_TRACEFORK
    | PTRACE_O_TRACEVFORK
    | PTRACE_O_TRACECLONE
    | PTRACE_O_TRACEEXEC
)

_ptrace = _binding.ptrace
_FAILED = (1 << 64) - 1  # -1 as the binding's c_ulong restype returns it


def _fail(cmd: int, tid: int) -> None:
    err = ctypes.get_errno()
    raise PtraceError(f"ptrace({cmd}, {tid}): {errno.errorcode.get(err, err)}", err, tid)


def _hot(cmd: int, tid: int, addr: int, data: int) -> None:
    """Requests made often (resume, registers): the binding's ctypes function directly,
    ~1 µs cheaper per call than the generic wrapper; same errors."""
    if _raw(cmd, tid, addr, data) == _FAILED:
        _fail(cmd, tid)


if _binding.HAS_CPTRACE:  # the C extension raises by itself: call it directly
    _hot = _ptrace
else:
    _raw = _binding._ptrace


_ZERO = ctypes.c_ulong(0)


@functools.cache
def _libc_ptrace() -> Any:
    """libc's ptrace without argtypes: ctypes then converts nothing per call."""
    function = ctypes.CDLL(None, use_errno=True)["ptrace"]  # a fresh, unshared function
    function.restype = ctypes.c_long
    return function


class StopRequests:
    """The per-stop requests of one tracer (read the registers, resume) with their C
    arguments prebuilt: request and tid as C ints (ptrace's enum and pid_t), address and
    data as ready c_ulong values, so ctypes converts nothing (~0.4 µs less per call than
    the argtypes-typed binding; a stop makes two of these and a waitpid). Same errors."""

    __slots__ = ("_call", "_regs")

    def __init__(self, regs: ctypes.Structure) -> None:
        self._call = _libc_ptrace()
        self._regs = ctypes.c_ulong(ctypes.addressof(regs))

    def getregs(self, tid: int) -> bool:
        """PTRACE_GETREGS (x86_64) into the registers given at construction; False when
        the thread cannot be read (gone, or not stopped)."""
        return self._call(PTRACE_GETREGS, tid, _ZERO, self._regs) != -1

    def resume(self, tid: int, request: int, sig: int) -> None:
        """PTRACE_CONT or PTRACE_SYSCALL with `sig` to deliver (0: none)."""
        if self._call(request, tid, _ZERO, ctypes.c_ulong(sig) if sig else _ZERO) == -1:
            _fail(request, tid)


class X86_64Regs(ctypes.Structure):
    """struct user_regs_struct (arch/x86/include/asm/user_64.h)."""

    _fields_ = [
        (name, ctypes.c_ulong)
        for name in (
            "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs "
            "eflags rsp ss fs_base gs_base ds es fs gs"
        ).split()
    ]


class Aarch64Regs(ctypes.Structure):
    """struct user_pt_regs (arch/arm64/include/uapi/asm/ptrace.h)."""

    _fields_ = [
        ("regs", ctypes.c_ulonglong * 31),
        ("sp", ctypes.c_ulonglong),
        ("pc", ctypes.c_ulonglong),
        ("pstate", ctypes.c_ulonglong),
    ]


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def traceme() -> None:
    _ptrace(PTRACE_TRACEME)


def cont(tid: int, sig: int = 0) -> None:
    _hot(PTRACE_CONT, tid, 0, sig)


def syscall(tid: int, sig: int = 0) -> None:
    _hot(PTRACE_SYSCALL, tid, 0, sig)


def setoptions(tid: int, options: int) -> None:
    _ptrace(PTRACE_SETOPTIONS, tid, 0, options)


def seize(tid: int, options: int) -> None:
    """Attach without stopping the thread; `options` take effect at once."""
    _ptrace(PTRACE_SEIZE, tid, 0, options)


def interrupt(tid: int) -> None:
    """Stop a SEIZEd thread; it reports PTRACE_EVENT_STOP."""
    _ptrace(PTRACE_INTERRUPT, tid)


def listen(tid: int) -> None:
    """Leave a SEIZEd thread in its group-stop while still receiving its events."""
    _ptrace(PTRACE_LISTEN, tid)


def detach(tid: int, sig: int = 0) -> None:
    _ptrace(PTRACE_DETACH, tid, 0, sig)


def geteventmsg(tid: int) -> int:
    """The event's message (the new tid of a fork/clone, the former tid of an exec): one
    stop in each process's life asks, so through libc with prebuilt C arguments."""
    msg, address = _event_message()
    if _libc_ptrace()(PTRACE_GETEVENTMSG, tid, _ZERO, address) == -1:
        _fail(PTRACE_GETEVENTMSG, tid)
    return msg.value


@functools.cache
def _event_message() -> tuple[ctypes.c_ulong, ctypes.c_ulong]:
    """geteventmsg's buffer and its address as a C argument (the tracer is one thread)."""
    msg = ctypes.c_ulong(0)
    return msg, ctypes.c_ulong(ctypes.addressof(msg))


# struct ptrace_syscall_info (<linux/ptrace.h>, Linux 5.3+): op is its first byte.
PTRACE_SYSCALL_INFO_NONE = 0
PTRACE_SYSCALL_INFO_ENTRY = 1
PTRACE_SYSCALL_INFO_EXIT = 2
PTRACE_SYSCALL_INFO_SECCOMP = 3
SYSCALL_INFO_SIZE = 88


def syscall_info_op(tid: int, buf: ctypes.Array[ctypes.c_char]) -> int:
    """Whether a syscall stop is an entry (1) or an exit (2): PTRACE_GET_SYSCALL_INFO.

    Used where registers cannot tell (aarch64 has no -ENOSYS marker at entry). `buf` is a
    caller-owned buffer of SYSCALL_INFO_SIZE bytes.
    """
    _ptrace(PTRACE_GET_SYSCALL_INFO, tid, ctypes.sizeof(buf), ctypes.addressof(buf))
    return buf.raw[0]


def getregs_x86_64(tid: int, regs: X86_64Regs) -> None:
    _hot(PTRACE_GETREGS, tid, 0, ctypes.addressof(regs))


def setregs_x86_64(tid: int, regs: X86_64Regs) -> None:
    _ptrace(PTRACE_SETREGS, tid, 0, ctypes.addressof(regs))


def getregs_aarch64(tid: int, regs: Aarch64Regs, iov: IoVec) -> None:
    iov.iov_base = ctypes.addressof(regs)
    iov.iov_len = ctypes.sizeof(regs)
    _ptrace(PTRACE_GETREGSET, tid, NT_PRSTATUS, ctypes.addressof(iov))


def setregs_aarch64(tid: int, regs: Aarch64Regs, iov: IoVec) -> None:
    iov.iov_base = ctypes.addressof(regs)
    iov.iov_len = ctypes.sizeof(regs)
    _ptrace(PTRACE_SETREGSET, tid, NT_PRSTATUS, ctypes.addressof(iov))


def set_syscall_aarch64(tid: int, nr: int) -> None:
    """Change (or with -1, skip) the current syscall: arm64's NT_ARM_SYSTEM_CALL regset."""
    value = ctypes.c_int(nr)
    iov = IoVec(ctypes.addressof(value), ctypes.sizeof(value))
    _ptrace(PTRACE_SETREGSET, tid, NT_ARM_SYSTEM_CALL, ctypes.addressof(iov))
