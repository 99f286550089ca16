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
import stat
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
    KIND_IO_URING,
    KIND_LINK,
    KIND_LISTEN,
    KIND_MEMFD,
    KIND_OPEN,
    KIND_OTHER,
    KIND_RENAME,
    KIND_SENDTO,
    KIND_UNLINK,
    SyscallEvent,
)
from sidecar.resolve import display, fd_target, link_names, resolve
from sidecar.syscalls import Arch

AT_FDCWD = -100
# Open flags (<asm-generic/fcntl.h>; the same on x86_64 and arm64).
O_ACCMODE = 0o3
O_WRONLY = 0o1
O_RDWR = 0o2
O_CREAT = 0o100
O_TRUNC = 0o1000
O_EXCL = 0o200
O_NOFOLLOW = 0o400000
# <linux/fcntl.h> AT_* flags
AT_SYMLINK_NOFOLLOW = 0x100
AT_SYMLINK_FOLLOW = 0x400
AT_EMPTY_PATH = 0x1000
# <linux/fs.h> renameat2 flags
RENAME_EXCHANGE = 0x2
# Bounds on what one stop reads from the tracee.
PATH_MAX = 4096  # <linux/limits.h>
ARG_MAX_COUNT = 1024  # argv entries matched; more are flagged as truncated
# One argv entry may be MAX_ARG_STRLEN = 32 pages (131,072 bytes, <linux/binfmts.h>): no
# entry is cut on its own. The whole argv is read up to ARGV_MAX_TOTAL and flagged beyond.
ARG_MAX_LEN = 32 * 4096
ARGV_MAX_TOTAL = 256 * 1024
ENV_NAME_MAX = 128  # bytes of an envp entry read: enough for the name and its "="
MEMFD_NAME_MAX = 249  # <linux/memfd.h>: 249 bytes of name after the "memfd:" prefix
UIO_MAXIOV = 1024  # <linux/uio.h>: sendmmsg's vlen is capped to this by the kernel
MMSGHDR_SIZE = 64  # struct mmsghdr { struct msghdr (56); unsigned msg_len; } padded, LP64
SOCKADDR_MAX = 128  # sizeof(struct sockaddr_storage)
READ_CHUNK = 256
# Pointers of an argv or envp array read at first (a shell's command: a handful).
POINTERS_FIRST = 32
# One read of an exec's environment strings: they usually lie side by side (bytes).
STRINGS_SPAN = 8192
# Address families (<linux/socket.h>).
AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10
# <linux/socket.h>: sendto() with this flag opens a TCP connection (TCP Fast Open).
MSG_FASTOPEN = 0x20000000

