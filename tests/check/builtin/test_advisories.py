"""Advisory loading and matching: OSV range semantics, CVSS, the real PyPA and Alpine data."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from check.builtin.advisories import (
    AdvisoryDatabase,
    AdvisoryDatabaseError,
    Affected,
    Range,
    affects,
    cvss3_base_score,
    parse_osv,
    severity_from_score,
)
from check.builtin.inventory import InstalledPackage, OsInfo
from check.builtin.versions import compare_pep440, compare_semver
from securityhub.findings import Severity
from tests.check.builtin import samples


def _pip(name: str, version: str) -> InstalledPackage:
    return InstalledPackage(name=name, version=version, package_manager="pip",
                            file_path=f"site-packages/{name}-{version}.dist-info/METADATA")


def _apk(name: str, version: str, origin: str) -> InstalledPackage:
    return InstalledPackage(name=name, version=version, package_manager="apk",
                            file_path="lib/apk/db/installed", source_name=origin)


def _events(*events: tuple[str, str]) -> Affected:
    return Affected("PyPI", "x", ranges=(Range("ECOSYSTEM", tuple(events)),))


# ------------------------------------------------------------------------- range events


@pytest.mark.parametrize(("version", "expected"), [
    ("0.9", (False, None)), ("1.0", (True, "1.2")), ("1.1", (True, "1.2")),
    ("1.2", (False, None)), ("2.0", (True, "2.0.1")), ("2.0.1", (False, None)),
])
def test_introduced_and_fixed_pairs(version, expected):
    affected = _events(("introduced", "1.0"), ("fixed", "1.2"),
                       ("introduced", "2.0"), ("fixed", "2.0.1"))
    assert affects(affected, version, compare_pep440) == expected


def test_events_are_sorted_before_evaluation():
    affected = _events(("fixed", "2.0.1"), ("introduced", "2.0"), ("fixed", "1.2"),
                       ("introduced", "0"))
    assert affects(affected, "1.5", compare_pep440) == (False, None)
    assert affects(affected, "1.1", compare_pep440) == (True, "1.2")


def test_last_affected_includes_the_version_and_has_no_fix():
    affected = _events(("introduced", "0"), ("last_affected", "1.11.0"))
    assert affects(affected, "1.11.0", compare_pep440) == (True, None)
    assert affects(affected, "1.11.1", compare_pep440) == (False, None)


def test_limit_bounds_the_range():
    affected = _events(("introduced", "0"), ("limit", "3.0"))
    assert affects(affected, "2.9", compare_pep440) == (True, None)
    assert affects(affected, "3.0", compare_pep440) == (False, None)


def test_versions_list_matches_exactly_and_git_ranges_are_ignored():
    doc = {"id": "X-1", "affected": [{
        "package": {"ecosystem": "npm", "name": "left-pad"},
        "ranges": [{"type": "GIT", "repo": "https://example.invalid/r",
                    "events": [{"introduced": "0"}, {"fixed": "abc123"}]}],
        "versions": ["1.0.0", "1.0.1"]}]}
    advisory = parse_osv(doc, "inline")
    affected = advisory.affected[0]
    assert affected.ranges == ()
    assert affects(affected, "1.0.1", compare_semver) == (True, None)
    assert affects(affected, "1.0.2", compare_semver) == (False, None)


def test_unreadable_installed_version_is_not_a_match():
    affected = _events(("introduced", "0"), ("fixed", "2.0"))
    assert affects(affected, "not a version", compare_pep440) == (False, None)


# ---------------------------------------------------------------------------------- CVSS


@pytest.mark.parametrize(("vector", "score"), [
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
    ("CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N", 5.5),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5),
    ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
])
def test_cvss3_base_scores_match_nvd(vector, score):
    assert cvss3_base_score(vector) == score


def test_severity_ratings():
    assert [severity_from_score(s) for s in (0, 0.1, 3.9, 4.0, 6.9, 7.0, 8.9, 9.0, 10)] == [
        Severity.INFORMATIONAL, Severity.LOW, Severity.LOW, Severity.MEDIUM, Severity.MEDIUM,
        Severity.HIGH, Severity.HIGH, Severity.CRITICAL, Severity.CRITICAL]


def test_ghsa_style_label_is_used_without_a_vector():
    advisory = parse_osv({"id": "GHSA-x", "database_specific": {"severity": "MODERATE"}}, "x")
    assert advisory.severity is Severity.MEDIUM


# --------------------------------------------------------------------- the real data set


@pytest.fixture(scope="module")
def database(advisories) -> AdvisoryDatabase:
    return AdvisoryDatabase(advisories)


def _ids(matches) -> dict[str, str | None]:
    return {m.advisory.cves[0] if m.advisory.cves else m.advisory.id: m.fixed_version
            for m in matches}


def test_jinja2_2_7_1(database):
    matches = database.match(_pip("Jinja2", "2.7.1"), None)
    assert _ids(matches) == samples.JINJA2_EXPECTED
    assert {m.advisory.id for m in matches} == {
        "PYSEC-2014-8", "PYSEC-2014-82", "PYSEC-2019-217", "PYSEC-2019-220", "PYSEC-2021-66"}


def test_fixed_jinja2_matches_nothing(database):
    assert database.match(_pip("jinja2", "3.1.4"), None) == []


def test_pep503_names_match(database):
    assert _ids(database.match(_pip("JINJA_2".replace("_", ""), "2.11.2"), None)) == {
        "CVE-2020-28493": "2.11.3"}


def test_last_affected_in_real_data(database):
    # pypa-osv/vulns/py/PYSEC-2022-42969.yaml: introduced 0, last_affected 1.11.0.
    matches = database.match(_pip("py", "1.11.0"), None)
    assert [(m.advisory.id, m.fixed_version) for m in matches] == [("PYSEC-2022-42969", None)]


def test_alpine_secdb_by_origin_and_branch(database):
    alpine_311 = OsInfo(id="alpine", version_id="3.11.3")
    matches = database.match(_apk("libssl1.1", "1.1.1d-r0", "openssl"), alpine_311)
    assert _ids(matches) == samples.ALPINE_OPENSSL_EXPECTED
    assert all(m.advisory.source == "alpine-secdb" for m in matches)
    assert database.match(_apk("libssl1.1", "1.1.1d-r3", "openssl"), alpine_311) == []


def test_alpine_secdb_branch_is_respected(database):
    # v3.3 lists bind 9.10.4_p8-r1 fixes; a 3.11 system must not be matched against v3.3.
    alpine_33 = OsInfo(id="alpine", version_id="3.3.3")
    on_33 = _ids(database.match(_apk("bind", "9.10.4_p8-r0", "bind"), alpine_33))
    assert "CVE-2017-3142" in on_33
    text = (database.root / "alpine-secdb" / "v3.11" / "main.yaml").read_text()
    doc = yaml.safe_load(text)
    bind_311 = [p["pkg"] for p in doc["packages"] if p["pkg"]["name"] == "bind"]
    cves_311 = {c for p in bind_311 for ids in p["secfixes"].values() for c in ids}
    on_311 = _ids(database.match(_apk("bind", "9.10.4_p8-r0", "bind"),
                                 OsInfo(id="alpine", version_id="3.11.0")))
    assert set(on_311) <= cves_311


def test_zero_fix_means_never_affected(database):
    # v3.8/main.yaml lists db's Oracle Berkeley DB CVEs under "0": whitelisted, never matched.
    matches = database.match(_apk("db", "5.3.28-r0", "db"), OsInfo(id="alpine",
                                                                   version_id="3.8.4"))
    assert matches == []


def test_osv_zip_archive_is_read_in_place(advisories, tmp_path):
    """An all.zip like OSV publishes (one JSON per record), built from the shared YAML."""
    archive = tmp_path / "osv" / "PyPI.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for path in sorted((advisories / "pypa-osv" / "vulns").glob("[j-w]*/*.yaml")):
            record = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
            out.writestr(f"{record['id']}.json", json.dumps(record, default=str))
    database = AdvisoryDatabase(tmp_path)
    assert _ids(database.match(_pip("jinja2", "2.7.1"), None)) == samples.JINJA2_EXPECTED
    assert _ids(database.match(_pip("werkzeug", "2.3.6"), None)) == samples.WERKZEUG_EXPECTED
    assert database.records_indexed > 100
    database.close()


def test_broken_record_names_the_file(tmp_path):
    (tmp_path / "bad.json").write_text('{"id": "X-1", "affected": [{"package": {"name": "q"')
    database = AdvisoryDatabase(tmp_path)
    with pytest.raises(AdvisoryDatabaseError, match=r"bad.json is not valid JSON"):
        database.match(_pip("q", "1.0"), None)


def test_missing_database_directory(tmp_path):
    with pytest.raises(AdvisoryDatabaseError, match="does not exist"):
        AdvisoryDatabase.from_config(tmp_path / "missing", environ={})


def test_index_is_lazy_and_parsing_is_on_demand(advisories):
    database = AdvisoryDatabase(advisories)
    assert database._index is None
    database.match(_pip("jinja2", "2.7.1"), None)
    parsed_files = {ref.path for ref in database._parsed}
    assert parsed_files and all("jinja2" in str(p) or "secdb" in str(p) for p in parsed_files)
    assert len(parsed_files) < 10


def test_fingerprint_changes_with_the_data(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"id": "A-1"}))
    before = AdvisoryDatabase(tmp_path).fingerprint()
    (tmp_path / "b.json").write_text(json.dumps({"id": "B-1"}))
    assert AdvisoryDatabase(Path(tmp_path)).fingerprint() != before


def test_files_that_are_not_advisories_are_skipped(tmp_path):
    (tmp_path / "ci.yaml").write_text("jobs:\n  - name: jinja2\n    run: make\n")
    (tmp_path / "PYSEC-1.json").write_text(json.dumps({
        "id": "PYSEC-1", "affected": [{"package": {"ecosystem": "PyPI", "name": "jinja2"},
                                       "versions": ["2.0"]}]}))
    database = AdvisoryDatabase(tmp_path)
    assert [m.advisory.id for m in database.match(_pip("jinja2", "2.0"), None)] == ["PYSEC-1"]


def test_ubuntu_priority_label():
    advisory = parse_osv({"id": "UBUNTU-CVE-1", "severity": [
        {"type": "Ubuntu", "score": "high"}]}, "x")
    assert advisory.severity is Severity.HIGH


def test_debian_records_match_binary_packages_through_their_source(tmp_path):
    """A DSA-shaped OSV record for source `openssl` hits libssl3 of this machine's dpkg db."""
    from check.builtin.inventory import parse_dpkg_status

    status = Path("/var/lib/dpkg/status")
    if not status.is_file():
        pytest.skip("needs a Debian dpkg database")
    packages = parse_dpkg_status(status.read_text(), "var/lib/dpkg/status", None)
    from_openssl = [p for p in packages if p.source_name == "openssl"]
    if not from_openssl:
        pytest.skip("no package built from openssl is installed here")
    installed = from_openssl[0].source_version
    for release, fixed in (("12", installed + "+fix1"), ("11", installed + "+fix1")):
        (tmp_path / f"DSA-{release}.json").write_text(json.dumps({
            "id": f"DSA-{release}", "aliases": [f"CVE-2099-{release}"],
            "affected": [{"package": {"ecosystem": f"Debian:{release}", "name": "openssl"},
                          "ranges": [{"type": "ECOSYSTEM", "events": [
                              {"introduced": "0"}, {"fixed": fixed}]}]}]}))
    database = AdvisoryDatabase(tmp_path)
    bookworm = OsInfo(id="debian", version_id="12")
    for package in from_openssl:
        matches = database.match(package, bookworm)
        assert [(m.advisory.id, m.fixed_version) for m in matches] == [
            ("DSA-12", installed + "+fix1")]


