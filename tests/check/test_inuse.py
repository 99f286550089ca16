"""In use: ECS tasks and Lambda image functions make an image's findings InUse=true.

Pure parsing of DescribeTasks / GetFunction answers, then sweeps over moto's ECR, ECS and
Lambda with the QScanner stand-in and the emulated Security Hub: a task running one of two
images marks only that image's findings; stopping it flips them on the next sweep; a night
where nothing changed imports nothing.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from check.inuse import InUseIndex, Usage, parse_image, usage_from_functions, usage_from_tasks
from securityhub.asff import fingerprint, parse_timestamp
from securityhub.exposure import IN_USE, IN_USE_BY, LAST_IN_USE_AT, RISK, RUNNING_TASKS
from tests.check import test_sweep
from tests.check.ecrfixtures import put_image
from tests.check.standin import (
    APP_LAYER,
    CURL_CVE_2019_5481,
    MUSL_CVE_2019_14697,
    Scenario,
    StandinFinding,
    StandinPackage,
)
from tests.check.test_sweep import HUB, REGION, _scenario_path, active_findings, run

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
REGISTRY = f"{HUB}.dkr.ecr.{REGION}.amazonaws.com"
aws = test_sweep.aws  # the moto world of the sweep tests (a fixture, found by name)


def _never(repository: str, tag: str) -> str | None:
    raise AssertionError(f"no tag should need resolving ({repository}:{tag})")


def test_parse_image_keeps_only_this_registry_repositories() -> None:
    assert parse_image(f"{REGISTRY}/team/app:1.0", HUB, REGION).repository == "team/app"
    other = parse_image(f"210987654321.dkr.ecr.{REGION}.amazonaws.com/app:1", HUB, REGION)
    assert other.repository is None
    pinned = parse_image(f"docker.io/library/nginx@{A}", HUB, REGION)
    assert (pinned.repository, pinned.digest) == (None, A)
    assert parse_image("nginx:latest", HUB, REGION) == parse_image("", HUB, REGION)


def test_tasks_count_once_per_digest_and_name_their_service() -> None:
    cluster = f"arn:aws:ecs:{REGION}:{HUB}:cluster/prod"
    tasks = [
        {  # a service task: two containers of the same image count the task once
            "clusterArn": cluster,
            "group": "service:payments",
            "lastStatus": "RUNNING",
            "containers": [{"imageDigest": A}, {"imageDigest": A}],
        },
        {  # a standalone task whose container has no digest yet: its tag is resolved
            "clusterArn": cluster,
            "group": "family:batch",
            "taskDefinitionArn": f"arn:aws:ecs:{REGION}:{HUB}:task-definition/batch:3",
            "lastStatus": "PENDING",
            "containers": [{"image": f"{REGISTRY}/app:2"}],
        },
        {"clusterArn": cluster, "lastStatus": "STOPPED", "containers": [{"imageDigest": B}]},
        {
            "clusterArn": cluster,
            "lastStatus": "RUNNING",
            "desiredStatus": "STOPPED",
            "containers": [{"imageDigest": B}],
        },
    ]
    resolved = []

    def resolve(repository: str, tag: str) -> str | None:
        resolved.append((repository, tag))
        return A

    usage = usage_from_tasks(tasks, HUB, REGION, resolve)
    assert usage == {A: Usage(2, ("prod/batch", "prod/payments"))}
    assert resolved == [("app", "2")]


def test_image_functions_are_users_without_tasks() -> None:
    answers = [
        {
            "Configuration": {"FunctionName": "resize"},
            "Code": {"ImageUri": f"{REGISTRY}/fn:1", "ResolvedImageUri": f"{REGISTRY}/fn@{B}"},
        }
    ]
    usage = usage_from_functions(answers, HUB, REGION, _never)
    assert usage == {B: Usage(0, ("lambda/resize",))}
    assert usage[B].in_use


def test_an_incomplete_listing_says_unknown_never_idle() -> None:
    now = datetime.now(UTC)
    complete = InUseIndex(HUB, REGION, now, {A: Usage(1, ("c/s",))})
    assert complete.usage(B) == Usage()  # listed everything: B is not in use
    assert complete.usage("sha256:" + "c" * 64, index_digest=A) == Usage(1, ("c/s",))
    partial = InUseIndex(HUB, REGION, now, {A: Usage(1, ("c/s",))}, complete=False)
    assert partial.usage(B) is None


def test_in_use_counts_and_times_are_not_content() -> None:
    """RunningTasks and LastInUseAt ride along; InUse and Risk are content."""
    base = {"Id": "x", "ProductFields": {IN_USE: "true", RISK: "70", RUNNING_TASKS: "1"}}
    scaled = {**base, "ProductFields": {**base["ProductFields"], RUNNING_TASKS: "7",
                                        LAST_IN_USE_AT: "2026-01-01T00:00:00.000Z"}}  # fmt: skip
    stopped = {**base, "ProductFields": {**base["ProductFields"], IN_USE: "false"}}
    assert fingerprint(base) == fingerprint(scaled)
    assert fingerprint(base) != fingerprint(stopped)


# ------------------------------------------------------------------ moto end to end


def _images(ecr: Any) -> tuple[str, str]:
    ecr.create_repository(repositoryName="shop")
    running = put_image(ecr, "shop", "shop-running", "live")
    idle = put_image(ecr, "shop", "shop-idle", "old")
    scenario = Scenario()
    scenario.image(running, findings=[MUSL_CVE_2019_14697])
    scenario.image(idle, findings=[CURL_CVE_2019_5481])
    scenario.write(Path(_scenario_path()))
    return running, idle


def _by_digest(findings: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        f["Resources"][0]["Details"]["AwsEcrContainerImage"]["ImageDigest"]: f["ProductFields"]
        for f in findings.values()
        if f.get("Vulnerabilities")
    }


def _start_task(ecs: Any, image: str) -> str:
    ecs.create_cluster(clusterName="prod")
    ecs.register_task_definition(
        family="shop-web",
        containerDefinitions=[{"name": "web", "image": image, "memory": 256}],
    )
    ecs.create_service(cluster="prod", serviceName="web", taskDefinition="shop-web", desiredCount=0)
    task = ecs.run_task(cluster="prod", taskDefinition="shop-web", group="service:web",
                        launchType="FARGATE")["tasks"][0]  # fmt: skip
    return str(task["taskArn"])


def test_a_running_task_marks_only_its_image_and_stopping_it_flips(
    aws: None, tmp_path: Path
) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    ecs = boto3.client("ecs", region_name=REGION)
    running, idle = _images(ecr)
    task = _start_task(ecs, f"{REGISTRY}/shop:live")  # by tag: resolved through ECR
    doc = {"repositories": ["shop"], "regions": [REGION]}

    first = run(tmp_path, doc)
    assert first.exit_code == 0, first.as_dict()["errors"]
    fields = _by_digest(active_findings())
    assert fields[running][IN_USE] == "true"
    assert fields[running][RUNNING_TASKS] == "1"
    assert fields[running][IN_USE_BY] == "prod/web"
    seen_at = parse_timestamp(fields[running][LAST_IN_USE_AT])
    assert fields[idle][IN_USE] == "false"
    assert LAST_IN_USE_AT not in fields[idle]
    # musl: CRITICAL 40 + running 20; curl: HIGH 30 + not running 0 (securityhub.risk).
    assert (int(fields[running][RISK]), int(fields[idle][RISK])) == (60, 30)
    total = len(active_findings())  # curl names two CVEs: one finding each

    time.sleep(0.01)
    second = run(tmp_path, doc)  # an unchanged night: nothing imported
    hub = second.as_dict()["security_hub"][f"{HUB}/{REGION}"]
    assert (hub["created"], hub["updated"], hub["refreshed"]) == (0, 0, 0), hub
    assert hub["unchanged"] == total == 3

    ecs.stop_task(cluster="prod", task=task, reason="scaled in")
    third = run(tmp_path, doc)
    hub = third.as_dict()["security_hub"][f"{HUB}/{REGION}"]
    assert (hub["created"], hub["updated"]) == (0, 1), hub  # only the running image's finding
    fields = _by_digest(active_findings())
    assert fields[running][IN_USE] == "false"
    assert IN_USE_BY not in fields[running]
    # The last time a sweep saw it running survives the stop.
    assert parse_timestamp(fields[running][LAST_IN_USE_AT]) >= seen_at
    assert fields[idle][IN_USE] == "false"


def test_a_lambda_image_function_is_in_use(
    aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOTO_LAMBDA_STUB_ECR", "false")  # resolve the image in moto's ECR
    ecr = boto3.client("ecr", region_name=REGION)
    running, idle = _images(ecr)
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    boto3.client("lambda", region_name=REGION).create_function(
        FunctionName="thumbnails",
        Role=role,
        PackageType="Image",
        Code={"ImageUri": f"{REGISTRY}/shop:old"},
    )
    status = run(tmp_path, {"repositories": ["shop"], "regions": [REGION]})
    assert status.exit_code == 0, status.as_dict()["errors"]
    fields = _by_digest(active_findings())
    assert fields[idle][IN_USE] == "true"
    assert fields[idle][IN_USE_BY] == "lambda/thumbnails"
    assert fields[idle][RUNNING_TASKS] == "0"
    assert fields[running][IN_USE] == "false"


def test_in_use_only_skips_idle_images_and_they_keep_their_findings(
    aws: None, tmp_path: Path
) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    running, idle = _images(ecr)
    _start_task(boto3.client("ecs", region_name=REGION), f"{REGISTRY}/shop:live")
    doc: dict[str, Any] = {"repositories": ["shop"], "regions": [REGION]}
    run(tmp_path, doc)
    assert set(_by_digest(active_findings())) == {running, idle}

    nightly = run(tmp_path, {**doc, "in_use_only": True, "pushed_within_days": 1})
    assert [r.image.digest for r in nightly.records] == [running]
    hub = nightly.as_dict()["security_hub"][f"{HUB}/{REGION}"]
    assert hub["archived"] == 0, hub
    # Never archived for being skipped: both images' findings are still active.
    assert set(_by_digest(active_findings())) == {running, idle}
    rescan = run(tmp_path, {**doc, "pulled_within_days": 30})  # nobody pulled either
    assert rescan.records == [] and rescan.exit_code == 0
    assert set(_by_digest(active_findings())) == {running, idle}


def test_a_refused_listing_makes_in_use_unknown_and_says_so(aws: None) -> None:
    """ECS refuses (an old spoke role): the index is incomplete and names the error."""
    from botocore.stub import Stubber

    from check.inuse import read_in_use

    ecs = boto3.client("ecs", region_name=REGION)
    stub = Stubber(ecs)
    stub.add_client_error("list_clusters", "AccessDeniedException", "not authorized")
    with stub:
        index = read_in_use(
            ecs,
            boto3.client("lambda", region_name=REGION),
            boto3.client("ecr", region_name=REGION),
            account_id=HUB,
            region=REGION,
            now=datetime.now(UTC),
        )
    assert not index.complete
    assert index.errors and "AccessDeniedException" in index.errors[0]
    assert index.usage(A) is None  # unknown, never "not in use"


def test_history_keeps_the_last_time_a_digest_ran(aws: None) -> None:
    from check.inuse import InUseHistory

    history = InUseHistory(boto3.client("dynamodb", region_name=REGION), test_sweep.TABLE)
    monday = datetime(2026, 12, 7, 2, tzinfo=UTC)
    history.record(HUB, REGION, [A, B], monday)
    history.record(HUB, REGION, [A], monday.replace(day=8))
    assert history.last_seen(HUB, REGION) == {A: monday.replace(day=8), B: monday}
    assert history.last_seen(HUB, "eu-west-1") == {}


LOG4SHELL = StandinFinding(
    qid=730297, title="Apache Log4j Remote Code Execution (RCE) Vulnerability (Log4Shell)",
    severity=5, cves=("CVE-2021-44228",),
    packages=(StandinPackage("log4j-core", "2.14.1", "2.15.0", APP_LAYER,
                             path="/app/lib/log4j-core-2.14.1.jar", language="java"),),
)  # fmt: skip


def test_the_default_alert_is_newly_exploitable_in_a_running_image(
    aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KEV (tests/data/exploits: CISA's Log4Shell entry) in a running image alerts; the same
    CVE in an idle image does not, until a task starts running it; a CRITICAL that nobody
    exploits (musl, EPSS 0.005) never does; an alerted finding is not repeated."""
    import shutil

    from tests.check.test_sweep import alert_queue, alerts_received

    vuln_db = tmp_path / "vulndb"
    exploits = Path(__file__).resolve().parents[1] / "data" / "exploits"
    shutil.copytree(exploits, vuln_db, ignore=shutil.ignore_patterns("README.md"))
    monkeypatch.setenv("CONTAINERSCAN_VULN_DB", str(vuln_db))
    topic, sqs, queue = alert_queue()
    ecr = boto3.client("ecr", region_name=REGION)
    ecs = boto3.client("ecs", region_name=REGION)
    running, idle = _images(ecr)
    scenario = Scenario()
    scenario.image(running, findings=[LOG4SHELL, MUSL_CVE_2019_14697])
    scenario.image(idle, findings=[LOG4SHELL])
    scenario.write(Path(_scenario_path()))
    _start_task(ecs, f"{REGISTRY}/shop:live")
    doc = {"repositories": ["shop"], "regions": [REGION]}

    first = run(tmp_path, doc, sns_topic_arn=topic)
    [body] = alerts_received(sqs, queue)
    assert first.alert is not None and first.alert["mode"] == "exploitable"
    assert first.alert["findings"] == 1
    assert "CVE-2021-44228" in body and running[:19] in body and idle[:19] not in body
    assert "CVE-2019-14697" not in body  # CRITICAL, but neither in KEV nor likely exploited
    assert "KEV" in body and "running: prod/web" in body
    risks = {
        (f["Resources"][0]["Details"]["AwsEcrContainerImage"]["ImageDigest"],
         f["Vulnerabilities"][0]["Id"]): int(f["ProductFields"][RISK])
        for f in active_findings().values()
    }  # fmt: skip
    # CRITICAL 40 + KEV 30 + running 20 (+ loaded unknown 0); idle: no in-use points;
    # musl: CRITICAL 40 + EPSS 0.005 (below every band) + running 20.
    assert risks == {
        (running, "CVE-2021-44228"): 90,
        (idle, "CVE-2021-44228"): 70,
        (running, "CVE-2019-14697"): 60,
    }

    # The idle image starts running: its Log4Shell finding changes (InUse) and alerts now;
    # the one already alerted does not repeat.
    ecs.register_task_definition(
        family="shop-batch",
        containerDefinitions=[{"name": "batch", "image": f"{REGISTRY}/shop:old", "memory": 256}],
    )
    ecs.run_task(cluster="prod", taskDefinition="shop-batch", launchType="FARGATE")
    second = run(tmp_path, doc, sns_topic_arn=topic)
    [body] = alerts_received(sqs, queue)
    assert second.alert is not None and second.alert["findings"] == 1
    assert idle[:19] in body and running[:19] not in body
    # A night with nothing new: no alert at all.
    third = run(tmp_path, doc, sns_topic_arn=topic)
    assert third.alert is None and alerts_received(sqs, queue) == []
