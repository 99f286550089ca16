"""The ptrace event loop: launch mode (wrap the entrypoint) and attach mode.

One blocking `waitpid(-1, __WALL)` loop dispatches on typed stops, the way python-ptrace's
strace.py does, but on the low-level bindings only (its high-level PtraceDebugger polls every
tracee with sleeps once more than one is traced, ~600 µs per stop, and does not know seccomp
stops). The wait goes through libc directly so that a signal to the sidecar interrupts it
(EINTR) instead of being retried as os.waitpid does (PEP 475).

Launch mode (`containerscan sidecar run -- CMD`): the sidecar forks and seizes the child
(PTRACE_SEIZE, so the workload's own group-stops keep working through PTRACE_LISTEN), which
waits on a pipe until told to go, sets no_new_privs, installs a seccomp-bpf filter that returns
SECCOMP_RET_TRACE only for the policy's syscalls (open/openat only when the flags can write,
if no rule needs read opens), and execs the workload. The tracer sets TRACESYSGOOD, the
fork/vfork/clone/exec options, TRACESECCOMP and EXITKILL (a seccomp TRACE filter without a
tracer fails every watched syscall with ENOSYS, so no tracee may outlive the tracer) and lets
it run with PTRACE_CONT: unwatched syscalls cost nothing, each watched one costs one stop
(~30 µs on one vCPU). Signals sent to the sidecar are forwarded to the workload; the
workload's exit status (code, or 128 + signal) is the sidecar's. The sidecar is a child
subreaper, so orphaned descendants are reaped by it, not left as zombies. When the workload's
main process exits, remaining descendants are killed, as a container runtime would.

Attach mode (`containerscan sidecar attach`): PTRACE_SEIZE of every thread of running
processes in the shared PID namespace (ECS `pidMode: task`), excluding the sidecar and its
ancestors; new matching processes are picked up by a /proc scan every `poll_interval`
seconds, children of traced processes through fork events. When the policy needs only
process events (exec), the tracees run with PTRACE_CONT and stop only at fork/exec/exit (near
zero cost); otherwise every syscall stops (PTRACE_SYSCALL) and the number is filtered before
decoding: 1.6-2x on syscall-heavy workloads. SIGTERM or SIGINT detaches everything
(PTRACE_INTERRUPT, then PTRACE_DETACH per thread) and the application runs on. EXITKILL is
not set: if the sidecar is killed, the kernel detaches and the application runs on.

Attach mode with the filter (`configure_attach(seccomp_filter=True)`, `attach --seccomp`):
each process is seized with TRACESECCOMP and EXITKILL, and launch mode's filter is installed
from inside it through ptrace (sidecar.inject: prctl(PR_SET_NO_NEW_PRIVS), then
seccomp(SECCOMP_SET_MODE_FILTER, TSYNC) for all its threads), so it costs what launch mode
costs. Its children inherit the filter. Such a process is never detached (the filter stays:
without a tracer its watched syscalls would fail with ENOSYS): SIGTERM detaches the others
and keeps tracing it until it exits; if the sidecar dies, EXITKILL kills it. A process that
refuses the filter is traced with a stop per syscall, its EXITKILL dropped, and logged.

Measured here (bench/sidecar.py; 2 vCPU VM shared with other jobs, pinned to one CPU, so
wall-clock ratios swing 0.5-2x run to run; CPU-time ratios are steadier): one watched stop
costs the workload ~18 µs p50 when it makes an event (engine and pipeline included), ~15 µs
when it makes none (a read-only open outside the FIM paths: the engine's `open_is_quiet`
rejects it before a SyscallEvent is built); unwatched syscalls cost nothing. Of a quiet stop
the tracer's own CPU is ~5.5 µs user, ~6.5 µs system (bench/sidecar_stop.py): one waitpid,
one PTRACE_GETREGS, one pread of the path, one PTRACE_CONT, all through libc with prebuilt C
arguments. A chmod, chown or unlink the engine would not report is rejected the same way,
before its event is built (`path_is_quiet`), and a relative path costs one readlink of its
start directory and one no-symlink openat2 (issue 15: under the balanced policy a `tar -x`
went from 27-31 to 19-20 µs of tracer CPU per stop; strace's stops remain cheaper: see
bench/README.md, "Cheaper stops"). Python-startup workload (CPU ratio): minimal 1.04x,
balanced 1.02x, FIM on every open 1.14-1.16x (strace --seccomp-bpf on the same set:
1.11-1.14x; ours 1.00-1.05x strace's), attach with process events only 1.03x. File-heavy
`tar -x` of ~1,400 files: balanced 2.5-4x, every open 3-3.7x (strace 2-3.6x). Attach mode
with syscall stops costs every syscall a stop: 1.6-2x on Python start-up, 7-12x on tar
(shared/reference/runtime.md B4).

When to use which: wrap the entrypoint (launch mode; the sidecar image's self-contained
launcher is copied into a task volume, `entryPoint: [/containerscan/bin/containerscan-run,
--, app...]`, docker/README.md) whenever the task definition can be changed: it filters from
the first instruction and can block before a syscall runs at low cost. Use attach mode for
tasks whose entrypoint cannot change: with a process-only policy it costs about nothing;
syscall-level rules cost every syscall a stop, unless the filter is injected (--seccomp),
which binds the application's lifetime to the sidecar's as launch mode does.

Blocking: at the stop the syscall is skipped (x86_64 orig_rax = -1; aarch64 NT_ARM_SYSTEM_CALL
= -1) with an -EPERM result, and the offending process (its thread group, nothing else) is
killed with SIGKILL. In attach mode without syscall stops, a blocked exec is killed at
PTRACE_EVENT_EXEC, before the new program runs its first instruction. Exec events are
reported once the exec succeeded (a failed execve ran nothing), PATH probes of execvp that
name no existing file are not evaluated at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import functools
import os
import re
import signal
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from securityhub.errors import TracerError
from securityhub.logs import fields, get_logger
from sidecar import inject, seccomp, stoploop
from sidecar import ptrace as pt
from sidecar.decode import (
    O_CREAT,
    O_EXCL,
    Decoder,
    Process,
    can_write,
    listening,
    program_exists,
    signed32,
)
from sidecar.events import (
    ALLOW,
    KIND_CHMOD,
    KIND_CHOWN,
    KIND_UNLINK,
    Requirements,
    RuntimeEvent,
    SyscallEvent,
    Verdict,
)
from sidecar.procinfo import ProcInfo
from sidecar.resolve import fd_target
from sidecar.syscalls import Arch, native_arch

log = get_logger("sidecar.tracer")

# Signals the sidecar forwards to the workload in launch mode (SIGKILL/SIGSTOP cannot be
# caught; SIGCHLD is the tracer's own business).
FORWARDED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
)
# Signals that end attach mode (detach everything, exit 0).
DETACH_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
EXEC_SYSCALLS = ("execve", "execveat")
# Syscalls that can give a process another root directory (chroot(2); pivot_root(2) and
# setns(2) into a mount namespace move it too). Paths are resolved against the sidecar's
# own root only while the process shares it (`Process.same_root`, a fast path); a process
# that may have left it is resolved through /proc/PID/root from then on, which is right
# whatever its root is. They stop whatever the policy, and are rare.
ROOT_SYSCALLS = ("chroot", "pivot_root", "setns")
STOP_SIGNALS = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
# How often attach mode scans /proc for new matching processes (Datadog's ptracer: 500 ms).
DEFAULT_POLL_INTERVAL = 1.0
# Threads being created while we attach: retry /proc/PID/task this many times (pdig: 10).
ATTACH_RETRIES = 10
# How long detaching may take before the sidecar exits anyway (the kernel then detaches).
DETACH_TIMEOUT = 5.0
# Exit status when the workload cannot be executed (as a shell: 127 not found, 126 other).
EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXEC = 126
ENOSYS_RESULT = -errno.ENOSYS & ((1 << 64) - 1)
EPERM_RESULT = -errno.EPERM & ((1 << 64) - 1)
SKIP_SYSCALL = (1 << 64) - 1  # -1: the kernel skips the syscall
_SIGN_BIT = 1 << 63
_WRAP = 1 << 64
# Whole wait statuses of the two commonest stops (<sys/wait.h>: 0x7f = stopped, the stop
# signal in bits 8..15, the ptrace event in bits 16..23), compared in one go on the hot path.
_STOPPED = 0x7F
# Event kinds the engine may find quiet before the SyscallEvent is built (path_is_quiet).
QUIET_PATH_KINDS = frozenset({KIND_CHMOD, KIND_CHOWN, KIND_UNLINK})
SECCOMP_STOP_STATUS = (pt.PTRACE_EVENT_SECCOMP << 16) | (signal.SIGTRAP << 8) | _STOPPED
SYSCALL_STOP_STATUS = (pt.SYSCALL_TRAP << 8) | _STOPPED

PTRACE_REMEDY = (
    "ptrace needs the SYS_PTRACE capability (ECS: linuxParameters.capabilities.add = "
    '["SYS_PTRACE"]), a shared PID namespace to attach to other containers (pidMode: task), '
    "and kernel.yama.ptrace_scope <= 1 (1 allows descendants only: use launch mode)"
)

Evaluate = Callable[[SyscallEvent], Verdict]
Submit = Callable[[RuntimeEvent], None]
# (syscall name, resolved path, the flags can write) -> True when evaluating the open would
# report nothing and change nothing: Engine.open_is_quiet.
QuietOpen = Callable[[str, "str | None", bool], bool]
# (syscall name, event kind, resolved path) -> the same for a chmod, chown or unlink:
# Engine.path_is_quiet.
QuietPath = Callable[[str, str, "str | None"], bool]
# An open for writing the engine found quiet at entry, to judge again at its exit: the
# process, the arguments and Decoder.open_call's answer. Its SyscallEvent is built only if
# the fd at exit names another file (rare), not at every such stop.
QuietWrite = tuple[Process, tuple[int, ...], tuple[str, "str | None", int, int]]


@functools.cache
def _libc() -> tuple[Any, Any]:
    """libc's waitpid (a blocking wait that a signal interrupts) and prctl, typed."""
    libc = ctypes.CDLL(None, use_errno=True)
    # No argtypes: the loop passes C-typed values already (an int, a byref, an int), and
    # ctypes' argtypes conversion would cost ~0.4 µs per stop.
    waitpid = libc["waitpid"]
    waitpid.restype = ctypes.c_int
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    prctl.restype = ctypes.c_int
    return waitpid, prctl


PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


@dataclass
class TracerStats:
    """Counters the heartbeat reports; plain ints, read from another thread."""

    stops: int = 0  # every ptrace stop handled
    syscall_stops: int = 0  # seccomp or syscall-entry stops
    decoded: int = 0  # events decoded and evaluated
    events: int = 0  # runtime events submitted
    blocked: int = 0
    refused: int = 0  # syscalls denied with EPERM without killing (io_uring_setup)
    processes: int = 0  # processes seen in total
    threads: int = 0  # threads traced now
    engine_errors: int = 0
    loop_errors: int = 0


class Tracer:
    """The event loop shared by both modes; use `launch()` or `attach()` first, then `run()`."""

    def __init__(
        self,
        requirements: Requirements,
        evaluate: Evaluate,
        submit: Submit,
        *,
        arch: Arch | None = None,
        container_of: Callable[[int], str | None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.req = requirements
        try:
            native = native_arch()
        except ValueError as exc:
            raise TracerError(str(exc)) from None
        self.arch = arch or native
        if self.arch.name != native.name:
            raise TracerError(f"cannot trace {self.arch.name} processes on this machine")
        self._evaluate = evaluate
        self._submit = submit
        # The engine's fast path for opens it would not report (FIM on every open makes most
        # stops such opens): found on the engine `evaluate` is bound to, if it has one.
        engine = getattr(evaluate, "__self__", None)
        self._engine = engine
        self._quiet_open: QuietOpen | None = getattr(engine, "open_is_quiet", None)
        self._quiet_path: QuietPath | None = getattr(engine, "path_is_quiet", None)
        self._container_of = container_of
        self._procinfo = ProcInfo()  # launch time and user of reported events, cached
        self.decoder = Decoder(self.arch, clock, exec_env=requirements.exec_env, exec_probes=False)
        self.stats = TracerStats()
        # Refused syscalls stop too where no filter refuses them (attach mode): the engine
        # refuses them at the stop.
        names = set(requirements.syscalls) | set(requirements.refused)
        self.watched: frozenset[int] = frozenset(
            self.arch.number(n) for n in names if self.arch.has(n)
        )
        self._exec_watched = any(self.arch.has(n) and n in names for n in EXEC_SYSCALLS)
        self._root_calls = frozenset(self.arch.number(n) for n in ROOT_SYSCALLS if self.arch.has(n))
        # Where execs are evaluated: at the execve stop (launch mode, and attach mode with
        # syscall stops), or, with no syscall stops, at PTRACE_EVENT_EXEC (set by the mode).
        self._exec_at_stop = self._exec_watched
        self._exec_at_event = False
        self._threads: dict[int, int] = {}  # tid -> tgid
        self._procs: dict[int, Process] = {}  # tgid -> Process
        self._awaiting_first_stop: set[int] = set()  # new tids whose initial stop is due
        self._started_early: set[int] = set()  # initial stop seen before the fork event
        # Started early and already exited: their parent's queued fork event must not
        # register them again.
        self._exited_early: set[int] = set()
        self._in_syscall: set[int] = set()  # aarch64 entry/exit toggle (attach mode)
        self._pending_exec: dict[int, tuple[RuntimeEvent, ...]] = {}  # tid -> events
        # tid -> an open for writing to judge again by its fd at the syscall's exit
        self._exit_checks: dict[int, SyscallEvent | QuietWrite] = {}
        # (dev, inode) -> path of the files under the protected paths, noted at start
        self._protected_inodes = protected_inodes(requirements.protected)
        self.root_pid: int | None = None
        self.exit_status = 0
        self.mode = ""
        self._stop_every_syscall = False
        self._pending_signals: list[int] = []
        self._detach_requested = False
        self._detaching = False
        self._poll_due = False
        self._poll_interval = DEFAULT_POLL_INTERVAL
        self._matcher: Callable[[int], bool] | None = None
        self._excluded: set[int] = set()
        self._refused: set[int] = set()
        # Attach mode with --seccomp: the filter injected into each process (sidecar.inject).
        self._inject_program: list[seccomp.Insn] | None = None
        self._filtered: set[int] = set()  # tgids running under the filter (never detached)
        self._stepped_procs: set[int] = set()  # tgids that refused it: a stop per syscall
        self._stepped: set[int] = set()  # their tids, resumed with PTRACE_SYSCALL
        self._drop_exitkill: set[int] = set()  # their tids still seized with EXITKILL
        if self.arch.name == "x86_64":
            self._regs: pt.X86_64Regs | pt.Aarch64Regs = pt.X86_64Regs()
            self._read_call = self._read_call_x86_64
            self._getregs = pt.StopRequests(self._regs).getregs
        else:
            self._regs = pt.Aarch64Regs()
            self._read_call = self._read_call_aarch64
        self._iov = pt.IoVec()
        self._resume_request = pt.StopRequests(self._regs).resume
        self._info = ctypes.create_string_buffer(pt.SYSCALL_INFO_SIZE)
        self._status = ctypes.c_int(0)
        self._go = -1  # launch mode: the pipe that lets the child go on to exec
        # The quiet stops in C (sidecar.stoploop), built at the first run(); None: Python.
        self._stoploop: Any = None
        self._stoploop_built = False

    def traced_pids(self) -> tuple[int, ...]:
        """The processes (thread group ids) traced now; safe to call from another thread."""
        return tuple(self._procs)

    # --- launch mode -------------------------------------------------------------------

    def launch(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Fork `argv` under the tracer; returns its pid, stopped before exec: call `start()`."""
        if not argv:
            raise TracerError("no command to run", "give the workload after `--`")
        self.mode = "launch"
        keep = None
        fprog = None
        # Even a process-only policy gets the filter in launch mode: one stop per execve
        # (nothing else stops) lets a block rule deny the exec before it happens.
        if self.req.syscalls or self.req.refused:
            fprog, keep = seccomp.pack_program(self._filter_program())
        _libc()[1](PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        ready, go = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: only async-signal-safe-ish work, then exec
            os.close(go)
            _child_exec(argv, env, fprog, ready)
        os.close(ready)
        del keep  # the child has its copy; the parent does not need the program
        options = pt.PROCESS_FOLLOW_OPTIONS | pt.PTRACE_O_EXITKILL
        if fprog is not None:
            options |= pt.PTRACE_O_TRACESECCOMP
        try:
            # SEIZE (not TRACEME): group-stops of the workload then work as without a
            # tracer (PTRACE_LISTEN). The child waits on the pipe meanwhile.
            pt.seize(pid, options)
        except pt.PtraceError as exc:
            os.close(go)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TracerError(
                f"cannot trace the workload: {os.strerror(exc.errno or 0)}", PTRACE_REMEDY
            ) from exc
        self._go = go
        self.root_pid = pid
        self._add_thread(pid, pid, os.getpid())
        log.info(
            "workload started under the tracer",
            extra=fields(
                pid=pid,
                # The program only: an entrypoint's arguments may carry credentials.
                program=argv[0] if argv else None,
                arguments=max(len(argv) - 1, 0),
                seccomp=fprog is not None,
                watched=sorted(self.req.syscalls),
                open_needs_read=self.req.open_needs_read,
            ),
        )
        return pid

    def _filter_program(self) -> list[seccomp.Insn]:
        """The policy's filter: watched syscalls stop (opens only when they can write, if no
        rule needs reads; sends only as TCP Fast Open, if no rule needs UDP), refused ones
        (io_uring_setup under a blocking policy) fail with EPERM."""
        conditions = seccomp.open_conditions(
            self.req.syscalls, self.req.open_needs_read
        ) + seccomp.send_conditions(self.req.syscalls, self.req.sends_need_udp)
        syscalls = (*self.req.syscalls, *ROOT_SYSCALLS)
        return seccomp.build_program(self.arch, syscalls, conditions, self.req.refused)

    def start(self) -> None:
        """Let the launched workload run (it waits in its initial stop until then, so the
        sidecar can finish starting its own threads without competing with it)."""
        if self.root_pid is None or self._go < 0:
            raise TracerError("nothing launched")
        os.write(self._go, b"g")
        os.close(self._go)
        self._go = -1

    # --- attach mode -------------------------------------------------------------------

    def attach(
        self,
        pids: Iterable[int] = (),
        *,
        match: str | None = None,
        everything: bool = False,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> list[int]:
        """Seize the given processes (and, with `match`/`everything`, the matching ones now
        and later). Returns the pids traced now."""
        if self.mode != "attach":
            self.configure_attach(match, everything, poll_interval)
        attached = []
        for pid in pids:
            if pid in self._excluded:
                raise TracerError(f"refusing to trace pid {pid}: it is the sidecar or its parent")
            self._attach_process(pid, explicit=True)
            attached.append(pid)
        if self._matcher is not None:
            attached += self._scan_proc()
        log.info(
            "attached",
            extra=fields(
                pids=attached[:50],
                count=len(attached),
                syscall_stops=self._stop_every_syscall,
                seccomp=self._inject_program is not None,
                filtered=len(self._filtered),
                watched=sorted(self.req.syscalls),
            ),
        )
        return attached

    def configure_attach(
        self,
        match: str | None = None,
        everything: bool = False,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        seccomp_filter: bool = False,
    ) -> None:
        """Attach mode's settings, before signal handlers are installed and `attach()`.

        With `seccomp_filter`, the launch-mode filter is injected into every attached process
        (sidecar.inject) so only watched syscalls stop; such a process then dies with the
        sidecar (EXITKILL) and is never detached. A process that refuses it is traced with a
        stop per syscall, as without the option, and stays detachable.
        """
        self.mode = "attach"
        self._stop_every_syscall = not self.req.process_only
        if seccomp_filter and self._stop_every_syscall and self.arch.name in inject.ABIS:
            self._inject_program = self._filter_program()
            self._stop_every_syscall = False
        elif seccomp_filter:
            log.info(
                "no seccomp filter injected: a process-only policy stops only at fork and exec"
                if self.arch.name in inject.ABIS
                else f"no seccomp filter injected: not implemented for {self.arch.name}",
                extra=fields(arch=self.arch.name),
            )
        self._exec_at_stop = self._exec_watched and (
            self._stop_every_syscall or self._inject_program is not None
        )
        self._exec_at_event = not self._exec_at_stop and (
            self.req.process_only or self._exec_watched
        )
        self._poll_interval = poll_interval
        self._excluded = _self_and_ancestors()
        pattern = re.compile(match) if match else None
        if pattern is not None or everything:

            def matcher(pid: int) -> bool:
                cmdline = _cmdline(pid)
                if not cmdline:
                    return False  # kernel thread or gone
                return everything or bool(pattern and pattern.search(cmdline))

            self._matcher = matcher

    def _attach_process(self, pid: int, explicit: bool) -> bool:
        options = pt.PROCESS_FOLLOW_OPTIONS
        if self._inject_program is not None:
            # Before the filter exists: without TRACESECCOMP a watched syscall fails with
            # ENOSYS, and without EXITKILL it would after the sidecar's death.
            options |= pt.PTRACE_O_TRACESECCOMP | pt.PTRACE_O_EXITKILL
        seized: set[int] = set()
        ppid = _ppid(pid)
        for _ in range(ATTACH_RETRIES):
            try:
                tids = {int(t) for t in os.listdir(f"/proc/{pid}/task")} - seized
            except FileNotFoundError:
                if explicit and not seized:
                    raise TracerError(f"no process with pid {pid}") from None
                break
            if not tids:
                break
            for tid in sorted(tids):
                try:
                    pt.seize(tid, options)
                except pt.PtraceError as exc:
                    if exc.errno == errno.ESRCH:
                        continue  # the thread ended meanwhile
                    if exc.errno == errno.EPERM and _tracer_pid(tid) == os.getpid():
                        continue  # cloned by a seized thread: traced already, event queued
                    if exc.errno == errno.EPERM and not explicit:
                        self._refused.add(pid)
                        log.warning("cannot trace a process", extra=fields(pid=pid, error=str(exc)))
                        return False
                    raise TracerError(
                        f"cannot trace pid {pid} (thread {tid}): {os.strerror(exc.errno or 0)}",
                        PTRACE_REMEDY,
                    ) from exc
                seized.add(tid)
                self._add_thread(tid, pid, ppid)
                if self._stop_every_syscall:
                    # A seized thread runs on; interrupt it to switch it to PTRACE_SYSCALL.
                    with contextlib.suppress(pt.PtraceError):
                        pt.interrupt(tid)
        if seized and self._inject_program is not None:
            self._filter_process(pid, seized)
        return bool(seized)

    def _filter_process(self, pid: int, tids: set[int]) -> None:
        """Inject the filter into a seized process; on refusal trace it the old way."""
        assert self._inject_program is not None
        target = inject.live_thread(pid, tids)
        reason = inject.refusal(pid)
        stopped = False
        if reason is None:
            try:
                inject.install_filter(target, self._inject_program)
            except inject.ThreadGone as exc:
                self._on_exit(target, exc.status)
                tids = tids - {target}
                reason = str(exc)
            except inject.InjectionRefused as exc:
                reason = exc.message
                stopped = exc.stopped
            else:
                self._filtered.add(pid)
                self._resume(target, 0)
                log.info("seccomp filter installed", extra=fields(pid=pid, threads=len(tids)))
                return
        log.warning(
            "seccomp filter refused; traced with a stop per syscall",
            extra=fields(pid=pid, reason=reason),
        )
        self._stepped_procs.add(pid)
        for tid in tids:
            self._stepped.add(tid)
            if tid == target and stopped:
                with contextlib.suppress(pt.PtraceError):
                    pt.setoptions(tid, pt.PROCESS_FOLLOW_OPTIONS)  # detachable again
                self._resume(tid, 0)
            else:
                # Its PTRACE_EVENT_STOP drops EXITKILL and switches it to PTRACE_SYSCALL.
                self._drop_exitkill.add(tid)
                with contextlib.suppress(pt.PtraceError):
                    pt.interrupt(tid)

    def _scan_proc(self) -> list[int]:
        """Attach to matching processes not traced yet."""
        if self._matcher is None:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid in self._procs or pid in self._excluded or pid in self._refused:
                continue
            if _tracer_pid(pid) not in (0, None):
                continue  # traced already (by us: a child whose fork event is on its way)
            if self._matcher(pid) and self._attach_process(pid, explicit=False):
                found.append(pid)
        return found

    # --- the loop ----------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """Forward (launch) or detach on (attach) signals; call from the main thread."""
        if self.mode == "launch":
            for sig in FORWARDED_SIGNALS:
                signal.signal(sig, self._on_signal)
        else:
            for sig in DETACH_SIGNALS:
                signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGALRM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, self._poll_interval, self._poll_interval)

    def hold_signals(self) -> None:
        """The loop is over: from now on the signals it handled are ignored, so that a
        SIGTERM arriving while the sidecar flushes and exits (ECS stops the task as the
        workload ends) neither cuts the flush short nor replaces the workload's exit status.
        They are never restored: the process is on its way out."""
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        for sig in (*FORWARDED_SIGNALS, signal.SIGALRM):
            signal.signal(sig, signal.SIG_IGN)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.mode == "launch":
            # Forward at once: the handler runs in the main thread between bytecodes.
            if self.root_pid is not None and self.root_pid in self._threads:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.root_pid, signum)
        else:
            self._detach_requested = True
            self._wake_loop()

    def _on_alarm(self, _signum: int, _frame: object) -> None:
        self._poll_due = True
        self._wake_loop()

    def _wake_loop(self) -> None:
        """A signal handler changed what run() must look at: the C loop returns to it."""
        if self._stoploop is not None:
            self._stoploop.wake()

    def request_detach(self) -> None:
        self._detach_requested = True
        self._wake_loop()

    def run(self) -> int:
        """Trace until the workload exits (launch) or until detached (attach); returns the
        exit status for the sidecar."""
        status = self._status
        status_ref = ctypes.byref(status)
        waitpid = _libc()[0]
        get_errno = ctypes.get_errno
        stats = self.stats
        dispatch = self._dispatch
        loop = self._build_stoploop()
        deadline: float | None = None
        while self._threads:
            if self._detach_requested and not self._detaching:
                self._start_detach()
                if not self._filtered:
                    deadline = time.monotonic() + DETACH_TIMEOUT
            if deadline is not None and time.monotonic() > deadline:
                log.warning("detach timed out", extra=fields(left=sorted(self._threads)[:20]))
                break
            if self._poll_due:
                self._poll_due = False
                if self._matcher is not None and not self._detaching:
                    self._scan_proc()
            if loop is not None and not self._detaching:
                # Quiet stops are handled in C; the others come back with what C noted.
                tid, value, note = loop.wait()
                self._merge_loop_counts(loop)
                if tid == 0:
                    continue  # a budget of quiet stops, or a wake(): look at the flags
                err = value
                if tid > 0 and note is not None:
                    self._take_note(tid, note)
            else:
                if loop is not None:  # detaching: Python takes over the exit checks
                    for noted_tid, note in loop.take_pending():
                        self._take_note(noted_tid, note)
                    self._merge_loop_counts(loop)
                    loop = None
                tid = waitpid(-1, status_ref, pt.WALL)
                value = status.value
                err = get_errno() if tid == -1 else 0
            if tid == -1:
                if err == errno.EINTR:
                    continue
                if err == errno.ECHILD:
                    break
                raise OSError(err, os.strerror(err))
            stats.stops += 1
            try:
                dispatch(tid, value)
            except (pt.PtraceError, OSError, KeyError, ValueError) as exc:
                # The loop must survive one bad stop: in launch mode its death kills the
                # workload (EXITKILL). Resume the thread if it can be, and go on.
                self.stats.loop_errors += 1
                log.error("tracer error on a stop", extra=fields(tid=tid, error=repr(exc)))
                with contextlib.suppress(pt.PtraceError):
                    self._resume(tid, 0)
        self._close_all()
        return self.exit_status

    def _build_stoploop(self) -> Any:
        """The C loop for this tracer (sidecar.stoploop), once; None where it does not apply
        (no engine fast path, not built, switched off)."""
        if not self._stoploop_built:
            self._stoploop_built = True
            self._stoploop = stoploop.build(
                engine=self._engine,
                arch_name=self.arch.name,
                numbers=dict(self.arch.numbers),
                watched=self.watched,
                visible=self.watched | self._root_calls,
                state=(
                    self._threads,
                    self._procs,
                    self._pending_exec,
                    self._stepped,
                    self._exit_checks,
                ),
                recheck_writes=self.req.recheck_writes,
                check_inodes=bool(self._protected_inodes),
                every=self._stop_every_syscall,
            )
        return self._stoploop

    def _merge_loop_counts(self, loop: Any) -> None:
        stops, syscall_stops, quiet, _exit_checks = loop.take_counts()
        if stops:
            stats = self.stats
            stats.stops += stops
            stats.syscall_stops += syscall_stops
            stats.decoded += quiet  # as _handle_call counts a quiet stop

    def _take_note(self, tid: int, note: tuple[Any, ...]) -> None:
        """An open for writing the C loop let through at entry: its exit check is Python's
        now (the stop that comes with it may be that exit)."""
        nr, path, flags, mode, args = note
        proc = self._procs.get(self._threads.get(tid, tid))
        if proc is not None:
            self._exit_checks[tid] = (proc, args, (self.arch.name_of(nr), path, flags, mode))

    def run_attach_forever(self) -> int:
        """Attach mode with `match`/`everything`: keep watching while nothing is traced."""
        while True:
            self.run()
            if self._detach_requested or self._matcher is None:
                return 0
            time.sleep(self._poll_interval)  # nothing traced now: wait for a match
            if self._detach_requested:
                return 0
            self._scan_proc()

    # --- dispatch ----------------------------------------------------------------------

    def _dispatch(self, tid: int, status: int) -> None:
        # The hot path first: a watched syscall of a known thread (what the slow path below
        # would also do for these exact statuses).
        if status == SECCOMP_STOP_STATUS and not self._detaching and tid in self._threads:
            self._on_seccomp_stop(tid)
            return
        if status == SYSCALL_STOP_STATUS and not self._detaching and tid in self._threads:
            self._on_syscall_stop(tid)
            return
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self._on_exit(tid, status)
            return
        if not os.WIFSTOPPED(status):
            return
        sig = os.WSTOPSIG(status)
        event = status >> 16
        unknown = tid not in self._threads
        if unknown:
            self._adopt(tid)
        if tid in self._drop_exitkill:
            self._drop_exitkill.discard(tid)  # a process that refused the injected filter
            with contextlib.suppress(pt.PtraceError):
                pt.setoptions(tid, pt.PROCESS_FOLLOW_OPTIONS)
        detach = self._detaching and self._threads.get(tid) not in self._filtered
        if unknown and ((event == 0 and sig == signal.SIGSTOP) or event == pt.PTRACE_EVENT_STOP):
            # A new child's initial stop, before its parent's fork event.
            self._started_early.add(tid)
            if detach:
                self._detach_stopped(tid, 0)
            else:
                self._resume(tid, 0)
            return
        if detach:
            self._detach_stopped(tid, sig if event == 0 and sig != pt.SYSCALL_TRAP else 0)
            return
        if sig == pt.SYSCALL_TRAP:
            self._on_syscall_stop(tid)
        elif event == pt.PTRACE_EVENT_SECCOMP:
            self._on_seccomp_stop(tid)
        elif event in (pt.PTRACE_EVENT_FORK, pt.PTRACE_EVENT_VFORK, pt.PTRACE_EVENT_CLONE):
            self._on_new_child(tid, event)
        elif event == pt.PTRACE_EVENT_EXEC:
            self._on_exec(tid)
        elif event == pt.PTRACE_EVENT_STOP:
            self._on_event_stop(tid, sig)
        elif event != 0:
            self._resume(tid, 0)  # vfork-done, exit: nothing to do
        else:
            self._on_signal_stop(tid, sig)

    def _on_signal_stop(self, tid: int, sig: int) -> None:
        if sig == signal.SIGSTOP and tid in self._awaiting_first_stop:
            self._awaiting_first_stop.discard(tid)
            self._resume(tid, 0)
            return
        self._resume(tid, sig)  # signal-delivery stop: deliver the signal

    def _on_event_stop(self, tid: int, sig: int) -> None:
        if tid in self._awaiting_first_stop:
            self._awaiting_first_stop.discard(tid)
            self._resume(tid, 0)
        elif sig in STOP_SIGNALS:
            with contextlib.suppress(pt.PtraceError):
                pt.listen(tid)  # a real group-stop: stay stopped, keep reporting
        else:
            self._resume(tid, 0)  # our PTRACE_INTERRUPT after attach

    def _on_new_child(self, tid: int, event: int) -> None:
        try:
            child = pt.geteventmsg(tid)
        except pt.PtraceError:
            return
        if child in self._exited_early:
            self._exited_early.discard(child)
            self._resume(tid, 0)
            return
        parent_tgid = self._threads.get(tid, tid)
        if child not in self._threads:
            # A fork or vfork event is a new process; a clone event may be a thread.
            if event == pt.PTRACE_EVENT_CLONE and os.path.exists(
                f"/proc/{parent_tgid}/task/{child}"
            ):
                self._add_thread(child, parent_tgid, 0)
            else:
                self._add_thread(child, child, parent_tgid, self._procs.get(parent_tgid))
            if child in self._started_early:
                self._started_early.discard(child)
            else:
                self._awaiting_first_stop.add(child)
        self._resume(tid, 0)

    def _on_exec(self, tid: int) -> None:
        tgid = self._threads.get(tid, tid)
        try:
            former = pt.geteventmsg(tid)
        except pt.PtraceError:
            former = tid
        if former != tid:
            # A non-leader thread exec'd: it now has the leader's tid; its old tid is gone.
            self._threads.pop(former, None)
            self._in_syscall.discard(former)
        confirmed = self._pending_exec.pop(former, None)
        if confirmed:
            self._submit_all(confirmed)
        proc = self._procs.get(tgid)
        if proc is not None:
            proc.exec_happened()
            # Judged at its entry stop (confirmed is a tuple, maybe empty), or now: an exec
            # whose entry was not judged (its program looked missing there, an execvp probe,
            # and appeared before the kernel looked: a race a workload can run on purpose)
            # ran all the same.
            if self._exec_at_event or (self._exec_at_stop and confirmed is None):
                verdict = self._report(self.decoder.exec_event(proc, tid))
                if verdict.block:
                    # The new program has not run an instruction yet: killing it now blocks.
                    self.stats.blocked += 1
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(tgid, signal.SIGKILL)
        self._resume(tid, 0)

    def _on_seccomp_stop(self, tid: int) -> None:
        self.stats.syscall_stops += 1
        if self._pending_exec:
            self._pending_exec.pop(tid, None)  # its last exec failed
        nr, args = self._read_call(tid)
        if nr in self._root_calls:
            self._root_may_change(tid)
        if nr in self.watched:
            if self._handle_call(tid, nr, args):
                return
        self._resume(tid, 0)

    def _root_may_change(self, tid: int) -> None:
        """chroot/pivot_root/setns: resolve the process's paths through /proc/PID/root from
        now on (whether or not the call succeeds; that way is never wrong, only slower)."""
        proc = self._procs.get(self._threads.get(tid, tid))
        if proc is not None:
            proc.same_root = False

    def _on_syscall_stop(self, tid: int) -> None:
        if self._exit_checks:
            pending = self._exit_checks.pop(tid, None)
            if pending is not None:
                # The exit stop of an open we asked to see again (the next syscall stop of
                # a thread resumed with PTRACE_SYSCALL after an entry or seccomp stop).
                self._read_call(tid)
                self._in_syscall.discard(tid)
                self._on_exit_check(tid, pending)
                self._resume(tid, 0)
                return
        nr, args = self._read_call(tid)
        if isinstance(self._regs, pt.X86_64Regs):
            # The kernel sets rax to -ENOSYS before the syscall-entry stop.
            entering = self._regs.rax == ENOSYS_RESULT
        else:
            try:
                op = pt.syscall_info_op(tid, self._info)
            except pt.PtraceError:
                op = pt.PTRACE_SYSCALL_INFO_NONE
            if op == pt.PTRACE_SYSCALL_INFO_NONE:  # kernel < 5.3: toggle per thread
                entering = tid not in self._in_syscall
            else:
                entering = op == pt.PTRACE_SYSCALL_INFO_ENTRY
            if entering:
                self._in_syscall.add(tid)
            else:
                self._in_syscall.discard(tid)
        if entering and self._pending_exec:
            self._pending_exec.pop(tid, None)  # its last exec failed
        if entering and nr in self._root_calls:
            self._root_may_change(tid)
        if entering and nr in self.watched:
            self.stats.syscall_stops += 1
            if self._handle_call(tid, nr, args):
                return
        self._resume(tid, 0)

    def _handle_call(self, tid: int, nr: int, args: tuple[int, ...]) -> bool:
        """Decode, evaluate, report; True when the syscall was denied (tracee resumed)."""
        tgid = self._threads.get(tid, tid)
        proc = self._procs.get(tgid)
        if proc is None:
            return False
        decoder = self.decoder
        event: SyscallEvent | None
        try:
            call = decoder.open_call(proc, tid, nr, args) if self._quiet_open is not None else None
            if call is None:
                found = decoder.call(proc, tid, nr, args)
                if found is None:
                    return False
                if self._path_is_quiet(*found):
                    self.stats.decoded += 1  # as for a quiet open
                    return False
                event = decoder.event(proc, tid, args, *found)
            elif self._open_is_quiet(*call):
                self.stats.decoded += 1  # decoded and evaluated, by the engine's fast path
                if self.req.recheck_writes and can_write(call[2]):
                    self._exit_checks[tid] = (proc, args, call)
                return False
            else:
                event = decoder.open_event(proc, tid, args, *call)
        except OSError as exc:
            log.debug("cannot decode", extra=fields(tid=tid, nr=nr, error=str(exc)))
            return False
        if event is None:
            return False
        # The decoder (exec_probes=False) already drops most probes before reading argv;
        # this is a second look at the resolved path.
        if (
            event.kind == "exec"
            and event.path
            and not program_exists(proc.pid, tid, event.path, proc.same_root)
        ):
            return False  # a PATH probe of execvp: it will fail with ENOENT, nothing ran
        is_exec = event.kind == "exec"
        verdict = self._report(event, defer=is_exec)
        if verdict.block or verdict.refuse:
            if is_exec:
                self._submit_all(verdict.events)  # deferred above; report the block now
            self._deny(tid, tgid, kill=verdict.block)
            return True
        if event.kind == "listen" and event.port is None:
            # A socket shows its port in /proc/PID/net/tcp only once it listens: look again
            # when listen(2) returns.
            self._recheck_at_exit(tid, event)
        elif self.req.recheck_writes and event.kind == "open" and event.flags is not None:
            if can_write(event.flags):
                self._recheck_at_exit(tid, event)
        if is_exec:
            # Reported when PTRACE_EVENT_EXEC confirms the exec succeeded (a failed exec,
            # ENOEXEC or EACCES, ran nothing); dropped at the thread's next stop otherwise.
            # Kept when empty too: the event then knows this exec was judged at its entry.
            self._pending_exec[tid] = verdict.events
        return False

    def _open_is_quiet(self, name: str, path: str | None, flags: int, _mode: int) -> bool:
        """The engine's fast path; False (evaluate the full event) when it fails."""
        assert self._quiet_open is not None
        try:
            return self._quiet_open(name, path, can_write(flags))
        except Exception:  # noqa: BLE001 - evaluate reports the rule bug and allows
            return False

    def _path_is_quiet(self, name: str, fields: dict[str, Any]) -> bool:
        """The engine's fast path for a chmod, chown or unlink; False when it has none."""
        if self._quiet_path is None or fields["kind"] not in QUIET_PATH_KINDS:
            return False
        try:
            return self._quiet_path(name, fields["kind"], fields.get("path"))
        except Exception:  # noqa: BLE001 - evaluate reports the rule bug and allows
            return False

    def _submit_all(self, events: tuple[RuntimeEvent, ...]) -> None:
        for runtime_event in events:
            self.stats.events += 1
            # Launch time and user (sidecar.procinfo), read while the tracee is stopped.
            proc = self._procs.get(runtime_event.pid)
            exe = proc.exe if proc is not None else runtime_event.process
            self._submit(self._procinfo.enrich(runtime_event, proc, exe))

    def _report(self, event: SyscallEvent, defer: bool = False) -> Verdict:
        """Evaluate; submit the verdict's events unless `defer`."""
        self.stats.decoded += 1
        try:
            verdict = self._evaluate(event)
        except Exception as exc:  # noqa: BLE001 - the workload must never die of a rule bug
            self.stats.engine_errors += 1
            log.error(
                "the engine failed on an event; allowed",
                extra=fields(syscall=event.syscall, pid=event.pid, error=repr(exc)),
            )
            return ALLOW
        if not defer:
            self._submit_all(verdict.events)
        return verdict

    def _recheck_at_exit(self, tid: int, event: SyscallEvent) -> None:
        """Stop this open again at its exit: the fd it returns says what the kernel opened,
        whatever the path string said (another thread may swap it after we read it)."""
        self._exit_checks[tid] = event

    def _on_exit_check(self, tid: int, pending: SyscallEvent | QuietWrite) -> None:
        """At the exit of an open for writing: resolve the returned fd; when it is not the
        file judged at entry, judge it now. A block kills the process here, before the
        syscall returns to it: it never writes a byte through that fd. At the exit of a
        listen: judge the port it listens on."""
        regs = self._regs
        result = regs.rax if isinstance(regs, pt.X86_64Regs) else regs.regs[0]
        fd = result - _WRAP if result >= _SIGN_BIT else result
        if fd < 0:
            return  # the call failed: nothing was opened, nothing listens
        tgid = self._threads.get(tid, tid)
        if isinstance(pending, tuple):
            entry_path, flags = pending[2][1], pending[2][2]
        elif pending.kind == "listen":
            self._judge_listening(tgid, pending)
            return
        else:
            entry_path, flags = pending.path, pending.flags or 0
        opened = fd_target(tgid, fd)
        detail = "fd at exit"
        if self._protected_inodes and not created_new(flags):
            # A second name made before the sidecar started: the inode says which file.
            other = self._watched_inode(tgid, fd)
            if other is not None and other != opened:
                opened, detail = other, f"hard link {opened}"
        if opened is None or opened == entry_path:
            return
        if isinstance(pending, tuple):
            proc, args, call = pending
            event = self.decoder.open_event(proc, tid, args, *call)
        else:
            event = pending
        verdict = self._report(dataclasses.replace(event, path=opened, detail=detail))
        if verdict.block:
            self.stats.blocked += 1
            with contextlib.suppress(ProcessLookupError):
                os.kill(tgid, signal.SIGKILL)

    def _watched_inode(self, tgid: int, fd: int) -> str | None:
        """The watched file an fd refers to by inode, when it has more than one name."""
        try:
            st = os.stat(f"/proc/{tgid}/fd/{fd}")
        except OSError:
            return None
        if st.st_nlink < 2:
            return None
        return self._protected_inodes.get((st.st_dev, st.st_ino))

    def _judge_listening(self, tgid: int, event: SyscallEvent) -> None:
        """listen(2) returned: the socket is in /proc/PID/net/tcp now, with its port."""
        where = listening(tgid, signed32(event.args[0]) if event.args else -1)
        if not where:
            return
        verdict = self._report(dataclasses.replace(event, **where))
        if verdict.block:
            self.stats.blocked += 1
            with contextlib.suppress(ProcessLookupError):
                os.kill(tgid, signal.SIGKILL)

    def _deny(self, tid: int, tgid: int, kill: bool = True) -> None:
        """Skip the syscall with -EPERM, resume, and (`kill`) kill the offending process."""
        if kill:
            self.stats.blocked += 1
        else:
            self.stats.refused += 1
        try:
            if isinstance(self._regs, pt.X86_64Regs):
                self._regs.orig_rax = SKIP_SYSCALL
                self._regs.rax = EPERM_RESULT
                pt.setregs_x86_64(tid, self._regs)
            else:
                pt.set_syscall_aarch64(tid, -1)
                self._regs.regs[0] = EPERM_RESULT
                pt.setregs_aarch64(tid, self._regs, self._iov)
        except pt.PtraceError as exc:
            log.warning("cannot deny a syscall", extra=fields(tid=tid, error=str(exc)))
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(tgid, signal.SIGKILL)  # the whole thread group, nothing else
        self._resume(tid, 0)
        self._in_syscall.discard(tid)

    def _read_call_x86_64(self, tid: int) -> tuple[int, tuple[int, ...]]:
        """(number, arguments) at a syscall stop; (-1, ()) when the thread is gone."""
        regs = self._regs
        if not self._getregs(tid):
            return -1, ()
        nr = regs.orig_rax
        if nr >= _SIGN_BIT:  # as the kernel sees it: -1 is "no syscall"
            nr -= _WRAP
        return nr, (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9)

    def _read_call_aarch64(self, tid: int) -> tuple[int, tuple[int, ...]]:
        regs = self._regs
        try:
            pt.getregs_aarch64(tid, regs, self._iov)  # type: ignore[arg-type]
        except pt.PtraceError:
            return -1, ()
        r = regs.regs
        return r[8], (r[0], r[1], r[2], r[3], r[4], r[5])

    def _resume(self, tid: int, sig: int) -> None:
        every = (
            self._stop_every_syscall
            or tid in self._stepped
            or (bool(self._exit_checks) and tid in self._exit_checks)
        )
        try:
            self._resume_request(tid, pt.PTRACE_SYSCALL if every else pt.PTRACE_CONT, sig)
        except pt.PtraceError as exc:
            if exc.errno != errno.ESRCH:
                raise
            # Killed while stopped (our own block, or SIGKILL from elsewhere): its exit
            # status arrives through waitpid.

    # --- bookkeeping -------------------------------------------------------------------

    def _add_thread(self, tid: int, tgid: int, ppid: int, parent: Process | None = None) -> None:
        """Note a thread (of a new process when `tgid` is new). A process met at its fork
        event (`parent`: the forking process) has not run an instruction yet: its image
        and its root are its parent's (fork(2) copies the mm and the fs struct), so no
        /proc read is needed for them; one met otherwise is read from /proc."""
        self._threads[tid] = tgid
        if tgid not in self._procs:  # a new process inherits its parent's seccomp state
            if ppid in self._filtered:
                self._filtered.add(tgid)
            elif ppid in self._stepped_procs:
                self._stepped_procs.add(tgid)
        if tgid in self._stepped_procs:
            self._stepped.add(tid)
            self._drop_exitkill.add(tid)
        self.stats.threads = len(self._threads)
        if tgid not in self._procs:
            proc = Process(tgid, ppid or _ppid(tgid))
            if parent is not None:
                proc.exe, proc.same_root = parent.exe, parent.same_root
            else:
                proc.refresh_exe()
                proc.refresh_root()
            if self._container_of is not None:
                proc.container = self._container_of(tgid)
            self._procs[tgid] = proc
            self.stats.processes += 1

    def _adopt(self, tid: int) -> None:
        """A stop from a tid we have not heard of (its fork event is still queued): its
        thread group and parent from one read of /proc/TID/status."""
        found = _status_fields(tid, (b"Tgid:", b"PPid:"))
        tgid = found.get(b"Tgid:") or tid
        self._add_thread(tid, tgid, found.get(b"PPid:", 0) if tgid == tid else 0)

    def _on_exit(self, tid: int, status: int) -> None:
        tgid = self._threads.pop(tid, None)
        self.stats.threads = len(self._threads)
        self._awaiting_first_stop.discard(tid)
        self._in_syscall.discard(tid)
        self._pending_exec.pop(tid, None)
        self._exit_checks.pop(tid, None)
        self._stepped.discard(tid)
        self._drop_exitkill.discard(tid)
        if tid in self._started_early:  # gone before its parent's fork event was handled
            self._started_early.discard(tid)
            self._exited_early.add(tid)
        if tgid is None:
            return  # an untraced child of ours (an orphan reparented to the subreaper)
        if tid == tgid:
            self._filtered.discard(tgid)
            self._stepped_procs.discard(tgid)
            proc = self._procs.pop(tgid, None)
            if proc is not None:
                proc.close()
        if tid == self.root_pid:
            self.exit_status = _exit_code(status)
            self.root_pid = None
            log.info("workload exited", extra=fields(pid=tid, status=self.exit_status))
            # As a container runtime does: the main process is gone, so is the rest.
            for other in list(self._procs):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(other, signal.SIGKILL)

    def _start_detach(self) -> None:
        self._detaching = True
        log.info(
            "detaching",
            extra=fields(threads=len(self._threads), filtered_processes=len(self._filtered)),
        )
        if self._filtered:
            log.warning(
                "processes under the injected seccomp filter cannot be detached: traced "
                "until they exit (they die with the sidecar)",
                extra=fields(pids=sorted(self._filtered)[:20]),
            )
        for tid, tgid in list(self._threads.items()):
            if tgid in self._filtered:
                continue
            try:
                pt.interrupt(tid)
            except pt.PtraceError:
                self._threads.pop(tid, None)  # gone

    def _detach_stopped(self, tid: int, sig: int) -> None:
        with contextlib.suppress(pt.PtraceError):
            pt.detach(tid, sig)
        self._threads.pop(tid, None)
        self.stats.threads = len(self._threads)

    def _close_all(self) -> None:
        for proc in self._procs.values():
            proc.close()
        if self._detaching:
            self._procs.clear()
            self._threads.clear()


# Entries looked at under the protected paths at start (a larger tree is noted in part).
MAX_PROTECTED_WALK = 100_000


def protected_inodes(roots: Iterable[str]) -> dict[tuple[int, int], str]:
    """(dev, inode) -> path of every file in the protected paths that has more than one
    name now (hard links made before the sidecar started), bounded."""
    found: dict[tuple[int, int], str] = {}
    seen = 0
    for root in sorted(roots):
        walk = [root]
        while walk and seen < MAX_PROTECTED_WALK:
            path = walk.pop()
            seen += 1
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                with contextlib.suppress(OSError):
                    walk += [os.path.join(path, name) for name in os.listdir(path)]
            elif stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                found.setdefault((st.st_dev, st.st_ino), path)
    return found


def created_new(flags: int) -> bool:
    """A successful open with these flags made a new file (O_CREAT|O_EXCL fails on any
    existing name, a symlink included): its inode is none of the protected ones noted at
    start, so the hard-link check by inode has nothing to find."""
    return bool(flags & O_CREAT and flags & O_EXCL)


def _child_exec(argv: list[str], env: dict[str, str] | None, fprog: object, ready: int) -> None:
    """In the forked child: wait until traced, filter, exec. Never returns."""
    code = EXIT_CANNOT_EXEC
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED_SIGNALS, signal.SIGALRM):
            signal.signal(sig, signal.SIG_DFL)
        # The tracer seizes us (with TRACESECCOMP: a TRACE filter without it fails every
        # watched syscall), then says go. EOF means it gave up or died: never run untraced.
        if os.read(ready, 1) != b"g":
            os._exit(code)
        os.close(ready)
        if fprog is not None:
            seccomp.install(fprog)  # type: ignore[arg-type]
        if env is None:
            os.execvp(argv[0], argv)  # noqa: S606 - an argument list, no shell
        else:
            os.execvpe(argv[0], argv, env)  # noqa: S606 - an argument list, no shell
    except FileNotFoundError as exc:
        code = EXIT_NOT_FOUND
        _child_error(argv[0], exc)
    except BaseException as exc:  # noqa: BLE001 - a forked child must never return
        _child_error(argv[0], exc)
    finally:
        os._exit(code)


def _child_error(cmd: str, exc: BaseException) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"containerscan sidecar: cannot run {cmd}: {exc}\n".encode())


