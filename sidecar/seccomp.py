"""A seccomp-bpf filter that makes only the policy's syscalls stop for the tracer.

The program is classic BPF over `struct seccomp_data` (<linux/seccomp.h>):

    nr: int @0, arch: u32 @4, instruction_pointer: u64 @8, args[6]: u64 @16 + 8*i

Layout of the generated program:

1. `arch` must be the tracer's architecture, otherwise ERRNO(ENOSYS): a syscall number means
   another call on another ABI (i386 via int 0x80, x32), and allowing it would let a process
   step around the monitor. pdig does the same.
2. On x86_64, numbers with the x32 bit set also get ENOSYS.
3. Refused syscalls (io_uring_setup under a policy that blocks: io_uring's operations run
   in the kernel without syscalls a tracer could stop) get ERRNO(EPERM), as Docker's
   default seccomp profile answers.
4. Conditional syscalls (open/openat when no rule needs read-only opens; sendto, sendmsg,
   sendmmsg when no rule needs UDP): load the low 32 bits of the flags argument
   (little-endian, both architectures) and RET_TRACE only when it has
   O_WRONLY|O_RDWR|O_CREAT|O_TRUNC (MSG_FASTOPEN for sends); otherwise RET_ALLOW.
5. Unconditional syscalls: chunks of JEQ comparisons jumping to RET_TRACE (jump offsets are
   8 bits, so each chunk ends with its own RET_TRACE, as pdig does).
6. Default RET_ALLOW.

`SECCOMP_RET_TRACE` with no tracer attached fails the syscall with ENOSYS; the tracer must set
PTRACE_O_TRACESECCOMP before the filter is installed, and PTRACE_O_EXITKILL so that no
tracee outlives it with the filter in place. A filter can never be removed.

No libseccomp: the program is built here and installed with prctl(2).
"""

from __future__ import annotations

import ctypes
import errno
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from securityhub.errors import TracerError
from sidecar.syscalls import Arch

# <linux/filter.h> / <linux/bpf_common.h> opcodes.
BPF_LD = 0x00
BPF_JMP = 0x05
BPF_RET = 0x06
BPF_W = 0x00
BPF_ABS = 0x20
BPF_JEQ = 0x10
BPF_JGE = 0x30
BPF_JSET = 0x40
BPF_JA = 0x00
BPF_K = 0x00

# <linux/seccomp.h>
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_MODE_FILTER = 2
# <linux/prctl.h>
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38

# struct seccomp_data offsets.
OFFSET_NR = 0
OFFSET_ARCH = 4
OFFSET_ARGS = 16

# A classic BPF program holds at most BPF_MAXINSNS (4096) instructions (<linux/bpf_common.h>).
BPF_MAXINSNS = 4096
# Jump offsets are u8; keep chunks well under 255 so the RET after each chunk is reachable.
JEQ_CHUNK = 200

# Open flags (<asm-generic/fcntl.h>; same values on x86_64 and arm64).
O_WRONLY = 0o1
O_RDWR = 0o2
O_CREAT = 0o100
O_TRUNC = 0o1000
OPEN_WRITE_MASK = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC
# Which argument holds the open flags.
OPEN_FLAGS_ARG = {"open": 1, "openat": 2}
# <linux/socket.h>: a send with this flag is a TCP connect (Fast Open).
MSG_FASTOPEN = 0x20000000
# Which argument holds the send flags.
SEND_FLAGS_ARG = {"sendto": 3, "sendmsg": 2, "sendmmsg": 3}


@dataclass(frozen=True)
class ArgCondition:
    """Stop on syscall `name` only when `args[arg] & mask` is non-zero (low 32 bits)."""

    name: str
    arg: int
    mask: int


class SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    ]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


Insn = tuple[int, int, int, int]  # code, jt, jf, k


def _stmt(code: int, k: int) -> Insn:
    return (code, 0, 0, k)


def _jump(code: int, k: int, jt: int, jf: int) -> Insn:
    return (code, jt, jf, k)


def _flag_conditions(
    syscalls: Iterable[str], flags_arg: dict[str, int], mask: int
) -> list[ArgCondition]:
    return [
        ArgCondition(name, flags_arg[name], mask)
        for name in sorted(set(syscalls))
        if name in flags_arg
    ]


def open_conditions(syscalls: Iterable[str], open_needs_read: bool) -> list[ArgCondition]:
    """The write-flag conditions for open/openat, when read-only opens need no stop."""
    return [] if open_needs_read else _flag_conditions(syscalls, OPEN_FLAGS_ARG, OPEN_WRITE_MASK)


def send_conditions(syscalls: Iterable[str], sends_need_udp: bool) -> list[ArgCondition]:
    """With no UDP rule, a send stops only when it is a TCP Fast Open connect."""
    return [] if sends_need_udp else _flag_conditions(syscalls, SEND_FLAGS_ARG, MSG_FASTOPEN)


