"""Boot the arm64 guest that build.py made and return what its tests printed.

    python3 scripts/aarch64-vm/run.py [--cache DIR] [--console FILE] [--timeout S]

qemu-system-aarch64 (Debian: qemu-system-arm) emulates a `virt` machine with two
Cortex-A72 cores in software (TCG, no KVM: this machine is x86_64), boots Debian's arm64
kernel straight from `vmlinuz` with the initramfs as its root, and writes the serial console
to FILE. The guest runs the injection tests and powers off. Printed here: the guest's
result line (JSON); the exit status is 0 when every test passed, 1 when one did not, 2 when
the guest printed no result (boot failure, time-out: see the console file).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE.parents[1] / ".tools" / "aarch64-vm"
RESULT = "CONTAINERSCAN-AARCH64-RESULT"
BOOTED = "CONTAINERSCAN-AARCH64-BOOTED"
DEFAULT_TIMEOUT = 900.0
QEMU = "qemu-system-aarch64"


def qemu_argv(qemu: str, cache: Path, console: Path, select: str = "") -> list[str]:
    """`select`: a pytest -k expression for the guest (spaces written as +)."""
    append = "console=ttyAMA0 rdinit=/init panic=-1 quiet"
    if select:
        append += f" containerscan.select={select.replace(' ', '+')}"
    return [
        qemu,
        "-machine", "virt",
        "-cpu", "cortex-a72",
        "-smp", "2",
        "-m", "2048",
        "-accel", "tcg,thread=multi",
        "-nodefaults", "-nic", "none", "-display", "none", "-monitor", "none",
        "-serial", f"file:{console}",
        "-no-reboot",
        "-kernel", str(cache / "vmlinuz"),
        "-initrd", str(cache / "initramfs.cpio"),
        "-append", append,
    ]  # fmt: skip


def parse_console(text: str) -> dict | None:
    """The guest's result (the JSON after the marker), or None when it printed none."""
    for line in reversed(text.splitlines()):
        marker, _, doc = line.strip().partition(" ")
        if marker == RESULT:
            return json.loads(doc)
    return None


def boot(
    cache: Path, console: Path, timeout: float = DEFAULT_TIMEOUT, select: str = ""
) -> tuple[dict | None, float]:
    """Run the guest to its power-off; (its result, seconds from start to power-off)."""
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise FileNotFoundError(f"{QEMU} is not installed (Debian: qemu-system-arm)")
    console.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        subprocess.run(
            qemu_argv(qemu, cache, console, select),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pass  # qemu is killed; the console says how far it got
    seconds = time.monotonic() - started
    text = console.read_text(errors="replace") if console.exists() else ""
    return parse_console(text), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--console", type=Path)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    parser.add_argument("--select", default="", help="only the guest tests pytest -k selects")
    opts = parser.parse_args()
    cache = opts.cache.resolve()
    console = opts.console or cache / "console.log"
    result, seconds = boot(cache, console, opts.timeout, opts.select)
    if result is None:
        print(f"aarch64-vm: no result after {seconds:.0f} s; see {console}", file=sys.stderr)
        return 2
    print(json.dumps({**result, "vm_seconds": round(seconds, 1)}))
    return 0 if result["exitstatus"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
