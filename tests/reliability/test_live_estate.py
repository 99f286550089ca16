"""Correlation in an estate that changes while runs are under way (issue 11).

Every run here is a real `containerscan` subprocess against moto's server on loopback, with
the QScanner stand-in as the scanner, wrapped by a script that logs each invocation (so
"the scanner ran" is counted outside the code under test). Each scenario ends with Security
Hub equal to the truth computed from the estate (one active finding per fact, no duplicate),
the ledger's ACTIVE entries equal to the hub's active findings, and `reconcile --dry-run`
finding nothing to repair.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.check.standin import (
    AWS_KEY_SECRET,
    BUSYBOX_CVE_2019_5747,
    CURL_CVE_2019_5481,
    MUSL_CVE_2019_14697,
    OPENSSL_CVE_2019_1547,
    STANDIN,
)
from tests.reliability.conftest import Served
from tests.reliability.world import (
    ACCOUNT,
    REGION,
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

SLOW_SCAN_S = 4.0  # long enough for another run to list, scan and publish meanwhile


class Invocations:
    """A wrapper around the stand-in that appends one line per scanner invocation."""

    def __init__(self, tmp_path: Path) -> None:
        self.log = tmp_path / "invocations.log"
        self.log.touch()
        self.path = tmp_path / "qscanner"
        self.path.write_text(
            "#!/bin/sh\n"
            f'case "$1" in --version|version) ;; *) echo "$*" >> "{self.log}" ;; esac\n'
            f'exec "{STANDIN}" "$@"\n',
            encoding="utf-8",
        )
        self.path.chmod(0o755)

    def scans(self) -> int:
        return sum(1 for line in self.log.read_text().splitlines() if "sha256:" in line)


def env_of(served: Served, scanner: Invocations) -> dict[str, str]:
    return cli_env(served.endpoint, served.scenario, {"QSCANNER_PATH": str(scanner.path)})


def push_event(tmp_path: Path, repository: str, digest: str) -> Path:
    path = tmp_path / f"push-{digest[7:19]}.json"
    path.write_text(json.dumps({
        "version": "0", "id": "e1", "detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": ACCOUNT, "time": "2026-11-23T04:00:00Z", "region": REGION, "resources": [],
        "detail": {"result": "SUCCESS", "repository-name": repository, "image-digest": digest,
                   "action-type": "PUSH", "image-tag": "latest"},
    }), encoding="utf-8")  # fmt: skip
    return path


def scan_image_command(tmp_path: Path, event: Path) -> list[str]:
    return [sys.executable, "-m", "check", "scan-image", "--event", str(event), "--output",
            "json", "--output-dir", str(tmp_path / "out"), "--region", REGION]  # fmt: skip


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def finish(process: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return dict(json.loads(out))


def wait_for_scans(scanner: Invocations, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while scanner.scans() < count:
        assert time.monotonic() < deadline, "the scanner was never started"
        time.sleep(0.05)


def assert_converged(served: Served, estate: Estate, scanner: Invocations) -> None:
    """Hub = truth, ledger = hub, and reconcile finds nothing to repair."""
    active = active_findings(served.hub)
    assert hub_truth(active) == estate.truth()
    ledger = ledger_state(served.dynamodb)
    assert {f for f, state in ledger.items() if state == "ACTIVE"} == set(active)
    assert summaries_contradicting(served.dynamodb) == {}  # no summary vouches for a lie
    done = run_cli(
        [sys.executable, "-m", "check", "reconcile", "--dry-run", "--output", "json"],
        env_of(served, scanner),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert [report[k] for k in ("missing", "drifted", "stale", "corrupt")] == [0, 0, 0, 0], report


def write_scenario(served: Served, estate: Estate, slow: tuple[str, ...] = ()) -> None:
    scenario = estate.scenario()
    for digest in slow:
        scenario.images[digest]["delay"] = SLOW_SCAN_S
    scenario.write(served.scenario)


@pytest.mark.slow  # two runs overlapping on purpose: one waits out a slow scan (~10 s)
def test_a_push_published_during_a_wide_sweep_keeps_its_findings(
    served: Served, tmp_path: Path
) -> None:
    scanner = Invocations(tmp_path)
    env = env_of(served, scanner)
    estate = Estate()
    v1 = estate.add(served.ecr, "app", "v1", tag="v1", findings=[OPENSSL_CVE_2019_1547])
    estate.add(served.ecr, "lib", "l1", tag="1", findings=[MUSL_CVE_2019_14697])
    write_scenario(served, estate, slow=(v1,))
    wide = start(sweep_command(tmp_path / "out"), env)
    wait_for_scans(scanner, 1)  # the wide sweep has listed `app` = {v1}
    v2 = estate.add(served.ecr, "app", "v2", tag="v2", findings=[CURL_CVE_2019_5481],
                    secrets=[AWS_KEY_SECRET])  # fmt: skip
    write_scenario(served, estate, slow=(v1,))
    push = run_cli(scan_image_command(tmp_path, push_event(tmp_path, "app", v2)), env)
    assert push.returncode == 0, push.stderr[-3000:]
    assert wide.poll() is None, "the wide sweep was meant to publish after the push run"
    status = finish(wide)
    assert status["security_hub"][f"{ACCOUNT}/{REGION}"]["archived"] == 0
    assert status["security_hub"][f"{ACCOUNT}/{REGION}"]["kept_absent"] == 1
    assert_converged(served, estate, scanner)
    # the next sweep lists v2 and changes nothing; deleting v2 then archives its findings
    finish(start(sweep_command(tmp_path / "out"), env))
    of_v2 = [f for f in active_findings(served.hub).values() if v2 in f["Resources"][0]["Id"]]
    served.ecr.batch_delete_image(repositoryName="app", imageIds=[{"imageDigest": v2}])
    del estate.images[("app", "v2")]
    write_scenario(served, estate)
    status = finish(start(sweep_command(tmp_path / "out"), env))
    assert status["security_hub"][f"{ACCOUNT}/{REGION}"]["archived"] == len(of_v2) > 0
    assert_converged(served, estate, scanner)


@pytest.mark.slow
@pytest.mark.parametrize("slow_one", ["first", "second"])
def test_two_push_runs_of_one_repository_in_either_order(
    served: Served, tmp_path: Path, slow_one: str
) -> None:
    """Push v1, its run starts; push v2, its run starts; either run may publish last."""
    scanner = Invocations(tmp_path)
    env = env_of(served, scanner)
    estate = Estate()
    v1 = estate.add(served.ecr, "app", "v1", tag="v1", findings=[OPENSSL_CVE_2019_1547])
    write_scenario(served, estate, slow=(v1,) if slow_one == "first" else ())
    first = start(scan_image_command(tmp_path, push_event(tmp_path, "app", v1)), env)
    wait_for_scans(scanner, 1)  # the first run has listed `app` = {v1}
    v2 = estate.add(served.ecr, "app", "v2", tag="v2",
                    findings=[CURL_CVE_2019_5481, BUSYBOX_CVE_2019_5747])  # fmt: skip
    slow = (v1,) if slow_one == "first" else (v2,)
    write_scenario(served, estate, slow=slow)
    second = start(scan_image_command(tmp_path, push_event(tmp_path, "app", v2)), env)
    if slow_one == "first":
        finish(second)
        assert first.poll() is None, "the first run was meant to publish last"
        finish(first)
    else:
        finish(first)
        finish(second)
    assert_converged(served, estate, scanner)


@pytest.mark.slow
def test_two_full_sweeps_started_at_the_same_moment(served: Served, tmp_path: Path) -> None:
    scanner = Invocations(tmp_path)
    env = env_of(served, scanner)
    estate = Estate()
    catalogue = [[OPENSSL_CVE_2019_1547], [CURL_CVE_2019_5481, MUSL_CVE_2019_14697], []]
    for i in range(6):
        estate.add(served.ecr, f"team-{i % 3}/svc", f"img-{i}", tag=f"v{i}",
                   findings=catalogue[i % 3], secrets=[AWS_KEY_SECRET] if i % 2 else [])  # fmt: skip
    write_scenario(served, estate)
    runs = [start(sweep_command(tmp_path / f"out{i}", "--force"), env) for i in range(2)]
    for run in runs:
        finish(run)
    assert_converged(served, estate, scanner)
    before = {fid: doc["UpdatedAt"] for fid, doc in active_findings(served.hub).items()}
    # the world changes, then two sweeps again at once: every change lands once
    changed = sorted(set(estate.images.values()))[:3]
    for digest in changed:
        estate.findings[digest] = (BUSYBOX_CVE_2019_5747,)
    write_scenario(served, estate)
    runs = [start(sweep_command(tmp_path / f"out{i}", "--force"), env) for i in range(2)]
    statuses = [finish(run) for run in runs]
    assert_converged(served, estate, scanner)
    after = active_findings(served.hub)
    for fid, updated in before.items():
        if fid in after:
            assert after[fid]["UpdatedAt"] >= updated
    hub = [s["security_hub"][f"{ACCOUNT}/{REGION}"] for s in statuses]
    # a ledger write that lost to the other run's later observation is counted, not lost
    assert all(h["failed"] == 0 for h in hub), hub


@pytest.mark.slow
def test_a_promoted_digest_gets_its_findings_without_a_scan(served: Served, tmp_path: Path) -> None:
    scanner = Invocations(tmp_path)
    env = env_of(served, scanner)
    estate = Estate()
    digest = estate.add(served.ecr, "dev/app", "build-7", tag="7",
                        findings=[OPENSSL_CVE_2019_1547, CURL_CVE_2019_5481],
                        secrets=[AWS_KEY_SECRET])  # fmt: skip
    write_scenario(served, estate)
    first = finish(start(sweep_command(tmp_path / "out"), env))
    assert scanner.scans() == 1
    created = first["security_hub"][f"{ACCOUNT}/{REGION}"]["created"]
    promoted = estate.add(served.ecr, "prod/app", "build-7", tag="7",
                          findings=[OPENSSL_CVE_2019_1547, CURL_CVE_2019_5481],
                          secrets=[AWS_KEY_SECRET])  # fmt: skip
    assert promoted == digest
    status = finish(start(scan_image_command(tmp_path, push_event(tmp_path, "prod/app", digest)),
                          env))  # fmt: skip
    assert scanner.scans() == 1  # zero scanner invocations for the promotion
    assert status["counts"]["cached"] == 1
    assert status["security_hub"][f"{ACCOUNT}/{REGION}"]["created"] == created > 0
    assert_converged(served, estate, scanner)
