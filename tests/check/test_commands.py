"""`containerscan sweep` and `scan-image` through click's CliRunner, against moto."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws

from check.cli import cli
from securityhub.ledger import create_table
from tests.check.ecrfixtures import put_image
from tests.check.standin import MUSL_CVE_2019_14697, STANDIN, Scenario

REGION = "us-east-1"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from securityhub import emulator

    monkeypatch.setenv("QSCANNER_PATH", str(STANDIN))
    monkeypatch.setenv("QUALYS_POD", "US1")
    monkeypatch.setenv("QUALYS_ACCESS_TOKEN", "standin-token-123456")
    monkeypatch.setenv("QSCANNER_STANDIN_SCENARIO", str(tmp_path / "scenario.json"))
    monkeypatch.setenv("CONTAINERSCAN_TABLE", "cs-ledger")
    for name in ("CONTAINERSCAN_BUCKET", "SNS_TOPIC_ARN", "CONTAINERSCAN_REQUEST",
                 "CONTAINERSCAN_REQUEST_URI", "CONTAINERSCAN_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    emulator.install()
    with mock_aws():
        create_table(boto3.client("dynamodb", region_name=REGION), "cs-ledger")
        ecr = boto3.client("ecr", region_name=REGION)
        ecr.create_repository(repositoryName="payments/api")
        digest = put_image(ecr, "payments/api", "api-1", "1.4")
        Scenario().image(digest, findings=[MUSL_CVE_2019_14697]).write(tmp_path / "scenario.json")
        yield digest
    emulator.uninstall()


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_bad_request_exits_2_listing_every_problem(env: str) -> None:
    result = invoke("sweep", "--account", "12", "--region", "mars-1", "--shard", "0/2",
                    "--scan-types", "pkg,virus", "--repository", "Bad Name")  # fmt: skip
    assert result.exit_code == 2
    for field in ("accounts[0]", "regions[0]", "shard", "scan_types[1]", "repositories[0]"):
        assert field in result.output


def test_request_file_with_flag_overrides_and_json_output(env: str, tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"repositories": ["nothing/*"], "scan_types": "pkg"}))
    result = invoke("sweep", "--request", str(request), "--repository", "payments/*",
                    "--output", "json", "--output-dir", str(tmp_path / "out"))  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["request"]["repositories"] == ["payments/*"]
    assert report["request"]["scan_types"] == ["pkg"]
    assert report["counts"]["scanned"] == 1 and report["counts"]["severities"] == {"CRITICAL": 1}
    assert (tmp_path / "out" / "runs" / report["run_id"] / "status.json").is_file()


def test_request_from_the_environment(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINERSCAN_REQUEST", json.dumps({"dry_run": True, "tagged_only": True}))
    result = invoke("sweep")
    assert result.exit_code == 0, result.output
    assert "would scan:" in result.output and "payments/api" in result.output
    monkeypatch.setenv("CONTAINERSCAN_REQUEST", "{oops")
    result = invoke("sweep")
    assert result.exit_code == 2 and "CONTAINERSCAN_REQUEST" in result.output


def test_launcher_request_from_s3_and_run_id(
    env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the launcher hands a task: the request in S3 and the run id it answered with."""
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="cs-requests")
    s3.put_object(Bucket="cs-requests", Key="runs/launched-1/request.json",
                  Body=json.dumps({"repositories": ["payments/*"], "scan_types": ["pkg"]}))  # fmt: skip
    monkeypatch.setenv("CONTAINERSCAN_RUN_ID", "20261123T040000Z-launched")
    result = invoke("sweep", "--request-uri", "s3://cs-requests/runs/launched-1/request.json",
                    "--output", "json", "--output-dir", str(tmp_path / "out"))  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["run_id"] == "20261123T040000Z-launched"
    assert report["request"]["scan_types"] == ["pkg"] and report["counts"]["scanned"] == 1
    assert (tmp_path / "out" / "runs" / "20261123T040000Z-launched" / "status.json").is_file()

    monkeypatch.setenv("CONTAINERSCAN_REQUEST_URI", "s3://cs-requests/missing.json")
    result = invoke("sweep")
    assert result.exit_code == 1 and "s3://cs-requests/missing.json" in result.output
    monkeypatch.setenv("CONTAINERSCAN_RUN_ID", "../../etc")
    result = invoke("sweep", "--request-uri", "s3://cs-requests/runs/launched-1/request.json")
    assert result.exit_code == 2 and "CONTAINERSCAN_RUN_ID" in result.output


def test_fail_on_exits_4_and_table_lists_findings(env: str) -> None:
    ref = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/payments/api@{env}"
    result = invoke("scan-image", ref, "--fail-on", "high")
    assert result.exit_code == 4, result.output
    assert "376802" in result.output and "CRITICAL" in result.output
    result = invoke("scan-image", "payments/api:1.4", "--region", REGION)
    assert result.exit_code == 0, result.output


def test_scan_image_from_a_push_event(env: str, tmp_path: Path) -> None:
    event = {
        "source": "aws.ecr", "detail-type": "ECR Image Action", "account": "123456789012",
        "region": REGION, "detail": {"action-type": "PUSH", "result": "SUCCESS",
                                     "repository-name": "payments/api", "image-digest": env},
    }  # fmt: skip
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    result = invoke("scan-image", "--event", str(path), "--output", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [i["digest"] for i in report["images"]] == [env]
    event["detail"]["action-type"] = "DELETE"
    path.write_text(json.dumps(event))
    result = invoke("scan-image", "--event", str(path))
    assert result.exit_code == 2 and "detail.action-type" in result.output


def test_missing_table_is_a_configuration_error(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTAINERSCAN_TABLE")
    result = invoke("sweep")
    assert result.exit_code == 2 and "CONTAINERSCAN_TABLE" in result.output


def test_bad_environment_is_exit_2(env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_TTL_DAYS", "forever")
    monkeypatch.setenv("SNS_TOPIC_ARN", "not-an-arn")
    result = invoke("sweep", "--dry-run")
    assert result.exit_code == 2
    assert "CACHE_TTL_DAYS" in result.output and "SNS_TOPIC_ARN" in result.output


def test_local_references_go_to_the_builtin_scanner(
    env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    advisories = Path(__file__).resolve().parents[3] / "shared" / "data" / "advisories"
    if not advisories.is_dir():
        pytest.skip(f"no advisory data at {advisories}")
    monkeypatch.setenv("CONTAINERSCAN_VULN_DB", str(advisories))
    missing = tmp_path / "no-such-layout"
    result = invoke("scan-image", f"oci-layout:{missing}")
    assert result.exit_code != 0
    assert str(missing) in result.output


def test_command_help_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from check.cli import main\n"
        "for name in ('sweep', 'scan-image'):\n"
        "    try:\n        main([name, '--help'])\n    except SystemExit:\n        pass\n"
        "print('HEAVY', [m for m in ('boto3', 'botocore', 'jmespath', 'check.sweep') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout
    assert "--fail-on" in out.stdout and "--event" in out.stdout
