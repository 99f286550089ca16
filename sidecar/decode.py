"""Turn a syscall stop (number + six integer arguments) into a `SyscallEvent`.

The tracer filters by syscall number before calling in here: decoding reads the tracee's
memory and /proc, which is the expensive part of a stop. Strings and structures are read
with `os.pread` on /proc/PID/mem, kept open per process (reopened after exec, when the
address space changes); every read is bounded.

Register layouts (which registers hold the number and the arguments at a syscall stop):

- x86_64: number in `orig_rax`; arguments rdi, rsi, rdx, r10, r8, r9; result in rax.
- aarch64: number in x8; arguments x0..x5; result in x0 (overwriting the first argument,
  which the kernel keeps as orig_x0 internally; at syscall entry x0 is still the argument).

Relative paths are resolved against the process's cwd (/proc/PID/cwd) or the directory fd
(/proc/PID/fd/N), lexically (no symlinks followed: the tracee's view may differ and the
target may not exist yet).
"""

from __future__ import annotations

import ipaddress
import os
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from sidecar.events import (
    ACCESS_CREATE,
    ACCESS_READ,
    ACCESS_WRITE,
    KIND_CHMOD,
    KIND_CHOWN,
    KIND_CONNECT,
    KIND_EXEC,
    KIND_OPEN,
    KIND_OTHER,
    KIND_RENAME,
    KIND_SENDTO,
    KIND_UNLINK,
    SyscallEvent,
)
from sidecar.syscalls import Arch

AT_FDCWD = -100
# Open flags (<asm-generic/fcntl.h>; the same on x86_64 and arm64).
O_ACCMODE = 0o3
O_WRONLY = 0o1
O_RDWR = 0o2
O_CREAT = 0o100
O_TRUNC = 0o1000
# Bounds on what one stop reads from the tracee.
PATH_MAX = 4096  # <linux/limits.h>
ARG_MAX_COUNT = 256  # argv entries kept
ARG_MAX_LEN = 4096  # bytes per argv entry
ARGV_MAX_TOTAL = 64 * 1024  # bytes of argv in total
SOCKADDR_MAX = 128  # sizeof(struct sockaddr_storage)
READ_CHUNK = 256
# Address families (<linux/socket.h>).
AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10
# <linux/socket.h>: sendto() with this flag opens a TCP connection (TCP Fast Open).
MSG_FASTOPEN = 0x20000000

_U64 = struct.Struct("<Q")
_MASK64 = (1 << 64) - 1


def signed(value: int) -> int:
    """A register value as the signed 64-bit integer the kernel sees (fds, AT_FDCWD)."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def signed32(value: int) -> int:
    """An `int` argument: only the low 32 bits are meaningful (dirfd AT_FDCWD, fds)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


# --- register layouts -------------------------------------------------------------------


def x86_64_call(regs: Any) -> tuple[int, tuple[int, ...]]:
    """(number, arguments) from an x86_64 user_regs_struct at a syscall stop."""
    return regs.orig_rax, (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9)


def aarch64_call(regs: Any) -> tuple[int, tuple[int, ...]]:
    """(number, arguments) from an aarch64 user_pt_regs at a syscall-entry stop."""
    r = regs.regs
    return r[8], (r[0], r[1], r[2], r[3], r[4], r[5])


REGISTER_LAYOUTS: dict[str, Callable[[Any], tuple[int, tuple[int, ...]]]] = {
    "x86_64": x86_64_call,
    "aarch64": aarch64_call,
}


def access_of(flags: int) -> frozenset[str]:
    """ACCESS_* bits of open flags."""
    return _ACCESS[flags & _ACCESS_FLAGS]


def can_write(flags: int) -> bool:
    """Whether open flags give write or create access (ACCESS_WRITE or ACCESS_CREATE)."""
    return bool(flags & O_WRITING) or flags & O_ACCMODE in (O_WRONLY, O_RDWR)


