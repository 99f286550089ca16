"""Trivy and Grype runners against real subprocesses of their stand-ins (tests/bin)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from check.external import GrypeScanner, TrivyScanner
from check.process import ScannerFailedError, ScannerTimeoutError
from check.scanner import RegistryAuth, ScanTarget
from securityhub.errors import ConfigurationError, ReportParseError, ScanError
from securityhub.findings import EcrImage, SecretFinding, VulnerabilityFinding
from tests.check.standin import wait_until_gone

BIN = Path(__file__).resolve().parents[1] / "bin"
DATA = Path(__file__).resolve().parents[1] / "data" / "reports"
DIGEST = "sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270"
PASSWORD = "ecr-authorization-token-value-0123456789"
IMAGE = EcrImage("123456789012", "us-east-1", "payments/api", DIGEST)


def target(scan_types: tuple[str, ...] = ("pkg", "secret"), digest: str = DIGEST) -> ScanTarget:
    image = EcrImage("123456789012", "us-east-1", "payments/api", digest)
    return ScanTarget(image=image, scan_types=scan_types, auth=RegistryAuth("AWS", PASSWORD))


@pytest.fixture
def tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINERSCAN_TRIVY_PATH", str(BIN / "trivy"))
    monkeypatch.setenv("CONTAINERSCAN_GRYPE_PATH", str(BIN / "grype"))
    monkeypatch.setenv("TRIVY_STANDIN_REPORT", str(DATA / "trivy-api.json"))
    monkeypatch.setenv("GRYPE_STANDIN_REPORT", str(DATA / "grype-api.json"))
    monkeypatch.setenv("TRIVY_CACHE_DIR", "/var/cache/trivy")
    monkeypatch.setenv("PARENT_ONLY_SENTINEL", "must-not-reach-the-scanner")


def record(workdir: Path, tool: str) -> dict:
    return json.loads((workdir / f"{tool}-invocation.json").read_text())


def test_trivy_scan(tools, tmp_path):
    scanner = TrivyScanner.from_config()
    result = scanner.scan(target(), tmp_path, 30)
    assert result.scanner.name == "trivy" and result.scanner.version == "0.50.1"
    assert result.scan_types == ("pkg", "secret")
    vulns = [f for f in result.findings if isinstance(f, VulnerabilityFinding)]
    secrets = [f for f in result.findings if isinstance(f, SecretFinding)]
    assert len(vulns) == 6 and [s.rule_id for s in secrets] == ["aws-access-key-id"]
    assert (tmp_path / "trivy-report.json") in result.raw_files

    argv = record(tmp_path, "trivy")["argv"]
    assert argv[0] == "image" and argv[-1] == IMAGE.reference
    assert argv[argv.index("--format") + 1] == "json"
    assert argv[argv.index("--output") + 1] == str(tmp_path / "trivy-report.json")
    assert argv[argv.index("--scanners") + 1] == "vuln,secret"
    assert argv[argv.index("--timeout") + 1] == "27s"
    assert PASSWORD not in " ".join(argv)
    env_names = set(record(tmp_path, "trivy")["env_names"])
    assert {"TRIVY_USERNAME", "TRIVY_PASSWORD", "TRIVY_CACHE_DIR"} <= env_names
    assert "PARENT_ONLY_SENTINEL" not in env_names and "AWS_SECRET_ACCESS_KEY" not in env_names


def test_trivy_raw_report_kept_without_the_secret_it_found(tools, tmp_path):
    planted = "AKIAQX7UNMASKEDVALUE1"
    assert planted in (DATA / "trivy-api.json").read_text()  # the stored report carries it
    result = TrivyScanner.from_config().scan(target(), tmp_path, 30)
    for path in result.raw_files:
        assert planted not in path.read_text(), path
    assert [s.rule_id for s in result.findings if isinstance(s, SecretFinding)] == [
        "aws-access-key-id"
    ]


def test_relative_workdir(tools, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = TrivyScanner.from_config().scan(target(), Path("rel"), 30)
    assert len(result.findings) == 7
    assert (tmp_path / "rel" / "trivy-report.json") in result.raw_files


def test_trivy_pkg_only_drops_secrets(tools, tmp_path):
    result = TrivyScanner.from_config().scan(target(("pkg",)), tmp_path, 30)
    assert result.scan_types == ("pkg",)
    assert all(f.kind == "vulnerability" for f in result.findings)
    argv = record(tmp_path, "trivy")["argv"]
    assert argv[argv.index("--scanners") + 1] == "vuln"


def test_grype_scan_covers_vulnerabilities_only(tools, tmp_path):
    scanner = GrypeScanner.from_config()
    result = scanner.scan(target(), tmp_path, 30)
    assert result.scanner.version == "0.74.7"
    assert result.scan_types == ("pkg",)  # grype has no secret scanning: secrets not covered
    assert result.kinds == {"vulnerability"}
    assert any("does not scan for secret" in n for n in result.notes)
    assert len(result.findings) == 4
    rec = record(tmp_path, "grype")
    assert rec["argv"] == [
        f"registry:{IMAGE.reference}",
        "-o",
        "json",
        "--file",
        str(tmp_path / "grype-report.json"),
    ]
    assert {
        "GRYPE_REGISTRY_AUTH_AUTHORITY",
        "GRYPE_REGISTRY_AUTH_USERNAME",
        "GRYPE_REGISTRY_AUTH_PASSWORD",
    } <= set(rec["env_names"])
    assert "TRIVY_CACHE_DIR" not in rec["env_names"]


def test_grype_secret_only_request_runs_nothing(tools, tmp_path):
    result = GrypeScanner.from_config().scan(target(("secret",)), tmp_path, 30)
    assert result.scan_types == () and result.findings == ()
    assert not (tmp_path / "grype-invocation.json").exists()


def test_report_for_another_image_is_refused(tools, tmp_path):
    with pytest.raises(ScanError, match=r"not .*payments/api@sha256:000"):
        TrivyScanner.from_config().scan(target(digest="sha256:" + "0" * 64), tmp_path, 30)


@pytest.mark.parametrize("scanner_class", [TrivyScanner, GrypeScanner])
def test_failure_exit_code(tools, tmp_path, monkeypatch, scanner_class):
    monkeypatch.setenv(f"{scanner_class.name.upper()}_STANDIN_BEHAVIOUR", "exit:1")
    with pytest.raises(ScannerFailedError, match=r"exit 1: FATAL .*\(image not found\)"):
        scanner_class.from_config().scan(target(), tmp_path, 30)


@pytest.mark.parametrize("scanner_class", [TrivyScanner, GrypeScanner])
def test_garbage_report(tools, tmp_path, monkeypatch, scanner_class):
    monkeypatch.setenv(f"{scanner_class.name.upper()}_STANDIN_BEHAVIOUR", "garbage")
    with pytest.raises(ReportParseError, match=rf"{scanner_class.name}-report\.json: invalid JSON"):
        scanner_class.from_config().scan(target(), tmp_path, 30)


def test_hang_is_killed_at_the_deadline(tools, tmp_path, monkeypatch):
    monkeypatch.setenv("GRYPE_STANDIN_BEHAVIOUR", "hang")
    with pytest.raises(ScannerTimeoutError, match=r"timed out after 1s"):
        GrypeScanner.from_config(kill_grace=0.2).scan(target(), tmp_path, 1)
    assert wait_until_gone(record(tmp_path, "grype")["pid"]) == []


def test_missing_binaries(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CONTAINERSCAN_TRIVY_PATH", raising=False)
    with pytest.raises(ConfigurationError, match="trivy binary was not found"):
        TrivyScanner.from_config()
    monkeypatch.setenv("CONTAINERSCAN_GRYPE_PATH", str(tmp_path / "grype"))
    with pytest.raises(ConfigurationError, match="CONTAINERSCAN_GRYPE_PATH"):
        GrypeScanner.from_config()


def test_binary_option_skips_the_lookup(monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # python3, no grype
    scanner = GrypeScanner.from_config(binary=BIN / "grype")
    assert scanner.config.binary == BIN / "grype" and scanner.version() == "0.74.7"


def test_found_on_path(monkeypatch):
    monkeypatch.delenv("CONTAINERSCAN_TRIVY_PATH", raising=False)
    monkeypatch.setenv("PATH", f"{BIN}:/usr/bin:/bin")
    assert TrivyScanner.from_config().config.binary == BIN / "trivy"
