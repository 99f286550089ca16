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
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from securityhub.errors import ConfigurationError, PolicyError
from sidecar.patterns import glob_regex

API_VERSION = "security.qualys.com/v1"
KIND = "TracingPolicy"
SEVERITIES = ("low", "medium", "high", "critical")
ACTIONS = ("log", "alert", "block")
FIM_EVENTS = ("open", "write", "unlink", "chmod", "chown", "link")
OPEN_FLAGS = ("truncate", "append", "create", "exclusive")
CHMOD_BITS = ("setuid", "setgid", "sticky", "executable", "world-writable")
DEFAULT_SEVERITY = "medium"
DEFAULT_ACTION = "alert"
SPEC_SECTIONS = (
    "fileIntegrityMonitoring",
    "processExecution",
    "networkMonitoring",
    "softwareInstallation",
    "syscallFiltering",
    "anomalyDetection",
    "driftDetection",
    "actions",
    "performance",
)
# Defaults of the seed's `performance` block: every event, batches of 10, 5 seconds.
DEFAULT_SAMPLING_RATE = 1.0
DEFAULT_BATCH_SIZE = 10
DEFAULT_BATCH_TIMEOUT = 5.0
# Anomaly detection: learn for 5 minutes or 10,000 events, whichever ends first.
DEFAULT_LEARNING_WINDOW = 300.0
DEFAULT_LEARNING_EVENTS = 10_000
DEFAULT_ALERT_THRESHOLD = 0.7
MAX_PORT = 65535

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

# Install subcommands per package manager (the seed's list, plus curl/wget downloads, whose
# "command" is any URL argument). Option-style commands (rpm -i, dpkg -i) start with "-".
PACKAGE_MANAGERS: dict[str, tuple[str, ...]] = {
    "apt": ("install", "upgrade", "dist-upgrade", "full-upgrade", "reinstall"),
    "apt-get": ("install", "upgrade", "dist-upgrade", "reinstall"),
    "aptitude": ("install", "upgrade", "safe-upgrade", "full-upgrade", "reinstall"),
    "dpkg": ("-i", "--install", "--unpack"),
    "yum": ("install", "update", "upgrade", "reinstall", "localinstall", "groupinstall"),
    "dnf": ("install", "update", "upgrade", "reinstall", "localinstall", "groupinstall"),
    "microdnf": ("install", "update", "upgrade", "reinstall"),
    "rpm": ("-i", "-U", "-F", "--install", "--upgrade", "--freshen"),
    "apk": ("add", "upgrade"),
    "pip": ("install", "download"),
    "pip3": ("install", "download"),
    "npm": ("install", "i", "add", "ci", "update"),
    "yarn": ("add", "install"),
    "pnpm": ("add", "install", "i"),
    "gem": ("install", "update"),
    "go": ("install", "get"),
    "cargo": ("install",),
    "curl": (),
    "wget": (),
}
DOWNLOAD_TOOLS = frozenset({"curl", "wget"})

# Policy paths that read like globs are compiled as globs.
_GLOB_CHARS = re.compile(r"[*?\[]")
_POLICIES_DIR_ENV = "CONTAINERSCAN_POLICY_DIR"
_LEARNING_WINDOW_ENV = "CONTAINERSCAN_LEARNING_WINDOW"
_LEARNING_EVENTS_ENV = "CONTAINERSCAN_LEARNING_EVENTS"
_DOCUMENT_ENV = "TRACING_POLICY_DOCUMENT"


# ---------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class FimPath:
    path: str  # absolute, no trailing slash (except "/")
    recursive: bool = False
    events: frozenset[str] = frozenset({"write"})
    severity: str = DEFAULT_SEVERITY
    action: str = DEFAULT_ACTION
    open_flags: frozenset[str] = frozenset()  # OPEN_FLAGS words; empty: any open
    chmod_bits: frozenset[str] = frozenset()  # CHMOD_BITS words; empty: any chmod

    @property
    def is_glob(self) -> bool:
        return bool(_GLOB_CHARS.search(self.path))


@dataclass(frozen=True)
class FileIntegrityMonitoring:
    enabled: bool = False
    paths: tuple[FimPath, ...] = ()


