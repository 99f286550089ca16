"""Sinks against real files, moto (SNS, Security Hub with the emulator) and a local HTTP server."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from securityhub import emulator
from securityhub.aws import SessionFactory
from securityhub.errors import ConfigurationError
from securityhub.logs import configure
from sidecar.events import RuntimeEvent
from sidecar.pipeline import Pipeline
from sidecar.policy import resolve_policy
from sidecar.policy_model import (
    Actions,
    AlertDestination,
    Performance,
    Policy,
    QualysIntegration,
)
from sidecar.sinks import (
    JsonLinesSink,
    QualysSink,
    SecurityHubSink,
    SinkError,
    SnsSink,
    build_sinks,
    qualys_gateway,
    qualys_url,
)

ACCOUNT = "123456789012"
REGION = "us-east-1"
TOKEN = "qualys-secret-token-1234567890"
CONTEXT = {
    "account_id": ACCOUNT,
    "region": REGION,
    "cluster_arn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/prod",
    "task_arn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/prod/0123456789abcdef",
    "task_family": "web",
    "container_name": "app",
}


def event(**kw: Any) -> RuntimeEvent:
    base: dict[str, Any] = dict(
        timestamp=1_700_000_000.0,
        category="network",
        rule="network:blocked-port",
        severity="high",
        action="block",
        pid=4242,
        ppid=1,
        process="/usr/bin/nc",
        syscall="connect",
        ip="203.0.113.9",
        port=4444,
        container="app",
        message="connection to blocked port 4444",
    )
    base.update(kw)
    return RuntimeEvent(**base)


REQUIRED = {
    "timestamp",
    "category",
    "rule",
    "severity",
    "action",
    "pid",
    "ppid",
    "process",
    "syscall",
}


# ------------------------------------------------------------------------- JSON lines


def test_json_lines_file_and_stream(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonLinesSink.to_file(path)
    batch = [
        event(),
        event(
            category="software",
            rule="software:pip",
            action="log",
            ip=None,
            port=None,
            package_manager="pip",
            args=("pip", "install", "x"),
            count=3,
        ),
    ]
    sink.send(batch)
    sink.send(batch[:1])
    sink.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 3
    assert all(REQUIRED <= set(doc) for doc in lines)
    assert lines[0]["ip"] == "203.0.113.9" and lines[0]["port"] == 4444
    assert lines[1]["package_manager"] == "pip" and lines[1]["args"] == ["pip", "install", "x"]
    assert lines[1]["count"] == 3
    stream = io.StringIO()
    JsonLinesSink(stream).send(batch)
    assert [json.loads(x)["rule"] for x in stream.getvalue().splitlines()] == [
        "network:blocked-port",
        "software:pip",
    ]


# ------------------------------------------------------------------------------- SNS


@pytest.fixture
def aws() -> Iterator[None]:
    from moto import mock_aws

    emulator.install()
    emulator.set_faults()
    with mock_aws():
        yield
    emulator.set_faults()


def test_sns_sink_publishes_alerts_only(aws: None) -> None:
    sessions = SessionFactory(REGION)
    sns, sqs = sessions.client("sns"), sessions.client("sqs")
    topic = sns.create_topic(Name="runtime-alerts")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    sink = SnsSink(sns, topic)
    sink.send(
        [
            event(),
            event(action="log", rule="network:outside-allowlist"),
            event(severity="critical", rule="process:xmrig", category="process"),
        ]
    )
    sink.send([event(action="log")])  # nothing to alert: no message
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 1
    body = json.loads(messages[0]["Body"])
    assert [e["rule"] for e in body["events"]] == ["network:blocked-port", "process:xmrig"]
    assert body["source"] == "containerscan-sidecar"


def test_sns_sink_splits_large_batches_and_filters_event_types(aws: None) -> None:
    sessions = SessionFactory(REGION)
    sns, sqs = sessions.client("sns"), sessions.client("sqs")
    topic = sns.create_topic(Name="t")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="q")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
    )
    big = [event(path="/x" * 2000, pid=i) for i in range(100)]  # ~400 KB of JSON
    big.append(event(category="file", rule="fim:/etc"))
    SnsSink(sns, topic, frozenset({"network_connection"})).send(big)
    received: list[dict[str, Any]] = []
    sizes: list[int] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            break
        received += [json.loads(m["Body"]) for m in got]
        sizes += [len(m["Body"].encode()) for m in got]
        for m in got:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    assert len(received) >= 2
    assert all(size <= 262_144 for size in sizes)
    rules = [e["rule"] for r in received for e in r["events"]]
    assert len(rules) == 100 and "fim:/etc" not in rules


# ----------------------------------------------------------------------- Security Hub


def test_security_hub_sink_aggregates_a_loop_into_one_finding(aws: None) -> None:
    from securityhub.hub import SecurityHubPublisher
    from securityhub.ledger import create_table

    sessions = SessionFactory(REGION, max_attempts=1)
    create_table(sessions.client("dynamodb"), "ledger")
    publisher = SecurityHubPublisher(sessions, "ledger")
    sink = SecurityHubSink(publisher, CONTEXT, REGION)
    policy = Policy(performance=Performance(batch_size=50, batch_timeout=0.1))
    pipe = Pipeline(policy, [sink])
    for i in range(1_000):
        pipe.submit(event(pid=5000 + i, timestamp=1_700_000_000.0 + i))
    pipe.submit(
        event(
            rule="fim:/etc",
            category="file",
            action="alert",
            ip=None,
            port=None,
            path="/etc/passwd",
            syscall="openat",
            process="/usr/bin/python3",
        )
    )
    pipe.submit(event(action="log", rule="network:outside-allowlist", port=443))  # not an alert
    pipe.close()
    assert pipe.stats()["sinks"]["security-hub"]["failed_batches"] == 0
    hub = sessions.client("securityhub")
    findings = hub.get_findings(MaxResults=100)["Findings"]
    assert len(findings) == 2
    loop = next(f for f in findings if "blocked-port" in f["Id"])
    assert loop["ProductFields"]["containerscan/runtime/count"] == "1000"
    assert loop["Resources"][0]["Id"].endswith("/app")
    # more of the same later: still one finding, the count grows
    sink.send([event(count=5, timestamp=1_700_002_000.0)])
    findings = hub.get_findings(MaxResults=100)["Findings"]
    loop = next(f for f in findings if "blocked-port" in f["Id"])
    assert len(findings) == 2
    assert loop["ProductFields"]["containerscan/runtime/count"] == "1005"


# ------------------------------------------------------------------------- Qualys CRS


class Recorder(BaseHTTPRequestHandler):
    statuses: ClassVar[list[int]] = []
    requests: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []
    location: ClassVar[str] = ""
    retry_after: ClassVar[str] = "0"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).requests.append((self.path, dict(self.headers), body))
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", type(self).retry_after)
        if 300 <= status < 400:
            self.send_header("Location", type(self).location)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        return


def _serve() -> Iterator[tuple[str, type[Recorder]]]:
    handler = type("Handler", (Recorder,), {"statuses": [], "requests": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server() -> Iterator[tuple[str, type[Recorder]]]:
    yield from _serve()


@pytest.fixture
def elsewhere() -> Iterator[tuple[str, type[Recorder]]]:
    """A second server on another port: where a redirect would take the token."""
    yield from _serve()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_qualys_sink_never_follows_a_redirect_with_its_token(
    server: tuple[str, type[Recorder]], elsewhere: tuple[str, type[Recorder]], status: int
) -> None:
    url, handler = server
    other_url, other = elsewhere
    handler.statuses = [status]
    handler.location = other_url + "/steal?x=1"
    sink = QualysSink(url, TOKEN, attempts=3, sleep=lambda _s: None)
    pipe = Pipeline(Policy(), [sink])
    pipe.submit(event())
    pipe.close()
    assert len(handler.requests) == 1  # not retried either: a redirect is an answer
    assert other.requests == []  # the token never reached the other host:port
    sinks = pipe.stats()["sinks"]["qualys-crs"]
    assert sinks["sent_events"] == 0 and sinks["failed_batches"] == 1  # not delivered
    handler.statuses = [status]
    with pytest.raises(SinkError) as caught:
        sink.send([event()])
    assert "redirect" in caught.value.remediation and "steal" not in str(caught.value)


@pytest.mark.parametrize("status", [201, 202, 204])
def test_qualys_sink_counts_any_2xx_as_delivered(
    server: tuple[str, type[Recorder]], status: int
) -> None:
    url, handler = server
    handler.statuses = [status]
    QualysSink(url, TOKEN, sleep=lambda _s: None).send([event()])
    assert len(handler.requests) == 1


def test_qualys_sink_honours_retry_after_as_an_http_date(
    server: tuple[str, type[Recorder]],
) -> None:
    from email.utils import formatdate

    url, handler = server
    handler.statuses = [429, 200]
    handler.retry_after = formatdate(time.time() + 30, usegmt=True)
    sleeps: list[float] = []
    QualysSink(url, TOKEN, sleep=sleeps.append).send([event()])
    assert len(sleeps) == 1 and 25 < sleeps[0] <= 30


def test_qualys_sink_posts_with_bearer_token_and_retries(
    server: tuple[str, type[Recorder]],
) -> None:
    url, handler = server
    handler.statuses = [503, 429, 200]
    sleeps: list[float] = []
    sink = QualysSink(
        url,
        TOKEN,
        context=CONTEXT,
        sleep=sleeps.append,
        event_types=frozenset({"network_connection"}),
    )
    sink.send([event(), event(category="file", rule="fim:/etc"), event(action="log")])
    assert len(handler.requests) == 3 and sink.retries == 2
    assert sleeps[1] == 0.0  # Retry-After honoured
    path, headers, body = handler.requests[-1]
    assert path == "/crs/v1/events"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    doc = json.loads(body)
    assert [e["eventType"] for e in doc["events"]] == ["network_connection"]
    assert doc["context"]["task_family"] == "web"
    assert REQUIRED <= set(doc["events"][0])


def test_qualys_sink_gives_up_and_never_logs_the_token(
    server: tuple[str, type[Recorder]],
) -> None:
    url, handler = server
    handler.statuses = [500] * 10
    sink = QualysSink(url + "/custom/path", TOKEN, attempts=3, sleep=lambda _s: None)
    with pytest.raises(SinkError, match="after 3 attempts"):
        sink.send([event()])
    assert len(handler.requests) == 3 and handler.requests[0][0] == "/custom/path"
    # 401 is not retried, and says what to check
    handler.statuses = [401]
    handler.requests.clear()
    with pytest.raises(SinkError) as caught:
        sink.send([event()])
    assert len(handler.requests) == 1 and "QUALYS_ACCESS_TOKEN" in str(caught.value)
    # through the pipeline: counted, and the token is masked in every log line
    stream = io.StringIO()
    configure("DEBUG", stream=stream, json_lines=True)
    try:
        handler.statuses = [500] * 10
        pipe = Pipeline(Policy(), [sink])
        pipe.submit(event(message=f"token {TOKEN} leaked?"))
        pipe.close()
        assert pipe.stats()["sinks"]["qualys-crs"]["failed_batches"] == 1
    finally:
        logging.getLogger("containerscan").handlers.clear()
    assert "sink failed a batch" in stream.getvalue()
    assert TOKEN not in stream.getvalue()


def test_qualys_endpoint_rules() -> None:
    assert qualys_url("https://gateway.qg2.apps.qualys.com") == (
        "https://gateway.qg2.apps.qualys.com/crs/v1/events"
    )
    with pytest.raises(ConfigurationError, match="not https"):
        qualys_url("http://gateway.qg2.apps.qualys.com")
    assert qualys_gateway("us2") == "https://gateway.qg2.apps.qualys.com"
    with pytest.raises(ConfigurationError, match="QUALYS_POD"):
        qualys_gateway("EU3")


# ---------------------------------------------------------------------------- factory


def test_build_sinks_from_policy_and_environment(
    aws: None, tmp_path: Path, server: tuple[str, type[Recorder]]
) -> None:
    url, _ = server
    sessions = SessionFactory(REGION)
    topic = sessions.client("sns").create_topic(Name="alerts")["TopicArn"]
    policy = Policy(
        actions=Actions(
            destinations=(
                AlertDestination("qualys-crs", event_types=frozenset({"file_change"})),
                AlertDestination("sns"),
                AlertDestination("security-hub"),
            ),
            qualys=QualysIntegration(enabled=True, endpoint=url),
        )
    )
    env = {"SNS_TOPIC_ARN": topic, "QUALYS_ACCESS_TOKEN": TOKEN, "CONTAINERSCAN_TABLE": "t"}
    sinks = build_sinks(
        policy,
        env,
        events_file=tmp_path / "e.jsonl",
        sessions=sessions,
        context=CONTEXT,
        stdout=io.StringIO(),
    )
    assert [s.name for s in sinks] == ["stdout", "file", "sns", "security-hub", "qualys-crs"]
    # without the settings, alert destinations are skipped (the workload must still start)
    bare = build_sinks(policy, {"CONTAINERSCAN_EVENTS_STDOUT": "0"}, sessions=sessions)
    assert bare == []
    # balanced mode + QUALYS_POD: the gateway of the pod
    balanced = resolve_policy({})
    qualys = build_sinks(
        balanced, {"QUALYS_POD": "US3", "QUALYS_ACCESS_TOKEN": TOKEN}, stdout=io.StringIO()
    )
    assert [s.name for s in qualys] == ["stdout", "qualys-crs"]
    assert isinstance(qualys[1], QualysSink)
    assert qualys[1].url == "https://gateway.qg3.apps.qualys.com/crs/v1/events"


def test_security_hub_sink_retries_unaccepted_counts_with_the_next_batch(aws: None) -> None:
    from securityhub.hub import SecurityHubPublisher
    from securityhub.ledger import create_table

    sessions = SessionFactory(REGION, max_attempts=1)
    create_table(sessions.client("dynamodb"), "ledger")
    publisher = SecurityHubPublisher(
        sessions,
        "ledger",
        gateway_options={"max_attempts": 2, "backoff_base": 0.001, "backoff_cap": 0.002},
    )
    sink = SecurityHubSink(publisher, CONTEXT, REGION)
    # every finding comes back in FailedFindings (InternalFailure) until the faults stop
    emulator.set_faults(emulator.Faults(failed=1.0))
    with pytest.raises(SinkError):
        sink.send([event(count=7)])
    emulator.set_faults()
    sink.send([event(rule="process:nc", category="process", ip=None, port=None)])
    findings = sessions.client("securityhub").get_findings(MaxResults=100)["Findings"]
    counts = {
        f["Id"].rsplit("/", 2)[-2]: f["ProductFields"]["containerscan/runtime/count"]
        for f in findings
    }
    assert len(findings) == 2, [f["Id"] for f in findings]
    assert sorted(counts.values()) == ["1", "7"]
