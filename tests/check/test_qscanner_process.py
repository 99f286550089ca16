"""check.process: the subprocess helper every scanner runner uses (real processes)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from check.process import (
    ScannerFailedError,
    ScannerTimeoutError,
    check_finished,
    minimal_environment,
    run_process,
    start_scanner,
)
from securityhub.errors import ConfigurationError, ScanError
from tests.check.standin import running

PY = sys.executable


def run(tmp_path: Path, code: str, timeout: float = 10, **kwargs):
    return run_process(
        [PY, "-c", code],
        env=kwargs.pop("env", {"PATH": os.environ["PATH"]}),
        cwd=tmp_path,
        timeout=timeout,
        stdout_path=tmp_path / "out.log",
        stderr_path=tmp_path / "err.log",
        **kwargs,
    )


def test_exit_code_and_output_files(tmp_path):
    outcome = run(
        tmp_path, "import sys; print('hello'); print('oops', file=sys.stderr); sys.exit(3)"
    )
    assert outcome.returncode == 3 and not outcome.timed_out and outcome.killed_signal is None
    assert (tmp_path / "out.log").read_text() == "hello\n"
    assert outcome.stderr_tail() == "oops"
    assert outcome.stdout_bytes == 6 and not outcome.stdout_truncated


def test_environment_is_exactly_what_was_given(tmp_path):
    env = {"PATH": os.environ["PATH"], "ONLY_THIS": "1"}
    run(tmp_path, "import os, json; print(json.dumps(sorted(os.environ)))", env=env)
    names = json.loads((tmp_path / "out.log").read_text())
    assert set(names) - {"LC_CTYPE"} == {"PATH", "ONLY_THIS"}


def test_minimal_environment_keeps_proxies_not_credentials():
    parent = {
        "PATH": "/bin",
        "HTTPS_PROXY": "http://proxy:3128",
        "HOME": "/root",
        "AWS_SECRET_ACCESS_KEY": "x",
        "QUALYS_ACCESS_TOKEN": "y",
        "RANDOM": "z",
    }
    env = minimal_environment(parent, {"EXTRA": "1"})
    assert env == {
        "PATH": "/bin",
        "HTTPS_PROXY": "http://proxy:3128",
        "HOME": "/root",
        "EXTRA": "1",
    }


def test_stdin_is_closed(tmp_path):
    outcome = run(tmp_path, "import sys; print(repr(sys.stdin.read()))", timeout=5)
    assert outcome.returncode == 0 and (tmp_path / "out.log").read_text() == "''\n"


def test_output_is_capped_on_both_streams_without_blocking_the_child(tmp_path):
    code = (
        "import sys\n"
        "chunk = b'x' * 65536\n"
        "for _ in range(160):\n"
        "    sys.stdout.buffer.write(chunk); sys.stderr.buffer.write(chunk)\n"
    )
    outcome = run(tmp_path, code, output_cap=100_000)
    assert outcome.returncode == 0
    assert outcome.stdout_bytes == outcome.stderr_bytes == 160 * 65536
    assert (tmp_path / "out.log").stat().st_size == 100_000
    assert (tmp_path / "err.log").stat().st_size == 100_000
    assert outcome.stdout_truncated and outcome.stderr_truncated


def test_stragglers_are_killed_when_the_scanner_exits(tmp_path):
    # The child leaves a grandchild holding the pipes open, then exits.
    code = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
    )
    started = time.monotonic()
    outcome = run(tmp_path, code)
    assert time.monotonic() - started < 5  # did not wait for the grandchild
    assert outcome.returncode == 0
    grandchild = int((tmp_path / "out.log").read_text())
    # SIGKILL was sent before run_process returned; the kernel finishes the exit shortly.
    deadline = time.monotonic() + 2
    while running(grandchild) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not running(grandchild)  # it would sleep 60 s if nobody killed it


def test_timeout_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path):
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    outcome = run(tmp_path, code, timeout=0.5, kill_grace=0.3)
    assert outcome.timed_out and outcome.returncode is None
    assert outcome.killed_signal == signal.SIGKILL
    assert 0.7 <= outcome.duration < 4
    with pytest.raises(ScannerTimeoutError, match=r"timed out after 0\.5s"):
        check_finished("sleeper", outcome, 0.5)


def test_timeout_with_sigterm_honoured(tmp_path):
    outcome = run(tmp_path, "import time; time.sleep(60)", timeout=0.3, kill_grace=5)
    assert outcome.timed_out and outcome.killed_signal == signal.SIGTERM
    assert outcome.duration < 3


def test_death_by_signal_is_named(tmp_path):
    outcome = run(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    with pytest.raises(ScannerFailedError, match="killed by SIGKILL"):
        check_finished("victim", outcome, 10)


def test_start_failures(tmp_path):
    common = {"env": {"PATH": "/bin"}, "workdir": tmp_path, "timeout": 5}
    with pytest.raises(ConfigurationError, match="cannot run tool"):
        start_scanner("tool", [str(tmp_path / "missing")], **common)
    not_executable = tmp_path / "plain"
    not_executable.write_text("#!/bin/sh\n")
    with pytest.raises(ConfigurationError, match="cannot run tool"):
        start_scanner("tool", [str(not_executable)], **common)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x7fELF\x00\x00 not really")
    garbage.chmod(0o755)
    with pytest.raises(ScanError, match="cannot start tool"):
        start_scanner("tool", [str(garbage)], **common)
