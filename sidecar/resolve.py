"""Resolve a path the way the kernel will for the traced thread: its cwd, its dirfd, its
symlinks and /proc magic links.

A rule about `/etc/cron.d` must see `/etc/cron.d/job` whether the process wrote
`/etc/cron.d/job`, `/proc/self/root/etc/cron.d/job`, `../../etc/cron.d/job` from a thread
that `unshare(CLONE_FS)`+`chdir`'d elsewhere, `/proc/self/fd/7` (an fd to it), or a symlink
to it. So the tracer never matches the string the process passed: it asks the kernel.

How: the path is opened here with `O_PATH` (no read/write access, no side effect: O_PATH
opens neither run a device's open nor update atime), relative to an `O_PATH` descriptor of
the thread's own cwd (`/proc/PID/task/TID/cwd`: per thread, since a thread may have its own
fs struct) or of its dirfd (`/proc/PID/fd/N`), and `/proc/self/fd/<ours>` tells what the kernel
found (`readlink` of an fd gives the path of the file it refers to, d_path(3)). Three
syscalls: openat, readlink, close. A path that meets no symlink costs less: one openat2 with
RESOLVE_NO_SYMLINKS says so, and its normalized spelling (joined to the canonical cwd or
dirfd path for a relative one) is the answer.

What the sidecar's view cannot give (documented in policies/README.md):

- `/proc/self` and `/proc/thread-self` mean the *reader*: a path that starts with them is
  rewritten to `/proc/PID` and `/proc/PID/task/TID` first; a symlink whose target goes
  through `/proc/self` would still resolve against the sidecar, and is reported as the
  path the process gave.
- Absolute symlinks are followed in the sidecar's root: the same as the workload's in launch
  mode; in attach mode the workload's root is another container's, and absolute paths are
  resolved under /proc/PID/root (symlinks inside it that are absolute still point into the
  sidecar's root).
- A path that does not exist yet (O_CREAT) is resolved by its parent directory; a final
  component that is a dangling symlink is followed (as O_CREAT would, creating its target).

The answer is a snapshot: another thread may change the path string or the file system
before the kernel runs the syscall. The tracer therefore re-checks an open for writing by
its returned fd at the syscall's exit (before the process can write).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import struct
from typing import Any

# Bound on symlink hops followed by hand (a dangling final symlink); the kernel's is 40.
MAX_LINK_HOPS = 40
_SELF = re.compile(r"^/+proc/+(?:\./+)*(self|thread-self)(?=/|$)")
_DELETED = " (deleted)"
_MEMFD = "/memfd:"
_O_PATH = getattr(os, "O_PATH", 0o10000000)
_OPEN_FLAGS = _O_PATH | os.O_CLOEXEC
# <linux/openat2.h>
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
_OPEN_HOW_SIZE = 24  # struct open_how { u64 flags, mode, resolve; }
_AT_FDCWD = -100
_NO_LINK_MET = frozenset({errno.ENOENT, errno.ENOTDIR})


@functools.cache
def _openat2() -> tuple[Any, ...] | None:
    """libc's syscall() and close() with the prebuilt arguments of a no-symlink O_PATH
    openat2; None where the architecture has no openat2 number we know."""
    from sidecar.syscalls import native_arch

    try:
        nr = native_arch().number("openat2")
    except (ValueError, KeyError):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    how = ctypes.create_string_buffer(
        struct.pack("<QQQ", _OPEN_FLAGS, 0, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS),
        _OPEN_HOW_SIZE,
    )
    return (
        syscall,
        libc.close,
        ctypes.c_long(nr),
        ctypes.c_int(_AT_FDCWD),
        how,
        ctypes.c_size_t(_OPEN_HOW_SIZE),
    )


def _plain(path: str) -> bool | None:
    """True when the kernel reaches `path` (absolute) through no symlink at all: then its
    normalized spelling is the path. False when it meets one; None when openat2 is not there
    to ask."""
    call = _openat2()
    if call is None:
        return None
    syscall, close, nr, cwd, how, size = call
    fd = syscall(nr, cwd, os.fsencode(path), how, size)
    if fd >= 0:
        close(fd)
        return True
    err = ctypes.get_errno()
    if err in _NO_LINK_MET:
        # The walk stopped at a missing component (or a non-directory) having met no
        # symlink: the syscall will create the file at that spelling, or fail.
        return True
    if err in (errno.ENOSYS, errno.EPERM):
        return None  # no openat2 here, or a seccomp profile refuses it
    return False  # ELOOP: a symlink or magic link on the way; EXDEV, EACCES: ask in full


def without_self(path: str, pid: int, tid: int) -> str:
    """`/proc/self/...` and `/proc/thread-self/...` as the tracee means them."""
    match = _SELF.match(path)
    if match is None:
        return path
    who = f"/proc/{pid}" if match.group(1) == "self" else f"/proc/{pid}/task/{tid}"
    return who + path[match.end() :]


def fd_target(pid: int, fd: int) -> str | None:
    """What the tracee's fd refers to (a path, `memfd:name`, `socket:[N]`, ...)."""
    try:
        return display(os.readlink(f"/proc/{pid}/fd/{fd}"))
    except OSError:
        return None


