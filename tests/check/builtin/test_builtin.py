"""BuiltinScanner end to end on images built from real files, against the real advisories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from check.builtin.scanner import FINDINGS_FILE, INVENTORY_FILE, BuiltinScanner, scan_reference
from check.scanner import ScanTarget
from securityhub.findings import EcrImage, SecretFinding, Severity, VulnerabilityFinding
from tests.check.builtin import samples
from tests.check.builtin.images import build_blobs, write_docker_archive, write_oci_layout


@pytest.fixture(scope="module")
def debian_layout(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("debian") / "layout"
    return write_oci_layout(root, [(build_blobs(samples.debian_layers()), "linux/amd64")])


@pytest.fixture(scope="module")
def alpine_archive(tmp_path_factory) -> Path:
    return write_docker_archive(tmp_path_factory.mktemp("alpine") / "alpine.tar",
                                samples.alpine_layers())


def _vulns(result) -> dict[str, VulnerabilityFinding]:
    return {f.vulnerability_id: f for f in result.findings if isinstance(f, VulnerabilityFinding)}


def test_debian_image_findings_match_the_hand_verified_advisories(debian_layout, advisories,
                                                                 tmp_path):
    result = scan_reference(f"oci-layout:{debian_layout}", vuln_db=advisories,
                            workdir=tmp_path)
    vulns = _vulns(result)
    jinja = {v: f for v, f in vulns.items() if f.packages[0].name.lower() == "jinja2"}
    werkzeug = {v: f for v, f in vulns.items() if f.packages[0].name.lower() == "werkzeug"}
    assert {v: f.packages[0].fixed_version for v, f in jinja.items()} == samples.JINJA2_EXPECTED
    assert {v: f.packages[0].fixed_version for v, f in werkzeug.items()} == \
        samples.WERKZEUG_EXPECTED
    # Nothing else: click was deleted by a whiteout, and dpkg has no advisories in the data.
    assert set(vulns) == set(samples.JINJA2_EXPECTED) | set(samples.WERKZEUG_EXPECTED)

    cve = werkzeug["CVE-2023-46136"]
    assert cve.severity is Severity.HIGH  # CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H
    assert cve.cvss[0].base_score == 7.5
    assert jinja["CVE-2014-1402"].severity is Severity.MEDIUM  # no severity: the default
    package = jinja["CVE-2014-1402"].packages[0]
    assert package.installed_version == "2.7.1"
    assert package.package_manager == "pip"
    assert package.file_path == "/usr/lib/python3/dist-packages/jinja2-2.7.1.dist-info/METADATA"
    assert package.layer and package.layer.startswith("sha256:")
    assert jinja["CVE-2014-1402"].resource.digest.startswith("sha256:")


def test_debian_image_secrets_are_found_and_masked(debian_layout, advisories, tmp_path):
    result = scan_reference(f"oci-layout:{debian_layout}", vuln_db=advisories,
                            workdir=tmp_path)
    secrets = sorted((f.rule_id, f.file_path, f.line) for f in result.findings
                     if isinstance(f, SecretFinding))
    assert secrets == [
        ("aws-access-key-id", "/app/config/.env", 3),
        ("aws-secret-access-key", "/app/config/.env", 4),
    ]
    raw = "\n".join(p.read_text() for p in result.raw_files)
    assert samples.FAKE_AWS_KEY_ID not in raw
    assert samples.FAKE_AWS_SECRET not in raw
    assert "AKIA****************" in raw


def test_raw_inventory_lists_every_package_with_its_layer(debian_layout, advisories, tmp_path):
    result = scan_reference(f"oci-layout:{debian_layout}", vuln_db=advisories,
                            workdir=tmp_path, scan_types=("pkg",))
    assert {p.name for p in result.raw_files} == {INVENTORY_FILE, FINDINGS_FILE}
    inventory = json.loads((tmp_path / INVENTORY_FILE).read_text())
    managers = {p["package_manager"] for p in inventory["packages"]}
    assert {"dpkg", "pip"} <= managers
    names = {p["name"].lower() for p in inventory["packages"] if p["package_manager"] == "pip"}
    assert names == {"jinja2", "werkzeug"}  # click-7.0 was removed by a whiteout
    assert inventory["os"]["id"] == "debian"
    assert all(p["layer"] in inventory["layers"] for p in inventory["packages"])
    assert not [f for f in result.findings if isinstance(f, SecretFinding)]  # pkg only
    assert result.scan_types == ("pkg",)


def test_alpine_archive_matches_secdb_by_origin(alpine_archive, advisories, tmp_path):
    result = scan_reference(f"docker-archive:{alpine_archive}", vuln_db=advisories,
                            workdir=tmp_path)
    vulns = _vulns(result)
    openssl = {v: f for v, f in vulns.items() if f.packages[0].name.startswith("lib")}
    assert {v: f.packages[0].fixed_version for v, f in openssl.items()} == \
        samples.ALPINE_OPENSSL_EXPECTED
    # One finding per vulnerability with every affected package.
    assert all({p.name for p in f.packages} == {"libssl1.1", "libcrypto1.1"}
               for f in openssl.values())
    busybox = {v: f for v, f in vulns.items() if f.packages[0].name == "busybox"}
    assert {v: f.packages[0].fixed_version for v, f in busybox.items()} == \
        samples.ALPINE_BUSYBOX_EXPECTED
    assert set(vulns) == set(samples.ALPINE_OPENSSL_EXPECTED) | set(
        samples.ALPINE_BUSYBOX_EXPECTED)
    assert all(f.fix_available == "YES" for f in vulns.values())
    secrets = [f for f in result.findings if isinstance(f, SecretFinding)]
    assert [(s.rule_id, s.file_path, s.line) for s in secrets] == [
        ("private-key", "/etc/ssl/private/server.key", 1)]


def test_scanner_interface_on_a_sweep_target(debian_layout, advisories, tmp_path):
    image = EcrImage(account_id="123456789012", region="us-east-1", repository="app",
                     digest="sha256:" + "a" * 64)
    scanner = BuiltinScanner(vuln_db=advisories)
    assert scanner.version().startswith("1.0+db.")
    target = ScanTarget(image=image, source=f"oci-layout:{debian_layout}")
    result = scanner.scan(target, tmp_path, timeout=60)
    assert result.scanner.name == "builtin"
    assert result.kinds == frozenset({"vulnerability", "secret"})
    assert all(f.resource == image for f in result.findings)  # the sweep's identity is kept


def test_missing_database_is_a_configuration_error(debian_layout, tmp_path):
    from check.builtin.advisories import AdvisoryDatabaseError

    scanner = BuiltinScanner(vuln_db=tmp_path / "no-such-db")
    assert scanner.version() == "1.0+db.none"
    with pytest.raises(AdvisoryDatabaseError, match="does not exist") as caught:
        scan_reference(f"oci-layout:{debian_layout}", scanner=scanner, workdir=tmp_path)
    assert "db update" in caught.value.remediation


def test_vuln_db_from_the_environment(debian_layout, advisories, tmp_path, monkeypatch):
    monkeypatch.setenv("CONTAINERSCAN_VULN_DB", str(advisories))
    result = scan_reference(f"oci-layout:{debian_layout}", workdir=tmp_path,
                            scan_types=("pkg",))
    assert set(samples.JINJA2_EXPECTED) <= set(_vulns(result))


def test_timeout_stops_the_scan(debian_layout, advisories, tmp_path):
    from securityhub.errors import ScanError

    with pytest.raises(ScanError, match="timed out"):
        scan_reference(f"oci-layout:{debian_layout}", vuln_db=advisories, workdir=tmp_path,
                       timeout=0)


def test_without_a_workdir_nothing_is_left_behind(alpine_archive, advisories, tmp_path,
                                                  monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    result = scan_reference(f"docker-archive:{alpine_archive}", vuln_db=advisories)
    assert result.raw_files == ()
    assert result.findings
    assert list(tmp_path.iterdir()) == []
