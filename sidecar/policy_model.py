"""The TracingPolicy model: frozen dataclasses the rest of the sidecar reads, and the
format's vocabulary (severities, actions, FIM events, package managers).

Built by the sections of `sidecar.policy_sections` from validated YAML; nothing else in the
sidecar reaches into the raw documents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

API_VERSION = "security.qualys.com/v1"
KIND = "TracingPolicy"
SEVERITIES = ("low", "medium", "high", "critical")
ACTIONS = ("log", "alert", "block")
FIM_EVENTS = ("open", "write", "unlink", "chmod", "chown", "link")
OPEN_FLAGS = ("truncate", "append", "create", "exclusive")
CHMOD_BITS = ("setuid", "setgid", "sticky", "executable", "world-writable")
DEFAULT_SEVERITY = "medium"
DEFAULT_ACTION = "alert"
# Defaults of the seed's `performance` block: every event, batches of 10, 5 seconds.
DEFAULT_SAMPLING_RATE = 1.0
DEFAULT_BATCH_SIZE = 10
DEFAULT_BATCH_TIMEOUT = 5.0
# Anomaly detection: learn for 5 minutes or 10,000 events, whichever ends first.
DEFAULT_LEARNING_WINDOW = 300.0
DEFAULT_LEARNING_EVENTS = 10_000
DEFAULT_ALERT_THRESHOLD = 0.7
MAX_PORT = 65535


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
GLOB_CHARS = re.compile(r"[*?\[]")


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
        return bool(GLOB_CHARS.search(self.path))


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
class ProcessNetworkRule:
    """Outbound connections of one program (basename or glob), judged on their own."""

    name: str
    allowlist: tuple[str, ...] = ()  # CIDRs; empty: nowhere
    allowed_ports: frozenset[int] = frozenset()  # empty: any port
    severity: str = DEFAULT_SEVERITY
    action: str = DEFAULT_ACTION


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
    processes: tuple[ProcessNetworkRule, ...] = ()
    inbound: bool = False  # inboundConnections given: listen(2) is watched
    listen_ports: frozenset[int] = frozenset()  # ports allowed to listen on; empty: none
    inbound_severity: str = DEFAULT_SEVERITY
    inbound_action: str = DEFAULT_ACTION


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