def display(target: str) -> str:
    """A kernel path as events show it: memfds by name (`memfd:name`), deleted files by the
    name they had."""
    if target.startswith(_MEMFD):
        name = target[1:]
        return name[: -len(_DELETED)] if name.endswith(_DELETED) else name
    if target.endswith(_DELETED) and target.startswith("/"):
        return target[: -len(_DELETED)]
    return target


def _opened(path: str, dir_fd: int | None, flags: int) -> str | None:
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    finally:
        os.close(fd)


def _start(pid: int, tid: int, dirfd: int | None) -> tuple[str, ...]:
    """Where a relative path starts, most precise first: the thread's own cwd (a thread
    may have its own after unshare(CLONE_FS)), the process's, or the dirfd."""
    if dirfd is not None:
        return (f"/proc/{pid}/fd/{dirfd}",)
    return (f"/proc/{pid}/task/{tid}/cwd", f"/proc/{pid}/cwd")


def _base(pid: int, tid: int, dirfd: int | None) -> int | None:
    """An O_PATH descriptor of the directory a relative path starts from; None if gone."""
    for where in _start(pid, tid, dirfd):
        try:
            return os.open(where, _OPEN_FLAGS | os.O_DIRECTORY)
        except OSError:
            continue
    return None


def _start_path(pid: int, tid: int, dirfd: int | None) -> str | None:
    for where in _start(pid, tid, dirfd):
        try:
            return os.readlink(where)
        except OSError:
            continue
    return None


def resolve(  # noqa: PLR0917 - the syscall's view: who, from where, what, and how
    pid: int,
    tid: int,
    dirfd: int | None,
    raw: str | None,
    follow: bool = True,
    same_root: bool = True,
) -> str | None:
    """The absolute path the kernel will operate on, or the best lexical guess when it
    cannot be resolved (gone, no permission): never None for a non-None `raw`.

    `dirfd` None is AT_FDCWD (the thread's cwd). `follow` False keeps a final symlink (unlink,
    rename, lchown, the new name of link/symlink). `raw` "" means the dirfd itself
    (AT_EMPTY_PATH). `same_root`: the tracee's root is the sidecar's (launch mode)."""
    if raw is None:
        return None
    if raw == "":
        return fd_target(pid, dirfd) if dirfd is not None else None
    flags = _OPEN_FLAGS if follow else _OPEN_FLAGS | os.O_NOFOLLOW
    if raw.startswith("/"):
        path = without_self(raw, pid, tid)
        if not same_root and not path.startswith("/proc/"):
            path = f"/proc/{pid}/task/{tid}/root{path}"  # the thread's: see unshare(CLONE_FS)
        elif _plain(path):
            return _normal(path)
        base = None
    else:
        quick = _relative_plain(pid, tid, dirfd, raw, follow) if same_root else None
        if quick is not None:
            return quick
        path = raw
        base = _base(pid, tid, dirfd)
        if base is None:
            return _lexical(pid, tid, dirfd, raw)
    try:
        found = _opened(path, base, flags)
        if found is None:
            found = _missing(path, base, flags, follow)
    finally:
        if base is not None:
            os.close(base)
    if found is None:
        return _lexical(pid, tid, dirfd, raw)
    return display(found)