def build_program(
    arch: Arch,
    syscalls: Iterable[str],
    conditions: Iterable[ArgCondition] = (),
    refused: Iterable[str] = (),
) -> list[Insn]:
    """The BPF instructions; names unknown on `arch` are skipped (the policy checked them).
    `refused` syscalls fail with EPERM at once, without a stop."""
    conds = {c.name: c for c in conditions if arch.has(c.name)}
    denied = sorted({arch.number(n) for n in refused if arch.has(n)})
    plain = sorted(
        {arch.number(n) for n in syscalls if arch.has(n) and n not in conds} - set(denied)
    )
    deny_foreign = SECCOMP_RET_ERRNO | errno.ENOSYS
    prog: list[Insn] = [
        _stmt(BPF_LD | BPF_W | BPF_ABS, OFFSET_ARCH),
        _jump(BPF_JMP | BPF_JEQ | BPF_K, arch.audit_arch, 1, 0),
        _stmt(BPF_RET | BPF_K, deny_foreign),
        _stmt(BPF_LD | BPF_W | BPF_ABS, OFFSET_NR),
    ]
    if arch.foreign_bit is not None:
        prog += [
            _jump(BPF_JMP | BPF_JGE | BPF_K, arch.foreign_bit, 0, 1),
            _stmt(BPF_RET | BPF_K, deny_foreign),
        ]
    for nr in denied:
        prog += [
            _jump(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
            _stmt(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | errno.EPERM),
        ]
    for cond in sorted(conds.values(), key=lambda c: c.name):
        # A == nr here; the block is skipped entirely (A intact) when nr differs.
        prog += [
            _jump(BPF_JMP | BPF_JEQ | BPF_K, arch.number(cond.name), 0, 4),
            _stmt(BPF_LD | BPF_W | BPF_ABS, OFFSET_ARGS + 8 * cond.arg),
            _jump(BPF_JMP | BPF_JSET | BPF_K, cond.mask, 0, 1),
            _stmt(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
            _stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        ]
    for start in range(0, len(plain), JEQ_CHUNK):
        chunk = plain[start : start + JEQ_CHUNK]
        for i, nr in enumerate(chunk):
            # Jump over the remaining comparisons and the JA to the chunk's RET_TRACE.
            prog.append(_jump(BPF_JMP | BPF_JEQ | BPF_K, nr, len(chunk) - i, 0))
        prog += [_stmt(BPF_JMP | BPF_JA, 1), _stmt(BPF_RET | BPF_K, SECCOMP_RET_TRACE)]
    prog.append(_stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW))
    if len(prog) > BPF_MAXINSNS:
        raise TracerError(f"seccomp program too long ({len(prog)} instructions)")
    return prog


def run_program(prog: list[Insn], nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """Interpret the program on one seccomp_data, as the kernel would: the return action.

    Used by the tests to check the generated logic for every syscall number and by the
    aarch64 tests, which cannot load an aarch64 filter on this machine.
    """
    padded = (tuple(args) + (0,) * 6)[:6]
    data = struct.pack("<iIQ6Q", nr, arch, 0, *padded)
    acc = 0
    pc = 0
    while True:
        code, jt, jf, k = prog[pc]
        cls = code & 0x07
        if cls == BPF_LD:
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif cls == BPF_RET:
            return k
        elif cls == BPF_JMP:
            op = code & 0xF0
            if op == BPF_JA:
                pc += 1 + k
                continue
            if op == BPF_JEQ:
                taken = acc == k
            elif op == BPF_JGE:
                taken = acc >= k
            elif op == BPF_JSET:
                taken = bool(acc & k)
            else:
                raise ValueError(f"unsupported jump {code:#x}")
            pc += 1 + (jt if taken else jf)
        else:
            raise ValueError(f"unsupported instruction {code:#x}")


def pack_program(prog: list[Insn]) -> tuple[SockFprog, ctypes.Array[SockFilter]]:
    """The sock_fprog for prctl; keep the returned array alive while the fprog is used."""
    array = (SockFilter * len(prog))(*[SockFilter(c, jt, jf, k) for c, jt, jf, k in prog])
    fprog = SockFprog(len(prog), ctypes.cast(array, ctypes.POINTER(SockFilter)))
    return fprog, array


def install(fprog: SockFprog) -> None:
    """Set no_new_privs and load the filter into the calling thread (and its descendants).

    Called in the forked child before exec; raises OSError with the kernel's errno.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    # Unsigned long arguments: prctl rejects non-zero garbage in the unused ones.
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    prctl.restype = ctypes.c_int
    if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {errno.errorcode.get(err, err)}")
    if prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP): {errno.errorcode.get(err, err)}")
