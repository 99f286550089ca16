"""Process stops made cheaper (issue 15, attach `--seccomp` on the file-heavy workload): an
exec's environment is read only when a rule needs it, execvp's probes along PATH are
dropped before argv is read, and a process met at its fork event takes its image and root
from its parent instead of /proc.

What the answers are checked against: the kernel's own execve (which paths fail with
ENOENT), real memory of this process, real ptrace runs of the real Tracer (a Python parent
searching PATH, a chroot(2)'ed parent forking a child that execs inside the jail) in wrap
and attach `--seccomp` modes, and the real Engine's policy loading.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.decode import Decoder, Process
from sidecar.engine import Engine
from sidecar.policy import load_policies
from sidecar.syscalls import X86_64
from tests.sidecar.test_tracer import ROOT, _wait_for, events, harness, run
from tests.sidecar.test_tracer_attach import start_attach

EXAMPLES = ROOT / "policies" / "examples"
AT = -100 & ((1 << 64) - 1)  # AT_FDCWD as a register holds it
WATCH = "execve,execveat,connect"


class Mem:
    """ctypes buffers kept alive; their addresses are what a tracee's registers would hold."""

    def __init__(self) -> None:
        self.keep: list[object] = []

    def str(self, text: str) -> int:
        buf = ctypes.create_string_buffer(text.encode())
        self.keep.append(buf)
        return ctypes.addressof(buf)

    def array(self, items: list[str]) -> int:
        ptrs = (ctypes.c_uint64 * (len(items) + 1))(*[self.str(i) for i in items], 0)
        self.keep.append(ptrs)
        return ctypes.addressof(ptrs)


@pytest.fixture
def me():
    proc = Process(os.getpid(), os.getppid(), "/usr/bin/app")
    yield proc
    proc.close()


def _execve(decoder: Decoder, proc: Process, mem: Mem, path: str, env: list[str]):
    nr = X86_64.number("execve")
    args = (mem.str(path), mem.array([path, "-x"]), mem.array(env), 0, 0, 0)
    return decoder.decode(proc, proc.pid, nr, args)


def _kernel_execve_errno(path: str) -> int:
    """0 when the kernel runs `path` (a program that exits 0 at once), else execve's errno."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child execs or reports why not
        code = 0
        try:
            os.execv(path, [path])
        except OSError as exc:
            code = exc.errno or 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_missing_program_decodes_to_nothing_exactly_when_the_kernel_says_enoent(
    tmp_path: Path, me: Process
) -> None:
    """execvp's probes along PATH: the tracer's decoder (exec_probes=False) answers None
    where execve fails with ENOENT, and decodes every exec that can run."""
    true = shutil.which("true")
    assert true is not None
    (tmp_path / "dir").mkdir()
    (tmp_path / "true-link").symlink_to(true)  # a symlink to a real program
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "dirlink").symlink_to("/usr/bin")  # a directory symlink on the way
    cases = [
        "/nonexistent-dir/prog",
        str(tmp_path / "missing"),
        str(tmp_path / "dangling"),
        str(tmp_path / "true-link"),
        str(tmp_path / "dirlink" / "true"),
        str(tmp_path / "dirlink" / "no-such-program"),
        "/bin/true",  # merged /usr: /bin is a symlink
        true,
    ]
    mem = Mem()
    tracer_decoder = Decoder(X86_64, exec_probes=False)
    for path in cases:
        kernel = _kernel_execve_errno(path)
        event = _execve(tracer_decoder, me, mem, path, ["A=1"])
        assert (event is None) == (kernel == errno.ENOENT), (path, kernel, event)
        if event is not None:
            assert event.argv == (path, "-x")
            assert os.path.realpath(event.path) == os.path.realpath(path)
    # The symlink still gives its link names (what a rule on the invoked name matches).
    linked = _execve(tracer_decoder, me, mem, str(tmp_path / "true-link"), [])
    assert linked is not None and linked.aliases[0] == str(tmp_path / "true-link")
    # The default decoder (tests, tools) still decodes a probe.
    assert _execve(Decoder(X86_64), me, mem, "/nonexistent-dir/prog", []) is not None


def test_the_environment_is_read_only_when_asked(me: Process) -> None:
    mem = Mem()
    env = ["LD_PRELOAD=/tmp/x.so", "PATH=/usr/bin", "SECRET=value"]
    asked = _execve(Decoder(X86_64), me, mem, "/bin/true", env)
    assert asked is not None and asked.env == ("LD_PRELOAD", "PATH", "SECRET")
    not_asked = _execve(Decoder(X86_64, exec_env=False), me, mem, "/bin/true", env)
    assert not_asked is not None and not_asked.env == ()
    # The same at PTRACE_EVENT_EXEC (attach mode without syscall stops), from /proc.
    assert Decoder(X86_64).exec_event(me, me.pid).env
    assert Decoder(X86_64, exec_env=False).exec_event(me, me.pid).env == ()


def test_the_engine_asks_for_the_environment_only_with_an_env_rule() -> None:
    minimal = Engine(load_policies([EXAMPLES / "minimal-policy.yaml"])).requirements()
    assert minimal.exec_env is False
    # The starter policy's LD_PRELOAD rule (tests/sidecar/test_detections.py runs it).
    starter = Engine(load_policies([EXAMPLES / "container-baseline.yaml"])).requirements()
    assert starter.exec_env is True


WORKLOAD = """
import os, subprocess, sys
jail, go = sys.argv[1], sys.argv[2]
while go != "-" and not os.path.exists(go):
    pass
# execvp along PATH: two directories that do not exist, then the one holding the program
subprocess.run(["probe-target"], env={"PATH": f"/nonexistent-a:/nonexistent-b:{jail}/bin"},
               check=True)
