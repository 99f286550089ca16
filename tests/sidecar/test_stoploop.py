"""The compiled stop loop (sidecar/stoploop) against the Python tracer it stands in for.

Whatever the C loop decides alone must be what the Python tracer decides: the same resolved
path (sidecar.resolve, on real files, symlinks, dirfds and cwds of this process as the
"tracee"), the same normalization, and "quiet" only where the engine's own `open_is_quiet` /
`path_is_quiet` say quiet (hypothesis over policies and paths). Then real workloads under real
ptrace, run once with the C loop and once with the Python loop: the same events, and the C
loop took the quiet stops (counted).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import resolve as rs
from sidecar import stoploop
from sidecar.engine import QUIET_ALWAYS, QUIET_BY_PATH, QUIET_NEVER, Engine
from sidecar.events import RuntimeEvent
from sidecar.policy_model import (
    ACTIONS,
    SEVERITIES,
    AnomalyDetection,
    FileIntegrityMonitoring,
    FimPath,
    Policy,
    SyscallFiltering,
)
from sidecar.stoploop import _stoploop as ext  # built by `pip install -e .` (setup.py)
from sidecar.syscalls import X86_64, native_arch
from tests.sidecar.test_open_fast_path import engine_of

AT_FDCWD = -100
ARCH = native_arch()


def _loop(engine: Engine | None = None, recheck: bool = False) -> ext.Loop:
    """A Loop over empty tracer state; its table from `engine` (every syscall it knows)."""
    compiled: dict[int, tuple[int, int, int, int]] = {}
    roots: list[bytes] = []
    prefixes: list[bytes] = []
    if engine is not None:
        watched = frozenset(ARCH.numbers.values())
        compiled = stoploop.table(dict(ARCH.numbers), watched, engine.quiet_mode, ext)
        scope_roots, scope_prefixes = engine.fim_scope()
        roots = [os.fsencode(r) for r in scope_roots]
        prefixes = [os.fsencode(p) for p in scope_prefixes]
    return ext.Loop(
        {}, {}, {}, set(), {}, compiled, prefixes, roots, recheck, False,
        stoploop.AUDIT_ARCH[ARCH.name], False, [],
    )  # fmt: skip


# --- normalization -----------------------------------------------------------------------

COMPONENTS = st.sampled_from(["", ".", "..", "a", ".b", "c.", "...", "d"])


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(COMPONENTS, min_size=0, max_size=6), lead=st.integers(1, 4))
def test_normal_is_resolve_normal(parts: list[str], lead: int) -> None:
    path = "/" * lead + "/".join(parts)
    assert ext.normal(path.encode()) == rs._normal(path).encode()


# --- path resolution ---------------------------------------------------------------------


def _both(
    root_fd: int | None, raw: str, follow: bool, same_root: bool
) -> tuple[str | None, str | None]:
    pid, tid = os.getpid(), threading.get_native_id()
    c = _loop().resolve(
        pid, tid, AT_FDCWD if root_fd is None else root_fd, os.fsencode(raw), follow, same_root
    )
    python = rs.resolve(pid, tid, root_fd, raw, follow, same_root)
    return (None if c is None else os.fsdecode(c)), python


PARTS = st.sampled_from(["a.txt", "sub", "b.txt", "link", "fl", "dangling", "..", ".", "x", ""])


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    parts=st.lists(PARTS, min_size=1, max_size=4),
    absolute=st.booleans(),
    follow=st.booleans(),
    same_root=st.booleans(),
    from_dirfd=st.booleans(),
)
def test_what_c_resolves_is_what_python_resolves(  # noqa: PLR0917 - hypothesis inputs
    tree: tuple[Path, int],
    monkeypatch: pytest.MonkeyPatch,
    parts: list[str],
    absolute: bool,
    follow: bool,
    same_root: bool,
    from_dirfd: bool,
) -> None:
    root, fd = tree
    monkeypatch.chdir(root / "sub")
    raw = "/".join(parts)
    if absolute:
        raw = f"{root}/{raw}"
    c, python = _both(fd if from_dirfd else None, raw, follow, same_root)
    assert c is None or c == python, (raw, follow, same_root, from_dirfd)


CERTAIN = [
    # (raw relative to the tree or absolute with {root}, follow, same_root, expected)
    ("{root}/a.txt", True, True, "a.txt"),
    ("{root}/sub//./b.txt", True, True, "sub/b.txt"),
    ("{root}/new", False, True, "new"),
    ("sub/b.txt", True, True, "sub/b.txt"),
    ("new.txt", False, True, "new.txt"),
    ("fl", False, True, "fl"),
    ("link", True, True, "elsewhere"),  # a symlink on the way: the O_PATH open
    ("{root}/fl", True, True, "a.txt"),
    ("{root}/a.txt", True, False, "a.txt"),  # another root: through /proc/PID/task/TID/root
    ("sub/b.txt", True, False, "sub/b.txt"),
]


@pytest.mark.parametrize(("raw", "follow", "same_root", "expected"), CERTAIN)
def test_the_common_routes_are_resolved_in_c(
    tree: tuple[Path, int], raw: str, follow: bool, same_root: bool, expected: str
) -> None:
    root, fd = tree
    c, python = _both(fd, raw.format(root=root), follow, same_root)
    assert c == python == str(root / expected)


@pytest.mark.parametrize(
    "raw",
    [
        "/proc/self/root/etc/passwd",  # the reader's /proc/self: Python rewrites it
        "//proc/thread-self/cwd",
        "",  # AT_EMPTY_PATH: the dirfd itself
        "missing/x",  # the walk fails: sidecar.resolve._missing
        "dangling",  # a dangling final symlink, followed: its target's parent
    ],
)
def test_the_other_routes_are_left_to_python(tree: tuple[Path, int], raw: str) -> None:
    _root, fd = tree
    c, python = _both(fd, raw, True, False)
    assert c is None
    assert python is not None or raw == ""


def test_a_deleted_or_memfd_target_is_left_to_python(tree: tuple[Path, int]) -> None:
    root, _fd = tree
    gone = root / "gone"
    gone.mkdir()
    fd = os.open(gone, os.O_RDONLY | os.O_DIRECTORY)
    memfd = os.memfd_create("payload")
    try:
        gone.rmdir()
        assert _both(fd, "x", False, True)[0] is None
        assert _both(None, f"/proc/{os.getpid()}/fd/{memfd}", True, True)[0] is None
    finally:
        os.close(fd)
        os.close(memfd)


# --- the engine's answers ----------------------------------------------------------------

SEGMENTS = st.sampled_from(["etc", "ssl", "a", "passwd", ".", "", ".."])
PATHS = st.lists(SEGMENTS, min_size=0, max_size=4).map(lambda parts: "/" + "/".join(parts))
RULE_PATHS = st.lists(st.sampled_from(["etc", "ssl", "a"]), max_size=3).map(
    lambda parts: "/" + "/".join(parts)
)
RULES = st.builds(
    FimPath,
    path=st.one_of(RULE_PATHS, st.sampled_from(["/etc/*.conf", "/e[t]c/ss?", "/a*"])),
    recursive=st.booleans(),
    events=st.sets(
        st.sampled_from(["open", "write", "unlink", "chmod", "chown", "link"]), min_size=1
    ).map(frozenset),
    severity=st.sampled_from(SEVERITIES),
    action=st.sampled_from(ACTIONS),
)


@settings(max_examples=400, deadline=None)
@given(
    rules=st.lists(RULES, max_size=5),
    fim=st.booleans(),
    traced=st.sets(st.sampled_from(["openat", "fchown", "unlinkat", "getppid"])),
    anomaly=st.booleans(),
    drift=st.booleans(),
    paths=st.lists(PATHS, min_size=1, max_size=6),
)
def test_quiet_in_c_is_quiet_in_the_engine(  # noqa: PLR0917 - hypothesis inputs
    rules: list[FimPath],
    fim: bool,
    traced: set[str],
    anomaly: bool,
    drift: bool,
    paths: list[str],
) -> None:
    engine = engine_of(rules, fim, traced, anomaly, drift)
    loop = _loop(engine)
    for name, (_layout, _follow, kind) in stoploop.LAYOUTS.items():
        if not ARCH.has(name):
            continue
        nr = ARCH.number(name)
        for write in (False, True) if kind == "open" else (False,):
            for path in paths:
                if not loop.is_quiet(nr, write, path.encode()):
                    continue
                if kind == "open":
                    assert engine.open_is_quiet(name, path, write), (name, path, write)
                else:
                    assert engine.path_is_quiet(name, kind, path), (name, kind, path)


def test_quiet_mode_by_policy() -> None:
    """Where the C loop may decide, and where it must not."""
    etc = FimPath("/etc", True, frozenset({"write", "chmod"}), "high", "alert")
    fim = FileIntegrityMonitoring(True, (etc,))
    plain = Engine(Policy(fim=fim))
    assert plain.quiet_mode("openat", "open", True) == QUIET_BY_PATH
    assert plain.quiet_mode("openat", "open", False) == QUIET_ALWAYS  # no "open" rule
    assert plain.quiet_mode("unlinkat", "unlink", False) == QUIET_ALWAYS
    assert plain.quiet_mode("fchmod", "chmod", False) == QUIET_BY_PATH
    loop = _loop(plain)
    openat = X86_64.number("openat") if ARCH.name == "x86_64" else ARCH.number("openat")
    assert loop.is_quiet(openat, True, b"/tmp/x")
    assert not loop.is_quiet(openat, True, b"/etc/x")
    assert not loop.is_quiet(openat, True, b"/etc")
    assert not loop.is_quiet(openat, True, b"/tmp/../etc/x")  # normalized first
    glob = FimPath("/srv/app*/x.conf", False, frozenset({"write"}), "high", "alert")
    globbed = Engine(Policy(fim=FileIntegrityMonitoring(True, (etc, glob))))
    assert globbed.quiet_mode("openat", "open", True) == QUIET_BY_PATH
    assert globbed.fim_scope()[1] == ("/etc/", "/srv/app")  # a glob: its text before a wildcard
    loop = _loop(globbed)
    assert loop.is_quiet(openat, True, b"/tmp/x.conf")
    assert not loop.is_quiet(openat, True, b"/srv/app1/x.conf")
    anywhere = FimPath("*.pem", False, frozenset({"write"}), "high", "alert")
    everywhere = Engine(Policy(fim=FileIntegrityMonitoring(True, (anywhere,))))
    assert everywhere.quiet_mode("openat", "open", True) == QUIET_NEVER
    watched = Engine(Policy(fim=fim, anomaly=AnomalyDetection(enabled=True)))
    assert watched.quiet_mode("openat", "open", True) == QUIET_NEVER  # anomaly state
    assert watched.quiet_mode("fchmod", "chmod", False) == QUIET_NEVER
    traced = Engine(
        Policy(fim=fim, syscalls=SyscallFiltering(enabled=True, traced=frozenset({"openat"})))
    )
    assert traced.quiet_mode("openat", "open", True) == QUIET_NEVER


# --- real workloads under real ptrace ----------------------------------------------------

WORKLOAD = """\
import os, sys, threading
quiet, watched = sys.argv[1], sys.argv[2]
os.chdir(quiet)
for i in range(150):
    fd = os.open(f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o640)
    os.fchown(fd, os.getuid(), os.getgid())
    os.close(fd)
