"""Reading the CloudFormation templates the way CloudFormation does (short-form intrinsics).

cfn-lint's decoder turns `!Ref X` into `{"Ref": "X"}` and keeps line numbers; the tests walk
the plain dicts and lists it returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "cloudformation"
HUB = TEMPLATES / "containerscan.yaml"
SPOKE = TEMPLATES / "spoke-role.yaml"
SIDECAR = TEMPLATES / "sidecar-example.yaml"


def load(path: Path) -> dict[str, Any]:
    from cfnlint.decode import cfn_yaml

    return cfn_yaml.load(str(path))


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: res for name, res in template["Resources"].items() if res["Type"] == kind
    }


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def unwrap_if(value: Any) -> Iterator[Any]:
    """The branches of `Fn::If` (both), skipping AWS::NoValue; anything else as is."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        for branch in value["Fn::If"][1:]:
            yield from unwrap_if(branch)
    elif isinstance(value, dict) and value == {"Ref": "AWS::NoValue"}:
        return
    else:
        yield value


def statements(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for raw in as_list(document.get("Statement", [])):
        yield from unwrap_if(raw)


def role_statements(role: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every statement of a role's inline policies (both branches of conditional ones)."""
    for policy in role["Properties"].get("Policies", []):
        yield from statements(policy["PolicyDocument"])


def granted_actions(role: dict[str, Any]) -> set[str]:
    return {
        action
        for stmt in role_statements(role)
        if stmt.get("Effect") == "Allow"
        for action in as_list(stmt["Action"])
    }


def containers(task_definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["Name"]: c for c in task_definition["Properties"]["ContainerDefinitions"]}


def env_names(container: dict[str, Any]) -> set[str]:
    names = set()
    for entry in container.get("Environment", []):
        for item in unwrap_if(entry):
            names.add(item["Name"])
    return names


def secret_names(container: dict[str, Any]) -> set[str]:
    names = set()
    for entry in unwrap_if(container.get("Secrets", [])):
        for item in as_list(entry):
            for value in unwrap_if(item):
                names.add(value["Name"])
    return names


def resolve(value: Any, params: dict[str, str]) -> Any:
    """Evaluate Ref/Fn::Sub/Fn::Split/Fn::Select/Fn::Join against parameter values."""
    import re

    if isinstance(value, list):
        return [resolve(v, params) for v in value]
    if not isinstance(value, dict) or len(value) != 1:
        return value
    (name, arg), = value.items()
    if name == "Ref":
        return params[arg]
    if name == "Fn::Sub":
        return re.sub(r"\$\{([\w:]+)\}", lambda m: params[m.group(1)], arg)
    if name == "Fn::Split":
        return resolve(arg[1], params).split(arg[0])
    if name == "Fn::Select":
        return resolve(arg[1], params)[int(arg[0])]
    if name == "Fn::Join":
        return arg[0].join(resolve(arg[1], params))
    raise NotImplementedError(name)
