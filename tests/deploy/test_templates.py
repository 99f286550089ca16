"""The CloudFormation templates: linters clean, and secure-by-default properties held.

cfn-lint must report nothing at all (no warnings either). checkov must report no failed
check, and every check skipped in a template must say why (documented skips only).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import cfn

TEMPLATE_FILES = [cfn.HUB, cfn.SPOKE, cfn.SIDECAR]
# checkov pins boto3/botocore versions that conflict with ours, so it lives in its own
# virtual environment; CHECKOV names its executable when it is not on PATH.
CHECKOV_CANDIDATES = ("/opt/checkov-venv/bin/checkov",)


@pytest.fixture(scope="module")
def hub() -> dict[str, Any]:
    return cfn.load(cfn.HUB)


@pytest.fixture(scope="module")
def spoke() -> dict[str, Any]:
    return cfn.load(cfn.SPOKE)


@pytest.fixture(scope="module")
def sidecar() -> dict[str, Any]:
    return cfn.load(cfn.SIDECAR)


# ------------------------------------------------------------------------------- linters


@pytest.mark.slow
def test_cfn_lint_reports_nothing() -> None:
    # The console script's module (cfnlint has no __main__).
    runner = "import sys; from cfnlint.runner import main; sys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", runner, *map(str, TEMPLATE_FILES)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def _checkov() -> str | None:
    explicit = os.environ.get("CHECKOV")
    if explicit:
        return explicit
    found = shutil.which("checkov")
    if found:
        return found
    return next((c for c in CHECKOV_CANDIDATES if Path(c).exists()), None)


@pytest.mark.slow
def test_checkov_reports_no_failed_check() -> None:
    """The templates and the Dockerfiles."""
    checkov = _checkov()
    if checkov is None:
        pytest.skip("checkov is not installed (pipx install checkov, or set CHECKOV)")
    proc = subprocess.run(
        [
            checkov, "--directory", str(cfn.TEMPLATES), "--directory", str(cfn.ROOT / "docker"),
            "--framework", "cloudformation", "--framework", "dockerfile",
            "--output", "json", "--quiet", "--compact", "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    reports = []
    decoder, text, at = json.JSONDecoder(), proc.stdout.strip(), 0
    while at < len(text):  # one JSON document per framework, sometimes concatenated
        doc, end = decoder.raw_decode(text, at)
        reports += doc if isinstance(doc, list) else [doc]
        at = end
        while at < len(text) and text[at].isspace():
            at += 1
    assert {r["check_type"] for r in reports} == {"cloudformation", "dockerfile"}
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports)
    assert all(r["summary"]["passed"] > 0 for r in reports)
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})"
        for r in reports
        for c in r.get("results", {}).get("failed_checks", [])
    ]
    assert failed == []
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda p: p.name)
def test_every_checkov_skip_is_documented(path: Path) -> None:
    template = cfn.load(path)
    for name, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert skip["id"].startswith("CKV"), name
            assert len(skip.get("comment", "")) >= 40, f"{name}: {skip['id']} skipped without a reason"


# -------------------------------------------------------------------------- IAM hygiene


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda p: p.name)
def test_no_wildcard_actions_or_principals_in_roles(path: Path) -> None:
    template = cfn.load(path)
    for name, role in cfn.resources(template, "AWS::IAM::Role").items():
        for stmt in cfn.role_statements(role):
            for action in cfn.as_list(stmt["Action"]):
                assert "*" not in action.split(":", 1)[1], f"{name}: {action}"
        for stmt in cfn.statements(role["Properties"]["AssumeRolePolicyDocument"]):
            assert stmt["Principal"] != "*", name
            assert stmt.get("Condition"), f"{name}: trust without a condition"


# Actions without resource-level permissions: the only ones allowed on Resource "*".
NO_RESOURCE_LEVEL = {
    "ecr:GetAuthorizationToken",
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda p: p.name)
def test_star_resources_only_where_iam_has_no_resource_level(path: Path) -> None:
    template = cfn.load(path)
    for name, role in cfn.resources(template, "AWS::IAM::Role").items():
        for stmt in cfn.role_statements(role):
            if "*" in cfn.as_list(stmt["Resource"]):
                extra = set(cfn.as_list(stmt["Action"])) - NO_RESOURCE_LEVEL
                assert not extra, f"{name}: {sorted(extra)} on Resource '*'"


# ---------------------------------------------------------------------------------- hub


def test_hub_parameters_cover_the_issue(hub: dict[str, Any]) -> None:
    expected = {
        "QualysPod", "QualysTokenSecretArn", "SubnetIds", "SecurityGroupIds", "SweepSchedule",
        "FindingIdPrefix", "ScanTypes", "CreateVpcEndpoints", "TaskCpu", "TaskMemory",
        "LauncherMemory", "LauncherTimeout",
    }
    assert expected <= set(hub["Parameters"])


def test_hub_task_definition(hub: dict[str, Any]) -> None:
    (task,) = cfn.resources(hub, "AWS::ECS::TaskDefinition").values()
    props = task["Properties"]
    assert props["RequiresCompatibilities"] == ["FARGATE"]
    assert props["Cpu"] == {"Ref": "TaskCpu"} and props["Memory"] == {"Ref": "TaskMemory"}
    assert props["TaskRoleArn"] != props["ExecutionRoleArn"]
    check = cfn.containers(task)["check"]
    assert check["Image"] == {"Ref": "CheckImage"}
    assert check["ReadonlyRootFilesystem"] is True
    env = cfn.env_names(check)
    assert {
        "CONTAINERSCAN_BUCKET", "CONTAINERSCAN_TABLE", "SNS_TOPIC_ARN", "CONTAINERSCAN_PREFIX",
        "QUALYS_POD", "SCAN_TYPES",
    } <= env
    # Either kind of Qualys credentials comes from Secrets Manager, never as a plain
    # environment value: client id + secret (a JSON secret, preferred) or the token.
    assert cfn.secret_names(check) == {
        "QUALYS_CLIENT_ID", "QUALYS_CLIENT_SECRET", "QUALYS_ACCESS_TOKEN",
    }
    assert not any("TOKEN" in n or "PASSWORD" in n or "SECRET" in n for n in env)
    by_name = {s["Name"]: s for item in check["Secrets"] for s in cfn.unwrap_if(item)}
    assert by_name["QUALYS_ACCESS_TOKEN"]["ValueFrom"] == {"Ref": "QualysTokenSecretArn"}
    assert cfn.resolve(by_name["QUALYS_CLIENT_SECRET"]["ValueFrom"], {
        "QualysClientSecretArn": "arn:aws:secretsmanager:us-east-1:1:secret:q-AbCdEf",
    }) == "arn:aws:secretsmanager:us-east-1:1:secret:q-AbCdEf:clientSecret::"
    conditions = {item["Fn::If"][0] for item in check["Secrets"]}
    assert conditions == {"WithQualysClient", "WithQualysToken"}
    log = check["LogConfiguration"]
    assert log["LogDriver"] == "awslogs"
    assert log["Options"]["awslogs-group"] == {"Ref": "CheckLogGroup"}


def test_hub_takes_either_qualys_secret_and_refuses_neither(hub: dict[str, Any]) -> None:
    params = hub["Parameters"]
    assert params["QualysClientSecretArn"]["Default"] == params["QualysTokenSecretArn"]["Default"] == ""
    (assertion,) = hub["Rules"]["QualysCredentials"]["Assertions"]
    refused = assertion["Assert"]["Fn::Not"][0]["Fn::And"]
    assert {c["Fn::Equals"][0]["Ref"] for c in refused} == {
        "QualysClientSecretArn", "QualysTokenSecretArn",
    }
    role = hub["Resources"]["ExecutionRole"]
    (client,) = [s for s in cfn.role_statements(role) if s.get("Sid") == "QualysClient"]
    assert client["Action"] == "secretsmanager:GetSecretValue"
    assert client["Resource"] == {"Ref": "QualysClientSecretArn"}


@pytest.mark.parametrize("given", [
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:qualys/token-AbCdEf",
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:qualys/token-AbCdEf:token::",
])
@pytest.mark.parametrize("path", [cfn.HUB, cfn.SIDECAR], ids=lambda p: p.stem)
def test_token_secret_grant_is_the_secret_itself(path: Path, given: str) -> None:
    role = cfn.load(path)["Resources"]["ExecutionRole"]
    (stmt,) = [s for s in cfn.role_statements(role) if s.get("Sid") == "QualysToken"]
    assert cfn.resolve(stmt["Resource"], {"QualysTokenSecretArn": given}) == (
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:qualys/token-AbCdEf"
    )
    # An empty parameter (the sidecar's default) still resolves: no Fn::Select out of range.
    assert cfn.resolve(stmt["Resource"], {"QualysTokenSecretArn": ""}) == "::::::"


def test_hub_log_group_is_encrypted_with_retention(hub: dict[str, Any]) -> None:
    group = hub["Resources"]["CheckLogGroup"]["Properties"]
    assert group["LogGroupName"] == "/ecs/containerscan"
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert "KmsKeyId" in group
    for name, res in cfn.resources(hub, "AWS::Logs::LogGroup").items():
        assert {"KmsKeyId", "RetentionInDays"} <= set(res["Properties"]), name


def test_hub_bucket_is_private_encrypted_tls_only(hub: dict[str, Any]) -> None:
    bucket = hub["Resources"]["ResultsBucket"]["Properties"]
    rule = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"]
    (policy,) = cfn.resources(hub, "AWS::S3::BucketPolicy").values()
    (deny,) = cfn.statements(policy["Properties"]["PolicyDocument"])
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_hub_table(hub: dict[str, Any]) -> None:
    table = hub["Resources"]["Table"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]} == {
        "pk": "S", "sk": "S",
    }
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"]["SSEEnabled"] is True


def test_hub_topic_and_queue_are_encrypted(hub: dict[str, Any]) -> None:
    assert "KmsMasterKeyId" in hub["Resources"]["AlertTopic"]["Properties"]
    assert "KmsMasterKeyId" in hub["Resources"]["LauncherDeadLetterQueue"]["Properties"]
    assert hub["Resources"]["Key"]["Properties"]["EnableKeyRotation"] is True


def test_hub_launcher_and_api(hub: dict[str, Any]) -> None:
    fn = hub["Resources"]["Launcher"]["Properties"]
    assert fn["Handler"] == "check.launcher.handler"
    assert fn["MemorySize"] == {"Ref": "LauncherMemory"}
    assert fn["Timeout"] == {"Ref": "LauncherTimeout"}
    env = fn["Environment"]["Variables"]
    assert {"CONTAINERSCAN_CLUSTER", "CONTAINERSCAN_TASK_DEFINITION", "CONTAINERSCAN_SUBNETS",
            "CONTAINERSCAN_SECURITY_GROUPS", "CONTAINERSCAN_BUCKET"} <= set(env)
    methods = {
        (hub["Resources"][m["Properties"]["ResourceId"]["Ref"]]["Properties"]["PathPart"],
         m["Properties"]["HttpMethod"]): m["Properties"]
        for m in cfn.resources(hub, "AWS::ApiGateway::Method").values()
    }
    assert set(methods) == {("scans", "POST"), ("{runId}", "GET")}
    for method in methods.values():
        assert method["AuthorizationType"] == "AWS_IAM"
        assert method["Integration"]["Type"] == "AWS_PROXY"


def test_hub_event_rules(hub: dict[str, Any]) -> None:
    nightly = hub["Resources"]["NightlySweepRule"]["Properties"]
    assert nightly["ScheduleExpression"] == {"Ref": "SweepSchedule"}
    push = hub["Resources"]["EcrPushRule"]["Properties"]["EventPattern"]
    assert push["source"] == ["aws.ecr"]
    assert push["detail-type"] == ["ECR Image Action"]
    assert push["detail"]["action-type"] == ["PUSH"]
    for rule in ("NightlySweepRule", "EcrPushRule"):
        (target,) = hub["Resources"][rule]["Properties"]["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": ["Launcher", "Arn"]}


def test_hub_vpc_endpoints_are_optional_and_complete(hub: dict[str, Any]) -> None:
    endpoints = cfn.resources(hub, "AWS::EC2::VPCEndpoint")
    services = set()
    for res in endpoints.values():
        assert res["Condition"] == "WithVpcEndpoints"
        services.add(res["Properties"]["ServiceName"]["Fn::Sub"].rsplit(".", 1)[-1])
    expected = {"api", "dkr", "s3", "securityhub", "logs", "sts", "secretsmanager", "sns"}
    assert expected <= services


def test_hub_task_runs_without_public_ip_parameters(hub: dict[str, Any]) -> None:
    # The launcher is the only place tasks start; it gets the network from the stack.
    fn_env = hub["Resources"]["Launcher"]["Properties"]["Environment"]["Variables"]
    assert fn_env["CONTAINERSCAN_SUBNETS"] == {"Fn::Join": [",", {"Ref": "SubnetIds"}]}


# -------------------------------------------------------------------------------- spoke


def test_spoke_role_trusts_only_the_hub_with_external_id(spoke: dict[str, Any]) -> None:
    role = spoke["Resources"]["SpokeRole"]
    (trust,) = cfn.statements(role["Properties"]["AssumeRolePolicyDocument"])
    assert trust["Principal"] == {"AWS": {"Ref": "HubTaskRoleArn"}}
    assert trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"] == {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}
    assert spoke["Parameters"]["ExternalId"]["NoEcho"] is True


def test_spoke_role_grants_ecr_read_and_security_hub_import_only(spoke: dict[str, Any]) -> None:
    role = spoke["Resources"]["SpokeRole"]
    actions = cfn.granted_actions(role)
    assert {a.split(":")[0] for a in actions} == {"ecr", "securityhub"}
    writes = {"ecr:PutImage", "ecr:BatchDeleteImage", "ecr:DeleteRepository",
              "securityhub:BatchUpdateFindings", "securityhub:DeleteInsight"}
    assert not actions & writes
    assert "securityhub:BatchImportFindings" in actions
    assert "ecr:DescribeImages" in actions


def test_spoke_push_events_reach_the_hub_launcher(spoke: dict[str, Any], hub: dict[str, Any]) -> None:
    forward = spoke["Resources"]["ForwardPushRule"]
    assert forward["Condition"] == "ForwardPushes"
    hub_pattern = hub["Resources"]["EcrPushRule"]["Properties"]["EventPattern"]
    assert forward["Properties"]["EventPattern"] == hub_pattern
    (target,) = forward["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": "HubEventBusArn"}
    role = spoke["Resources"]["ForwardRole"]
    assert cfn.granted_actions(role) == {"events:PutEvents"}
    (stmt,) = cfn.role_statements(role)
    assert stmt["Resource"] == {"Ref": "HubEventBusArn"}
    policy = hub["Resources"]["SpokeEventsPolicy"]
    assert policy["Condition"] == "WithSpokeEvents"
    assert policy["Properties"]["Statement"]["Principal"] == {"AWS": {"Ref": "SpokeAccountIds"}}
    assert policy["Properties"]["Statement"]["Action"] == "events:PutEvents"


# ------------------------------------------------------------------------------ sidecar


@pytest.fixture(scope="module")
def attach_task(sidecar: dict[str, Any]) -> dict[str, Any]:
    return sidecar["Resources"]["AttachTaskDefinition"]


@pytest.fixture(scope="module")
def wrap_task(sidecar: dict[str, Any]) -> dict[str, Any]:
    return sidecar["Resources"]["WrapTaskDefinition"]


@pytest.fixture(scope="module")
def rebuilt_wrap_task(sidecar: dict[str, Any]) -> dict[str, Any]:
    return sidecar["Resources"]["RebuiltWrapTaskDefinition"]


def test_sidecar_attach_has_ptrace_and_task_pid_mode(attach_task: dict[str, Any]) -> None:
    assert attach_task["Properties"]["PidMode"] == "task"
    monitor = cfn.containers(attach_task)["containerscan-sidecar"]
    caps = monitor["LinuxParameters"]["Capabilities"]
    assert caps["Add"] == ["SYS_PTRACE"]
    assert caps["Drop"] == ["ALL"]
    assert monitor["Command"] == ["sidecar", "attach", "--all"]
    assert monitor["ReadonlyRootFilesystem"] is True
    assert monitor["Essential"] is False  # the application outlives the monitor
    assert {"Cpu", "Memory"} <= set(monitor)
    app = cfn.containers(attach_task)["app"]
    assert "SYS_PTRACE" not in json.dumps(app)


def test_sidecar_wrap_runs_the_app_under_the_tracer(rebuilt_wrap_task: dict[str, Any]) -> None:
    (app,) = cfn.containers(rebuilt_wrap_task).values()
    assert app["EntryPoint"][1:] == ["sidecar", "run", "--"]
    assert app["Command"] == {"Ref": "AppCommand"}
    assert "SYS_PTRACE" in app["LinuxParameters"]["Capabilities"]["Add"]
    assert app["ReadonlyRootFilesystem"] is True


def test_sidecar_policy_comes_from_ssm_or_s3(sidecar: dict[str, Any],
                                             attach_task: dict[str, Any],
                                             wrap_task: dict[str, Any],
                                             rebuilt_wrap_task: dict[str, Any]) -> None:
    assert {"PolicyS3Bucket", "PolicyS3Key", "PolicySsmParameterName"} <= set(sidecar["Parameters"])
    assert "OnePolicySource" in sidecar["Rules"]
    for task in (attach_task, wrap_task, rebuilt_wrap_task):
        # The container the tracer runs in: the one with SYS_PTRACE.
        monitor = [c for c in cfn.containers(task).values()
                   if "SYS_PTRACE" in json.dumps(c.get("LinuxParameters", {}))]
        (container,) = monitor
        assert "TRACING_POLICY_PATH" in cfn.env_names(container)
        assert cfn.secret_names(container) == {"TRACING_POLICY_DOCUMENT", "QUALYS_ACCESS_TOKEN"}
        assert not {"QUALYS_ACCESS_TOKEN", "QUALYS_TOKEN"} & cfn.env_names(container)


def test_sidecar_logs_are_encrypted(sidecar: dict[str, Any]) -> None:
    (group,) = cfn.resources(sidecar, "AWS::Logs::LogGroup").values()
    assert "KmsKeyId" in group["Properties"]
    for task in cfn.resources(sidecar, "AWS::ECS::TaskDefinition").values():
        for container in cfn.containers(task).values():
            assert container["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": "LogGroup"}


def test_sidecar_notes_platform_version(sidecar: dict[str, Any]) -> None:
    assert "1.4.0" in sidecar["Description"]
    assert "--platform-version 1.4.0" in sidecar["Outputs"]["RunTaskHint"]["Value"]["Fn::Sub"]
