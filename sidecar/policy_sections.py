"""The TracingPolicy's `spec` sections, one class each, as Cloud Custodian's filters are:
a section owns its JSON Schema fragment, its semantic checks and how several files merge
into one model. Adding a section touches one place: a class here, registered with
`@section`; the schema (`build_schema`), the checks and the merge walk the registry.

A section's `check` gets the section's data from one validated-by-schema document and
reports problems with `add(path, message)`; `merge` gets the section's data from every
document in order (later files win on scalar settings, lists add up, sets unite, a section
is enabled when any file enables it) and returns the model (`sidecar.policy_model`).
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, ClassVar

from sidecar.patterns import glob_regex, pattern_problem
from sidecar.policy_model import (
    DEFAULT_ACTION,
    DEFAULT_ALERT_THRESHOLD,
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCH_TIMEOUT,
    DEFAULT_LEARNING_EVENTS,
    DEFAULT_LEARNING_WINDOW,
    DEFAULT_SAMPLING_RATE,
    DEFAULT_SEVERITY,
    GLOB_CHARS,
    MAX_PORT,
    PACKAGE_MANAGERS,
    Actions,
    AlertDestination,
    AnomalyDetection,
    DriftDetection,
    FileIntegrityMonitoring,
    FimPath,
    NetworkMonitoring,
    PackageManagerRule,
    Performance,
    ProcessExecution,
    ProcessNetworkRule,
    QualysIntegration,
    SoftwareInstallation,
    SyscallFiltering,
    TrackedExecutable,
)

Where = tuple[str | int, ...]
Add = Callable[[Where, str], None]
Data = Mapping[str, Any]

SECTIONS: dict[str, type[Section]] = {}
# SNS topic names: 1-256 of [A-Za-z0-9_-], `.fifo` for FIFO topics (SNS API, CreateTopic).
_SNS_TOPIC_ARN = r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$"


def section(cls: type[Section]) -> type[Section]:
    """Register a section class under its YAML key (the registry's order is the schema's)."""
    SECTIONS[cls.key] = cls
    return cls


class Section:
    key: ClassVar[str]  # the YAML key under spec
    attr: ClassVar[str]  # the Policy field it builds
    schema: ClassVar[dict[str, Any]]  # its JSON Schema fragment

    @classmethod
    def check(cls, data: Data, where: Where, add: Add) -> None:
        """Semantic checks beyond the schema (compiles, parses, exists); none by default."""

    @classmethod
    def merge(cls, datas: Sequence[Data]) -> Any:
        raise NotImplementedError


def _enabled(datas: Sequence[Data]) -> bool:
    """A section is on when any file enables it, or has it without `enabled: false`."""
    return any(bool(d.get("enabled", bool(d))) for d in datas)


def _scalars(datas: Sequence[Data], skip: tuple[str, ...] = ("enabled",)) -> dict[str, Any]:
    """The section's scalar settings, later files winning."""
    out: dict[str, Any] = {}
    for data in datas:
        out.update({k: v for k, v in data.items() if k not in skip})
    return out


def _named_rules(properties: dict[str, Any]) -> dict[str, Any]:
    """The schema of a list of rules, each a closed object with a required `name`."""
    return {
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}, **properties},
        },
    }


def _entries(datas: Sequence[Data], key: str) -> list[Data]:
    """The rule entries of a list key, from every document in order."""
    return [entry for data in datas for entry in data.get(key) or []]


def _verdict(entry: Data) -> dict[str, str]:
    """A rule's severity and action, with the format's defaults."""
    return {
        "severity": entry.get("severity", DEFAULT_SEVERITY),
        "action": entry.get("action", DEFAULT_ACTION),
    }


def check_pattern(pattern: str, where: Where, add: Add, what: str) -> None:
    """Patterns are compiled with RE2 (sidecar.patterns): linear time, checked here."""
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


