"""Issue 10's acceptance, end to end: sweeps with the QScanner stand-in (a real subprocess),
moto + the Security Hub emulator, and the KEV / EPSS files in their published formats."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import boto3
import pytest

from securityhub.aws import SessionFactory
from securityhub.findings import Observation, ScannerInfo, Severity, VulnerabilityFinding
from securityhub.hub import SecurityHubPublisher
from tests.check.ecrfixtures import put_image
from tests.check.standin import (
    MUSL_CVE_2019_14697,
    OPENSSL_CVE_2019_1547,
    SARIF_SECRET_RESULT,
    STANDIN,
    Scenario,
)
from tests.check.test_sweep import HUB, REGION, TABLE, active_findings, aws, run  # noqa: F401

CLIENT_SECRET = "qualys-client-secret-c3dlZXAtdGVzdA"
EXPLOITS = Path(__file__).resolve().parents[1] / "data" / "exploits"


@pytest.fixture
def client_credentials(
    aws: None,  # noqa: F811 - the sweep tests' fixture (moto, the emulator, the stand-in)
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Path:
    """Only a client id and secret (no token), and a QScanner that counts its scans."""
    monkeypatch.delenv("QUALYS_ACCESS_TOKEN")
    monkeypatch.setenv("QUALYS_CLIENT_ID", "containerscan-client")
    monkeypatch.setenv("QUALYS_CLIENT_SECRET", CLIENT_SECRET)
    counter = tmp_path / "scans.log"
    wrapper = tmp_path / "qscanner"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" image "*) echo scan >> "{counter}";; esac\n'
        f'exec "{STANDIN}" "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("QSCANNER_PATH", str(wrapper))
    vuln_db = tmp_path / "vulndb"
    shutil.copytree(EXPLOITS, vuln_db, ignore=shutil.ignore_patterns("README.md"))
    monkeypatch.setenv("CONTAINERSCAN_VULN_DB", str(vuln_db))
    return counter


def scans(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def _scenario_path() -> str:
    import os

    return os.environ["QSCANNER_STANDIN_SCENARIO"]


def test_client_credentials_sweep_then_an_unchanged_sweep_scans_nothing(
    client_credentials: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="app")
    digest = put_image(ecr, "app", "app-1", "1")
    Scenario().image(digest, findings=[MUSL_CVE_2019_14697], echo_credentials=True).write(
        Path(_scenario_path())
    )
    caplog.set_level(logging.DEBUG)
    first = run(tmp_path, {})
    assert first.exit_code == 0, first.as_dict()
    assert scans(client_credentials) == 1
    second = run(tmp_path, {})
    assert second.exit_code == 0 and scans(client_credentials) == 1  # all from the cache
    assert [r.outcome for r in second.records] == ["cached"]
    # The secret: not in logs, nor in any output (the stand-in printed it to its stderr).
    assert CLIENT_SECRET not in caplog.text
    outputs = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.name == "qscanner.stderr.log" for p in outputs)
    for path in outputs:
        assert CLIENT_SECRET not in path.read_text(errors="replace"), path
    assert CLIENT_SECRET not in json.dumps(active_findings())


def test_security_hub_shows_one_finding_per_cve_with_exploit_signals_and_the_qid(
    client_credentials: Path, tmp_path: Path
) -> None:
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="app")
    digest = put_image(ecr, "app", "app-1", "1")
    Scenario().image(digest, findings=[OPENSSL_CVE_2019_1547, MUSL_CVE_2019_14697]).write(
        Path(_scenario_path())
    )
    assert run(tmp_path, {}).exit_code == 0
    findings = {f["Vulnerabilities"][0]["Id"]: f for f in active_findings().values()}
    assert sorted(findings) == ["CVE-2019-14697", "CVE-2019-1547", "CVE-2019-1549", "CVE-2019-1563"]
    musl = findings["CVE-2019-14697"]
    assert musl["Title"] == "CVE-2019-14697 - musl, musl-utils"
    assert musl["ProductFields"]["containerscan/qualys/qid"] == "376802"
    vulnerability = musl["Vulnerabilities"][0]
    assert vulnerability["Cvss"][0]["BaseScore"] == 9.8  # from CVSS3Info
    # The EPSS file lists it; KEV does not: ExploitAvailable NO, not absent.
    assert (vulnerability["EpssScore"], vulnerability["ExploitAvailable"]) == (0.00473, "NO")
    assert findings["CVE-2019-1547"]["ProductFields"]["containerscan/qualys/qid"] == "376817"
    # Searchable by CVE in Title (GetFindings has no filter on Vulnerabilities.Id).
    hub = boto3.client("securityhub", region_name=REGION)
    found = hub.get_findings(
        Filters={"Title": [{"Value": "CVE-2019-14697", "Comparison": "PREFIX"}]}
    )["Findings"]
    assert [f["Id"] for f in found] == [musl["Id"]]


def test_old_qid_findings_are_archived_once_in_the_same_publication(
    client_credentials: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous version published one finding per QID. The first sweep of this version
    archives those Ids in the very BatchImportFindings call that creates the CVE ones."""
    from moto.securityhub.models import SecurityHubBackend

    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="app")
    digest = put_image(ecr, "app", "app-1", "1")
    image = next(
        r.resource for r in run(tmp_path, {"dry_run": True}).records if r.image.digest == digest
    )
    old = VulnerabilityFinding(
        resource=image, vulnerability_id="376802", qid="376802", cves=("CVE-2019-14697",),
        title="Alpine Linux Security Update for musl", severity=Severity.CRITICAL,
        scanner=ScannerInfo("qscanner", "4.8.0-2"),
    )  # fmt: skip
    SecurityHubPublisher(SessionFactory(default_region=REGION), TABLE).publish(
        REGION, [Observation(image, frozenset({"vulnerability", "secret"}), (old,))]
    )
    [old_id] = active_findings()
    assert old_id.endswith("/vuln/376802")

    calls: list[list[tuple[str, str]]] = []
    real = SecurityHubBackend.batch_import_findings

    def spy(self: Any, findings: list[dict[str, Any]]) -> Any:
        calls.append([(f["Id"], f.get("RecordState", "ACTIVE")) for f in findings])
        return real(self, findings)

    monkeypatch.setattr(SecurityHubBackend, "batch_import_findings", spy)
    Scenario().image(digest, findings=[MUSL_CVE_2019_14697]).write(Path(_scenario_path()))
    status = run(tmp_path, {})
    assert status.exit_code == 0
    summary = status.security_hub[f"{HUB}/{REGION}"]
    assert (summary["archived"], summary["created"]) == (1, 1)
    [new_id] = active_findings()
    assert new_id.endswith("/vuln/CVE-2019-14697")
    [call] = [c for c in calls if (old_id, "ARCHIVED") in c]
    assert (new_id, "ACTIVE") in call  # one call: never both active, never neither
    again = run(tmp_path, {"force": True})
    assert again.security_hub[f"{HUB}/{REGION}"].get("archived", 0) == 0  # archived once


