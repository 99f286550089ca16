"""`containerscan sidecar run|attach` end to end: real CLI, real Engine and policies, real
ptrace (in a subprocess: the tracer forks and waits for any child)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from check.cli import cli
from tests.sidecar.sidecar_cli import cli_env, read_events
from tests.sidecar.test_context import serve_metadata
from tests.sidecar.test_tracer import ROOT, WORKLOADS, _wait_for, fake_pip

CLI = [sys.executable, "-m", "check"]
MINIMAL = str(ROOT / "policies" / "examples" / "minimal-policy.yaml")
SOFTWARE = str(ROOT / "policies" / "examples" / "software-detection-policy.yaml")
FIM = str(ROOT / "policies" / "examples" / "fim-policy.yaml")


def block_policy(tmp: Path, protected: Path) -> Path:
    policy = tmp / "block.yaml"
    policy.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: security.qualys.com/v1
            kind: TracingPolicy
            metadata:
              name: block-test
            spec:
              fileIntegrityMonitoring:
                enabled: true
                paths:
                  - path: {protected}
                    recursive: true
                    events: [write]
                    severity: critical
                    action: block
              performance:
                batchSize: 1
                batchTimeout: 0.1
            """
        )
    )
    return policy


def test_help_is_lazy() -> None:
    """The command module imports only click and the standard library."""
    code = (
        "import sys, sidecar.commands; "
        "bad = [m for m in ('ptrace', 'sidecar.tracer', 'sidecar.engine', 'yaml', 'boto3') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr
    result = CliRunner().invoke(cli, ["sidecar", "--help"])
    assert result.exit_code == 0
    assert "run" in result.output and "attach" in result.output


def test_attach_needs_a_target() -> None:
    result = CliRunner().invoke(cli, ["sidecar", "attach"])
    assert result.exit_code == 2
    assert "--pid N, --match REGEX or --all" in result.output
    result = CliRunner().invoke(cli, ["sidecar", "attach", "--match", "(["])
    assert result.exit_code == 2


@pytest.mark.ptrace
def test_run_software_install_through_the_real_engine(tmp_path: Path) -> None:
    env = cli_env(**{k: v for k, v in fake_pip(tmp_path).items() if k == "PATH"})
    events_file = tmp_path / "events.jsonl"
    proc = subprocess.run(
        [
            *CLI,
            "sidecar",
            "run",
            "--policy",
            SOFTWARE,
            "--events-file",
            str(events_file),
            "--",
            "/bin/sh",
            "-c",
            "pip install requests; exit 3",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    assert "pip install requests" in proc.stdout  # the workload's own output passes through
    evs = read_events(events_file)
    software = [e for e in evs if e["category"] == "software"]
    assert software, evs
    assert software[0]["package_manager"] == "pip"
    assert software[0]["process"] and software[0]["pid"] > 0
    assert (events_file.stat().st_mode & 0o777) == 0o600


@pytest.mark.ptrace
def test_run_block_through_the_real_engine(tmp_path: Path) -> None:
    protected = tmp_path / "protected"
    protected.mkdir()
    events_file = tmp_path / "events.jsonl"
    script = (
        f"{sys.executable} -c \"open('{protected}/x', 'w')\"; echo offender=$?; "
        f"echo fine > {tmp_path}/allowed; echo parent alive"
    )
    proc = subprocess.run(
        [
            *CLI,
            "sidecar",
            "run",
            "--policy",
            str(block_policy(tmp_path, protected)),
            "--events-file",
            str(events_file),
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "offender=137" in proc.stdout and "parent alive" in proc.stdout
    assert not (protected / "x").exists()
    assert (tmp_path / "allowed").read_text() == "fine\n"
    blocks = [e for e in read_events(events_file) if e["action"] == "block"]
    assert len(blocks) == 1 and blocks[0]["path"] == str(protected / "x")


@pytest.mark.ptrace
def test_invalid_policy_stops_before_the_workload_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(MINIMAL).read_text().replace("processExecution:", "procesExecution:"))
    marker = tmp_path / "ran"
    proc = subprocess.run(
        [*CLI, "sidecar", "run", "--policy", str(bad), "--", "touch", str(marker)],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "procesExecution" in proc.stderr
    assert not marker.exists()


@pytest.mark.ptrace
def test_run_minimal_policy_with_many_processes(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            *CLI,
            "sidecar",
            "run",
            "--policy",
            MINIMAL,
            "--",
            sys.executable,
            str(WORKLOADS / "busy.py"),
            "100",
            "50",
        ],
        cwd=ROOT,
        env=cli_env(CONTAINERSCAN_HEARTBEAT_SECONDS="0.2"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "busy done 100 50" in proc.stdout
    beats = [json.loads(x) for x in proc.stderr.splitlines() if '"final heartbeat"' in x]
    assert beats and beats[0]["processes"] >= 100 and beats[0]["threads"] == 0


@pytest.mark.ptrace
def test_attach_cli_fim_events_then_sigterm(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    watched = tmp_path / "etc"
    watched.mkdir()
    app = subprocess.Popen(
        [sys.executable, str(WORKLOADS / "sleeper.py"), str(counter), str(watched / "conf")]
    )
    policy = tmp_path / "fim.yaml"
    policy.write_text(
        block_policy(tmp_path, watched).read_text().replace("action: block", "action: alert")
    )
    events_file = tmp_path / "events.jsonl"
    sidecar = subprocess.Popen(
        [
            *CLI,
            "sidecar",
            "attach",
            "--pid",
            str(app.pid),
            "--policy",
            str(policy),
            "--events-file",
            str(events_file),
        ],
        cwd=ROOT,
        env=cli_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(
            lambda: any(e.get("path") == str(watched / "conf") for e in read_events(events_file)),
            timeout=20,
        )
        sidecar.send_signal(signal.SIGTERM)
        assert sidecar.wait(timeout=15) == 0
        assert app.poll() is None
        before = counter.read_text()
        _wait_for(lambda: counter.read_text() != before)
    finally:
        sidecar.kill()
        app.kill()
        app.wait()


@pytest.mark.ptrace
def test_attach_to_a_traced_process_explains_the_remedy(tmp_path: Path) -> None:
    """EPERM from ptrace: a clear TracerError naming SYS_PTRACE, pidMode and ptrace_scope."""
    holder = subprocess.Popen(
        [*CLI, "sidecar", "run", "--policy", MINIMAL, "--", "sleep", "30"],
        cwd=ROOT,
        env=cli_env(),
        stderr=subprocess.DEVNULL,
    )
    try:

        def sleeping_child() -> int | None:
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        stat = Path(f"/proc/{entry}/stat").read_text()
                    except OSError:
                        continue
                    if int(stat.rsplit(")", 1)[1].split()[1]) != holder.pid:
                        continue
                    try:
                        status = Path(f"/proc/{entry}/status").read_text()
                    except OSError:
                        continue
                    if "(sleep)" in stat and "TracerPid:\t0\n" not in status:
                        return int(entry)  # the traced workload, not a helper like ldconfig
            return None

        _wait_for(lambda: sleeping_child() is not None)
        target = sleeping_child()
        proc = subprocess.run(
            [*CLI, "sidecar", "attach", "--pid", str(target), "--policy", MINIMAL],
            cwd=ROOT,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1
        assert "cannot trace pid" in proc.stderr
        assert "SYS_PTRACE" in proc.stderr and "pidMode" in proc.stderr
        assert "ptrace_scope" in proc.stderr
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait(timeout=15)


@pytest.mark.ptrace
def test_run_reads_the_task_context_and_survives_without_it() -> None:
    argv = [*CLI, "sidecar", "run", "--policy", MINIMAL, "--", "/bin/sh", "-c", "exit 4"]
    with serve_metadata() as (url, hits):
        proc = subprocess.run(
            argv,
            cwd=ROOT,
            env=cli_env(ECS_CONTAINER_METADATA_URI_V4=url),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 4, proc.stderr
    assert '"ECS task context"' in proc.stderr and "shop-api" in proc.stderr
    assert any(h.endswith("/task") for h in hits)
    # An endpoint that does not answer: a warning, and the workload still runs.
    proc = subprocess.run(
        argv,
        cwd=ROOT,
        env=cli_env(ECS_CONTAINER_METADATA_URI_V4="http://127.0.0.1:9/v4/x"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 4
    assert "no ECS task context" in proc.stderr


def test_heartbeat_interval_setting() -> None:
    from securityhub.errors import ConfigurationError
    from sidecar.monitor import DEFAULT_HEARTBEAT_SECONDS, heartbeat_seconds

    assert heartbeat_seconds({}) == DEFAULT_HEARTBEAT_SECONDS
    assert heartbeat_seconds({"CONTAINERSCAN_HEARTBEAT_SECONDS": "0.5"}) == 0.5
    for bad in ("abc", "-1"):
        with pytest.raises(ConfigurationError, match="HEARTBEAT"):
            heartbeat_seconds({"CONTAINERSCAN_HEARTBEAT_SECONDS": bad})
    proc = subprocess.run(
        [*CLI, "sidecar", "run", "--policy", MINIMAL, "--", "true"],
        cwd=ROOT,
        env=cli_env(CONTAINERSCAN_HEARTBEAT_SECONDS="abc"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "not a number of seconds" in proc.stderr
