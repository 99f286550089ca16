"""The QScanner stand-in honours the documented CLI contract (run directly, no runner)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.check.standin import OPENSSL_CVE_2019_1547, STANDIN, Scenario, digest_of

DIGEST = digest_of("standin/contract")
REF = f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app@{DIGEST}"


def run(args: list[str], tmp_path: Path, token: bool = True, scenario: Path | None = None):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if token:
        env["QUALYS_ACCESS_TOKEN"] = "standin-token-abcdef"
    if scenario is not None:
        env["QSCANNER_STANDIN_SCENARIO"] = str(scenario)
    return subprocess.run(
        [str(STANDIN), *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def dirs(tmp_path: Path) -> list[str]:
    return ["--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]


def test_flags_before_and_after_the_subcommand_and_equals_form(tmp_path):
    scenario = Scenario().image(DIGEST, findings=[OPENSSL_CVE_2019_1547]).write(tmp_path / "s.json")
    before = run(
        ["--pod", "US1", "--mode=get-report", *dirs(tmp_path), "image", REF],
        tmp_path,
        scenario=scenario,
    )
    assert before.returncode == 0, before.stderr
    sarif = next((tmp_path / "out").glob("app-sha256_*-Report.sarif.json"))
    first = json.loads(sarif.read_text())
    sarif.unlink()
    after = run(
        ["image", REF, "--pod=US1", *dirs(tmp_path), "--scan-types", "pkg"],
        tmp_path,
        scenario=scenario,
    )
    assert after.returncode == 0, after.stderr
    second = json.loads(sarif.read_text())
    assert first["runs"][0]["results"] == second["runs"][0]["results"]
    assert first["runs"][0]["results"][0]["properties"]["QID"] == 376817
    scan_result = json.loads(next((tmp_path / "out").glob("*-ScanResult.json")).read_text())
    image = scan_result["Metadata"]["TargetMetadata"]["ImageMetadata"]
    assert image["RepoDigests"] == [REF]


def test_missing_token_is_an_auth_failure(tmp_path):
    result = run(["--pod", "US1", *dirs(tmp_path), "image", REF], tmp_path, token=False)
    assert result.returncode == 33
    assert "authentication failed" in result.stderr


def test_inventory_only_needs_no_token_and_writes_no_report(tmp_path):
    result = run(["--mode", "inventory-only", *dirs(tmp_path), "image", REF], tmp_path, token=False)
    assert result.returncode == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(names) == 1 and names[0].endswith("-ScanResult.json")


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--pod", "US1", "--bogus", "image", REF], 2),
        (["--pod", "US1", "--mode", "fast", "image", REF], 2),
        (["--pod", "US1", "--scan-timeout", "soon", "image", REF], 2),
        (["image", REF], 2),  # no --pod
        (["--pod", "US1", "image", "alpine:latest"], 6),  # not an immutable reference
        (["--pod", "US1", "container", "abc"], 2),
    ],
)
def test_invalid_invocations(tmp_path, args, code):
    result = run([*dirs(tmp_path), *args], tmp_path)
    assert result.returncode == code, result.stderr


def test_version(tmp_path):
    assert run(["version"], tmp_path).stdout.strip() == "QScanner version 4.8.0-2"
    assert run(["--version"], tmp_path).stdout.strip() == "QScanner version 4.8.0-2"


def test_delay_past_scan_timeout_fails_like_a_timeout(tmp_path):
    scenario = Scenario().image(DIGEST, delay=3).write(tmp_path / "s.json")
    result = run(
        ["--pod", "US1", "--scan-timeout", "200ms", *dirs(tmp_path), "image", REF],
        tmp_path,
        scenario=scenario,
    )
    assert result.returncode == 1 and "timed out" in result.stderr


def test_default_entry_applies_to_unlisted_digests(tmp_path):
    scenario = Scenario().default(behaviour="exit:12").write(tmp_path / "s.json")
    result = run(["--pod", "US1", *dirs(tmp_path), "image", REF], tmp_path, scenario=scenario)
    assert result.returncode == 12