@cache
def known_syscalls() -> frozenset[str]:
    """Syscall names that exist on x86_64 or aarch64 (the architectures Fargate runs on).

    From the sidecar's own tables (`sidecar.syscalls`). A name that exists on one
    architecture only (`open` has no aarch64 number) is accepted: the tracer watches it
    where it exists.
    """
    from sidecar.syscalls import ARCHES

    return frozenset(name for arch in ARCHES.values() for name in arch.numbers)


def syscall_problem(name: str) -> str | None:
    known = known_syscalls()
    if name in known:
        return None
    guess = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    hint = f"did you mean {guess[0]!r}?" if guess else "check the name in syscalls(2)"
    return f"unknown syscall {name!r} on x86_64 and aarch64; {hint}"


def normpath(path: str) -> str:
    return path.rstrip("/") or "/"


# ------------------------------------------------------------------------------ sections


@section
class FileIntegrity(Section):
    key = "fileIntegrityMonitoring"
    attr = "fim"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "enabled": {"type": "boolean"},
            "paths": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["path"],
                    "properties": {
                        "path": {"type": "string", "minLength": 1},
                        "recursive": {"type": "boolean"},
                        "events": {
                            "type": "array",
                            "minItems": 1,
                            "uniqueItems": True,
                            "items": {
                                "enum": ["open", "write", "unlink", "chmod", "chown", "link"]
                            },
                        },
                        "openFlags": {
                            "description": "write "
                            "and "
                            "open "
                            "events "
                            "match "
                            "only "
                            "opens "
                            "with "
                            "one "
                            "of "
                            "these "
                            "flags "
                            "(truncate: "
                            "O_TRUNC, "
                            "append: "
                            "O_APPEND, "
                            "create: "
                            "O_CREAT, "
                            "exclusive: "
                            "O_EXCL)",
                            "type": "array",
                            "minItems": 1,
                            "uniqueItems": True,
                            "items": {"enum": ["truncate", "append", "create", "exclusive"]},
                        },
                        "chmodBits": {
                            "description": "chmod "
                            "events "
                            "match "
                            "only "
                            "modes "
                            "with "
                            "one "
                            "of "
                            "these "
                            "bits "
                            "set",
                            "type": "array",
                            "minItems": 1,
                            "uniqueItems": True,
                            "items": {
                                "enum": [
                                    "setuid",
                                    "setgid",
                                    "sticky",
                                    "executable",
                                    "world-writable",
                                ]
                            },
                        },
                        "severity": {"$ref": "#/$defs/severity"},
                        "action": {"$ref": "#/$defs/action"},
                    },
                },
            },
        },
    }

    @classmethod
    def check(cls, data: Data, where: Where, add: Add) -> None:
        for i, entry in enumerate(data.get("paths") or []):
            path = entry.get("path")
            if not isinstance(path, str):
                continue
            at = (*where, "paths", i, "path")
            if not path.startswith("/"):
                add(at, f"path {path!r} is relative; write an absolute path such as /{path}")
            elif GLOB_CHARS.search(path):
                check_pattern(glob_regex(path), at, add, what="glob")

    @classmethod
    def merge(cls, datas: Sequence[Data]) -> FileIntegrityMonitoring:
        paths = [
            FimPath(
                path=normpath(entry["path"]),
                recursive=entry.get("recursive", False),
                events=frozenset(entry.get("events", ["write"])),
                open_flags=frozenset(entry.get("openFlags", ())),
                chmod_bits=frozenset(entry.get("chmodBits", ())),
                **_verdict(entry),
            )
            for entry in _entries(datas, "paths")
        ]
        return FileIntegrityMonitoring(_enabled(datas), tuple(dict.fromkeys(paths)))


