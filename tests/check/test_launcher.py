"""The launcher against moto (ECS, S3, DynamoDB, EC2 for the task network).

RunTask failures that moto cannot produce (throttling, capacity) are injected with a
botocore `before-call` hook on the real client: the launcher's own code runs unchanged.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from check import launcher as launcher_module
from check.cache import CacheKey, ScanCache
from check.launcher import (
    OVERRIDES_MAX,
    RUN_TASK_ATTEMPTS,
    Launcher,
    LauncherConfig,
    dispatch,
    handler,
)
from securityhub.errors import ValidationError
from securityhub.findings import ScannerInfo
from securityhub.ledger import create_table

REGION = "us-east-1"
ACCOUNT = "123456789012"
DIGEST = "sha256:" + "b" * 64


@dataclass
class Stack:
    """What cloudformation/containerscan.yaml would have created, in moto."""

    env: dict[str, str]
    ecs: Any
    s3: Any
    dynamodb: Any
    sleeps: list[float] = field(default_factory=list)
    run_task_params: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bucket(self) -> str:
        return self.env["CONTAINERSCAN_BUCKET"]

    @property
    def table(self) -> str:
        return self.env["CONTAINERSCAN_TABLE"]

    @property
    def cluster(self) -> str:
        return self.env["CONTAINERSCAN_CLUSTER"]

    def launcher(self, cache: bool = True, **env: str) -> Launcher:
        config = LauncherConfig.from_env({**self.env, **env})
        scan_cache = ScanCache(self.dynamodb, self.table) if cache else None
        return Launcher(config, ecs=self.ecs, s3=self.s3, cache=scan_cache,
                        sleep=self.sleeps.append)

    def json(self, key: str) -> dict[str, Any]:
        return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def keys(self) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=self.bucket)
        return [o["Key"] for o in listing.get("Contents", [])]

    def task(self, arn: str) -> dict[str, Any]:
        return self.ecs.describe_tasks(cluster=self.cluster, tasks=[arn])["tasks"][0]

    def fail_run_task(self, responses: list[tuple[int, dict[str, Any]]]) -> None:
        """The next RunTask calls answer these (status, parsed body), then ECS answers."""

        class Http:
            def __init__(self, status: int) -> None:
                self.status_code = status
                self.headers: dict[str, str] = {}

        def before_call(params: dict[str, Any], **_: Any) -> Any:
            if responses:
                status, parsed = responses.pop(0)
                return Http(status), parsed
            return None

        self.ecs.meta.events.register("before-call.ecs.RunTask", before_call)


@pytest.fixture(scope="module")
def network() -> Iterator[tuple[list[str], str]]:
    """One moto account per module: EC2 is slow to set up, and tasks need real subnets.

    Each test gets its own cluster, bucket and table (see `stack`), so nothing leaks.
    """
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        # Fargate tasks get private DNS names; moto needs DNS hostnames for awsvpc tasks.
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24")["Subnet"]["SubnetId"]
            for i in (1, 2)
        ]
        group = ec2.create_security_group(GroupName="cs", Description="cs", VpcId=vpc)["GroupId"]
        yield subnets, group


_counter = itertools.count(1)


@pytest.fixture
def stack(network: tuple[list[str], str]) -> Iterator[Stack]:
    subnets, group = network
    n = next(_counter)
    cluster, bucket, table = f"containerscan-{n}", f"cs-results-{n}", f"cs-table-{n}"
    ecs = boto3.client("ecs", region_name=REGION)
    ecs.create_cluster(clusterName=cluster)
    task_definition = ecs.register_task_definition(
        family=f"containerscan-check-{n}", requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc", cpu="1024", memory="4096",
        containerDefinitions=[{"name": "check", "image": "check@sha256:" + "c" * 64,
                               "essential": True, "cpu": 1024, "memory": 4096,
                               "command": ["sweep"]}],
    )["taskDefinition"]["taskDefinitionArn"]  # fmt: skip
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=bucket)
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    create_table(dynamodb, table)
    env = {
        "CONTAINERSCAN_CLUSTER": cluster,
        "CONTAINERSCAN_TASK_DEFINITION": task_definition,
        "CONTAINERSCAN_CONTAINER_NAME": "check",
        "CONTAINERSCAN_SUBNETS": ",".join(subnets),
        "CONTAINERSCAN_SECURITY_GROUPS": group,
        "CONTAINERSCAN_BUCKET": bucket,
        "CONTAINERSCAN_PREFIX": "containerscan/",
        "CONTAINERSCAN_TABLE": table,
        "CONTAINERSCAN_SWEEP_REQUEST": json.dumps({"repositories": ["payments/*"]}),
        "CONTAINERSCAN_SWEEP_SHARDS": "2",
        "SCAN_TYPES": "pkg,secret",
        "CONTAINERSCAN_SCANNER": "qscanner",
        "CONTAINERSCAN_SCANNER_VERSION": "4.8.0-2",
    }
    stack = Stack(env, ecs, s3, dynamodb)

    def capture(params: dict[str, Any], **_: Any) -> None:
        stack.run_task_params.append(json.loads(json.dumps(params)))

    ecs.meta.events.register("provide-client-params.ecs.RunTask", capture)
    yield stack


def api_event(method: str, resource: str, body: Any = None, run_id: str | None = None,
              base64_body: bool = False) -> dict[str, Any]:
    text = body if isinstance(body, str) or body is None else json.dumps(body)
    if base64_body and text is not None:
        text = base64.b64encode(text.encode()).decode()
    return {
        "resource": resource,
        "path": resource.replace("{runId}", run_id or ""),
        "httpMethod": method,
        "headers": {"Host": "abc123.execute-api.us-east-1.amazonaws.com"},
        "pathParameters": {"runId": run_id} if run_id else None,
        "requestContext": {"domainName": "abc123.execute-api.us-east-1.amazonaws.com",
                           "stage": "v1"},
        "body": text,
        "isBase64Encoded": base64_body,
    }


def env_of(params: dict[str, Any]) -> dict[str, str]:
    (override,) = params["overrides"]["containerOverrides"]
    return {e["name"]: e["value"] for e in override["environment"]}


def body_of(response: dict[str, Any]) -> dict[str, Any]:
    return json.loads(response["body"])


REQUEST = {
    "accounts": [{"account_id": "210987654321", "role": "containerscan-spoke",
                  "external_id": "ext-id-0123456789abcdef"}],
    "regions": ["us-east-1"],
    "repositories": ["payments/*"],
    "exclude": ["sandbox/*"],
    "max_images": 5,
    "scan_types": ["pkg", "secret"],
}


# -------------------------------------------------------------------------- POST /scans


def test_post_starts_a_task_with_the_request_and_run_id(stack: Stack) -> None:
    response = dispatch(stack.launcher(), api_event("POST", "/scans", REQUEST))
    assert response["statusCode"] == 202
    body = body_of(response)
    run_id = body["runId"]
    assert launcher_module.RUN_ID_RE.fullmatch(run_id)
    assert body["statusUrl"] == f"https://abc123.execute-api.us-east-1.amazonaws.com/v1/scans/{run_id}"
    (arn,) = body["tasks"]
    task = stack.task(arn)
    assert task["clusterArn"].endswith(f":cluster/{stack.cluster}")
    assert task["startedBy"] == launcher_module.STARTED_BY
    (override,) = task["overrides"]["containerOverrides"]
    assert override["name"] == "check" and override["command"] == ["sweep"]
    env = {e["name"]: e["value"] for e in override["environment"]}
    assert json.loads(env["CONTAINERSCAN_REQUEST"]) == REQUEST  # the document, unmasked
    assert env["CONTAINERSCAN_RUN_ID"] == run_id
    (params,) = stack.run_task_params
    assert params["launchType"] == "FARGATE"
    network = params["networkConfiguration"]["awsvpcConfiguration"]
    assert network["assignPublicIp"] == "DISABLED"
    assert network["subnets"] == stack.env["CONTAINERSCAN_SUBNETS"].split(",")
    assert network["securityGroups"] == [stack.env["CONTAINERSCAN_SECURITY_GROUPS"]]
    assert params["clientToken"].startswith(run_id)
    # The launch is recorded; the external id is not.
    launch = stack.json(f"containerscan/runs/{run_id}/launch.json")
    assert launch["status"] == "started" and launch["shards"][0]["task_arn"] == arn
    assert launch["request"]["accounts"][0]["external_id"] == "***"
    assert "ext-id-0123456789abcdef" not in json.dumps(launch)


def test_post_splits_a_large_sweep_into_shards(stack: Stack) -> None:
    response = dispatch(stack.launcher(), api_event("POST", "/scans", {**REQUEST, "shards": 3}))
    assert response["statusCode"] == 202
    body = body_of(response)
    assert body["shards"] == 3 and len(body["tasks"]) == 3
    run_id = body["runId"]
    docs = [json.loads(env_of(p)["CONTAINERSCAN_REQUEST"]) for p in stack.run_task_params]
    assert [d["shard"] for d in docs] == ["1/3", "2/3", "3/3"]
    assert all({k: v for k, v in d.items() if k != "shard"} == REQUEST for d in docs)
    assert [env_of(p)["CONTAINERSCAN_RUN_ID"] for p in stack.run_task_params] == [
        f"{run_id}-1of3", f"{run_id}-2of3", f"{run_id}-3of3"]
    assert len({p["clientToken"] for p in stack.run_task_params}) == 3


def test_post_bad_request_gets_every_field_error_and_starts_nothing(stack: Stack) -> None:
    bad = {"regions": ["us-east-9x", "eu-west-1"], "max_images": -1, "scan_types": ["pkg", "malware"],
           "colour": "blue", "shards": 0}
    response = dispatch(stack.launcher(), api_event("POST", "/scans", bad))
    assert response["statusCode"] == 400
    errors = {e["field"] for e in body_of(response)["errors"]}
    assert {"regions[0]", "max_images", "scan_types[1]", "colour", "shards"} <= errors
    assert stack.run_task_params == []
    assert stack.keys() == []
    assert stack.ecs.list_tasks(cluster=stack.cluster)["taskArns"] == []


@pytest.mark.parametrize("body, field", [
    ("{not json", "body"),
    ("[1, 2]", "body"),
    ({"shard": "1/2", "shards": 2}, "shard"),
    ({"shards": "4"}, "shards"),
])
def test_post_malformed_bodies(stack: Stack, body: Any, field: str) -> None:
    response = dispatch(stack.launcher(), api_event("POST", "/scans", body))
    assert response["statusCode"] == 400
    assert field in {e["field"] for e in body_of(response)["errors"]}
    assert stack.run_task_params == []


def test_post_base64_body(stack: Stack) -> None:
    response = dispatch(stack.launcher(), api_event("POST", "/scans", REQUEST, base64_body=True))
    assert response["statusCode"] == 202
    assert json.loads(env_of(stack.run_task_params[0])["CONTAINERSCAN_REQUEST"]) == REQUEST


def test_large_request_goes_through_s3(stack: Stack) -> None:
    accounts = [{"account_id": f"{i:012d}", "role": "containerscan-spoke"} for i in range(1, 200)]
    big = {**REQUEST, "accounts": accounts}
    assert len(json.dumps(big)) > OVERRIDES_MAX
    response = dispatch(stack.launcher(), api_event("POST", "/scans", {**big, "shards": 2}))
    assert response["statusCode"] == 202
    run_id = body_of(response)["runId"]
    for i, params in enumerate(stack.run_task_params, 1):
        env = env_of(params)
        assert "CONTAINERSCAN_REQUEST" not in env
        expected = f"s3://{stack.bucket}/containerscan/runs/{run_id}/request.json"
        assert env["CONTAINERSCAN_REQUEST_URI"] == expected
        assert params["overrides"]["containerOverrides"][0]["command"] == [
            "sweep", "--request-uri", expected, "--shard", f"{i}/2"]
        assert len(json.dumps(params["overrides"], separators=(",", ":"))) <= OVERRIDES_MAX
    assert stack.json(f"containerscan/runs/{run_id}/request.json") == big


# ------------------------------------------------------------- RunTask retries, failures


def test_throttled_run_task_is_retried_with_the_same_token(stack: Stack) -> None:
    throttled = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
    stack.fail_run_task([(400, throttled), (400, throttled)])
    response = dispatch(stack.launcher(), api_event("POST", "/scans", REQUEST))
    assert response["statusCode"] == 202
    assert len(body_of(response)["tasks"]) == 1
    assert len(stack.sleeps) == 2
    tokens = {p["clientToken"] for p in stack.run_task_params}
    assert len(stack.run_task_params) == 3 and len(tokens) == 1


def test_capacity_failures_are_retried_then_reported_with_a_status(stack: Stack) -> None:
    no_eni = {"tasks": [], "failures": [{"reason": "RESOURCE:ENI", "detail": "no addresses"}]}
    stack.fail_run_task([(200, no_eni)] * RUN_TASK_ATTEMPTS)
    launcher = stack.launcher()
    response = dispatch(launcher, api_event("POST", "/scans", REQUEST))
    assert response["statusCode"] == 503
    body = body_of(response)
    assert body["status"] == "failed_to_start" and body["tasks"] == []
    assert "RESOURCE:ENI" in body["errors"][0]["error"]
    assert len(stack.sleeps) == RUN_TASK_ATTEMPTS - 1
    status = stack.json(f"containerscan/runs/{body['runId']}/status.json")
    assert status["status"] == "failed_to_start" and status["exit_code"] == 1
    assert "RESOURCE:ENI" in status["errors"][0]["error"]
    # The status URL answers with that status.
    got = dispatch(launcher, api_event("GET", "/scans/{runId}", run_id=body["runId"]))
    assert got["statusCode"] == 200
    assert body_of(got)["status"] == "failed_to_start"


def test_invalid_parameters_are_not_retried(stack: Stack) -> None:
    invalid = {"Error": {"Code": "InvalidParameterException", "Message": "bad subnet"}}
    stack.fail_run_task([(400, invalid)])
    response = dispatch(stack.launcher(), api_event("POST", "/scans", REQUEST))
    assert response["statusCode"] == 503
    assert stack.sleeps == []
    assert "InvalidParameterException" in body_of(response)["errors"][0]["error"]


def test_a_shard_that_fails_leaves_the_others_running_and_a_status(stack: Stack) -> None:
    no_capacity = {"tasks": [], "failures": [{"reason": "Capacity is unavailable at this time"}]}
    stack.fail_run_task([(200, no_capacity)] * RUN_TASK_ATTEMPTS)  # shard 1 never starts
    launcher = stack.launcher()
    response = dispatch(launcher, api_event("POST", "/scans", {**REQUEST, "shards": 2}))
    assert response["statusCode"] == 202
    body = body_of(response)
    assert body["status"] == "partially_started" and len(body["tasks"]) == 1
    status = stack.json(f"containerscan/runs/{body['runId']}/status.json")
    assert [e["shard"] for e in status["errors"]] == [1]
    got = body_of(dispatch(launcher, api_event("GET", "/scans/{runId}", run_id=body["runId"])))
    assert got["shards"][0]["status"] == "failed_to_start"
    assert got["status"] == "running"  # shard 2 still runs


def test_tasks_started_but_record_not_written_are_reported(stack: Stack) -> None:
    denied = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
    calls: list[str] = []

    def refuse_put(params: dict[str, Any], **_: Any) -> Any:
        calls.append(params["url_path"])  # the serialized request: /bucket/key

        class Http:
            status_code = 403
            headers: dict[str, str] = {}  # noqa: RUF012

        return Http(), denied

    stack.s3.meta.events.register("before-call.s3.PutObject", refuse_put)
    response = dispatch(stack.launcher(), api_event("POST", "/scans", REQUEST))
    assert response["statusCode"] == 202
    body = body_of(response)
    assert len(body["tasks"]) == 1
    assert "AccessDenied" in body["warning"]
    assert calls and calls[0].endswith("/launch.json")


def test_out_of_time_shards_are_recorded_not_lost(stack: Stack) -> None:
    """Lambda's deadline: shards that cannot be started in time get a failure status."""
    left = iter([60.0])  # enough for shard 1, then 3 s: not for shards 2 and 3
    launcher = stack.launcher()
    launcher.time_left = lambda: next(left, 3.0)
    response = dispatch(launcher, api_event("POST", "/scans", {**REQUEST, "shards": 3}))
    assert response["statusCode"] == 202
    body = body_of(response)
    assert len(body["tasks"]) == 1 and body["status"] == "partially_started"
    status = stack.json(f"containerscan/runs/{body['runId']}/status.json")
    assert [e["shard"] for e in status["errors"]] == [2, 3]
    assert all("out of time" in e["error"] for e in status["errors"])