def _exit_code(status: int) -> int:
    """Shell convention: the exit code, or 128 + the signal number."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _status_fields(pid: int, names: tuple[bytes, ...]) -> dict[bytes, int]:
    """The named numeric lines of /proc/PID/status (`Tgid:`, `PPid:`, ...) found in one
    read; {} when the process is gone."""
    found: dict[bytes, int] = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                key = line[: line.find(b":") + 1]
                if key in names:
                    found[key] = int(line.split()[1])
                    if len(found) == len(names):
                        break
    except (OSError, ValueError, IndexError):
        return found
    return found


def _tgid(tid: int) -> int | None:
    return _status_fields(tid, (b"Tgid:",)).get(b"Tgid:")


def _tracer_pid(pid: int) -> int | None:
    return _status_fields(pid, (b"TracerPid:",)).get(b"TracerPid:")


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        # comm may contain spaces and parentheses: fields start after the last ')'.
        return int(data[data.rindex(b")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read(4096).replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _self_and_ancestors() -> set[int]:
    """The sidecar, its threads, and every ancestor up to pid 1: never traced."""
    out = {os.getpid()}
    with contextlib.suppress(OSError):
        out |= {int(t) for t in os.listdir(f"/proc/{os.getpid()}/task")}
    pid = os.getppid()
    while pid > 0 and pid not in out:
        out.add(pid)
        pid = _ppid(pid)
    return out