def _access_bits(flags: int) -> frozenset[str]:
    bits = set()
    mode = flags & O_ACCMODE
    if mode in (0, O_RDWR):
        bits.add(ACCESS_READ)
    if mode in (O_WRONLY, O_RDWR) or flags & O_TRUNC:
        bits.add(ACCESS_WRITE)
    if flags & O_CREAT:
        bits.add(ACCESS_CREATE)
    return frozenset(bits)


# The flags access_of depends on, and its answer for each combination (16 of them).
_ACCESS_FLAGS = O_ACCMODE | O_TRUNC | O_CREAT
O_WRITING = O_TRUNC | O_CREAT
_ACCESS = {f: _access_bits(f) for f in range(_ACCESS_FLAGS + 1) if f & ~_ACCESS_FLAGS == 0}


class ProcessMemory:
    """Bounded reads of one process's memory through /proc/PID/mem and os.pread."""

    __slots__ = ("fd", "pid")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)

    def read(self, addr: int, size: int) -> bytes:
        """Up to `size` bytes at `addr`; fewer when the mapping ends; b"" when unreadable."""
        if addr == 0 or size <= 0:
            return b""
        try:
            return os.pread(self.fd, size, addr)
        except OSError:
            # EIO: unmapped address. The tracee passed a bad pointer; the kernel will
            # answer EFAULT, and there is nothing to decode.
            return b""

    def cstring(self, addr: int, limit: int = PATH_MAX) -> bytes | None:
        """The NUL-terminated string at `addr`, at most `limit` bytes; None if unreadable."""
        if addr == 0:
            return None
        if limit <= 0:
            return b""
        # Most strings fit in the first read: one pread, one find.
        size = min(READ_CHUNK, 4096 - (addr & 4095), limit)
        try:
            out = os.pread(self.fd, size, addr)
        except OSError:
            return None  # unmapped (see read)
        nul = out.find(b"\0")
        if nul >= 0:
            return out[:nul]
        if not out:
            return None
        while len(out) < limit:
            # Read to the end of the page first: a read that crosses into an unmapped page
            # fails (or comes back short) even when the string ends before it.
            here = addr + len(out)
            size = min(READ_CHUNK, 4096 - (here & 4095), limit - len(out))
            chunk = self.read(here, size)
            if not chunk:
                return out if out else None
            nul = chunk.find(b"\0")
            if nul >= 0:
                return out + chunk[:nul]
            out += chunk
        return out

    def pointers(self, addr: int, count: int) -> list[int]:
        """Up to `count` NULL-terminated pointers from an array (argv)."""
        data = self.read(addr, 8 * count)
        out = []
        for (ptr,) in _U64.iter_unpack(data[: len(data) - len(data) % 8]):
            if ptr == 0:
                break
            out.append(ptr)
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Process:
    """What the tracer knows about one traced process (thread group)."""

    __slots__ = ("container", "exe", "mem", "pid", "ppid")

    def __init__(self, pid: int, ppid: int, exe: str = "", container: str | None = None):
        self.pid = pid
        self.ppid = ppid
        self.exe = exe
        self.container = container
        self.mem: ProcessMemory | None = None

    def memory(self) -> ProcessMemory:
        if self.mem is None:
            self.mem = ProcessMemory(self.pid)
        return self.mem

    def refresh_exe(self) -> None:
        try:
            self.exe = os.readlink(f"/proc/{self.pid}/exe")
        except OSError:
            # Gone, or a kernel thread; keep what we had.
            return

    def exec_happened(self) -> None:
        """The address space and executable changed: reopen memory lazily, reread exe."""
        if self.mem is not None:
            self.mem.close()
            self.mem = None
        self.refresh_exe()

    def close(self) -> None:
        if self.mem is not None:
            self.mem.close()
            self.mem = None


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "surrogateescape")


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def resolve_path(pid: int, dirfd: int, raw: str | None) -> str | None:
    """An absolute, normalized path: `raw` resolved against the cwd or the directory fd."""
    if raw is None:
        return None
    if raw.startswith("/"):
        return os.path.normpath(raw) if "/." in raw or "//" in raw else raw
    if dirfd == AT_FDCWD:
        base = _readlink(f"/proc/{pid}/cwd")
    else:
        base = _readlink(f"/proc/{pid}/fd/{dirfd}")
    if base is None or not base.startswith("/"):
        return raw  # unknown base (gone, or an anonymous fd): keep the relative path
    return os.path.normpath(os.path.join(base, raw)) if raw else base