@dataclass(frozen=True)
class TrackedExecutable:
    name: str  # a basename ("bash"), a path ("/bin/bash") or a glob of either
    args: tuple[str, ...] = ()  # any of these in argv[1:] matches; empty: any invocation
    args_pattern: str | None = None  # a regular expression searched in the command line
    severity: str = DEFAULT_SEVERITY
    action: str = DEFAULT_ACTION
    capture_args: bool = False
    parent: tuple[str, ...] = ()  # names or globs of the program that calls exec
    env: tuple[str, ...] = ()  # environment variables, any of which set matches


@dataclass(frozen=True)
class ProcessExecution:
    enabled: bool = False
    tracked: tuple[TrackedExecutable, ...] = ()


@dataclass(frozen=True)
class NetworkMonitoring:
    enabled: bool = False
    allowlist: tuple[str, ...] = ()  # CIDRs; connections elsewhere are events
    blocked_ports: frozenset[int] = frozenset()
    allowed_ports: frozenset[int] = frozenset()  # when set, any other port is an event
    severity: str = DEFAULT_SEVERITY
    action: str = DEFAULT_ACTION
    blocked_ports_severity: str = "high"
    blocked_ports_action: str = DEFAULT_ACTION
    udp: bool = False  # also watch UDP sendto/sendmsg destinations


@dataclass(frozen=True)
class PackageManagerRule:
    name: str
    commands: tuple[str, ...]
    severity: str = DEFAULT_SEVERITY
    action: str = DEFAULT_ACTION
    capture_args: bool = False  # the command line in events (masked), as trackedExecutables


@dataclass(frozen=True)
class SoftwareInstallation:
    enabled: bool = False
    package_managers: tuple[PackageManagerRule, ...] = ()


@dataclass(frozen=True)
class SyscallFiltering:
    enabled: bool = True
    traced: frozenset[str] = frozenset()
    whitelist: frozenset[str] = frozenset()
    severity: str = "low"
    action: str = "log"


@dataclass(frozen=True)
class AnomalyDetection:
    enabled: bool = False
    learning_window: float = DEFAULT_LEARNING_WINDOW  # seconds
    learning_events: int = DEFAULT_LEARNING_EVENTS
    alert_threshold: float = DEFAULT_ALERT_THRESHOLD
    severity: str = "high"
    action: str = DEFAULT_ACTION


@dataclass(frozen=True)
class DriftDetection:
    """Executions of files that were not in the image: written, created, linked, renamed
    into place or made executable after the sidecar started, and memfds."""

    enabled: bool = False
    severity: str = "high"
    action: str = DEFAULT_ACTION


@dataclass(frozen=True)
class AlertDestination:
    type: str  # qualys-crs, sns, security-hub, stdout, file
    enabled: bool = True
    event_types: frozenset[str] = frozenset()  # empty: every event type
    topic_arn: str | None = None


@dataclass(frozen=True)
class QualysIntegration:
    enabled: bool = False
    endpoint: str | None = None
    send_events: bool = True


@dataclass(frozen=True)
class Actions:
    alert_enabled: bool = True
    destinations: tuple[AlertDestination, ...] = ()
    qualys: QualysIntegration = field(default_factory=QualysIntegration)

    def destination(self, kind: str) -> AlertDestination | None:
        """The first enabled destination of that type, if alerts are on."""
        if not self.alert_enabled:
            return None
        return next((d for d in self.destinations if d.type == kind and d.enabled), None)


@dataclass(frozen=True)
class Performance:
    sampling_rate: float = DEFAULT_SAMPLING_RATE
    batch_size: int = DEFAULT_BATCH_SIZE
    batch_timeout: float = DEFAULT_BATCH_TIMEOUT


