"""The sidecar example template deploys both ways (moto's CloudFormation), and the sidecar
image's entrypoint installs the launcher the wrap deployment's init container copies.

The deployed task definitions are read back through the ECS API: the default wrap
deployment runs the unchanged application image under the copied launcher, after the init
container succeeded; the rebuilt-image variant exists only when its image is given; attach
mode carries the seccomp switch.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.deploy import cfn

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "sidecar-entrypoint.sh"
REGION = "us-east-1"
SIDECAR_IMAGE = (
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/containerscan/sidecar@sha256:" + "a" * 64
)
APP_IMAGE = "public.ecr.aws/docker/library/alpine:3.20"
LAUNCHER = "/containerscan/bin/containerscan-run"


def deploy(**parameters: str) -> dict[str, dict[str, Any]]:
    """Create the stack; its task definitions by output name, as ECS describes them."""
    given = {
        "SidecarImage": SIDECAR_IMAGE,
        "AppImage": APP_IMAGE,
        "PolicySsmParameterName": "containerscan/policy",
        **parameters,
    }
    with mock_aws():
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        cloudformation.create_stack(
            StackName="sidecar",
            TemplateBody=cfn.SIDECAR.read_text(),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in given.items()],
            Capabilities=["CAPABILITY_IAM"],
        )
        (stack,) = cloudformation.describe_stacks(StackName="sidecar")["Stacks"]
        assert stack["StackStatus"] == "CREATE_COMPLETE"
        ecs = boto3.client("ecs", region_name=REGION)
        return {
            out["OutputKey"]: ecs.describe_task_definition(taskDefinition=out["OutputValue"])[
                "taskDefinition"
            ]
            for out in stack["Outputs"]
            if out["OutputKey"].endswith("TaskDefinitionArn")
        }


def containers(task: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in task["containerDefinitions"]}


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("environment", []) if e}


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


def test_the_default_wrap_deployment_runs_the_unchanged_image_under_the_launcher() -> None:
    tasks = deploy()
    assert set(tasks) == {"AttachTaskDefinitionArn", "WrapTaskDefinitionArn"}
    wrap = containers(tasks["WrapTaskDefinitionArn"])
    install, app = wrap["containerscan-install"], wrap["app"]
    assert install["image"] == SIDECAR_IMAGE and install["essential"] is False
    assert install["command"] == ["install-launcher", "/containerscan"]
    assert app["image"] == APP_IMAGE  # not rebuilt
    assert app["entryPoint"] == [LAUNCHER, "--"]
    assert app["dependsOn"] == [{"containerName": "containerscan-install", "condition": "SUCCESS"}]
    mounts = {m["containerPath"]: m for m in app["mountPoints"]}
    (shared,) = [m for m in install["mountPoints"] if m["containerPath"] == "/containerscan"]
    assert mounts["/containerscan"]["sourceVolume"] == shared["sourceVolume"]
    assert mounts["/containerscan"]["readOnly"] is True  # the application cannot alter it
    assert "SYS_PTRACE" in app["linuxParameters"]["capabilities"]["add"]
    assert env(app)["MONITORING_MODE"] == "balanced"


def test_the_rebuilt_image_variant_and_the_attach_filter_switch() -> None:
    tasks = deploy(
        WrappedAppImage="123456789012.dkr.ecr.us-east-1.amazonaws.com/app:wrapped",
        AttachSeccompFilter="true",
    )
    rebuilt = containers(tasks["RebuiltWrapTaskDefinitionArn"])["app"]
    assert rebuilt["image"].endswith("/app:wrapped")
    assert rebuilt["entryPoint"] == ["containerscan-entrypoint", "sidecar", "run", "--"]
    monitor = containers(tasks["AttachTaskDefinitionArn"])["containerscan-sidecar"]
    assert env(monitor)["CONTAINERSCAN_ATTACH_SECCOMP"] == "true"
    assert monitor["command"] == ["sidecar", "attach", "--all"]


def test_the_attach_filter_is_off_by_default(sidecar_template: dict[str, Any]) -> None:
    assert sidecar_template["Parameters"]["AttachSeccompFilter"]["Default"] == "false"
    text = sidecar_template["Parameters"]["AttachSeccompFilter"]["Description"]
    assert "die with the sidecar" in text and "no_new_privs" in text


@pytest.fixture
def sidecar_template() -> dict[str, Any]:
    return cfn.load(cfn.SIDECAR)


def test_the_entrypoint_installs_the_launcher(tmp_path: Path) -> None:
    source = tmp_path / "launcher"
    (source / "bin").mkdir(parents=True)
    (source / "lib" / "python3.11").mkdir(parents=True)
    runner = source / "bin" / "containerscan-run"
    runner.write_text("#!/bin/sh\n")
    runner.chmod(0o755)
    (source / "lib" / "ld.so").write_bytes(b"\x7fELF")
    volume = tmp_path / "volume"
    volume.mkdir()
    result = subprocess.run(
        [str(ENTRYPOINT), "install-launcher", str(volume)],
        env={"PATH": os.environ["PATH"], "CONTAINERSCAN_LAUNCHER_DIR": str(source)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert f"installed in {volume}" in result.stdout
    assert os.access(volume / "bin" / "containerscan-run", os.X_OK)
    assert (volume / "lib" / "ld.so").read_bytes() == b"\x7fELF"
    assert (volume / "lib" / "python3.11").is_dir()


def test_the_entrypoint_refuses_an_image_without_the_launcher(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(ENTRYPOINT), "install-launcher", str(tmp_path)],
        env={"PATH": os.environ["PATH"], "CONTAINERSCAN_LAUNCHER_DIR": str(tmp_path / "none")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1 and "no launcher in" in result.stderr