def fd_path(pid: int, fd: int) -> str | None:
    """What the fd refers to (a path, or `socket:[N]`, `pipe:[N]`, ...)."""
    return _readlink(f"/proc/{pid}/fd/{fd}")


def decode_sockaddr(data: bytes) -> tuple[str | None, str | None, int | None]:
    """(family, ip or unix path, port) of a struct sockaddr; unknown families give Nones."""
    if len(data) < 2:
        return None, None, None
    (family,) = struct.unpack_from("<H", data)
    if family == AF_INET and len(data) >= 8:
        port = struct.unpack_from(">H", data, 2)[0]
        return "inet", str(ipaddress.IPv4Address(data[4:8])), port
    if family == AF_INET6 and len(data) >= 24:
        port = struct.unpack_from(">H", data, 2)[0]
        return "inet6", str(ipaddress.IPv6Address(data[8:24])), port
    if family == AF_UNIX:
        path = data[2:]
        if path[:1] == b"\0":  # abstract namespace
            return "unix", "@" + path[1:].split(b"\0", 1)[0].decode("utf-8", "replace"), None
        return "unix", path.split(b"\0", 1)[0].decode("utf-8", "surrogateescape"), None
    return None, None, None


Handler = Callable[[ProcessMemory, int, tuple[int, ...]], dict[str, Any]]


def _exec(mem: ProcessMemory, pid: int, a: tuple[int, ...], at: bool) -> dict[str, Any]:
    path_arg, argv_arg = (a[1], a[2]) if at else (a[0], a[1])
    raw = _text(mem.cstring(path_arg))
    path = resolve_path(pid, signed32(a[0]) if at else AT_FDCWD, raw) if raw else raw
    argv: list[str] = []
    total = 0
    for ptr in mem.pointers(argv_arg, ARG_MAX_COUNT):
        arg = mem.cstring(ptr, ARG_MAX_LEN) or b""
        total += len(arg)
        if total > ARGV_MAX_TOTAL:
            break
        argv.append(arg.decode("utf-8", "surrogateescape"))
    return {"kind": KIND_EXEC, "path": path, "argv": tuple(argv)}


def _open(  # noqa: PLR0917 - the open family's arguments, in order
    mem: ProcessMemory, pid: int, dirfd: int, path_addr: int, flags: int, mode: int
) -> dict[str, Any]:
    return _open_fields(resolve_path(pid, dirfd, _text(mem.cstring(path_addr))), flags, mode)


def _open_fields(path: str | None, flags: int, mode: int) -> dict[str, Any]:
    access = access_of(flags)
    return {"kind": KIND_OPEN, "path": path, "flags": flags, "mode": mode, "access": access}


def _open_how(mem: ProcessMemory, addr: int) -> tuple[int, int]:
    # struct open_how { u64 flags; u64 mode; u64 resolve; }
    how = mem.read(addr, 16)
    return struct.unpack("<QQ", how) if len(how) == 16 else (0, 0)


# The open family's argument layout: name -> (dirfd, path, flags, mode) from the registers.
OpenArgs = Callable[[ProcessMemory, tuple[int, ...]], tuple[int, int, int, int]]
_OPEN_ARGS: dict[str, OpenArgs] = {
    "open": lambda m, a: (AT_FDCWD, a[0], a[1], a[2]),
    "openat": lambda m, a: (signed32(a[0]), a[1], a[2], a[3]),
    "openat2": lambda m, a: (signed32(a[0]), a[1], *_open_how(m, a[2])),
    "creat": lambda m, a: (AT_FDCWD, a[0], O_CREAT | O_WRONLY | O_TRUNC, a[1]),
}


def _path_at(mem: ProcessMemory, pid: int, dirfd: int, addr: int) -> str | None:
    return resolve_path(pid, dirfd, _text(mem.cstring(addr)))