@st.composite
def _intervals(draw):
    """Disjoint [introduced, fixed) intervals over integer versions, maybe open-ended."""
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=60), min_size=1, max_size=8)))
    pairs = [(cuts[i], cuts[i + 1] if i + 1 < len(cuts) else None)
             for i in range(0, len(cuts), 2)]
    return pairs


@given(_intervals(), st.integers(min_value=0, max_value=70), st.randoms())
def test_range_evaluation_agrees_with_intervals(pairs, installed, rnd):
    events = []
    for low, high in pairs:
        events.append(("introduced", f"{low}.0"))
        if high is not None:
            events.append(("fixed", f"{high}.0"))
    rnd.shuffle(events)  # OSV does not promise an order; evaluation sorts
    expected_hit = any(low <= installed and (high is None or installed < high)
                       for low, high in pairs)
    expected_fix = next((f"{high}.0" for low, high in pairs
                         if low <= installed and high is not None and installed < high), None)
    affected = Affected("PyPI", "x", ranges=(Range("ECOSYSTEM", tuple(events)),))
    assert affects(affected, f"{installed}.0", compare_pep440) == (
        expected_hit, expected_fix if expected_hit else None)


def test_saved_index_is_used_until_the_data_changes(advisories, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "db"
    shutil.copytree(advisories / "pypa-osv" / "vulns" / "jinja2", root / "jinja2")
    built = AdvisoryDatabase(root)
    built.save_index()

    def must_not_build(self):
        raise AssertionError("the saved index should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(AdvisoryDatabase, "_build_index", must_not_build)
        loaded = AdvisoryDatabase(root)
        assert _ids(loaded.match(_pip("jinja2", "2.7.1"), None)) == samples.JINJA2_EXPECTED
        assert loaded.records_indexed == built.records_indexed == 5

    (root / "extra.json").write_text(json.dumps({"id": "X-1", "affected": [
        {"package": {"ecosystem": "PyPI", "name": "jinja2"}, "versions": ["2.7.1"]}]}))
    changed = AdvisoryDatabase(root)
    assert "X-1" in {m.advisory.id for m in changed.match(_pip("jinja2", "2.7.1"), None)}
    assert changed.records_indexed == 6


def test_corrupt_saved_index_is_rebuilt(tmp_path):
    (tmp_path / "A-1.json").write_text(json.dumps({"id": "A-1", "affected": [
        {"package": {"ecosystem": "PyPI", "name": "a"}, "versions": ["1"]}]}))
    (tmp_path / ".containerscan-index").write_text("{not json")
    assert [m.advisory.id for m in AdvisoryDatabase(tmp_path).match(_pip("a", "1"), None)] == [
        "A-1"]
