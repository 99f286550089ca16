"""ECS task context from a real HTTP metadata endpoint on loopback; cgroups; heartbeat."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from securityhub.errors import ConfigurationError
from sidecar.context import (
    METADATA_ENV,
    Heartbeat,
    TaskContext,
    container_id,
    container_id_from_cgroup,
    discover,
)

TASK_ID = "158d1c8083dd49d6b527399fd6414f5c"
# The shape of a Fargate task metadata v4 `/task` answer (AWS docs, "Task metadata v4
# examples"), trimmed.
TASK_DOC = {
    "Cluster": "arn:aws:ecs:eu-west-1:111122223333:cluster/prod",
    "TaskARN": f"arn:aws:ecs:eu-west-1:111122223333:task/prod/{TASK_ID}",
    "Family": "shop-api",
    "Revision": "26",
    "LaunchType": "FARGATE",
    "Containers": [
        {
            "DockerId": f"{TASK_ID}-2495160603",
            "Name": "app",
            "Image": "111122223333.dkr.ecr.eu-west-1.amazonaws.com/shop:1.2",
            "ImageID": "sha256:" + "a" * 64,
        },
        {"DockerId": f"{TASK_ID}-1111111111", "Name": "containerscan-sidecar", "Image": "cs"},
    ],
}
CONTAINER_DOC = {"DockerId": f"{TASK_ID}-2495160603", "Name": "app"}


@contextlib.contextmanager
def serve_metadata(
    task: dict[str, Any] = TASK_DOC, container: dict[str, Any] = CONTAINER_DOC
) -> Iterator[tuple[str, list[str]]]:
    """A task metadata endpoint v4 on loopback: (the container URL, paths requested)."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            doc = task if self.path.endswith("/task") else container
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v4/{TASK_ID}-2495160603", hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[str]]]:
    with serve_metadata() as served:
        yield served


def test_discover_reads_task_and_container(endpoint) -> None:
    url, hits = endpoint
    ctx = discover({METADATA_ENV: url})
    assert ctx is not None
    assert ctx.task_arn == TASK_DOC["TaskARN"]
    assert ctx.task_id == TASK_ID
    assert ctx.cluster_arn == TASK_DOC["Cluster"]
    assert (ctx.task_family, ctx.revision, ctx.launch_type) == ("shop-api", "26", "FARGATE")
    assert (ctx.account_id, ctx.region) == ("111122223333", "eu-west-1")
    assert ctx.container_name == "app"
    assert ctx.containers[f"{TASK_ID}-2495160603"] == "app"
    assert ctx.images["app"] == (TASK_DOC["Containers"][0]["Image"], "sha256:" + "a" * 64)
    assert sorted(hits) == sorted([f"/v4/{TASK_ID}-2495160603", f"/v4/{TASK_ID}-2495160603/task"])


# The Fargate examples of the ECS developer guide ("task metadata v3 examples for tasks on
# Fargate"; the v4 page's task has the same members): a short cluster name and a task ARN
# without the cluster in it.
DOCS_TASK = {
    "Cluster": "default",
    "TaskARN": "arn:aws:ecs:us-east-2:012345678910:task/9781c248-0edd-4cdb-9a93-f63cb662a5d3",
    "Family": "nginx",
    "Revision": "5",
    "DesiredStatus": "RUNNING",
    "KnownStatus": "RUNNING",
    "Containers": [
        {
            "DockerId": "731a0d6a3b4210e2448339bc7015aaa79bfe4fa256384f4102db86ef94cbbc4c",
            "Name": "~internal~ecs~pause",
            "Image": "amazon/amazon-ecs-pause:0.1.0",
            "ImageID": "",
            "Labels": {
                "com.amazonaws.ecs.task-definition-family": "nginx",
                "com.amazonaws.ecs.task-definition-version": "5",
            },
        }
    ],
}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (TASK_DOC, "arn:aws:ecs:eu-west-1:111122223333:task-definition/shop-api:26"),
        (DOCS_TASK, "arn:aws:ecs:us-east-2:012345678910:task-definition/nginx:5"),
        (
            {
                **TASK_DOC,
                "Cluster": "prod",
                "TaskARN": f"arn:aws-cn:ecs:cn-north-1:111122223333:task/prod/{TASK_ID}",
            },
            "arn:aws-cn:ecs:cn-north-1:111122223333:task-definition/shop-api:26",
        ),
        ({**TASK_DOC, "Revision": ""}, None),
        ({k: v for k, v in TASK_DOC.items() if k != "Family"}, None),
    ],
)
def test_task_definition_arn_from_family_and_revision(doc: dict, expected: str | None) -> None:
    ctx = TaskContext.from_metadata(doc, None)
    assert ctx.task_definition_arn == expected


def test_runtime_findings_name_the_task_definition(endpoint) -> None:
    """The metadata's task definition reaches the AwsEcsTask resource of an ASFF finding."""
    from securityhub import asff
    from securityhub.findings import RuntimeFinding, ScannerInfo, Severity
    from sidecar.sinks import container_resource

    ctx = discover({METADATA_ENV: endpoint[0]})
    container = container_resource(ctx, "app", "eu-west-1")
    finding = RuntimeFinding(
        container, "shell", "process", Severity.HIGH, "alert", "/bin/sh", ScannerInfo("x")
    )
    doc = asff.build(finding, asff.BuildContext("111122223333", "eu-west-1"))
    (task,) = [r for r in doc["Resources"] if r["Type"] == "AwsEcsTask"]
    assert task["Id"] == TASK_DOC["TaskARN"]
    assert task["Details"]["AwsEcsTask"] == {
        "ClusterArn": TASK_DOC["Cluster"],
        "TaskDefinitionArn": "arn:aws:ecs:eu-west-1:111122223333:task-definition/shop-api:26",
    }