def _sockaddr(mem: ProcessMemory, addr: int, length: int) -> dict[str, Any]:
    if addr == 0:
        return {}
    family, where, port = decode_sockaddr(mem.read(addr, min(length, SOCKADDR_MAX)))
    if family is None:
        return {}
    if family == "unix":
        return {"family": family, "path": where}
    return {"family": family, "ip": where, "port": port}


def _sendmsg(mem: ProcessMemory, a: tuple[int, ...]) -> dict[str, Any]:
    # struct msghdr { void *msg_name; socklen_t msg_namelen; ... }
    head = mem.read(a[1], 12)
    if len(head) < 12:
        return {}
    name, namelen = struct.unpack("<QI", head)
    return _sockaddr(mem, name, namelen)


def _open_handler(layout: OpenArgs) -> Handler:
    def handler(m: ProcessMemory, p: int, a: tuple[int, ...]) -> dict[str, Any]:
        return _open(m, p, *layout(m, a))

    return handler


def _handlers() -> dict[str, Handler]:
    cwd = AT_FDCWD
    s32 = signed32

    def unlink(m: ProcessMemory, p: int, a: tuple[int, ...]) -> dict[str, Any]:
        return {"kind": KIND_UNLINK, "path": _path_at(m, p, cwd, a[0])}

    def chmod(m: ProcessMemory, p: int, a: tuple[int, ...]) -> dict[str, Any]:
        return {"kind": KIND_CHMOD, "path": _path_at(m, p, cwd, a[0]), "mode": a[1] & 0o7777}

    def chown(m: ProcessMemory, p: int, a: tuple[int, ...]) -> dict[str, Any]:
        path = _path_at(m, p, cwd, a[0])
        return {"kind": KIND_CHOWN, "path": path, "uid": s32(a[1]), "gid": s32(a[2])}

    def udp(m: ProcessMemory, p: int, a: tuple[int, ...]) -> dict[str, Any]:
        dest = _sockaddr(m, a[4], a[5])
        if not dest:
            return {}
        if a[3] & MSG_FASTOPEN:  # TCP Fast Open: sendto is the connect
            return {"kind": KIND_CONNECT, "protocol": "tcp", **dest}
        return {"kind": KIND_SENDTO, "protocol": "udp", **dest}

    def sendmsg(m: ProcessMemory, p: int, a: tuple[int, ...]) -> dict[str, Any]:
        dest = _sendmsg(m, a)
        return {"kind": KIND_SENDTO, "protocol": "udp", **dest} if dest else {}

    return {
        "execve": lambda m, p, a: _exec(m, p, a, at=False),
        "execveat": lambda m, p, a: _exec(m, p, a, at=True),
        **{name: _open_handler(layout) for name, layout in _OPEN_ARGS.items()},
        "unlink": unlink,
        "rmdir": unlink,
        "unlinkat": lambda m, p, a: {"kind": KIND_UNLINK, "path": _path_at(m, p, s32(a[0]), a[1])},
        "rename": lambda m, p, a: {
            "kind": KIND_RENAME,
            "path": _path_at(m, p, cwd, a[0]),
            "path2": _path_at(m, p, cwd, a[1]),
        },
        "renameat": lambda m, p, a: {
            "kind": KIND_RENAME,
            "path": _path_at(m, p, s32(a[0]), a[1]),
            "path2": _path_at(m, p, s32(a[2]), a[3]),
        },
        "chmod": chmod,
        "fchmod": lambda m, p, a: {
            "kind": KIND_CHMOD,
            "path": fd_path(p, s32(a[0])),
            "mode": a[1] & 0o7777,
        },
        "fchmodat": lambda m, p, a: {
            "kind": KIND_CHMOD,
            "path": _path_at(m, p, s32(a[0]), a[1]),
            "mode": a[2] & 0o7777,
        },
        "chown": chown,
        "lchown": chown,
        "fchown": lambda m, p, a: {
            "kind": KIND_CHOWN,
            "path": fd_path(p, s32(a[0])),
            "uid": s32(a[1]),
            "gid": s32(a[2]),
        },
        "fchownat": lambda m, p, a: {
            "kind": KIND_CHOWN,
            "path": _path_at(m, p, s32(a[0]), a[1]),
            "uid": s32(a[2]),
            "gid": s32(a[3]),
        },
        "connect": lambda m, p, a: {"kind": KIND_CONNECT, **_sockaddr(m, a[1], a[2])},
        "sendto": udp,
        "sendmsg": sendmsg,
    }


