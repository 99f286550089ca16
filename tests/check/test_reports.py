"""The pure report parsers on the stored reports in tests/data/reports, good and broken."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from check.reports.document import ReportFieldError
from check.reports.grype import parse_grype
from check.reports.packages import FindingGroups, package_manager
from check.reports.sarif import parse_sarif
from check.reports.scanresult import parse_scan_result
from check.reports.trivy import parse_trivy
from securityhub.asff import vendor_name
from securityhub.errors import ReportParseError
from securityhub.findings import EcrImage, Package, ScannerInfo, Severity, VulnerabilityFinding

DATA = Path(__file__).resolve().parents[1] / "data" / "reports"
SARIF = DATA / "qscanner-api-Report.sarif.json"
SCAN_RESULT = DATA / "qscanner-api-ScanResult.json"
TRIVY = DATA / "trivy-api.json"
GRYPE = DATA / "grype-api.json"
DIGEST = "sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270"
IMAGE = EcrImage("123456789012", "us-east-1", "payments/api", DIGEST)
QSCANNER = ScannerInfo("qscanner", "4.8.0-2")
# Secret values present, unmasked, in the stored reports: none may reach a finding.
SECRET_VALUES = ("AKIAQX7UNMASKEDVALUE1", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYUNMASKED")


def sarif(data: bytes | str, with_inventory: bool = True):
    inventory = None
    if with_inventory:
        inventory = scan_result(SCAN_RESULT.read_bytes()).package_index()
    return parse_sarif(data, SARIF.name, image=IMAGE, scanner=QSCANNER, inventory=inventory)


def scan_result(data: bytes | str):
    return parse_scan_result(data, SCAN_RESULT.name, image=IMAGE, scanner=QSCANNER)


def trivy(data: bytes | str):
    return parse_trivy(data, TRIVY.name, image=IMAGE, scanner=ScannerInfo("trivy", "0.50.1"))


def grype(data: bytes | str):
    return parse_grype(data, GRYPE.name, image=IMAGE, scanner=ScannerInfo("grype", "0.74.7"))


PARSERS = {SARIF: sarif, SCAN_RESULT: scan_result, TRIVY: trivy, GRYPE: grype}


# ------------------------------------------------------------------------------ SARIF


def test_sarif_one_finding_per_cve_with_every_package_and_the_qid_kept():
    report = sarif(SARIF.read_bytes())
    by_id = {f.vulnerability_id: f for f in report.findings}
    # QID 376817 names three CVEs: three findings; QID 105943 (an EOL check) has none and
    # keeps its own id.
    assert sorted(by_id) == [
        "105943",
        "CVE-2019-14697",
        "CVE-2019-1547",
        "CVE-2019-1549",
        "CVE-2019-1563",
        "CVE-2019-5481",
        "CVE-2019-5482",
        "CVE-2019-5747",
        "CVE-2023-32681",
    ]
    openssl = by_id["CVE-2019-1547"]  # QID 376817, reported in two results: merged
    assert [p.name for p in openssl.packages] == ["libcrypto1.1", "libssl1.1", "openssl"]
    assert {p.layer for p in openssl.packages} == {
        "sha256:e7d92cdc71feacf90708cb59182d0df1b911f8ae022d29e8e95d75ca6a99776a",
        "sha256:9fd2a8c5d4a1e0b5f6e1cf0ab2a5c36b8a8e7e6e36c7a3d1ab0e6a77f1b2c9d4",
    }
    assert openssl.title == "Alpine Linux Security Update for openssl"
    assert openssl.qid == "376817" and openssl.cves == ("CVE-2019-1547",)
    assert by_id["CVE-2019-1563"].packages == openssl.packages
    assert by_id["CVE-2019-1563"].qid == "376817"
    assert openssl.fix_available == "YES"
    assert openssl.vendor == "QUALYS" and openssl.vendor_url.endswith("id=376817")
    assert openssl.scanner == QSCANNER and openssl.resource == IMAGE
    assert by_id["CVE-2019-14697"].severity is Severity.CRITICAL
    assert by_id["CVE-2019-5481"].severity is Severity.HIGH
    assert by_id["CVE-2019-5747"].severity is Severity.LOW
    eol = by_id["105943"]
    assert eol.severity is Severity.INFORMATIONAL and eol.cves == () and eol.qid == "105943"
    assert eol.packages[0].fixed_version is None and eol.fix_available == "NO"
    requests = by_id["CVE-2023-32681"].packages[0]
    assert (requests.package_manager, requests.file_path) == (
        "pip",
        "/usr/lib/python3.7/site-packages/requests-2.28.1.dist-info/METADATA",
    )
    assert {p.package_manager for p in openssl.packages} == {"apk"}
    assert report.tool_version == "4.8.0-2" and report.image_digest == DIGEST
    assert report.skipped_count == 0


def test_sarif_readme_spellings_cvss3info_type_detected_published_and_path():
    """The concepts Qualys's QScanner README names (reference section 8), as JSON keys."""
    doc = json.loads(SARIF.read_text())
    rule = doc["runs"][0]["tool"]["driver"]["rules"][0]
    del rule["properties"]["cvssV3"]
    rule["properties"]["CVSS3Info"] = {"baseScore": 5.9, "temporalScore": 5.2}
    rule["properties"]["CVSSInfo"] = {"baseScore": 4.3, "accessVector": "Network"}
    result = doc["runs"][0]["results"][0]
    result["properties"]["TypeDetected"] = "potential"
    result["properties"]["Published"] = "1568135700000"  # epoch ms, as the CS API writes
    result["properties"]["vulnerableSoftware"][0]["path"] = "/lib/apk/db/installed"
    found = {f.vulnerability_id: f for f in sarif(json.dumps(doc)).findings}
    openssl = found["CVE-2019-1547"]
    assert [(c.version, c.base_score, c.temporal_score, c.access_vector) for c in openssl.cvss] == [
        ("3.x", 5.9, 5.2, None),
        ("2.0", 4.3, None, "Network"),
    ]
    assert openssl.type_detected == "POTENTIAL"
    assert openssl.published_at == datetime(2019, 9, 10, 17, 15, tzinfo=UTC)
    assert "/lib/apk/db/installed" in {p.file_path for p in openssl.packages}


