"""What the sidecar stress tests share: a storm policy, the CLI, counting, memory polling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "check"]
STORM = [sys.executable, "-m", "tests.reliability.storm"]
CLOSED_PORT = 9  # discard: nothing listens on 127.0.0.2, the connect is refused at once

# Figures for the "reliability figures" terminal summary (see conftest.py).
FIGURES: dict[str, Any] = {}


class Gateway:
    """The Qualys gateway stand-in on loopback: 503 while `up` is clear, else 200.

    Counts the events it accepted and the posts it refused; with `record`, keeps every
    accepted request (path, headers, body) for the secret-leak checks.
    """

    def __init__(self, *, record: bool = False, up: bool = True) -> None:
        self.up = threading.Event()
        if up:
            self.up.set()
        self.record = record
        self.requests: list[dict[str, Any]] = []
        self.accepted = 0
        self.refused = 0
        self.lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not gateway.up.is_set():
                    with gateway.lock:
                        gateway.refused += 1
                    self._answer(503)
                    return
                events = len(json.loads(body)["events"])
                with gateway.lock:
                    gateway.accepted += events
                    if gateway.record:
                        gateway.requests.append({"path": self.path,
                                                 "headers": dict(self.headers.items()),
                                                 "body": body.decode("utf-8", "replace")})  # fmt: skip
                self._answer(200)

            def _answer(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"


@contextmanager
def serving(gateway: Gateway) -> Iterator[Gateway]:
    """Run `gateway` for the duration of the block."""
    gateway.thread.start()
    try:
        yield gateway
    finally:
        gateway.server.shutdown()
        gateway.server.server_close()


def storm_policy(tmp: Path, watched: Path, *, block: Path | None = None,
                 capture_args: bool = True) -> Path:  # fmt: skip
    """execve (`true` and python tracked) + connect (outside the allowlist) + write opens."""
    python = Path(sys.executable).name
    fim_block = ""
    if block is not None:
        fim_block = f"""
              - path: {block}
                recursive: true
                events: [write]
                severity: critical
                action: block"""
    policy = tmp / "storm.yaml"
    policy.write_text(textwrap.dedent(f"""\
        apiVersion: security.qualys.com/v1
        kind: TracingPolicy
        metadata:
          name: storm
        spec:
          processExecution:
            enabled: true
            trackedExecutables:
              - name: "true"
                severity: low
                action: alert
                captureArgs: {str(capture_args).lower()}
              - name: {python}
                severity: low
                action: alert
                captureArgs: {str(capture_args).lower()}
          networkMonitoring:
            enabled: true
            outboundConnections:
              allowlist: [10.0.0.0/8]
              severity: low
              action: log
          fileIntegrityMonitoring:
            enabled: true
            paths:
              - path: {watched}
                recursive: true
                events: [write]
                severity: medium
                action: alert{fim_block}
          performance:
            samplingRate: 1.0
            batchSize: 100
            batchTimeout: 0.2
        """))  # fmt: skip
    return policy


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MONITORING_", "TRACING_", "QUALYS_"))}  # fmt: skip
    env.pop("ECS_CONTAINER_METADATA_URI_V4", None)
    env.update({"CONTAINERSCAN_EVENTS_STDOUT": "0", "CONTAINERSCAN_HEARTBEAT_SECONDS": "0",
                "PYTHONPATH": str(ROOT)})  # fmt: skip
    env.update(extra)
    return env


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def final_heartbeat(stderr: str) -> dict[str, Any]:
    beats = [json.loads(x) for x in stderr.splitlines() if '"final heartbeat"' in x]
    assert beats, stderr[-3000:]
    return beats[-1]


def counted(events: list[dict[str, Any]], **match: Any) -> int:
    """Events matching every field, aggregated repeats counted by their `count`."""
    return sum(int(e.get("count", 1)) for e in events
               if all(e.get(k) == v for k, v in match.items()))  # fmt: skip


class PeakMemory:
    """Polls /proc/<pid>/status VmHWM (the peak resident set) until the process is gone."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                text = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            if "State:\tZ" in text:
                return
            time.sleep(self._interval)

    def stop(self) -> int:
        self._thread.join(5)
        return self.peak_kb


def tagged_processes(tag: str) -> list[int]:
    """Live processes whose environment holds STORM_TAG=tag (leftovers of a workload)."""
    found = []
    needle = f"STORM_TAG={tag}".encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def zombie_children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if stat[0] == "Z" and int(stat[1]) == parent:
                found.append(int(entry))
    return found


def run_sidecar(args: list[str], env: dict[str, str], timeout: float = 120,
                ) -> tuple[subprocess.CompletedProcess[str], int]:  # fmt: skip
    """`containerscan sidecar ...` to completion; (the result, the sidecar's peak RSS in KB)."""
    proc = subprocess.Popen([*CLI, "sidecar", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    memory = PeakMemory(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), memory.stop()


def reap(*procs: subprocess.Popen[str]) -> None:
    """Kill and wait for whichever of the processes a test started is still running."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
