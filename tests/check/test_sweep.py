"""End to end: a registry in moto, the QScanner stand-in, the emulated Security Hub.

Two runs over the same registry, with the reports changed in between (a fixed
vulnerability, a new one, a deleted image, a scan that fails): after each run the hub holds
exactly the truth for every image observed, the failed image's findings are untouched, and
unchanged findings are not imported again.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from check.config import RunConfig
from check.request import parse_request
from check.sweep import EXIT_FINDINGS, build_sweep
from securityhub.aws import SessionFactory
from securityhub.errors import EXIT_OK, EXIT_PARTIAL
from securityhub.ledger import create_table
from tests.check.ecrfixtures import put_image, put_index
from tests.check.standin import (
    AWS_KEY_SECRET,
    BUSYBOX_CVE_2019_5747,
    CURL_CVE_2019_5481,
    MUSL_CVE_2019_14697,
    OPENSSL_CVE_2019_1547,
    STANDIN,
    Scenario,
    rule_uuid,
)

REGION = "us-east-1"
TABLE = "containerscan"
BUCKET = "containerscan-runs"
HUB = "123456789012"  # moto's default account: the caller


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from securityhub import emulator

    monkeypatch.setenv("QSCANNER_PATH", str(STANDIN))
    monkeypatch.setenv("QUALYS_POD", "US1")
    monkeypatch.setenv("QUALYS_ACCESS_TOKEN", "standin-token-123456")
    monkeypatch.setenv("QSCANNER_STANDIN_SCENARIO", str(tmp_path / "scenario.json"))
    Scenario().write(tmp_path / "scenario.json")  # every image clean until a test says
    emulator.install()
    with mock_aws():
        create_table(boto3.client("dynamodb", region_name=REGION), TABLE)
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        yield
    emulator.uninstall()


def config(tmp_path: Path, **changes: Any) -> RunConfig:
    base = RunConfig(table=TABLE, bucket=BUCKET, concurrency=4, image_timeout=30,
                     output_dir=tmp_path / "out")  # fmt: skip
    return base.with_overrides(**changes)


def run(tmp_path: Path, doc: dict[str, Any], sessions: Any = None, **changes: Any):
    request = parse_request(doc, source="test")
    sessions = sessions or SessionFactory(default_region=REGION)
    sweep = build_sweep(request, config(tmp_path, **changes), sessions=sessions)
    return sweep.run()


def active_findings(region: str = REGION, client: Any = None) -> dict[str, dict[str, Any]]:
    hub = client or boto3.client("securityhub", region_name=region)
    found: dict[str, dict[str, Any]] = {}
    token = None
    while True:
        params: dict[str, Any] = {
            "Filters": {"RecordState": [{"Value": "ACTIVE", "Comparison": "EQUALS"}]},
            "MaxResults": 100,
        }
        if token:
            params["NextToken"] = token
        page = hub.get_findings(**params)
        found.update({f["Id"]: f for f in page["Findings"]})
        token = page.get("NextToken")
        if not token:
            return found


def truth(findings: dict[str, dict[str, Any]]) -> set[tuple[str, str]]:
    """(resource id, vulnerability QID or secret rule) of each active finding (one finding
    per CVE: the QID naming it is in ProductFields)."""
    out = set()
    for f in findings.values():
        resource = f["Resources"][0]["Id"]
        if f.get("Vulnerabilities"):
            what = f["ProductFields"].get("containerscan/qualys/qid", f["Vulnerabilities"][0]["Id"])
        else:
            what = f["Id"].rsplit("/", 3)[-3] if "secret" in f["Id"] else f["Id"]
        out.add((resource, str(what)))
    return out


def resource_id(repository: str, digest: str, account: str = HUB) -> str:
    return f"arn:aws:ecr:{REGION}:{account}:repository/{repository}/{digest}"


def test_two_runs_leave_the_hub_telling_the_truth(aws: None, tmp_path: Path) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    for name in ("payments/api", "payments/worker", "sandbox/tmp", "web"):
        ecr.create_repository(repositoryName=name)
    api = put_image(ecr, "payments/api", "api-1", "1.0")
    worker = put_image(ecr, "payments/worker", "worker-1", "1.0")
    # The same digest under two tags and in two repositories: scanned once.
    ecr.put_image(repositoryName="payments/api", imageTag="stable",
                  imageManifest=ecr.batch_get_image(repositoryName="payments/api",
                  imageIds=[{"imageDigest": api}])["images"][0]["imageManifest"],
                  imageDigest=api)  # fmt: skip
    shared = put_image(ecr, "web", "api-1", "latest")
    assert shared == api
    index, children = put_index(ecr, "payments/worker", "worker-multi", "2.0")
    sandbox = put_image(ecr, "sandbox/tmp", "sandbox-1", "x")

    scenario = Scenario()
    scenario.image(api, findings=[OPENSSL_CVE_2019_1547, MUSL_CVE_2019_14697],
                   secrets=[AWS_KEY_SECRET])  # fmt: skip
    scenario.image(worker, findings=[CURL_CVE_2019_5481])
    scenario.image(children["amd64"], findings=[BUSYBOX_CVE_2019_5747])
    scenario.image(children["arm64"], findings=[BUSYBOX_CVE_2019_5747, CURL_CVE_2019_5481])
    scenario.image(sandbox, findings=[MUSL_CVE_2019_14697])
    scenario.write(Path(_scenario_path()))

    doc = {"repositories": ["payments/*", "web"], "exclude": ["sandbox/*"], "regions": [REGION]}
    first = run(tmp_path, doc)
    report = first.as_dict()
    assert first.exit_code == EXIT_OK, report
    # api (3 records: 2 repos; tags merge into one record per repo), worker, 2 platforms.
    assert report["counts"]["unique_digests"] == 4
    assert report["counts"]["scanned"] == len(first.records) == 5
    assert {r.image.platform for r in first.records} == {None, "linux/amd64", "linux/arm64/v8"}
    assert all(r.image.digest != index for r in first.records)

    expected = {
        (resource_id("payments/api", api), "376817"),
        (resource_id("payments/api", api), "376802"),
        (resource_id("web", api), "376817"),
        (resource_id("web", api), "376802"),
        (resource_id("payments/worker", worker), "376705"),
        (resource_id("payments/worker", children["amd64"]), "376354"),
        (resource_id("payments/worker", children["arm64"]), "376354"),
        (resource_id("payments/worker", children["arm64"]), "376705"),
    }
    findings = active_findings()
    vulns = {t for t in truth(findings) if t[1].isdigit()}
    assert vulns == expected
    secrets = [f for f in findings.values() if not f.get("Vulnerabilities")]
    assert len(secrets) == 2  # the AWS key in api, seen in two repositories
    assert all("AKIA" not in json.dumps(f) for f in secrets)
    sandbox_ids = [f for f in findings.values() if "sandbox" in f["Resources"][0]["Id"]]
    assert not sandbox_ids

    status = json.loads(
        boto3.client("s3", region_name=REGION)
        .get_object(Bucket=BUCKET, Key=f"containerscan/runs/{first.run_id}/status.json")["Body"]
        .read()
    )
    assert status["counts"]["scanned"] == 5
    assert status["security_hub"][f"{HUB}/{REGION}"]["created"] == len(findings)
    local = tmp_path / "out" / "runs" / first.run_id
    assert (local / "status.json").is_file()
    raw = list((local / "images" / api.replace(":", "-") / "raw").iterdir())
    assert any(p.name.endswith("-Report.sarif.json") for p in raw)
    obj = boto3.client("s3", region_name=REGION).head_object(
        Bucket=BUCKET, Key=f"containerscan/runs/{first.run_id}/status.json"
    )
    assert obj["ServerSideEncryption"] == "AES256"

    # ---- the world changes: api fixed openssl and gained curl; worker's scan fails;
    # the amd64 platform is unchanged; web's copy of api deleted.
    scenario = Scenario()
    scenario.image(api, findings=[MUSL_CVE_2019_14697, CURL_CVE_2019_5481],
                   secrets=[AWS_KEY_SECRET])  # fmt: skip
    scenario.image(worker, behaviour="crash")
    scenario.image(children["amd64"], findings=[BUSYBOX_CVE_2019_5747])
    scenario.image(children["arm64"], findings=[BUSYBOX_CVE_2019_5747, CURL_CVE_2019_5481])
    scenario.write(Path(_scenario_path()))
    ecr.batch_delete_image(repositoryName="web", imageIds=[{"imageDigest": api}])
    second = run(tmp_path, {**doc, "force": True})
    report = second.as_dict()
    assert second.exit_code == EXIT_PARTIAL
    failed = [i for i in report["images"] if i["outcome"] == "failed"]
    assert [(i["repository"], i["digest"]) for i in failed] == [("payments/worker", worker)]
    assert failed[0]["error"]

    expected_now = {
        (resource_id("payments/api", api), "376802"),
        (resource_id("payments/api", api), "376705"),  # new
        (resource_id("payments/worker", worker), "376705"),  # failed scan: untouched
        (resource_id("payments/worker", children["amd64"]), "376354"),
        (resource_id("payments/worker", children["arm64"]), "376354"),
        (resource_id("payments/worker", children["arm64"]), "376705"),
    }
    after = active_findings()
    assert {t for t in truth(after) if t[1].isdigit()} == expected_now
    hub = report["security_hub"][f"{HUB}/{REGION}"]
    # archived: openssl in api (QID 376817: 3 CVEs, one finding each), and web's openssl
    # and musl (3 + 1) + 1 secret (image deleted from web).
    assert hub["archived"] == 8
    assert hub["created"] == 2  # curl in api: QID 376705 names 2 CVEs
    # Nothing else changed, and nothing was due for a refresh: not imported again.
    assert hub["updated"] == hub["refreshed"] == hub["reactivated"] == 0
    for fid, finding in after.items():
        if fid in findings and "payments/worker" in finding["Resources"][0]["Id"]:
            assert finding["UpdatedAt"] == findings[fid]["UpdatedAt"]
    # The alert's notion of "new": curl in api, against api's previous result.
    assert {f.qid for r in second.records for f in r.new_findings} == {"376705"}


def test_cache_hits_reuse_results_and_still_feed_correlation(aws: None, tmp_path: Path) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="app")
    digest = put_image(ecr, "app", "app-1", "1")
    Scenario().image(digest, findings=[MUSL_CVE_2019_14697]).write(Path(_scenario_path()))
    first = run(tmp_path, {"repositories": ["app"]})
    assert first.as_dict()["counts"]["scanned"] == 1
    # The scanner now crashes: a cache hit never runs it.
    Scenario().image(digest, behaviour="crash").write(Path(_scenario_path()))
    second = run(tmp_path, {"repositories": ["app"]})
    counts = second.as_dict()["counts"]
    assert (counts["cached"], counts["scanned"], counts["failed"]) == (1, 0, 0)
    assert second.exit_code == EXIT_OK
    assert second.records[0].findings[0].qid == "376802"
    assert not second.records[0].new_findings
    # An unchanged image writes nothing of its own: status.json says it was cached, and when.
    results = tmp_path / "out" / "runs" / second.run_id / "images" / digest.replace(":", "-")
    assert not results.exists()
    (image,) = second.as_dict()["images"]
    assert image["outcome"] == "cached" and image["cached_at"]
    assert len(active_findings()) == 1
    # --force bypasses the cache: the crash is now visible, the findings untouched.
    third = run(tmp_path, {"repositories": ["app"], "force": True})
    assert third.exit_code == EXIT_PARTIAL
    assert len(active_findings()) == 1


def alert_queue() -> tuple[str, Any, str]:
    """An SNS topic delivering raw messages to an SQS queue: (topic ARN, sqs client, URL)."""
    sns = boto3.client("sns", region_name=REGION)
    topic = sns.create_topic(Name="containerscan-alerts")["TopicArn"]
    sqs = boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn,
                  Attributes={"RawMessageDelivery": "true"})  # fmt: skip
    return topic, sqs, queue


def alerts_received(sqs: Any, queue: str) -> list[str]:
    """The alert bodies delivered since the last call (deleted once read)."""
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    for message in messages:
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    return [m["Body"] for m in messages]


def test_fail_on_and_alert(aws: None, tmp_path: Path) -> None:
    topic, sqs, queue = alert_queue()
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="app")
    digest = put_image(ecr, "app", "app-1", "1")
    Scenario().image(digest, findings=[MUSL_CVE_2019_14697, BUSYBOX_CVE_2019_5747],
                     secrets=[AWS_KEY_SECRET]).write(Path(_scenario_path()))  # fmt: skip
    status = run(tmp_path, {"repositories": ["app"], "fail_on": "critical"},
                 sns_topic_arn=topic, alert_mode="severity")  # fmt: skip
    assert status.exit_code == EXIT_FINDINGS
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 1
    body = messages[0]["Body"]
    assert "CVE-2019-14697" in body  # musl, CRITICAL
    assert "CVE-2019-5747" not in body  # busybox, LOW: below the HIGH threshold
    # QScanner 4.8's secret rules are UUIDs; the finding's title names the kind.
    assert rule_uuid("aws-access-key-id") in body and "AKIA" not in body
    # A rerun finds nothing new: no second message.
    run(tmp_path, {"repositories": ["app"]}, sns_topic_arn=topic, alert_mode="severity")
    assert not sqs.receive_message(QueueUrl=queue).get("Messages")


def test_cross_account_images_are_published_in_their_owner_account(
    aws: None, tmp_path: Path
) -> None:
    spoke = "210987654321"
    role = f"arn:aws:iam::{spoke}:role/ContainerScanRole"
    creds = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=role, RoleSessionName="setup"
    )["Credentials"]
    session = boto3.session.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=REGION,
    )
    ecr = session.client("ecr")
    ecr.create_repository(repositoryName="spoke/app")
    digest = put_image(ecr, "spoke/app", "spoke-1", "1")
    Scenario().image(digest, findings=[CURL_CVE_2019_5481]).write(Path(_scenario_path()))
    status = run(tmp_path, {"accounts": [{"account_id": spoke, "role": "ContainerScanRole",
                                          "external_id": "ext-123"}]})  # fmt: skip
    assert status.exit_code == EXIT_OK, status.as_dict()
    assert status.records[0].plan.account_id == spoke
    spoke_findings = active_findings(client=session.client("securityhub"))
    assert {f["AwsAccountId"] for f in spoke_findings.values()} == {spoke}
    assert not active_findings()  # nothing in the hub account


def test_an_account_that_cannot_be_entered_is_partial_not_fatal(aws: None, tmp_path: Path) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="app")
    put_image(ecr, "app", "app-1", "1")
    # 999999999999 has no role: reported, and the caller's account is still swept.
    status = run(tmp_path, {"accounts": [HUB, "999999999999"]})
    assert status.exit_code == EXIT_PARTIAL
    assert [e["scope"] for e in status.errors] == [f"999999999999/{REGION}"]
    assert status.as_dict()["counts"]["scanned"] == 1


def test_dry_run_writes_nothing(aws: None, tmp_path: Path) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="app")
    put_image(ecr, "app", "app-1", "1")
    put_image(ecr, "app", "app-0", None)
    status = run(tmp_path, {"dry_run": True, "tagged_only": True})
    assert [r.outcome for r in status.records] == ["selected"]
    assert status.as_dict()["counts"]["not_scanned"] == 1
    assert not (tmp_path / "out").exists()
    assert not active_findings()
    items = boto3.client("dynamodb", region_name=REGION).scan(TableName=TABLE)["Items"]
    assert items == []


def test_tagging_scanned_images(aws: None, tmp_path: Path) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="mutable")
    ecr.create_repository(repositoryName="locked", imageTagMutability="IMMUTABLE")
    one = put_image(ecr, "mutable", "m-1", "1")
    put_image(ecr, "locked", "l-1", "1")
    two = put_image(ecr, "locked", "l-2", "2")
    # In the immutable repository the tag already names another image.
    body = ecr.batch_get_image(repositoryName="locked", imageIds=[{"imageDigest": two}])
    ecr.put_image(repositoryName="locked", imageTag="scanned", imageDigest=two,
                  imageManifest=body["images"][0]["imageManifest"])  # fmt: skip
    status = run(tmp_path, {}, tag_scanned="scanned")
    outcomes = {(t.repository, t.outcome) for t in status.tagging}
    assert outcomes == {("mutable", "tagged"), ("locked", "immutable")}
    assert status.exit_code == EXIT_OK  # reported, not fatal
    tags = ecr.describe_images(repositoryName="mutable", imageIds=[{"imageDigest": one}])
    assert set(tags["imageDetails"][0]["imageTags"]) == {"1", "scanned"}


def test_shards_split_the_registry(aws: None, tmp_path: Path) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    for i in range(12):
        ecr.create_repository(repositoryName=f"repo-{i:02d}")
        put_image(ecr, f"repo-{i:02d}", f"seed-{i}", "1")
    seen: list[str] = []
    for index in (1, 2, 3):
        status = run(tmp_path, {"shard": f"{index}/3", "dry_run": True})
        seen += [r.image.repository for r in status.records]
    assert sorted(seen) == [f"repo-{i:02d}" for i in range(12)]


def test_pushed_since_excludes_older_images(aws: None, tmp_path: Path) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="app")
    put_image(ecr, "app", "app-1", "1")
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    status = run(tmp_path, {"dry_run": True, "pushed_since": future})
    assert status.records == []
    status = run(tmp_path, {"dry_run": True, "pushed_since": "1d"})
    assert len(status.records) == 1


def _scenario_path() -> str:
    import os

    return os.environ["QSCANNER_STANDIN_SCENARIO"]


def test_a_repository_that_cannot_be_listed_keeps_its_findings(aws: None, tmp_path: Path) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    for name in ("app", "web"):
        ecr.create_repository(repositoryName=name)
    app = put_image(ecr, "app", "app-1", "1")
    web = put_image(ecr, "web", "web-1", "1")
    Scenario().image(app, findings=[CURL_CVE_2019_5481]).image(
        web, findings=[MUSL_CVE_2019_14697]
    ).write(Path(_scenario_path()))
    assert run(tmp_path, {}).exit_code == EXIT_OK
    before = active_findings()
    assert len(before) == 3  # curl's 2 CVEs, musl's 1
    # web's image is deleted, and then DescribeImages of web fails (an AWS-side fault injected
    # at the HTTP layer): web was not fully observed, so its finding must stay.
    ecr.batch_delete_image(repositoryName="web", imageIds=[{"imageDigest": web}])
    base = boto3.session.Session(region_name=REGION)

    def fail_web(params: dict[str, Any], **_: Any) -> Any:
        if json.loads(params["body"]).get("repositoryName") == "web":
            error = {"Error": {"Code": "AccessDeniedException", "Message": "denied"}}
            from botocore.awsrequest import AWSResponse

            return (AWSResponse("https://ecr", 400, {}, None), error)
        return None

    base.events.register("before-call.ecr.DescribeImages", fail_web)
    status = run(tmp_path, {"force": True}, sessions=SessionFactory(REGION, base_session=base))
    assert status.exit_code == EXIT_PARTIAL
    assert [e["scope"] for e in status.errors] == [f"{HUB}/{REGION}/web"]
    assert "AccessDeniedException" in status.errors[0]["error"]
    assert set(active_findings()) == set(before)


@pytest.mark.slow  # the hung scanner ignores SIGTERM: the runner's kill grace is waited out
def test_hanging_and_failing_scans_cost_only_their_image(aws: None, tmp_path: Path) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="app")
    ok = put_image(ecr, "app", "ok", "ok")
    hang = put_image(ecr, "app", "hang", "hang")
    unavailable = put_image(ecr, "app", "unavailable", "unavailable")
    garbage = put_image(ecr, "app", "garbage", "garbage")
    scenario = Scenario().image(ok, findings=[CURL_CVE_2019_5481])
    scenario.image(hang, behaviour="hang-hard").image(unavailable, behaviour="exit:40")
    scenario.image(garbage, behaviour="garbage").write(Path(_scenario_path()))
    status = run(tmp_path, {}, image_timeout=1.5)
    assert status.exit_code == EXIT_PARTIAL
    outcomes = {r.image.digest: (r.outcome, r.error or "") for r in status.records}
    assert outcomes[ok] == ("scanned", "")
    assert outcomes[hang][0] == "failed" and "timed out" in outcomes[hang][1]
    assert outcomes[unavailable][0] == "failed" and "40" in outcomes[unavailable][1]
    assert outcomes[garbage][0] == "failed"
    assert {f["Resources"][0]["Id"] for f in active_findings().values()} == {resource_id("app", ok)}


def test_longest_names_and_odd_tags_flow_through(aws: None, tmp_path: Path) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    name = "a" * 120 + "/" + "b-c" * 45  # 256 characters, ECR's maximum
    assert len(name) == 256
    ecr.create_repository(repositoryName=name)
    tag = "v1;rm -rf /$(id)`ü`"
    digest = put_image(ecr, name, "long", tag)
    Scenario().image(digest, findings=[CURL_CVE_2019_5481]).write(Path(_scenario_path()))
    status = run(tmp_path, {"repositories": [name], "images": [tag]})
    assert status.exit_code == EXIT_OK, status.as_dict()
    assert status.records[0].image.tags == (tag,)
    found = list(active_findings().values())
    assert len(found) == 2  # curl: one finding per CVE
    finding = found[0]
    assert finding["Resources"][0]["Id"] == resource_id(name, digest)
    assert len(finding["Id"]) <= 512


@pytest.mark.slow  # 60 repositories
def test_repositories_are_published_in_groups_while_scanning(aws: None, tmp_path: Path) -> None:
    from check.sweep import PUBLISH_BATCH_REPOSITORIES

    ecr = boto3.client("ecr", region_name=REGION)
    count = PUBLISH_BATCH_REPOSITORIES + 10
    for i in range(count):
        ecr.create_repository(repositoryName=f"svc-{i:03d}")
        put_image(ecr, f"svc-{i:03d}", f"svc-{i}", "1")
    Scenario().default(findings=[CURL_CVE_2019_5481]).write(Path(_scenario_path()))
    request = parse_request({}, source="test")
    sweep = build_sweep(request, config(tmp_path, concurrency=8),
                        sessions=SessionFactory(default_region=REGION))  # fmt: skip
    calls: list[int] = []
    real = sweep.publisher
    assert real is not None

    class Counting:
        def publish(self, region: str, observations: Any, **kwargs: Any) -> Any:
            calls.append(len(kwargs["repositories"]))
            return real.publish(region, observations, **kwargs)

        def known_repositories(self, account_id: str, region: str) -> frozenset[str]:
            return real.known_repositories(account_id, region)

    sweep.publisher = Counting()
    status = sweep.run()
    assert status.exit_code == EXIT_OK
    # Every repository published once, in several calls overlapping the scans.
    assert sum(calls) == count and len(calls) > 1
    assert max(calls) <= PUBLISH_BATCH_REPOSITORIES
    # curl: QID 376705 names 2 CVEs, one finding each
    assert status.security_hub[f"{HUB}/{REGION}"]["created"] == 2 * count
    assert len(active_findings()) == 2 * count


def test_a_named_platform_digest_is_scanned_on_its_own(aws: None, tmp_path: Path) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="multi")
    index, children = put_index(ecr, "multi", "m", "1")
    status = run(tmp_path, {"images": [children["arm64"]], "dry_run": True})
    assert [r.image.digest for r in status.records] == [children["arm64"]]
    status = run(tmp_path, {"images": [index], "dry_run": True})
    assert {r.image.digest for r in status.records} == set(children.values())


# ----------------------------------------------------- repositories deleted entirely


def hub_summary(status: Any) -> dict[str, Any]:
    return dict(status.security_hub.get(f"{HUB}/{REGION}", {}))


def two_repositories_then_delete_one(tmp_path: Path) -> tuple[Any, dict[str, dict[str, Any]]]:
    """team/app and other/svc with one finding each, swept; then team/app is deleted.

    Returns other/svc's digest and the findings before the deletion.
    """
    ecr = boto3.client("ecr", region_name=REGION)
    for name in ("team/app", "other/svc"):
        ecr.create_repository(repositoryName=name)
    app = put_image(ecr, "team/app", "app-1", "1")
    svc = put_image(ecr, "other/svc", "svc-1", "1")
    Scenario().image(app, findings=[CURL_CVE_2019_5481]).image(
        svc, findings=[MUSL_CVE_2019_14697]
    ).write(Path(_scenario_path()))
    assert run(tmp_path, {}).exit_code == EXIT_OK
    before = active_findings()
    assert {f["Resources"][0]["Id"] for f in before.values()} == {
        resource_id("team/app", app),
        resource_id("other/svc", svc),
    }
    ecr.delete_repository(repositoryName="team/app", force=True)
    return svc, before


def test_a_repository_deleted_entirely_is_archived_on_the_next_sweep(
    aws: None, tmp_path: Path
) -> None:
    from securityhub.ledger import Ledger

    ledger = Ledger(boto3.client("dynamodb", region_name=REGION), TABLE)
    assert ledger.known_repositories(HUB, REGION) == []
    svc, _ = two_repositories_then_delete_one(tmp_path)
    assert sorted(ledger.known_repositories(HUB, REGION)) == ["other/svc", "team/app"]
    status = run(tmp_path, {})
    assert status.exit_code == EXIT_OK, status.as_dict()
    assert {f["Resources"][0]["Id"] for f in active_findings().values()} == {
        resource_id("other/svc", svc)
    }
    assert hub_summary(status)["archived"] == 2  # team/app's curl: 2 CVEs
    assert [r.image.repository for r in status.records] == ["other/svc"]  # nothing to scan
    # Archived once: the next sweep finds nothing left to archive there.
    again = run(tmp_path, {})
    assert hub_summary(again).get("archived", 0) == 0 and again.exit_code == EXIT_OK


def test_runs_that_did_not_select_a_deleted_repository_leave_it_alone(
    aws: None, tmp_path: Path
) -> None:
    from check.selection import shard_of

    _, before = two_repositories_then_delete_one(tmp_path)
    narrow = run(tmp_path, {"repositories": ["other/*"]})
    excluded = run(tmp_path, {"exclude": ["team/*"]})
    mine = shard_of(HUB, REGION, "team/app", 4)
    other_shard = run(tmp_path, {"shard": f"{mine % 4 + 1}/4"})
    for status in (narrow, excluded, other_shard):
        assert status.exit_code == EXIT_OK, status.as_dict()
        assert hub_summary(status).get("archived", 0) == 0
    assert set(active_findings()) == set(before)
    # The run whose selection covers it (a glob; its shard) archives it.
    status = run(tmp_path, {"repositories": ["team/*"], "shard": f"{mine}/4"})
    assert hub_summary(status)["archived"] == 2  # team/app's curl: 2 CVEs
    assert len(active_findings()) == 1


def test_a_failed_repository_listing_archives_nothing(aws: None, tmp_path: Path) -> None:
    _, before = two_repositories_then_delete_one(tmp_path)
    base = boto3.session.Session(region_name=REGION)

    def fail(params: dict[str, Any], **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        error = {"Error": {"Code": "AccessDeniedException", "Message": "denied"}}
        return (AWSResponse("https://ecr", 400, {}, None), error)

    base.events.register("before-call.ecr.DescribeRepositories", fail)
    status = run(tmp_path, {}, sessions=SessionFactory(REGION, base_session=base))
    assert status.exit_code == EXIT_PARTIAL
    assert [e["scope"] for e in status.errors] == [f"{HUB}/{REGION}"]
    assert set(active_findings()) == set(before)


def test_a_ledger_directory_failure_keeps_deleted_repositories_and_sweeps_the_rest(
    aws: None, tmp_path: Path
) -> None:
    _, before = two_repositories_then_delete_one(tmp_path)
    base = boto3.session.Session(region_name=REGION)

    def fail_directory(params: dict[str, Any], **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        if "ledger-repos#" not in params["body"].decode():
            return None
        error = {"Error": {"Code": "AccessDeniedException", "Message": "denied"}}
        return (AWSResponse("https://dynamodb", 400, {}, None), error)

    base.events.register("before-call.dynamodb.Query", fail_directory)
    sessions = SessionFactory(REGION, base_session=base)
    status = run(tmp_path, {"force": True}, sessions=sessions)
    assert status.exit_code == EXIT_PARTIAL
    assert [e["scope"] for e in status.errors] == [f"{HUB}/{REGION}"]
    assert "ledger" in status.errors[0]["error"]
    assert status.as_dict()["counts"]["scanned"] == 1  # other/svc still swept
    assert set(active_findings()) == set(before)


# ------------------------------------------------------------ what "new" means


def expire_scan_cache() -> int:
    """Delete every scan cache item, as DynamoDB's TTL does once CACHE_TTL_DAYS passed."""
    from check.cache import PK_PREFIX

    dynamodb = boto3.client("dynamodb", region_name=REGION)
    items = dynamodb.scan(TableName=TABLE)["Items"]
    cached = [i for i in items if i["pk"]["S"].startswith(PK_PREFIX)]
    for item in cached:
        dynamodb.delete_item(TableName=TABLE, Key={"pk": item["pk"], "sk": item["sk"]})
    return len(cached)