@section
class ProcessExecutionSection(Section):
    key = "processExecution"
    attr = "process"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "enabled": {"type": "boolean"},
            "trackedExecutables": _named_rules(
                {
                    "args": {"type": "array", "items": {"type": "string"}},
                    "argsPattern": {"type": "string", "minLength": 1},
                    "parent": {
                        "description": "match "
                        "only "
                        "when "
                        "the "
                        "program "
                        "that "
                        "runs "
                        "the "
                        "exec "
                        "(or "
                        "the "
                        "parent "
                        "process) "
                        "is "
                        "one "
                        "of "
                        "these "
                        "names "
                        "or "
                        "globs",
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "minLength": 1},
                    },
                    "env": {
                        "description": "match "
                        "only "
                        "when "
                        "the "
                        "new "
                        "program's "
                        "environment "
                        "sets "
                        "one "
                        "of "
                        "these "
                        "variables "
                        "(names "
                        "only; "
                        "values "
                        "are "
                        "never "
                        "read)",
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                    },
                    "severity": {"$ref": "#/$defs/severity"},
                    "action": {"$ref": "#/$defs/action"},
                    "captureArgs": {"type": "boolean"},
                }
            ),
        },
    }

    @classmethod
    def check(cls, data: Data, where: Where, add: Add) -> None:
        for i, entry in enumerate(data.get("trackedExecutables") or []):
            at = (*where, "trackedExecutables", i)
            pattern = entry.get("argsPattern")
            if isinstance(pattern, str):
                check_pattern(pattern, (*at, "argsPattern"), add, what="regular expression")
            name = entry.get("name")
            if isinstance(name, str) and GLOB_CHARS.search(name):
                check_pattern(glob_regex(name), (*at, "name"), add, what="glob")
            for j, parent in enumerate(entry.get("parent") or []):
                if isinstance(parent, str) and GLOB_CHARS.search(parent):
                    check_pattern(glob_regex(parent), (*at, "parent", j), add, what="glob")

    @classmethod
    def merge(cls, datas: Sequence[Data]) -> ProcessExecution:
        tracked = [
            TrackedExecutable(
                name=entry["name"],
                args=tuple(entry.get("args", ())),
                args_pattern=entry.get("argsPattern"),
                capture_args=entry.get("captureArgs", False),
                parent=tuple(entry.get("parent", ())),
                env=tuple(entry.get("env", ())),
                **_verdict(entry),
            )
            for entry in _entries(datas, "trackedExecutables")
        ]
        return ProcessExecution(_enabled(datas), tuple(dict.fromkeys(tracked)))


