"""The quick start's local environment: a real registry and moto's server, and their cleanup."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from check.quickstart.local import (
    REGISTRY_BINARY,
    LocalEnvironment,
    LocalEnvironmentError,
    LocalRegistry,
    SignalGuard,
)

needs_registry = pytest.mark.skipif(
    shutil.which(REGISTRY_BINARY) is None,
    reason=f"{REGISTRY_BINARY} is not installed (apt-get install docker-registry)",
)


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_gone(pid: int, port: int, seconds: float = 10) -> bool:
    """The process and its listening socket gone (a Go program's threads exit one by one)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid) and not port_open("127.0.0.1", port):
            return True
        time.sleep(0.05)
    return False


@needs_registry
def test_registry_starts_answers_and_stops(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "reg")
    host = registry.start()
    assert registry.process is not None
    pid = registry.process.pid
    with urllib.request.urlopen(f"http://{host}/v2/", timeout=5) as response:
        assert response.status == 200
    assert registry.port is not None and port_open("127.0.0.1", registry.port)
    registry.stop()
    assert not port_open("127.0.0.1", registry.port)
    assert not alive(pid)
    registry.stop()  # idempotent


def test_registry_binary_missing_is_a_clear_error(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path, binary=None)
    registry.binary = None
    with pytest.raises(LocalEnvironmentError) as raised:
        registry.start()
    assert REGISTRY_BINARY in str(raised.value)
    assert "apt" in raised.value.remediation or "system-deps" in raised.value.remediation


def test_registry_that_exits_at_once_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "broken-registry"
    fake.write_text("#!/bin/sh\necho 'configuration error: storage driver' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(LocalEnvironmentError) as raised:
        LocalRegistry(tmp_path / "reg", binary=str(fake)).start()
    assert "storage driver" in str(raised.value)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_become_keyboard_interrupt_while_inside(signum: int) -> None:
    before = signal.getsignal(signum)
    with pytest.raises(KeyboardInterrupt), SignalGuard():
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises before this ends
    assert signal.getsignal(signum) is before


def test_deferred_signal_is_raised_when_the_block_ends() -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), SignalGuard() as guard:
        with guard.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler has run by now and held the signal
            reached.append("end of the block")
        reached.append("after the block")
    assert reached == ["end of the block"]
    with SignalGuard() as guard, guard.deferred(raise_pending=False):
        os.kill(os.getpid(), signal.SIGTERM)  # dropped: cleanup must not be cut short
        time.sleep(0.1)


def test_run_kills_and_reaps_the_child_on_interrupt(tmp_path: Path) -> None:
    local = LocalEnvironment()
    started = tmp_path / "started"
    script = f"import pathlib, time; pathlib.Path({str(started)!r}).touch(); time.sleep(60)"

    def interrupt_soon() -> None:
        while not started.exists():
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=interrupt_soon, daemon=True).start()
    with local.signals, pytest.raises(KeyboardInterrupt):
        local.run([sys.executable, "-c", script], dict(os.environ), timeout=30)
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    for pid in children:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert str(started).encode() not in cmdline, "the child was left running"


def test_run_timeout_is_a_clear_error_and_kills_the_child() -> None:
    local = LocalEnvironment()
    with local.signals, pytest.raises(LocalEnvironmentError, match="did not finish within"):
        local.run([sys.executable, "-c", "import time; time.sleep(30)"], dict(os.environ),
                  timeout=0.5)


@needs_registry
def test_environment_cleans_up_after_an_error() -> None:
    pytest.importorskip("moto")
    with pytest.raises(RuntimeError), LocalEnvironment() as local:
        assert local.workdir is not None and local.workdir.is_dir()
        assert local.registry is not None and local.registry.process is not None
        assert local.endpoint is not None
        workdir, pid = local.workdir, local.registry.process.pid
        registry_port = local.registry.port
        emulator_port = int(local.endpoint.rsplit(":", 1)[1])
        with urllib.request.urlopen(f"{local.endpoint}/moto-api/", timeout=5) as response:
            assert response.status == 200
        raise RuntimeError("a step failed")
    assert not workdir.exists()
    assert not alive(pid)
    assert not port_open("127.0.0.1", registry_port)
    assert not port_open("127.0.0.1", emulator_port)


@needs_registry
def test_registry_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a SIGKILLed quick start leaves no registry behind."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from check.quickstart.local import LocalRegistry
        registry = LocalRegistry(Path({str(tmp_path / 'reg')!r}))
        registry.start()
        print(registry.process.pid, registry.port, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid, port = (int(x) for x in parent.stdout.readline().split())
        assert alive(pid) and port_open("127.0.0.1", port)
        parent.kill()
        parent.wait(timeout=10)
        assert wait_gone(pid, port), "the registry outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
