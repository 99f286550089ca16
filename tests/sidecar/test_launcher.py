"""The self-contained launcher (docker/launcher/) runs where nothing else does.

The bundle is built from this checkout by `docker/launcher/bundle.py` (the same command
Dockerfile.sidecar runs), copied into a chroot whose root holds only Debian's static busybox
(no Python, no libc, no dynamic loader of its own), /proc, /dev/null and a decoy
/sbin/ldconfig that must never run, and run there as an
application container's entry point would: `/containerscan/bin/containerscan-run -- CMD`,
with the bundled balanced policy. What is checked comes from the kernel and the workload:
the FIM event for a write under /etc that the workload really made, the workload's own view
of its environment, its exit status.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static (scripts/system-deps.sh)
PT_INTERP = 3

pytestmark = [pytest.mark.slow, pytest.mark.ptrace]


def needs_interpreter(path: Path) -> bool:
    """Whether an ELF64 file names a dynamic loader (a PT_INTERP program header)."""
    data = path.read_bytes()
    if data[:5] != b"\x7fELF\x02":
        raise AssertionError(f"{path} is not a 64-bit ELF file")
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return PT_INTERP in types


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None or shutil.which("ldd") is None:
        pytest.skip("building the launcher needs gcc and ldd")
    dest = tmp_path_factory.mktemp("bundle") / "containerscan"
    subprocess.run(
        [sys.executable, str(ROOT / "docker" / "launcher" / "bundle.py"), str(dest)],
        check=True,
        cwd=ROOT,
        timeout=300,
    )
    return dest


@pytest.fixture
def busybox_root(tmp_path: Path, bundle: Path) -> Path:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("the chroot needs root and unshare (util-linux)")
    if not BUSYBOX.exists() or needs_interpreter(BUSYBOX):
        pytest.skip("needs a static /bin/busybox (Debian: busybox-static)")
    root = tmp_path / "root"
    for name in ("bin", "proc", "tmp", "etc", "dev"):
        (root / name).mkdir(parents=True)
    (root / "dev" / "null").touch()  # bind-mounted over by in_chroot, as in any container
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    # An image's own tool the launcher must not run (ctypes.util.find_library would).
    (root / "sbin").mkdir()
    (root / "sbin" / "ldconfig").write_text("#!/bin/sh\necho ran > /tmp/ldconfig-ran\n")
    (root / "sbin" / "ldconfig").chmod(0o755)
    # What the init container does: a plain recursive copy into the shared volume.
    subprocess.run(["cp", "-r", str(bundle), str(root / "containerscan")], check=True)
    return root


def in_chroot(root: Path, *argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run argv inside `root` with /proc and /dev/null mounted, in a private mount namespace."""
    script = (
        'mount -t proc proc "$1/proc" && mount --bind /dev/null "$1/dev/null" && shift '
        '&& exec /usr/sbin/chroot "$@"'
    )
    return subprocess.run(
        [
            "unshare",
            "--mount",
            "--fork",
            "/bin/sh",
            "-c",
            script,
            "sh",
            str(root),
            str(root),
            *argv,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


WORKLOAD = """
echo configured > /etc/app.conf
env > /tmp/env.txt
/bin/busybox true
exit 7
"""


def test_the_copied_launcher_traces_a_workload_in_a_busybox_only_chroot(
    busybox_root: Path,
) -> None:
    launcher = busybox_root / "containerscan" / "bin" / "containerscan-run"
    assert not needs_interpreter(launcher)  # static: nothing from the image it runs in
    (busybox_root / "workload.sh").write_text(WORKLOAD)
    env = {
        "PATH": "/bin",
        "MONITORING_MODE": "balanced",
        "APP_SETTING": "kept as is",
        "QUALYS_ACCESS_TOKEN": "for-the-sidecar-only",  # no QUALYS_POD: the sink stays off
    }
    result = in_chroot(
        busybox_root,
        "/containerscan/bin/containerscan-run",
        "--events-file",
        "/tmp/events.jsonl",
        "--",
        "/bin/sh",
        "/workload.sh",
        env=env,
    )
    assert result.returncode == 7, result.stderr  # the workload's own exit status
    logs = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    started = next(log for log in logs if log["message"] == "workload started under the tracer")
    assert started["seccomp"] is True and "openat" in started["watched"]  # balanced policy
    events = [
        json.loads(line)
        for line in (busybox_root / "tmp" / "events.jsonl").read_text().splitlines()
    ]
    writes = [ev for ev in events if ev.get("path") == "/etc/app.conf"]
    assert writes and writes[0]["rule"] == "fim:/etc" and writes[0]["process"] == "/bin/busybox"
    assert (busybox_root / "etc" / "app.conf").read_text() == "configured\n"
    assert not (busybox_root / "tmp" / "ldconfig-ran").exists()  # nothing of the image ran
    # The workload's environment is the application's: nothing added by the launcher, and
    # the sidecar's secret withheld.
    seen = dict(
        line.split("=", 1)
        for line in (busybox_root / "tmp" / "env.txt").read_text().splitlines()
        if "=" in line
    )
    added = set(seen) - set(env) - {"PWD", "SHLVL"}  # the last two set by busybox sh itself
    assert added == set(), added
    assert "QUALYS_ACCESS_TOKEN" not in seen
    assert all(seen[key] == value for key, value in env.items() if key != "QUALYS_ACCESS_TOKEN")


def test_the_launcher_without_a_command_says_how_to_use_it(busybox_root: Path) -> None:
    result = in_chroot(
        busybox_root, "/containerscan/bin/containerscan-run", "--", env={"PATH": "/bin"}
    )
    assert result.returncode == 2
    assert "usage:" in result.stderr and "-- COMMAND" in result.stderr