def test_retries_stop_before_the_deadline(stack: Stack) -> None:
    throttled = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
    stack.fail_run_task([(400, throttled)] * RUN_TASK_ATTEMPTS)
    launcher = stack.launcher()
    launcher.time_left = lambda: 5.5  # room for the attempt, not for a 1 s backoff + records
    response = dispatch(launcher, api_event("POST", "/scans", REQUEST))
    assert response["statusCode"] == 503
    assert stack.sleeps == []
    assert "out of time" in body_of(response)["errors"][0]["error"]


class LambdaContext:
    def __init__(self, millis: int) -> None:
        self.millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


# ----------------------------------------------------------------- GET /scans/{runId}


def test_get_unknown_and_malformed_runs(stack: Stack) -> None:
    launcher = stack.launcher()
    unknown = dispatch(launcher, api_event("GET", "/scans/{runId}", run_id="20260101T000000Z-0123abcd"))
    assert unknown["statusCode"] == 404
    malformed = dispatch(launcher, api_event("GET", "/scans/{runId}", run_id="../../etc"))
    assert malformed["statusCode"] == 400


def test_get_reports_the_task_state_then_the_status_json(stack: Stack) -> None:
    launcher = stack.launcher()
    run_id = body_of(dispatch(launcher, api_event("POST", "/scans", REQUEST)))["runId"]
    running = body_of(dispatch(launcher, api_event("GET", "/scans/{runId}", run_id=run_id)))
    assert running["status"] in ("running", "pending")
    assert running["shards"][0]["task_arn"] == running["tasks"][0]
    # The check finishes and writes its status where its run id says.
    final = {"run_id": run_id, "status": "partial", "exit_code": 3, "counts": {"images": 4}}
    stack.s3.put_object(Bucket=stack.bucket, Key=f"containerscan/runs/{run_id}/status.json",
                        Body=json.dumps(final).encode())
    done = body_of(dispatch(launcher, api_event("GET", "/scans/{runId}", run_id=run_id)))
    assert done["status"] == "partial" and done["exit_code"] == 3
    assert done["tasks"] == running["tasks"]


