"""The quick start end to end: `python -m check.quickstart.demo` as `make demo` runs it.

The demo starts a real registry and moto's server, builds and pushes the sample images,
sweeps twice and prints the findings. These tests check what the user reads, the exit
code, and that nothing outlives it: ports closed, no process left that belongs to its
workspace, the workspace removed. Also after Ctrl-C (SIGINT) and SIGTERM mid-run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from check.quickstart import demo
from check.quickstart.data import advisories_dir
from check.quickstart.local import REGISTRY_BINARY
from securityhub.errors import ConfigurationError
from tests.check.builtin.conftest import REPO

needs_registry = pytest.mark.skipif(
    shutil.which(REGISTRY_BINARY) is None,
    reason=f"{REGISTRY_BINARY} is not installed (apt-get install docker-registry, or "
           "sh scripts/system-deps.sh as root)")
DEMO_TIMEOUT = 120  # the demo takes ~15 s here; generous for a loaded CI machine


def demo_environment(cache: Path) -> dict[str, str]:
    """As from a clone: no CONTAINERSCAN_VULN_DB, nothing in `db update`'s default location
    (XDG_CACHE_HOME is an empty directory), so the demo falls back to the shipped records."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CONTAINERSCAN_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env["XDG_CACHE_HOME"] = str(cache)
    return env


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def leftovers(workspace: str) -> list[str]:
    """Processes whose command line or environment names the demo's workspace."""
    found = []
    needle = workspace.encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if needle in blob and state != "Z":
            found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()[:200]!r}")
    return found


def where(output: str) -> tuple[int, int, str]:
    emulator = re.search(r"AWS emulator\s+http://127\.0\.0\.1:(\d+)", output)
    registry = re.search(r"OCI registry\s+127\.0\.0\.1:(\d+)", output)
    workspace = re.search(r"workspace\s+(\S+)", output)
    assert emulator and registry and workspace, output
    return int(emulator[1]), int(registry[1]), workspace[1]


def assert_nothing_left(output: str) -> None:
    emulator, registry, workspace = where(output)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (port_open(registry) or leftovers(workspace)):
        time.sleep(0.1)  # a Go program's threads exit one by one
    assert not port_open(emulator), "the AWS emulator still listens"
    assert not port_open(registry), "the registry still listens"
    assert not Path(workspace).exists(), "the workspace was not removed"
    assert leftovers(workspace) == []


@pytest.mark.slow
@needs_registry
def test_demo_sweeps_fixes_and_archives(tmp_path) -> None:
    env = demo_environment(tmp_path)
    result = subprocess.run([sys.executable, "-m", "check.quickstart.demo"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=DEMO_TIMEOUT, check=False)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for heading in ("== 1. containerscan init", "== 2. sample images",
                    "== 3. sweep with the built-in scanner", "== 4. shop/worker fixed"):
        assert heading in out
    assert "table containerscan-demo: created" in out
    assert out.count("$ containerscan sweep --scanner builtin") == 2
    # The planted fake key is reported by rule and file, never shown.
    assert "AWS access key ID in /app/config/.env" in out
    assert "AKIAIOSFODNN7EXAMPLE" not in out + result.stderr
    assert "wJalrXUtnFEMI" not in out + result.stderr
    last = out.rstrip().splitlines()[-1]
    assert f"advisories     {advisories_dir()} (the PyPA OSV" in out
    assert "5 active, 5 archived" in last, last
    archived = out.split("$ containerscan findings --state archived", 1)[1]
    rows = [line for line in archived.splitlines() if "ARCHIVED" in line]
    assert len(rows) == 5 and all("shop/worker@" in row for row in rows)
    assert "5 finding(s)" in archived
    # Before the fix: the ten findings of both images, all active.
    first = out.split("$ containerscan findings\n", 1)[1].split("== 4.", 1)[0]
    assert "10 finding(s)" in first
    assert {"CVE-2019-1547", "CVE-2023-46136", "CVE-2023-32681"} <= set(
        re.findall(r"CVE-\d+-\d+", first))
    assert "servers stopped, temporary files removed" in last
    assert_nothing_left(out)


@pytest.mark.slow
@needs_registry
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_demo_cleans_up_when_interrupted(signum: int, tmp_path) -> None:
    env = demo_environment(tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "check.quickstart.demo"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + DEMO_TIMEOUT
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("$ containerscan sweep"):
                break  # mid-run: the sweep's child process is starting
        assert lines and lines[-1].startswith("$ containerscan sweep"), "".join(lines)
        process.send_signal(signum)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    out = "".join(lines) + rest
    assert process.returncode == 130, out
    assert "demo interrupted" in out
    assert_nothing_left(out)


def test_advisory_source_order(tmp_path) -> None:
    """CONTAINERSCAN_VULN_DB, else a `db update` database in its default location, else the
    shipped records (never an empty database)."""
    cache = tmp_path / "cache"
    assert demo.advisory_source({"XDG_CACHE_HOME": str(cache)}).path == advisories_dir()
    downloaded = cache / "containerscan" / "vulndb"
    downloaded.mkdir(parents=True)
    assert demo.advisory_source({"XDG_CACHE_HOME": str(cache)}).path == advisories_dir()
    (downloaded / "osv").mkdir()  # what `db update` writes
    assert demo.advisory_source({"XDG_CACHE_HOME": str(cache)}).path == downloaded
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    environ = {"XDG_CACHE_HOME": str(cache), "CONTAINERSCAN_VULN_DB": str(chosen)}
    assert demo.advisory_source(environ).path == chosen
    with pytest.raises(ConfigurationError, match="not a directory"):
        demo.advisory_source({"CONTAINERSCAN_VULN_DB": str(tmp_path / "nope")})


def test_shipped_records_are_the_real_ones() -> None:
    """The fallback is real data: PyPA's records for the demo's Jinja2 and Alpine's secdb."""
    root = advisories_dir()
    assert "CC-BY 4.0" in (root / "README.md").read_text(encoding="utf-8")
    assert list((root / "pypa-osv" / "vulns" / "jinja2").glob("PYSEC-*.yaml"))
    assert (root / "alpine-secdb" / "v3.10" / "main.yaml").is_file()
