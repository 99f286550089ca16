"""The run's configuration from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from check.config import MAX_DEFAULT_CONCURRENCY, RunConfig, default_concurrency
from securityhub.errors import ValidationError
from securityhub.findings import Severity


def test_defaults_and_values() -> None:
    config = RunConfig.from_env({})
    assert (config.table, config.bucket, config.cache_ttl_days) == (None, None, 30)
    assert config.scan_types == ("pkg", "secret") and config.alert_threshold is Severity.HIGH
    config = RunConfig.from_env({
        "CONTAINERSCAN_TABLE": "containerscan", "CONTAINERSCAN_BUCKET": "cs-runs",
        "CONTAINERSCAN_PREFIX": "scans", "CACHE_TTL_DAYS": "7", "SCAN_TYPES": "pkg",
        "ALERT_THRESHOLD": "critical", "CONTAINERSCAN_CONCURRENCY": "3",
        "SNS_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:alerts",
        "CONTAINERSCAN_WORKDIR": "/var/tmp/cs",
    })  # fmt: skip
    assert config.prefix == "scans/" and config.cache_ttl_days == 7
    assert config.scan_types == ("pkg",) and config.pool_size == 3
    assert config.workdir == Path("/var/tmp/cs")
    assert config.with_overrides(concurrency=None, tag_scanned="scanned").tag_scanned == "scanned"


def test_every_bad_variable_is_listed() -> None:
    with pytest.raises(ValidationError) as caught:
        RunConfig.from_env({
            "CONTAINERSCAN_TABLE": "x", "CONTAINERSCAN_BUCKET": "Bad_Bucket",
            "CACHE_TTL_DAYS": "-1", "ALERT_THRESHOLD": "scary",
            "CONTAINERSCAN_TAG_SCANNED": "bad tag!", "SNS_TOPIC_ARN": "topic",
        })  # fmt: skip
    assert {w for w, _ in caught.value.problems} == {
        "CONTAINERSCAN_TABLE", "CONTAINERSCAN_BUCKET", "CACHE_TTL_DAYS", "ALERT_THRESHOLD",
        "CONTAINERSCAN_TAG_SCANNED", "SNS_TOPIC_ARN",
    }  # fmt: skip


def test_default_pool_size_is_bounded() -> None:
    assert 1 <= default_concurrency() <= MAX_DEFAULT_CONCURRENCY
