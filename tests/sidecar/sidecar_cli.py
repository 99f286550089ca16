"""Run the real `containerscan sidecar run|attach` on a workload, for the end-to-end suites
(test_bypass.py, test_detections.py): the events it wrote and everything it printed.

In attach mode the workload is started first and waits for a "go" file (its last two
arguments are `--wait GO`), so that it acts only once the sidecar traces it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.reliability.sidecar_world import reap
from tests.sidecar.test_tracer import ROOT

CLI = [sys.executable, "-m", "check"]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of the sidecar and its workload: no policy from the environment, no
    ECS metadata, events only to the file, this tree on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONITORING_", "TRACING_"))}
    env.pop("ECS_CONTAINER_METADATA_URI_V4", None)
    env.update({"CONTAINERSCAN_EVENTS_STDOUT": "0", "CONTAINERSCAN_HEARTBEAT_SECONDS": "0",
                "PYTHONPATH": str(ROOT)})  # fmt: skip
    env.update(extra)
    return env


def read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def launch(  # noqa: PLR0917 - the policy, the output, the workload and how it runs
    policy: Path,
    events: Path,
    argv: list[str],
    env: dict[str, str],
    pass_fds: tuple[int, ...] = (),
    timeout: float = 300,
) -> tuple[list[dict], str]:
    """`sidecar run -- argv` to completion."""
    proc = subprocess.run(
        [*CLI, "sidecar", "run", "--policy", str(policy), "--events-file", str(events), "--",
         *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, pass_fds=pass_fds,
    )  # fmt: skip
    return read_events(events), proc.stdout + proc.stderr


def attach(  # noqa: PLR0917 - as launch, plus the go file and attach's options
    policy: Path,
    events: Path,
    argv: list[str],
    env: dict[str, str],
    go: Path,
    pass_fds: tuple[int, ...] = (),
    timeout: float = 300,
    options: tuple[str, ...] = (),
) -> tuple[list[dict], str]:
    """Start `argv --wait GO`, `sidecar attach --pid` it, let it go, SIGTERM the sidecar
    once the workload has exited."""
    app = subprocess.Popen(
        [*argv, "--wait", str(go)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, pass_fds=pass_fds,
    )  # fmt: skip
    sidecar = subprocess.Popen(
        [*CLI, "sidecar", "attach", *options, "--pid", str(app.pid), "--policy", str(policy),
         "--events-file", str(events)],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while f"TracerPid:\t{sidecar.pid}\n" not in Path(f"/proc/{app.pid}/status").read_text():
            assert time.monotonic() < deadline and sidecar.poll() is None, "never attached"
            time.sleep(0.01)
        go.touch()
        out, _ = app.communicate(timeout=timeout)
        sidecar.send_signal(signal.SIGTERM)
        _, err = sidecar.communicate(timeout=60)
    finally:
        reap(app, sidecar)
    return read_events(events), out + err
