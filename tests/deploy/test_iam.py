"""Least privilege, checked against the code: every AWS action the code calls is granted by
the role it runs under, and the role grants nothing more than that plus a short, documented
allow-list of actions that have no direct API call in the code.

The expected sets are computed from the code at test time (tests/deploy/api_calls.py), so
the test follows the code as it changes: a new API call without a grant fails it, and so
does a grant the code no longer needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import api_calls, cfn

# Actions that need no IAM permission at all (AWS STS API reference: "No permissions are
# required to perform this operation").
NO_PERMISSION_NEEDED = {"sts:GetCallerIdentity"}

# Method calls that match an AWS operation's name but are not AWS calls.
# (module, method) -> why. A stale entry (matching nothing) fails the test.
NOT_AWS_CALLS = {
    ("check.sweep", "scan"): "Scanner.scan (check/scanner.py), not DynamoDB Scan",
    ("check.builtin.scanner", "scan"): "Scanner.scan of the chosen scanner, not DynamoDB Scan",
}

KMS_FOR_ENCRYPTED_DATA = {
    "kms:Decrypt": "reading SSE-KMS objects, items and messages encrypted with the stack key",
    "kms:GenerateDataKey": "writing SSE-KMS objects and publishing to the KMS-encrypted topic",
}


@dataclass(frozen=True)
class RoleCase:
    """A role in a template and the code that runs under it."""

    template: Path
    role: str
    entries: tuple[str, ...]
    # Granted without a direct call in the code: action -> why.
    extra: dict[str, str] = field(default_factory=dict)
    # Called by reachable code but deliberately not granted: action -> why.
    not_granted: dict[str, str] = field(default_factory=dict)
    # Only these services' actions are expected in this role (the spoke's scope).
    services: frozenset[str] | None = None


HUB_TASK = RoleCase(
    template=cfn.HUB,
    role="TaskRole",
    entries=("check.commands",),
    extra={
        **KMS_FOR_ENCRYPTED_DATA,
        "ecr:GetDownloadUrlForLayer": "QScanner pulls the image layers itself with the task's "
                                      "credentials (ECR auth through the AWS credential chain)",
        "s3:ListBucket": "without it S3 answers 403 instead of 404 for a missing key, and the "
                         "cache and status reads need to tell a miss from a refusal",
    },
)

SPOKE = RoleCase(
    template=cfn.SPOKE,
    role="SpokeRole",
    entries=("check.commands",),
    services=frozenset({"ecr", "securityhub"}),
    extra={
        "ecr:GetDownloadUrlForLayer": "QScanner pulls the spoke's image layers with the "
                                      "assumed role's credentials",
    },
    not_granted={
        "ecr:PutImage": "tagging scanned images is a hub-account feature: the spoke role is "
                        "read-only on ECR by design (issue 4: ECR read, Security Hub import)",
    },
)

SIDECAR_TASK = RoleCase(
    template=cfn.SIDECAR,
    role="TaskRole",
    entries=("sidecar.commands",),
    extra={
        "kms:Decrypt": "publishing to an alert topic encrypted with a customer managed key",
        "kms:GenerateDataKey": "publishing to an alert topic encrypted with a customer "
                               "managed key",
    },
    not_granted={
        "s3:ListBucket": "the example grants one policy object; reading every *.yaml under a "
                         "prefix (TRACING_POLICY_PATH=s3://bucket/prefix/) needs s3:ListBucket "
                         "with an s3:prefix condition, documented at the PolicyS3Key parameter",
        "sts:AssumeRole": "the sidecar reports in its own account; SessionFactory assumes "
                          "roles only for cross-account targets, which the sidecar never builds",
    },
)

LAUNCHER = RoleCase(
    template=cfn.HUB,
    role="LauncherRole",
    entries=("check.launcher",),
    extra={
        **KMS_FOR_ENCRYPTED_DATA,
        "iam:PassRole": "RunTask passes the task and execution roles to ECS",
        "sqs:SendMessage": "Lambda itself sends failed asynchronous events to the dead-letter queue",
        "logs:CreateLogStream": "the Lambda runtime writes the function's logs",
        "logs:PutLogEvents": "the Lambda runtime writes the function's logs",
        "ec2:CreateNetworkInterface": "Lambda attaches the function to the VPC",
        "ec2:DescribeNetworkInterfaces": "Lambda attaches the function to the VPC",
        "ec2:DeleteNetworkInterface": "Lambda detaches the function from the VPC",
        "ec2:AssignPrivateIpAddresses": "Lambda manages the function's VPC addresses",
        "ec2:UnassignPrivateIpAddresses": "Lambda manages the function's VPC addresses",
        "s3:ListBucket": "without it S3 answers 403 instead of 404 for a missing status.json, "
                         "and GET /scans/{runId} must tell an unknown run from a refusal",
    },
    not_granted={
        "dynamodb:BatchWriteItem": "the launcher only reads the scan cache (ScanCache.get_many); "
                                   "ScanCache.put/put_many are the sweep's",
        "sts:AssumeRole": "the launcher works in the hub account only; SessionFactory assumes "
                          "roles only for cross-account targets, which the launcher never builds",
    },
)

CASES = [HUB_TASK, SPOKE, SIDECAR_TASK, LAUNCHER]

# The execution roles run no project code: the ECS agent pulls images, writes logs and reads
# the secrets and parameters the task definition names. Exactly these actions are allowed.
EXECUTION_ACTIONS = {
    "ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer", "logs:CreateLogStream", "logs:PutLogEvents",
    "secretsmanager:GetSecretValue", "ssm:GetParameters", "kms:Decrypt",
}


def _role(case: RoleCase) -> dict[str, Any]:
    return cfn.load(case.template)["Resources"][case.role]


def _required(case: RoleCase) -> dict[str, list[api_calls.Call]]:
    if not all(api_calls.module_path(e) for e in case.entries):
        pytest.skip(f"{', '.join(case.entries)} is not written yet")
    found = api_calls.actions(case.entries)
    required: dict[str, list[api_calls.Call]] = {}
    for action, where in found.items():
        real = [c for c in where if (c.module, c.source) not in NOT_AWS_CALLS]
        if real and action not in NO_PERMISSION_NEEDED:
            required[action] = real
    if case.services is not None:
        required = {a: w for a, w in required.items() if a.split(":")[0] in case.services}
    return required


def _describe(calls: list[api_calls.Call]) -> str:
    return ", ".join(sorted({f"{c.module}:{c.line} .{c.source}()" for c in calls}))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.template.stem}.{c.role}")
def test_every_called_action_is_granted(case: RoleCase) -> None:
    required = _required(case)
    granted = cfn.granted_actions(_role(case))
    missing = {
        action: _describe(calls)
        for action, calls in required.items()
        if action not in granted and action not in case.not_granted
    }
    assert missing == {}, f"{case.role} lacks actions the code calls"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.template.stem}.{c.role}")
def test_nothing_more_is_granted(case: RoleCase) -> None:
    required = _required(case)
    granted = cfn.granted_actions(_role(case))
    needless = granted - set(required) - set(case.extra)
    assert needless == set(), f"{case.role} grants actions no code calls"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.template.stem}.{c.role}")
def test_allow_lists_are_not_stale(case: RoleCase) -> None:
    required = _required(case)
    granted = cfn.granted_actions(_role(case))
    # An "extra" action the code now calls directly belongs to the required set instead.
    assert not set(case.extra) & set(required), "drop these from the allow-list"
    assert set(case.extra) <= granted, "the allow-list names actions the role no longer grants"
    assert set(case.not_granted) <= set(required), "not_granted names actions no code calls"
    assert all(len(reason) > 20 for reason in {**case.extra, **case.not_granted}.values())


# Modules that create AWS clients but run under none of the deployed roles: module -> why.
NOT_DEPLOYED = {
    "check.quickstart.demo": "the local quick start, against moto's server on loopback",
    "securityhub.commands": "init/findings/reconcile, run by an operator from a shell",
}


def _all_modules() -> list[str]:
    modules = []
    for package in api_calls.PACKAGES:
        for path in (api_calls.ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(api_calls.ROOT).with_suffix("").parts)
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def test_every_module_calling_aws_runs_under_a_checked_role() -> None:
    """The whole of check/, securityhub/ and sidecar/ is covered: a module that creates AWS
    clients is reachable from a role's entry points, or is named here as not deployed."""
    deployed = api_calls.closure([e for case in CASES for e in case.entries])
    uncovered = {
        m for m in _all_modules()
        if m not in deployed and api_calls.services([m]) and m not in NOT_DEPLOYED
    }
    assert uncovered == set()
    assert not set(NOT_DEPLOYED) & deployed, "now deployed: drop it from NOT_DEPLOYED"


