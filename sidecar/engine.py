"""The policy engine: one decoded syscall in, a Verdict out.

`evaluate` runs at every stop of the traced workload, so everything is compiled at
construction: FIM paths become dictionaries keyed by exact path, by directory (for direct
children) and by recursive prefix (a lookup per ancestor of the event's path), globs and
argument patterns become compiled regular expressions, allowlists become `ip_network`
objects, names become frozensets. Evaluation allocates nothing but the events it returns
(and a small cache of address decisions).

Actions: `log` and `alert` only report (the sinks decide where alerts go); `block` sets
`Verdict.block`, and the tracer denies the syscall (-EPERM) and kills the offending process.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sidecar.anomaly import AnomalyDetector
from sidecar.events import (
    ACCESS_CREATE,
    ACCESS_WRITE,
    ALLOW,
    KIND_CHMOD,
    KIND_CHOWN,
    KIND_CONNECT,
    KIND_EXEC,
    KIND_IO_URING,
    KIND_LINK,
    KIND_LISTEN,
    KIND_OPEN,
    KIND_OTHER,
    KIND_RENAME,
    KIND_SENDTO,
    KIND_UNLINK,
    Requirements,
    RuntimeEvent,
    SyscallEvent,
    Verdict,
)
from sidecar.packages import install_command, python_module, tool_name
from sidecar.patterns import compile_glob, compile_pattern
from sidecar.policy_model import (
    ACTIONS,
    DOWNLOAD_TOOLS,
    GLOB_CHARS,
    SEVERITIES,
    FimPath,
    PackageManagerRule,
    Policy,
    ProcessNetworkRule,
    TrackedExecutable,
)
from sidecar.redact import mask_argv

EXEC_SYSCALLS = frozenset({"execve", "execveat"})
OPEN_SYSCALLS = frozenset({"open", "openat", "openat2", "creat"})
RENAME_SYSCALLS = frozenset({"rename", "renameat", "renameat2"})
TRUNCATE_SYSCALLS = frozenset({"truncate", "ftruncate"})
LINK_SYSCALLS = frozenset({"link", "linkat", "symlink", "symlinkat"})
# FIM event -> every syscall that can cause it. A rename onto a watched file is a write
# (`sed -i`, editors and package managers replace files that way) and an unlink of the
# source; truncate(2) writes without an open; a link or symlink appearing in a watched
# directory writes it (a cron job can be `ln -s`'d into /etc/cron.d), and a hard link to a
# watched file gives it a second, unwatched name to write through.
FIM_SYSCALLS: dict[str, frozenset[str]] = {
    "open": OPEN_SYSCALLS,
    "write": OPEN_SYSCALLS | RENAME_SYSCALLS | TRUNCATE_SYSCALLS | LINK_SYSCALLS,
    "unlink": frozenset({"unlink", "unlinkat", "rmdir"}) | RENAME_SYSCALLS,
    "chmod": frozenset({"chmod", "fchmod", "fchmodat", "fchmodat2"}),
    "chown": frozenset({"chown", "fchown", "lchown", "fchownat"}),
    "link": LINK_SYSCALLS,
}
# Drift detection: every way a file can appear or become executable, and exec.
DRIFT_SYSCALLS = (
    OPEN_SYSCALLS | RENAME_SYSCALLS | LINK_SYSCALLS | FIM_SYSCALLS["chmod"] | EXEC_SYSCALLS
)
# Paths remembered as written since start (oldest forgotten first beyond this).
MAX_DRIFT_PATHS = 65_536
CONNECT_SYSCALLS = frozenset({"connect"})
# Every way to name a destination while sending: UDP datagrams, and TCP Fast Open
# (sendto/sendmsg with MSG_FASTOPEN connects). Without a UDP rule only the latter stop.
SEND_SYSCALLS = frozenset({"sendto", "sendmsg", "sendmmsg"})
IO_URING_SETUP = "io_uring_setup"
# argv[0] is the caller's choice: shown in events up to this many characters.
MAX_ARGV0_SHOWN = 256
# Cap of the address -> decision cache (a workload talking to many peers must not grow it).
MAX_ADDRESS_CACHE = 4_096
_ACTION_RANK = {a: i for i, a in enumerate(ACTIONS)}
_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}


# (rule, severity, action, message, ip, port) of one network destination
_Judged = tuple[str, str, str, str, str, "int | None"]

# ----------------------------------------------------------------------- compiled rules


@dataclass(frozen=True, slots=True)
class _Process:
    rule: TrackedExecutable
    rule_id: str
    by_path: bool
    exact: str | None
    glob: Any  # an RE2 pattern (sidecar.patterns)
    args: frozenset[str]
    pattern: Any
    parents: tuple[Any, ...]  # RE2 globs of the parent program names; () = any parent
    env: frozenset[str]


def _canonical(path: str) -> str:
    """Merged-/usr systems: /usr/bin/bash and /bin/bash are one file."""
    for prefix in ("/usr/bin/", "/usr/sbin/"):
        if path.startswith(prefix):
            return path[4:]
    return path


def _split_flags(args: Sequence[str]) -> set[str]:
    """argv tokens plus the letters of short-flag clusters (`-ic` -> `-i`, `-c`)."""
    tokens = set(args)
    for arg in args:
        if len(arg) > 2 and arg[0] == "-" and arg[1] != "-" and arg[1:].isalpha():
            tokens.update(f"-{letter}" for letter in arg[1:])
    return tokens


def _program_names(event: SyscallEvent) -> tuple[set[str], set[str]]:
    """(paths, basenames) the executed program goes by: the file the kernel runs (symlinks
    followed, `memfd:name` for a memfd), the symlinks the invoked path went through
    (`innocent -> nc` matches a rule on `nc` and one on `innocent`), and argv[0] (a
    multi-call binary such as busybox acts on it).

    Not `exe`: at an execve syscall stop it is still the caller's image (the shell that
    runs the program); only when the tracer knows no path (an exec reported without one)
    does `exe` stand in.
    """
    paths: set[str] = set()
    names: set[str] = set()
    argv0 = event.argv[0] if event.argv else None
    fallback = event.exe if not (event.path or argv0) else None
    for candidate in (event.path, *event.aliases, argv0, fallback):
        if not candidate:
            continue
        if candidate.startswith("/"):
            paths.add(_canonical(os.path.normpath(candidate)))
        names.add(candidate.rsplit("/", 1)[-1])
    return paths, names


# FIM event -> the event a rule that does not watch it reports it as.
_ALSO_REPORTED_AS = {"write": "open", "link": "write"}
# openFlags / chmodBits words -> bits (<asm-generic/fcntl.h>, <sys/stat.h>)
OPEN_FLAG_BITS = {"truncate": 0o1000, "append": 0o2000, "create": 0o100, "exclusive": 0o200}
CHMOD_BIT_MASKS = {"setuid": 0o4000, "setgid": 0o2000, "sticky": 0o1000,
                   "executable": 0o111, "world-writable": 0o002}  # fmt: skip


def _narrowed_in(rule: FimPath, label: str, event: SyscallEvent) -> bool:
    """Whether the event has the open flags / mode bits the rule narrows itself to."""
    if rule.open_flags and label in ("open", "write") and event.kind == KIND_OPEN:
        flags = event.flags or 0
        return any(flags & OPEN_FLAG_BITS[f] for f in rule.open_flags)
    if rule.chmod_bits and label == "chmod":
        mode = event.mode or 0
        return any(mode & CHMOD_BIT_MASKS[b] for b in rule.chmod_bits)
    return True


def _in_networks(ip: str, networks: tuple[Any, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _other_name(event: SyscallEvent, path: str) -> dict[str, str]:
    """The other name of a link or rename event about `path`: a link's target or the link
    itself (when the watched file is the target), a rename's other side."""
    if event.kind == KIND_LINK:
        if path == event.path:
            return {"target": event.path2 or ""}
        return {"link": event.path or ""}
    return {"other_path": (event.path2 if path == event.path else event.path) or ""}


