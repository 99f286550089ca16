"""The tracer's quiet stops in C (`_stoploop.c`), and how a Tracer configures it.

Under FIM on write events a file-heavy workload (`tar -x`) makes thousands of seccomp stops
per second, nearly all of them an open, chmod, chown or unlink that no rule watches. The
Python tracer spends 10-12 us of interpreter on each one; `Loop.wait()` handles them in C
and returns to Python every stop it cannot decide alone (see the C file's header for the
exact cases), so the interpreter only runs for stops that may report something.

The C loop answers exactly as the Python tracer would, or not at all:

- it resolves paths by sidecar.resolve's fast routes (no-symlink openat2, the cwd or dirfd
  link, an O_PATH open and its /proc/self/fd link) and leaves every other route to Python;
- it asks no engine: `Engine.quiet_mode` says, per syscall and event, whether the engine
  would find the stop quiet whatever the path, never, or exactly when the path is outside
  `Engine.fim_scope()`; only those answers are compiled in.

`CONTAINERSCAN_SIDECAR_STOPLOOP=python` turns it off (the Python loop does everything), as
does an engine without `quiet_mode`, a mode that stops at every syscall, or a missing
extension (an install without a C compiler): the tracer then works as before, slower.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from securityhub.logs import fields

log = logging.getLogger(__name__)

ENV_SWITCH = "CONTAINERSCAN_SIDECAR_STOPLOOP"
# AUDIT_ARCH_* of <linux/audit.h>: PTRACE_GET_SYSCALL_INFO tells the tracee's syscall ABI.
# The C loop is written for any architecture with PTRACE_GET_SYSCALL_INFO (it compiles for
# aarch64), but it has only been run on x86_64: elsewhere the Python loop does every stop
# until a test on that architecture has passed (aarch64 would be 0xC00000B7).
AUDIT_ARCH = {"x86_64": 0xC000003E}
# The syscalls the C loop knows: name -> (argument layout, follows a final symlink, kind).
# As sidecar.decode's handlers read them.
LAYOUTS = {
    "open": ("OP_OPEN", True, "open"),
    "openat": ("OP_OPENAT", True, "open"),
    "creat": ("OP_CREAT", True, "open"),
    "unlink": ("OP_PATH", False, "unlink"),
    "rmdir": ("OP_PATH", False, "unlink"),
    "chmod": ("OP_PATH", True, "chmod"),
    "chown": ("OP_PATH", True, "chown"),
    "lchown": ("OP_PATH", False, "chown"),
    "unlinkat": ("OP_PATHAT", False, "unlink"),
    "fchmodat": ("OP_PATHAT", True, "chmod"),
    "fchownat": ("OP_FCHOWNAT", True, "chown"),
    "fchmod": ("OP_FD", True, "chmod"),
    "fchown": ("OP_FD", True, "chown"),
}
QuietMode = Callable[[str, str, bool], int]


def extension() -> Any | None:
    """The compiled module, or None where it was not built."""
    try:
        from sidecar.stoploop import _stoploop  # type: ignore[attr-defined]
    except ImportError as exc:
        log.info(
            "the compiled stop loop is not built: every stop is handled in Python "
            "(reinstall containerscan where a C compiler is present)",
            extra=fields(error=str(exc)),
        )
        return None
    return _stoploop


def table(
    numbers: dict[str, int], watched: frozenset[int], quiet_mode: QuietMode, ext: Any
) -> dict[int, tuple[int, int, int, int]]:
    """{syscall number: (layout, follow, mode for a read, mode for a write)} of the watched
    syscalls the C loop can decide some stops of. Pure: `numbers` is the architecture's."""
    out = {}
    for name, (layout, follow, kind) in LAYOUTS.items():
        nr = numbers.get(name)
        if nr is None or nr not in watched:
            continue
        read = quiet_mode(name, kind, False)
        write = quiet_mode(name, kind, True) if kind == "open" else read
        if read or write:
            out[nr] = (getattr(ext, layout), int(follow), read, write)
    return out


def build(
    *,
    engine: object,
    arch_name: str,
    numbers: dict[str, int],
    watched: frozenset[int],
    visible: frozenset[int],
    state: tuple[dict[int, Any], dict[int, Any], dict[int, Any], set[int], dict[int, Any]],
    recheck_writes: bool,
    check_inodes: bool,
    every: bool,
) -> Any | None:
    """A Loop over the tracer's own `state` (threads, procs, pending_exec, stepped,
    exit_checks: read at every stop, never copied), or None when it does not apply.
    `visible`: the syscall numbers whose entry Python must see (watched, and those that
    change a process's root); `every`: every syscall stops (attach mode without the filter),
    and the loop resumes the others too."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() == "python":
        return None
    quiet_mode = getattr(engine, "quiet_mode", None)
    scope = getattr(engine, "fim_scope", None)
    if quiet_mode is None or scope is None or arch_name not in AUDIT_ARCH:
        return None
    ext = extension()
    if ext is None:
        return None
    compiled = table(numbers, watched, quiet_mode, ext)
    if not compiled and not every:
        return None  # nothing it could decide: every stop it sees is Python's
    roots, prefixes = scope()
    loop = ext.Loop(
        *state,
        compiled,
        [os.fsencode(p) for p in prefixes],
        [os.fsencode(r) for r in roots],
        recheck_writes,
        check_inodes,
        AUDIT_ARCH[arch_name],
        every,
        sorted(visible),
    )
    log.debug("compiled stop loop", extra=fields(syscalls=len(compiled)))
    return loop
