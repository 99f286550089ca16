"""Differential tests: the orderings against independent implementations, on real strings.

Oracles the project does not control:
- dpkg: Debian's own `apt_pkg.version_compare` (python3-apt, run under Debian's python3),
  else `dpkg --compare-versions` on a sample; real strings: Debian bookworm's package lists
  (tests/data/versions/debian-bookworm.txt) plus every advisory version dpkg can read.
- PEP 440: `packaging.version`, on every version string of the shipped PyPA records.
- apk: apk-tools' own test vectors, 2.x and 3.x (tests/data/versions/apk*-cases.tsv),
  and the real fix strings of the shipped Alpine secdb.
"""

from __future__ import annotations

import functools
import itertools
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.version import InvalidVersion, Version

from check.builtin.versions import (
    VersionError,
    compare_apk,
    compare_apk2,
    compare_apk3,
    compare_dpkg,
    compare_pep440,
    validate_apk2,
    validate_apk3,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "versions"
DEBIAN_PYTHON = "/usr/bin/python3"  # Debian's interpreter, where python3-apt lives
PAIRS = 20000
_APT_ORACLE = (
    "import sys, apt_pkg\n"
    "apt_pkg.init_system()\n"
    "for line in sys.stdin:\n"
    "    a, b = line.split()\n"
    "    r = apt_pkg.version_compare(a, b)\n"
    "    print((r > 0) - (r < 0))\n"
)


def corpus(name: str) -> list[str]:
    lines = (DATA / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def pairs(versions: list[str], count: int, seed: int = 13) -> list[tuple[str, str]]:
    """Seeded random pairs plus every neighbour pair of the list (close calls)."""
    rng = random.Random(seed)
    chosen = [(rng.choice(versions), rng.choice(versions)) for _ in range(count)]
    return chosen + list(itertools.pairwise(versions))


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


def _dpkg_readable(version: str) -> bool:
    try:
        compare_dpkg(version, version)
    except VersionError:
        return False
    return True


def _apt_pkg_available() -> bool:
    if not Path(DEBIAN_PYTHON).exists():
        return False
    probe = subprocess.run([DEBIAN_PYTHON, "-c", "import apt_pkg"], capture_output=True)
    return probe.returncode == 0


def test_dpkg_agrees_with_debian_on_real_versions() -> None:
    versions = corpus("debian-bookworm.txt")
    extra = [v for v in corpus("pypi-osv.txt") + corpus("alpine-secdb.txt") if _dpkg_readable(v)]
    assert len(versions) >= 4000 and len(extra) >= 10000
    checked = pairs(versions, PAIRS) + pairs(extra, PAIRS // 2, seed=14)
    ours = [_sign(compare_dpkg(a, b)) for a, b in checked]
    if _apt_pkg_available():
        run = subprocess.run([DEBIAN_PYTHON, "-c", _APT_ORACLE], check=True, text=True,
                             input="".join(f"{a} {b}\n" for a, b in checked),
                             capture_output=True)
        theirs = [int(x) for x in run.stdout.split()]
    elif shutil.which("dpkg"):
        checked, ours = checked[:300], ours[:300]
        theirs = [0 if subprocess.run(["dpkg", "--compare-versions", a, "eq", b]).returncode == 0
                  else (-1 if subprocess.run(["dpkg", "--compare-versions", a, "lt", b])
                        .returncode == 0 else 1) for a, b in checked]
    else:
        pytest.skip("neither python3-apt nor dpkg is installed")
    disagreements = [(a, b, o, t) for (a, b), o, t in zip(checked, ours, theirs, strict=True)
                     if o != t]
    print(f"dpkg: {len(checked)} pairs of real versions, {len(disagreements)} disagreements")
    assert len(theirs) == len(checked)
    assert disagreements == []


def test_pep440_is_packaging_on_every_advisory_version() -> None:
    versions = corpus("pypi-osv.txt")
    readable, unreadable = [], []
    for version in versions:
        try:
            Version(version)
            readable.append(version)
        except InvalidVersion:
            unreadable.append(version)
    assert len(readable) >= 12900 and unreadable  # joblib's 0.3.2d.dev, rope's 0.6m3, ...
    for version in unreadable:
        with pytest.raises(VersionError):
            compare_pep440(version, "1.0")
    checked = pairs(sorted(readable, key=Version), PAIRS)
    disagreements = [(a, b) for a, b in checked
                     if _sign(compare_pep440(a, b)) != ((Version(a) > Version(b))
                                                        - (Version(a) < Version(b)))]
    print(f"PEP 440: {len(checked)} pairs, {len(disagreements)} disagreements")
    assert disagreements == []


def _vectors(name: str) -> list[list[str]]:
    rows = [line.split("\t") for line in (DATA / name).read_text().splitlines()
            if line and not line.startswith("#")]
    assert len(rows) > 700
    return rows


_RELATIONS = {"<": lambda r: r < 0, ">": lambda r: r > 0, "=": lambda r: r == 0,
              "<=": lambda r: r <= 0, ">=": lambda r: r >= 0}


@pytest.mark.parametrize(("table", "compare", "validate"), [
    ("apk2-cases.tsv", compare_apk2, validate_apk2),
    ("apk3-cases.tsv", compare_apk3, validate_apk3),
], ids=["apk-tools-2", "apk-tools-3"])
def test_apk_orderings_pass_apk_tools_own_vectors(table, compare, validate) -> None:
    failures = []
    rows = _vectors(table)
    for row in rows:
        if row[0] in ("valid", "invalid"):
            if validate(row[1]) != (row[0] == "valid"):
                failures.append(row)
            continue
        a, relation, b = row
        negated = relation.startswith("not ")
        holds = _RELATIONS[relation.removeprefix("not ")](compare(a, b))
        if holds == negated:
            failures.append(row)
    print(f"{table}: {len(rows)} vectors, {len(failures)} failures")
    assert failures == []


def test_apk_differences_the_audit_found() -> None:
    assert compare_apk("1.05", "1.1") < 0  # leading zero: compared as strings, not 5 > 1
    assert compare_apk("1.0", "1.0-r0") < 0  # a missing -rN sorts before -r0
    assert compare_apk("0.1_pre2~1234abcd", "0.1_pre2~1234abce") < 0  # apk 3 commit hashes
    assert compare_apk("0.1_pre2~1234abcd-r1", "0.1_pre2-r1") > 0
    for malformed in ("2.7.16-33", "4.10-1-r1", "1.11-20-r0", "57-1-r2"):
        with pytest.raises(VersionError):
            compare_apk(malformed, "1.0")
    # Malformed strings apk 2.x accepts (real secdb fix versions) are compared as it does.
    assert compare_apk("1.0.4.-r0", "1.0.4-r0") != 0
    assert compare_apk("10.2.22.r0", "10.2.26.r0") < 0


def test_apk_on_every_real_secdb_fix_string() -> None:
    versions = corpus("alpine-secdb.txt")
    rejected = sorted(v for v in versions if not (validate_apk3(v) or validate_apk2(v)))
    assert rejected == ["1.11-20-r0", "2.7.16-33", "4.10-1-r1", "57-1-r2"]
    readable = [v for v in versions if v not in rejected]
    ordered = sorted(readable, key=functools.cmp_to_key(compare_apk))
    # Where both apks accept a pair, they agree on it (the rules changed only at the edges).
    both = [v for v in ordered if validate_apk2(v) and validate_apk3(v)]
    checked = pairs(both, PAIRS)
    assert [_sign(compare_apk2(a, b)) for a, b in checked] == \
        [_sign(compare_apk3(a, b)) for a, b in checked]
