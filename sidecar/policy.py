"""TracingPolicy loading: YAML -> checked in phases -> merged -> frozen `Policy`.

The format is the seed document's (`apiVersion: security.qualys.com/v1`, `kind:
TracingPolicy`, `spec.fileIntegrityMonitoring`, ...), key for key; its JSON Schema is
`policies/tracing-policy.schema.json`. Checking runs in phases, as Cloud Custodian does:

1. YAML with a safe loader that rejects duplicate keys and remembers each node's line;
2. a structural pass in plain language (not a mapping, unknown key with a "did you mean");
3. the JSON Schema (types, enums, ranges);
4. semantic checks: syscall names exist on x86_64 or aarch64, CIDRs and ports parse, regular
   expressions and globs compile, paths are absolute, package managers are known.

Every problem names the file, the line and the fix; all problems of all files are reported at
once in one `PolicyError`. Several files merge into one `Policy` (the seed's "balanced" mode is
`fim-policy.yaml` + `software-detection-policy.yaml`): rule lists concatenate, sets unite,
`enabled` is true when any file enables a section, scalar settings of later files win.

Each `spec` section is a class in `sidecar.policy_sections` that owns its schema fragment,
its semantic checks and its merge; the model is `sidecar.policy_model`. This module reads
YAML, runs the phases and finds the policy (files, S3, the environment).
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from securityhub.errors import ConfigurationError, PolicyError

# Policy and Performance are read from here by bench/ and the reliability tests.
from sidecar.policy_model import Performance, Policy  # noqa: F401
from sidecar.policy_sections import (  # noqa: F401 - checks other modules use
    SECTIONS,
    build_schema,
    cidr_problem,
    known_syscalls,
    syscall_problem,
)

SPEC_SECTIONS = tuple(SECTIONS)

MODES = ("minimal", "balanced", "aggressive")
DEFAULT_MODE = "balanced"
# MONITORING_MODE -> bundled policy files, relative to the policies directory (seed README).
MODE_FILES: dict[str, tuple[str, ...]] = {
    "minimal": ("examples/minimal-policy.yaml",),
    "balanced": ("examples/fim-policy.yaml", "examples/software-detection-policy.yaml"),
    "aggressive": ("tracing-policy-schema.yaml",),
}
POLICY_SUFFIXES = (".yaml", ".yml")
SCHEMA_FILE = "tracing-policy.schema.json"
_POLICIES_DIR_ENV = "CONTAINERSCAN_POLICY_DIR"
_LEARNING_WINDOW_ENV = "CONTAINERSCAN_LEARNING_WINDOW"
_LEARNING_EVENTS_ENV = "CONTAINERSCAN_LEARNING_EVENTS"
_DOCUMENT_ENV = "TRACING_POLICY_DOCUMENT"


# --------------------------------------------------------------------------- YAML, marks


@dataclass(frozen=True)
class Document:
    """One parsed YAML document and the line of every node in it."""

    source: str
    data: Any
    lines: Mapping[tuple[str | int, ...], int]
    start_line: int = 1
    # YAML-level problems (duplicate keys), reported with the structural ones
    problems: tuple[tuple[str, str], ...] = ()

    def line(self, path: Sequence[str | int]) -> int:
        """The line of the deepest node of `path` that exists."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.start_line


def _yaml_documents(text: str, source: str) -> list[Document]:
    """Parse with the safe loader; duplicate keys are errors, every node keeps its line."""
    import yaml

    docs: list[Document] = []
    loader: yaml.SafeLoader | None = None
    try:
        # The reader checks every character up front: a control character raises here.
        loader = yaml.SafeLoader(text)
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[tuple[str | int, ...], int] = {}
            problems: list[tuple[str, str]] = []
            _walk(node, (), lines, source, problems)
            data = loader.construct_document(node)
            docs.append(Document(source, data, lines, node.start_mark.line + 1, tuple(problems)))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise PolicyError(
            f"{source}: not valid YAML",
            [(f"{source}:{line}", f"{exc.problem or exc}; fix the YAML syntax there")],
            "check the indentation and quoting near that line",
        ) from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML", [(source, str(exc))]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return docs


