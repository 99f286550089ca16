"""Run in the arm64 guest: the project's real injection tests under pytest, then one line

    CONTAINERSCAN-AARCH64-RESULT {"machine": ..., "kernel": ..., "tests": {nodeid: outcome}, ...}

on the console (the serial port), which the host test parses. Failures are printed above it
in pytest's own words.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

import pytest

RESULT = "CONTAINERSCAN-AARCH64-RESULT"
TESTS = ("tests/sidecar/test_inject.py", "tests/sidecar/test_inject_units.py")
# The two CLI-level tests import the whole command line (click, boto3 and the rest), which
# this minimal guest does not carry; they test nothing architecture-specific.
DESELECT = (
    "tests/sidecar/test_inject.py::test_the_task_definition_switch_sets_the_option",
    "tests/sidecar/test_inject.py::test_the_command_injects_through_the_monitor",
)


# Software emulation runs the guest ~20 times slower than the host: the tests' waits for
# the workloads (tests.sidecar.test_tracer._wait_for) get this many times longer.
TIME_SCALE = 6.0
SELECT = "containerscan.select="  # on the kernel command line: pytest -k EXPRESSION


class Collect:
    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Scale the waits in every collected test module (each imports _wait_for by name)."""
        from tests.sidecar import test_tracer

        original = test_tracer._wait_for

        def scaled(predicate: object, timeout: float = 15) -> None:
            original(predicate, timeout * TIME_SCALE)

        for name, module in list(sys.modules.items()):
            if name.startswith("tests.sidecar") and getattr(module, "_wait_for", None) is original:
                module._wait_for = scaled

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":
            if report.nodeid not in self.outcomes or report.outcome != "passed":
                self.outcomes[report.nodeid] = report.outcome


def main() -> int:
    started = time.monotonic()
    collect = Collect()
    args = ["-p", "no:cacheprovider", "-q", "-rfE", "--color=no", *TESTS]
    for nodeid in DESELECT:
        args += ["--deselect", nodeid]
    with open("/proc/cmdline") as fh:
        for word in fh.read().split():
            if word.startswith(SELECT):
                args += ["-k", word[len(SELECT) :].replace("+", " ")]
    status = pytest.main(args, plugins=[collect])
    result = {
        "machine": platform.machine(),
        "kernel": os.uname().release,
        "python": platform.python_version(),
        "exitstatus": int(status),
        "seconds": round(time.monotonic() - started, 1),
        "tests": collect.outcomes,
    }
    sys.stdout.flush()
    print(f"{RESULT} {json.dumps(result, sort_keys=True)}", flush=True)
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
