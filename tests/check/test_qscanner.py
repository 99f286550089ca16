"""The QScanner runner against real subprocesses of the stand-in (`tests/bin/qscanner`)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import time
from pathlib import Path

import pytest

from check.process import ScannerFailedError, ScannerTimeoutError
from check.qscanner import (
    Deadlines,
    QScanner,
    QScannerConfig,
    ReportUnavailableError,
    build_argv,
    deadlines,
    exit_code_name,
    polling_seconds,
    scan_timeout_for,
)
from check.scanner import RegistryAuth, ScanTarget
from securityhub import logs
from securityhub.errors import ConfigurationError, ReportParseError, ScanError
from securityhub.findings import EcrImage, SecretFinding, Severity, VulnerabilityFinding
from securityhub.logs import redact
from tests.check.standin import (
    AWS_KEY_SECRET,
    GITHUB_PAT_SECRET,
    MUSL_CVE_2019_14697,
    OPENSSL_CVE_2019_1547,
    PRIVATE_KEY_SECRET,
    REQUESTS_CVE_2023_32681,
    SARIF_SECRET_RESULT,
    STANDIN,
    Scenario,
    digest_of,
    rule_uuid,
    wait_until_gone,
)

TOKEN = "eyJhbGciOiJSUzI1NiJ9.standin-qualys-token.c2lnbmF0dXJl"
REGISTRY_PASSWORD = "ecr-authorization-token-value-0123456789"
DIGEST = digest_of("payments/api:1.4.2")


def image(digest: str = DIGEST) -> EcrImage:
    return EcrImage(
        account_id="123456789012",
        region="us-east-1",
        repository="payments/api",
        digest=digest,
        tags=("1.4.2",),
    )


def target(digest: str = DIGEST, scan_types: tuple[str, ...] = ("pkg", "secret")) -> ScanTarget:
    return ScanTarget(
        image=image(digest), scan_types=scan_types, auth=RegistryAuth("AWS", REGISTRY_PASSWORD)
    )


@pytest.fixture
def scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scenario:
    """A scenario file the stand-in reads; the test fills it before scanning."""
    path = tmp_path / "scenario.json"
    built = Scenario(path=path)
    built.save()
    monkeypatch.setenv("QSCANNER_PATH", str(STANDIN))
    monkeypatch.setenv("QSCANNER_STANDIN_SCENARIO", str(path))
    monkeypatch.setenv("QSCANNER_STANDIN_RECORD", "1")
    monkeypatch.setenv("QUALYS_POD", "US1")
    monkeypatch.setenv("QUALYS_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("PARENT_ONLY_SENTINEL", "must-not-reach-the-scanner")
    return built


def scan(
    scenario: Scenario,
    tmp_path: Path,
    timeout: float = 30.0,
    digest: str = DIGEST,
    scan_types: tuple[str, ...] = ("pkg", "secret"),
    **options: object,
):
    scenario.save()
    scanner = QScanner.from_config(**options)
    return scanner.scan(target(digest, scan_types), tmp_path / "work", timeout)


def invocation(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "work" / "output" / "qscanner-invocation.json").read_text())


# ---------------------------------------------------------------------------- success


def test_success_gives_one_finding_per_cve_with_every_package(scenario, tmp_path):
    scenario.image(
        DIGEST,
        findings=[OPENSSL_CVE_2019_1547, MUSL_CVE_2019_14697, REQUESTS_CVE_2023_32681],
        secrets=[AWS_KEY_SECRET, PRIVATE_KEY_SECRET],
        architecture="arm64",
    )
    result = scan(scenario, tmp_path)

    vulns = {f.vulnerability_id: f for f in result.findings if isinstance(f, VulnerabilityFinding)}
    assert sorted(vulns) == [
        "CVE-2019-14697",
        "CVE-2019-1547",
        "CVE-2019-1549",
        "CVE-2019-1563",
        "CVE-2023-32681",
    ]
    openssl = vulns["CVE-2019-1547"]
    assert openssl.qid == "376817" and vulns["CVE-2019-1563"].qid == "376817"
    assert openssl.cves == ("CVE-2019-1547",)
    assert [(p.name, p.installed_version, p.fixed_version) for p in openssl.packages] == [
        ("libcrypto1.1", "1.1.1c-r0", "1.1.1d-r0"),
        ("libssl1.1", "1.1.1c-r0", "1.1.1d-r0"),
        ("openssl", "1.1.1c-r0", "1.1.1d-r0"),
    ]
    assert {p.package_manager for p in openssl.packages} == {"apk"}  # from the inventory's OS
    assert openssl.packages[0].layer == OPENSSL_CVE_2019_1547.packages[0].layer
    assert openssl.severity is Severity.MEDIUM and openssl.vendor_severity == "3"
    # CVSS3Info (the README's name) with its temporal score.
    assert (openssl.cvss[0].base_score, openssl.cvss[0].temporal_score) == (4.7, 4.7)
    assert openssl.type_detected == "CONFIRMED" and openssl.qds == "42"
    assert "https://nvd.nist.gov/vuln/detail/CVE-2019-1547" in openssl.references
    assert vulns["CVE-2019-14697"].severity is Severity.CRITICAL
    requests = vulns["CVE-2023-32681"].packages[0]
    assert requests.package_manager == "pip"
    assert requests.file_path.endswith("requests-2.28.1.dist-info/METADATA")
    # A single-platform image: ECR names no platform, ScanResult.json does.
    assert {f.resource.architecture for f in result.findings} == {"arm64"}

    secrets = [f for f in result.findings if isinstance(f, SecretFinding)]
    assert {(s.rule_id, s.title, s.file_path, s.line) for s in secrets} == {
        (rule_uuid("aws-access-key-id"), "AWS Access Key ID", "/app/config/.env", 3),
        (rule_uuid("private-key"), "Asymmetric Private Key", "/root/.ssh/id_rsa", 1),
    }
    assert AWS_KEY_SECRET.match not in repr(result.findings)  # the match never leaks

    assert result.scan_types == ("pkg", "secret")
    assert result.kinds == {"vulnerability", "secret"}
    assert result.scanner.name == "qscanner" and result.scanner.version == "4.8.0-2"
    assert result.policy_result is None
    assert dict(result.metadata)["os"] == "alpine 3.10.2"
    names = {p.name for p in result.raw_files}
    assert {"qscanner.stdout.log", "qscanner.stderr.log"} <= names
    # Named by the 64-hex image id, as the README says.
    assert any(re.fullmatch(r"[0-9a-f]{64}-Report\.sarif\.json", n) for n in names)
    assert any(re.fullmatch(r"[0-9a-f]{64}-ScanResult\.json", n) for n in names)
    assert all(p.is_file() and p.is_relative_to(tmp_path / "work") for p in result.raw_files)


def test_clean_image_unknown_to_the_scenario(scenario, tmp_path):
    result = scan(scenario, tmp_path, digest=digest_of("never-listed"))
    assert result.findings == ()
    assert result.scan_types == ("pkg", "secret")  # a clean image is fully observed


def test_argv_and_environment_carry_no_secret_and_nothing_extra(scenario, tmp_path):
    result = scan(scenario, tmp_path)
    record = invocation(tmp_path)
    argv = record["argv"]
    assert not any(TOKEN in a or REGISTRY_PASSWORD in a for a in argv)
    assert argv[-2:] == ["image", image().reference]
    assert image().reference.startswith(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/payments/api@sha256:"
    )
    flags = dict(zip(argv[:-2:2], argv[1:-2:2], strict=True))
    assert flags["--mode"] == "get-report"
    assert flags["--pod"] == "US1"
    assert flags["--scan-types"] == "pkg,secret"
    assert flags["--output-dir"] == str(tmp_path / "work" / "output")
    assert flags["--cache-dir"] == str(tmp_path / "work" / "cache")
    assert flags["--report-format"] == "sarif,json"
    # 30 s deadline minus a tenth: 27 s, of which QScanner's first 15 s wait for the report
    # (no retry fits in half of it), so 12 s of scanning.
    assert flags["--scan-timeout"] == "12s"
    assert flags["--max-network-retries"] == "0"
    assert (flags["--network-retry-wait-min"], flags["--network-retry-wait-max"]) == ("5s", "120s")
    env_names = set(record["env_names"])
    assert {
        "QUALYS_ACCESS_TOKEN",
        "QSCANNER_REGISTRY_USERNAME",
        "QSCANNER_REGISTRY_PASSWORD",
        "PATH",
    } <= env_names
    # The parent's other variables stay out: AWS keys (set by conftest), anything else.
    assert "PARENT_ONLY_SENTINEL" not in env_names
    assert "AWS_SECRET_ACCESS_KEY" not in env_names and "QSCANNER_PATH" not in env_names
    # The stand-in filled its cache dir (secret_config.json); the runner removed it after.
    assert not (tmp_path / "work" / "cache").exists()
    assert redact(f"token={TOKEN} password={REGISTRY_PASSWORD}") == "token=*** password=***"
    assert result.findings == ()


def test_qualys_token_variable_is_accepted(scenario, tmp_path, monkeypatch):
    monkeypatch.delenv("QUALYS_ACCESS_TOKEN")
    monkeypatch.setenv("QUALYS_TOKEN", TOKEN)
    scan(scenario, tmp_path)
    assert "QUALYS_ACCESS_TOKEN" in invocation(tmp_path)["env_names"]


# ------------------------------------------------------------------------ exit codes


def test_exit_40_report_unavailable_is_an_error_for_that_image(scenario, tmp_path):
    scenario.image(DIGEST, findings=[OPENSSL_CVE_2019_1547], behaviour="exit:40")
    with pytest.raises(ReportUnavailableError, match="FAILED_TO_GET_VULN_REPORT") as info:
        scan(scenario, tmp_path)
    assert isinstance(info.value, ScanError)
    assert "exit 40" in str(info.value)


@pytest.mark.parametrize(("code", "policy"), [(42, "DENY"), (43, "AUDIT")])
def test_policy_deny_and_audit_are_recorded_not_failures(scenario, tmp_path, code, policy):
    scenario.image(
        DIGEST,
        findings=[MUSL_CVE_2019_14697],
        secrets=[GITHUB_PAT_SECRET],
        behaviour=f"exit:{code}",
    )
    result = scan(scenario, tmp_path)
    assert result.policy_result == policy
    vulns = [f.vulnerability_id for f in result.findings if f.kind == "vulnerability"]
    assert vulns == ["CVE-2019-14697"]
    secrets = [f.rule_id for f in result.findings if isinstance(f, SecretFinding)]
    assert secrets == [rule_uuid("github-pat")]
    assert any(policy in note for note in result.notes)


def test_evaluate_policy_mode_records_allow_on_exit_0(scenario, tmp_path):
    result = scan(scenario, tmp_path, mode="evaluate-policy")
    assert result.policy_result == "ALLOW"


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (14, "SECRET_SCAN_FAILED"),
        (6, "IMAGE_ARTIFACT_FAILED"),
        (1, "GENERIC_ERROR"),
        (99, "UNKNOWN_EXIT_CODE_99"),
    ],
)
def test_other_exit_codes_fail_with_their_name(scenario, tmp_path, code, name):
    scenario.image(DIGEST, behaviour=f"exit:{code}")
    with pytest.raises(ScannerFailedError, match=name) as info:
        scan(scenario, tmp_path)
    assert info.value.code == code
    assert f"scan failed with exit code {code}" in str(info.value)  # the stderr tail
    assert exit_code_name(code) == name


def test_credentials_printed_by_the_scanner_never_reach_errors_or_logs(scenario, tmp_path):
    scenario.image(DIGEST, behaviour="exit:6", echo_credentials=True)
    stream = io.StringIO()
    root = logging.getLogger(logs.ROOT_LOGGER)
    saved = (root.level, root.propagate, list(root.handlers))
    logs.configure("DEBUG", stream=stream, json_lines=True)
    try:
        with pytest.raises(ScannerFailedError) as info:
            scan(scenario, tmp_path)
        logs.get_logger("test").error("scan failed: %s", info.value)
    finally:  # leave logging as other tests expect it
        root.propagate, root.handlers[:] = saved[1], saved[2]
        root.setLevel(saved[0])  # setLevel also clears the loggers' level caches
    stderr_log = (tmp_path / "work" / "qscanner.stderr.log").read_text()
    # The raw file is kept with the run's outputs (S3): the scanner's output, secrets masked.
    assert TOKEN not in stderr_log and "DEBUG token=*** registry password=***" in stderr_log
    message = str(info.value)
    assert "token=*** registry password=***" in message
    output = stream.getvalue()
    assert "qscanner scan started" in output and "scan failed" in output
    for secret in (TOKEN, REGISTRY_PASSWORD):
        assert secret not in message and secret not in output


def test_crash_is_a_scan_error_naming_the_signal(scenario, tmp_path):
    scenario.image(DIGEST, behaviour="crash")
    with pytest.raises(ScannerFailedError, match="SIGSEGV") as info:
        scan(scenario, tmp_path)
    assert "nil pointer dereference" in str(info.value)
    assert not list((tmp_path / "work").glob("core*"))


@pytest.mark.parametrize("behaviour", ["hang", "hang-hard"])
def test_hang_past_the_timeout_kills_the_whole_process_group(scenario, tmp_path, behaviour):
    scenario.image(DIGEST, behaviour=behaviour)
    started = time.monotonic()
    with pytest.raises(ScannerTimeoutError, match=r"timed out after 1\.5s"):
        scan(scenario, tmp_path, timeout=1.5, kill_grace=0.3)
    elapsed = time.monotonic() - started
    assert elapsed < 5
    pgid = invocation(tmp_path)["pid"]
    assert wait_until_gone(pgid) == [], "the stand-in or its child survived the timeout"


def test_garbage_report_is_a_parse_error_naming_the_file(scenario, tmp_path):
    scenario.image(DIGEST, behaviour="garbage")
    with pytest.raises(ReportParseError, match=r"-ScanResult\.json: invalid JSON at line 1"):
        scan(scenario, tmp_path)


def test_huge_output_is_capped_and_the_scan_still_succeeds(scenario, tmp_path):
    scenario.image(
        DIGEST,
        findings=[OPENSSL_CVE_2019_1547],
        behaviour="huge-output",
        huge_bytes=24 * 1024 * 1024,
    )
    result = scan(scenario, tmp_path, output_cap=1024 * 1024)
    stdout_log = tmp_path / "work" / "qscanner.stdout.log"
    assert stdout_log.stat().st_size == 1024 * 1024
    assert {f.qid for f in result.findings} == {"376817"}
    assert any("truncated" in note for note in result.notes)


def test_missing_vulnerability_report_fails_in_get_report_mode(scenario, tmp_path):
    scenario.image(DIGEST, findings=[OPENSSL_CVE_2019_1547], behaviour="no-report")
    with pytest.raises(ScanError, match=r"wrote no \*Report\.sarif\.json"):
        scan(scenario, tmp_path)


def test_evaluate_policy_without_report_keeps_the_verdict_and_covers_no_vulnerabilities(
    scenario, tmp_path
):
    scenario.image(DIGEST, secrets=[AWS_KEY_SECRET], behaviour="no-report")
    result = scan(scenario, tmp_path, mode="evaluate-policy")
    assert result.policy_result == "ALLOW"
    assert result.scan_types == ("secret",)
    assert [f.kind for f in result.findings] == ["secret"]


def test_failed_secret_scan_is_not_covered(scenario, tmp_path):
    scenario.image(
        DIGEST, findings=[OPENSSL_CVE_2019_1547], secrets=[AWS_KEY_SECRET], failed_scans=("secret",)
    )
    result = scan(scenario, tmp_path)
    assert result.scan_types == ("pkg",)  # secrets of this image must not be archived
    assert result.kinds == {"vulnerability"}


def test_pkg_only_scan(scenario, tmp_path):
    scenario.image(DIGEST, findings=[OPENSSL_CVE_2019_1547], secrets=[AWS_KEY_SECRET])
    result = scan(scenario, tmp_path, scan_types=("pkg",))
    assert result.scan_types == ("pkg",)
    assert {f.kind for f in result.findings} == {"vulnerability"}
    assert (
        invocation(tmp_path)["argv"][invocation(tmp_path)["argv"].index("--scan-types") + 1]
        == "pkg"
    )


def test_inventory_only_needs_no_token_and_covers_no_vulnerabilities(
    scenario, tmp_path, monkeypatch
):
    monkeypatch.delenv("QUALYS_ACCESS_TOKEN")
    monkeypatch.delenv("QUALYS_POD")
    scenario.image(DIGEST, findings=[OPENSSL_CVE_2019_1547], secrets=[AWS_KEY_SECRET])
    result = scan(scenario, tmp_path, mode="inventory-only")
    assert result.scan_types == ("secret",)
    assert [f.kind for f in result.findings] == ["secret"]
    assert any("no vulnerability report" in n for n in result.notes)


def test_relative_workdir(scenario, tmp_path, monkeypatch):
    scenario.image(DIGEST, findings=[OPENSSL_CVE_2019_1547])
    scenario.save()
    monkeypatch.chdir(tmp_path)
    result = QScanner.from_config().scan(target(), Path("rel") / "work", 30)
    assert [f.vulnerability_id for f in result.findings] == [
        "CVE-2019-1547",
        "CVE-2019-1549",
        "CVE-2019-1563",
    ]
    assert all(p.is_absolute() and p.is_file() for p in result.raw_files)
    assert (tmp_path / "rel" / "work" / "output").is_dir()


def test_a_rerun_does_not_parse_the_previous_attempts_reports(scenario, tmp_path):
    scenario.image(DIGEST, findings=[OPENSSL_CVE_2019_1547])
    assert len(scan(scenario, tmp_path).findings) == 3  # one per CVE of the QID
    scenario.image(DIGEST, behaviour="exit:40")
    with pytest.raises(ReportUnavailableError):
        scan(scenario, tmp_path)


# --------------------------------------------------------------------- configuration


def test_version_runs_the_binary(scenario):
    assert QScanner.from_config().version() == "4.8.0-2"


def test_missing_binary_is_a_configuration_error(tmp_path, monkeypatch):
    monkeypatch.setenv("QUALYS_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("QUALYS_POD", "US1")
    monkeypatch.setenv("QSCANNER_PATH", str(tmp_path / "nowhere" / "qscanner"))
    with pytest.raises(ConfigurationError, match="not an executable file") as info:
        QScanner.from_config()
    assert "QSCANNER_PATH" in info.value.remediation
    monkeypatch.delenv("QSCANNER_PATH")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigurationError, match="qscanner binary was not found"):
        QScanner.from_config()


def test_binary_found_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("QUALYS_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("QUALYS_POD", "US1")
    monkeypatch.delenv("QSCANNER_PATH", raising=False)
    monkeypatch.setenv("PATH", f"{STANDIN.parent}:/usr/bin:/bin")
    assert QScanner.from_config().config.binary == STANDIN


def test_binary_removed_after_configuration_is_a_configuration_error(scenario, tmp_path):
    copy = tmp_path / "qscanner"
    copy.write_bytes(STANDIN.read_bytes())
    copy.chmod(0o755)
    scanner = QScanner.from_config(binary=copy)
    copy.unlink()
    with pytest.raises(ConfigurationError, match="cannot run qscanner"):
        scanner.scan(target(), tmp_path / "work", 10)


@pytest.mark.parametrize(
    ("unset", "message"),
    [("QUALYS_ACCESS_TOKEN", "needs Qualys credentials"), ("QUALYS_POD", "Qualys platform")],
)
def test_token_and_pod_are_required_for_uploading_modes(scenario, monkeypatch, unset, message):
    monkeypatch.delenv(unset)
    with pytest.raises(ConfigurationError, match=message):
        QScanner.from_config()


def test_config_repr_hides_the_token():
    config = QScannerConfig(binary=STANDIN, pod="US1", token=TOKEN)
    assert TOKEN not in repr(config)


def test_unknown_mode_and_incomplete_severity_map_are_rejected():
    with pytest.raises(ConfigurationError, match="unknown QScanner mode"):
        QScannerConfig(binary=STANDIN, pod="US1", token=TOKEN, mode="fast")
    with pytest.raises(ConfigurationError, match="1-5"):
        QScannerConfig(binary=STANDIN, pod="US1", token=TOKEN, severity_map={5: Severity.HIGH})


def test_custom_severity_mapping(scenario, tmp_path):
    scenario.image(DIGEST, findings=[OPENSSL_CVE_2019_1547])  # Qualys 3
    collapsed = {
        1: Severity.LOW,
        2: Severity.LOW,
        3: Severity.MEDIUM,
        4: Severity.HIGH,
        5: Severity.HIGH,
    }
    collapsed[3] = Severity.HIGH
    result = scan(scenario, tmp_path, severity_map=collapsed)
    assert result.findings[0].severity is Severity.HIGH


def test_severity_map_from_the_environment(scenario, tmp_path, monkeypatch):
    monkeypatch.setenv("CONTAINERSCAN_QUALYS_SEVERITY_MAP", "5=high,4=HIGH,3=high,2=LOW,1=LOW")
    scenario.image(DIGEST, findings=[OPENSSL_CVE_2019_1547])  # Qualys 3
    assert scan(scenario, tmp_path).findings[0].severity is Severity.HIGH


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("5=CRITICAL,4=HIGH", "1-5"),
        ("5=SEVERE,4=HIGH,3=MEDIUM,2=LOW,1=LOW", "unknown severity"),
        ("5:CRITICAL", "expected <1-5>=<label>"),
        ("x=LOW", "invalid literal"),
    ],
)
def test_bad_severity_map_in_the_environment(scenario, monkeypatch, text, problem):
    monkeypatch.setenv("CONTAINERSCAN_QUALYS_SEVERITY_MAP", text)
    with pytest.raises(ConfigurationError, match=problem):
        QScanner.from_config()


def test_build_argv_is_a_pure_argument_list():
    config = QScannerConfig(binary=Path("/opt/qscanner"), pod="EU2", token=TOKEN)
    argv = build_argv(config, target(), Path("/w/output"), Path("/w/cache"), Deadlines(120, 3, 50))
    assert argv[0] == "/opt/qscanner"
    assert TOKEN not in " ".join(argv) and REGISTRY_PASSWORD not in " ".join(argv)
    assert argv[argv.index("--scan-timeout") + 1] == "120s"
    assert argv[argv.index("--max-network-retries") + 1] == "3"
    assert argv[argv.index("--pod") + 1] == "EU2" and "--gateway-url" not in argv


@pytest.mark.parametrize(("timeout", "expected"), [(300, 285), (30, 27), (5, 4), (0.5, 1)])
def test_scan_timeout_leaves_a_margin_before_the_hard_kill(timeout, expected):
    assert scan_timeout_for(timeout, 15.0) == expected


# ---------------------------------------------------------------------- reused caches


def test_shared_cache_root_lends_one_slot_per_concurrent_scan_and_keeps_it(
    scenario, tmp_path, monkeypatch
):
    import threading

    root = tmp_path / "qscanner-cache"
    monkeypatch.setenv("CONTAINERSCAN_QSCANNER_CACHE", str(root))
    other = "sha256:" + "b" * 64
    scenario.image(DIGEST, delay=0.5).image(other, delay=0.5)
    scenario.save()
    scanner = QScanner.from_config()
    used: dict[str, str] = {}

    def run(digest: str, name: str) -> None:
        scanner.scan(target(digest), tmp_path / name, 30.0)
        record = json.loads((tmp_path / name / "output" / "qscanner-invocation.json").read_text())
        used[name] = record["argv"][record["argv"].index("--cache-dir") + 1]

    threads = [threading.Thread(target=run, args=(d, n)) for d, n in ((DIGEST, "a"), (other, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(used.values()) == [str(root / "slot-0"), str(root / "slot-1")]
    run(DIGEST, "c")  # sequential: a free slot is reused, its cache kept
    assert used["c"] in (str(root / "slot-0"), str(root / "slot-1"))
    assert (root / "slot-0" / "secret_config.json").is_file()
    assert not (tmp_path / "a" / "cache").exists()


def test_without_a_cache_root_each_scan_cache_is_removed(scenario, tmp_path):
    scan(scenario, tmp_path)
    flags = invocation(tmp_path)["argv"]
    assert flags[flags.index("--cache-dir") + 1] == str((tmp_path / "work" / "cache").resolve())
    assert not (tmp_path / "work" / "cache").exists()


# ------------------------------------------------------- credentials, version, deadlines

CLIENT_SECRET = "qualys-client-secret-Zm9vYmFyYmF6cXV4"


def test_client_id_and_secret_alone_run_a_scan_through_the_environment_only(
    scenario, tmp_path, monkeypatch
):
    """The documented, preferred credentials (README pages 17, 43, 54): no token at all."""
    monkeypatch.delenv("QUALYS_ACCESS_TOKEN")
    monkeypatch.setenv("QUALYS_CLIENT_ID", "containerscan-client")
    monkeypatch.setenv("QUALYS_CLIENT_SECRET", CLIENT_SECRET)
    scenario.image(DIGEST, findings=[MUSL_CVE_2019_14697], echo_credentials=True)
    result = scan(scenario, tmp_path)
    assert [f.vulnerability_id for f in result.findings if f.kind == "vulnerability"] == [
        "CVE-2019-14697"
    ]
    record = invocation(tmp_path)
    assert {"QUALYS_CLIENT_ID", "QUALYS_CLIENT_SECRET"} <= set(record["env_names"])
    assert "QUALYS_ACCESS_TOKEN" not in record["env_names"]
    assert not any(CLIENT_SECRET in a for a in record["argv"])
    # The stand-in printed the secret: the kept stderr has it masked.
    for path in result.raw_files:
        assert CLIENT_SECRET not in path.read_text(errors="replace")
    assert "client secret=***" in (tmp_path / "work" / "qscanner.stderr.log").read_text()


def test_client_credentials_win_over_a_token_and_half_of_them_is_an_error(
    scenario, tmp_path, monkeypatch
):
    monkeypatch.setenv("QUALYS_CLIENT_ID", "containerscan-client")
    monkeypatch.setenv("QUALYS_CLIENT_SECRET", CLIENT_SECRET)
    scan(scenario, tmp_path)
    names = set(invocation(tmp_path)["env_names"])
    assert "QUALYS_CLIENT_SECRET" in names and "QUALYS_ACCESS_TOKEN" not in names
    monkeypatch.delenv("QUALYS_CLIENT_SECRET")
    with pytest.raises(ConfigurationError, match="QUALYS_CLIENT_SECRET is not set"):
        QScanner.from_config()


def test_no_credentials_fail_before_any_scan(scenario, tmp_path, monkeypatch):
    monkeypatch.delenv("QUALYS_ACCESS_TOKEN")
    with pytest.raises(ConfigurationError, match="QUALYS_CLIENT_ID and QUALYS_CLIENT_SECRET"):
        QScanner.from_config()
    assert not (tmp_path / "work").exists()


def test_gateway_url_replaces_the_pod(scenario, tmp_path, monkeypatch):
    monkeypatch.delenv("QUALYS_POD")
    monkeypatch.setenv("QUALYS_GATEWAY_URL", "https://gateway.qg1.apps.qualys.example")
    scan(scenario, tmp_path)
    argv = invocation(tmp_path)["argv"]
    assert argv[argv.index("--gateway-url") + 1] == "https://gateway.qg1.apps.qualys.example"
    assert "--pod" not in argv
    monkeypatch.setenv("QUALYS_GATEWAY_URL", "gateway.example")
    with pytest.raises(ConfigurationError, match="not an https URL"):
        QScanner.from_config()


def test_version_comes_from_the_version_flag(scenario):
    assert QScanner.from_config().version() == "4.8.0-2"


def test_a_failing_version_probe_keys_the_cache_on_the_binary_and_says_so(
    scenario, tmp_path, monkeypatch
):
    """An older stand-in (or a real binary) that rejects --version: the version becomes the
    binary's sha256, stable from run to run, and every image's notes say why."""
    broken = tmp_path / "qscanner-no-version"
    broken.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = --version ] && { echo "unknown flag: --version" >&2; exit 2; }; done\n'
        f'exec {STANDIN} "$@"\n'
    )
    broken.chmod(0o755)
    monkeypatch.setenv("QSCANNER_PATH", str(broken))
    first, second = QScanner.from_config(), QScanner.from_config()
    expected = "unknown-sha256:" + hashlib.sha256(broken.read_bytes()).hexdigest()
    assert first.version() == second.version() == expected
    scenario.save()
    result = first.scan(target(), tmp_path / "work", 30.0)
    assert any("--version` failed" in n and "sha256" in n for n in result.notes)
    assert result.scanner.version == expected


@pytest.mark.parametrize(
    ("timeout", "scan_timeout", "retries"),
    [(900, 475, 7), (3600, 2815, 10), (300, 195, 4), (30, 12, 0)],
)
def test_deadlines_let_qscanner_give_up_before_our_kill(timeout, scan_timeout, retries):
    """15 s + back-off 5, 10, 20 ... 120 s (README pages 43-44): polling gets at most half."""
    limits = deadlines(timeout, 15.0, report=True)
    assert (limits.scan_timeout, limits.network_retries) == (scan_timeout, retries)
    assert limits.polling == polling_seconds(retries)
    assert limits.scan_timeout + limits.polling <= scan_timeout_for(timeout, 15.0)
    assert polling_seconds(10) == 15 + 5 + 10 + 20 + 40 + 80 + 120 * 5  # ~13 minutes


def test_a_timeout_says_whether_qscanner_was_scanning_or_waiting_for_the_report(
    scenario, tmp_path, monkeypatch
):
    monkeypatch.setenv("QSCANNER_STANDIN_TIME_SCALE", "1")
    scenario.image(DIGEST, report_delay=600)
    with pytest.raises(ScannerTimeoutError, match="waiting for the vulnerability report"):
        scan(scenario, tmp_path, timeout=3.0, kill_grace=0.5)
    scenario.image(DIGEST, behaviour="hang")
    with pytest.raises(ScannerTimeoutError, match="while scanning the image"):
        scan(scenario, tmp_path, timeout=2.0, kill_grace=0.5)


def test_a_result_the_parser_cannot_read_is_skipped_and_counted_in_the_notes(scenario, tmp_path):
    scenario.image(
        DIGEST,
        findings=[MUSL_CVE_2019_14697],
        sarif_extra=(SARIF_SECRET_RESULT, SARIF_SECRET_RESULT),
    )
    result = scan(scenario, tmp_path)
    assert [f.vulnerability_id for f in result.findings if f.kind == "vulnerability"] == [
        "CVE-2019-14697"
    ]
    assert result.scan_types == ("pkg", "secret")  # the report was used, not rejected
    [note] = [n for n in result.notes if "SARIF" in n]
    assert note.startswith("2 SARIF result(s) skipped") and "missing 'QID'" in note