def test_get_summarizes_shards(stack: Stack) -> None:
    launcher = stack.launcher()
    run_id = body_of(dispatch(launcher, api_event("POST", "/scans", {**REQUEST, "shards": 2})))["runId"]
    for i, status in ((1, "done"), (2, "partial")):
        stack.s3.put_object(Bucket=stack.bucket, Key=f"containerscan/runs/{run_id}-{i}of2/status.json",
                            Body=json.dumps({"status": status, "exit_code": 0 if i == 1 else 3}).encode())
    got = body_of(dispatch(launcher, api_event("GET", "/scans/{runId}", run_id=run_id)))
    assert [s["status"] for s in got["shards"]] == ["done", "partial"]
    assert got["status"] == "partial"


def test_get_a_stopped_task_without_status(stack: Stack) -> None:
    launcher = stack.launcher()
    body = body_of(dispatch(launcher, api_event("POST", "/scans", REQUEST)))
    stack.ecs.stop_task(cluster=stack.cluster, task=body["tasks"][0], reason="OutOfMemoryError")
    got = body_of(dispatch(launcher, api_event("GET", "/scans/{runId}", run_id=body["runId"])))
    # moto stops in two steps, and its containers exit 0.
    assert got["status"] in ("done", "running")
    assert got["shards"][0]["task_status"] in ("DEACTIVATING", "STOPPING", "STOPPED")
    if got["status"] == "done":
        assert got["shards"][0]["exit_code"] == 0


