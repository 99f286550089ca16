"""Fixtures of the check's command tests: moto with the ledger table and one ECR image."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from securityhub.ledger import create_table
from tests.check.ecrfixtures import put_image
from tests.check.standin import MUSL_CVE_2019_14697, STANDIN, Scenario

REGION = "us-east-1"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """QScanner's stand-in, the ledger table and payments/api:1.4 in moto; yields its digest.
    The scenario file is tmp_path/scenario.json (a test may rewrite it)."""
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


