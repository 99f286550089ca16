"""SIGTERM at the moment the workload exits (what ECS does when a task stops) must not lose
the events the sidecar saw: the pipeline is flushed before the sidecar exits, in both modes.

The events are held back by a long batchTimeout, so they reach the events file only if the
sidecar's exit path flushes them. Each mode is run many times with the SIGTERM sent at
different moments around the workload's exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.reliability.sidecar_world import CLI, ROOT, cli_env, counted, read_jsonl, reap

pytestmark = [pytest.mark.ptrace, pytest.mark.slow]
EXECS = 5
# Delays (seconds) between the workload's "done" marker and the SIGTERM: at once, within the
# exit, and after it (while the sidecar is flushing or about to).
DELAYS = (0.0, 0.0, 0.001, 0.003, 0.01, 0.03, 0.1)


def _policy(tmp: Path) -> Path:
    path = tmp / "hold.yaml"
    path.write_text(textwrap.dedent("""\
        apiVersion: security.qualys.com/v1
        kind: TracingPolicy
        metadata:
          name: hold-back
        spec:
          processExecution:
            enabled: true
            trackedExecutables:
              - {name: "true", severity: low, action: alert}
          performance:
            batchSize: 1000
            batchTimeout: 600
        """))  # fmt: skip
    return path


def _script(marker: Path, go: Path | None = None) -> str:
    wait = f"while [ ! -e {go} ]; do sleep 0.01; done; " if go else ""
    return wait + f"for i in $(seq {EXECS}); do /bin/true $i; done; touch {marker}; exit 0"


def _wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.0005)


def _traced_by(pid: int, tracer: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        if f"TracerPid:\t{tracer}\n" in status:
            return
        time.sleep(0.01)
    raise AssertionError(f"pid {pid} was never traced by {tracer}")


@pytest.mark.parametrize("delay", DELAYS)
def test_sigterm_as_an_attached_app_exits_loses_no_event(tmp_path: Path, delay: float) -> None:
    marker, go, events = tmp_path / "done", tmp_path / "go", tmp_path / "events.jsonl"
    app = subprocess.Popen(["/bin/sh", "-c", _script(marker, go)])
    sidecar = subprocess.Popen(
        [*CLI, "sidecar", "attach", "--pid", str(app.pid), "--policy", str(_policy(tmp_path)),
         "--events-file", str(events)],
        cwd=ROOT, env=cli_env(), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _traced_by(app.pid, sidecar.pid)
        go.touch()
        _wait_for(marker)
        time.sleep(delay)
        sidecar.send_signal(signal.SIGTERM)
        app.wait(30)
        _, err = sidecar.communicate(timeout=60)
    finally:
        reap(app, sidecar)
    assert sidecar.returncode == 0, err[-2000:]
    assert counted(read_jsonl(events), rule="process:true") == EXECS, err[-2000:]


@pytest.mark.parametrize("delay", DELAYS)
def test_sigterm_as_a_launched_workload_exits_loses_no_event(tmp_path: Path, delay: float) -> None:
    marker, events = tmp_path / "done", tmp_path / "events.jsonl"
    sidecar = subprocess.Popen(
        [*CLI, "sidecar", "run", "--policy", str(_policy(tmp_path)), "--events-file",
         str(events), "--", "/bin/sh", "-c", _script(marker)],
        cwd=ROOT, env=cli_env(), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(marker)
        time.sleep(delay)
        sidecar.send_signal(signal.SIGTERM)
        _, err = sidecar.communicate(timeout=60)
    finally:
        reap(sidecar)
    # The workload exited 0 or was ended by the forwarded SIGTERM: either is its status.
    assert sidecar.returncode in (0, 128 + signal.SIGTERM), err[-2000:]
    assert counted(read_jsonl(events), rule="process:true") == EXECS, err[-2000:]
    assert os.path.exists(marker)