# <linux/sched.h> namespace flags (unshare, setns)
CLONE_NEW = {
    0x00020000: "CLONE_NEWNS",
    0x02000000: "CLONE_NEWCGROUP",
    0x04000000: "CLONE_NEWUTS",
    0x08000000: "CLONE_NEWIPC",
    0x10000000: "CLONE_NEWUSER",
    0x20000000: "CLONE_NEWPID",
    0x40000000: "CLONE_NEWNET",
    0x00000080: "CLONE_NEWTIME",
    0x00000200: "CLONE_FS",
    0x00000400: "CLONE_FILES",
}
# <linux/ptrace.h> requests worth naming
PTRACE_REQUESTS = {0: "TRACEME", 4: "POKETEXT", 5: "POKEDATA", 16: "ATTACH", 0x4206: "SEIZE"}
# <linux/bpf.h> enum bpf_cmd, the first ones
BPF_COMMANDS = {0: "MAP_CREATE", 5: "PROG_LOAD", 6: "OBJ_PIN", 8: "PROG_ATTACH", 28: "LINK_CREATE"}

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

    def cstrings(self, addrs: Sequence[int], limit: int) -> list[bytes | None]:
        """`cstring(addr, limit)` of each address, with one read per cluster of strings
        (an exec's environment: side by side, or a few heap blocks): see `clustered`. A
        string no span holds is read as cstring does."""
        found = self.clustered(addrs, limit, limit)
        return [
            self.cstring(addr, limit) if got is None else got
            for addr, got in zip(addrs, found, strict=True)
        ]

    def clustered(
        self, addrs: Sequence[int], limit: int, ahead: int, budget: int = STRINGS_SPAN * 64
    ) -> list[bytes | None]:
        """The NUL-terminated string at each address (cut at `limit` bytes) that one read
        per cluster of strings shows; None for each one it does not (NULL, unmapped, or
        running past its span): the caller reads those itself, within its own bounds.

        Taken in address order, a string inside the span read last comes from it; another
        one starts a new span that reaches `ahead` bytes past the start of the last string
        within STRINGS_SPAN bytes of it. A span that ends at an unmapped page is read short.
        Past `budget` bytes read in all, the remaining strings are left to the caller."""
        out: list[bytes | None] = [None] * len(addrs)
        order = sorted(range(len(addrs)), key=addrs.__getitem__)
        span, base = b"", 0
        for at, i in enumerate(order):
            addr = addrs[i]
            if addr == 0 or limit <= 0:
                continue
            off = addr - base
            if not 0 <= off < len(span):
                if budget <= 0:
                    break
                last, later = addr, at + 1
                while later < len(order) and addrs[order[later]] - addr <= STRINGS_SPAN - ahead:
                    last, later = addrs[order[later]], later + 1
                span, base, off = self.read(addr, last - addr + ahead), addr, 0
                budget -= last - addr + ahead
            nul = span.find(b"\0", off, off + limit)
            if nul >= 0:
                out[i] = span[off:nul]
            elif len(span) - off >= limit:
                out[i] = span[off : off + limit]
        return out

    def pointers(self, addr: int, count: int) -> list[int]:
        """Up to `count` NULL-terminated pointers from an array (argv): a first read of
        POINTERS_FIRST of them (most arrays end there), the rest in one more read."""
        out: list[int] = []
        want = min(count, POINTERS_FIRST)
        while want > 0:
            data = self.read(addr + 8 * len(out), 8 * want)
            for (ptr,) in _U64.iter_unpack(data[: len(data) - len(data) % 8]):
                if ptr == 0:
                    return out
                out.append(ptr)
            if len(data) < 8 * want:
                break  # the array runs into an unmapped page
            want = count - len(out)
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Process:
    """What the tracer knows about one traced process (thread group)."""

    __slots__ = ("_exe", "_exe_due", "container", "mem", "pid", "ppid", "same_root")

    def __init__(self, pid: int, ppid: int, exe: str = "", container: str | None = None):
        self.pid = pid
        self.ppid = ppid
        self._exe = exe
        self._exe_due = False  # exec'd since `exe` was read: read it when next asked
        self.container = container
        self.mem: ProcessMemory | None = None
        self.same_root = True  # its root is the sidecar's (see refresh_root)

    @property
    def exe(self) -> str:
        """The executable (/proc/PID/exe). After an exec it is read when first asked, at a
        later stop of the process (stopped, so its pid is still its own): a program that
        runs and exits without another stop that needs it (`/bin/true` from a shell) costs
        no readlink. Only an exec changes it, and the tracer sees every exec."""
        if self._exe_due:
            self._exe_due = False
            self.refresh_exe()
        return self._exe

    @exe.setter
    def exe(self, value: str) -> None:
        self._exe, self._exe_due = value, False

    def refresh_root(self) -> None:
        """Whether the process sees the sidecar's root: true in launch mode; in attach mode
        another container's processes have their own (paths then resolve under it)."""
        try:
            theirs, ours = os.stat(f"/proc/{self.pid}/root"), os.stat("/")
        except OSError:
            return
        self.same_root = (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)

    def memory(self) -> ProcessMemory:
        if self.mem is None:
            self.mem = ProcessMemory(self.pid)
        return self.mem

    def refresh_exe(self) -> None:
        try:
            self._exe = os.readlink(f"/proc/{self.pid}/exe")
        except OSError:
            # Gone, or a kernel thread; keep what we had.
            return

    def exec_happened(self) -> None:
        """The address space and executable changed: reopen memory and reread exe lazily."""
        if self.mem is not None:
            self.mem.close()
            self.mem = None
        self._exe_due = True

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


