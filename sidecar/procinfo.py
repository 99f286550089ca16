"""Who runs a traced process, and since when: ASFF `Process.LaunchedAt` and the user.

The tracer asks only for events it reports, while the tracee is still stopped at that event
(so its pid cannot have been reused), never per stop. Kernel facts relied on (proc(5)):

- `/proc/PID/stat` field 22, `starttime`: clock ticks after boot at which the process was
  created (fork/clone; exec does not change it), in units of `sysconf(_SC_CLK_TCK)`. Field 2,
  `comm`, is in parentheses and may itself hold spaces and ")": the fields after it are
  counted from its last ")".
- `/proc/stat` `btime`: the boot time in seconds since the epoch. Launch time = btime +
  starttime / CLK_TCK, to the tick (10 ms at the usual 100 Hz).
- `/proc/PID/status` `Uid:` real, effective, saved set, filesystem uid. The effective uid is
  what the kernel checks permissions with: that is the user reported.
- `/proc/PID/root` is the process's own root directory (its container's filesystem). The
  user name comes from *that* tree's `/etc/passwd`, opened component by component from the
  root with O_NOFOLLOW: a symbolic link there would be resolved against the sidecar's root,
  not the container's, so it is not followed (the numeric uid is reported instead). A
  non-regular file (a FIFO would block, /dev/zero never ends) is refused, and at most
  `MAX_PASSWD_BYTES` are read.

Costs: launch time never changes for a process, so it is read once per process (per
incarnation: the caller passes the object that stands for one, so a reused pid starts
afresh). The uid can change at exec (set-user-ID programs) and at setuid(2): it is re-read
when the executable changed and otherwise at most every `UID_REFRESH_SECONDS`. Names are
cached per (root device, root inode, uid). Every cache is bounded (least recently used
first out).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sidecar.events import RuntimeEvent

PROC = "/proc"
# /etc/passwd of a large image is a few KB; anything past 1 MiB is not a passwd file.
MAX_PASSWD_BYTES = 1 << 20
# The uid of a process that did not exec is re-read at most this often (setuid(2)).
UID_REFRESH_SECONDS = 30.0
MAX_PROCESSES = 4096  # cached per-process entries
MAX_NAMES = 1024  # cached (root, uid) -> name entries
STARTTIME_FIELD = 22  # proc(5), 1-based
UID_EFFECTIVE = 1  # `Uid:` real, effective, saved, filesystem
EXEC_SYSCALLS = frozenset({"execve", "execveat"})

K = TypeVar("K")
V = TypeVar("V")


class Bounded(Generic[K, V]):
    """A dict that forgets its least recently used entry past `limit` entries."""

    __slots__ = ("_data", "_limit")

    def __init__(self, limit: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._limit = limit

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._limit:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


# ---------------------------------------------------------------------------- parsing


def starttime_ticks(stat_text: str) -> int | None:
    """Field 22 of a /proc/PID/stat line; None when it is not one."""
    _, paren, rest = stat_text.rpartition(")")
    if not paren:
        return None
    fields = rest.split()
    index = STARTTIME_FIELD - 3  # fields after comm start at field 3
    if len(fields) <= index or not fields[index].isdigit():
        return None
    return int(fields[index])


def boot_time(proc_stat_text: str) -> int | None:
    """`btime` of /proc/stat, in seconds since the epoch."""
    for line in proc_stat_text.splitlines():
        if line.startswith("btime "):
            value = line[6:].strip()
            return int(value) if value.isdigit() else None
    return None


def effective_uid(status_text: str) -> int | None:
    """The effective uid on the `Uid:` line of /proc/PID/status."""
    for line in status_text.splitlines():
        if line.startswith("Uid:"):
            parts = line[4:].split()
            if len(parts) > UID_EFFECTIVE and parts[UID_EFFECTIVE].isdigit():
                return int(parts[UID_EFFECTIVE])
            return None
    return None


def passwd_name(passwd: bytes, uid: int) -> str | None:
    """The first name /etc/passwd gives `uid` (`name:x:uid:gid:gecos:home:shell`)."""
    wanted = str(uid).encode()
    for line in passwd.splitlines():
        parts = line.split(b":", 3)
        if len(parts) < 4 or parts[2] != wanted or not parts[0]:
            continue
        name = parts[0].decode("utf-8", "replace")
        if name.isprintable():
            return name
    return None


# ------------------------------------------------------------------------ reading /proc


def _read(path: str, limit: int = 4096) -> str | None:
    try:
        with open(path, "rb", buffering=0) as fh:
            return fh.read(limit).decode("ascii", "replace")
    except OSError:
        return None


def read_passwd(root: str, limit: int = MAX_PASSWD_BYTES) -> bytes | None:
    """`etc/passwd` under the directory `root` (a process's /proc/PID/root), neither
    component a symbolic link, a regular file, at most `limit` bytes (whole lines)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fds: list[int] = []
    try:
        fds.append(os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        fds.append(os.open("etc", os.O_PATH | os.O_DIRECTORY | flags, dir_fd=fds[-1]))
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fds.append(os.open("passwd", flags | os.O_NONBLOCK, dir_fd=fds[-1]))
        if not stat.S_ISREG(os.fstat(fds[-1]).st_mode):
            return None
        data = os.read(fds[-1], limit + 1)
    except OSError:
        return None  # absent, a symlink (ELOOP), not a directory, no permission
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
    if len(data) > limit:
        data = data[: data.rfind(b"\n", 0, limit) + 1]  # whole lines only
    return data


# ------------------------------------------------------------------------------ caches


@dataclass(frozen=True, slots=True)
class Owner:
    """What an event says about its process: launch time (epoch seconds), uid, user name."""

    launched_at: float | None
    uid: int | None
    user: str | None


@dataclass(slots=True)
class _Entry:
    incarnation: object  # the caller's object for this process: a reused pid has another
    exe: str
    launched_at: float | None
    uid: int | None
    user: str | None
    checked: float  # monotonic time the uid was read


class ProcInfo:
    """Launch time and user of processes, read from /proc and cached (see the module doc)."""

    def __init__(
        self,
        proc: str = PROC,
        *,
        max_processes: int = MAX_PROCESSES,
        max_names: int = MAX_NAMES,
        uid_refresh: float = UID_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._proc = proc
        self._entries: Bounded[int, _Entry] = Bounded(max_processes)
        self._names: Bounded[tuple[int, int, int], str] = Bounded(max_names)
        self._uid_refresh = uid_refresh
        self._clock = clock
        self._ticks: int | None = None
        self._btime: int | None = None
        self.reads = 0  # /proc reads done (the cost the caches save; tests look)

    def owner(self, pid: int, incarnation: object, exe: str, *, execed: bool = False) -> Owner:
        """The owner of `pid` now. `incarnation` stands for this process (not reused
        across pid reuse; None: do not cache); `exe` is its executable (a change means it
        exec'd); `execed`: it has just exec'd (read the uid again)."""
        now = self._clock()
        entry = self._entries.get(pid)
        if entry is None or incarnation is None or entry.incarnation is not incarnation:
            entry = _Entry(incarnation, exe, self._launched_at(pid), None, None, -1.0)
            if incarnation is not None:
                self._entries.put(pid, entry)
            self._refresh_user(pid, entry, now)
        elif execed or entry.exe != exe or now - entry.checked >= self._uid_refresh:
            entry.exe = exe
            self._refresh_user(pid, entry, now)
        return Owner(entry.launched_at, entry.uid, entry.user)

    def enrich(self, event: RuntimeEvent, incarnation: object, exe: str) -> RuntimeEvent:
        """`event` with `launched_at`, `uid` and `user` in its extra fields (what is known).

        An exec event is reported once the exec succeeded (PTRACE_EVENT_EXEC), before the
        tracer rereads the executable: its user is read again (a set-user-ID program)."""
        owner = self.owner(event.pid, incarnation, exe, execed=event.syscall in EXEC_SYSCALLS)
        extra: dict[str, float | int | str] = {}
        if owner.launched_at is not None:
            extra["launched_at"] = owner.launched_at
        if owner.uid is not None:
            extra["uid"] = owner.uid
        if owner.user is not None:
            extra["user"] = owner.user
        return event.with_extra(extra) if extra else event

    def _launched_at(self, pid: int) -> float | None:
        self.reads += 1
        text = _read(f"{self._proc}/{pid}/stat")
        ticks = starttime_ticks(text) if text else None
        boot = self._boot_time()
        if ticks is None or boot is None:
            return None
        if self._ticks is None:
            self._ticks = os.sysconf("SC_CLK_TCK")
        return boot + ticks / self._ticks

    def _boot_time(self) -> int | None:
        if self._btime is None:
            text = _read(f"{self._proc}/stat", 1 << 16)
            self._btime = boot_time(text) if text else None
        return self._btime

    def _refresh_user(self, pid: int, entry: _Entry, now: float) -> None:
        self.reads += 1
        text = _read(f"{self._proc}/{pid}/status")
        uid = effective_uid(text) if text else None
        entry.checked = now
        if uid is None:
            return  # gone: keep what was known
        entry.uid, entry.user = uid, self._name(pid, uid)

    def _name(self, pid: int, uid: int) -> str:
        root = f"{self._proc}/{pid}/root"
        try:
            st = os.stat(root)
        except OSError:
            return str(uid)
        key = (st.st_dev, st.st_ino, uid)
        name = self._names.get(key)
        if name is None:
            self.reads += 1
            passwd = read_passwd(root)
            name = (passwd_name(passwd, uid) if passwd else None) or str(uid)
            self._names.put(key, name)
        return name
