"""OSV evaluation on the real PyPA and Alpine records: the audit's false positives and misses.

Each case is a real record shipped in check/quickstart/advisories (PyPA advisory database,
Alpine secdb), matched as a scan would match it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from check.builtin.advisories import AdvisoryDatabase
from check.builtin.commands import db
from check.builtin.inventory import InstalledPackage, OsInfo

ALPINE_3_11 = OsInfo("alpine", "3.11.13")


def _pip(name: str, version: str) -> InstalledPackage:
    return InstalledPackage(name=name, version=version, package_manager="pip",
                            file_path=f"usr/lib/python3/site-packages/{name}-{version}.dist-info/"
                                      "METADATA")


def _apk(name: str, version: str) -> InstalledPackage:
    return InstalledPackage(name=name, version=version, package_manager="apk",
                            file_path="lib/apk/db/installed", source_name=name)


@pytest.fixture(scope="module")
def pypa(advisories: Path) -> AdvisoryDatabase:
    return AdvisoryDatabase(advisories / "pypa-osv")


@pytest.fixture(scope="module")
def secdb(advisories: Path) -> AdvisoryDatabase:
    return AdvisoryDatabase(advisories / "alpine-secdb")


def _withdrawn_records(root: Path) -> list[dict]:
    records = []
    for path in sorted((root / "pypa-osv" / "vulns").glob("*/*.yaml")):
        if b"\nwithdrawn:" in path.read_bytes():
            records.append(yaml.safe_load(path.read_text()))
    return records


def test_withdrawn_records_never_match(pypa: AdvisoryDatabase, advisories: Path) -> None:
    records = _withdrawn_records(advisories)
    names = {a["package"]["name"] for r in records for a in r["affected"]}
    assert len(records) == 10 and {"aiohttp", "redis", "selenium", "ansible"} <= names
    checked = 0
    for record in records:
        for affected in record["affected"]:
            listed = [str(v) for v in affected.get("versions") or []] or ["1.0"]
            for version in [*listed[-3:], "99.0"]:  # the newest listed, and a future release
                matched = {m.advisory.id for m in pypa.match(
                    _pip(affected["package"]["name"], version), None)}
                assert record["id"] not in matched
                checked += 1
    assert checked >= 30


def test_db_info_counts_the_withdrawn_records(advisories: Path) -> None:
    result = CliRunner().invoke(db, ["info", "--vuln-db", str(advisories)])
    assert result.exit_code == 0, result.output
    assert "withdrawn: 10 (ignored when matching)" in result.output


def test_an_unreadable_fixed_never_widens_the_range(pypa: AdvisoryDatabase) -> None:
    # steam PYSEC-2019-125: fixed "2019-09-12"; binderhub PYSEC-2021-371: fixed "0.2.0-n653".
    assert "PYSEC-2019-125" not in {m.advisory.id for m in pypa.match(_pip("steam", "1.4.4"),
                                                                       None)}
    assert "PYSEC-2021-371" not in {m.advisory.id for m in pypa.match(
        _pip("binderhub", "1.0.0"), None)}


def test_an_unparseable_secdb_fix_is_skipped_as_apk_would(secdb: AdvisoryDatabase) -> None:
    # python2 `2.7.16-33` and xen `4.10-1-r1` are strings apk itself rejects (v3.11/main.yaml).
    python2 = {m.advisory.id for m in secdb.match(_apk("python2", "2.7.18-r0"), ALPINE_3_11)}
    assert not {"CVE-2019-16056", "CVE-2019-16935"} & python2
    xen = {m.advisory.id for m in secdb.match(_apk("xen", "4.13.4-r0"), ALPINE_3_11)}
    assert not {"CVE-2018-8897", "CVE-2018-10982", "CVE-2018-10981"} & xen
    # phpmyadmin `4.8.0.-r1` is malformed but apk 2.x accepts it: compared as apk does, it
    # fixes CVE-2018-10188 for 4.9.x and not for 4.7.x (v3.11/community.yaml).
    assert not secdb.match(_apk("phpmyadmin", "4.9.7-r0"), ALPINE_3_11)
    assert {m.advisory.id: m.fixed_version for m in secdb.match(
        _apk("phpmyadmin", "4.7.9-r0"), ALPINE_3_11)}["CVE-2018-10188"] == "4.8.0.-r1"
    # The readable fixes of the same packages still match an old installed version.
    old = {m.advisory.id: m.fixed_version
           for m in secdb.match(_apk("python2", "2.7.15-r0"), ALPINE_3_11)}
    assert old["CVE-2019-9636"] == "2.7.16-r1"
    assert "CVE-2019-16056" not in old


def test_a_version_that_is_not_pep440_matches_the_versions_list(pypa: AdvisoryDatabase) -> None:
    joblib = {m.advisory.id for m in pypa.match(_pip("joblib", "0.3.2d"), None)}
    rope = {m.advisory.id for m in pypa.match(_pip("rope", "0.6m3"), None)}
    assert joblib and rope
    assert not {m.advisory.id for m in pypa.match(_pip("rope", "0.6m99"), None)}
