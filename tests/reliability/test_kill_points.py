"""The sweep killed with SIGKILL at random points, then run again: it converges.

`containerscan sweep` runs as a subprocess against moto's server (state outlives the kill).
Hypothesis chooses, for each example, how the world changed since the last run and when the
kill lands: after the k-th log line of the run (k from 0 to the number of lines a whole run
prints: enumeration, each scan, each publication, the status), plus up to 0.3 s. After each kill a clean run
must leave Security Hub equal to the truth, with no duplicate, and the ledger must match
Security Hub (`containerscan reconcile --dry-run` finds nothing to repair).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.check.standin import (
    AWS_KEY_SECRET,
    BUSYBOX_CVE_2019_5747,
    CURL_CVE_2019_5481,
    MUSL_CVE_2019_14697,
    OPENSSL_CVE_2019_1547,
)
from tests.reliability.conftest import Served
from tests.reliability.world import (
    REPO,
    Estate,
    active_findings,
    cli_env,
    hub_truth,
    ledger_state,
    run_cli,
    summaries_contradicting,
    sweep_command,
)

EXAMPLES = 8  # plus the two explicit examples
CHOICES = (
    (),
    (OPENSSL_CVE_2019_1547,),
    (MUSL_CVE_2019_14697, CURL_CVE_2019_5481),
    (BUSYBOX_CVE_2019_5747, OPENSSL_CVE_2019_1547, CURL_CVE_2019_5481),
)
KILLS: list[dict[str, object]] = []


def _reconcile_dry_run(served: Served) -> dict[str, object]:
    import sys

    done = run_cli(
        [sys.executable, "-m", "check", "reconcile", "--dry-run", "--output", "json"],
        cli_env(served.endpoint, served.scenario),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout))


@pytest.mark.slow  # 6 killed sweeps, 6 reruns and 6 reconciles as subprocesses (~60 s)
def test_sigkill_at_random_points_then_a_rerun_converges(served: Served, tmp_path: Path) -> None:
    estate = Estate()
    for i in range(8):
        estate.add(served.ecr, f"kill-{i % 4}", f"k-{i}", tag=f"v{i}", findings=CHOICES[i % 4],
                   secrets=[AWS_KEY_SECRET] if i % 3 == 0 else [])  # fmt: skip
    digests = sorted(set(estate.images.values()))
    env = cli_env(served.endpoint, served.scenario)
    scenario = estate.scenario()
    for spec in scenario.images.values():
        spec["delay"] = 0.25  # scans take a while: kill points land inside the scan phase too
    scenario.write(served.scenario)
    started = time.monotonic()
    first = run_cli(sweep_command(tmp_path / "out", "--concurrency", "3"), env)
    full_run = time.monotonic() - started
    assert first.returncode == 0, first.stderr[-2000:]
    log_lines = first.stderr.count("\n")
    assert log_lines > 10
    messages = [json.loads(line)["message"] for line in first.stderr.splitlines() if line]
    publishing = messages.index("published")  # lines read before the import's log line
    assert hub_truth(active_findings(served.hub)) == estate.truth()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    # The import/ledger window is short: two examples always kill inside it.
    @example(changes=[(digests[0], CHOICES[3])], after_line=publishing, extra=0.0)
    @example(changes=[(digests[1], ())], after_line=publishing - 1, extra=0.05)
    @given(
        changes=st.lists(st.tuples(st.sampled_from(digests), st.sampled_from(CHOICES)), max_size=4),
        after_line=st.integers(0, log_lines),
        extra=st.floats(0.0, 0.3),
    )
    def killed_then_rerun(changes: list[tuple[str, tuple]], after_line: int, extra: float) -> None:
        for digest, findings in changes:
            estate.findings[digest] = findings
        scenario = estate.scenario()
        for spec in scenario.images.values():
            spec["delay"] = 0.25
        scenario.write(served.scenario)
        process = subprocess.Popen(
            sweep_command(tmp_path / "out", "--concurrency", "3", "--force"),
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stderr is not None
        seen, last = 0, ""
        while seen < after_line and (line := process.stderr.readline()):
            seen, last = seen + 1, line
        time.sleep(extra)
        process.send_signal(signal.SIGKILL)
        code = process.wait(timeout=30)
        process.stderr.close()
        message = json.loads(last)["message"] if last.startswith("{") else ""
        KILLS.append({"after": message, "line": seen, "killed": code == -signal.SIGKILL})
        # a kill between any two writes leaves no repository summary vouching for a lie
        assert summaries_contradicting(served.dynamodb) == {}

        rerun = run_cli(sweep_command(tmp_path / "out", "--force"), env)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        active = active_findings(served.hub)
        assert hub_truth(active) == estate.truth()
        ledger = ledger_state(served.dynamodb)
        assert {f for f, state in ledger.items() if state == "ACTIVE"} == set(active)
        assert summaries_contradicting(served.dynamodb) == {}
        report = _reconcile_dry_run(served)
        assert (report["missing"], report["drifted"], report["stale"]) == (0, 0, 0), report

    killed_then_rerun()
    assert len(KILLS) >= EXAMPLES
    assert sum(1 for k in KILLS if k["killed"]) >= EXAMPLES // 2  # most really died mid-run
    print(f"kill points: {KILLS}; a whole run: {full_run:.1f}s, {log_lines} log lines")