def test_sarif_without_inventory_still_parses():
    report = sarif(SARIF.read_bytes(), with_inventory=False)
    assert len(report.findings) == 9
    assert all(p.package_manager is None for f in report.findings for p in f.packages)


def test_sarif_severity_mapping_is_configurable():
    mapping = {
        5: Severity.HIGH,
        4: Severity.HIGH,
        3: Severity.MEDIUM,
        2: Severity.LOW,
        1: Severity.LOW,
    }
    report = parse_sarif(
        SARIF.read_bytes(), SARIF.name, image=IMAGE, scanner=QSCANNER, severity_map=mapping
    )
    by_id = {f.vulnerability_id: f for f in report.findings}
    assert by_id["CVE-2019-14697"].severity is Severity.HIGH
    assert by_id["105943"].severity is Severity.LOW
    assert by_id["CVE-2019-14697"].vendor_severity == "5"


def test_sarif_empty_results_is_a_clean_image_but_absent_results_is_an_error():
    doc = json.loads(SARIF.read_text())
    doc["runs"][0]["results"] = []
    assert sarif(json.dumps(doc)).findings == ()
    del doc["runs"][0]["results"]
    with pytest.raises(ReportParseError, match=r"runs\[0\]: missing 'results'"):
        sarif(json.dumps(doc))


# ---------------------------------------------------------------------- ScanResult


