"""The syscall tables agree with the running kernel and with known fixed numbers."""

from __future__ import annotations

import ctypes
import os

import pytest

from sidecar.syscalls import (
    AARCH64,
    AUDIT_ARCH_AARCH64,
    AUDIT_ARCH_X86_64,
    X86_64,
    arch_named,
    known_anywhere,
    native_arch,
    unknown_syscalls,
)


def test_well_known_numbers() -> None:
    # Fixed ABI numbers (they never change once released).
    assert X86_64.number("execve") == 59
    assert X86_64.number("openat") == 257
    assert X86_64.number("connect") == 42
    assert AARCH64.number("execve") == 221
    assert AARCH64.number("openat") == 56
    assert AARCH64.number("connect") == 203
    assert AARCH64.number("clone3") == X86_64.number("clone3") == 435
    assert AARCH64.number("fchmodat2") == X86_64.number("fchmodat2") == 452


def test_legacy_calls_absent_on_aarch64() -> None:
    for name in ("open", "creat", "unlink", "rename", "chmod", "chown", "fork", "vfork"):
        assert X86_64.has(name)
        assert not AARCH64.has(name)
    assert unknown_syscalls(["open", "openat", "nosuchcall"]) == {
        "open": ["aarch64"],
        "nosuchcall": ["x86_64", "aarch64"],
    }
    assert known_anywhere("open")
    assert not known_anywhere("nosuchcall")


def test_both_directions_are_consistent() -> None:
    for arch in (X86_64, AARCH64):
        assert len(arch.names) == len(arch.numbers)
        for name, nr in arch.numbers.items():
            assert arch.name_of(nr) == name
    assert X86_64.name_of(99999) == "syscall_99999"


def test_audit_constants() -> None:
    assert X86_64.audit_arch == AUDIT_ARCH_X86_64 == 0xC000003E
    assert AARCH64.audit_arch == AUDIT_ARCH_AARCH64 == 0xC00000B7
    assert arch_named("arm64") is AARCH64
    assert arch_named("AMD64") is X86_64
    with pytest.raises(ValueError, match="x86_64 and aarch64"):
        arch_named("riscv64")


def test_native_table_matches_the_kernel() -> None:
    """Calling getpid/getppid by the table's number gives what os.getpid() says."""
    arch = native_arch()
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(arch.number("getpid")) == os.getpid()
    assert libc.syscall(arch.number("getppid")) == os.getppid()
