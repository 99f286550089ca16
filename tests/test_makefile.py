"""The two quick-start commands, on a Python that is externally managed as Debian's is.

Debian's own python3 carries `EXTERNALLY-MANAGED` in its standard library directory (PEP 668)
and pip refuses to install into it; without the python3-venv package, `python3 -m venv`
fails because ensurepip is missing. These tests build such a Python from the running one:
a copy of its executable in a prefix whose `lib/python3.X` links every entry of the real
standard library, plus the marker file (and, for the second case, without ensurepip). Then
the Makefile's `venv` target must give an environment pip installs into.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MARKER = "[externally-managed]\nError=this Python is managed by the distribution; use a venv\n"


def managed_python(root: Path, *, with_ensurepip: bool = True) -> Path:
    """A Python like Debian's: same interpreter, an EXTERNALLY-MANAGED standard library."""
    real = Path(os.path.realpath(sys.executable))
    stdlib = Path(sysconfig.get_paths(vars={"base": sys.base_prefix})["stdlib"])
    bindir, libdir = root / "bin", root / "lib" / stdlib.name
    bindir.mkdir(parents=True)
    libdir.mkdir(parents=True)
    python = bindir / "python3"
    shutil.copy2(real, python)  # a copy: through a link Python would find its real prefix
    for entry in stdlib.iterdir():
        if entry.name == "EXTERNALLY-MANAGED" or (entry.name == "ensurepip" and not with_ensurepip):
            continue
        (libdir / entry.name).symlink_to(entry)
    (libdir / "EXTERNALLY-MANAGED").write_text(MARKER, encoding="utf-8")
    return python


def tiny_wheel(directory: Path) -> Path:
    """A minimal valid wheel, so that pip can install something without any index."""
    path = directory / "newcomer_probe-1.0-py3-none-any.whl"
    files = {
        "newcomer_probe.py": "VALUE = 42\n",
        "newcomer_probe-1.0.dist-info/METADATA":
            "Metadata-Version: 2.1\nName: newcomer-probe\nVersion: 1.0\n",
        "newcomer_probe-1.0.dist-info/WHEEL":
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + "newcomer_probe-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr("newcomer_probe-1.0.dist-info/RECORD", record)
    return path


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *args],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def pip_install(python: Path, wheel: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "pip", "install", "--no-index", "--no-deps",
                           "--no-cache-dir", str(wheel)],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_make_venv_installs_where_the_system_python_refuses(tmp_path) -> None:
    python = managed_python(tmp_path / "debian")
    wheel = tiny_wheel(tmp_path)
    refused = pip_install(python, wheel)
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr, (
        "the stand-in Python should refuse pip installs as Debian's does")

    venv = tmp_path / "project-venv"
    result = make("venv", f"PYTHON3={python}", f"VENV={venv}")
    assert result.returncode == 0, result.stdout + result.stderr
    installed = pip_install(venv / "bin" / "python", wheel)
    assert installed.returncode == 0, installed.stderr
    assert probe(venv) == ["42", str(venv)]
    # A second `make venv` keeps the environment, and what was installed in it.
    again = make("venv", f"PYTHON3={python}", f"VENV={venv}")
    assert again.returncode == 0, again.stderr
    assert probe(venv) == ["42", str(venv)]


def probe(venv: Path) -> list[str]:
    result = subprocess.run([str(venv / "bin" / "python"), "-c",
                             "import newcomer_probe, sys; print(newcomer_probe.VALUE, sys.prefix)"],
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout.split()


def apt_get_stand_in(directory: Path, log: Path, stdlib: Path, *, works: bool) -> Path:
    """apt-get as the Makefile calls it: `install python3-venv` puts ensurepip in place."""
    source = Path(sysconfig.get_paths(vars={"base": sys.base_prefix})["stdlib"]) / "ensurepip"
    script = directory / "apt-get"
    action = f'ln -s "{source}" "{stdlib}/ensurepip"' if works else "exit 100"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{log}"\n'
        'case "$*" in *install*python3-venv*) ' + action + " ;; esac\n",
        encoding="utf-8")
    script.chmod(0o755)
    return script


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the Makefile installs Debian packages as root only")
@pytest.mark.parametrize("works", [True, False])
def test_make_venv_installs_python3_venv_when_missing(tmp_path, works: bool) -> None:
    python = managed_python(tmp_path / "debian", with_ensurepip=False)
    stdlib = next((tmp_path / "debian" / "lib").iterdir())
    log = tmp_path / "apt.log"
    apt_get = apt_get_stand_in(tmp_path, log, stdlib, works=works)
    venv = tmp_path / "project-venv"
    env = {**os.environ, "APT_GET": str(apt_get)}
    result = make("venv", f"PYTHON3={python}", f"VENV={venv}", env=env)
    assert "install -y -qq python3-venv" in log.read_text(encoding="utf-8")
    if works:
        assert result.returncode == 0, result.stdout + result.stderr
        assert (venv / "bin" / "pip").exists()
    else:
        assert result.returncode != 0
        assert "hint: install Debian's python3-venv" in result.stderr
        assert not venv.exists(), "a half-made environment must not be left behind"


def test_the_readme_has_exactly_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = quick_start.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = [line for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert ci == ["make test"]
    # The README says what they download and how long they take.
    assert re.search(r"\d+ MB", quick_start) and re.search(r"\d+ min", quick_start)


def test_the_makefile_never_installs_into_the_system_python() -> None:
    dry = make("-n", "-B", "demo", "test", "PYTHON3=python3")
    assert dry.returncode == 0, dry.stderr
    installs = [line for line in dry.stdout.splitlines() if "pip install" in line]
    assert installs and all(line.startswith((".venv/bin/python", ".tools/checkov/bin/python"))
                            for line in installs), installs