@dataclass(frozen=True)
class Policy:
    """One or more TracingPolicies, validated and merged."""

    names: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    fim: FileIntegrityMonitoring = field(default_factory=FileIntegrityMonitoring)
    process: ProcessExecution = field(default_factory=ProcessExecution)
    network: NetworkMonitoring = field(default_factory=NetworkMonitoring)
    software: SoftwareInstallation = field(default_factory=SoftwareInstallation)
    syscalls: SyscallFiltering = field(default_factory=SyscallFiltering)
    anomaly: AnomalyDetection = field(default_factory=AnomalyDetection)
    drift: DriftDetection = field(default_factory=DriftDetection)
    actions: Actions = field(default_factory=Actions)
    performance: Performance = field(default_factory=Performance)

    @property
    def name(self) -> str:
        return "+".join(self.names)


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
    """The TracingPolicy JSON Schema (`policies/tracing-policy.schema.json`)."""
    with (policies_dir() / SCHEMA_FILE).open(encoding="utf-8") as handle:
        loaded: dict[str, Any] = json.load(handle)
    return loaded


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


@cache
def known_syscalls() -> frozenset[str]:
    """Syscall names that exist on x86_64 or aarch64 (the architectures Fargate runs on).

    From the sidecar's own tables (`sidecar.syscalls`). A name that exists on one
    architecture only (`open` has no aarch64 number) is accepted: the tracer watches it
    where it exists.
    """
    from sidecar.syscalls import ARCHES

    return frozenset(name for arch in ARCHES.values() for name in arch.numbers)


def _semantic(doc: Document) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    spec = doc.data.get("spec") or {}

    def add(path: tuple[str | int, ...], message: str) -> None:
        problems.append((f"{doc.source}:{doc.line(path)}: {_dotted(path)}", message))

    fim = spec.get("fileIntegrityMonitoring") or {}
    for i, entry in enumerate(fim.get("paths") or []):
        path = entry.get("path")
        if isinstance(path, str):
            where: tuple[str | int, ...] = ("spec", "fileIntegrityMonitoring", "paths", i, "path")
            if not path.startswith("/"):
                add(where, f"path {path!r} is relative; write an absolute path such as /{path}")
            elif _GLOB_CHARS.search(path):
                _check_regex(glob_regex(path), where, add, what="glob")

    proc = spec.get("processExecution") or {}
    for i, entry in enumerate(proc.get("trackedExecutables") or []):
        where = ("spec", "processExecution", "trackedExecutables", i)
        pattern = entry.get("argsPattern")
        if isinstance(pattern, str):
            _check_regex(pattern, (*where, "argsPattern"), add, what="regular expression")
        name = entry.get("name")
        if isinstance(name, str) and _GLOB_CHARS.search(name):
            _check_regex(glob_regex(name), (*where, "name"), add, what="glob")
        for j, parent in enumerate(entry.get("parent") or []):
            if isinstance(parent, str) and _GLOB_CHARS.search(parent):
                _check_regex(glob_regex(parent), (*where, "parent", j), add, what="glob")

    out = (spec.get("networkMonitoring") or {}).get("outboundConnections") or {}
    base = ("spec", "networkMonitoring", "outboundConnections")
    for i, cidr in enumerate(out.get("allowlist") or []):
        if isinstance(cidr, str):
            message = cidr_problem(cidr)
            if message:
                add((*base, "allowlist", i), message)
    for key in ("blockedPorts", "allowedPorts"):
        for i, port in enumerate(out.get(key) or []):
            if isinstance(port, int) and not isinstance(port, bool) and not 1 <= port <= MAX_PORT:
                add(
                    (*base, key, i),
                    f"port {port} is out of range; use a TCP/UDP port between 1 and {MAX_PORT}",
                )

    soft = spec.get("softwareInstallation") or {}
    for i, entry in enumerate(soft.get("packageManagers") or []):
        name = entry.get("name")
        if isinstance(name, str) and name not in PACKAGE_MANAGERS:
            guess = difflib.get_close_matches(name, list(PACKAGE_MANAGERS), n=1)
            hint = (
                f"did you mean {guess[0]!r}?"
                if guess
                else (f"use one of: {', '.join(PACKAGE_MANAGERS)}")
            )
            add(
                ("spec", "softwareInstallation", "packageManagers", i, "name"),
                f"unknown package manager {name!r}; {hint}",
            )

    filtering = spec.get("syscallFiltering") or {}
    for key in ("tracedSyscalls", "whitelist"):
        for i, name in enumerate(filtering.get(key) or []):
            if isinstance(name, str):
                message = syscall_problem(name)
                if message:
                    add(("spec", "syscallFiltering", key, i), message)
    return problems