@pytest.mark.parametrize("exit_code, status", [(0, "done"), (3, "partial"), (4, "findings"),
                                                (1, "failed"), (2, "failed")])
def test_a_stopped_task_stands_for_its_status_by_exit_code(exit_code: int, status: str) -> None:
    task = {"lastStatus": "STOPPED", "stoppedReason": "Essential container in task exited",
            "containers": [{"name": "check", "exitCode": exit_code}]}
    report = launcher_module._from_task(task)
    assert report["status"] == status and report["exit_code"] == exit_code
    assert ("error" in report) == (status == "failed")


def test_unknown_route(stack: Stack) -> None:
    response = dispatch(stack.launcher(), api_event("DELETE", "/scans/{runId}", run_id="x"))
    assert response["statusCode"] == 404


# ----------------------------------------------------------------------- ECR push events


def push_event(digest: str = DIGEST, repository: str = "payments/api") -> dict[str, Any]:
    return {
        "version": "0", "id": "e1", "detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": ACCOUNT, "time": "2026-11-23T04:00:00Z", "region": REGION, "resources": [],
        "detail": {"result": "SUCCESS", "repository-name": repository, "image-digest": digest,
                   "action-type": "PUSH", "image-tag": "1.4"},
    }  # fmt: skip


def test_push_starts_a_single_image_scan(stack: Stack) -> None:
    result = dispatch(stack.launcher(), push_event())
    assert result["skipped"] is False and result["status"] == "started"
    doc = json.loads(env_of(stack.run_task_params[0])["CONTAINERSCAN_REQUEST"])
    assert doc == {"accounts": [{"account_id": ACCOUNT}], "regions": [REGION],
                   "repositories": ["payments/api"], "images": [DIGEST]}