def test_a_rescan_after_the_cache_expired_does_not_alert_again(aws: None, tmp_path: Path) -> None:
    topic, sqs, queue = alert_queue()
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="app")
    digest = put_image(ecr, "app", "app-1", "1")
    Scenario().image(digest, findings=[MUSL_CVE_2019_14697]).write(Path(_scenario_path()))
    first = run(tmp_path, {"repositories": ["app"]}, sns_topic_arn=topic, alert_mode="severity")
    assert first.as_dict()["counts"]["new_findings"] == 1
    assert len(alerts_received(sqs, queue)) == 1
    assert expire_scan_cache() == 1
    second = run(tmp_path, {"repositories": ["app"]}, sns_topic_arn=topic, alert_mode="severity")
    counts = second.as_dict()["counts"]
    assert (counts["scanned"], counts["new_findings"]) == (1, 0)
    assert second.alert is None
    assert alerts_received(sqs, queue) == []


def test_a_reactivated_finding_alerts_and_an_archived_one_does_not(
    aws: None, tmp_path: Path
) -> None:
    topic, sqs, queue = alert_queue()
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="app")
    digest = put_image(ecr, "app", "app-1", "1")
    both = [MUSL_CVE_2019_14697, CURL_CVE_2019_5481]  # CRITICAL, HIGH
    Scenario().image(digest, findings=both).write(Path(_scenario_path()))
    run(tmp_path, {"repositories": ["app"]}, sns_topic_arn=topic, alert_mode="severity")
    assert len(alerts_received(sqs, queue)) == 1
    # musl fixed: archived, nothing new.
    Scenario().image(digest, findings=[CURL_CVE_2019_5481]).write(Path(_scenario_path()))
    fixed = run(tmp_path, {"repositories": ["app"], "force": True}, sns_topic_arn=topic, alert_mode="severity")
    assert hub_summary(fixed)["archived"] == 1 and fixed.alert is None
    assert alerts_received(sqs, queue) == []
    # musl is back (a downgrade): reactivated in Security Hub, and that is news.
    Scenario().image(digest, findings=both).write(Path(_scenario_path()))
    back = run(tmp_path, {"repositories": ["app"], "force": True}, sns_topic_arn=topic, alert_mode="severity")
    assert hub_summary(back)["reactivated"] == 1
    assert [f.qid for r in back.records for f in r.new_findings] == ["376802"]
    [body] = alerts_received(sqs, queue)
    assert "CVE-2019-14697" in body and "CVE-2019-5481" not in body
    assert back.as_dict()["counts"]["new_findings"] == 1