os.chroot(jail)
os.chdir("/")
pid = os.fork()  # the child's root is the jail, inherited from its parent
if pid == 0:
    os.execv("/bin/forbidden", ["true"])  # a static busybox: its `true` applet
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _jail(tmp: Path) -> Path:
    busybox = shutil.which("busybox")
    true = shutil.which("true")
    if busybox is None or true is None:
        pytest.skip("needs a static busybox (sh scripts/system-deps.sh test)")
    if os.geteuid() != 0:
        pytest.skip("chroot(2) needs root")
    jail = tmp / "jail"
    (jail / "bin").mkdir(parents=True)
    shutil.copy(true, jail / "bin" / "probe-target")
    shutil.copy(busybox, jail / "bin" / "forbidden")
    return jail


def _assert_execs(tmp: Path, jail: Path) -> None:
    execs = [ev["path"] for ev in events(tmp) if ev["kind"] == "exec"]
    # Each probe decoded to nothing; the program PATH found is judged once.
    assert not [p for p in execs if "nonexistent" in (p or "")], execs
    assert execs.count(str(jail / "bin" / "probe-target")) == 1, execs
    # The forked child's exec inside the jail is judged: resolved against the sidecar's
    # root, /bin/forbidden would be a missing file (a probe) and dropped.
    assert [p for p in execs if (p or "").endswith("/forbidden")], execs


@pytest.mark.ptrace
def test_wrap_probes_and_a_forked_child_in_a_chroot(tmp_path: Path) -> None:
    jail = _jail(tmp_path)
    argv = [sys.executable, "-c", WORKLOAD, str(jail), "-"]
    done = run(tmp_path, harness(tmp_path, "run", "--", *argv, watch=WATCH))
    assert done.returncode == 0, done.stderr
    _assert_execs(tmp_path, jail)


@pytest.mark.ptrace
def test_attach_seccomp_probes_and_a_forked_child_in_a_chroot(tmp_path: Path) -> None:
    jail = _jail(tmp_path)
    go = tmp_path / "go"
    app = subprocess.Popen([sys.executable, "-c", WORKLOAD, str(jail), str(go)])
    tracer = start_attach(tmp_path, "--pid", str(app.pid), watch=WATCH, opts=("--seccomp",))
    try:
        go.touch()
        assert app.wait(timeout=30) == 0
        assert tracer.wait(timeout=15) == 0  # its only process exited
    finally:
        for proc in (app, tracer):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
    _wait_for(lambda: bool(events(tmp_path)))
    _assert_execs(tmp_path, jail)


@pytest.mark.ptrace
def test_the_image_after_an_exec_names_the_new_program(tmp_path: Path) -> None:
    """After an exec the executable is read when first needed (Process.exe): the opens the
    new program makes carry its image, in a forked child and in a process that exec'd in
    place, and the exec's own event still names its caller."""
    cat = shutil.which("cat")
    assert cat is not None
    target = tmp_path / "target"
    target.write_text("x")
    script = f"cat {target} >/dev/null; exec cat {target}"
    argv = harness(
        tmp_path, "run", "--", "/bin/sh", "-c", script, watch="execve,openat", opts=("--open-read",)
    )
    done = run(tmp_path, argv)
    assert done.returncode == 0, done.stderr
    opens = [ev for ev in events(tmp_path) if ev["kind"] == "open" and ev["path"] == str(target)]
    assert len(opens) == 2 and {ev["exe"] for ev in opens} == {os.path.realpath(cat)}, opens
    execs = [ev for ev in events(tmp_path) if ev["kind"] == "exec" and ev["path"]]
    cats = [ev for ev in execs if ev["path"] == os.path.realpath(cat)]
    assert len(cats) == 2 and {ev["exe"] for ev in cats} == {os.path.realpath("/bin/sh")}, execs


@pytest.mark.ptrace
@pytest.mark.parametrize("spelling", ["/proc/self/fd/{fd}", "//proc/self/fd/{fd}"])
def test_an_exec_through_the_tracees_own_fd_is_judged(tmp_path: Path, spelling: str) -> None:
    """`/proc/self` is the tracee to the kernel and the sidecar to the sidecar: an fd only
    the tracee has must not look like a missing program (a probe, dropped)."""
    true = shutil.which("true")
    assert true is not None
    program = tmp_path / "program"
    shutil.copy(true, program)
    code = (
        "import os\n"
        f"os.dup2(os.open({str(program)!r}, os.O_RDONLY), 987)\n"
        f"os.execv({spelling.format(fd=987)!r}, ['program'])\n"
    )
    argv = harness(tmp_path, "run", "--", sys.executable, "-c", code, watch=WATCH)
    done = run(tmp_path, argv)
    assert done.returncode == 0, done.stderr
    execs = [ev["path"] for ev in events(tmp_path) if ev["kind"] == "exec"]
    assert str(program) in execs, execs


def test_an_adopted_thread_group_and_parent_in_one_status_read() -> None:
    """`_adopt` (a child's first stop before its parent's fork event) reads Tgid and PPid
    from one /proc/TID/status, as proc(5) gives them (checked against ps)."""
    from sidecar.tracer import _status_fields

    child = subprocess.Popen(["sleep", "5"])
    try:
        found = _status_fields(child.pid, (b"Tgid:", b"PPid:"))
        ps = subprocess.run(
            ["ps", "-o", "ppid=", "-p", str(child.pid)], capture_output=True, text=True
        )
        assert found == {b"Tgid:": child.pid, b"PPid:": int(ps.stdout)}
    finally:
        child.kill()
        child.wait()
    assert _status_fields(child.pid, (b"Tgid:", b"PPid:")) == {}