def _walk(
    node: Any,
    path: tuple[str | int, ...],
    lines: dict[tuple[str | int, ...], int],
    source: str,
    problems: list[tuple[str, str]],
    *,
    visited: set[int] | None = None,
) -> None:
    import yaml

    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.CollectionNode):
        # The composer resolves an alias (*name) to the anchored node itself, so a list or
        # map met twice is an alias. Expanding them is exponential (a "billion laughs"
        # document of a few hundred bytes exhausts memory) and a self-reference never ends:
        # policies are refused with them, before anything is expanded.
        visited = set() if visited is None else visited
        if id(node) in visited:
            raise PolicyError(
                f"{source}: YAML aliases of lists or maps are not supported",
                [(f"{source}:{node.start_mark.line + 1}: {_dotted(path)}",
                  "an alias (*name) repeats an anchored list or map; write the values out")],
                "remove the anchors (&name) and aliases (*name) from the policy",
            )  # fmt: skip
        visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    (
                        f"{source}:{line}: {_dotted((*path, key))}",
                        f"duplicate key {key!r} (first defined on line {seen[key]}); "
                        "merge the two entries into one",
                    )
                )
                continue
            seen[key] = line
            _walk(value_node, (*path, key), lines, source, problems, visited=visited)
            lines[(*path, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, source, problems, visited=visited)


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


# ------------------------------------------------------------------------------ the schema


def policies_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The bundled `policies/` directory (CONTAINERSCAN_POLICY_DIR overrides it).

    Read when called, never at import. The images copy `policies/` to a fixed place and set
    the variable; a source checkout finds it beside the packages.
    """
    env = os.environ if environ is None else environ
    if env.get(_POLICIES_DIR_ENV):
        return Path(env[_POLICIES_DIR_ENV])
    beside = Path(__file__).resolve().parent.parent / "policies"
    if beside.is_dir():
        return beside
    # A wheel install puts them under <prefix>/share (setup.cfg data_files).
    return Path(sys.prefix) / "share" / "containerscan" / "policies"


@cache
def schema() -> dict[str, Any]:
    """The TracingPolicy JSON Schema, assembled from the sections (`build_schema`); the
    same document is published as `policies/tracing-policy.schema.json`."""
    return build_schema()


def _resolve(node: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved: Mapping[str, Any] = schema()["$defs"][ref.rsplit("/", 1)[1]]
        return resolved
    return node


def _structural(doc: Document) -> list[tuple[str, str]]:
    """Plain-language problems: wrong shapes and unknown keys, with a "did you mean"."""
    problems: list[tuple[str, str]] = []

    def where(path: tuple[str | int, ...]) -> str:
        return f"{doc.source}:{doc.line(path)}: {_dotted(path)}"

    def visit(value: Any, node: Mapping[str, Any], path: tuple[str | int, ...]) -> None:
        node = _resolve(node)
        if node.get("type") == "object":
            if not isinstance(value, dict):
                problems.append(
                    (
                        where(path),
                        f"expected a mapping of keys, found {_kind(value)}; "
                        "write `key: value` lines indented below it",
                    )
                )
                return
            known = node.get("properties", {})
            for key, item in value.items():
                if key in known:
                    visit(item, known[key], (*path, key))
                elif node.get("additionalProperties") is False:
                    guess = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
                    hint = (
                        f"did you mean {guess[0]!r}?"
                        if guess
                        else (f"valid keys here: {', '.join(known)}")
                    )
                    problems.append((where((*path, key)), f"unknown key {key!r}; {hint}"))
        elif node.get("type") == "array":
            if not isinstance(value, list):
                problems.append(
                    (
                        where(path),
                        f"expected a list, found {_kind(value)}; "
                        "write `[a, b]` or one `- item` per line",
                    )
                )
                return
            items = node.get("items")
            if isinstance(items, dict):
                for index, item in enumerate(value):
                    visit(item, items, (*path, index))

    if not isinstance(doc.data, dict):
        return [
            (
                f"{doc.source}:{doc.start_line}",
                "a TracingPolicy must be a YAML mapping "
                "starting with `apiVersion:`, `kind: TracingPolicy`, `metadata:` and `spec:`",
            )
        ]
    visit(doc.data, schema(), ())
    return problems


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "true/false"}.get(
        type(value), type(value).__name__
    )


def _schema_problems(doc: Document) -> list[tuple[str, str]]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    problems = []
    for error in sorted(validator.iter_errors(doc.data), key=lambda e: list(e.absolute_path)):
        if error.validator == "additionalProperties":
            continue  # reported by the structural pass, with a "did you mean"
        path = tuple(error.absolute_path)
        problems.append((f"{doc.source}:{doc.line(path)}: {_dotted(path)}", _schema_message(error)))
    return problems


def _schema_message(error: Any) -> str:
    validator, expected = error.validator, error.validator_value
    if validator == "enum":
        return f"{error.instance!r} is not allowed; use one of: {', '.join(map(str, expected))}"
    if validator == "type":
        return f"expected {expected}, found {_kind(error.instance)} {error.instance!r}"
    if validator == "required":
        return f"{error.message}; add it"
    if validator == "oneOf":
        return f"{error.instance!r} is not valid here; write one value or a list of values"
    if validator == "pattern" and isinstance(error.instance, str):
        return f"{error.instance!r} does not have the expected form (regex {expected})"
    return f"{error.message}; fix the value"


# --------------------------------------------------------------------------- semantic checks


def _semantic(doc: Document) -> list[tuple[str, str]]:
    """Each section's own checks (sidecar.policy_sections), located in the document."""
    problems: list[tuple[str, str]] = []
    spec = doc.data.get("spec") or {}

    def add(path: tuple[str | int, ...], message: str) -> None:
        problems.append((f"{doc.source}:{doc.line(path)}: {_dotted(path)}", message))

    for key, cls in SECTIONS.items():
        data = spec.get(key)
        if isinstance(data, dict):
            cls.check(data, ("spec", key), add)
    return problems


# ------------------------------------------------------------------------------- loading


def validate_documents(docs: Sequence[Document]) -> None:
    """Run the structural, schema and semantic phases; raise one PolicyError for all."""
    problems: list[tuple[str, str]] = []
    for doc in docs:
        found = [*doc.problems, *_structural(doc)]
        if not found:
            found = _schema_problems(doc)
        if not found:
            found = _semantic(doc)
        problems.extend(sorted(found, key=_line_of))
    if problems:
        sources = sorted({d.source for d in docs})
        raise PolicyError(
            f"invalid TracingPolicy in {', '.join(sources)}",
            problems,
            "fix each line above; `containerscan policy schema` prints every allowed key",
        )


def _line_of(problem: tuple[str, str]) -> int:
    """The line in a "file:line: path" location (0 when there is none)."""
    parts = problem[0].split(":")
    return next((int(p) for p in parts[1:] if p.strip().isdigit()), 0)


def parse_policy_text(text: str, source: str = "<string>") -> list[Document]:
    """Parse and validate the TracingPolicies of one YAML text (one or more documents)."""
    docs = [d for d in _yaml_documents(text, source) if d.data is not None]
    if not docs:
        raise PolicyError(
            f"{source}: no TracingPolicy found",
            [(f"{source}:1", "the file is empty; write a TracingPolicy (see the examples)")],
        )
    validate_documents(docs)
    return docs


def _policy_files(paths: Sequence[str | Path]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in POLICY_SUFFIXES)
            if not found:
                raise PolicyError(
                    f"{path}: no policy files",
                    [(str(path), "the directory holds no *.yaml or *.yml file")],
                )
            yield from found
        elif path.is_file():
            yield path
        else:
            raise PolicyError(
                f"{path}: no such policy file",
                [(str(path), "the path does not exist; check TRACING_POLICY_PATH or --policy")],
            )


def load_documents(paths: Sequence[str | Path]) -> list[Document]:
    """Every TracingPolicy document of the files (directories: their *.yaml files)."""
    docs: list[Document] = []
    problems: list[tuple[str, str]] = []
    for path in _policy_files(paths):
        try:
            docs.extend(parse_policy_text(path.read_text(encoding="utf-8"), str(path)))
        except PolicyError as exc:
            problems.extend(exc.problems)
        except (OSError, UnicodeDecodeError) as exc:
            problems.append((str(path), f"cannot read the file ({exc})"))
    if problems:
        raise PolicyError(
            "invalid TracingPolicy",
            problems,
            "fix each line above; `containerscan policy schema` prints every allowed key",
        )
    return docs


def load_policies(paths: Sequence[str | Path]) -> Policy:
    """Load, validate and merge policy files or directories; raises PolicyError."""
    if not paths:
        raise PolicyError("no TracingPolicy given", [("--policy", "name at least one file")])
    return merge(load_documents(paths))


# -------------------------------------------------------------------------------- merging


def merge(docs: Sequence[Document]) -> Policy:
    """Build one Policy from validated documents: each section merges its own data from
    every document, in order (see sidecar.policy_sections)."""
    specs = [doc.data.get("spec") or {} for doc in docs]
    built = {cls.attr: cls.merge([spec.get(key) or {} for spec in specs])
             for key, cls in SECTIONS.items()}  # fmt: skip
    return Policy(
        names=tuple(doc.data["metadata"]["name"] for doc in docs),
        sources=tuple(dict.fromkeys(d.source for d in docs)),
        **built,
    )


# ------------------------------------------------------------------ environment, S3, CLI


def resolve_policy(
    environ: Mapping[str, str],
    cli_paths: Sequence[str] = (),
    sessions: Any = None,
) -> Policy:
    """The policy the sidecar runs with.

    Precedence: `--policy` paths, then TRACING_POLICY_PATH (a file, a directory, or an
    `s3://bucket/key` object, or an `s3://bucket/prefix/` of *.yaml objects, fetched now with
    `sessions`), then TRACING_POLICY_DOCUMENT (the policy's YAML itself, as ECS injects an
    SSM parameter), then MONITORING_MODE's bundled files (default: balanced). Then the
    overrides: ALERT_THRESHOLD (anomaly score, > 0; it turns anomaly detection on),
    SYSCALL_WHITELIST (comma-separated names), NETWORK_POLICY (comma-separated CIDRs
    replacing the allowlist; it turns network monitoring on), and the anomaly learning
    window: CONTAINERSCAN_LEARNING_WINDOW (seconds), CONTAINERSCAN_LEARNING_EVENTS.
    """
    if cli_paths:
        policy = load_policies(cli_paths)
    elif environ.get("TRACING_POLICY_PATH"):
        location = environ["TRACING_POLICY_PATH"].strip()
        if location.startswith("s3://"):
            policy = merge(fetch_s3_policies(location, sessions))
        else:
            policy = load_policies([location])
    elif environ.get(_DOCUMENT_ENV, "").strip():
        # ECS injects an SSM parameter's value as an environment variable
        policy = merge(parse_policy_text(environ[_DOCUMENT_ENV], _DOCUMENT_ENV))
    else:
        mode = (environ.get("MONITORING_MODE") or DEFAULT_MODE).strip().lower()
        if mode not in MODE_FILES:
            guess = difflib.get_close_matches(mode, MODES, n=1)
            raise ConfigurationError(
                f"MONITORING_MODE={mode!r} is not a monitoring mode",
                f"use one of: {', '.join(MODES)}"
                + (f" (did you mean {guess[0]!r}?)" if guess else ""),
            )
        root = policies_dir(environ)
        policy = load_policies([root / name for name in MODE_FILES[mode]])
    return apply_overrides(policy, environ)


def apply_overrides(policy: Policy, environ: Mapping[str, str]) -> Policy:
    problems: list[tuple[str, str]] = []
    anomaly = policy.anomaly
    raw = environ.get("ALERT_THRESHOLD", "").strip()
    if raw:
        value = _positive_float(raw)
        if value is None:
            problems.append(("ALERT_THRESHOLD", f"{raw!r} is not a positive number; e.g. 0.7"))
        else:
            # a threshold says the operator wants anomaly alerts: it turns detection on
            anomaly = replace(anomaly, enabled=True, alert_threshold=value)
    raw = environ.get(_LEARNING_EVENTS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            problems.append((_LEARNING_EVENTS_ENV, f"{raw!r} is not a number of events >= 1"))
        else:
            anomaly = replace(anomaly, learning_events=int(raw))
    raw = environ.get(_LEARNING_WINDOW_ENV, "").strip()
    if raw:
        value = _positive_float(raw)
        if value is None:
            problems.append((_LEARNING_WINDOW_ENV, f"{raw!r} is not a number of seconds > 0"))
        else:
            anomaly = replace(anomaly, learning_window=value)
    syscalls = policy.syscalls
    raw = environ.get("SYSCALL_WHITELIST", "").strip()
    if raw:
        names = [n.strip() for n in raw.split(",") if n.strip()]
        for name in names:
            message = syscall_problem(name)
            if message:
                problems.append(("SYSCALL_WHITELIST", message))
        syscalls = replace(syscalls, whitelist=frozenset(names))
    network = policy.network
    raw = environ.get("NETWORK_POLICY", "").strip()
    if raw:
        cidrs = [c.strip() for c in raw.split(",") if c.strip()]
        for cidr in cidrs:
            message = cidr_problem(cidr)
            if message:
                problems.append(("NETWORK_POLICY", message))
        network = replace(network, enabled=True, allowlist=tuple(cidrs))
    if problems:
        raise PolicyError(
            "invalid policy override in the environment",
            problems,
            "fix or unset the variables above",
        )
    return replace(policy, anomaly=anomaly, syscalls=syscalls, network=network)


def _positive_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 else None


def fetch_s3_policies(location: str, sessions: Any) -> list[Document]:
    """Fetch `s3://bucket/key` (or every *.yaml under `s3://bucket/prefix/`) and validate."""
    from botocore.exceptions import BotoCoreError, ClientError

    if sessions is None:
        raise ConfigurationError(
            f"TRACING_POLICY_PATH={location} needs AWS access", "pass a SessionFactory"
        )
    bucket, _, key = location[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ConfigurationError(
            f"TRACING_POLICY_PATH={location!r} is not an S3 object",
            "write s3://bucket/path/policy.yaml or s3://bucket/prefix/",
        )
    s3 = sessions.client("s3")
    docs: list[Document] = []
    problems: list[tuple[str, str]] = []
    try:
        if key.endswith("/"):
            keys: list[str] = []
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                keys += [
                    o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(POLICY_SUFFIXES)
                ]
            if not keys:
                raise PolicyError(
                    f"{location}: no policy objects",
                    [(location, "no *.yaml object under this prefix")],
                )
        else:
            keys = [key]
        for name in sorted(keys):
            body = s3.get_object(Bucket=bucket, Key=name)["Body"].read().decode("utf-8")
            try:
                docs += parse_policy_text(body, f"s3://{bucket}/{name}")
            except PolicyError as exc:
                problems += exc.problems
    except (ClientError, BotoCoreError) as exc:
        from securityhub.errors import AwsError

        raise AwsError(
            f"cannot fetch the TracingPolicy {location}: {exc}",
            "check the bucket, the key and the task role's s3:GetObject permission",
        ) from exc
    if problems:
        raise PolicyError("invalid TracingPolicy", problems)
    return docs