@section
class Network(Section):
    key = "networkMonitoring"
    attr = "network"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "enabled": {"type": "boolean"},
            "processes": {
                "description": "per-process outbound rules: connections of a program matching "
                "`name` are judged by its own allowlist and allowedPorts (blockedPorts still "
                "apply); an empty allowlist allows nowhere",
                **_named_rules(
                    {
                        "allowlist": {"type": "array", "items": {"type": "string"}},
                        "allowedPorts": {"type": "array", "items": {"type": "integer"}},
                        "severity": {"$ref": "#/$defs/severity"},
                        "action": {"$ref": "#/$defs/action"},
                    }
                ),
            },
            "inboundConnections": {
                "description": "listening sockets (listen(2)): a port outside allowedPorts "
                "(every port when it is empty) is an event (listen-not-allowed)",
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "allowedPorts": {"type": "array", "items": {"type": "integer"}},
                    "severity": {"$ref": "#/$defs/severity"},
                    "action": {"$ref": "#/$defs/action"},
                },
            },
            "outboundConnections": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "allowlist": {"type": "array", "items": {"type": "string"}},
                    "blockedPorts": {"type": "array", "items": {"type": "integer"}},
                    "allowedPorts": {
                        "description": "when "
                        "set, "
                        "a "
                        "connection "
                        "to "
                        "any "
                        "other "
                        "port "
                        "is "
                        "an "
                        "event "
                        "(outside-allowed-ports), "
                        "with "
                        "this "
                        "section's "
                        "severity "
                        "and "
                        "action",
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "integer"},
                    },
                    "severity": {"$ref": "#/$defs/severity"},
                    "action": {"$ref": "#/$defs/action"},
                    "blockedPortsSeverity": {"$ref": "#/$defs/severity"},
                    "blockedPortsAction": {"$ref": "#/$defs/action"},
                    "udp": {"type": "boolean"},
                },
            },
        },
    }

    @classmethod
    def check(cls, data: Data, where: Where, add: Add) -> None:
        out = data.get("outboundConnections") or {}
        base = (*where, "outboundConnections")
        for i, cidr in enumerate(out.get("allowlist") or []):
            if isinstance(cidr, str):
                message = cidr_problem(cidr)
                if message:
                    add((*base, "allowlist", i), message)
        for i, rule in enumerate(data.get("processes") or []):
            at = (*where, "processes", i)
            for j, cidr in enumerate(rule.get("allowlist") or []):
                message = cidr_problem(cidr) if isinstance(cidr, str) else None
                if message:
                    add((*at, "allowlist", j), message)
            name = rule.get("name")
            if isinstance(name, str) and GLOB_CHARS.search(name):
                check_pattern(glob_regex(name), (*at, "name"), add, what="glob")
        inbound = data.get("inboundConnections") or {}
        ports = [(base, k, out.get(k) or []) for k in ("blockedPorts", "allowedPorts")]
        ports += [((*where, "processes", i), "allowedPorts", r.get("allowedPorts") or [])
                  for i, r in enumerate(data.get("processes") or [])]  # fmt: skip
        ports.append(
            ((*where, "inboundConnections"), "allowedPorts", inbound.get("allowedPorts") or [])
        )
        for base, key, values in ports:
            for i, port in enumerate(values):
                if (
                    isinstance(port, int)
                    and not isinstance(port, bool)
                    and not 1 <= port <= MAX_PORT
                ):
                    add(
                        (*base, key, i),
                        f"port {port} is out of range; use a TCP/UDP port between 1 and {MAX_PORT}",
                    )

    @classmethod
    def merge(cls, datas: Sequence[Data]) -> NetworkMonitoring:
        allowlist: list[str] = []
        blocked: set[int] = set()
        allowed: set[int] = set()
        outs = [d.get("outboundConnections") or {} for d in datas]
        for out in outs:
            allowlist += [c for c in out.get("allowlist", []) if c not in allowlist]
            blocked.update(out.get("blockedPorts", []))
            allowed.update(out.get("allowedPorts", []))
        net = _scalars(outs, skip=("allowlist", "blockedPorts", "allowedPorts"))
        inbound = _scalars([d.get("inboundConnections") or {} for d in datas])
        listen_ports = {
            p for d in datas for p in (d.get("inboundConnections") or {}).get("allowedPorts", [])
        }
        processes = tuple(
            ProcessNetworkRule(
                name=entry["name"],
                allowlist=tuple(entry.get("allowlist", ())),
                allowed_ports=frozenset(entry.get("allowedPorts", ())),
                **_verdict(entry),
            )
            for entry in _entries(datas, "processes")
        )
        return NetworkMonitoring(
            processes=processes,
            inbound=any(d.get("inboundConnections") is not None for d in datas),
            listen_ports=frozenset(listen_ports),
            inbound_severity=inbound.get("severity", DEFAULT_SEVERITY),
            inbound_action=inbound.get("action", DEFAULT_ACTION),
            enabled=_enabled(datas),
            allowlist=tuple(allowlist),
            blocked_ports=frozenset(blocked),
            allowed_ports=frozenset(allowed),
            severity=net.get("severity", DEFAULT_SEVERITY),
            action=net.get("action", DEFAULT_ACTION),
            blocked_ports_severity=net.get("blockedPortsSeverity", "high"),
            blocked_ports_action=net.get("blockedPortsAction", DEFAULT_ACTION),
            udp=net.get("udp", False),
        )