_ALIASES = {"renameat2": "renameat", "fchmodat2": "fchmodat"}


class Decoder:
    """Decodes the syscalls of one architecture; build once, call at every watched stop."""

    def __init__(self, arch: Arch, clock: Callable[[], float] = time.time) -> None:
        self.arch = arch
        self.clock = clock
        handlers = _handlers()
        self._by_nr: dict[int, tuple[str, Handler | None]] = {}
        for name, nr in arch.numbers.items():
            handler = handlers.get(_ALIASES.get(name, name))
            self._by_nr[nr] = (name, handler)
        self._open_by_nr: dict[int, tuple[str, OpenArgs]] = {
            nr: (name, _OPEN_ARGS[name]) for name, nr in arch.numbers.items() if name in _OPEN_ARGS
        }

    def open_call(
        self, proc: Process, nr: int, args: tuple[int, ...]
    ) -> tuple[str, str | None, int, int] | None:
        """An open-family stop's (syscall name, resolved path, flags, mode) without building
        the event (None for other syscalls): enough for the engine to reject it cheaply.
        `open_event` then makes the same event as `decode` would."""
        known = self._open_by_nr.get(nr)
        if known is None:
            return None
        name, layout = known
        mem = proc.memory()
        dirfd, path_addr, flags, mode = layout(mem, args)
        return name, resolve_path(proc.pid, dirfd, _text(mem.cstring(path_addr))), flags, mode

    def open_event(  # noqa: PLR0917 - open_call's answer, in order
        self,
        proc: Process,
        tid: int,
        args: tuple[int, ...],
        name: str,
        path: str | None,
        flags: int,
        mode: int,
    ) -> SyscallEvent:
        return self._event(proc, tid, name, args, _open_fields(path, flags, mode))

    def decode(self, proc: Process, tid: int, nr: int, args: Sequence[int]) -> SyscallEvent | None:
        """The event, or None when there is nothing to report (a sendto on a connected
        socket carries no destination)."""
        known = self._by_nr.get(nr)
        name, handler = known if known is not None else (self.arch.name_of(nr), None)
        raw_args = tuple(args)
        fields: dict[str, Any]
        if handler is None:
            fields = {"kind": KIND_OTHER}
        else:
            fields = handler(proc.memory(), proc.pid, raw_args)
            if not fields:
                return None
        return self._event(proc, tid, name, raw_args, fields)

    def _event(
        self, proc: Process, tid: int, name: str, args: tuple[int, ...], fields: dict[str, Any]
    ) -> SyscallEvent:
        return SyscallEvent(
            timestamp=self.clock(),
            pid=proc.pid,
            tid=tid,
            ppid=proc.ppid,
            exe=proc.exe,
            syscall=name,
            container=proc.container,
            args=args,
            **fields,
        )

    def exec_event(self, proc: Process, tid: int) -> SyscallEvent:
        """A completed exec (PTRACE_EVENT_EXEC): path and argv from /proc, no registers."""
        try:
            with open(f"/proc/{proc.pid}/cmdline", "rb") as fh:
                raw = fh.read(ARGV_MAX_TOTAL)
        except OSError:
            raw = b""
        argv = tuple(
            a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0")[:-1][:ARG_MAX_COUNT]
        )
        return SyscallEvent(
            timestamp=self.clock(),
            pid=proc.pid,
            tid=tid,
            ppid=proc.ppid,
            exe=proc.exe,
            syscall="execve",
            kind=KIND_EXEC,
            path=proc.exe,
            argv=argv,
            container=proc.container,
        )