def test_push_of_a_cached_digest_still_publishes_through_its_task(stack: Stack) -> None:
    """A promotion (a scanned digest pushed to another repository) must get its findings:
    the task publishes them from the cache (tests/reliability/test_live_estate.py shows the
    task does so with zero scanner invocations)."""
    cache = ScanCache(stack.dynamodb, stack.table)
    key = CacheKey(DIGEST, "qscanner", "4.8.0-2", ("pkg", "secret"))
    assert cache.put(key, ScannerInfo("qscanner", "4.8.0-2"), [])
    result = dispatch(stack.launcher(), push_event(repository="prod/api"))
    assert result["skipped"] is False and result["cached"] is True
    assert result["status"] == "started"
    doc = json.loads(env_of(stack.run_task_params[0])["CONTAINERSCAN_REQUEST"])
    assert doc["repositories"] == ["prod/api"] and doc["images"] == [DIGEST]
    # Another scanner version has no result for it: a task that scans.
    result = dispatch(stack.launcher(CONTAINERSCAN_SCANNER_VERSION="4.9.0-1"), push_event())
    assert result["skipped"] is False and result["cached"] is False


def test_push_with_an_expired_cache_entry_is_scanned(stack: Stack) -> None:
    past = datetime.now(UTC) - timedelta(days=40)
    cache = ScanCache(stack.dynamodb, stack.table, ttl_days=30, clock=lambda: past)
    cache.put(CacheKey(DIGEST, "qscanner", "4.8.0-2", ("pkg", "secret")),
              ScannerInfo("qscanner", "4.8.0-2"), [])
    assert dispatch(stack.launcher(), push_event())["skipped"] is False