def test_scan_result_secrets_metadata_inventory():
    parsed = scan_result(SCAN_RESULT.read_bytes())
    keys = [(s.rule_id, s.file_path, s.line) for s in parsed.secrets]
    assert sorted(keys) == [
        ("aws-access-key-id", "/app/config/.env", 3),
        ("aws-secret-access-key", "/app/config/.env", 4),
        ("github-pat", "/app/deploy.sh", 12),  # reported twice, one finding
        ("private-key", "/root/.ssh/id_rsa", 1),
    ]
    by_rule = {s.rule_id: s for s in parsed.secrets}
    assert by_rule["github-pat"].severity is Severity.HIGH  # Qualys 4
    assert by_rule["aws-access-key-id"].severity is Severity.CRITICAL
    assert by_rule["aws-access-key-id"].category == "AWS"
    assert by_rule["private-key"].layer.startswith("sha256:9fd2")
    text = repr(parsed)
    assert not any(value in text for value in SECRET_VALUES)
    assert "BEGIN RSA" not in text
    assert parsed.metadata.os == "alpine 3.10.2"
    assert parsed.metadata.architecture == "amd64"
    assert parsed.metadata.matches_digest(DIGEST) is True
    assert parsed.metadata.matches_digest("sha256:" + "0" * 64) is False
    assert parsed.qscanner_version == "4.8.0-2"
    assert parsed.failed_scan_types() == frozenset()
    index = parsed.package_index()
    assert index["musl"][0].package_manager == "apk"
    assert index["urllib3"][0].package_manager == "pip"


def test_scan_result_schema_version_5():
    """README 4.8.0 (reference section 8): ScanDuration in integer nanoseconds, OS and
    Architecture at target level beside the image's ID, UUID secret rule ids."""
    doc = json.loads(SCAN_RESULT.read_text())
    doc["SchemaVersion"] = 5
    target = doc["Metadata"]["TargetMetadata"]
    image = target["ImageMetadata"]
    target["OS"], target["Architecture"] = image.pop("OS"), image.pop("Architecture")
    image["ID"] = image.pop("ImageID")
    for scan in doc["ScansPerformed"]:
        scan["ScanDuration"] = 412_000_000
    rule = "0b6e4a1c-7c38-4f8e-9a0e-8d6f3b2a1c55"
    doc["SecretResults"][0]["Secrets"][0]["RuleID"] = rule
    parsed = scan_result(json.dumps(doc))
    assert (parsed.metadata.os, parsed.metadata.architecture) == ("alpine 3.10.2", "amd64")
    assert parsed.metadata.image_id == image["ID"]
    assert {s.duration_s for s in parsed.scans} == {0.412}
    assert rule in {s.rule_id for s in parsed.secrets}
    doc["ScansPerformed"][0]["ScanDuration"] = "1m0.5s"  # an older Go duration
    assert scan_result(json.dumps(doc)).scans[0].duration_s == 60.5


def test_scan_result_old_metadata_spelling_and_failed_scan():
    doc = json.loads(SCAN_RESULT.read_text())
    doc["Metadata"]["Target"] = doc["Metadata"].pop("TargetMetadata")["ImageMetadata"]
    doc["ScansPerformed"][1]["Status"] = "FAILED"
    parsed = scan_result(json.dumps(doc))
    assert parsed.metadata.os == "alpine 3.10.2"
    assert parsed.failed_scan_types() == {"secret"}


# --------------------------------------------------------------------------- Trivy


def test_trivy_grouping_cvss_and_secrets():
    report = trivy(TRIVY.read_bytes())
    by_id = {f.vulnerability_id: f for f in report.vulnerabilities}
    assert sorted(by_id) == [
        "CVE-2019-14697",
        "CVE-2019-1547",
        "CVE-2019-5481",
        "CVE-2019-5747",
        "CVE-2023-32681",
        "GHSA-j8r2-6x86-q33q",
    ]
    openssl = by_id["CVE-2019-1547"]
    assert [p.name for p in openssl.packages] == ["libcrypto1.1", "libssl1.1", "openssl"]
    assert {p.package_manager for p in openssl.packages} == {"apk"}
    assert openssl.cves == ("CVE-2019-1547",)
    assert {(c.source, c.version, c.base_score) for c in openssl.cvss} == {
        ("nvd", "3.1", 4.7),
        ("nvd", "2.0", 1.9),
        ("redhat", "3.0", 4.7),
    }
    assert openssl.severity is Severity.MEDIUM and openssl.vendor_severity == "MEDIUM"
    assert openssl.published_at == datetime(2019, 9, 10, 17, 15, tzinfo=UTC)
    assert openssl.references[0] == "https://avd.aquasec.com/nvd/cve-2019-1547"
    requests = by_id["CVE-2023-32681"].packages[0]
    assert requests.package_manager == "pip"
    assert requests.file_path.endswith("requests-2.28.1.dist-info/METADATA")
    assert by_id["GHSA-j8r2-6x86-q33q"].cves == ()  # no CVE: keeps its own id
    assert [(s.rule_id, s.file_path, s.line) for s in report.secrets] == [
        ("aws-access-key-id", "/app/config/.env", 3)
    ]
    assert not any(value in repr(report) for value in SECRET_VALUES)
    assert report.image_digests == (DIGEST,)
    assert (openssl.vendor, vendor_name(openssl)) == ("nvd", "NVD")  # SeveritySource


