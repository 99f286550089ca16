"""Every environment variable the deployment sets is one the code reads.

A misspelt variable in a template (CONTAINERSCAN_SPOKE_ROLE_NAME for CONTAINERSCAN_ROLE_NAME)
deploys cleanly and silently does nothing; this test catches it. The names are collected
from the task definitions, the launcher's environment, the Dockerfiles' ENV and the
launcher's container overrides, and looked up among the string constants of the code.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from check import launcher
from tests.deploy import cfn
from tests.deploy.test_dockerfiles import DOCKERFILES, parse

PACKAGES = ("check", "securityhub", "sidecar")
# Read by the system or by tools, not by containerscan's Python code.
SYSTEM = {"PATH", "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
# Set for the check by the launcher, not read by the check yet: name -> what is missing.
# The test fails when the check starts reading one, so the entry is removed then.
PENDING: dict[str, str] = {}


def _code_strings() -> set[str]:
    found: set[str] = set()
    for package in PACKAGES:
        for path in (cfn.ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.add(node.value)
                    found.update(re.findall(r"\b[A-Z][A-Z0-9_]{3,}\b", node.value))
    script = (cfn.ROOT / "docker" / "sidecar-entrypoint.sh").read_text()
    found.update(re.findall(r"\b[A-Z][A-Z0-9_]{3,}\b", script))
    return found


def _template_names() -> dict[str, str]:
    """Variable name -> where the deployment sets it."""
    names: dict[str, str] = {}
    for path in (cfn.HUB, cfn.SIDECAR):
        template = cfn.load(path)
        for tname, task in cfn.resources(template, "AWS::ECS::TaskDefinition").items():
            for cname, container in cfn.containers(task).items():
                for name in cfn.env_names(container) | cfn.secret_names(container):
                    names[name] = f"{path.name} {tname}/{cname}"
        for fname, fn in cfn.resources(template, "AWS::Lambda::Function").items():
            for name in fn["Properties"]["Environment"]["Variables"]:
                names[name] = f"{path.name} {fname}"
    for image, dockerfile in DOCKERFILES.items():
        for ins in parse(dockerfile):
            if ins.keyword == "ENV":
                for name in re.findall(r"(\w+)=", ins.args):
                    names[name] = f"Dockerfile.{image}"
    for name in (launcher.REQUEST_ENV, launcher.REQUEST_URI_ENV, launcher.RUN_ID_ENV):
        names[name] = "launcher overrides"
    return names


def test_every_variable_set_is_read() -> None:
    strings = _code_strings()
    unread = {
        name: where for name, where in _template_names().items()
        if name not in strings and name not in SYSTEM and name not in PENDING
    }
    assert unread == {}


def test_pending_variables_are_still_pending() -> None:
    strings = _code_strings() - {launcher.RUN_ID_ENV, launcher.REQUEST_URI_ENV}
    # The launcher itself names them; only another module reading them counts.
    readers = {
        name for name in PENDING
        for path in (cfn.ROOT / "check").rglob("*.py")
        if path.name != "launcher.py" and name in path.read_text(encoding="utf-8")
    }
    assert readers == set(), "the check reads these now: remove them from PENDING"
    assert set(PENDING) <= set(_template_names())
    assert strings  # the scan found the code's strings at all


def test_the_scan_finds_what_the_code_reads() -> None:
    strings = _code_strings()
    assert {"CONTAINERSCAN_TABLE", "QUALYS_POD", "TRACING_POLICY_PATH", "SCAN_TYPES"} <= strings


def test_hub_sets_no_variable_twice() -> None:
    for path in (cfn.HUB, cfn.SIDECAR):
        for task in cfn.resources(cfn.load(path), "AWS::ECS::TaskDefinition").values():
            for container in cfn.containers(task).values():
                env = list(cfn.env_names(container))
                secrets = cfn.secret_names(container)
                assert not set(env) & secrets, Path(path).name
