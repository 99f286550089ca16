"""sidecar.inject's pure parts: the registers put back after an injection, the registers of
an injected call, the syscall instruction found in mapping bytes, the sock_fprog laid out in
the tracee's memory, and the refusals read from /proc before anything runs. Both
architectures' parts run here, whatever the machine (the aarch64 injection itself is run on
a real arm64 kernel by test_inject_aarch64.py).

x86_64's restart rules are the kernel's (arch/x86/kernel/signal.c, arch_do_signal_or_restart
with no signal to deliver): -ERESTARTSYS, -ERESTARTNOINTR and -ERESTARTNOHAND rewind rip by
the 2-byte syscall instruction and reload rax with orig_rax; -ERESTART_RESTARTBLOCK reloads
it with __NR_restart_syscall (219 on x86_64, arch/x86/entry/syscalls/syscall_64.tbl).
arm64's kernel rewinds before the ptrace stop (arch/arm64/kernel/signal.c, do_signal):
the injection meets x0 = orig_x0 with pc on the `svc`, and for the syscall the kernel
restarts (restart_syscall = 128 included) takes the registers of its entry stop, pc - 4.
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
X86 = inject.ABIS["x86_64"]
ARM = inject.ABIS["aarch64"]


def regs(rip: int, rax: int, orig_rax: int) -> pt.X86_64Regs:
    r = pt.X86_64Regs()
    r.rip, r.rax, r.orig_rax, r.rsp = rip, rax & MASK, orig_rax & MASK, 0x7FFF0000
    return r


@pytest.mark.parametrize("code", [512, 513, 514])
def test_an_interrupted_restartable_syscall_is_restarted(code: int) -> None:
    out = X86.restored(regs(0x401002, -code, FUTEX))
    assert (out.rip, out.rax) == (0x401000, FUTEX)
    assert out.orig_rax == MASK  # -1: the kernel's restart logic leaves it alone
    assert out.rsp == 0x7FFF0000


def test_a_restart_block_syscall_goes_through_restart_syscall() -> None:
    out = X86.restored(regs(0x401002, -516, 230))  # clock_nanosleep
    assert (out.rip, out.rax) == (0x401000, 219)


@pytest.mark.parametrize(
    ("rax", "orig_rax"),
    [(-4, FUTEX), (0, FUTEX), (-512, -1), (12345, -1)],
    ids=["EINTR", "completed", "not-in-a-syscall", "user-code"],
)
def test_anything_else_is_restored_as_it_was(rax: int, orig_rax: int) -> None:
    out = X86.restored(regs(0x401002, rax, orig_rax))
    assert (out.rip, out.rax) == (0x401002, rax & MASK)


SVC = bytes.fromhex("010000d4")  # svc #0, little-endian
NANOSLEEP = 101  # aarch64, include/uapi/asm-generic/unistd.h


def arm_regs(pc: int, x8: int, x0: int, sp: int = 0xFFFFF000) -> pt.Aarch64Regs:
    r = pt.Aarch64Regs()
    r.pc, r.regs[8], r.regs[0], r.sp = pc, x8 & MASK, x0 & MASK, sp
    for i in range(1, 31):
        if i != 8:
            r.regs[i] = 0x1000 + i
    return r


def test_aarch64_numbers_are_the_generic_tables() -> None:
    assert ARM.arch.number("prctl") == 167 and ARM.arch.number("seccomp") == 277
    assert ARM.arch.number("restart_syscall") == 128
    assert ARM.insn == SVC and ARM.insn_align == 4 and ARM.stack_gap == 0


def test_an_aarch64_call_sets_x8_x0_to_x5_and_pc_only() -> None:
    saved = arm_regs(0x400800, NANOSLEEP, 0x7FF0)
    call = ARM.prepare(saved, 0xFFFF0A00, 277, (1, 1, 0xFFFFE000))
    assert call.pc == 0xFFFF0A00 and call.regs[8] == 277
    assert list(call.regs[0:6]) == [1, 1, 0xFFFFE000, 0, 0, 0]
    assert list(call.regs[6:8]) == [0x1006, 0x1007]
    assert list(call.regs[9:31]) == [0x1000 + i for i in range(9, 31)]
    assert (call.sp, call.pstate) == (saved.sp, saved.pstate)
    assert (saved.pc, saved.regs[8], saved.regs[0]) == (0x400800, NANOSLEEP, 0x7FF0)  # a copy
    assert ARM.entered(call) == 277
    call.regs[0] = -1 & MASK  # EPERM at the exit stop
    assert ARM.result(call) == -1


def test_an_aarch64_entry_is_rewound_onto_its_svc() -> None:
    """The syscall the kernel was about to restart (restart_syscall for a nanosleep cut by
    the interrupt) runs again from the `svc` with the registers it entered with."""
    entry = arm_regs(0x400804, 128, 0x7FF0)
    out = ARM.rewound(entry)
    assert (out.pc, out.regs[8], out.regs[0]) == (0x400800, 128, 0x7FF0)
    assert list(out.regs[9:31]) == list(entry.regs[9:31]) and out.sp == entry.sp
    assert ARM.restored(out).pc == 0x400800  # put back as it is


def test_aarch64_threads_on_an_svc_are_resumed_to_its_entry_first() -> None:
    assert ARM.pending(SVC)
    assert not ARM.pending(bytes.fromhex("c0035fd6"))  # ret
    assert not ARM.pending(b"")  # unreadable
    assert not X86.pending(b"\x0f\x05")  # x86_64 rewinds from -ERESTART* itself


def test_a_32_bit_aarch64_process_is_refused() -> None:
    r = arm_regs(0x400800, NANOSLEEP, 0)
    assert ARM.refusal(r) is None
    r.pstate = 0x10  # PSR_MODE32_BIT: AArch32 user mode
    assert "32-bit" in (ARM.refusal(r) or "")


def test_the_svc_is_found_only_at_instruction_boundaries() -> None:
    # The same bytes across two instructions (offset 2) are no `svc`.
    data = bytes.fromhex("1f2003d5") + b"\x00\x00" + SVC[:2] + SVC[2:] + b"\x00\x00" + SVC
    assert data.find(SVC) == 6
    assert inject.find_insn(data, SVC, 4) == 12
    assert inject.find_insn(bytes.fromhex("1f2003d5") * 4, SVC, 4) == -1
    assert inject.find_insn(b"\x90\x0f\x05", X86.insn, 1) == 1  # x86 decodes anywhere


def test_the_vdso_is_searched_first_and_vsyscall_never() -> None:
    maps = [
        "00400000-00452000 r-xp 00000000 fe:01 123 /usr/bin/python3.11",
        "7f0000000000-7f0000001000 rw-p 00000000 00:00 0",
        "7fff00000000-7fff00002000 r-xp 00000000 00:00 0 [vdso]",
        "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]",
        "7f0000100000-7f0002100000 r-xp 00000000 fe:01 9 /usr/lib/libbig.so",
    ]
    regions = inject.executable_regions(maps)
    assert regions[0] == (0x7FFF00000000, 0x7FFF00002000)
    assert regions[1] == (0x400000, 0x452000)
    assert regions[2] == (0x7F0000100000, 0x7F0000100000 + inject.MAX_SCAN_BYTES)
    assert len(regions) == 3


@pytest.mark.parametrize(("abi", "gap"), [("x86_64", 128), ("aarch64", 0)])
def test_the_program_goes_below_the_stack_and_its_gap_aligned(abi: str, gap: int) -> None:
    sp = 0x7FFFFFFFE468
    base = inject._stack_base(sp, inject.ABIS[abi].stack_gap, 100)
    assert base % 16 == 0 and base + 100 <= sp - gap and base + 100 + 16 > sp - gap


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
