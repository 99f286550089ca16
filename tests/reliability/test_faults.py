"""Faults in the sweep: Security Hub, ECR, DynamoDB, S3 and SNS failing, scanners misbehaving.

The invariant checked after every run, whatever failed: for every image whose scan succeeded
and whose scope was published, the hub holds exactly the truth (one active finding per fact,
no duplicate); every other image keeps exactly what it had before (same findings, same
UpdatedAt: not even re-imported); and a clean rerun converges to the whole truth with a
ledger that matches Security Hub.

Already covered elsewhere and not repeated: the gateway under injected throttling
(tests/securityhub/test_gateway.py), a crash / hang-hard / exit 40 / garbage scan in a first
sweep and a repository whose DescribeImages is denied (tests/check/test_sweep.py), each exit
code's error message (tests/check/test_qscanner.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from check.config import RunConfig
from check.qscanner import EXIT_CODES, POLICY_RESULTS
from check.request import parse_request
from check.sweep import RunStatus, build_sweep
from securityhub.aws import AccountTarget, SessionFactory
from securityhub.errors import EXIT_OK, EXIT_PARTIAL
from tests.check.standin import (
    AWS_KEY_SECRET,
    BUSYBOX_CVE_2019_5747,
    CURL_CVE_2019_5481,
    GITHUB_PAT_SECRET,
    MUSL_CVE_2019_14697,
    OPENSSL_CVE_2019_1547,
    PYYAML_CVE_2020_14343,
    REQUESTS_CVE_2023_32681,
    STANDIN,
)
from tests.reliability.faults import CompressedTime, Flaky
from tests.reliability.world import (
    ACCOUNT,
    BUCKET,
    REGION,
    TABLE,
    Estate,
    active_findings,
    hub_truth,
    ledger_state,
    resource_id,
)

# Every figure a test measured, for the README's Reliability section (printed with -s).
FIGURES: dict[str, Any] = {}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    import botocore.endpoint

    from securityhub import emulator
    from securityhub.ledger import create_table

    monkeypatch.setattr(botocore.endpoint, "time", CompressedTime())
    monkeypatch.setenv("QSCANNER_PATH", str(STANDIN))
    monkeypatch.setenv("QUALYS_POD", "US1")
    monkeypatch.setenv("QUALYS_ACCESS_TOKEN", "standin-token-123456")
    monkeypatch.setenv("QSCANNER_STANDIN_SCENARIO", str(tmp_path / "scenario.json"))
    emulator.install()
    emulator.set_faults()
    try:
        with mock_aws():
            create_table(boto3.client("dynamodb", region_name=REGION), TABLE)
            boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
            yield
    finally:
        emulator.set_faults()
        emulator.uninstall()


def sweep(
    tmp_path: Path,
    doc: dict[str, Any] | None = None,
    sessions: SessionFactory | None = None,
    **changes: Any,
) -> RunStatus:
    base = RunConfig(table=TABLE, bucket=BUCKET, concurrency=8, image_timeout=30,
                     output_dir=tmp_path / "out")  # fmt: skip
    request = parse_request(doc or {}, source="test")
    built = build_sweep(
        request,
        base.with_overrides(**changes),
        sessions=sessions or SessionFactory(default_region=REGION),
    )
    return built.run()


def hub() -> Any:
    return boto3.client("securityhub", region_name=REGION)


def by_resource(facts: set[tuple[str, str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for resource, what in facts:
        out.setdefault(resource, set()).add(what)
    return out


def assert_ledger_matches_hub() -> None:
    """Every ledger entry marked ACTIVE is active in the hub, and the reverse."""
    ledger = ledger_state(boto3.client("dynamodb", region_name=REGION))
    active = set(active_findings(hub()))
    ledger_active = {fid for fid, state in ledger.items() if state == "ACTIVE"}
    assert ledger_active == active, {
        "in the ledger only": sorted(ledger_active - active)[:5],
        "in the hub only": sorted(active - ledger_active)[:5],
    }


def build_estate(ecr: Any) -> Estate:
    """Eight repositories, twelve images, vulnerabilities and secrets."""
    estate = Estate()
    catalogue = [
        [OPENSSL_CVE_2019_1547, MUSL_CVE_2019_14697],
        [CURL_CVE_2019_5481],
        [BUSYBOX_CVE_2019_5747, REQUESTS_CVE_2023_32681],
        [PYYAML_CVE_2020_14343],
        [],
    ]
    for i in range(12):
        repository = f"team-{i % 8}/svc"
        secrets = [AWS_KEY_SECRET] if i % 4 == 0 else [GITHUB_PAT_SECRET] if i % 5 == 0 else []
        estate.add(ecr, repository, f"img-{i}", tag=f"v{i}", findings=catalogue[i % 5],
                   secrets=secrets)  # fmt: skip
    return estate


def change_the_world(estate: Estate) -> None:
    """Between runs: a fix, a new vulnerability, a secret removed, a clean image turns dirty."""
    digests = list(estate.images.values())
    estate.findings[digests[0]] = (MUSL_CVE_2019_14697,)  # openssl fixed
    estate.findings[digests[1]] = (CURL_CVE_2019_5481, BUSYBOX_CVE_2019_5747)  # new
    estate.secrets[digests[4]] = ()
    estate.findings[digests[9]] = (PYYAML_CVE_2020_14343,)


# ------------------------------------------------------------- Security Hub faults


@pytest.mark.slow  # the backoff of the retries is waited out (~15 s)
def test_security_hub_throttling_and_failed_findings_lose_nothing(
    aws: None, tmp_path: Path
) -> None:
    from securityhub import emulator

    ecr = boto3.client("ecr", region_name=REGION)
    estate = build_estate(ecr)
    scenario = Path(tmp_path / "scenario.json")
    estate.scenario().write(scenario)
    injected = {"throttled": 0, "failed_findings": 0}
    for run in (1, 2):
        # 30% of calls throttled, a quarter of the findings of each import failed (transient).
        faults = emulator.set_faults(emulator.Faults(throttle=0.3, failed=0.25, seed=run))
        status = sweep(tmp_path, {"force": True})
        emulator.set_faults()
        assert status.exit_code == EXIT_OK, status.as_dict()["errors"]
        injected["throttled"] += faults.throttled
        injected["failed_findings"] += faults.failed_findings
        assert hub_truth(active_findings(hub())) == estate.truth()
        assert_ledger_matches_hub()
        change_the_world(estate)
        estate.scenario().write(scenario)
    assert injected["throttled"] > 0 and injected["failed_findings"] > 0
    FIGURES["security_hub"] = injected


def test_an_account_denied_by_security_hub_keeps_the_others(aws: None, tmp_path: Path) -> None:
    """Security Hub denies access in one account of two: that account is reported, untouched."""
    spoke = "210987654321"
    creds = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{spoke}:role/ContainerScanRole", RoleSessionName="setup"
    )["Credentials"]
    session = boto3.session.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=REGION,
    )
    own, other = Estate(), Estate()
    own.add(boto3.client("ecr", region_name=REGION), "app", "own-1", findings=[CURL_CVE_2019_5481])
    spoke_digest = other.add(session.client("ecr"), "app", "spoke-1",
                             findings=[MUSL_CVE_2019_14697])  # fmt: skip
    scenario = own.scenario()
    scenario.images.update(other.scenario().images)
    scenario.write(tmp_path / "scenario.json")
    factory = SessionFactory(default_region=REGION)
    spoke_session = factory.session(
        AccountTarget(spoke, f"arn:aws:iam::{spoke}:role/ContainerScanRole", None)
    )
    spoke_key = spoke_session.get_credentials().get_frozen_credentials().access_key

    def deny(model: Any, request_signer: Any = None, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        if request_signer._credentials.get_frozen_credentials().access_key != spoke_key:
            return None
        error = {"Error": {"Code": "AccessDeniedException", "Message": "not subscribed"},
                 "ResponseMetadata": {"HTTPStatusCode": 403}}  # fmt: skip
        return AWSResponse("https://securityhub.invalid", 403, {}, None), error

    spoke_session.events.register("before-call.securityhub", deny)
    doc = {"accounts": [ACCOUNT, {"account_id": spoke, "role": "ContainerScanRole"}]}
    status = sweep(tmp_path, doc, sessions=factory)
    assert status.exit_code == EXIT_PARTIAL
    assert [e["scope"] for e in status.errors] == [f"{spoke}/{REGION}"]
    # The run's error says how many findings; the scope's summary says why.
    assert "AccessDeniedException" in status.security_hub[f"{spoke}/{REGION}"]["errors"][0]
    assert hub_truth(active_findings(hub())) == own.truth()
    assert not active_findings(session.client("securityhub"))
    assert spoke_digest  # scanned, but never published in the denied account


# ----------------------------------------------- ECR, DynamoDB, S3, SNS at random


def _topic() -> str:
    return boto3.client("sns", region_name=REGION).create_topic(Name="alerts")["TopicArn"]


@pytest.mark.slow  # botocore's adaptive mode paces the clients after throttling (~25 s)
def test_aws_services_failing_at_random_are_ridden_out(aws: None, tmp_path: Path) -> None:
    """30% of ECR, DynamoDB, S3 and SNS calls throttled or 5xx: the retries absorb them."""
    ecr = boto3.client("ecr", region_name=REGION)
    estate = build_estate(ecr)
    scenario = tmp_path / "scenario.json"
    estate.scenario().write(scenario)
    topic = _topic()
    injected = 0
    for run in (1, 2):
        base = boto3.session.Session(region_name=REGION)
        flaky = Flaky(0.3, seed=run)
        flaky.install(base, ("ecr", "dynamodb", "s3", "sns"))
        status = sweep(tmp_path, {"force": run == 2},
                       sessions=SessionFactory(REGION, base_session=base),
                       sns_topic_arn=topic)  # fmt: skip
        assert flaky.total > 10, flaky.calls
        assert {name.split(".")[0] for name in flaky.injected} >= {"ecr", "dynamodb", "s3"}
        injected += flaky.total
        assert status.exit_code in (EXIT_OK, 4), status.as_dict()["errors"]
        assert not status.errors
        assert hub_truth(active_findings(hub())) == estate.truth()
        assert_ledger_matches_hub()
        change_the_world(estate)
        estate.scenario().write(scenario)
    FIGURES["aws_random"] = injected


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_faults_beyond_the_retries_touch_only_what_was_observed(
    aws: None, tmp_path: Path, seed: int
) -> None:
    """Retries cut to 2 attempts, 35% of calls failing (5xx): parts of the run fail for real.

    Whatever failed, every image is either exactly at the new truth (scanned and published)
    or exactly as before (not even re-imported); a clean rerun converges.
    """
    ecr = boto3.client("ecr", region_name=REGION)
    estate = build_estate(ecr)
    scenario = tmp_path / "scenario.json"
    estate.scenario().write(scenario)
    assert sweep(tmp_path).exit_code == EXIT_OK
    before = active_findings(hub())
    old = by_resource(hub_truth(before))
    change_the_world(estate)
    gone = estate.images.pop(("team-3/svc", "img-3"))  # deleted from the registry
    ecr.batch_delete_image(repositoryName="team-3/svc", imageIds=[{"imageDigest": gone}])
    estate.scenario().write(scenario)

    base = boto3.session.Session(region_name=REGION)
    flaky = Flaky(0.35, seed=seed, throttling=False)
    flaky.install(base, ("ecr", "dynamodb", "s3", "sns", "securityhub"))
    status = sweep(tmp_path, {"force": True},
                   sessions=SessionFactory(REGION, max_attempts=2, base_session=base))  # fmt: skip
    assert flaky.total > 0
    # Something really failed beyond the retries (else this test would prove nothing).
    assert status.errors or status.outputs.get("errors"), flaky.injected
    after = active_findings(hub())
    now = by_resource(hub_truth(after))
    new = by_resource(estate.truth())
    published_ok = {
        resource_id(r.image.repository, r.image.digest)
        for r in status.records
        if r.outcome in ("scanned", "cached")
        and not any(e["scope"] == f"{r.plan.account_id}/{r.plan.region}" for e in status.errors)
    }
    for resource in set(old) | set(new) | set(now):
        holds = now.get(resource, set())
        if resource in published_ok:
            assert holds == new.get(resource, set()), resource
        else:
            # Not observed, or its publication failed: before or after, nothing in between
            # that was never true, and nothing that was never observed.
            assert holds in (old.get(resource, set()), new.get(resource, set())), resource
    for fid, finding in after.items():
        resource = finding["Resources"][0]["Id"]
        if (
            resource not in published_ok
            and fid in before
            and now.get(resource) == old.get(resource)
        ):
            assert finding["UpdatedAt"] >= before[fid]["UpdatedAt"]

    # The faults stop: a rerun converges, and the ledger agrees with Security Hub.
    status = sweep(tmp_path, {"force": True})
    assert status.exit_code == EXIT_OK, status.as_dict()["errors"]
    assert hub_truth(active_findings(hub())) == estate.truth()
    assert_ledger_matches_hub()
    FIGURES.setdefault("beyond_retries", []).append(flaky.total)


# ------------------------------------------------------------------ the scanner


MISBEHAVIOURS = (
    "crash",
    "hang",
    "garbage",
    *(f"exit:{code}" for code in sorted(EXIT_CODES) if code and code not in POLICY_RESULTS),
)


def test_every_scanner_failure_leaves_the_image_untouched(aws: None, tmp_path: Path) -> None:
    """One image per failure (crash, hang past the timeout, garbage, every documented exit
    code): each keeps exactly its previous findings, not re-imported; the rest move on."""
    ecr = boto3.client("ecr", region_name=REGION)
    estate = Estate()
    failing: dict[str, str] = {}
    for i, behaviour in enumerate(MISBEHAVIOURS):
        digest = estate.add(ecr, f"bad-{i:02d}", f"bad-{i}", findings=[MUSL_CVE_2019_14697],
                            secrets=[AWS_KEY_SECRET])  # fmt: skip
        failing[digest] = behaviour
    huge = estate.add(ecr, "good", "huge", findings=[CURL_CVE_2019_5481])
    deny = estate.add(ecr, "good", "deny", tag="2", findings=[CURL_CVE_2019_5481])
    audit = estate.add(ecr, "good", "audit", tag="3", findings=[BUSYBOX_CVE_2019_5747])
    scenario = tmp_path / "scenario.json"
    estate.scenario().write(scenario)
    assert sweep(tmp_path).exit_code == EXIT_OK
    before = active_findings(hub())
    assert hub_truth(before) == estate.truth()

    for digest in failing:  # what a successful scan would now say: a fix, a new finding
        estate.findings[digest] = (CURL_CVE_2019_5481,)
    estate.findings[huge] = estate.findings[deny] = estate.findings[audit] = (
        OPENSSL_CVE_2019_1547,
    )
    overrides = dict(failing)
    overrides.update({huge: "huge-output", deny: "exit:42", audit: "exit:43"})
    estate.scenario(overrides).write(scenario)
    status = sweep(tmp_path, {"force": True}, image_timeout=2)
    assert status.exit_code == EXIT_PARTIAL
    outcomes = {r.image.digest: r for r in status.records}
    for digest, behaviour in failing.items():
        assert outcomes[digest].outcome == "failed", behaviour
        assert outcomes[digest].error, behaviour
    assert "timed out" in next(outcomes[d].error for d, b in failing.items() if b == "hang")
    for digest in (huge, deny, audit):
        assert outcomes[digest].outcome == "scanned", outcomes[digest].error
    after = active_findings(hub())
    expected = estate.truth([huge, deny, audit]) | {
        fact for fact in hub_truth(before) if fact[0].rsplit("/", 1)[-1] in failing
    }
    assert hub_truth(after) == expected
    for fid, finding in after.items():
        if finding["Resources"][0]["Id"].rsplit("/", 1)[-1] in failing:
            assert finding["UpdatedAt"] == before[fid]["UpdatedAt"]  # not even re-imported
    assert_ledger_matches_hub()
    FIGURES["scanner_failures"] = len(failing) + 1  # + huge output, which must succeed


def test_ledger_failures_are_aws_errors_not_tracebacks(aws: None) -> None:
    """A DynamoDB failure after the retries is the ledger's AwsError (the sweep's unit of work
    catches those); it used to escape as a botocore ClientError and end the whole sweep."""
    from securityhub.correlate import LedgerEntry
    from securityhub.errors import AwsError
    from securityhub.ledger import Ledger, LedgerRecord

    base = boto3.session.Session(region_name=REGION)
    Flaky(1.0, throttling=False).install(base, ("dynamodb",))
    ledger = Ledger(SessionFactory(REGION, max_attempts=1, base_session=base).client("dynamodb"),
                    TABLE)  # fmt: skip
    now = datetime.now(UTC)
    scope = f"ecr/{ACCOUNT}/{REGION}/app@sha256:{'0' * 64}"
    entry = LedgerEntry("containerscan/x", scope, "vulnerability", "f", now, now, now)
    calls = {
        "Query": lambda: ledger.scope_entries(entry.scope),
        "BatchGetItem": lambda: ledger.stored_findings([entry]),
        "BatchWriteItem": lambda: ledger.forget([entry]),
        "Scan": lambda: list(ledger.scan_partitions()),
        "TransactWriteItems": lambda: ledger.record([LedgerRecord(entry, ACCOUNT, REGION, {})]),
    }
    for operation, call in calls.items():
        with pytest.raises(AwsError, match=operation) as info:
            call()
        assert "InternalServerError" in info.value.message or "ServiceUnavailable" in (
            info.value.message
        )
