"""Fixtures: an estate in moto's server on loopback, for `containerscan` subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.reliability.world import BUCKET, REGION, TABLE


@dataclass
class Served:
    endpoint: str
    scenario: Path
    ecr: Any
    hub: Any
    dynamodb: Any
    s3: Any


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Served]:
    from securityhub import emulator
    from securityhub.ledger import create_table

    server = emulator.LocalServer()
    endpoint = server.start()
    emulator.set_faults()
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    try:
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        create_table(dynamodb, TABLE)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        yield Served(endpoint, tmp_path / "scenario.json",
                     boto3.client("ecr", region_name=REGION),
                     boto3.client("securityhub", region_name=REGION), dynamodb, s3)  # fmt: skip
    finally:
        emulator.set_faults()
        server.stop()
        emulator.uninstall()
