"""The data that flows through the sidecar: tracer -> engine -> pipeline -> sinks.

The tracer decodes a syscall stop into a `SyscallEvent` (only for syscalls the engine asked
for, see `Requirements`). The engine evaluates it against the policy and returns a
`Verdict`: whether to block, and the `RuntimeEvent`s to emit. The pipeline samples,
aggregates and batches runtime events and hands them to the sinks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# SyscallEvent.kind values: what the tracer decoded, independent of the syscall's name.
KIND_EXEC = "exec"  # execve, execveat (also reported from PTRACE_EVENT_EXEC)
KIND_OPEN = "open"  # open, openat, openat2, creat
KIND_UNLINK = "unlink"  # unlink, unlinkat, rmdir
KIND_RENAME = "rename"  # rename, renameat, renameat2
KIND_CHMOD = "chmod"  # chmod, fchmod, fchmodat, fchmodat2
KIND_CHOWN = "chown"  # chown, fchown, lchown, fchownat
KIND_CONNECT = "connect"  # connect
KIND_SENDTO = "sendto"  # sendto / sendmsg / sendmmsg with a destination (UDP)
KIND_LINK = "link"  # link, linkat (detail "hard"), symlink, symlinkat ("symbolic")
KIND_MEMFD = "memfd"  # memfd_create: path "memfd:NAME"
KIND_LISTEN = "listen"  # listen: the local address and port of the socket
KIND_IO_URING = "io_uring"  # io_uring_setup: its operations are out of ptrace's sight
KIND_OTHER = "other"  # any other traced syscall (syscall filtering rules)

# Access bits of an open, derived from its flags.
ACCESS_READ = "read"
ACCESS_WRITE = "write"
ACCESS_CREATE = "create"


@dataclass(frozen=True, slots=True)
class SyscallEvent:
    """One decoded syscall (or exec event) of one traced thread."""

    timestamp: float  # time.time() at the stop
    pid: int  # thread group id (the process)
    tid: int
    ppid: int
    exe: str  # executable path of the process (argv[0] resolved, or /proc/PID/exe)
    syscall: str  # the syscall's name on this architecture: "openat", "connect", ...
    kind: str  # one of the KIND_* values
    path: str | None = None  # absolute, as the kernel resolves it (sidecar.resolve)
    path2: str | None = None  # rename's destination, link's existing file, symlink's target
    access: frozenset[str] = frozenset()  # ACCESS_* bits for opens
    flags: int | None = None  # raw open flags
    mode: int | None = None  # chmod mode, open mode
    uid: int | None = None  # chown owner
    gid: int | None = None
    argv: tuple[str, ...] = ()  # exec arguments, argv[0] first
    family: str | None = None  # "inet", "inet6", "unix"
    ip: str | None = None
    port: int | None = None
    protocol: str | None = None  # "tcp", "udp" when known
    container: str | None = None  # the container name, from the process's cgroup
    args: tuple[int, ...] = ()  # the raw integer arguments, for syscall filtering rules
    # exec: names of the symlinks the invoked path went through (`innocent` -> `nc`)
    aliases: tuple[str, ...] = ()
    truncated: bool = False  # exec: argv was longer than the decoder reads (flagged)
    env: tuple[str, ...] = ()  # exec: names of the environment variables set (no values)
    parent: str | None = None  # exec: the parent process's executable
    # sendmmsg: every distinct (family, ip, port) of the vector when there are several
    destinations: tuple[tuple[str, str, int], ...] = ()
    detail: str | None = None  # what else the syscall says: link kind, flags, namespaces
    target: int | None = None  # ptrace: the pid it acts on


@dataclass(frozen=True)
class Requirements:
    """What the engine needs the tracer to stop on, derived from the policy.

    `syscalls` are names; the tracer maps them to numbers on its architecture and stops only
    there (seccomp-bpf in launch mode). `process_only` means no syscall stop is needed at
    all: fork/exec/exit events suffice. `open_needs_read` is False when no rule cares about
    read-only opens, so the seccomp filter lets them pass without a stop.
    """

    syscalls: frozenset[str]
    process_only: bool = False
    open_needs_read: bool = True
    # Syscalls the seccomp filter refuses with EPERM without a stop (io_uring_setup when a
    # rule blocks: its operations would bypass every syscall stop); attach mode, which has
    # no filter, stops on them and the engine refuses them (Verdict.refuse).
    refused: frozenset[str] = frozenset()
    # Opens that can write are stopped again at their exit and judged by the returned fd.
    recheck_writes: bool = False
    # Sends (sendto/sendmsg/sendmmsg) stop only with MSG_FASTOPEN (a TCP connect) when no
    # rule watches UDP destinations.
    sends_need_udp: bool = True
    # Files and directories whose writes are watched: the tracer notes the inodes of the
    # files in them at start, so a write through a hard link made before it started (a
    # second, unwatched name) is still judged as a write of the watched file.
    protected: frozenset[str] = frozenset()
    # An exec's environment (the names of its variables) is read only when a rule matches on
    # it (processExecution `env`): ~40-50 µs per exec stop otherwise spent for nothing.
    exec_env: bool = True


@dataclass(frozen=True)
class RuntimeEvent:
    """One event to report, as every sink writes it (see `as_dict`)."""

    timestamp: float
    category: str  # file, process, network, software, syscall, anomaly
    rule: str
    severity: str  # low, medium, high, critical (the policy's words)
    action: str  # log, alert, block
    pid: int
    ppid: int
    process: str  # executable path
    syscall: str
    path: str | None = None
    args: tuple[str, ...] | None = None
    ip: str | None = None
    port: int | None = None
    package_manager: str | None = None
    container: str | None = None
    message: str = ""
    score: float | None = None  # anomaly score
    count: int = 1  # set by aggregation
    extra: dict[str, Any] = field(default_factory=dict)
    # What else tells two events of one rule, process and subject apart when aggregating:
    # a digest of the whole command line for exec events (two different command lines are
    # two events, whether or not the args are captured). Not reported itself.
    fingerprint: str | None = None

    def with_extra(self, more: dict[str, Any]) -> RuntimeEvent:
        """This event with `more` merged into `extra`. A shallow copy of the fields:
        `dataclasses.replace` runs `__init__` again and costs ~5 µs on every reported event
        (bench/sidecar.py's stop with an event), this ~1 µs."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        object.__setattr__(copy, "extra", {**self.extra, **more})
        return copy

    def subject(self) -> str:
        """What the event is about: the aggregation key beside rule and process."""
        if self.category == "network" and self.ip is not None:
            return f"{self.ip}:{self.port}"
        if self.category == "software" and self.package_manager:
            return self.package_manager
        return self.path or self.process

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "timestamp": self.timestamp,
            "category": self.category,
            "rule": self.rule,
            "severity": self.severity,
            "action": self.action,
            "pid": self.pid,
            "ppid": self.ppid,
            "process": self.process,
            "syscall": self.syscall,
        }
        optional = {
            "path": self.path,
            "args": list(self.args) if self.args is not None else None,
            "ip": self.ip,
            "port": self.port,
            "package_manager": self.package_manager,
            "container": self.container,
            "message": self.message or None,
            "score": self.score,
        }
        doc.update({k: v for k, v in optional.items() if v is not None})
        if self.count != 1:
            doc["count"] = self.count
        doc.update(self.extra)
        return doc


@dataclass(frozen=True)
class Verdict:
    """The engine's answer for one SyscallEvent."""

    events: tuple[RuntimeEvent, ...] = ()
    block: bool = False  # deny the syscall (-EPERM) and kill the offending process
    refuse: bool = False  # deny the syscall (-EPERM) and let the process go on


ALLOW = Verdict()