def test_trivy_without_results_is_a_clean_image():
    doc = json.loads(TRIVY.read_text())
    del doc["Results"]
    assert trivy(json.dumps(doc)).vulnerabilities == ()


def test_trivy_other_schema_version_is_refused():
    doc = json.loads(TRIVY.read_text())
    doc["SchemaVersion"] = 1
    with pytest.raises(ReportParseError, match="SchemaVersion: unsupported schema version 1"):
        trivy(json.dumps(doc))


# --------------------------------------------------------------------------- Grype


def test_grype_grouping_related_cves_and_fix_states():
    report = grype(GRYPE.read_bytes())
    by_id = {f.vulnerability_id: f for f in report.vulnerabilities}
    assert sorted(by_id) == [
        "CVE-2019-14697",
        "CVE-2019-1547",
        "CVE-2019-5747",
        "CVE-2023-32681",
    ]
    openssl = by_id["CVE-2019-1547"]
    assert [p.name for p in openssl.packages] == ["libcrypto1.1", "openssl"]
    assert openssl.packages[0].fixed_version == "1.1.1d-r0"
    assert openssl.packages[0].package_manager == "apk"
    assert openssl.cvss[0].base_score == 4.7  # from the related NVD record
    ghsa = by_id["CVE-2023-32681"]  # Grype's GHSA match, under the CVE it names
    assert ghsa.cves == ("CVE-2023-32681", "GHSA-j8r2-6x86-q33q")
    assert ghsa.packages[0].package_manager == "pip"
    assert ghsa.title == "Unintended leak of Proxy-Authorization header in requests"
    busybox = by_id["CVE-2019-5747"]
    assert busybox.severity is Severity.INFORMATIONAL  # Negligible
    assert busybox.packages[0].fixed_version is None  # not-fixed
    assert report.grype_version == "0.74.7" and report.image_digest == DIGEST
    assert vendor_name(openssl) == "ALPINE"  # namespace alpine:distro:alpine:3.10


# -------------------------------------------------------------------- broken reports