@section
class Software(Section):
    key = "softwareInstallation"
    attr = "software"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "enabled": {"type": "boolean"},
            "packageManagers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "commands": {"type": "array", "items": {"type": "string", "minLength": 1}},
                        "severity": {"$ref": "#/$defs/severity"},
                        "action": {"$ref": "#/$defs/action"},
                        "captureArgs": {"type": "boolean"},
                    },
                },
            },
        },
    }

    @classmethod
    def check(cls, data: Data, where: Where, add: Add) -> None:
        for i, entry in enumerate(data.get("packageManagers") or []):
            name = entry.get("name")
            if isinstance(name, str) and name not in PACKAGE_MANAGERS:
                guess = difflib.get_close_matches(name, list(PACKAGE_MANAGERS), n=1)
                hint = (
                    f"did you mean {guess[0]!r}?"
                    if guess
                    else f"use one of: {', '.join(PACKAGE_MANAGERS)}"
                )
                add(
                    (*where, "packageManagers", i, "name"),
                    f"unknown package manager {name!r}; {hint}",
                )

    @classmethod
    def merge(cls, datas: Sequence[Data]) -> SoftwareInstallation:
        managers = [
            PackageManagerRule(
                name=entry["name"],
                commands=tuple(entry.get("commands", PACKAGE_MANAGERS[entry["name"]])),
                capture_args=entry.get("captureArgs", False),
                **_verdict(entry),
            )
            for entry in _entries(datas, "packageManagers")
        ]
        return SoftwareInstallation(_enabled(datas), tuple(dict.fromkeys(managers)))


@section
class Syscalls(Section):
    key = "syscallFiltering"
    attr = "syscalls"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "enabled": {"type": "boolean"},
            "tracedSyscalls": {"type": "array", "uniqueItems": True, "items": {"type": "string"}},
            "whitelist": {"type": "array", "uniqueItems": True, "items": {"type": "string"}},
            "severity": {"$ref": "#/$defs/severity"},
            "action": {"$ref": "#/$defs/action"},
        },
    }

    @classmethod
    def check(cls, data: Data, where: Where, add: Add) -> None:
        for key in ("tracedSyscalls", "whitelist"):
            for i, name in enumerate(data.get(key) or []):
                if isinstance(name, str):
                    message = syscall_problem(name)
                    if message:
                        add((*where, key, i), message)

    @classmethod
    def merge(cls, datas: Sequence[Data]) -> SyscallFiltering:
        traced = {n for d in datas for n in d.get("tracedSyscalls", [])}
        whitelist = {n for d in datas for n in d.get("whitelist", [])}
        settings = _scalars(datas, skip=("tracedSyscalls", "whitelist"))
        return SyscallFiltering(
            enabled=settings.get("enabled", True),
            traced=frozenset(traced),
            whitelist=frozenset(whitelist),
            severity=settings.get("severity", "low"),
            action=settings.get("action", "log"),
        )


@section
class Anomaly(Section):
    key = "anomalyDetection"
    attr = "anomaly"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "enabled": {"type": "boolean"},
            "learningWindow": {"type": "number", "exclusiveMinimum": 0},
            "learningEvents": {"type": "integer", "minimum": 1},
            "alertThreshold": {"type": "number", "exclusiveMinimum": 0},
            "severity": {"$ref": "#/$defs/severity"},
            "action": {"$ref": "#/$defs/action"},
        },
    }

    @classmethod
    def merge(cls, datas: Sequence[Data]) -> AnomalyDetection:
        settings = _scalars(datas)
        return AnomalyDetection(
            enabled=_enabled(datas),
            learning_window=float(settings.get("learningWindow", DEFAULT_LEARNING_WINDOW)),
            learning_events=int(settings.get("learningEvents", DEFAULT_LEARNING_EVENTS)),
            alert_threshold=float(settings.get("alertThreshold", DEFAULT_ALERT_THRESHOLD)),
            severity=settings.get("severity", "high"),
            action=settings.get("action", DEFAULT_ACTION),
        )


@section
class Drift(Section):
    key = "driftDetection"
    attr = "drift"
    schema: ClassVar[dict[str, Any]] = {
        "description": "an exec of a file written, created, linked, renamed into place or "
        "made executable after the sidecar started (not in the image), and any "
        "exec of a memfd",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "enabled": {"type": "boolean"},
            "severity": {"$ref": "#/$defs/severity"},
            "action": {"$ref": "#/$defs/action"},
        },
    }

    @classmethod
    def merge(cls, datas: Sequence[Data]) -> DriftDetection:
        settings = _scalars(datas)
        return DriftDetection(
            enabled=_enabled(datas),
            severity=settings.get("severity", "high"),
            action=settings.get("action", DEFAULT_ACTION),
        )