def test_a_failing_version_probe_says_so_and_the_cache_still_works(
    client_credentials: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A QScanner whose `--version` fails: the run's status names the binary's sha256 as
    the version, every image's results say why, and an unchanged rerun scans nothing."""
    import hashlib

    wrapper = Path(str(client_credentials)).with_name("qscanner")
    broken = tmp_path / "qscanner-no-version"
    broken.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = --version ] && { echo "unknown flag" >&2; exit 2; }; done\n'
        f'exec "{wrapper}" "$@"\n'
    )
    broken.chmod(0o755)
    monkeypatch.setenv("QSCANNER_PATH", str(broken))
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="app")
    digest = put_image(ecr, "app", "app-1", "1")
    Scenario().image(
        digest, findings=[MUSL_CVE_2019_14697], sarif_extra=(SARIF_SECRET_RESULT,)
    ).write(Path(_scenario_path()))
    first = run(tmp_path, {})
    # A SARIF result it cannot read (a 5.x secret result): skipped, counted in the status.
    assert any(n.startswith("1 SARIF result(s) skipped") for n in first.records[0].notes)
    expected = "unknown-sha256:" + hashlib.sha256(broken.read_bytes()).hexdigest()
    assert first.as_dict()["scanner"]["version"] == expected
    results = next((tmp_path / "out").rglob("results.json"))
    notes = json.loads(results.read_text())["notes"]
    assert any("`qscanner --version` failed" in n for n in notes)
    [image] = first.as_dict()["images"]  # the run's status.json
    assert any("`qscanner --version` failed" in n for n in image["notes"])
    second = run(tmp_path, {})
    assert scans(client_credentials) == 1 and [r.outcome for r in second.records] == ["cached"]
