"""Run one image's untrusted work in a child process that can be limited and killed.

A layer is hostile input. Parsing it in the sweep's own process means a runaway layer
(a header that asks for gigabytes, a stream that never ends, a parser bug that loops)
costs the whole sweep, and a Python thread cannot be stopped. So the built-in scanner
reads each image in a forked child:

- the child's address space is limited (`setrlimit(RLIMIT_AS)`, getrlimit(2)) to what it
  inherited plus `memory_limit`: an allocation beyond it fails with MemoryError inside the
  child, which reports it as that image's error;
- at the deadline the parent sends SIGKILL, which no code in the child can delay, and
  reaps it: the image fails with a timeout, the sweep goes on;
- the result comes back through a pipe, pickled, and the child's peak resident set
  (`wait4`'s `ru_maxrss`, in KiB on Linux: getrusage(2)) is measured for every scan.

`fork` keeps the start cheap (no interpreter start-up, the modules are already imported);
the child only runs the given function and leaves with `os._exit`, never returning into
the caller's stack (no atexit handlers, no flushing of the parent's buffers twice).
"""

from __future__ import annotations

import os
import pickle  # nosec B403 - only our own forked child's output is unpickled
import resource
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from securityhub.errors import ContainerscanError, ImageError, ScanError

T = TypeVar("T")

# Headroom above what the child inherits: generous for a real image (the wanted files and
# the secret scanner's buffers stay far below it), tight enough that a bomb fails fast.
DEFAULT_MEMORY_LIMIT = 1024 * 1024 * 1024
READ_CHUNK = 1024 * 1024
_ERRORS: dict[str, type[ContainerscanError]] = {"ImageError": ImageError, "ScanError": ScanError}


@dataclass(frozen=True)
class ChildOutcome(Generic[T]):
    value: T
    peak_rss: int  # bytes: the child's maximum resident set size
    seconds: float


def available() -> bool:
    """fork, rlimits and wait4: POSIX systems only."""
    return hasattr(os, "fork") and hasattr(os, "wait4")


def _fork_locks() -> list[Any]:
    """Module locks the child's code may take that other threads of a sweep also take.

    fork copies a lock in the state it has at that instant; one held by another thread
    would stay held in the child forever. logging re-creates its own locks after a fork;
    the log masker's lock (securityhub.logs, taken by `register_secret` when a registry
    token arrives) is held across the fork instead.
    """
    from securityhub import logs

    lock = getattr(logs, "_secrets_lock", None)
    return [lock] if lock is not None else []


def _address_space() -> int:
    """The current virtual size in bytes (/proc/self/statm, proc(5)), or 0 if unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _child(work: Callable[[], T], write_fd: int, memory_limit: int | None) -> None:
    payload: tuple[object, ...]
    try:
        if memory_limit is not None:
            limit = _address_space() + memory_limit
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            payload = ("ok", work())
        except ContainerscanError as exc:
            payload = ("error", type(exc).__name__, exc.message, exc.remediation)
        except MemoryError:
            payload = ("memory",)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            payload = ("crash", f"{type(exc).__name__}: {exc}")
        data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view):]
    finally:
        os._exit(0)


def run_isolated(work: Callable[[], T], *, what: str, deadline: float | None,
                 memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
                 report: Callable[[int, float], None] | None = None) -> ChildOutcome[T]:
    """`work()` in a forked child; its value, or its ContainerscanError raised here.

    `deadline` is a `time.monotonic()` value: past it the child is killed and a ScanError
    names `what`. The value must be picklable. `report(peak_rss, seconds)` is called
    whatever the outcome (the measurements of a failed scan matter most).
    """
    started = time.monotonic()
    read_fd, write_fd = os.pipe()
    held = _fork_locks()
    for lock in held:  # held across fork: the child never inherits one another thread holds
        lock.acquire()
    try:
        pid = os.fork()
    finally:
        for lock in held:  # both processes release their own copy
            lock.release()
    if pid == 0:  # the child
        os.close(read_fd)
        _child(work, write_fd, memory_limit)
    os.close(write_fd)
    chunks: list[bytes] = []
    killed = False
    try:
        while True:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
            ready, _, _ = select.select([read_fd], [], [], wait)
            if ready:
                chunk = os.read(read_fd, READ_CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
        _, status, usage = os.wait4(pid, 0)
    peak = usage.ru_maxrss * 1024
    seconds = time.monotonic() - started
    if report is not None:
        report(peak, seconds)
    if killed:
        raise ScanError(f"{what}: timed out after {seconds:.1f} s; the scan was killed",
                        "raise the scan timeout, or check the image for hostile layers")
    if not chunks:
        cause = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                 else f"exit status {os.waitstatus_to_exitcode(status)}")
        raise ScanError(f"{what}: the scan process ended without a result ({cause})",
                        "the image may be hostile; see the log for what it was reading")
    payload = pickle.loads(b"".join(chunks))  # noqa: S301 - our own child's output
    kind = payload[0]
    if kind == "ok":
        return ChildOutcome(payload[1], peak, seconds)
    if kind == "error":
        raise _ERRORS.get(payload[1], ScanError)(payload[2], payload[3])
    if kind == "memory":
        raise ImageError(f"{what}: reading the image needed more than "
                         f"{(memory_limit or 0) // (1024 * 1024)} MiB of memory",
                         "the image is hostile or far larger than images usually are")
    raise ScanError(f"{what}: the scan failed: {payload[1]}",
                    "this is a bug in containerscan; please report it with the log")
