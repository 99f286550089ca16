"""`containerscan sweep` and `scan-image` through click's CliRunner, against moto."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner

from check.cli import cli

REGION = "us-east-1"


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
    assert "CVE-2019-14697" in result.output and "CRITICAL" in result.output
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
    from check.quickstart.data import advisories_dir

    monkeypatch.setenv("CONTAINERSCAN_VULN_DB", str(advisories_dir()))
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


# ------------------------------------------------------------- local images (scan-image)


@pytest.fixture(scope="module")
def worker_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's Alpine worker image as an OCI layout, plus a layer whose file name carries a
    newline and terminal escape sequences, holding the sample's fake AWS key."""
    from check.quickstart.sampleimages import (
        FAKE_AWS_KEY_ID,
        Layer,
        build_blobs,
        worker_image,
        write_oci_layout,
    )

    worker = worker_image()
    tars = [gzip.decompress(layer) for layer in worker.blobs.layers]
    hostile = Layer().file(f"app/x\n\x1b[2J\x1b]52;c;Zm9v\x07{EVIL_NAME}.env",
                           f"AWS_ACCESS_KEY_ID={FAKE_AWS_KEY_ID}\n")
    blobs = build_blobs([*tars, hostile.bytes()])
    return write_oci_layout(tmp_path_factory.mktemp("images") / "worker", [(blobs, "linux/amd64")])


EVIL_NAME = "\u202eevil"  # a right-to-left override in a file name


@pytest.fixture
def shipped_db(monkeypatch: pytest.MonkeyPatch) -> Path:
    from check.quickstart.data import advisories_dir

    monkeypatch.delenv("CONTAINERSCAN_VULN_DB", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent-cache")  # no `db update` database
    return advisories_dir()


def local(layout: Path, *args: str):
    return CliRunner().invoke(cli, ["--log-level", "ERROR", "scan-image", f"oci-layout:{layout}",
                                    *args])


def test_local_image_honours_vuln_db_fail_on_and_scan_types(worker_layout, shipped_db,
                                                           tmp_path) -> None:
    result = local(worker_layout, "--vuln-db", str(shipped_db), "--fail-on", "medium")
    assert result.exit_code == 4, result.output
    assert {"CVE-2019-1547", "CVE-2023-32681"} <= set(re.findall(r"CVE-\d+-\d+", result.output))
    result = local(worker_layout, "--vuln-db", str(shipped_db), "--fail-on", "CRITICAL",
                   "--scan-types", "pkg")
    assert result.exit_code == 0, result.output
    assert "aws-access-key-id" not in result.output and "CVE-2019-1547" in result.output
    empty = tmp_path / "empty-db"
    empty.mkdir()
    result = local(worker_layout, "--vuln-db", str(empty), "--scan-types", "secret",
                   "--output", "json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["findings"]
    assert found and {f["kind"] for f in found} == {"secret"}


def test_local_image_without_a_database_names_db_update(worker_layout, shipped_db) -> None:
    result = local(worker_layout)
    assert result.exit_code == 2
    assert "containerscan db update" in result.output and "Traceback" not in result.output


def test_local_image_writes_the_run_tree_to_output_dir(worker_layout, shipped_db,
                                                       tmp_path) -> None:
    out = tmp_path / "out"
    result = local(worker_layout, "--vuln-db", str(shipped_db), "--output-dir", str(out))
    assert result.exit_code == 0, result.output
    [results] = out.glob("runs/*/images/sha256-*/results.json")
    doc = json.loads(results.read_text())
    assert results.parent.name == doc["digest"].replace(":", "-")
    assert doc["reference"] == f"oci-layout:{worker_layout}"
    assert any(f.get("vulnerability_id") == "CVE-2019-1547" for f in doc["findings"])
    assert {p.name for p in (results.parent / "raw").iterdir()} == {
        "builtin-inventory.json", "builtin-findings.json"}


def test_local_image_table_escapes_file_names(worker_layout, shipped_db) -> None:
    """A file name with a newline, ESC sequences and a bidi override prints on one line, as
    escapes; nothing reaches the terminal raw."""
    result = local(worker_layout, "--vuln-db", str(shipped_db), "--scan-types", "secret")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert EVIL_NAME not in result.output
    [row] = [line for line in result.output.splitlines() if "\\u202eevil" in line]
    assert row.startswith("CRITICAL") and "app/x\\n\\x1b[2J\\x1b]52;c;Zm9v\\x07\\u202eevil" in row


@pytest.mark.parametrize(("args", "named"), [
    (("--fail-on", "BOGUS"), "fail_on"),
    (("--scanner", "nope"), "unknown scanner 'nope'"),
    (("--scanner", "trivy"), "--scanner builtin"),
    (("--scanner", "qscanner"), "--scanner builtin"),
    (("--scan-types", "bogus"), "scan_types[0]"),
    (("--region", "us-east-1"), "--region: applies to ECR images only"),
    (("--account", "123456789012"), "--account: applies to ECR images only"),
    (("--vuln-db", "/nonexistent-db"), "containerscan db update"),
    (("--timeout", "0"), "--timeout"),
    (("--output", "yaml"), "--output"),
])  # fmt: skip
def test_local_image_refuses_bad_flags_with_exit_2(worker_layout, shipped_db, args, named) -> None:
    result = local(worker_layout, *args)
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(("ref", "named"), [
    ("Not^A^Ref", "the image reference is malformed"),
    ("registry.example.com/UPPER::x", "the image reference is malformed"),
    ("oci-layout:/nonexistent/layout", "/nonexistent/layout is not an OCI layout directory"),
    ("docker-archive:/nonexistent.tar", "is not a `docker save` archive"),
])  # fmt: skip
def test_bad_references_exit_2(ref: str, named: str) -> None:
    result = CliRunner().invoke(cli, ["scan-image", ref])
    assert result.exit_code == 2, result.output
    assert named in result.output and "hint:" in result.output


def test_sweep_vuln_db_belongs_to_the_builtin_scanner(env: str, tmp_path: Path) -> None:
    result = invoke("sweep", "--scanner", "qscanner", "--vuln-db", str(tmp_path))
    assert result.exit_code == 2 and "--vuln-db is the built-in scanner's" in result.output
    # A missing database stops the sweep before any image (not 3, partial, for each image).
    result = invoke("sweep", "--scanner", "builtin", "--vuln-db", str(tmp_path / "none"))
    assert result.exit_code == 2, result.output
    assert "containerscan db update" in result.output and "IMAGES" not in result.output


def test_sweep_keeps_qscanners_sbom_and_scan_image_prints_it(env: str, tmp_path: Path) -> None:
    """QScanner is run with `--format json,cyclonedx`; its SBOM is the image's sbom.cdx.json."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from check.sbom import inventory_from_sbom

    result = invoke("sweep", "--output", "json", "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    stored = tmp_path / "out" / "runs" / run_id / "images" / env.replace(":", "-") / "sbom.cdx.json"
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(stored.read_text()) is None
    assert {p.name for p in inventory_from_sbom(json.loads(stored.read_text())).packages} == {
        "musl", "musl-utils"}  # the stand-in scenario's affected packages
    ref = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/payments/api@{env}"
    result = invoke("scan-image", ref, "--output", "cyclonedx")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["metadata"]["component"]["version"] == env