def test_failed_push_events_are_refused(stack: Stack) -> None:
    event = push_event()
    event["detail"]["result"] = "FAILURE"
    with pytest.raises(ValidationError) as caught:
        dispatch(stack.launcher(), event)
    assert any(where == "detail.result" for where, _ in caught.value.problems)
    assert stack.run_task_params == []


# ---------------------------------------------------------------------------- schedule


def test_nightly_sweep_uses_the_configured_request_and_shards(stack: Stack) -> None:
    event = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {},
             "resources": ["arn:aws:events:us-east-1:123456789012:rule/nightly"]}
    result = dispatch(stack.launcher(), event)
    assert result["source"] == "schedule" and len(result["shards"]) == 2
    docs = [json.loads(env_of(p)["CONTAINERSCAN_REQUEST"]) for p in stack.run_task_params]
    assert docs == [{"repositories": ["payments/*"], "shard": "1/2"},
                    {"repositories": ["payments/*"], "shard": "2/2"}]


def test_invalid_nightly_request_fails_loudly(stack: Stack) -> None:
    event = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
    launcher = stack.launcher(CONTAINERSCAN_SWEEP_REQUEST='{"regions": ["nowhere"]}')
    with pytest.raises(ValidationError, match="nightly"):
        dispatch(launcher, event)


# ------------------------------------------------------------------ config and handler


def test_config_lists_every_missing_variable() -> None:
    with pytest.raises(ValidationError) as caught:
        LauncherConfig.from_env({"CONTAINERSCAN_SWEEP_SHARDS": "500",
                                 "CONTAINERSCAN_SCANNER": "qscanner"})
    fields = {where for where, _ in caught.value.problems}
    assert {"CONTAINERSCAN_CLUSTER", "CONTAINERSCAN_TASK_DEFINITION", "CONTAINERSCAN_SUBNETS",
            "CONTAINERSCAN_SECURITY_GROUPS", "CONTAINERSCAN_BUCKET",
            "CONTAINERSCAN_SWEEP_SHARDS", "CONTAINERSCAN_SCANNER_VERSION"} <= fields


def test_handler_builds_the_launcher_from_the_environment(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(launcher_module, "_launcher", None)
    response = handler(api_event("POST", "/scans", {"repositories": ["web/*"]}), LambdaContext(60_000))
    assert response["statusCode"] == 202
    assert launcher_module._launcher is not None
    assert launcher_module._launcher.time_left() == 60.0
    run_id = body_of(response)["runId"]
    got = handler(api_event("GET", "/scans/{runId}", run_id=run_id), None)
    assert got["statusCode"] == 200
    monkeypatch.setattr(launcher_module, "_launcher", None)