@pytest.mark.parametrize("path", list(PARSERS), ids=lambda p: p.name)
def test_truncated_report_is_a_parse_error_naming_the_file(path):
    data = path.read_bytes()
    with pytest.raises(ReportParseError, match=rf"^{path.name}: invalid JSON at line \d+"):
        PARSERS[path](data[: len(data) // 2])


@pytest.mark.parametrize("path", list(PARSERS), ids=lambda p: p.name)
@pytest.mark.parametrize("data", [b"", b"   ", b"\xff\xfe", b"[]", b"null", b"42"])
def test_not_a_report(path, data):
    with pytest.raises(ReportParseError, match=rf"^{path.name}: "):
        PARSERS[path](data)


def _mutate(path: Path, where: list[str | int], value: object = None, delete: bool = False):
    doc = json.loads(path.read_text())
    node = doc
    for key in where[:-1]:
        node = node[key]
    if delete:
        del node[where[-1]]
    else:
        node[where[-1]] = value
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("path", "where", "value", "delete", "message"),
    [
        (
            SARIF,
            ["runs", 0, "results", 3, "properties", "vulnerableSoftware"],
            None,
            True,
            r"runs\[0\]\.results\[3\]\.properties: missing 'vulnerableSoftware'",
        ),
        (
            SARIF,
            ["runs", 0, "results", 1, "properties", "vulnerableSoftware"],
            "openssl",
            False,
            r"runs\[0\]\.results\[1\]\.properties\.vulnerableSoftware: expected an array, got a string",
        ),
        (
            SARIF,
            ["runs", 0, "results", 0, "properties", "QID"],
            999999,
            False,
            r"runs\[0\]\.results\[0\]\.properties\.QID: QID 999999 does not match ruleId",
        ),
        (
            SARIF,
            ["runs", 0, "tool", "driver", "rules", 1, "properties", "severity"],
            9,
            False,
            r"rules\[1\]\.properties\.severity: unknown Qualys severity 9",
        ),
        (
            SARIF,
            ["runs", 0, "tool", "driver", "rules", 2, "properties", "severity"],
            "high",
            False,
            r"rules\[2\]\.properties\.severity: expected an integer, got a string",
        ),
        (
            SARIF,
            ["runs", 0, "results", 2, "properties", "vulnerableSoftware", 0, "installedVersion"],
            None,
            True,
            r"vulnerableSoftware\[0\]: missing 'installedVersion'",
        ),
    ],
)
def test_unreadable_sarif_results_are_skipped_and_counted_naming_the_json_path(
    path, where, value, delete, message
):
    """A result the parser cannot read costs that result, counted with its place, never the
    report (QScanner 5.x also writes secret, compliance and IaC results into the SARIF)."""
    report = sarif(_mutate(path, where, value, delete))
    assert report.skipped_count == 1
    assert re.search(message, report.skipped[0]) and report.skipped[0].startswith(SARIF.name)
    assert len(report.findings) >= 7  # the other results are all there


def test_a_secret_result_in_the_sarif_is_skipped_not_fatal():
    doc = json.loads(SARIF.read_text())
    run = doc["runs"][0]
    run["tool"]["driver"]["rules"].append(
        {"id": "9f0c1d52-2b7e-4f4e-8d7b-0c1a4c7e2f10", "shortDescription": {"text": "AWS key"}}
    )
    run["results"].append(
        {
            "ruleId": "9f0c1d52-2b7e-4f4e-8d7b-0c1a4c7e2f10",
            "level": "error",
            "message": {"text": "secret found"},
            "properties": {"category": "AWS", "file": "/app/.env", "line": 3},
        }
    )
    report = sarif(json.dumps(doc))
    assert report.skipped_count == 1 and "missing 'QID'" in report.skipped[0]
    assert len(report.findings) == 9


@pytest.mark.parametrize(
    ("path", "where", "value", "delete", "message"),
    [
        (SARIF, ["runs"], {}, False, r"runs: expected an array, got an object"),
        (
            SCAN_RESULT,
            ["SecretResults", 0, "Secrets", 1, "RuleID"],
            None,
            True,
            r"SecretResults\[0\]\.Secrets\[1\]: missing 'RuleID'",
        ),
        (
            SCAN_RESULT,
            ["SecretResults", 1, "Secrets", 0, "StartLine"],
            "one",
            False,
            r"Secrets\[0\]\.StartLine: expected an integer, got a string",
        ),
        (
            SCAN_RESULT,
            ["SecretResults", 2, "Secrets", 0, "Severity"],
            "SEVERE",
            False,
            r"Secrets\[0\]\.Severity: unknown severity 'SEVERE'",
        ),
        (SCAN_RESULT, ["Metadata"], None, True, r"\(top level\): missing 'Metadata'"),
        (
            SCAN_RESULT,
            ["OSResults", 0, "Packages", 2, "Name"],
            12,
            False,
            r"OSResults\[0\]\.Packages\[2\]\.Name: expected a string, got an integer",
        ),
        (
            TRIVY,
            ["Results", 0, "Vulnerabilities", 4, "PkgName"],
            None,
            True,
            r"Results\[0\]\.Vulnerabilities\[4\]: missing 'PkgName'",
        ),
        (
            TRIVY,
            ["Results", 0, "Vulnerabilities", 0, "Severity"],
            "SEVERE",
            False,
            r"Vulnerabilities\[0\]\.Severity: unknown severity 'SEVERE'",
        ),
        (
            TRIVY,
            ["Results", 1, "Vulnerabilities", 0, "PublishedDate"],
            "yesterday",
            False,
            r"PublishedDate: expected an RFC 3339 timestamp",
        ),
        (
            TRIVY,
            ["Results", 0, "Vulnerabilities", 0, "CVSS", "nvd", "V3Score"],
            "high",
            False,
            r"CVSS\.nvd\.V3Score: expected a number, got 'high'",
        ),
        (GRYPE, ["matches", 3, "artifact"], None, True, r"matches\[3\]: missing 'artifact'"),
        (
            GRYPE,
            ["matches", 0, "relatedVulnerabilities", 0, "cvss", 0, "metrics"],
            [],
            False,
            r"cvss\[0\]\.metrics: expected an object, got an array",
        ),
        (GRYPE, ["matches"], None, True, r"missing 'matches'"),
    ],
)
def test_malformed_fields_name_the_file_and_json_path(path, where, value, delete, message):
    data = _mutate(path, where, value, delete)
    with pytest.raises(ReportParseError, match=rf"^{path.name}: .*{message}"):
        PARSERS[path](data)


def test_field_errors_carry_the_file_and_path():
    data = _mutate(SCAN_RESULT, ["SecretResults", 0, "Secrets", 1, "RuleID"], delete=True)
    with pytest.raises(ReportFieldError) as info:
        scan_result(data)
    assert info.value.source == SCAN_RESULT.name
    assert info.value.path == "SecretResults[0].Secrets[1]"
    assert info.value.problem == "missing 'RuleID'"


def _walk(value, where=()):
    """Every (path) in a JSON document."""
    yield where
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _walk(child, (*where, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _walk(child, (*where, index))


@pytest.mark.parametrize("path", list(PARSERS), ids=lambda p: p.name)
def test_any_value_of_the_wrong_type_parses_or_raises_report_parse_error(path):
    """Replace each value in turn with values of other types: never a crash."""
    original = json.loads(path.read_text())
    replacements = (None, 7, "text", [], {}, True, -1.5)
    checked = 0
    for where in list(_walk(original))[1:]:
        for replacement in replacements:
            doc = copy.deepcopy(original)
            node = doc
            for key in where[:-1]:
                node = node[key]
            node[where[-1]] = replacement
            try:
                PARSERS[path](json.dumps(doc))
            except ReportParseError as exc:
                assert str(exc).startswith(f"{path.name}: ")
            checked += 1
    assert checked > 500


# ------------------------------------------------------------------ grouping property

_packages = st.builds(
    Package,
    name=st.sampled_from(["openssl", "musl", "curl", "zlib"]),
    installed_version=st.sampled_from(["1.0", "1.1", "2.0"]),
    fixed_version=st.none() | st.just("9.9"),
    layer=st.none() | st.sampled_from(["sha256:aa", "sha256:bb"]),
)
_occurrences = st.lists(
    st.tuples(
        st.sampled_from(["CVE-2019-1547", "CVE-2019-14697", "376817", "GHSA-j8r2-6x86-q33q"]),
        st.sampled_from(list(Severity)),
        st.lists(_packages, max_size=3),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(_occurrences)
def test_grouping_gives_one_finding_per_id_with_every_package(occurrences):
    groups = FindingGroups()
    for vuln_id, severity, packages in occurrences:
        finding = VulnerabilityFinding(
            resource=IMAGE,
            vulnerability_id=vuln_id,
            title=vuln_id,
            severity=severity,
            scanner=QSCANNER,
            cves=(vuln_id,) if vuln_id.startswith("CVE-") else (),
        )
        groups.add(finding, packages)
    findings = groups.findings()
    ids = [f.vulnerability_id for f in findings]
    assert ids == sorted(set(ids)) == sorted({o[0] for o in occurrences})
    for finding in findings:
        mine = [o for o in occurrences if o[0] == finding.vulnerability_id]
        assert finding.severity == max(o[1] for o in mine)
        expected = {p for o in mine for p in o[2]}
        assert set(finding.packages) == expected and len(finding.packages) == len(expected)
        assert len(set(finding.cves)) == len(finding.cves)


@pytest.mark.parametrize(
    ("kind", "manager"),
    [
        ("alpine 3.10.2", "apk"),
        ("debian", "dpkg"),
        ("Amazon Linux 2", "rpm"),
        ("python-pkg", "pip"),
        ("Node.js", "npm"),
        ("gobinary", "gomod"),
        ("jar", "maven"),
        ("java-archive", "maven"),
        ("rust-crate", "cargo"),
        ("plan9", None),
        (None, None),
    ],
)
def test_package_manager_names(kind, manager):
    assert package_manager(kind) == manager