def test_an_unchanged_resweep_reads_no_ledger_entries(aws: None, tmp_path: Path) -> None:
    """The cached re-sweep of an unchanged registry reads the repositories' ledger summaries
    ahead, in one BatchGetItem per 100, and no repository's entries (no Query per
    repository); a changed repository still reads its own."""
    from collections import Counter

    ecr = boto3.client("ecr", region_name=REGION)
    digests = []
    for i in range(12):
        ecr.create_repository(repositoryName=f"night-{i:02d}")
        digests.append(put_image(ecr, f"night-{i:02d}", f"night-{i}", "1"))
    Scenario().default(findings=[MUSL_CVE_2019_14697]).write(Path(_scenario_path()))
    assert run(tmp_path, {"repositories": ["night-*"]}).exit_code == EXIT_OK

    def counted_run() -> tuple[Any, Counter[str]]:
        calls: Counter[str] = Counter()
        base = boto3.session.Session(region_name=REGION)
        base.events.register("before-call.dynamodb", lambda model, **_: calls.update([model.name]))
        status = run(tmp_path, {"repositories": ["night-*"]},
                     SessionFactory(default_region=REGION, base_session=base))  # fmt: skip
        return status, calls

    quiet, calls = counted_run()
    assert quiet.as_dict()["counts"]["cached"] == 12
    assert quiet.security_hub[f"{HUB}/{REGION}"]["unchanged"] == 12
    queries = calls["Query"]
    assert queries < 12  # per run (directory and the like), none per repository
    # one repository changes: only it is read entry by entry
    put_image(ecr, "night-03", "night-3-b", "2")
    changed, calls = counted_run()
    assert changed.security_hub[f"{HUB}/{REGION}"]["created"] == 1
    assert calls["Query"] == queries + 1
    assert len(active_findings()) == 13
