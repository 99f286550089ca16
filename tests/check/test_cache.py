"""The scan cache in DynamoDB (moto): keys, TTL, big results in S3, serialization."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws

from check.cache import ITEM_PAYLOAD_MAX, CacheKey, ScanCache
from check.serialize import finding_from_dict, finding_to_dict, rebind
from securityhub.findings import (
    Cvss,
    EcrImage,
    Package,
    ScannerInfo,
    SecretFinding,
    Severity,
    VulnerabilityFinding,
)
from securityhub.ledger import create_table

REGION = "us-east-1"
IMAGE = EcrImage("123456789012", REGION, "payments/api", "sha256:" + "a" * 64, ("1.0",))
SCANNER = ScannerInfo("qscanner", "4.8.0-2")


def vuln(qid: str, packages: int = 1, severity: Severity = Severity.HIGH) -> VulnerabilityFinding:
    return VulnerabilityFinding(
        resource=IMAGE, vulnerability_id=qid, title=f"Alpine Linux Security Update {qid}",
        severity=severity, scanner=SCANNER, cves=("CVE-2019-1547",),
        packages=tuple(Package(f"pkg{i}", "1.1.1c-r0", "1.1.1d-r0", "apk") for i in range(packages)),
        cvss=(Cvss("3.1", 4.7, "CVSS:3.1/AV:L/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N"),), qid=qid,
        published_at=datetime(2019, 9, 10, tzinfo=UTC),
    )  # fmt: skip


SECRET = SecretFinding(IMAGE, "aws-access-key-id", "AWS", "AWS Access Key ID", Severity.CRITICAL,
                       SCANNER, "/app/.env", 3)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def aws():
    with mock_aws():
        create_table(boto3.client("dynamodb", region_name=REGION), "cs")
        boto3.client("s3", region_name=REGION).create_bucket(Bucket="cs-runs")
        yield


def make_cache(clock: Clock, bucket: str | None = "cs-runs") -> ScanCache:
    return ScanCache(boto3.client("dynamodb", region_name=REGION), "cs", ttl_days=30,
                     s3=boto3.client("s3", region_name=REGION), bucket=bucket,
                     clock=clock)  # fmt: skip


def key(digest: str = IMAGE.digest, version: str = "4.8.0-2") -> CacheKey:
    return CacheKey(digest, "qscanner", version, ("secret", "pkg"))


def test_round_trip_rebinds_to_another_repository_and_expires(aws: None) -> None:
    clock = Clock()
    cache = make_cache(clock)
    assert cache.put(key(), SCANNER, [vuln("376817"), SECRET], "ALLOW")
    found = cache.get_many([key(), key(version="4.9.0"), key("sha256:" + "b" * 64)])
    assert list(found) == [key()]  # another scanner version or digest: a miss
    hit = found[key()]
    assert hit.fresh(clock.now) and hit.policy_result == "ALLOW"
    other = EcrImage("210987654321", "eu-west-1", "web", IMAGE.digest)
    findings = hit.findings_for(other)
    assert findings == rebind((vuln("376817"), SECRET), other)
    assert all(f.resource == other for f in findings)
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName="cs", Key={"pk": {"S": key().pk}, "sk": {"S": key().sk}})["Item"]  # fmt: skip
    assert key().pk.startswith("cache#") and key().sk == "qscanner#4.8.0-2#pkg,secret"
    assert int(item["expires_at"]["N"]) == int((clock.now + timedelta(days=30)).timestamp())
    clock.now += timedelta(days=31)  # DynamoDB may not have deleted it yet: still stale
    assert not cache.get_many([key()])[key()].fresh(clock.now)


def test_results_too_big_for_an_item_go_to_s3(aws: None) -> None:
    # Thousands of distinct packages: the compressed payload exceeds the item budget.
    import random

    rng = random.Random(7)
    big = [
        VulnerabilityFinding(IMAGE, str(q), "t" * 200, Severity.HIGH, SCANNER,
                             description="".join(rng.choices("abcdefghij0123456789", k=900)),
                             packages=(Package(f"p{q}", "1"),))
        for q in range(1000)
    ]  # fmt: skip
    clock = Clock()
    cache = make_cache(clock)
    assert cache.put(key(), SCANNER, big)
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName="cs", Key={"pk": {"S": key().pk}, "sk": {"S": key().sk}})["Item"]  # fmt: skip
    assert "payload" not in item and item["s3_key"]["S"].startswith("containerscan/cache/")
    obj = boto3.client("s3", region_name=REGION).head_object(
        Bucket="cs-runs", Key=item["s3_key"]["S"]
    )
    assert obj["ContentLength"] > ITEM_PAYLOAD_MAX and obj["ServerSideEncryption"] == "AES256"
    assert len(cache.get_many([key()])[key()].findings) == 1000
    # Without a bucket a too-big result is simply not cached (the next run scans again).
    assert not make_cache(clock, bucket=None).put(key("sha256:" + "c" * 64), SCANNER, big)


def test_many_keys_are_read_in_batches(aws: None) -> None:
    cache = make_cache(Clock())
    keys = [key(f"sha256:{i:064x}") for i in range(250)]
    for k in keys[::2]:
        cache.put(k, SCANNER, [vuln("1")])
    assert set(cache.get_many(keys)) == set(keys[::2])


severities = st.sampled_from(list(Severity))
text = st.text(min_size=0, max_size=30)
packages = st.builds(Package, name=text, installed_version=text,
                     fixed_version=st.none() | text, package_manager=st.none() | text,
                     file_path=st.none() | text, layer=st.none() | text)  # fmt: skip
vulns = st.builds(
    VulnerabilityFinding, resource=st.just(IMAGE), vulnerability_id=text, title=text,
    severity=severities, scanner=st.builds(ScannerInfo, text, text), description=text,
    cves=st.lists(text, max_size=3).map(tuple), packages=st.lists(packages, max_size=3).map(tuple),
    cvss=st.lists(st.builds(Cvss, text, st.floats(0, 10), st.none() | text), max_size=2).map(tuple),
    references=st.lists(text, max_size=2).map(tuple), qid=st.none() | text,
    exploit_available=st.none() | st.booleans(),
    published_at=st.none() | st.datetimes(timezones=st.just(UTC)),
)  # fmt: skip
secrets = st.builds(SecretFinding, resource=st.just(IMAGE), rule_id=text, category=text,
                    title=text, severity=severities, scanner=st.builds(ScannerInfo, text, text),
                    file_path=text, line=st.integers(0, 10**6), layer=st.none() | text)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(finding=vulns | secrets)
def test_serialization_round_trips(finding) -> None:
    import json

    doc = json.loads(json.dumps(finding_to_dict(finding)))
    assert finding_from_dict(doc, IMAGE) == finding
