"""The sidecar half of the secret-leak test: a real `containerscan sidecar run` with a known
Qualys token, a Qualys sink on a loopback HTTP server, and a workload whose argv, environment
and written files carry planted secret-looking values, under a policy that does not capture
args. The token must reach the gateway in the Authorization header and nowhere else; neither
it nor the planted values may appear on stdout, stderr (debug logs) or in the events file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.sidecar_world import (
    FIGURES,
    Gateway,
    cli_env,
    read_jsonl,
    run_sidecar,
    serving,
    storm_policy,
)

TOKEN = "qualys-known-token-7Hq2ZkP9wX4vB8nR"
PLANTED_PASSWORD = "hunter2-Pl4nt3d-Passw0rd-9f8e7d"
PLANTED_AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYPLANTED0KEY"


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with serving(Gateway(record=True)) as server:
        yield server


def _qualys_policy(tmp: Path, watched: Path, gateway: Gateway) -> Path:
    """The storm policy without captureArgs, alerts going to the Qualys gateway."""
    policy = storm_policy(tmp, watched, capture_args=False)
    policy.write_text(policy.read_text() + (
        "  actions:\n"
        "    alert:\n"
        "      enabled: true\n"
        "      destinations:\n"
        "        - type: qualys-crs\n"
        "          enabled: true\n"
        "    qualysIntegration:\n"
        "      enabled: true\n"
        f"      endpoint: {gateway.url}\n"
    ))  # fmt: skip
    return policy


@pytest.mark.ptrace
def test_sidecar_leaks_no_token_and_no_planted_secret(tmp_path: Path, gateway: Gateway) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    policy = _qualys_policy(tmp_path, watched, gateway)
    script = (
        f'/bin/true --password={PLANTED_PASSWORD} --aws-secret "$PLANTED"; '
        f'printf "%s" "$PLANTED" > {watched}/credentials; '
        f'echo "{PLANTED_PASSWORD}" > {tmp_path}/unwatched-{PLANTED_PASSWORD}; exit 6'
    )
    # The planted values are in the argv of a traced exec, not the sidecar's own command
    # line (the test below covers that one).
    (tmp_path / "app.sh").write_text(script + "\n")
    events_file = tmp_path / "events.jsonl"
    done, _ = run_sidecar(
        ["run", "--policy", str(policy), "--events-file", str(events_file), "--",
         "/bin/sh", str(tmp_path / "app.sh")],
        cli_env(QUALYS_ACCESS_TOKEN=TOKEN, PLANTED=PLANTED_AWS_SECRET,
                CONTAINERSCAN_EVENTS_STDOUT="1", CONTAINERSCAN_LOG_LEVEL="debug"),
    )  # fmt: skip
    assert done.returncode == 6, done.stderr[-3000:]
    events = read_jsonl(events_file)
    # The sidecar did its work: the exec and the write were reported, and sent to Qualys.
    assert any(e["category"] == "process" for e in events), events
    assert any(e.get("path") == str(watched / "credentials") for e in events), events
    assert gateway.requests, done.stderr[-3000:]
    sent = sum(len(json.loads(r["body"])["events"]) for r in gateway.requests)
    assert sent == len(events)
    assert done.stderr.count("\n") > 3 and done.stdout.strip()  # there was output to search

    places = {"stdout": done.stdout, "stderr": done.stderr, "events file": events_file.read_text()}
    for n, request in enumerate(gateway.requests):
        headers = dict(request["headers"])
        assert headers.pop("Authorization") == f"Bearer {TOKEN}"
        places[f"request {n} body"] = request["body"]
        places[f"request {n} path"] = request["path"]
        places[f"request {n} other headers"] = json.dumps(headers)
    leaks = [f"{name} in {where}"
             for name, value in {"QUALYS_ACCESS_TOKEN": TOKEN, "planted password":
                                 PLANTED_PASSWORD, "planted AWS secret": PLANTED_AWS_SECRET
                                 }.items()
             for where, text in places.items() if value in text]  # fmt: skip
    assert not leaks, "\n".join(leaks)
    FIGURES["sidecar secrets"] = (f"{len(events)} events, {len(gateway.requests)} Qualys posts "
                                  f"searched: token only in the Authorization header, no "
                                  f"planted value anywhere")


# The tracer once logged the workload's full argv at INFO ("workload started under the
# tracer"): an entrypoint like `app --password=...` landed in the logs. It logs the program
# and the number of arguments now.


@pytest.mark.ptrace
def test_a_secret_on_the_workloads_own_command_line_stays_out_of_the_logs(
    tmp_path: Path, gateway: Gateway
) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    done, _ = run_sidecar(
        ["run", "--policy", str(_qualys_policy(tmp_path, watched, gateway)), "--", "/bin/sh",
         "-c", f"echo started; exit 0 # --password={PLANTED_PASSWORD}"],
        cli_env(QUALYS_ACCESS_TOKEN=TOKEN),
    )  # fmt: skip
    assert done.returncode == 0 and "started" in done.stdout, done.stderr[-3000:]
    assert TOKEN not in done.stdout + done.stderr
    assert PLANTED_PASSWORD not in done.stdout + done.stderr