def resolve_path(pid: int, dirfd: int, raw: str | None, tid: int | None = None) -> str | None:
    """`raw` as the kernel resolves it for thread `tid` of `pid` (see sidecar.resolve)."""
    return resolve(pid, tid or pid, None if dirfd == AT_FDCWD else dirfd, raw)


def fd_path(pid: int, fd: int) -> str | None:
    """What the fd refers to (a path, `memfd:name`, `socket:[N]`, `pipe:[N]`, ...)."""
    return fd_target(pid, fd)


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


class View:
    """One stop's access to the tracee: its memory, and paths resolved as its thread sees
    them (cwd per thread, dirfd, root, symlinks: sidecar.resolve)."""

    __slots__ = ("mem", "pid", "ppid", "same_root", "tid")

    def __init__(
        self, mem: ProcessMemory, pid: int, tid: int, same_root: bool = True, ppid: int = 0
    ) -> None:
        self.mem = mem
        self.pid = pid
        self.tid = tid
        self.same_root = same_root
        self.ppid = ppid

    def string(self, addr: int, limit: int = PATH_MAX) -> str | None:
        return _text(self.mem.cstring(addr, limit))

    def path(self, dirfd: int, addr: int, follow: bool = True) -> str | None:
        """The path argument at `addr`, relative to `dirfd` (AT_FDCWD: the thread's cwd)."""
        return self.resolve(dirfd, self.string(addr), follow)

    def resolve(self, dirfd: int, raw: str | None, follow: bool = True) -> str | None:
        fd = None if dirfd == AT_FDCWD else dirfd
        return resolve(self.pid, self.tid, fd, raw, follow, self.same_root)

    def fd(self, fd: int) -> str | None:
        return fd_target(self.pid, fd)


Handler = Callable[[View, tuple[int, ...]], dict[str, Any]]


def _argv(mem: ProcessMemory, addr: int) -> tuple[tuple[str, ...], bool]:
    """argv in full up to ARGV_MAX_TOTAL bytes, ARG_MAX_COUNT entries; True when cut there.

    No entry is cut on its own: one may be as long as the kernel allows (MAX_ARG_STRLEN),
    so padding an argument cannot push what follows out of sight of the rules. The strings
    usually lie side by side: one read per cluster (`clustered`, within ARGV_MAX_TOTAL
    bytes) finds the short ones; a long one is read on its own, within what is left."""
    argv: list[str] = []
    total = 0
    truncated = False
    pointers = mem.pointers(addr, ARG_MAX_COUNT + 1)
    if len(pointers) > ARG_MAX_COUNT:
        pointers, truncated = pointers[:ARG_MAX_COUNT], True
    if len(pointers) > 1:
        near = mem.clustered(pointers, ARG_MAX_LEN + 1, READ_CHUNK, ARGV_MAX_TOTAL)
    else:
        near = [None] * len(pointers)  # one string: one read either way
    for ptr, found in zip(pointers, near, strict=True):
        room = ARGV_MAX_TOTAL - total
        arg = found if found is not None else mem.cstring(ptr, min(ARG_MAX_LEN, room) + 1) or b""
        if len(arg) > room:
            argv.append(arg[:room].decode("utf-8", "surrogateescape"))
            truncated = True
            break
        total += len(arg)
        argv.append(arg.decode("utf-8", "surrogateescape"))
    return tuple(argv), truncated


def _env_names(mem: ProcessMemory, addr: int) -> tuple[str, ...]:
    """The names of the variables in envp (never their values: they hold credentials)."""
    names = []
    for entry in mem.cstrings(mem.pointers(addr, ARG_MAX_COUNT), ENV_NAME_MAX):
        name, sep, _ = (entry or b"").partition(b"=")
        if sep and name:
            names.append(name.decode("utf-8", "replace"))
    return tuple(names)


