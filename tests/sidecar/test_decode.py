"""Decoding on synthetic register sets of both architectures, reading real memory.

The argument values are real pointers into this test process (ctypes buffers), and the
decoder reads them through /proc/<this pid>/mem exactly as it reads a tracee's: only the
registers are synthetic, which is how the aarch64 layout is tested on an x86_64 machine.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
from pathlib import Path

import pytest

from sidecar.decode import (
    ARG_MAX_COUNT,
    AT_FDCWD,
    REGISTER_LAYOUTS,
    Decoder,
    Process,
    ProcessMemory,
    access_of,
    decode_sockaddr,
    signed32,
)
from sidecar.ptrace import Aarch64Regs, X86_64Regs
from sidecar.syscalls import AARCH64, X86_64

AT = AT_FDCWD & 0xFFFFFFFFFFFFFFFF  # as a register holds it
O_WRONLY, O_RDWR, O_CREAT, O_TRUNC = 0o1, 0o2, 0o100, 0o1000


class Mem:
    """Keeps ctypes buffers alive and hands out their addresses."""

    def __init__(self) -> None:
        self.keep: list[object] = []

    def bytes(self, data: bytes) -> int:
        buf = ctypes.create_string_buffer(data, len(data) + 1)
        self.keep.append(buf)
        return ctypes.addressof(buf)

    def str(self, text: str) -> int:
        return self.bytes(text.encode())

    def argv(self, args: list[str]) -> int:
        ptrs = (ctypes.c_uint64 * (len(args) + 1))(*[self.str(a) for a in args], 0)
        self.keep.append(ptrs)
        return ctypes.addressof(ptrs)


@pytest.fixture
def mem() -> Mem:
    return Mem()


@pytest.fixture
def proc():
    p = Process(os.getpid(), os.getppid(), "/usr/bin/app", container="web")
    yield p
    p.close()


def arm(name: str, *args: int) -> Aarch64Regs:
    regs = Aarch64Regs()
    regs.regs[8] = AARCH64.number(name)
    for i, value in enumerate(args):
        regs.regs[i] = value
    return regs


def x86(name: str, *args: int) -> X86_64Regs:
    regs = X86_64Regs()
    regs.orig_rax = X86_64.number(name)
    regs.rax = (-38) & 0xFFFFFFFFFFFFFFFF
    for reg, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args, strict=False):
        setattr(regs, reg, value)
    return regs


def decode_arm(proc: Process, regs: Aarch64Regs):
    nr, args = REGISTER_LAYOUTS["aarch64"](regs)
    return Decoder(AARCH64, clock=lambda: 1.5).decode(proc, proc.pid + 1, nr, args)


def decode_x86(proc: Process, regs: X86_64Regs):
    nr, args = REGISTER_LAYOUTS["x86_64"](regs)
    return Decoder(X86_64, clock=lambda: 1.5).decode(proc, proc.pid + 1, nr, args)


def test_aarch64_openat_relative_to_cwd(mem: Mem, proc: Process) -> None:
    ev = decode_arm(proc, arm("openat", AT, mem.str("sub/../file.txt"), O_WRONLY | O_CREAT, 0o644))
    assert ev.syscall == "openat" and ev.kind == "open"
    assert ev.path == os.path.join(os.getcwd(), "file.txt")
    assert ev.access == frozenset({"write", "create"})
    assert ev.flags == O_WRONLY | O_CREAT and ev.mode == 0o644
    assert (ev.pid, ev.tid, ev.ppid, ev.exe, ev.container) == (
        os.getpid(),
        os.getpid() + 1,
        os.getppid(),
        "/usr/bin/app",
        "web",
    )
    assert ev.timestamp == 1.5
    assert ev.args[0] == AT


def test_aarch64_openat_relative_to_dirfd(mem: Mem, proc: Process, tmp_path: Path) -> None:
    dirfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ev = decode_arm(proc, arm("openat", dirfd, mem.str("a.txt"), 0, 0))
    finally:
        os.close(dirfd)
    assert ev.path == str(tmp_path / "a.txt")
    assert ev.access == frozenset({"read"})


def test_aarch64_execve_path_and_argv(mem: Mem, proc: Process) -> None:
    ev = decode_arm(
        proc, arm("execve", mem.str("/usr/bin/pip"), mem.argv(["pip", "install", "requests"]), 0)
    )
    assert ev.kind == "exec" and ev.path == "/usr/bin/pip"
    assert ev.argv == ("pip", "install", "requests")


def test_execveat_relative_to_dirfd(mem: Mem, proc: Process, tmp_path: Path) -> None:
    dirfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ev = decode_arm(
            proc, arm("execveat", dirfd, mem.str("tool"), mem.argv(["tool", "-x"]), 0, 0)
        )
    finally:
        os.close(dirfd)
    assert ev.path == str(tmp_path / "tool") and ev.argv == ("tool", "-x")


def test_argv_is_bounded(mem: Mem, proc: Process) -> None:
    many = [f"a{i}" for i in range(ARG_MAX_COUNT + 50)]
    ev = decode_arm(proc, arm("execve", mem.str("/bin/echo"), mem.argv(many), 0))
    assert len(ev.argv) == ARG_MAX_COUNT


def test_aarch64_connect_inet6_and_inet(mem: Mem, proc: Process) -> None:
    sa6 = struct.pack("<H", socket.AF_INET6) + struct.pack(">HI", 443, 0)
    sa6 += socket.inet_pton(socket.AF_INET6, "2001:db8::1") + b"\0" * 4
    ev = decode_arm(proc, arm("connect", 3, mem.bytes(sa6), len(sa6)))
    assert (ev.kind, ev.family, ev.ip, ev.port) == ("connect", "inet6", "2001:db8::1", 443)
    sa4 = (
        struct.pack("<H", socket.AF_INET)
        + struct.pack(">H", 8080)
        + bytes([10, 0, 0, 7])
        + b"\0" * 8
    )
    ev = decode_arm(proc, arm("connect", 3, mem.bytes(sa4), 16))
    assert (ev.family, ev.ip, ev.port) == ("inet", "10.0.0.7", 8080)


def test_sendto_destination_or_nothing(mem: Mem, proc: Process) -> None:
    sa4 = (
        struct.pack("<H", socket.AF_INET) + struct.pack(">H", 53) + bytes([8, 8, 8, 8]) + b"\0" * 8
    )
    ev = decode_arm(proc, arm("sendto", 3, mem.str("q"), 1, 0, mem.bytes(sa4), 16))
    assert (ev.kind, ev.ip, ev.port, ev.protocol) == ("sendto", "8.8.8.8", 53, "udp")
    # TCP Fast Open: the sendto is a connect.
    ev = decode_arm(proc, arm("sendto", 3, mem.str("q"), 1, 0x20000000, mem.bytes(sa4), 16))
    assert (ev.kind, ev.ip, ev.port, ev.protocol) == ("connect", "8.8.8.8", 53, "tcp")
    # A connected socket: no destination, nothing to report.
    assert decode_arm(proc, arm("sendto", 3, mem.str("q"), 1, 0, 0, 0)) is None


def test_sendmsg_destination(mem: Mem, proc: Process) -> None:
    sa4 = (
        struct.pack("<H", socket.AF_INET)
        + struct.pack(">H", 514)
        + bytes([192, 0, 2, 1])
        + b"\0" * 8
    )
    msghdr = struct.pack("<QI", mem.bytes(sa4), 16) + b"\0" * 44
    ev = decode_arm(proc, arm("sendmsg", 3, mem.bytes(msghdr), 0))
    assert (ev.ip, ev.port) == ("192.0.2.1", 514)


def test_aarch64_file_metadata_calls(mem: Mem, proc: Process, tmp_path: Path) -> None:
    ev = decode_arm(proc, arm("fchmodat", AT, mem.str("/etc/passwd"), 0o4755))
    assert (ev.kind, ev.path, ev.mode) == ("chmod", "/etc/passwd", 0o4755)
    ev = decode_arm(proc, arm("fchownat", AT, mem.str("/etc/shadow"), 0, 42, 0))
    assert (ev.kind, ev.path, ev.uid, ev.gid) == ("chown", "/etc/shadow", 0, 42)
    ev = decode_arm(proc, arm("unlinkat", AT, mem.str("/var/log/app.log"), 0))
    assert (ev.kind, ev.path) == ("unlink", "/var/log/app.log")
    ev = decode_arm(proc, arm("renameat2", AT, mem.str("/tmp/a"), AT, mem.str("/usr/bin/a"), 0))
    assert (ev.kind, ev.path, ev.path2) == ("rename", "/tmp/a", "/usr/bin/a")
    with open(tmp_path / "f", "w") as fh:
        ev = decode_arm(proc, arm("fchmod", fh.fileno(), 0o600))
        assert (ev.path, ev.mode) == (str(tmp_path / "f"), 0o600)
        ev = decode_arm(proc, arm("fchown", fh.fileno(), 1000, 0xFFFFFFFF))
        assert (ev.path, ev.uid, ev.gid) == (str(tmp_path / "f"), 1000, -1)


def test_openat2_reads_open_how(mem: Mem, proc: Process) -> None:
    how = struct.pack("<QQQ", O_RDWR | O_TRUNC, 0o600, 0)
    ev = decode_arm(proc, arm("openat2", AT, mem.str("/etc/hosts"), mem.bytes(how), 24))
    assert ev.path == "/etc/hosts" and ev.access == frozenset({"read", "write"})


def test_x86_64_legacy_calls(mem: Mem, proc: Process) -> None:
    ev = decode_x86(proc, x86("open", mem.str("/etc/hosts"), O_WRONLY | O_TRUNC, 0))
    assert (ev.syscall, ev.path, ev.access) == ("open", "/etc/hosts", frozenset({"write"}))
    ev = decode_x86(proc, x86("creat", mem.str("/tmp/new"), 0o600))
    assert ev.access == frozenset({"write", "create"}) and ev.mode == 0o600
    ev = decode_x86(proc, x86("chmod", mem.str("/bin/sh"), 0o777))
    assert (ev.kind, ev.mode) == ("chmod", 0o777)
    ev = decode_x86(proc, x86("lchown", mem.str("/x"), 1, 2))
    assert (ev.kind, ev.uid, ev.gid) == ("chown", 1, 2)
    ev = decode_x86(proc, x86("rename", mem.str("/a"), mem.str("/b")))
    assert (ev.path, ev.path2) == ("/a", "/b")
    ev = decode_x86(proc, x86("rmdir", mem.str("/d")))
    assert (ev.kind, ev.path) == ("unlink", "/d")
    ev = decode_x86(proc, x86("ptrace", 16, 1, 0, 0))
    assert (ev.kind, ev.syscall, ev.args[:2]) == ("other", "ptrace", (16, 1))


def test_same_call_decodes_alike_on_both_layouts(mem: Mem, proc: Process) -> None:
    path = mem.str("/etc/crontab")
    a = decode_arm(proc, arm("openat", AT, path, O_WRONLY, 0))
    b = decode_x86(proc, x86("openat", AT, path, O_WRONLY, 0))
    assert (a.path, a.access, a.flags) == (b.path, b.access, b.flags)


def test_bad_pointers_and_bounds(proc: Process, mem: Mem) -> None:
    memory = ProcessMemory(os.getpid())
    try:
        assert memory.cstring(0) is None
        assert memory.cstring(8) is None  # unmapped
        assert memory.read(8, 16) == b""
        long = mem.str("x" * 10000)
        assert memory.cstring(long, limit=100) == b"x" * 100
        assert memory.cstring(long) == b"x" * 4096
    finally:
        memory.close()
    ev = decode_arm(proc, arm("openat", AT, 8, 0, 0))
    assert ev.path is None


def test_sockaddr_unix_variants() -> None:
    assert decode_sockaddr(struct.pack("<H", 1) + b"/run/docker.sock\0") == (
        "unix",
        "/run/docker.sock",
        None,
    )
    assert decode_sockaddr(struct.pack("<H", 1) + b"\0hidden\0") == ("unix", "@hidden", None)
    assert decode_sockaddr(struct.pack("<H", 16) + b"\0" * 10) == (None, None, None)
    assert decode_sockaddr(b"") == (None, None, None)


def test_access_bits_and_signed_ints() -> None:
    assert access_of(0) == {"read"}
    assert access_of(O_WRONLY) == {"write"}
    assert access_of(O_RDWR) == {"read", "write"}
    assert access_of(O_TRUNC) == {"read", "write"}
    assert access_of(O_CREAT | O_WRONLY) == {"write", "create"}
    assert signed32(0xFFFFFF9C) == AT_FDCWD
    assert signed32(0xFFFFFFFFFFFFFF9C) == AT_FDCWD
    assert signed32(5) == 5


def test_exec_event_from_proc(proc: Process) -> None:
    ev = Decoder(X86_64).exec_event(proc, proc.pid)
    assert ev.kind == "exec" and ev.path == "/usr/bin/app"
    assert ev.argv == tuple(Path("/proc/self/cmdline").read_bytes().decode().split("\0")[:-1])
