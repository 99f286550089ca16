"""The QScanner stand-in honours the documented CLI contract (run directly, no runner)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.check.standin import OPENSSL_CVE_2019_1547, STANDIN, TIME_SCALE, Scenario, digest_of

DIGEST = digest_of("standin/contract")
REF = f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app@{DIGEST}"


def run(
    args: list[str],
    tmp_path: Path,
    *,
    token: bool = True,
    scenario: Path | None = None,
    extra: dict[str, str] | None = None,
    scale: bool = False,
):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **(extra or {})}
    if scale:
        env["QSCANNER_STANDIN_TIME_SCALE"] = TIME_SCALE
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
    sarif = next((tmp_path / "out").glob("*-Report.sarif.json"))
    assert re.fullmatch(r"[0-9a-f]{64}-Report\.sarif\.json", sarif.name)  # the image id
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
    assert scan_result["SchemaVersion"] == 5
    target = scan_result["Metadata"]["TargetMetadata"]
    assert target["ImageMetadata"]["RepoDigests"] == [REF]
    assert (target["OS"], target["Architecture"]) == ("alpine 3.10.2", "amd64")
    assert all(isinstance(s["ScanDuration"], int) for s in scan_result["ScansPerformed"])
    rule = first["runs"][0]["tool"]["driver"]["rules"][0]["properties"]
    assert rule["CVSS3Info"]["baseScore"] == 4.7 and rule["TypeDetected"] == "CONFIRMED"


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
        (["image", REF], 2),  # no --pod nor --gateway-url
        (["--pod", "US1", "image", "alpine:latest"], 6),  # not an immutable reference
        (["--pod", "US1", "container", "abc"], 2),
    ],
)
def test_invalid_invocations(tmp_path, args, code):
    result = run([*dirs(tmp_path), *args], tmp_path)
    assert result.returncode == code, result.stderr


def test_version_is_a_flag_not_a_command(tmp_path):
    """README page 5: `qscanner --version`; the command list has no `version`."""
    assert run(["--version"], tmp_path).stdout.strip() == "qscanner version 4.8.0-2"
    assert run(["version"], tmp_path).returncode == 2


def test_client_id_and_secret_authenticate_and_a_gateway_url_replaces_the_pod(tmp_path):
    env_creds = {"QUALYS_CLIENT_ID": "client-1", "QUALYS_CLIENT_SECRET": "client-secret-xyz"}
    ok = run(
        ["--gateway-url", "https://gateway.qg1.apps.qualys.example", *dirs(tmp_path), "image", REF],
        tmp_path,
        token=False,
        extra=env_creds,
    )
    assert ok.returncode == 0, ok.stderr
    half = run(
        ["--pod", "US1", *dirs(tmp_path), "image", REF],
        tmp_path,
        token=False,
        extra={"QUALYS_CLIENT_ID": "client-1"},
    )
    assert half.returncode == 2 and "--client-secret" in half.stderr


def test_report_polling_gives_up_with_exit_40_after_the_retries(tmp_path):
    scenario = Scenario().image(DIGEST, report_delay=60).write(tmp_path / "s.json")
    args = ["--pod", "US1", *dirs(tmp_path), "image", REF]
    # 15 s + 5 + 10 + 20 = 50 s < 60 s: three retries are not enough; four are (+40 s).
    short = run(["--max-network-retries", "3", *args], tmp_path, scenario=scenario, scale=True)
    assert short.returncode == 40 and "retry 3/3" in short.stderr
    enough = run(["--max-network-retries", "4", *args], tmp_path, scenario=scenario, scale=True)
    assert enough.returncode == 0, enough.stderr


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
