"""The generated seccomp-bpf program: its logic (interpreted) and the real kernel's view."""

from __future__ import annotations

import ctypes
import errno
import os

import pytest

from sidecar import seccomp
from sidecar.seccomp import (
    OPEN_WRITE_MASK,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_ERRNO,
    SECCOMP_RET_TRACE,
    build_program,
    open_conditions,
    run_program,
)
from sidecar.syscalls import AARCH64, AUDIT_ARCH_AARCH64, X32_SYSCALL_BIT, X86_64, native_arch

ENOSYS_ACTION = SECCOMP_RET_ERRNO | errno.ENOSYS
O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_CLOEXEC = 0, 1, 2, 0o100, 0o1000, 0o2000000


@pytest.mark.parametrize("arch", [X86_64, AARCH64], ids=lambda a: a.name)
def test_only_listed_syscalls_trace(arch) -> None:
    names = {"execve", "execveat", "connect", "open", "unlinkat"}
    prog = build_program(arch, names)
    traced = {n for n in names if arch.has(n)}
    for name, nr in arch.numbers.items():
        expected = SECCOMP_RET_TRACE if name in traced else SECCOMP_RET_ALLOW
        assert run_program(prog, nr, arch.audit_arch) == expected, name


@pytest.mark.parametrize("arch", [X86_64, AARCH64], ids=lambda a: a.name)
def test_open_flags_condition(arch) -> None:
    names = {"openat", "open", "execve"}
    prog = build_program(arch, names, open_conditions(names, open_needs_read=False))
    openat = arch.number("openat")
    audit = arch.audit_arch
    for flags, expected in [
        (O_RDONLY, SECCOMP_RET_ALLOW),
        (O_RDONLY | O_CLOEXEC, SECCOMP_RET_ALLOW),
        (O_WRONLY, SECCOMP_RET_TRACE),
        (O_RDWR, SECCOMP_RET_TRACE),
        (O_CREAT, SECCOMP_RET_TRACE),
        (O_TRUNC, SECCOMP_RET_TRACE),
        (O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, SECCOMP_RET_TRACE),
    ]:
        assert run_program(prog, openat, audit, (0xFFFFFF9C, 0x1000, flags)) == expected
    if arch.has("open"):
        assert (
            run_program(prog, arch.number("open"), audit, (0x1000, O_RDONLY)) == SECCOMP_RET_ALLOW
        )
        assert (
            run_program(prog, arch.number("open"), audit, (0x1000, O_WRONLY)) == SECCOMP_RET_TRACE
        )
    # Unconditional syscalls after the conditional blocks still trace.
    assert run_program(prog, arch.number("execve"), audit) == SECCOMP_RET_TRACE
    assert run_program(prog, arch.number("read"), audit) == SECCOMP_RET_ALLOW


def test_open_conditions_only_when_reads_are_not_needed() -> None:
    assert open_conditions({"openat", "execve"}, open_needs_read=True) == []
    conds = open_conditions({"openat", "open", "openat2", "execve"}, open_needs_read=False)
    assert [(c.name, c.arg, c.mask) for c in conds] == [
        ("open", 1, OPEN_WRITE_MASK),
        ("openat", 2, OPEN_WRITE_MASK),
    ]


def test_foreign_architecture_and_x32_are_refused() -> None:
    prog = build_program(X86_64, {"execve"})
    assert run_program(prog, 59, AUDIT_ARCH_AARCH64) == ENOSYS_ACTION
    assert run_program(prog, 0x40000000 | 59, X86_64.audit_arch) == ENOSYS_ACTION
    assert run_program(prog, X32_SYSCALL_BIT | 1, X86_64.audit_arch) == ENOSYS_ACTION
    # aarch64 has no x32-like ABI bit.
    arm = build_program(AARCH64, {"execve"})
    assert run_program(arm, AARCH64.number("execve"), AUDIT_ARCH_AARCH64) == SECCOMP_RET_TRACE
    assert run_program(arm, AARCH64.number("execve"), X86_64.audit_arch) == ENOSYS_ACTION


def test_every_syscall_traced_needs_chunked_jumps() -> None:
    """More comparisons than an 8-bit jump reaches: chunks, each with its own RET_TRACE."""
    prog = build_program(X86_64, set(X86_64.numbers))
    assert all(jt <= 255 and jf <= 255 for _, jt, jf, _ in prog)
    for nr in X86_64.names:
        assert run_program(prog, nr, X86_64.audit_arch) == SECCOMP_RET_TRACE
    assert run_program(prog, 100000, X86_64.audit_arch) == SECCOMP_RET_ALLOW


def test_the_kernel_accepts_and_applies_the_filter() -> None:
    """Load it for real in a child with no tracer: watched syscalls fail with ENOSYS
    (SECCOMP_RET_TRACE without a tracer), read-only opens and everything else still work."""
    arch = native_arch()
    names = {"getppid", "openat"}
    prog = build_program(arch, names, open_conditions(names, open_needs_read=False))
    fprog, keep = seccomp.pack_program(prog)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports its findings through the pipe
        try:
            os.close(read_fd)
            seccomp.install(fprog)
            libc = ctypes.CDLL(None, use_errno=True)
            results = []
            results.append(libc.syscall(arch.number("getppid")))
            results.append(ctypes.get_errno())
            results.append(libc.syscall(arch.number("getpid")) == os.getpid())
            try:
                os.close(os.open("/dev/null", os.O_RDONLY))
                results.append("read-ok")
            except OSError as exc:
                results.append(exc.errno)
            try:
                os.open("/dev/null", os.O_WRONLY)
                results.append("write-ok")
            except OSError as exc:
                results.append(exc.errno)
            os.write(write_fd, repr(results).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        results = fh.read()
    os.waitpid(pid, 0)
    del keep
    assert results == repr([-1, errno.ENOSYS, True, "read-ok", errno.ENOSYS])