def _relative_plain(
    pid: int, tid: int, dirfd: int | None, raw: str, follow: bool = True
) -> str | None:
    """A relative path that meets no symlink, in two syscalls instead of up to seven: the
    start directory's canonical path (one readlink of the cwd or dirfd link, which names no
    symlink), then a no-symlink O_PATH openat2 of the joined path (as `_plain` does for an
    absolute one). A single name that is not followed (unlinkat, O_CREAT|O_EXCL, lchown of
    `name`) meets no symlink at all: the readlink alone. None when a symlink is on the way,
    the start is not a plain directory of our root (deleted, another root), or openat2 is
    missing: resolve in full then."""
    if raw.endswith("/"):
        return None  # the walk names a directory without the slash: leave it to the walk
    start = _start_path(pid, tid, dirfd)
    if start is None or not start.startswith("/") or start.endswith(_DELETED):
        return None
    path = start + "/" + raw if start != "/" else "/" + raw
    if (follow or "/" in raw) and _plain(path) is not True:
        return None
    return _normal(path)


def _missing(path: str, base: int | None, flags: int, follow: bool) -> str | None:
    """A path that does not exist (yet): follow a dangling final symlink, else resolve the
    parent and append the name."""
    hops = 0
    while True:
        head, _, name = path.rstrip("/").rpartition("/")
        if follow and hops < MAX_LINK_HOPS:
            try:
                target = os.readlink(path, dir_fd=base)
            except OSError:
                target = None
            if target is not None:  # a dangling symlink: O_CREAT creates its target
                hops += 1
                path = target if target.startswith("/") else f"{head}/{target}" if head else target
                continue
        if name in ("", ".", ".."):
            return None
        parent = _opened(head or ("/" if path.startswith("/") else "."), base, _OPEN_FLAGS)
        if parent is None:
            return None
        return parent.rstrip("/") + "/" + name


def _lexical(pid: int, tid: int, dirfd: int | None, raw: str) -> str:
    """The fallback: `raw` joined to the cwd or dirfd and normalized, without the kernel."""
    if raw.startswith("/"):
        path = without_self(raw, pid, tid)
    else:
        start = _start_path(pid, tid, dirfd)
        if start is None or not start.startswith("/"):
            return raw
        path = os.path.join(start, raw)
    return _normal(path)


def _normal(path: str) -> str:
    """One spelling per path (POSIX lets normpath keep a leading `//`; Linux does not)."""
    if "//" in path or "/." in path:
        path = os.path.normpath(path)
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
    return path


def link_names(pid: int, tid: int, dirfd: int | None, raw: str) -> tuple[str, ...]:
    """The paths along the chain of symlinks `raw` names as its final component: an exec of
    `innocent -> /usr/bin/nc -> /etc/alternatives/nc -> /bin/nc.openbsd` gives those four
    (what a rule on the invoked name or path must match); () when `raw` is not a symlink."""
    if not raw:
        return ()
    if raw.startswith("/"):
        path = without_self(raw, pid, tid)
    else:
        start = _start_path(pid, tid, dirfd)
        if start is None:
            return ()
        path = os.path.join(start, raw)
    chain: list[str] = []
    for _ in range(MAX_LINK_HOPS):
        try:
            target = os.readlink(path)
        except OSError:
            break
        if not chain:
            chain.append(_normal(path))
        path = target if target.startswith("/") else os.path.join(os.path.dirname(path), target)
        chain.append(_normal(path))
    return tuple(chain)
