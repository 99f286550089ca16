"""Static security checks on the three packages: bandit, and no subprocess through a shell.

bandit runs as a subprocess (it is a dev tool, not a dependency). A finding is accepted only
where the line says why: bandit's own `# nosec B<nnn>`, or ruff's `noqa: S<nnn>` (ruff's
flake8-bandit rules carry bandit's numbers, S105 == B105, and ruff already runs on every
commit). Three checks are skipped for the whole code base, for the reasons in SKIPPED.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("check", "sidecar", "securityhub")
# Whole-code-base decisions, the same ones ruff.toml makes for S101 and S603.
SKIPPED = {
    "B101": "assert narrows Optional types for mypy; inputs are validated by raising",
    "B404": "importing subprocess is not a finding; how it is called is (B602-B607 stay on)",
    "B603": "subprocess with an argument list and no shell is the project's rule",
}
_RUFF_NOQA = re.compile(r"#\s*noqa:?\s*([A-Z0-9, ]+)")


def _bandit() -> list[str]:
    if shutil.which("bandit") is None:
        try:
            import bandit  # noqa: F401
        except ImportError:
            pytest.skip("bandit is not installed (pip install bandit; the dev extra)")
    return [sys.executable, "-m", "bandit"]


def _ruff_codes(line: str) -> set[str]:
    match = _RUFF_NOQA.search(line)
    if not match:
        return set()
    return {code.strip() for code in match.group(1).split(",") if code.strip()}


def _annotated(result: dict, lines: list[str]) -> bool:
    wanted = "S" + result["test_id"][1:]
    for number in result.get("line_range") or [result["line_number"]]:
        if 0 < number <= len(lines) and wanted in _ruff_codes(lines[number - 1]):
            return True
    return False


def test_bandit_finds_nothing_unexplained() -> None:
    skipped = ",".join(sorted(SKIPPED))
    command = [*_bandit(), "-q", "-r", *PACKAGES, "-f", "json", "-s", skipped]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert not report["errors"], report["errors"]
    scanned = [name for name in report["metrics"] if name != "_totals"]
    assert len(scanned) > 50  # the packages were really scanned
    unexplained = []
    for result in report["results"]:
        path = Path(result["filename"])
        relative = str(path.relative_to(REPO) if path.is_absolute() else path)
        lines = (REPO / relative).read_text(encoding="utf-8").splitlines()
        if _annotated(result, lines):
            continue
        unexplained.append(
            f"{relative}:{result['line_number']}: {result['test_id']} {result['issue_text']}"
        )
    assert not unexplained, "\n".join(unexplained)


# --------------------------------------------------------------- no shell, anywhere

_SHELL_CALLS = {("os", "system"), ("os", "popen"), ("os", "popen2"), ("commands", "getoutput")}
_SUBPROCESS = {"run", "Popen", "call", "check_call", "check_output", "getoutput",
               "getstatusoutput"}  # fmt: skip


def shell_uses(source: str, filename: str = "<source>") -> list[str]:
    """Every place `source` starts a process through a shell: `shell=<anything but False>`,
    os.system / os.popen, subprocess.getoutput / getstatusoutput (which always use one)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = (
            func.value.id
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            else ""
        )
        where = f"{filename}:{node.lineno}"
        if (owner, name) in _SHELL_CALLS or name in ("getoutput", "getstatusoutput"):
            found.append(f"{where}: {owner + '.' if owner else ''}{name}")
        for keyword in node.keywords:
            if keyword.arg == "shell" and not (
                isinstance(keyword.value, ast.Constant) and keyword.value.value is False
            ):
                found.append(f"{where}: {name}(shell=...)")
        if name == "create_subprocess_shell":
            found.append(f"{where}: asyncio.create_subprocess_shell")
    return found


def test_the_scan_catches_every_form() -> None:
    source = (
        "import os, subprocess\n"
        "subprocess.run('ls', shell=True)\n"
        "subprocess.Popen(['ls'], shell=flag)\n"
        "os.system('ls')\n"
        "os.popen('ls')\n"
        "subprocess.getoutput('ls')\n"
        "subprocess.run(['ls'], shell=False)\n"
        "subprocess.run(['ls'])\n"
    )
    assert [hit.split(": ", 1)[1] for hit in shell_uses(source)] == [
        "run(shell=...)", "Popen(shell=...)", "os.system", "os.popen", "subprocess.getoutput",
    ]  # fmt: skip


def test_no_process_is_started_through_a_shell() -> None:
    files = [p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))]
    assert len(files) > 50
    found = []
    for path in files:
        found += shell_uses(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert not found, "\n".join(found)