def program_exists(pid: int, tid: int, path: str, same_root: bool = True) -> bool:
    """Whether the program an exec names exists, so that execvp's probes along PATH (which
    fail with ENOENT and run nothing) are not judged. A path resolved through the thread's
    root (/proc/PID/task/TID/root: a thread that unshared CLONE_FS has its own) of a process
    in the sidecar's mount namespace (after chroot(2)) is named as the sidecar sees it; one
    in another container's namespace as the process sees it: look both ways."""
    if not path.startswith("/"):
        return True  # memfd:name, or a path we could not resolve: judge it
    root = f"/proc/{pid}/task/{tid}/root"
    for candidate in (root + path, path) if not same_root else (path,):
        try:
            os.stat(candidate)
        except FileNotFoundError:
            continue
        except OSError:
            return True  # exists but unreadable to us: treat as real
        return True
    return False


# What an exec's path names, seen before it is resolved (`_as_given`).
GIVEN_MISSING, GIVEN_PLAIN, GIVEN_UNKNOWN = 0, 1, 2


def _as_given(v: View, raw: str) -> int:
    """What an absolute path names, asked with one lstat(2) before it is resolved, where
    the sidecar's view is the process's: it shares the sidecar's root, and the path does
    not name /proc (`//proc/self/fd/N` is the tracee's fd N to the kernel, and the
    sidecar's to our lstat: `resolve` rewrites it; symlinks into /proc/self are followed
    in the sidecar's view by both). GIVEN_MISSING when there is no such file (the exec
    fails with ENOENT: execvp's probes along PATH), GIVEN_PLAIN for a file whose final
    component is no symlink (it exists, and has no link names to report), GIVEN_UNKNOWN
    for a symlink, or where this cannot be told. The kernel's lookup follows the same
    directory symlinks as lstat's; only the final component differs."""
    if not v.same_root or not raw.startswith("/") or "/proc" in raw:
        return GIVEN_UNKNOWN
    try:
        st = os.lstat(raw)
    except FileNotFoundError:
        return GIVEN_MISSING
    except OSError:
        return GIVEN_UNKNOWN
    return GIVEN_UNKNOWN if stat.S_ISLNK(st.st_mode) else GIVEN_PLAIN


def _exec(v: View, a: tuple[int, ...], at: bool, env: bool, probes: bool) -> dict[str, Any]:
    """The file that runs: the resolved path (symlinks followed: `innocent -> nc` is nc),
    the fd of execveat(fd, "", AT_EMPTY_PATH) / fexecve (memfds as `memfd:name`), plus the
    names of the symlinks on the way (what a rule on the invoked name matches). With
    `env`, the names of its environment variables. Without `probes`, nothing ({}) for a
    program that does not exist (execvp's probes along PATH fail with ENOENT and run
    nothing: tar from Python tries every PATH entry before /usr/bin), before any argv or
    environment string is read."""
    dirfd, path_arg, argv_arg = (signed32(a[0]), a[1], a[2]) if at else (AT_FDCWD, a[0], a[1])
    envp = a[3] if at else a[2]
    raw = v.string(path_arg)
    if at and raw == "" and a[4] & AT_EMPTY_PATH:
        path = v.fd(dirfd)
        aliases: tuple[str, ...] = ()
    else:
        given = GIVEN_UNKNOWN if probes or not raw else _as_given(v, raw)
        if given == GIVEN_MISSING:
            return {}
        path = v.resolve(dirfd, raw) if raw else raw
        if given == GIVEN_UNKNOWN and not probes and path:
            if not program_exists(v.pid, v.tid, path, v.same_root):
                return {}
        if given == GIVEN_PLAIN:
            aliases = ()  # not a symlink: link_names would find none
        else:
            aliases = link_names(v.pid, v.tid, None if dirfd == AT_FDCWD else dirfd, raw or "")
    argv, truncated = _argv(v.mem, argv_arg)
    fields: dict[str, Any] = {"kind": KIND_EXEC, "path": path, "argv": argv}
    names = _env_names(v.mem, envp) if env else ()
    if names:
        fields["env"] = names
    parent = _readlink(f"/proc/{v.ppid}/exe") if v.ppid else None  # the parent process
    if parent:
        fields["parent"] = parent
    if aliases:
        fields["aliases"] = aliases
    if truncated:
        fields["truncated"] = True
    return fields


