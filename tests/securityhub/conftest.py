"""Fixtures for the Security Hub layer: moto with the emulator, a ledger table, sample data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from securityhub import emulator
from securityhub.aws import SessionFactory
from securityhub.findings import (
    Cvss,
    EcrImage,
    Observation,
    Package,
    ScannerInfo,
    SecretFinding,
    Severity,
    VulnerabilityFinding,
)

ACCOUNT = "123456789012"
REGION = "us-east-1"
TABLE = "containerscan-test"
# Tests do not wait for real quotas or backoff: same code paths, tiny delays.
FAST_GATEWAY = {
    "import_rate": 10_000.0,
    "get_rate": 10_000.0,
    "backoff_base": 0.001,
    "backoff_cap": 0.005,
}
QSCANNER = ScannerInfo("qscanner", "4.8.0-2")
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


class Clock:
    """A settable UTC clock for the publisher."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def aws() -> Iterator[None]:
    from moto import mock_aws

    emulator.install()
    emulator.set_faults()
    with mock_aws():
        yield
    emulator.set_faults()


def single_attempt_sessions(region: str = REGION) -> SessionFactory:
    """A SessionFactory whose clients make one attempt, in standard mode.

    The gateway's own retries are what the tests exercise; botocore's retries would absorb
    the injected throttles first.
    """
    return SessionFactory(region, max_attempts=1)


@pytest.fixture
def sessions(aws: None) -> SessionFactory:
    return single_attempt_sessions()


@pytest.fixture
def table(sessions: SessionFactory) -> str:
    from securityhub.ledger import create_table

    create_table(sessions.client("dynamodb"), TABLE)
    return TABLE


@pytest.fixture
def clock() -> Clock:
    return Clock()


def image(digest: str = DIGEST_A, repository: str = "team/app", region: str = REGION) -> EcrImage:
    return EcrImage(ACCOUNT, region, repository, digest, tags=("1.0",), architecture="amd64")


def vuln(
    img: EcrImage,
    vid: str = "CVE-2024-0001",
    *,
    fixed: str | None = "1.1.1w-1",
    severity: Severity = Severity.HIGH,
    packages: int = 1,
) -> VulnerabilityFinding:
    return VulnerabilityFinding(
        resource=img,
        vulnerability_id=vid,
        title=f"{vid} in openssl",
        severity=severity,
        scanner=QSCANNER,
        description="A flaw in openssl allows ...",
        cves=(vid,),
        packages=tuple(
            Package(f"openssl{i or ''}", "1.1.1n-0", fixed, "dpkg", layer="sha256:" + "c" * 64)
            for i in range(packages)
        ),
        cvss=(Cvss("3.1", 7.5, "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", "NVD"),),
        references=(f"https://nvd.nist.gov/vuln/detail/{vid}",),
        qid="38170",
        vendor_severity="4",
    )


def secret(img: EcrImage, line: int = 3) -> SecretFinding:
    return SecretFinding(
        img,
        "aws-access-key-id",
        "AWS",
        "AWS access key",
        Severity.CRITICAL,
        QSCANNER,
        "/app/.env",
        line,
    )


def observe(img: EcrImage, *findings, kinds=("vulnerability", "secret")) -> Observation:  # type: ignore[no-untyped-def]
    return Observation(img, frozenset(kinds), tuple(findings))
