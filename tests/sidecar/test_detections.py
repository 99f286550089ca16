"""The detection suite: behaviours from public detection suites, run for real (real ptrace,
the real CLI, real processes) under the starter policy `policies/examples/container-baseline.yaml`,
in launch and in attach mode. Each case must produce its rule's event.

Sources, per case (workloads/detections.py does what they describe):
- falcosecurity/rules `rules/falco_rules.yaml` (stable), `falco-incubating_rules.yaml`,
  `falco-sandbox_rules.yaml`: the Falco rule named in the table;
- falcosecurity/event-generator `events/syscall/*.go`: the same actions as its
  `syscall.<Name>` generators (WriteBelowEtc, ReadSensitiveFileUntrusted,
  CreateSymlinkOverSensitiveFiles, CreateHardlinkOverSensitiveFiles,
  NetcatRemoteCodeExecutionInContainer, RunShellUntrusted, DropAndExecuteNewBinaryInContainer,
  WriteBelowBinaryDir, ClearLogActivities, PtraceAttachedToProcess,
  ContactEC2InstanceMetadataServiceFromContainer, PackageManagementProcessLaunched,
  SearchPrivateKeysOrPasswords, FilelessExecutionViaMemfdCreate, SetSetuidOrSetgidBit);
- redcanaryco/atomic-red-team `atomics/<T-number>`: the ATT&CK technique named.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sidecar.sidecar_cli import attach, cli_env, launch
from tests.sidecar.test_tracer import ROOT, WORKLOADS

pytestmark = [pytest.mark.ptrace, pytest.mark.slow]
CLI = [sys.executable, "-m", "check"]
STARTER = ROOT / "policies" / "examples" / "container-baseline.yaml"
DETECTIONS = str(WORKLOADS / "detections.py")

# case -> (source, the rule its event carries, fields the event must have, action)
EXPECTED: dict[str, tuple[str, str, dict[str, object], str]] = {
    "write-below-etc": ("Falco: Write below etc; event-generator WriteBelowEtc",
                        "fim:/etc", {"event": "write"}, "alert"),
    "read-sensitive-file": ("Falco: Read sensitive file untrusted; T1003.008",
                            "fim:/etc/shadow", {"path": "/etc/shadow", "event": "open"}, "alert"),
    "symlink-over-sensitive-file": ("Falco: Create Symlink Over Sensitive Files",
                                    "fim:/etc/shadow", {"path": "/etc/shadow", "event": "link"},
                                    "alert"),
    "hardlink-over-sensitive-file": ("Falco: Create Hardlink Over Sensitive Files",
                                     "fim:/etc/shadow", {"path": "/etc/shadow", "event": "link"},
                                     "alert"),
    "netcat-remote-code-execution": ("Falco: Netcat Remote Code Execution in Container",
                                     "process:nc", {}, "alert"),
    "reverse-shell-dev-tcp": ("Falco sandbox: Reverse Shell; T1059.004",
                              "process:*sh", {}, "block"),
    "shell-spawned-by-runtime": ("Falco: Run shell untrusted; event-generator RunShellUntrusted",
                                 "process:*sh#2", {}, "alert"),
    "find-aws-credentials": ("Falco: Find AWS Credentials; T1552.001", "process:find", {},
                             "alert"),
    "search-private-keys": ("Falco: Search Private Keys or Passwords; T1552.004",
                            "process:grep", {}, "alert"),
    "package-management": ("Falco: Launch Package Management Process in Container",
                           "software:apt-get", {"command": "install"}, "alert"),
    "download-tool": ("T1105 Ingress Tool Transfer (curl)", "software:curl",
                      {"command": "download"}, "log"),
    "drop-and-execute": ("Falco: Drop and execute new binary in container; T1105",
                         "drift:new-executable", {}, "alert"),
    "fileless-memfd": ("Falco: Fileless execution via memfd_create; T1620", "process:memfd:*",
                       {"path": "memfd:kworker"}, "block"),
    "ld-preload": ("T1574.006 Dynamic Linker Hijacking (LD_PRELOAD)", "process:*", {}, "alert"),
    "clear-log": ("Falco: Clear Log Activities; T1070.002", "fim:/var/log", {"event": "write"},
                  "alert"),
    "setuid-bit": ("Falco: Set Setuid or Setgid bit; T1548.001", "fim:/", {"event": "chmod"},
                   "alert"),
    "ptrace-attach": ("Falco: PTRACE attached to process; T1055.008", "syscall:ptrace", {},
                      "alert"),
    "unshare-user-namespace": ("T1611 Escape to Host (unshare)", "syscall:unshare", {}, "alert"),
    "contact-instance-metadata": ("Falco: Contact EC2 Instance Metadata Service From Container",
                                  "network:outside-allowlist", {"ip": "169.254.169.254"},
                                  "alert"),
    "miner-pool-port": ("Falco: Detect outbound connections to common miner pool ports; T1496",
                        "network:blocked-port", {"port": 3333}, "block"),
    "bind-shell-port": ("T1571 Non-Standard Port: a listener (bind shell)",
                        "network:listen-not-allowed", {"ip": "127.0.0.1"}, "alert"),
    "write-below-binary-dir": ("Falco: Write below binary dir; event-generator "
                               "WriteBelowBinaryDir", "fim:/usr/bin", {"event": "write"},
                               "block"),
}  # fmt: skip


def _tools(tmp: Path) -> Path:
    """Stand-ins for the tools the cases name: they do nothing (no install, no network)."""
    bindir = tmp / "bin"
    bindir.mkdir()
    for name in ("nc", "apt-get", "curl"):
        tool = bindir / name
        tool.write_text("#!/bin/sh\nexit 0\n")
        tool.chmod(0o755)
    return bindir


def _launch(tmp: Path, port: int) -> tuple[list[dict], str]:
    env = cli_env(PATH=f"{_tools(tmp)}:{os.environ['PATH']}")
    argv = [sys.executable, DETECTIONS, str(tmp), str(port)]
    return launch(STARTER, tmp / "events.jsonl", argv, env)


def _attach(tmp: Path, port: int) -> tuple[list[dict], str]:
    env = cli_env(PATH=f"{_tools(tmp)}:{os.environ['PATH']}")
    argv = [sys.executable, DETECTIONS, str(tmp), str(port)]
    return attach(STARTER, tmp / "events.jsonl", argv, env, tmp / "go")


@pytest.fixture(scope="module", params=["launch", "attach"])
def suite(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[dict], str]]:
    """The whole suite once per mode (one sidecar run each), shared by the cases."""
    tmp = tmp_path_factory.mktemp(request.param).resolve()
    # A loopback listener for the reverse shell to aim at (it is blocked before it connects).
    with socket.create_server(("127.0.0.1", 0)) as server:
        runner = _launch if request.param == "launch" else _attach
        yield runner(tmp, server.getsockname()[1])


@pytest.mark.parametrize("case", EXPECTED)
def test_detection(suite: tuple[list[dict], str], case: str) -> None:
    events, output = suite
    source, rule, fields, action = EXPECTED[case]
    assert f"case {case} status" in output, output[-3000:]
    hits = [
        e for e in events
        if e["rule"] == rule and e["action"] == action
        and all(e.get(k) == v for k, v in fields.items())
    ]  # fmt: skip
    assert hits, f"{case} ({source}): no {rule} event; rules seen: " + ", ".join(
        sorted({e["rule"] for e in events})
    )


def test_no_case_left_anything_behind(suite: tuple[list[dict], str]) -> None:
    leftovers = [p for d in ("/etc", "/var/log", "/usr/bin") for p in os.listdir(d)
                 if p.startswith("containerscan-detect-")]  # fmt: skip
    assert leftovers == []