def _open_fields(path: str | None, flags: int, mode: int) -> dict[str, Any]:
    access = access_of(flags)
    return {"kind": KIND_OPEN, "path": path, "flags": flags, "mode": mode, "access": access}


def _open_how(mem: ProcessMemory, addr: int) -> tuple[int, int]:
    # struct open_how { u64 flags; u64 mode; u64 resolve; }
    how = mem.read(addr, 16)
    return struct.unpack("<QQ", how) if len(how) == 16 else (0, 0)


def open_follows(flags: int) -> bool:
    """Whether an open follows a final symlink: not with O_NOFOLLOW, nor O_CREAT|O_EXCL."""
    return not (flags & O_NOFOLLOW or (flags & O_CREAT and flags & O_EXCL))


# The open family's argument layout: name -> (dirfd, path, flags, mode) from the registers.
OpenArgs = Callable[[ProcessMemory, tuple[int, ...]], tuple[int, int, int, int]]
_OPEN_ARGS: dict[str, OpenArgs] = {
    "open": lambda m, a: (AT_FDCWD, a[0], a[1], a[2]),
    "openat": lambda m, a: (signed32(a[0]), a[1], a[2], a[3]),
    "openat2": lambda m, a: (signed32(a[0]), a[1], *_open_how(m, a[2])),
    "creat": lambda m, a: (AT_FDCWD, a[0], O_CREAT | O_WRONLY | O_TRUNC, a[1]),
}


def _open_handler(layout: OpenArgs) -> Handler:
    def handler(v: View, a: tuple[int, ...]) -> dict[str, Any]:
        dirfd, addr, flags, mode = layout(v.mem, a)
        return _open_fields(v.path(dirfd, addr, open_follows(flags)), flags, mode)

    return handler


def _sockaddr(mem: ProcessMemory, addr: int, length: int) -> dict[str, Any]:
    if addr == 0:
        return {}
    family, where, port = decode_sockaddr(mem.read(addr, min(length, SOCKADDR_MAX)))
    if family is None:
        return {}
    if family == "unix":
        return {"family": family, "path": where}
    return {"family": family, "ip": where, "port": port}


def _msghdr_name(mem: ProcessMemory, addr: int) -> dict[str, Any]:
    # struct msghdr { void *msg_name; socklen_t msg_namelen; ... }
    head = mem.read(addr, 12)
    if len(head) < 12:
        return {}
    name, namelen = struct.unpack("<QI", head)
    return _sockaddr(mem, name, namelen)


def _send(dest: dict[str, Any], flags: int, more: tuple[Any, ...] = ()) -> dict[str, Any]:
    if not dest and not more:
        return {}
    if flags & MSG_FASTOPEN:  # TCP Fast Open: the send is the connect
        return {"kind": KIND_CONNECT, "protocol": "tcp", **dest, "destinations": more}
    return {"kind": KIND_SENDTO, "protocol": "udp", **dest, "destinations": more}


def _sendmmsg(v: View, a: tuple[int, ...]) -> dict[str, Any]:
    """Every destination of the vector (the kernel takes at most UIO_MAXIOV of them)."""
    count = min(a[2], UIO_MAXIOV)
    seen: dict[tuple[str, str, int], None] = {}
    first: dict[str, Any] = {}
    for i in range(count):
        dest = _msghdr_name(v.mem, a[1] + MMSGHDR_SIZE * i)
        if dest.get("ip") is not None:
            seen[(dest["family"], dest["ip"], dest["port"])] = None
            first = first or dest
    return _send(first, a[3], tuple(seen) if len(seen) > 1 else ())


def listening(pid: int, fd: int) -> dict[str, Any]:
    """The local address of a socket about to listen: its inode (the fd's link is
    `socket:[N]`) looked up in the process's /proc/PID/net/tcp and tcp6 (listen(2) is rare:
    one read of each). {} for other sockets (unix, gone)."""
    link = _readlink(f"/proc/{pid}/fd/{fd}") or ""
    if not link.startswith("socket:["):
        return {}
    inode = link[len("socket:[") : -1]
    for table, family in (("tcp", "inet"), ("tcp6", "inet6")):
        try:
            with open(f"/proc/{pid}/net/{table}", encoding="ascii") as fh:
                next(fh, None)
                for line in fh:
                    cols = line.split()
                    if len(cols) > 9 and cols[9] == inode:
                        address, _, port = cols[1].partition(":")
                        return {
                            "family": family,
                            "ip": _proc_net_ip(address),
                            "port": int(port, 16),
                        }
        except (OSError, ValueError):
            continue
    return {}


