"""A wrong AWS_ENDPOINT_URL ends the command in seconds, as a configuration error (exit 2).

Real subprocesses against real sockets: a loopback port nothing listens on (connection
refused) and a name under `.invalid`, which RFC 2606 reserves so it never resolves.
"""

from __future__ import annotations

import socket
import sys
import time

import pytest

from securityhub.errors import EXIT_USAGE
from tests.check.standin import STANDIN
from tests.reliability.world import REPO, run_cli

# botocore standard mode (3 attempts, jittered backoff under 1 s each here) plus the Python
# start-up; the old adaptive mode took 56-75 s. Generous for a loaded CI machine.
FAST_ENOUGH_S = 15.0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends: refused


@pytest.mark.parametrize(
    ("name", "endpoint"),
    [
        ("refused", f"http://127.0.0.1:{_closed_port()}"),
        ("dns", "http://no-such-emulator.invalid:4566"),
    ],
)
@pytest.mark.parametrize("command", [["sweep", "--region", "us-east-1"],
                                     ["reconcile", "--region", "us-east-1", "--dry-run"]])  # fmt: skip
def test_unreachable_endpoint_is_a_configuration_error_in_seconds(
    name: str, endpoint: str, command: list[str]
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "CONTAINERSCAN_TABLE": "containerscan",
        # a configured scanner: the endpoint is what is wrong, nothing else
        "QSCANNER_PATH": str(STANDIN),
        "QUALYS_POD": "US1",
        "QUALYS_ACCESS_TOKEN": "endpoint-test-token-0123",
    }
    started = time.monotonic()
    done = run_cli([sys.executable, "-m", "check", *command], env, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == EXIT_USAGE, (name, done.returncode, done.stderr[-800:])
    assert elapsed < FAST_ENOUGH_S, (name, elapsed)
    assert f"cannot connect to {endpoint}" in done.stderr
    assert "AWS_ENDPOINT_URL" in done.stderr  # the hint names the variable to fix
    assert "Traceback" not in done.stderr