def test_not_aws_call_entries_still_match_something() -> None:
    modules = api_calls.closure(["check.commands", "sidecar.commands", "check.launcher"])
    seen = {(c.module, c.source) for c in api_calls.calls(modules)}
    stale = set(NOT_AWS_CALLS) - seen
    assert stale == set()


@pytest.mark.parametrize("path", [cfn.HUB, cfn.SIDECAR], ids=lambda p: p.stem)
def test_execution_roles_only_do_the_agents_work(path: Path) -> None:
    role = cfn.load(path)["Resources"]["ExecutionRole"]
    assert cfn.granted_actions(role) <= EXECUTION_ACTIONS


# --------------------------------------------------------------- the extractor itself


def test_extractor_finds_calls_paginators_and_transfers(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A throwaway package proves the extractor: direct calls, paginators, s3transfer,
    unreachable helpers left out, and non-AWS method names ignored without a client."""
    package = tmp_path / "check"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "entry.py").write_text(
        "from check import helper\n"
        "def run(sessions):\n"
        "    ecr = sessions.client('ecr')\n"
        "    for page in ecr.get_paginator('describe_images').paginate(repositoryName='r'):\n"
        "        pass\n"
        "    helper.store(sessions.client('s3'))\n"
    )
    (package / "helper.py").write_text(
        "def store(s3):\n"
        "    s3.upload_file('f', 'b', 'k')\n"
        "    s3.head_object(Bucket='b', Key='k')\n"
        "def only_for_init(s3):\n"
        "    s3.create_bucket(Bucket='b')\n"
    )
    monkeypatch.setattr(api_calls, "ROOT", tmp_path)
    api_calls._tree.cache_clear()
    try:
        found = api_calls.actions(["check.entry"])
    finally:
        api_calls._tree.cache_clear()
    assert set(found) == {"ecr:DescribeImages", "s3:PutObject", "s3:GetObject"}
