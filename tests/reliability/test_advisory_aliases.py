"""A hostile Alpine secdb file ("billion laughs" aliases) is refused, never expanded."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from check.builtin.advisories import AdvisoryDatabase, AdvisoryDatabaseError
from check.builtin.inventory import APK, InstalledPackage, OsInfo
from securityhub.errors import ContainerscanError
from tests.reliability.sidecar_world import FIGURES

# Nine levels of nine: 9**9 (387 million) "lol" strings once walked, from under 1 KB.
LEVELS = 9


def billion_laughs() -> str:
    lines = ["distroversion: v3.10", "reponame: main", "lol0: &l0 [lol]"]
    for level in range(1, LEVELS + 1):
        lines.append(f"lol{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    lines += ["packages:", "  - pkg:", "      name: musl", "      secfixes:",
              f"        1.1.22-r3: *l{LEVELS}"]  # fmt: skip
    return "\n".join(lines) + "\n"


GOOD = textwrap.dedent("""\
    distroversion: v3.10
    reponame: main
    urlprefix: http://dl-cdn.alpinelinux.org/alpine?a=1&b=2
    packages:
      - pkg:
          name: musl
          secfixes:
            1.1.22-r3:
              - CVE-2019-14697
    """)


def _alpine(tmp: Path, text: str) -> AdvisoryDatabase:
    (tmp / "v3.10").mkdir(parents=True)
    (tmp / "v3.10" / "main.yaml").write_text(text)
    return AdvisoryDatabase(tmp)


MUSL = InstalledPackage("musl", "1.1.22-r2", APK, "lib/apk/db/installed")
ALPINE = OsInfo(id="alpine", version_id="3.10.2")


def test_a_billion_laughs_secdb_is_refused_naming_the_file(tmp_path: Path) -> None:
    text = billion_laughs()
    assert len(text) < 1024
    db = _alpine(tmp_path, text)
    with pytest.raises(AdvisoryDatabaseError) as caught:
        db.match(MUSL, ALPINE)
    error = caught.value
    assert isinstance(error, ContainerscanError)
    assert str(tmp_path / "v3.10" / "main.yaml") in error.message
    assert "alias" in error.message and "line 4" in error.message  # the first alias
    assert error.remediation and "db update" in error.remediation


def test_an_ampersand_in_a_value_is_not_an_anchor(tmp_path: Path) -> None:
    # The pre-check only looks for "&": a real file with one must still load and match.
    db = _alpine(tmp_path, GOOD)
    [match] = db.match(MUSL, ALPINE)
    assert match.advisory.id == "CVE-2019-14697" and match.fixed_version == "1.1.22-r3"


def test_the_refusal_is_cheap_under_a_memory_cap(tmp_path: Path) -> None:
    # In a child capped at 512 MB of address space, the hostile file must be refused with
    # the error, not a MemoryError or a kill: nothing was expanded.
    _alpine(tmp_path, billion_laughs())
    code = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({512 << 20}, {512 << 20}))
        from check.builtin.advisories import AdvisoryDatabase, AdvisoryDatabaseError
        from check.builtin.inventory import APK, InstalledPackage, OsInfo
        db = AdvisoryDatabase(__import__("pathlib").Path({str(tmp_path)!r}))
        try:
            db.match(InstalledPackage("musl", "1.1.22-r2", APK, "lib/apk/db/installed"),
                     OsInfo(id="alpine", version_id="3.10.2"))
        except AdvisoryDatabaseError as exc:
            print("refused:", exc.message)
            sys.exit(0)
        sys.exit(5)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused:" in done.stdout and "alias" in done.stdout
    FIGURES["advisory aliases"] = (f"a {len(billion_laughs())}-byte billion-laughs secdb "
                                   f"(9**{LEVELS} leaves) refused under a 512 MB cap")