def test_seconds_from_the_environment() -> None:
    """One reader for the sidecar's seconds settings (heartbeat, loaded-files sampling)."""
    from sidecar.context import seconds_from
    from sidecar.loaded import INTERVAL_ENV, interval_from
    from sidecar.monitor import HEARTBEAT_ENV, heartbeat_seconds

    assert seconds_from({}, "X_SECONDS", 10.0) == 10.0
    assert seconds_from({"X_SECONDS": ""}, "X_SECONDS", 10.0) == 10.0
    assert seconds_from({"X_SECONDS": "2.5"}, "X_SECONDS", 10.0) == 2.5
    assert seconds_from({"X_SECONDS": "0"}, "X_SECONDS", 10.0, zero="none") == 0
    for bad in ("0", "-1", "soon", "inf", "nan", "1e999"):
        with pytest.raises(ConfigurationError, match=r"X_SECONDS=.* is not a positive") as err:
            seconds_from({"X_SECONDS": bad}, "X_SECONDS", 10.0)
        assert err.value.remediation == "use e.g. 10"
    with pytest.raises(ConfigurationError, match="is not a number of seconds") as err:
        seconds_from({"X_SECONDS": "-1"}, "X_SECONDS", 60.0, zero="none")
    assert err.value.remediation == "use e.g. 60, or 0 for none"
    # both settings read through it: 0 is "only at exit" for one, an error for the other
    assert heartbeat_seconds({HEARTBEAT_ENV: "0"}) == 0
    with pytest.raises(ConfigurationError, match=INTERVAL_ENV):
        interval_from({INTERVAL_ENV: "0"})


def test_no_endpoint_means_no_context() -> None:
    assert discover({}) is None


def test_unreachable_endpoint_is_a_configuration_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    with pytest.raises(ConfigurationError, match=METADATA_ENV):
        discover({METADATA_ENV: f"http://127.0.0.1:{port}/v4/x"})
    with pytest.raises(ConfigurationError, match="not an http URL"):
        discover({METADATA_ENV: "file:///etc/passwd"})


def test_short_cluster_names_become_arns() -> None:
    doc = {**TASK_DOC, "Cluster": "prod"}
    ctx = TaskContext.from_metadata(doc, None)
    assert ctx.cluster_arn == "arn:aws:ecs:eu-west-1:111122223333:cluster/prod"
    with pytest.raises(ConfigurationError):
        TaskContext.from_metadata({"Family": "x"}, None)


def test_short_cluster_names_keep_the_task_arns_partition() -> None:
    doc = {
        **TASK_DOC,
        "Cluster": "prod",
        "TaskARN": "arn:aws-cn:ecs:cn-north-1:111122223333:task/prod/0123456789abcdef",
    }
    ctx = TaskContext.from_metadata(doc, None)
    assert ctx.cluster_arn == "arn:aws-cn:ecs:cn-north-1:111122223333:cluster/prod"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"0::/ecs/{TASK_ID}/{TASK_ID}-2495160603\n", f"{TASK_ID}-2495160603"),
        (
            f"12:pids:/ecs/{TASK_ID}/{TASK_ID}-1111111111\n11:memory:/ecs/{TASK_ID}/"
            f"{TASK_ID}-1111111111\n",
            f"{TASK_ID}-1111111111",
        ),
        ("0::/docker/" + "b" * 64 + "\n", "b" * 64),
        ("0::/system.slice/docker-" + "c" * 64 + ".scope\n", "c" * 64),
        ("0::/user.slice/user-0.slice/session-1.scope\n", None),
        ("0::/\n", None),
    ],
)
def test_container_id_from_cgroup(text: str, expected: str | None) -> None:
    assert container_id_from_cgroup(text) == expected


def test_container_of_maps_ids_to_names() -> None:
    ctx = TaskContext.from_metadata(TASK_DOC, CONTAINER_DOC)
    own = container_id(os.getpid())
    if own is None:  # not in a container here
        assert ctx.container_of(os.getpid()) is None
    else:
        named = dataclasses.replace(ctx, containers={own: "mine"})
        assert named.container_of(os.getpid()) == "mine"
        assert ctx.container_of(os.getpid()) in (own, own[:12])
    assert container_id(999_999_999) is None
    assert ctx.container_of(999_999_999) is None


def test_heartbeat_rates_and_cpu() -> None:
    now = [100.0]
    hb = Heartbeat(clock=lambda: now[0])
    now[0] = 102.0
    sum(i * i for i in range(200_000))  # burn a little CPU
    line = hb.beat({"stops": 500, "events": 7, "syscall_stops": 300}, {"dropped": 3})
    assert line["stops_per_s"] == 250.0
    assert (line["events"], line["drops"], line["syscall_stops"]) == (7, 3, 300)
    assert line["cpu_seconds"] > 0 and line["cpu_percent"] >= 0
    now[0] = 104.0
    line = hb.beat({"stops": 600}, {})
    assert line["stops_per_s"] == 50.0