def _proc_net_ip(hexaddr: str) -> str:
    """/proc/net/tcp{,6} addresses: 32-bit words in host (little-endian) order."""
    raw = bytes.fromhex(hexaddr)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def _flag_names(value: int, names: dict[int, str]) -> str:
    return ",".join(n for bit, n in names.items() if value & bit) or hex(value)


def _handlers(exec_env: bool = True, exec_probes: bool = True) -> dict[str, Handler]:
    cwd = AT_FDCWD
    s32 = signed32

    def unlink(v: View, a: tuple[int, ...]) -> dict[str, Any]:
        return {"kind": KIND_UNLINK, "path": v.path(cwd, a[0], follow=False)}

    def chmod(v: View, a: tuple[int, ...]) -> dict[str, Any]:
        return {"kind": KIND_CHMOD, "path": v.path(cwd, a[0]), "mode": a[1] & 0o7777}

    def fchmodat(v: View, a: tuple[int, ...]) -> dict[str, Any]:
        # fchmodat has no flags argument (a[3] is garbage); fchmodat2 shares the layout and
        # is decoded as the same call: it may not follow, with AT_SYMLINK_NOFOLLOW.
        return {"kind": KIND_CHMOD, "path": v.path(s32(a[0]), a[1]), "mode": a[2] & 0o7777}

    def chown(follow: bool) -> Handler:
        def handler(v: View, a: tuple[int, ...]) -> dict[str, Any]:
            path = v.path(cwd, a[0], follow)
            return {"kind": KIND_CHOWN, "path": path, "uid": s32(a[1]), "gid": s32(a[2])}

        return handler

    def fchownat(v: View, a: tuple[int, ...]) -> dict[str, Any]:
        flags = a[4]
        if flags & AT_EMPTY_PATH and v.string(a[1]) == "":
            path = v.fd(s32(a[0]))
        else:
            path = v.path(s32(a[0]), a[1], not flags & AT_SYMLINK_NOFOLLOW)
        return {"kind": KIND_CHOWN, "path": path, "uid": s32(a[2]), "gid": s32(a[3])}

    def truncate(path: str | None) -> dict[str, Any]:
        return _open_fields(path, O_WRONLY | O_TRUNC, 0)

    def link(v: View, old: str | None, new: str | None) -> dict[str, Any]:
        return {"kind": KIND_LINK, "path": new, "path2": old, "detail": "hard"}

    def linkat(v: View, a: tuple[int, ...]) -> dict[str, Any]:
        flags = a[4]
        if flags & AT_EMPTY_PATH and v.string(a[1]) == "":
            old = v.fd(s32(a[0]))
        else:
            old = v.path(s32(a[0]), a[1], bool(flags & AT_SYMLINK_FOLLOW))
        return link(v, old, v.path(s32(a[2]), a[3], follow=False))

    def symlink(v: View, target_addr: int, dirfd: int, link_addr: int) -> dict[str, Any]:
        new = v.path(dirfd, link_addr, follow=False)
        target = v.string(target_addr)
        if target and not target.startswith("/") and new:
            target = os.path.normpath(os.path.join(os.path.dirname(new), target))
        return {"kind": KIND_LINK, "path": new, "path2": target, "detail": "symbolic"}

    def rename(v: View, old: tuple[int, int], new: tuple[int, int], flags: int) -> dict[str, Any]:
        fields = {
            "kind": KIND_RENAME,
            "path": v.path(*old, follow=False),
            "path2": v.path(*new, follow=False),
        }
        if flags & RENAME_EXCHANGE:
            fields["detail"] = "exchange"  # both names are written
        return fields

    def mount(v: View, a: tuple[int, ...]) -> dict[str, Any]:
        source, fstype = v.string(a[0]), v.string(a[2], 256)
        return {"kind": KIND_OTHER, "path": v.path(cwd, a[1]), "detail": f"{fstype} {source}"}

    return {
        "execve": lambda v, a: _exec(v, a, False, exec_env, exec_probes),
        "execveat": lambda v, a: _exec(v, a, True, exec_env, exec_probes),
        **{name: _open_handler(layout) for name, layout in _OPEN_ARGS.items()},
        "truncate": lambda v, a: truncate(v.path(cwd, a[0])),
        "ftruncate": lambda v, a: truncate(v.fd(s32(a[0]))),
        "link": lambda v, a: link(v, v.path(cwd, a[0], False), v.path(cwd, a[1], False)),
        "linkat": linkat,
        "symlink": lambda v, a: symlink(v, a[0], cwd, a[1]),
        "symlinkat": lambda v, a: symlink(v, a[0], s32(a[1]), a[2]),
        "unlink": unlink,
        "rmdir": unlink,
        "unlinkat": lambda v, a: {"kind": KIND_UNLINK, "path": v.path(s32(a[0]), a[1], False)},
        "rename": lambda v, a: rename(v, (cwd, a[0]), (cwd, a[1]), 0),
        "renameat": lambda v, a: rename(v, (s32(a[0]), a[1]), (s32(a[2]), a[3]), 0),
        "renameat2": lambda v, a: rename(v, (s32(a[0]), a[1]), (s32(a[2]), a[3]), a[4]),
        "chmod": chmod,
        "fchmod": lambda v, a: {"kind": KIND_CHMOD, "path": v.fd(s32(a[0])), "mode": a[1] & 0o7777},
        "fchmodat": fchmodat,
        "fchmodat2": lambda v, a: {
            "kind": KIND_CHMOD,
            "path": v.path(s32(a[0]), a[1], not a[3] & AT_SYMLINK_NOFOLLOW),
            "mode": a[2] & 0o7777,
        },
        "chown": chown(follow=True),
        "lchown": chown(follow=False),
        "fchown": lambda v, a: {
            "kind": KIND_CHOWN,
            "path": v.fd(s32(a[0])),
            "uid": s32(a[1]),
            "gid": s32(a[2]),
        },
        "fchownat": fchownat,
        "connect": lambda v, a: {"kind": KIND_CONNECT, **_sockaddr(v.mem, a[1], a[2])},
        "sendto": lambda v, a: _send(_sockaddr(v.mem, a[4], a[5]), a[3]),
        "sendmsg": lambda v, a: _send(_msghdr_name(v.mem, a[1]), a[2]),
        "sendmmsg": _sendmmsg,
        "listen": lambda v, a: {
            "kind": KIND_LISTEN,
            "protocol": "tcp",
            **listening(v.pid, s32(a[0])),
        },
        "memfd_create": lambda v, a: {
            "kind": KIND_MEMFD,
            "path": f"memfd:{v.string(a[0], MEMFD_NAME_MAX) or ''}",
        },
        "io_uring_setup": lambda v, a: {"kind": KIND_IO_URING, "detail": f"entries={a[0]}"},
        "ptrace": lambda v, a: {
            "kind": KIND_OTHER,
            "detail": f"request={PTRACE_REQUESTS.get(a[0], a[0])} pid={s32(a[1])}",
            "target": s32(a[1]),
        },
        "mount": mount,
        "umount2": lambda v, a: {"kind": KIND_OTHER, "path": v.path(cwd, a[0], False)},
        "pivot_root": lambda v, a: {
            "kind": KIND_OTHER,
            "path": v.path(cwd, a[0]),
            "path2": v.path(cwd, a[1]),
        },
        "unshare": lambda v, a: {"kind": KIND_OTHER, "detail": _flag_names(a[0], CLONE_NEW)},
        "setns": lambda v, a: {
            "kind": KIND_OTHER,
            "path": v.fd(s32(a[0])),
            "detail": _flag_names(a[1], CLONE_NEW) if a[1] else "any",
        },
        "bpf": lambda v, a: {"kind": KIND_OTHER, "detail": BPF_COMMANDS.get(a[0], str(a[0]))},
        "init_module": lambda v, a: {
            "kind": KIND_OTHER,
            "detail": f"image of {a[1]} bytes, params {v.string(a[2], 256)!r}",
        },
        "finit_module": lambda v, a: {
            "kind": KIND_OTHER,
            "path": v.fd(s32(a[0])),
            "detail": f"params {v.string(a[1], 256)!r}",
        },
    }


