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


def _reset(endpoint: str) -> None:
    import urllib.request

    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback moto server
        response.read()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Served]:
    from securityhub import emulator
    from securityhub.ledger import create_table

    server = emulator.LocalServer()
    endpoint = server.start()
    emulator.set_faults()
    # moto's backends live in this process and outlive a server: start from an empty estate.
    _reset(endpoint)
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
        _reset(endpoint)
        server.stop()
        emulator.uninstall()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The figures for the README's Reliability section, when reliability tests ran."""
    import sys

    lines = []
    faults = sys.modules.get("tests.reliability.test_faults")
    if faults is not None and faults.FIGURES:
        lines.append(f"faults injected: {faults.FIGURES}")
    kills = sys.modules.get("tests.reliability.test_kill_points")
    if kills is not None and kills.KILLS:
        survived = sum(1 for k in kills.KILLS if k["killed"])
        lines.append(f"kill points: {len(kills.KILLS)} ({survived} killed mid-run), all converged")
    hostile = sys.modules.get("tests.reliability.test_hostile_input")
    if hostile is not None and hostile.CASES:
        lines.append(f"fuzz cases: {sum(hostile.CASES.values())} {dict(hostile.CASES)}")
    sidecar = sys.modules.get("tests.reliability.sidecar_world")
    if sidecar is not None:
        lines += [f"{name}: {text}" for name, text in sidecar.FIGURES.items()]
    if lines:
        terminalreporter.section("reliability figures")
        for line in lines:
            terminalreporter.write_line(line)
