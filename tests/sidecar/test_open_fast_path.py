"""The tracer's fast path for opens: `Decoder.open_call` + `Engine.open_is_quiet`.

Both must agree with the slow path exactly: `open_event` builds the same event as `decode`
(on real memory of this process, as in test_decode.py), and whenever `open_is_quiet` says
an open is quiet, `evaluate` of the full event reports nothing and leaves the anomaly
detector's state unchanged. The tracer end of it runs a real workload under the real engine.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.decode import AT_FDCWD, Decoder, Process, can_write
from sidecar.engine import Engine
from sidecar.events import RuntimeEvent, SyscallEvent
from sidecar.policy_model import (
    ACTIONS,
    SEVERITIES,
    AnomalyDetection,
    DriftDetection,
    FileIntegrityMonitoring,
    FimPath,
    Policy,
    SyscallFiltering,
)
from sidecar.syscalls import AARCH64, X86_64, Arch

AT = AT_FDCWD & 0xFFFFFFFFFFFFFFFF
O_WRONLY, O_RDWR, O_CREAT, O_TRUNC = 0o1, 0o2, 0o100, 0o1000
FLAGS = st.sampled_from([0, O_WRONLY, O_RDWR, O_CREAT, O_WRONLY | O_TRUNC, 3, 0o2000000])


class Mem:
    def __init__(self) -> None:
        self.keep: list[object] = []

    def bytes(self, data: bytes) -> int:
        buf = ctypes.create_string_buffer(data, len(data) + 1)
        self.keep.append(buf)
        return ctypes.addressof(buf)


@pytest.fixture
def proc():
    p = Process(os.getpid(), os.getppid(), "/usr/bin/app", container="web")
    yield p
    p.close()


def _calls(mem: Mem, arch: Arch, path: bytes, flags: int) -> list[tuple[int, tuple[int, ...]]]:
    addr = mem.bytes(path)
    how = mem.bytes(struct.pack("<QQQ", flags, 0o640, 0))
    out = [
        (arch.number("openat"), (AT, addr, flags, 0o644, 0, 0)),
        (arch.number("openat2"), (AT, addr, how, 24, 0, 0)),
    ]
    if arch.has("open"):
        out += [
            (arch.number("open"), (addr, flags, 0o600, 0, 0, 0)),
            (arch.number("creat"), (addr, 0o600, 0, 0, 0, 0)),
        ]
    return out


@pytest.mark.parametrize("arch", [X86_64, AARCH64], ids=lambda a: a.name)
@pytest.mark.parametrize(
    "path", [b"/etc/hosts", b"relative/x", b"//etc/./passwd", b"", b"/t\xffmp"]
)
@pytest.mark.parametrize("flags", [0, O_WRONLY | O_TRUNC, O_RDWR | O_CREAT])
def test_open_event_is_what_decode_makes(
    proc: Process, arch: Arch, path: bytes, flags: int
) -> None:
    mem = Mem()
    decoder = Decoder(arch, clock=lambda: 2.5)
    for nr, args in _calls(mem, arch, path, flags):
        call = decoder.open_call(proc, proc.pid, nr, args)
        assert call is not None
        assert decoder.open_event(proc, 7, args, *call) == decoder.decode(proc, 7, nr, args)


def test_open_call_is_only_for_the_open_family(proc: Process) -> None:
    decoder = Decoder(X86_64)
    for name in ("execve", "connect", "unlinkat", "getppid", "renameat"):
        assert decoder.open_call(proc, proc.pid, X86_64.number(name), (0,) * 6) is None


def test_open_call_of_an_unreadable_pointer(proc: Process) -> None:
    decoder = Decoder(X86_64, clock=lambda: 1.0)
    nr = X86_64.number("openat")
    args = (AT, 8, 0, 0, 0, 0)  # page zero: unmapped
    call = decoder.open_call(proc, proc.pid, nr, args)
    assert call == ("openat", None, 0, 0)
    assert decoder.open_event(proc, 1, args, *call) == decoder.decode(proc, 1, nr, args)


SEGMENTS = st.sampled_from(["etc", "ssl", "a", "passwd", ".", ""])
PATHS = st.lists(SEGMENTS, min_size=0, max_size=4).map(lambda parts: "/" + "/".join(parts))
RULES = st.builds(
    FimPath,
    path=st.lists(st.sampled_from(["etc", "ssl", "a"]), max_size=3).map(
        lambda parts: "/" + "/".join(parts)
    ),
    recursive=st.booleans(),
    events=st.sets(st.sampled_from(["open", "write", "unlink", "chmod"]), min_size=1).map(
        frozenset
    ),
    severity=st.sampled_from(SEVERITIES),
    action=st.sampled_from(ACTIONS),
)
OPEN_NAMES = st.sampled_from(["open", "openat", "openat2", "creat"])


@settings(max_examples=400, deadline=None)
@given(
    rules=st.lists(RULES, max_size=5),
    fim=st.booleans(),
    traced=st.sets(st.sampled_from(["openat", "creat", "getppid"])),
    whitelist=st.sets(OPEN_NAMES),
    anomaly=st.booleans(),
    name=OPEN_NAMES,
    path=st.one_of(st.none(), PATHS, st.just("relative/etc"), st.just("//etc/passwd")),
    flags=FLAGS,
)
def test_a_quiet_open_is_one_evaluate_ignores(  # noqa: PLR0917 - hypothesis inputs
    rules: list[FimPath],
    fim: bool,
    traced: set[str],
    whitelist: set[str],
    anomaly: bool,
    name: str,
    path: str | None,
    flags: int,
) -> None:
    policy = Policy(
        fim=FileIntegrityMonitoring(fim, tuple(rules)),
        syscalls=SyscallFiltering(
            enabled=bool(traced), traced=frozenset(traced), whitelist=frozenset(whitelist)
        ),
        anomaly=AnomalyDetection(enabled=anomaly, learning_window=0.0),
    )
    engine = Engine(policy, clock=lambda: 100.0)
    call = Decoder(X86_64, clock=lambda: 100.0)
    proc = Process(1, 0, "/bin/app")
    event = call.open_event(proc, 1, (0,) * 6, name, path, flags, 0)
    _check_quiet(engine, event, engine.open_is_quiet(name, path, can_write(flags)))


def _check_quiet(engine: Engine, event: SyscallEvent, quiet: bool) -> None:
    """A quiet answer means evaluate reports nothing and changes no anomaly state."""
    before = _anomaly_state(engine)
    verdict = engine.evaluate(event)
    if quiet:
        assert verdict.events == () and not verdict.block
        assert _anomaly_state(engine) == before
    # Not quiet may still report nothing (False means "unsure"); but a report means not quiet.
    if verdict.events:
        assert not quiet


def _anomaly_state(engine: Engine) -> object:
    detector = engine._anomaly
    if detector is None:
        return None
    return repr(sorted(vars(detector).items(), key=lambda kv: kv[0]))


@pytest.mark.ptrace
def test_every_open_policy_under_the_real_engine(tmp_path: Path) -> None:
    """FIM on every open through the tracer: opens under the watched path are reported
    (read and write), opens elsewhere are not, and every stop is counted as decoded."""
    from sidecar.tracer import Tracer

    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "r").write_text("x")
    policy = Policy(
        fim=FileIntegrityMonitoring(
            True, (FimPath(str(watched), True, frozenset({"open"}), "high", "alert"),)
        )
    )
    engine = Engine(policy)
    seen: list[RuntimeEvent] = []

    tracer = Tracer(engine.requirements(), engine.evaluate, seen.append)
    assert tracer._quiet_open is not None
    code = (
        "import os, sys\n"
        "w = sys.argv[1]\n"
        "for _ in range(50): os.close(os.open('/dev/null', os.O_RDONLY))\n"
        "os.close(os.open(w + '/r', os.O_RDONLY))\n"
        "os.close(os.open(w + '/new', os.O_WRONLY | os.O_CREAT, 0o600))\n"
    )
    tracer.launch([sys.executable, "-c", code, str(watched)])
    tracer.start()
    assert tracer.run() == 0
    paths = sorted((e.path, e.extra.get("event")) for e in seen)
    assert paths == [(str(watched / "new"), "open"), (str(watched / "r"), "open")]
    # Quiet opens count as decoded too (the heartbeat's figures do not change meaning).
    assert tracer.stats.decoded >= 52
    assert tracer.stats.decoded == tracer.stats.syscall_stops


# --- the same fast path for chmod, chown and unlink (Engine.path_is_quiet, issue 15) --------

PATH_CALLS = st.sampled_from(
    [
        ("fchmod", "chmod"),
        ("chmod", "chmod"),
        ("fchmodat", "chmod"),
        ("fchown", "chown"),
        ("lchown", "chown"),
        ("fchownat", "chown"),
        ("unlinkat", "unlink"),
        ("rmdir", "unlink"),
    ]
)


def engine_of(
    rules: list[FimPath], fim: bool, traced: set[str], anomaly: bool, drift: bool
) -> Engine:
    """The engine of a policy drawn by hypothesis: FIM rules, traced syscalls, anomaly and
    drift detection on or off (test_stoploop.py draws the same)."""
    policy = Policy(
        fim=FileIntegrityMonitoring(fim, tuple(rules)),
        syscalls=SyscallFiltering(enabled=bool(traced), traced=frozenset(traced)),
        anomaly=AnomalyDetection(enabled=anomaly, learning_window=0.0),
        drift=DriftDetection(enabled=drift),
    )
    return Engine(policy, clock=lambda: 100.0)


@settings(max_examples=400, deadline=None)
@given(
    rules=st.lists(
        st.builds(
            FimPath,
            path=st.lists(st.sampled_from(["etc", "ssl", "a"]), max_size=3).map(
                lambda parts: "/" + "/".join(parts)
            ),
            recursive=st.booleans(),
            events=st.sets(
                st.sampled_from(["open", "write", "unlink", "chmod", "chown"]), min_size=1
            ).map(frozenset),
            severity=st.sampled_from(SEVERITIES),
            action=st.sampled_from(ACTIONS),
        ),
        max_size=5,
    ),
    fim=st.booleans(),
    traced=st.sets(st.sampled_from(["fchmod", "unlinkat", "lchown", "getppid"])),
    anomaly=st.booleans(),
    drift=st.booleans(),
    call=PATH_CALLS,
    path=st.one_of(st.none(), PATHS, st.just("relative/etc"), st.just("//etc/passwd")),
    mode=st.sampled_from([0o644, 0o755, 0o4755]),
)
def test_a_quiet_chmod_chown_unlink_is_one_evaluate_ignores(  # noqa: PLR0917 - hypothesis inputs
    rules: list[FimPath],
    fim: bool,
    traced: set[str],
    anomaly: bool,
    drift: bool,
    call: tuple[str, str],
    path: str | None,
    mode: int,
) -> None:
    engine = engine_of(rules, fim, traced, anomaly, drift)
    name, kind = call
    fields: dict[str, object] = {"kind": kind, "path": path}
    if kind == "chmod":
        fields["mode"] = mode
    elif kind == "chown":
        fields.update(uid=0, gid=0)
    event = Decoder(X86_64, clock=lambda: 100.0).event(
        Process(1, 0, "/bin/app"), 1, (0,) * 6, name, fields
    )
    quiet = engine.path_is_quiet(name, kind, path)
    written = list(engine._written)  # drift's state: files written or made executable
    _check_quiet(engine, event, quiet)
    if quiet:
        assert list(engine._written) == written


def test_path_is_quiet_answers_only_for_its_kinds() -> None:
    engine = Engine(Policy())
    assert engine.path_is_quiet("fchmod", "chmod", "/tmp/x")
    for kind in ("open", "exec", "rename", "link", "connect", "other"):
        assert not engine.path_is_quiet("x", kind, "/tmp/x")


@pytest.mark.parametrize("name", ["fchmod", "fchown", "unlinkat", "chmod", "getppid", "connect"])
def test_call_then_event_is_what_decode_makes(proc: Process, name: str) -> None:
    mem = Mem()
    decoder = Decoder(X86_64, clock=lambda: 3.5)
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        path = mem.bytes(b"/etc/hostname")
        args = {
            "fchmod": (fd, 0o644, 0, 0, 0, 0),
            "fchown": (fd, 0, 0, 0, 0, 0),
            "unlinkat": (AT, path, 0, 0, 0, 0),
            "chmod": (path, 0o600, 0, 0, 0, 0),
            "getppid": (0,) * 6,
            "connect": (fd, 0, 0, 0, 0, 0),
        }[name]
        nr = X86_64.number(name)
        found = decoder.call(proc, 7, nr, args)
        expected = decoder.decode(proc, 7, nr, args)
        if found is None:
            assert expected is None
        else:
            assert decoder.event(proc, 7, args, *found) == expected
        if name in ("fchmod", "fchown"):
            assert found is not None and found[1]["path"] == "/dev/null"
    finally:
        os.close(fd)


@pytest.mark.ptrace
def test_fast_paths_keep_every_event_of_a_tar_like_workload(tmp_path: Path) -> None:
    """The tar pattern (issue 15) through the real tracer and engine: O_CREAT|O_EXCL opens
    of single names and of names with a `/` relative to a dirfd, fchown and fchmod of the
    fd, unlinkat of single names. Inside the watched directory every one is reported (the
    fast paths reject nothing the engine reports); outside none is, and each such stop is
    still counted as decoded."""
    from sidecar.tracer import Tracer

    tmp = tmp_path.resolve()
    watched, outside = tmp / "watched", tmp / "outside"
    for top in (watched, outside):
        (top / "sub").mkdir(parents=True)
    events = frozenset({"write", "chmod", "chown", "unlink"})
    policy = Policy(
        fim=FileIntegrityMonitoring(True, (FimPath(str(watched), True, events, "high", "alert"),))
    )
    engine = Engine(policy)
    seen: list[RuntimeEvent] = []
    tracer = Tracer(engine.requirements(), engine.evaluate, seen.append)
    assert tracer._quiet_path is not None
    code = (
        "import os, sys\n"
        "for top in sys.argv[1:]:\n"
        "    d = os.open(top, os.O_RDONLY | os.O_DIRECTORY)\n"
        "    for name in ('a', 'sub/b'):\n"
        "        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=d)\n"
        "        os.write(fd, b'x')\n"
        "        os.fchown(fd, os.getuid(), os.getgid())\n"
        "        os.fchmod(fd, 0o644)\n"
        "        os.close(fd)\n"
        "    os.unlink('a', dir_fd=d)\n"
        "    os.close(d)\n"
    )
    tracer.launch([sys.executable, "-c", code, str(outside), str(watched)])
    tracer.start()
    assert tracer.run() == 0
    got = sorted((e.path, e.extra.get("event")) for e in seen)
    a, b = str(watched / "a"), str(watched / "sub" / "b")
    expected = [(a, "write"), (a, "chown"), (a, "chmod"), (a, "unlink")]
    expected += [(b, "write"), (b, "chown"), (b, "chmod")]
    assert got == sorted(expected)
    # 2 x (2 opens + 2 fchown + 2 fchmod + 1 unlink) watched calls, every one decoded;
    # the opens' exit re-checks are not counted as decoded.
    assert tracer.stats.decoded >= 14
    assert tracer.stats.decoded == tracer.stats.syscall_stops
