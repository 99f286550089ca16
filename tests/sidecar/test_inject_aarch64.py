"""The seccomp-filter injection on a real arm64 kernel (AWS Graviton's architecture).

This machine is x86_64, so scripts/aarch64-vm builds an arm64 guest from Debian's arm64
packages (its generic kernel, Python 3.11, a static busybox; nothing arm64 runs on the host)
and qemu-system-aarch64 runs it in software emulation. In the guest, pytest runs the
project's injection tests (tests/sidecar/test_inject.py and test_inject_units.py) against
the real kernel: its ptrace, its seccomp, its /proc. The guest prints one result line on
its serial console; this test reads the console file and parses that line itself.

What it checks comes from the arm64 kernel: the guest's tests read the `Seccomp:`,
`NoNewPrivs:` and `TracerPid:` lines of /proc/PID/status, /proc/PID/syscall, the stop
counts, the workloads' own files and exit statuses (see test_inject.py).

Skipped, with the reason, only where qemu-system-aarch64 is not installed or Debian's
arm64 packages cannot be downloaded (build.py exits 3); any other build failure fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sidecar.test_tracer import ROOT

VM = ROOT / "scripts" / "aarch64-vm"
RESULT = "CONTAINERSCAN-AARCH64-RESULT"
# The guest tests this run needs to see pass, by name. The attach-mode tests that trace a
# process with a stop per syscall (refused injection, no --seccomp) take ~2 minutes each
# under emulation: `make test-aarch64` runs them too.
SELECT = "not refuses and not without_the_filter"
INJECTION = "tests/sidecar/test_inject.py::"
REQUIRED = {
    INJECTION + name
    for name in (
        "test_single_threaded_process_gets_the_filter",
        "test_fifty_threads_all_get_the_filter",
        "test_a_process_that_appears_after_attach_gets_the_filter",
        "test_killing_the_sidecar_kills_the_application",
        "test_a_sleep_cut_by_the_injection_goes_on_through_restart_syscall",
        "test_busy_threads_run_on_unharmed_after_the_injection",
    )
}
UNITS = "tests/sidecar/test_inject_units.py::"
BOOT_TIMEOUT = 900  # seconds for boot + tests; a normal run takes a few minutes


def console_result(text: str) -> dict:
    """The guest's JSON result line from its serial console."""
    lines = [line for line in text.splitlines() if line.startswith(RESULT + " ")]
    assert len(lines) == 1, f"the guest printed {len(lines)} result lines:\n{text[-4000:]}"
    return json.loads(lines[0][len(RESULT) + 1 :])


def test_console_result_parsing() -> None:
    text = "boot noise\n" + RESULT + ' {"exitstatus": 0, "tests": {"a": "passed"}}\n[ 9.4] reboot\n'
    assert console_result(text)["tests"] == {"a": "passed"}
    with pytest.raises(AssertionError, match="0 result lines"):
        console_result("Kernel panic - not syncing\n")


@pytest.mark.slow
def test_injection_on_a_real_arm64_kernel(tmp_path: Path) -> None:
    if shutil.which("qemu-system-aarch64") is None:
        pytest.skip("qemu-system-aarch64 is not installed (Debian: qemu-system-arm)")
    build = subprocess.run(
        [sys.executable, str(VM / "build.py")], capture_output=True, text=True, check=False
    )
    if build.returncode == 3:
        pytest.skip(f"the arm64 guest cannot be built here: {build.stderr.strip()}")
    assert build.returncode == 0, build.stderr
    console = tmp_path / "console.log"
    subprocess.run(
        [sys.executable, str(VM / "run.py"), "--console", str(console), "--select", SELECT],
        capture_output=True,
        text=True,
        timeout=BOOT_TIMEOUT + 60,
        check=False,
    )
    text = console.read_text(errors="replace")
    result = console_result(text)
    assert result["machine"] == "aarch64"
    assert result["kernel"].endswith("-arm64")
    tests = result["tests"]
    failed = {name: outcome for name, outcome in tests.items() if outcome != "passed"}
    assert not failed, f"{failed}\n{text[-6000:]}"
    assert REQUIRED <= set(tests)
    assert sum(name.startswith(UNITS) for name in tests) >= 20
    assert result["exitstatus"] == 0