def _parent_matches(parents: tuple[Any, ...], event: SyscallEvent) -> bool:
    """The program that calls exec (at the stop, `exe` is still its image: the forking
    parent's for fork+exec) or the parent process's, by basename (Falco's proc.pname)."""
    names = {p.rsplit("/", 1)[-1] for p in (event.exe, event.parent) if p}
    return any(g.match(n) for g in parents for n in names)


def _exec_details(event: SyscallEvent, program: str) -> dict[str, Any]:
    """What an exec event says beside the program: the caller, argv[0] when it is not the
    program's name, the symlinks it was invoked through, and a cut command line."""
    details: dict[str, Any] = dict(_parent(event, program))
    argv0 = event.argv[0] if event.argv else None
    if argv0 and argv0.rsplit("/", 1)[-1] != program.rsplit("/", 1)[-1]:
        details["argv0"] = argv0[:MAX_ARGV0_SHOWN]
    if event.aliases:
        details["invoked_as"] = event.aliases[0]
    if event.truncated:
        details["args_truncated"] = True
    return details


def _fingerprint(argv: Sequence[str]) -> str:
    """A digest of the whole command line (never the line itself: it may hold secrets)."""
    return hashlib.blake2b(
        "\0".join(argv).encode("utf-8", "surrogateescape"), digest_size=8
    ).hexdigest()