os.mkdir("d")
dirfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY)
for i in range(20):
    os.close(os.open(f"g{i}", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=dirfd))
    os.unlink(f"g{i}", dir_fd=dirfd)
os.close(dirfd)
os.rmdir("d")
# What must be reported, from the cwd, a dirfd, an fd, a thread and a symlink.
with open(os.path.join(watched, "direct"), "w") as fh:
    fh.write("x")
wfd = os.open(watched, os.O_RDONLY | os.O_DIRECTORY)
os.close(os.open("viafd", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=wfd))
fd = os.open(os.path.join(watched, "direct"), os.O_RDONLY)
os.fchmod(fd, 0o600)
os.close(fd)
os.symlink(os.path.join(watched, "target"), "innocent")
os.close(os.open("innocent", os.O_WRONLY | os.O_CREAT, 0o600))
def thread():
    os.unlink(os.path.join(watched, "viafd"))
t = threading.Thread(target=thread)
t.start(); t.join()
# 40 threads at once, each with its own files: exit checks of many threads in flight.
def writer(n):
    for i in range(10):
        fd = os.open(f"t{n}-{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, b"x")
        os.close(fd)
    os.close(os.open(os.path.join(watched, f"t{n}"), os.O_WRONLY | os.O_CREAT, 0o600))
threads = [threading.Thread(target=writer, args=(n,)) for n in range(40)]
for t in threads: t.start()
for t in threads: t.join()
"""


class Run:
    """A Tracer over a quiet and a watched directory (FIM on `events` under the watched
    one), with the C loop or without it, counting the stops that reach Python."""

    def __init__(self, tmp_path: Path, compiled: bool, events: set[str]) -> None:
        from sidecar.tracer import Tracer

        self.root = tmp_path / ("c" if compiled else "python")
        self.quiet, self.watched = self.root / "quiet", self.root / "watched"
        self.quiet.mkdir(parents=True)
        self.watched.mkdir()
        rule = FimPath(str(self.watched), True, frozenset(events), "high", "alert")
        engine = Engine(Policy(fim=FileIntegrityMonitoring(True, (rule,))))
        self.seen: list[RuntimeEvent] = []
        self.tracer = Tracer(engine.requirements(), engine.evaluate, self.seen.append)
        self.in_python = 0
        dispatch = self.tracer._dispatch

        def counting(tid: int, status: int) -> None:
            self.in_python += 1
            dispatch(tid, status)

        self.tracer._dispatch = counting  # type: ignore[method-assign]
        if not compiled:
            self.tracer._stoploop_built = True  # as CONTAINERSCAN_SIDECAR_STOPLOOP=python

    def found(self) -> list[tuple[str, str, str]]:
        return sorted(
            (e.syscall, (e.path or "").replace(str(self.root), "RUN"), str(e.extra.get("event")))
            for e in self.seen
        )


def _traced(tmp_path: Path, compiled: bool) -> tuple[list[tuple[str, str, str]], Any, int]:
    run = Run(tmp_path, compiled, {"write", "unlink", "chmod"})
    run.tracer.launch([sys.executable, "-c", WORKLOAD, str(run.quiet), str(run.watched)])
    run.tracer.start()
    assert run.tracer.run() == 0
    return run.found(), run.tracer, run.in_python


@pytest.mark.ptrace
def test_the_c_loop_reports_what_the_python_loop_reports(tmp_path: Path) -> None:
    with_c, tracer_c, python_stops_c = _traced(tmp_path, compiled=True)
    without, tracer_py, python_stops_py = _traced(tmp_path, compiled=False)
    assert tracer_c._stoploop is not None and tracer_py._stoploop is None
    assert with_c == without
    paths = {path for _syscall, path, _event in with_c}
    assert paths == {
        "RUN/watched/direct",
        "RUN/watched/viafd",
        "RUN/watched/target",
        *(f"RUN/watched/t{n}" for n in range(40)),
    }, with_c
    assert {event for *_rest, event in with_c} >= {"write", "unlink", "chmod"}
    # The same stops, counted the same way; the C loop took the quiet ones without Python
    # (150 files: the open, its exit check and the fchmod; 20 in the directory: the open,
    # its exit check and the unlink; 400 from the threads: the open and its exit check;
    # fchown is not watched by this policy).
    stats_c, stats_py = tracer_c.stats, tracer_py.stats
    assert stats_c.syscall_stops == stats_py.syscall_stops
    assert stats_c.decoded == stats_py.decoded
    assert abs(stats_c.stops - stats_py.stops) <= 5  # the interpreter's own start-up varies
    assert python_stops_py == stats_py.stops
    in_c = stats_c.stops - python_stops_c
    assert in_c >= 150 * 3 + 20 * 3 + 400 * 2, (python_stops_c, stats_c.stops)


ATTACHED = """\
import os, sys, time
go, quiet, watched = sys.argv[1:4]
while not os.path.exists(go):
    time.sleep(0.005)
for i in range(100):
    fd = os.open(os.path.join(quiet, f"f{i}"), os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"x")
    os.fchmod(fd, 0o640)
    os.close(fd)
    os.getppid()
with open(os.path.join(watched, "hit"), "w") as fh:
    fh.write("x")
os.chmod(os.path.join(watched, "hit"), 0o600)
"""


def _attached(tmp_path: Path, compiled: bool) -> tuple[list[tuple[str, str, str]], Any, int]:
    """The same file work in a process attached to without the filter: every syscall
    stops."""
    import subprocess

    run = Run(tmp_path, compiled, {"write", "chmod"})
    go = run.root / "go"
    argv = [sys.executable, "-c", ATTACHED, str(go), str(run.quiet), str(run.watched)]
    app = subprocess.Popen(argv)
    try:
        run.tracer.configure_attach()
        assert run.tracer.attach([app.pid]) == [app.pid]
        go.touch()
        run.tracer.run()
    finally:
        app.kill()
        app.wait()
    return run.found(), run.tracer, run.in_python


@pytest.mark.ptrace
def test_attach_without_the_filter_stops_at_every_syscall_and_c_resumes_most(
    tmp_path: Path,
) -> None:
    with_c, tracer_c, python_stops_c = _attached(tmp_path, compiled=True)
    without, tracer_py, python_stops_py = _attached(tmp_path, compiled=False)
    assert tracer_c._stop_every_syscall and tracer_c._stoploop is not None
    assert with_c == without
    assert {(path, event) for _syscall, path, event in with_c} == {
        ("RUN/watched/hit", "write"),
        ("RUN/watched/hit", "chmod"),
    }, with_c
    assert python_stops_py == tracer_py.stats.stops
    # Every syscall stops twice (entry and exit): 100 x (open, write, fchmod, close,
    # getppid) at least; the C loop resumed them, Python saw only what it watches.
    assert tracer_c.stats.stops >= 100 * 5 * 2
    assert tracer_c.stats.stops - python_stops_c >= 100 * 5 * 2 - 50, (
        python_stops_c,
        tracer_c.stats.stops,
    )
