"""Which AWS API actions the code calls, found statically, mapped to IAM actions.

The walk starts at a role's entry modules (what actually runs under that role: the check's
commands for the hub task role, the launcher for the Lambda role, the sidecar's commands
for the sidecar task role) and follows every import, including the lazy ones inside
functions. In that set of modules:

- the services are the string literals given as first argument to a `.client(...)` call
  (`sessions.client("ecr", region, target)`, `boto3.client("s3")`);
- an operation is any `<expr>.<name>(...)` call whose name is the snake_case name of an
  operation of one of those services in botocore's service model, and any
  `get_paginator("<name>")`;
- s3transfer's managed transfers (`upload_file`, `download_fileobj`, ...) are mapped to the
  object actions they perform.

The IAM action is `<signing name>:<OperationName>`, except where IAM names the permission
differently (IAM_NAMES). This over-approximates on purpose (a method called `publish` on
any object counts as sns:Publish when the code uses SNS); the test's allow-lists say why
each extra action is there.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("check", "securityhub", "sidecar")

# IAM permission names that differ from the API operation's name (IAM service authorization
# reference, "Actions defined by Amazon S3" / "AWS STS").
IAM_NAMES = {
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject",
    "s3:CompleteMultipartUpload": "s3:PutObject",
    "s3:AbortMultipartUpload": "s3:AbortMultipartUpload",
    # A transaction is authorized by its actions' own permissions (DynamoDB developer guide,
    # "Using IAM with DynamoDB transactions"); the ledger's transactions hold only Puts.
    "dynamodb:TransactWriteItems": "dynamodb:PutItem",
}
# s3transfer's managed transfers (boto3.s3.inject) and the object action each needs.
S3_TRANSFERS = {
    "upload_file": "s3:PutObject",
    "upload_fileobj": "s3:PutObject",
    "download_file": "s3:GetObject",
    "download_fileobj": "s3:GetObject",
}


@dataclass(frozen=True)
class Call:
    action: str  # IAM action
    module: str
    line: int
    source: str  # the method name or paginator op as written
    function: str | None = None  # the enclosing top-level function or method


def module_path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


@functools.cache
def _tree(module: str) -> ast.Module | None:
    path = module_path(module)
    return ast.parse(path.read_text(encoding="utf-8"), str(path)) if path else None


def _imports(module: str, tree: ast.Module) -> set[str]:
    found: set[str] = set()
    package = module if module_path(module) and module_path(module).name == "__init__.py" else module.rpartition(".")[0]  # type: ignore[union-attr]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES and module_path(name)}


def closure(entries: Iterable[str]) -> set[str]:
    """Every project module reachable from `entries` by imports (lazy ones included)."""
    seen: set[str] = set()
    todo = [e for e in entries if module_path(e)]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        tree = _tree(module)
        if tree is None:
            continue
        parents = module.split(".")
        for i in range(1, len(parents)):
            parent = ".".join(parents[:i])
            if module_path(parent):
                todo.append(parent)
        todo.extend(_imports(module, tree) - seen)
    return seen


def services(modules: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for module in modules:
        tree = _tree(module)
        for node in ast.walk(tree) if tree else ():
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "client"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value)
    return found


@functools.cache
def _operations(service: str) -> tuple[str, dict[str, str]]:
    """(IAM prefix, snake_case name -> OperationName) from botocore's service model."""
    import botocore.session
    from botocore import xform_name

    model = botocore.session.get_session().get_service_model(service)
    prefix = model.metadata.get("signingName") or model.endpoint_prefix
    return prefix, {xform_name(op): op for op in model.operation_names}


def _iam(prefix: str, operation: str) -> str:
    action = f"{prefix}:{operation}"
    return IAM_NAMES.get(action, action)


def _walk_with_function(tree: ast.Module) -> list[tuple[ast.AST, str | None]]:
    """Every node with the name of its outermost enclosing function or method."""
    found: list[tuple[ast.AST, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, function or child.name)
            else:
                found.append((child, function))
                visit(child, function)

    visit(tree, None)
    return found


def references(modules: Iterable[str]) -> dict[str, set[tuple[str, str | None]]]:
    """Name -> where it is used (module, enclosing function): variables, attributes, strings."""
    names: dict[str, set[tuple[str, str | None]]] = {}
    for module in modules:
        tree = _tree(module)
        for node, function in _walk_with_function(tree) if tree else ():
            if isinstance(node, ast.Name):
                name = node.id
            elif isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value
            else:
                continue
            names.setdefault(name, set()).add((module, function))
    return names


def calls(modules: Iterable[str]) -> list[Call]:
    """Every AWS API call in `modules` (for the services those modules create clients for)."""
    modules = sorted(set(modules))
    used = services(modules)
    ops = {svc: _operations(svc) for svc in used}
    found: list[Call] = []
    for module in modules:
        tree = _tree(module)
        for node, function in _walk_with_function(tree) if tree else ():
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr
            if name == "get_paginator" and node.args and isinstance(node.args[0], ast.Constant):
                name = str(node.args[0].value)
            elif name in S3_TRANSFERS and "s3" in used:
                found.append(Call(S3_TRANSFERS[name], module, node.lineno, name, function))
                continue
            for prefix, names in ops.values():
                if name in names:
                    action = _iam(prefix, names[name])
                    found.append(Call(action, module, node.lineno, name, function))
    return found


def actions(entries: Iterable[str], exclude: Iterable[str] = ()) -> dict[str, list[Call]]:
    """IAM action -> the calls that need it, for the code reachable from `entries`.

    A call inside a function that nothing else in the reachable code refers to (by name, by
    attribute or in a string, as command registries do) is left out: that is how code
    used only by other entry points (the local `init` command's create_table, say) stays
    out of a role that never runs it. Functions of the entry modules themselves count as
    reachable.
    """
    modules = closure(entries) - set(exclude)
    used = references(modules)
    entry_set = set(entries)
    result: dict[str, list[Call]] = {}
    for call in calls(modules):
        elsewhere = used.get(call.function or "", set()) - {(call.module, call.function)}
        reachable = (
            call.function is None
            or call.module in entry_set
            or call.function.startswith("__")
            or bool(elsewhere)
        )
        if reachable:
            result.setdefault(call.action, []).append(call)
    return result