def report(
    event: SyscallEvent,
    *,
    category: str,
    rule: str,
    severity: str,
    action: str,
    process: str | None = None,
    **details: Any,
) -> RuntimeEvent:
    """A RuntimeEvent about `event`: its time, process, syscall and container, plus details."""
    return RuntimeEvent(
        timestamp=event.timestamp,
        category=category,
        rule=rule,
        severity=severity,
        action=action,
        pid=event.pid,
        ppid=event.ppid,
        process=process or event.exe,
        syscall=event.syscall,
        container=event.container,
        fingerprint=_fingerprint(event.argv) if event.argv else None,
        **details,
    )


def _normalize(path: str) -> str:
    """One spelling per file: `//etc/passwd` or `/etc/./passwd` must not slip past a rule.

    (POSIX lets normpath keep a leading `//`; the kernel treats it as `/`.) Symlinks are not
    resolved: a path-based rule sees the name the process used, as Tetragon's do.
    """
    if "//" in path or "/." in path:
        path = os.path.normpath(path)
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
    return path


def _parent(event: SyscallEvent, program: str) -> dict[str, str]:
    """At an execve stop `exe` is the image that calls exec (the shell): worth reporting."""
    return {"caller": event.exe} if event.exe and event.exe != program else {}


class Engine:
    def __init__(self, policy: Policy, *, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self._clock = clock
        # FIM tables
        self._fim_exact: dict[str, list[FimPath]] = {}
        self._fim_children: dict[str, list[FimPath]] = {}
        self._fim_recursive: dict[str, list[FimPath]] = {}
        self._fim_globs: list[tuple[Any, FimPath]] = []
        if policy.fim.enabled:
            for rule in policy.fim.paths:
                if rule.is_glob:
                    self._fim_globs.append((compile_glob(rule.path), rule))
                elif rule.recursive:
                    self._fim_recursive.setdefault(rule.path, []).append(rule)
                else:
                    self._fim_exact.setdefault(rule.path, []).append(rule)
                    self._fim_children.setdefault(rule.path, []).append(rule)
        # Every path a non-glob rule can match is one of its paths or under one: a path that
        # is neither skips the per-ancestor lookups (most opens under FIM on every open).
        plain = [r.path for r in (policy.fim.paths if policy.fim.enabled else ()) if not r.is_glob]
        self._fim_roots = frozenset(plain)
        self._fim_prefixes = tuple(sorted({p if p.endswith("/") else p + "/" for p in plain}))
        # A glob matches (from the start: RE2's match of fnmatch.translate) only paths that
        # begin with its text before the first wildcard.
        self._fim_glob_prefixes = tuple(
            sorted({GLOB_CHARS.split(rule.path, maxsplit=1)[0] for _, rule in self._fim_globs})
        )
        self._fim_events = frozenset(
            e for r in (policy.fim.paths if policy.fim.enabled else ()) for e in r.events
        )
        # process execution
        self._processes: tuple[_Process, ...] = ()
        if policy.process.enabled:
            tracked = policy.process.tracked
            seen: dict[str, int] = {}
            compiled = []
            for exe in tracked:
                # Two rules on one name (`*sh` by argsPattern, `*sh` by parent) keep apart:
                # the second is `process:*sh#2`.
                seen[exe.name] = seen.get(exe.name, 0) + 1
                suffix = f"#{seen[exe.name]}" if seen[exe.name] > 1 else ""
                compiled.append(self._compile_process(exe, suffix))
            self._processes = tuple(compiled)
        # software installation: name -> rules
        self._managers: dict[str, list[PackageManagerRule]] = {}
        if policy.software.enabled:
            for manager in policy.software.package_managers:
                self._managers.setdefault(manager.name, []).append(manager)
        # network
        net = policy.network
        self._net_enabled = net.enabled
        self._allow = tuple(ipaddress.ip_network(c, strict=False) for c in net.allowlist)
        self._blocked_ports = net.blocked_ports
        self._address_cache: dict[str, bool] = {}
        self._process_net = tuple(
            (
                compile_glob(r.name),
                r,
                tuple(ipaddress.ip_network(c, strict=False) for c in r.allowlist),
            )
            for r in net.processes
        )
        # syscall filtering
        sf = policy.syscalls
        self._traced = sf.traced if sf.enabled else frozenset()
        self._whitelist = sf.whitelist
        self._anomaly = AnomalyDetector(policy.anomaly, clock) if policy.anomaly.enabled else None
        self._has_block = "block" in _actions(policy)
        self._drift = policy.drift if policy.drift.enabled else None
        self._written: OrderedDict[str, None] = OrderedDict()  # drift: files made at runtime

    @staticmethod
    def _compile_process(rule: TrackedExecutable, suffix: str = "") -> _Process:
        by_path = "/" in rule.name
        is_glob = bool(re.search(r"[*?\[]", rule.name))
        name = _canonical(rule.name) if by_path else rule.name
        return _Process(
            rule=rule,
            rule_id=f"process:{rule.name}{suffix}",
            by_path=by_path,
            exact=None if is_glob else name,
            glob=compile_glob(name) if is_glob else None,
            args=frozenset(rule.args),
            pattern=compile_pattern(rule.args_pattern) if rule.args_pattern else None,
            parents=tuple(compile_glob(p) for p in rule.parent),
            env=frozenset(rule.env),
        )

    # ----------------------------------------------------------------- requirements

    def requirements(self) -> Requirements:
        """The syscalls to stop on, derived from the enabled rules (see events.Requirements)."""
        policy = self.policy
        syscalls: set[str] = set()
        if self._processes or self._managers:
            syscalls |= EXEC_SYSCALLS
        for event in self._fim_events:
            syscalls |= FIM_SYSCALLS[event]
        if self._net_enabled:
            syscalls |= CONNECT_SYSCALLS | SEND_SYSCALLS
            if policy.network.inbound:
                syscalls.add("listen")
        if self._anomaly is not None:
            syscalls |= EXEC_SYSCALLS | CONNECT_SYSCALLS
        if self._drift is not None:
            syscalls |= DRIFT_SYSCALLS
        syscalls |= self._traced
        if syscalls & EXEC_SYSCALLS:
            syscalls |= EXEC_SYSCALLS  # execveat is an exec too
        open_needs_read = "open" in self._fim_events or bool(
            self._whitelist and (self._traced & OPEN_SYSCALLS) - self._whitelist
        )
        refused: frozenset[str] = frozenset()
        if self._fim_events or self._net_enabled:
            # io_uring opens, writes and connects with no syscall a tracer can stop.
            if self._has_block:
                refused = frozenset({IO_URING_SETUP})
            else:
                syscalls.add(IO_URING_SETUP)
        sends_need_udp = (self._net_enabled and policy.network.udp) or bool(
            self._traced & SEND_SYSCALLS
        )
        return Requirements(
            syscalls=frozenset(syscalls),
            process_only=syscalls <= EXEC_SYSCALLS and not refused,
            open_needs_read=open_needs_read,
            refused=refused,
            recheck_writes=bool(self._fim_events & {"write", "open"}) or self._drift is not None,
            protected=frozenset(
                r.path
                for r in (policy.fim.paths if policy.fim.enabled else ())
                if not r.is_glob and r.events & {"write", "open"}
            ),
            sends_need_udp=sends_need_udp,
        )

    # ------------------------------------------------------------------- evaluation

    def evaluate(self, event: SyscallEvent) -> Verdict:
        kind = event.kind
        found: list[RuntimeEvent] = []
        if self._drift is not None:
            self._track_drift(event, found)
        if kind == KIND_EXEC:
            if self._processes:
                self._exec_rules(event, found)
            if self._managers:
                self._software(event, found)
        elif kind == KIND_OPEN:
            if self._fim_events:
                write = bool(event.access & {ACCESS_WRITE, ACCESS_CREATE})
                self._fim(event, event.path, "write" if write else "open", found)
        elif kind in (KIND_CONNECT, KIND_SENDTO):
            if self._net_enabled:
                self._network(event, found)
        elif kind == KIND_UNLINK:
            self._fim(event, event.path, "unlink", found)
        elif kind == KIND_RENAME:
            self._fim(event, event.path, "write" if event.detail else "unlink", found)
            self._fim(event, event.path2, "write", found)
        elif kind == KIND_CHMOD:
            self._fim(event, event.path, "chmod", found)
        elif kind == KIND_CHOWN:
            self._fim(event, event.path, "chown", found)
        elif kind == KIND_LINK:
            self._fim(event, event.path, "link", found)  # a name appears in a directory
            if not found:  # a second name for (or a symlink to) a watched file
                self._fim(event, event.path2, "link", found)
        elif kind == KIND_IO_URING:
            self._io_uring(event, found)
        elif kind == KIND_LISTEN:
            self._listen(event, found)
        if self._traced and event.syscall in self._traced:
            self._syscall(event, found)
        if self._anomaly is not None:
            anomaly = self._anomaly.observe(event)
            if anomaly is not None:
                found.append(anomaly)
        if not found:
            return ALLOW
        refuse = kind == KIND_IO_URING and self._has_block
        return Verdict(tuple(found), block=any(e.action == "block" for e in found), refuse=refuse)

    def open_is_quiet(self, syscall: str, path: str | None, write: bool) -> bool:
        """True when `evaluate` of this open (`write`: the flags can write or create) would
        return ALLOW and change no state: the tracer then need not build the SyscallEvent.
        A fast path for the commonest stop under FIM on every open; False when unsure."""
        if self._traced and syscall in self._traced:
            return False
        if (self._anomaly is not None or self._drift is not None) and write:
            return False  # a written file is state: an anomaly feature, a drift candidate
        if not self._fim_events:
            return True
        return self._fim_match(path, "write" if write else "open") is None

    def path_is_quiet(self, syscall: str, kind: str, path: str | None) -> bool:
        """`open_is_quiet` for the other one-path FIM calls (chmod, chown, unlink and their
        at/fd forms): True when `evaluate` of such an event on `path` would return ALLOW and
        change no state, so the tracer need not build the SyscallEvent. False when unsure,
        and for every other kind."""
        what = _QUIET_KINDS.get(kind)
        if what is None:
            return False
        if self._traced and syscall in self._traced:
            return False
        if self._anomaly is not None and kind != KIND_CHOWN:
            return False  # a chmod or an unlink is an anomaly feature (its directory)
        if self._drift is not None and kind == KIND_CHMOD:
            return False  # a chmod may make a file executable: a drift candidate
        return self._fim_match(path, what) is None

    def quiet_mode(self, syscall: str, kind: str, write: bool = False) -> int:
        """What `open_is_quiet` (kind open; `write` as there) or `path_is_quiet` answers for
        `syscall` before it looks at the path: QUIET_ALWAYS (True whatever the path),
        QUIET_BY_PATH (True when the normalized path is outside `fim_scope()`; it may be
        True inside too) or QUIET_NEVER (not known to be True). What a compiled stop loop
        may decide alone (sidecar.stoploop); tests/sidecar/test_stoploop.py checks it
        against the two methods."""
        if self._traced and syscall in self._traced:
            return QUIET_NEVER
        if kind == KIND_OPEN:
            if (self._anomaly is not None or self._drift is not None) and write:
                return QUIET_NEVER
            what = "write" if write else "open"
        else:
            what = _QUIET_KINDS.get(kind, "")
            if (
                not what
                or (self._anomaly is not None and kind != KIND_CHOWN)
                or (self._drift is not None and kind == KIND_CHMOD)
            ):
                return QUIET_NEVER
        also = _ALSO_REPORTED_AS.get(what)
        if what not in self._fim_events and also not in self._fim_events:
            return QUIET_ALWAYS  # no rule watches this kind of event (_fim_match)
        return QUIET_NEVER if "" in self._fim_glob_prefixes else QUIET_BY_PATH

    def fim_scope(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """(roots, prefixes): a normalized path that is none of the roots and starts with
        none of the prefixes has no FIM rule (`_fim_rules`: neither a plain rule's path nor
        under one, nor a path a glob can match)."""
        return self._fim_roots, tuple(sorted({*self._fim_prefixes, *self._fim_glob_prefixes}))

    # FIM -----------------------------------------------------------------------------

    def _fim_rules(self, path: str) -> list[FimPath]:
        if (
            not self._fim_globs
            and path not in self._fim_roots
            and not path.startswith(self._fim_prefixes)
        ):
            return []
        rules: list[FimPath] = []
        rules += self._fim_exact.get(path, ())
        parent = os.path.dirname(path)
        rules += self._fim_children.get(parent, ())
        if self._fim_recursive:
            current = path
            while True:
                rules += self._fim_recursive.get(current, ())
                parent = os.path.dirname(current)
                if parent == current:  # "/" (or a relative path's "")
                    break
                current = parent
        for pattern, rule in self._fim_globs:
            if pattern.match(path):
                rules.append(rule)
        return rules

    def _fim(
        self,
        event: SyscallEvent,
        path: str | None,
        what: str,
        found: list[RuntimeEvent],
        label: str | None = None,
    ) -> None:
        match = self._fim_match(path, what, event)
        if match is not None:
            rule, matched, path = match
            label = label or matched
            details = {"event": label}
            if event.path2 and event.kind in (KIND_LINK, KIND_RENAME):
                details.update(_other_name(event, path))
            if event.detail:
                details["detail"] = event.detail  # "fd at exit", "hard", "symbolic", ...
            found.append(
                replace(
                    report(
                        event,
                        category="file",
                        rule=f"fim:{rule.path}",
                        severity=rule.severity,
                        action=rule.action,
                        path=path,
                        message=f"{label} of {path} (watched: {rule.path})",
                        extra=details,
                    ),
                    # an open, a link and a chmod of one file are three events, not one
                    fingerprint=label,
                )
            )

    def _fim_match(
        self, path: str | None, what: str, event: SyscallEvent | None = None
    ) -> tuple[FimPath, str, str] | None:
        """The FIM rule that reports `what` on `path` (rule, label, normalized path).
        `event` gives the flags and mode that `openFlags`/`chmodBits` narrow rules by;
        without it such rules match (the answer errs towards evaluating in full)."""
        also = _ALSO_REPORTED_AS.get(what)
        if not path or (what not in self._fim_events and also not in self._fim_events):
            return None  # no rule watches this kind of event: skip the path lookups
        path = _normalize(path)
        best: tuple[tuple[int, int, int], FimPath, str] | None = None
        for rule in self._fim_rules(path):
            if what in rule.events:
                label = what
            elif also is not None and also in rule.events:
                label = also  # an open for writing is an open too; a link writes its dir
            else:
                continue
            if event is not None and not _narrowed_in(rule, label, event):
                continue
            # One event per syscall: the strongest action, then the highest severity, then
            # the most specific path among the rules that match.
            rank = (_ACTION_RANK[rule.action], _SEVERITY_RANK[rule.severity], len(rule.path))
            if best is None or rank > best[0]:
                best = (rank, rule, label)
        if best is None:
            return None
        return best[1], best[2], path

    # process execution -----------------------------------------------------------------

    def _exec_rules(self, event: SyscallEvent, found: list[RuntimeEvent]) -> None:
        paths, names = _program_names(event)
        argv = event.argv
        tokens: set[str] | None = None
        for proc in self._processes:
            pool = paths if proc.by_path else names
            if proc.exact is not None:
                if proc.exact not in pool:
                    continue
            elif proc.glob is not None and not any(proc.glob.match(p) for p in pool):
                continue
            if proc.args:
                if tokens is None:
                    tokens = _split_flags(argv[1:])
                if not proc.args & tokens:
                    continue
            if proc.pattern is not None and not proc.pattern.search(" ".join(argv)):
                continue
            if proc.env and not proc.env.intersection(event.env):
                continue
            if proc.parents and not _parent_matches(proc.parents, event):
                continue
            rule = proc.rule
            program = event.path or event.exe
            found.append(
                report(
                    event,
                    category="process",
                    rule=proc.rule_id,
                    severity=rule.severity,
                    action=rule.action,
                    process=program,
                    path=program,
                    args=mask_argv(argv) if rule.capture_args else None,
                    message=f"execution of {program}",
                    extra=_exec_details(event, program),
                )
            )

    # software installation ---------------------------------------------------------------

    def _software(self, event: SyscallEvent, found: list[RuntimeEvent]) -> None:
        argv = list(event.argv)
        _, names = _program_names(event)
        names = {tool_name(n) for n in names}
        # python -m pip install ...: the module is the package manager
        if names & {"python", "python3"}:
            module = python_module(argv)
            if module is not None and tool_name(module[0]) in ("pip", "pip3"):
                names = {tool_name(module[0])}
                argv = module[1]
        for name in names & self._managers.keys():
            for manager in self._managers[name]:
                detail = install_command(name, manager.commands, argv[1:])
                if detail is None:
                    continue
                download = name in DOWNLOAD_TOOLS
                found.append(
                    report(
                        event,
                        category="software",
                        rule=f"software:{name}",
                        severity=manager.severity,
                        action=manager.action,
                        process=event.path or event.exe,
                        args=mask_argv(event.argv) if manager.capture_args else None,
                        package_manager=name,
                        message=(
                            f"download by {name}"
                            if download
                            else f"software installation: {name} {detail}"
                        ),
                        extra={
                            "command": "download" if download else detail,
                            **_exec_details(event, event.path or event.exe),
                        },
                    )
                )
                break  # one event per package manager and exec

    # network -----------------------------------------------------------------------------

    def _network(self, event: SyscallEvent, found: list[RuntimeEvent]) -> None:
        if event.family not in ("inet", "inet6"):
            return
        if event.kind == KIND_SENDTO and not self.policy.network.udp:
            return
        # sendmmsg: every destination of the vector, one event for the worst of them
        destinations = event.destinations or ((event.family, event.ip, event.port),)
        own = self._process_rule(event.exe)
        verdicts = [
            v
            for _, ip, port in destinations
            if ip is not None and (v := self._judge(ip, port, own))
        ]
        if not verdicts:
            return
        rule, severity, action, message, ip, port = max(
            verdicts, key=lambda v: (_ACTION_RANK[v[2]], _SEVERITY_RANK[v[1]])
        )
        extra: dict[str, Any] = {"protocol": event.protocol} if event.protocol else {}
        if len(destinations) > 1:
            extra["destinations"] = len(destinations)
        found.append(
            report(
                event,
                category="network",
                rule=rule,
                severity=severity,
                action=action,
                ip=ip,
                port=port,
                message=message,
                extra=extra,
            )
        )

    def _process_rule(self, exe: str) -> tuple[Any, ProcessNetworkRule, tuple[Any, ...]] | None:
        """The first per-process network rule for the program making the connection."""
        name = exe.rsplit("/", 1)[-1]
        return next((r for r in self._process_net if r[0].match(name)), None)

    def _judge(
        self,
        ip: str,
        port: int | None,
        own: tuple[Any, ProcessNetworkRule, tuple[Any, ...]] | None = None,
    ) -> _Judged | None:
        """(rule, severity, action, message, ip, port) for one destination, or None."""
        net = self.policy.network
        if port in self._blocked_ports:
            message = f"connection to blocked port {port} at {ip}"
            return ("network:blocked-port", net.blocked_ports_severity,
                    net.blocked_ports_action, message, ip, port)  # fmt: skip
        if own is not None:
            _, rule, networks = own
            inside = _in_networks(ip, networks)
            if inside and (not rule.allowed_ports or port in rule.allowed_ports):
                return None
            message = f"{rule.name} connected to {ip}:{port}, outside its own network rule"
            return f"network:process:{rule.name}", rule.severity, rule.action, message, ip, port
        if not self._allowed(ip):
            message = f"connection to {ip}:{port}, outside the allowlist"
            return "network:outside-allowlist", net.severity, net.action, message, ip, port
        if net.allowed_ports and port not in net.allowed_ports:
            message = f"connection to {ip}:{port}: port {port} is not an allowed port"
            return "network:port-not-allowed", net.severity, net.action, message, ip, port
        return None

    def _allowed(self, ip: str) -> bool:
        cached = self._address_cache.get(ip)
        if cached is not None:
            return cached
        allowed = _in_networks(ip, self._allow)
        if len(self._address_cache) >= MAX_ADDRESS_CACHE:
            self._address_cache.clear()
        self._address_cache[ip] = allowed
        return allowed

    def _listen(self, event: SyscallEvent, found: list[RuntimeEvent]) -> None:
        """A socket starts listening: outside inboundConnections.allowedPorts it is an event
        (a bind shell, an unexpected server)."""
        net = self.policy.network
        if not (self._net_enabled and net.inbound) or event.port is None:
            return
        if event.port in net.listen_ports:
            return
        found.append(
            report(
                event,
                category="network",
                rule="network:listen-not-allowed",
                severity=net.inbound_severity,
                action=net.inbound_action,
                ip=event.ip,
                port=event.port,
                message=f"listening on {event.ip}:{event.port}, not an allowed port",
                extra={"direction": "inbound"},
            )
        )

    def _track_drift(self, event: SyscallEvent, found: list[RuntimeEvent]) -> None:
        """Remember files that appear or become executable at runtime; report an exec of
        one (or of a memfd): a program that was not in the image (Falco's "Drop and execute
        new binary in container", GuardDuty's NewBinaryExecuted)."""
        kind, path = event.kind, event.path
        made: str | None = None
        if kind == KIND_OPEN and event.access & {ACCESS_WRITE, ACCESS_CREATE}:
            made = path
        elif kind == KIND_RENAME:
            made = event.path2
        elif kind == KIND_LINK:
            made = path
        elif kind == KIND_CHMOD and (event.mode or 0) & 0o111:
            made = path
        if made:
            self._written[_normalize(made)] = None
            self._written.move_to_end(_normalize(made))
            if len(self._written) > MAX_DRIFT_PATHS:
                self._written.popitem(last=False)
            return
        if kind != KIND_EXEC or not path:
            return
        memfd = path.startswith("memfd:")
        if not memfd and _normalize(path) not in self._written:
            return
        drift = self._drift
        assert drift is not None
        found.append(
            report(
                event,
                category="process",
                rule="drift:new-executable",
                severity=drift.severity,
                action=drift.action,
                process=path,
                path=path,
                message=(
                    f"execution of {path}, "
                    + ("a memfd: never in the image" if memfd else "written after start")
                ),
                extra=_exec_details(event, path),
            )
        )

    def _io_uring(self, event: SyscallEvent, found: list[RuntimeEvent]) -> None:
        """io_uring runs opens, writes and connects inside the kernel, with no syscall a
        tracer can stop: under a policy that blocks it is refused (EPERM, Docker's default
        seccomp profile does the same; launch mode's filter refuses it without a stop),
        otherwise reported."""
        if not (self._fim_events or self._net_enabled):
            return
        refused = self._has_block
        found.append(
            report(
                event,
                category="syscall",
                rule="io_uring:setup",
                severity="high",
                action="alert",
                message=(
                    "io_uring_setup refused (EPERM): io_uring would bypass the policy's "
                    "file and network rules"
                    if refused
                    else "io_uring_setup: later io_uring file and network operations are "
                    "not seen by the tracer"
                ),
                extra={"refused": refused},
            )
        )

    # syscall filtering --------------------------------------------------------------------

    def _syscall(self, event: SyscallEvent, found: list[RuntimeEvent]) -> None:
        name = event.syscall
        if name in self._whitelist:
            return
        if event.kind != KIND_OTHER and not self._whitelist:
            return  # decoded syscalls are the other rules' business unless a whitelist is set
        sf = self.policy.syscalls
        found.append(
            report(
                event,
                category="syscall",
                rule=f"syscall:{name}",
                severity=sf.severity,
                action=sf.action,
                path=event.path,
                message=f"traced syscall {name}"
                + (" outside the whitelist" if self._whitelist else ""),
            )
        )


# `quiet_mode`'s answers.
QUIET_NEVER, QUIET_ALWAYS, QUIET_BY_PATH = 0, 1, 2
# The kinds `path_is_quiet` answers for, and the FIM event each is.
_QUIET_KINDS = {KIND_CHMOD: "chmod", KIND_CHOWN: "chown", KIND_UNLINK: "unlink"}


def _actions(policy: Policy) -> set[str]:
    """Every action some rule of the policy can take."""
    actions = {r.action for r in policy.fim.paths} if policy.fim.enabled else set()
    if policy.process.enabled:
        actions |= {r.action for r in policy.process.tracked}
    if policy.software.enabled:
        actions |= {r.action for r in policy.software.package_managers}
    if policy.network.enabled:
        actions |= {policy.network.action, policy.network.blocked_ports_action}
    if policy.syscalls.enabled and policy.syscalls.traced:
        actions.add(policy.syscalls.action)
    if policy.anomaly.enabled:
        actions.add(policy.anomaly.action)
    if policy.drift.enabled:
        actions.add(policy.drift.action)
    return actions