def _check_regex(
    pattern: str,
    where: tuple[str | int, ...],
    add: Callable[[tuple[str | int, ...], str], None],
    what: str,
) -> None:
    """Patterns are compiled with RE2 (sidecar.patterns): linear time, checked here."""
    from sidecar.patterns import pattern_problem

    message = pattern_problem(pattern, what)
    if message:
        add(where, message)


def cidr_problem(cidr: str) -> str | None:
    """Why `cidr` is not a usable network, with the fix; None when it is fine."""
    try:
        ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        try:
            fixed = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return (
                f"{cidr!r} is not a CIDR ({exc}); write an address or a network "
                "such as 10.0.0.0/8 or 2001:db8::/32"
            )
        return f"{cidr!r} has host bits set; did you mean {fixed}?"
    return None


def syscall_problem(name: str) -> str | None:
    known = known_syscalls()
    if name in known:
        return None
    guess = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    hint = f"did you mean {guess[0]!r}?" if guess else "check the name in syscalls(2)"
    return f"unknown syscall {name!r} on x86_64 and aarch64; {hint}"


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
    """Build one Policy from validated documents (later files win on scalar settings)."""
    fim_enabled = proc_enabled = net_enabled = soft_enabled = anomaly_enabled = False
    fim_paths: list[FimPath] = []
    tracked: list[TrackedExecutable] = []
    managers: list[PackageManagerRule] = []
    allowlist: list[str] = []
    ports: set[int] = set()
    allowed_ports: set[int] = set()
    drift: dict[str, Any] = {}
    drift_enabled = False
    net: dict[str, Any] = {}
    traced: set[str] = set()
    whitelist: set[str] = set()
    filtering: dict[str, Any] = {}
    anomaly: dict[str, Any] = {}
    alert_enabled = True
    destinations: list[AlertDestination] = []
    qualys = QualysIntegration()
    perf: dict[str, Any] = {}
    names: list[str] = []
    for doc in docs:
        names.append(doc.data["metadata"]["name"])
        spec = doc.data.get("spec") or {}
        section = spec.get("fileIntegrityMonitoring") or {}
        fim_enabled |= bool(section.get("enabled", bool(section)))
        for entry in section.get("paths") or []:
            fim_paths.append(
                FimPath(
                    path=_normpath(entry["path"]),
                    recursive=entry.get("recursive", False),
                    events=frozenset(entry.get("events", ["write"])),
                    severity=entry.get("severity", DEFAULT_SEVERITY),
                    action=entry.get("action", DEFAULT_ACTION),
                    open_flags=frozenset(entry.get("openFlags", ())),
                    chmod_bits=frozenset(entry.get("chmodBits", ())),
                )
            )
        section = spec.get("processExecution") or {}
        proc_enabled |= bool(section.get("enabled", bool(section)))
        for entry in section.get("trackedExecutables") or []:
            tracked.append(
                TrackedExecutable(
                    name=entry["name"],
                    args=tuple(entry.get("args", ())),
                    args_pattern=entry.get("argsPattern"),
                    severity=entry.get("severity", DEFAULT_SEVERITY),
                    action=entry.get("action", DEFAULT_ACTION),
                    capture_args=entry.get("captureArgs", False),
                    parent=tuple(entry.get("parent", ())),
                    env=tuple(entry.get("env", ())),
                )
            )
        section = spec.get("networkMonitoring") or {}
        net_enabled |= bool(section.get("enabled", bool(section)))
        out = dict(section.get("outboundConnections") or {})
        allowlist += [c for c in out.pop("allowlist", []) if c not in allowlist]
        ports.update(out.pop("blockedPorts", []))
        allowed_ports.update(out.pop("allowedPorts", []))
        net.update(out)
        section = spec.get("softwareInstallation") or {}
        soft_enabled |= bool(section.get("enabled", bool(section)))
        for entry in section.get("packageManagers") or []:
            managers.append(
                PackageManagerRule(
                    name=entry["name"],
                    commands=tuple(entry.get("commands", PACKAGE_MANAGERS[entry["name"]])),
                    severity=entry.get("severity", DEFAULT_SEVERITY),
                    action=entry.get("action", DEFAULT_ACTION),
                    capture_args=entry.get("captureArgs", False),
                )
            )
        section = dict(spec.get("syscallFiltering") or {})
        traced.update(section.pop("tracedSyscalls", []))
        whitelist.update(section.pop("whitelist", []))
        filtering.update(section)
        section = spec.get("anomalyDetection") or {}
        anomaly_enabled |= bool(section.get("enabled", bool(section)))
        anomaly.update({k: v for k, v in section.items() if k != "enabled"})
        section = spec.get("driftDetection") or {}
        drift_enabled |= bool(section.get("enabled", bool(section)))
        drift.update({k: v for k, v in section.items() if k != "enabled"})
        actions = spec.get("actions") or {}
        alert = actions.get("alert") or {}
        if "enabled" in alert:
            alert_enabled = alert["enabled"]
        for entry in alert.get("destinations") or []:
            kinds = entry.get("eventType", [])
            destinations.append(
                AlertDestination(
                    type=entry["type"],
                    enabled=entry.get("enabled", True),
                    event_types=frozenset([kinds] if isinstance(kinds, str) else kinds),
                    topic_arn=entry.get("topicArn"),
                )
            )
        q = actions.get("qualysIntegration")
        if q is not None:
            qualys = QualysIntegration(
                enabled=q.get("enabled", True),
                endpoint=q.get("endpoint", qualys.endpoint),
                send_events=q.get("sendEvents", True),
            )
        perf.update(spec.get("performance") or {})
    return Policy(
        names=tuple(names),
        sources=tuple(dict.fromkeys(d.source for d in docs)),
        fim=FileIntegrityMonitoring(fim_enabled, tuple(dict.fromkeys(fim_paths))),
        process=ProcessExecution(proc_enabled, tuple(dict.fromkeys(tracked))),
        network=NetworkMonitoring(
            enabled=net_enabled,
            allowlist=tuple(allowlist),
            blocked_ports=frozenset(ports),
            allowed_ports=frozenset(allowed_ports),
            severity=net.get("severity", DEFAULT_SEVERITY),
            action=net.get("action", DEFAULT_ACTION),
            blocked_ports_severity=net.get("blockedPortsSeverity", "high"),
            blocked_ports_action=net.get("blockedPortsAction", DEFAULT_ACTION),
            udp=net.get("udp", False),
        ),
        software=SoftwareInstallation(soft_enabled, tuple(dict.fromkeys(managers))),
        syscalls=SyscallFiltering(
            enabled=filtering.get("enabled", True),
            traced=frozenset(traced),
            whitelist=frozenset(whitelist),
            severity=filtering.get("severity", "low"),
            action=filtering.get("action", "log"),
        ),
        anomaly=AnomalyDetection(
            enabled=anomaly_enabled,
            learning_window=float(anomaly.get("learningWindow", DEFAULT_LEARNING_WINDOW)),
            learning_events=int(anomaly.get("learningEvents", DEFAULT_LEARNING_EVENTS)),
            alert_threshold=float(anomaly.get("alertThreshold", DEFAULT_ALERT_THRESHOLD)),
            severity=anomaly.get("severity", "high"),
            action=anomaly.get("action", DEFAULT_ACTION),
        ),
        drift=DriftDetection(
            enabled=drift_enabled,
            severity=drift.get("severity", "high"),
            action=drift.get("action", DEFAULT_ACTION),
        ),
        actions=Actions(alert_enabled, tuple(destinations), qualys),
        performance=Performance(
            sampling_rate=float(perf.get("samplingRate", DEFAULT_SAMPLING_RATE)),
            batch_size=int(perf.get("batchSize", DEFAULT_BATCH_SIZE)),
            batch_timeout=float(perf.get("batchTimeout", DEFAULT_BATCH_TIMEOUT)),
        ),
    )


def _normpath(path: str) -> str:
    return path.rstrip("/") or "/"


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
