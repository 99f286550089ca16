"""Small pieces of the tracer that need no ptrace: /proc parsing, exit codes, exclusions."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from securityhub.errors import TracerError
from sidecar import tracer as tr
from sidecar.events import ALLOW, Requirements
from sidecar.syscalls import AARCH64, X86_64, native_arch
from tests.sidecar.test_tracer import _wait_for


def test_exit_code_follows_the_shell_convention() -> None:
    for argv, expected in (
        (["/bin/sh", "-c", "exit 5"], 5),
        (["/bin/sh", "-c", "kill -KILL $$"], 128 + signal.SIGKILL),
        (["/bin/true"], 0),
    ):
        pid = os.spawnv(os.P_NOWAIT, argv[0], argv)
        _, status = os.waitpid(pid, 0)
        assert tr._exit_code(status) == expected


def test_ppid_survives_odd_process_names(tmp_path: Path) -> None:
    odd = tmp_path / "we) ird (name"
    shutil.copy("/bin/sleep", odd)
    proc = subprocess.Popen([str(odd), "5"])
    try:
        assert tr._ppid(proc.pid) == os.getpid()
        assert tr._tgid(proc.pid) == proc.pid
        assert tr._tracer_pid(proc.pid) == 0
        _wait_for(lambda: tr._cmdline(proc.pid) != "")  # empty while exec is completing
        assert tr._cmdline(proc.pid) == f"{odd} 5"
    finally:
        proc.kill()
        proc.wait()
    assert tr._ppid(999_999_999) == 0
    assert tr._tgid(999_999_999) is None


def test_self_and_ancestors_are_excluded() -> None:
    excluded = tr._self_and_ancestors()
    assert os.getpid() in excluded
    assert os.getppid() in excluded
    pid = os.getppid()
    while pid > 1:
        pid = tr._ppid(pid)
        assert pid in excluded or pid == 0


def test_tracer_refuses_a_foreign_architecture_and_an_empty_command() -> None:
    other = AARCH64 if native_arch() is X86_64 else X86_64
    with pytest.raises(TracerError, match="cannot trace"):
        tr.Tracer(Requirements(frozenset({"execve"})), lambda e: ALLOW, lambda e: None, arch=other)
    tracer = tr.Tracer(Requirements(frozenset({"execve"})), lambda e: ALLOW, lambda e: None)
    with pytest.raises(TracerError, match="no command"):
        tracer.launch([])
    with pytest.raises(TracerError, match="nothing launched"):
        tracer.start()


def test_watched_numbers_come_from_the_native_table() -> None:
    req = Requirements(frozenset({"execve", "open", "connect", "nosuchcall"}))
    tracer = tr.Tracer(req, lambda e: ALLOW, lambda e: None)
    arch = native_arch()
    expected = {arch.number(n) for n in ("execve", "open", "connect") if arch.has(n)}
    assert tracer.watched == frozenset(expected)


def test_attach_refuses_the_sidecar_itself() -> None:
    tracer = tr.Tracer(
        Requirements(frozenset({"execve"}), process_only=True), lambda e: ALLOW, lambda e: None
    )
    with pytest.raises(TracerError, match="refusing"):
        tracer.attach([os.getpid()])
    with pytest.raises(TracerError, match="no process"):
        tracer.attach([999_999_999])