class Decoder:
    """Decodes the syscalls of one architecture; build once, call at every watched stop.

    `exec_env`: read the names of an exec's environment variables (only a rule on them
    needs it: Requirements.exec_env). `exec_probes`: decode an exec of a program that does
    not exist too; the tracer, which judges only execs that can run, says False and gets
    None for those (see `_exec`)."""

    def __init__(
        self,
        arch: Arch,
        clock: Callable[[], float] = time.time,
        *,
        exec_env: bool = True,
        exec_probes: bool = True,
    ) -> None:
        self.arch = arch
        self.clock = clock
        self.exec_env = exec_env
        handlers = _handlers(exec_env, exec_probes)
        self._by_nr: dict[int, tuple[str, Handler | None]] = {
            nr: (name, handlers.get(name)) for name, nr in arch.numbers.items()
        }
        self._open_by_nr: dict[int, tuple[str, OpenArgs]] = {
            nr: (name, _OPEN_ARGS[name]) for name, nr in arch.numbers.items() if name in _OPEN_ARGS
        }

    def open_call(
        self, proc: Process, tid: int, nr: int, args: tuple[int, ...]
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
        raw = _text(mem.cstring(path_addr))
        fd = None if dirfd == AT_FDCWD else dirfd
        path = resolve(proc.pid, tid, fd, raw, open_follows(flags), proc.same_root)
        return name, path, flags, mode

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
        raw_args = tuple(args)
        found = self.call(proc, tid, nr, raw_args)
        if found is None:
            return None
        return self.event(proc, tid, raw_args, *found)

    def call(
        self, proc: Process, tid: int, nr: int, args: tuple[int, ...]
    ) -> tuple[str, dict[str, Any]] | None:
        """`decode` without building the event: (syscall name, the event's fields), enough
        for the engine to reject a stop cheaply (`Engine.path_is_quiet`); None as `decode`.
        `event` then makes what `decode` would."""
        known = self._by_nr.get(nr)
        name, handler = known if known is not None else (self.arch.name_of(nr), None)
        if handler is None:
            return name, {"kind": KIND_OTHER}
        view = View(proc.memory(), proc.pid, tid, proc.same_root, proc.ppid)
        fields = handler(view, args)
        if not fields:
            return None
        return name, fields

    def event(
        self, proc: Process, tid: int, args: tuple[int, ...], name: str, fields: dict[str, Any]
    ) -> SyscallEvent:
        return self._event(proc, tid, name, args, fields)

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
                raw = fh.read(ARGV_MAX_TOTAL + 1)
        except OSError:
            raw = b""
        parts = raw[:ARGV_MAX_TOTAL].split(b"\0")
        if parts and parts[-1] == b"":
            parts.pop()
        truncated = len(raw) > ARGV_MAX_TOTAL or len(parts) > ARG_MAX_COUNT
        argv = tuple(a.decode("utf-8", "surrogateescape") for a in parts[:ARG_MAX_COUNT])
        env: tuple[str, ...] = ()
        try:
            if self.exec_env:
                with open(f"/proc/{proc.pid}/environ", "rb") as fh:
                    env = tuple(
                        e.partition(b"=")[0].decode("utf-8", "replace")
                        for e in fh.read(ARGV_MAX_TOTAL).split(b"\0")
                        if b"=" in e
                    )
        except OSError:
            env = ()
        return SyscallEvent(
            timestamp=self.clock(),
            pid=proc.pid,
            tid=tid,
            ppid=proc.ppid,
            exe=proc.exe,
            syscall="execve",
            kind=KIND_EXEC,
            path=display(proc.exe) if proc.exe else proc.exe,
            argv=argv,
            container=proc.container,
            truncated=truncated,
            env=env,
            parent=_readlink(f"/proc/{proc.ppid}/exe"),
        )