@section
class ActionsSection(Section):
    key = "actions"
    attr = "actions"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "alert": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "enabled": {"type": "boolean"},
                    "destinations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["type"],
                            "properties": {
                                "type": {
                                    "enum": ["qualys-crs", "sns", "security-hub", "stdout", "file"]
                                },
                                "enabled": {"type": "boolean"},
                                "eventType": {
                                    "oneOf": [
                                        {"$ref": "#/$defs/eventType"},
                                        {
                                            "type": "array",
                                            "items": {"$ref": "#/$defs/eventType"},
                                            "uniqueItems": True,
                                        },
                                    ]
                                },
                                "topicArn": {
                                    "type": "string",
                                    "pattern": _SNS_TOPIC_ARN,
                                },
                            },
                        },
                    },
                },
            },
            "qualysIntegration": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "enabled": {"type": "boolean"},
                    "endpoint": {"type": "string", "pattern": "^https?://"},
                    "sendEvents": {"type": "boolean"},
                },
            },
        },
    }

    @classmethod
    def merge(cls, datas: Sequence[Data]) -> Actions:
        alert_enabled = True
        destinations: list[AlertDestination] = []
        qualys = QualysIntegration()
        for data in datas:
            alert = data.get("alert") or {}
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
            q = data.get("qualysIntegration")
            if q is not None:
                qualys = QualysIntegration(
                    enabled=q.get("enabled", True),
                    endpoint=q.get("endpoint", qualys.endpoint),
                    send_events=q.get("sendEvents", True),
                )
        return Actions(alert_enabled, tuple(destinations), qualys)


@section
class PerformanceSection(Section):
    key = "performance"
    attr = "performance"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "samplingRate": {"type": "number", "minimum": 0, "maximum": 1},
            "batchSize": {"type": "integer", "minimum": 1, "maximum": 10000},
            "batchTimeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
        },
    }

    @classmethod
    def merge(cls, datas: Sequence[Data]) -> Performance:
        settings = _scalars(datas, skip=())
        return Performance(
            sampling_rate=float(settings.get("samplingRate", DEFAULT_SAMPLING_RATE)),
            batch_size=int(settings.get("batchSize", DEFAULT_BATCH_SIZE)),
            batch_timeout=float(settings.get("batchTimeout", DEFAULT_BATCH_TIMEOUT)),
        )


# --------------------------------------------------------------------------------- schema

_DOCUMENT: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://containerscan.invalid/schemas/tracing-policy.schema.json",
    "title": "TracingPolicy",
    "description": "A containerscan runtime TracingPolicy (the Qualys CRS-like format of "
    "the seed document). Unknown keys are rejected everywhere.",
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"type": "string", "enum": ["security.qualys.com/v1"]},
        "kind": {"type": "string", "enum": ["TracingPolicy"]},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "description": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {"type": "object", "additionalProperties": False, "properties": {}},
    },
    "$defs": {
        "severity": {"enum": ["low", "medium", "high", "critical"]},
        "action": {"enum": ["log", "alert", "block"]},
        "eventType": {
            "enum": [
                "process_execution",
                "file_change",
                "network_connection",
                "software_installation",
                "syscall",
                "anomaly",
            ]
        },
    },
}


def build_schema() -> dict[str, Any]:
    """The whole TracingPolicy JSON Schema: the document's frame, each section's fragment
    (published as policies/tracing-policy.schema.json; a test keeps the file in step)."""
    import copy

    doc = copy.deepcopy(_DOCUMENT)
    doc["properties"]["spec"]["properties"] = {
        key: copy.deepcopy(cls.schema) for key, cls in SECTIONS.items()
    }
    return doc
