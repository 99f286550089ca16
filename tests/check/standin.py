"""Driving the QScanner stand-in (`tests/bin/qscanner`) from tests.

    from tests.check.standin import STANDIN, Scenario, OPENSSL_CVE_2019_1547, AWS_KEY_SECRET

    scenario = Scenario()
    scenario.image(digest, findings=[OPENSSL_CVE_2019_1547], secrets=[AWS_KEY_SECRET])
    scenario.image(other_digest, behaviour="exit:40")
    path = scenario.write(tmp_path / "scenario.json")
    monkeypatch.setenv("QSCANNER_PATH", str(STANDIN))
    monkeypatch.setenv("QSCANNER_STANDIN_SCENARIO", str(path))
    monkeypatch.setenv("QUALYS_POD", "US1")
    monkeypatch.setenv("QUALYS_ACCESS_TOKEN", "standin-token-123456")

The scenario format and the behaviours are documented in the stand-in's docstring. The
QScanner runner passes `QSCANNER_*` variables through to the scanner, so the stand-in sees
`QSCANNER_STANDIN_SCENARIO` and `QSCANNER_STANDIN_RECORD` from the test's environment.

The vulnerabilities below are real: CVE ids, packages and fixed versions come from Alpine's
secdb (v3.10) and the PyPA advisory database (`/work/shared/data/advisories/`). The QIDs are
in the ranges Qualys uses for Alpine and Python advisories but were not checked against the
Qualys KnowledgeBase (not available here).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STANDIN = Path(__file__).resolve().parents[1] / "bin" / "qscanner"
# Report polling: the stand-in's waits multiplied by this in tests (QSCANNER_STANDIN_TIME_SCALE).
TIME_SCALE = "0.01"
BEHAVIOURS = ("ok", "crash", "hang", "hang-hard", "garbage", "huge-output", "no-report")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of a process, from /proc; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return fields[0], int(fields[2])


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a dead child waiting to be reaped)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of process group `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
                members.append(int(entry))
    return members


def wait_until_gone(pgid: int, seconds: float = 2.0) -> list[int]:
    """Wait for the group to have no live member; return the survivors (empty: gone)."""
    deadline = time.monotonic() + seconds
    while (members := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return members


# The stand-in's secret rules are UUIDs, as QScanner 4.8's are: uuid5(RULES, rule name).
RULES = uuid.UUID("6f1c5a0e-6a54-4f1e-9a53-0b3c2f6c1d7e")


def rule_uuid(rule: str) -> str:
    """The RuleID the stand-in writes for the scenario's secret rule `rule`."""
    return str(uuid.uuid5(RULES, rule))


def digest_of(text: str) -> str:
    """A deterministic `sha256:<hex>` digest for test images."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class StandinPackage:
    name: str
    installed: str
    fixed: str | None = None
    layer: str | None = None
    path: str | None = None  # for language packages: the lock file or site-packages dir
    language: str | None = None  # "python", "node.js", ...: an SCA package, not an OS one


@dataclass(frozen=True)
class StandinFinding:
    qid: int
    title: str
    severity: int  # Qualys 1-5
    cves: tuple[str, ...]
    packages: tuple[StandinPackage, ...]
    cvss3: dict[str, Any] | None = None
    type_detected: str = "CONFIRMED"
    published: str | None = None  # SARIF `Published`, as written

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["cves"] = list(self.cves)
        doc["packages"] = [asdict(p) for p in self.packages]
        for optional in ("cvss3", "published"):
            if doc[optional] is None:
                del doc[optional]
        return doc


@dataclass(frozen=True)
class StandinSecret:
    rule: str
    category: str
    title: str
    severity: str
    file: str
    line: int
    match: str = "****************"  # what the report shows; must never reach a finding


@dataclass
class Scenario:
    """Builds a scenario file: digest -> behaviour, findings, secrets."""

    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Where `save()` writes (what QSCANNER_STANDIN_SCENARIO names).
    path: Path | None = None

    def image(
        self,
        digest: str,
        *,
        findings: list[StandinFinding] | tuple[StandinFinding, ...] = (),
        secrets: list[StandinSecret] | tuple[StandinSecret, ...] = (),
        behaviour: str = "ok",
        delay: float = 0.0,
        os: str = "alpine 3.10.2",
        failed_scans: tuple[str, ...] = (),
        huge_bytes: int | None = None,
        echo_credentials: bool = False,
        report_delay: float = 0.0,
        architecture: str = "amd64",
        sarif_extra: tuple[dict[str, Any], ...] = (),
    ) -> Scenario:
        if behaviour not in BEHAVIOURS and not behaviour.startswith("exit:"):
            raise ValueError(f"unknown behaviour {behaviour!r}")
        spec: dict[str, Any] = {
            "behaviour": behaviour,
            "delay": delay,
            "os": os,
            "findings": [f.to_json() for f in findings],
            "secrets": [asdict(s) for s in secrets],
            "failed_scans": list(failed_scans),
            "report_delay": report_delay,
            "architecture": architecture,
            "sarif_extra": list(sarif_extra),
        }
        if huge_bytes is not None:
            spec["huge_bytes"] = huge_bytes
        if echo_credentials:
            spec["echo_credentials"] = True
        self.images[digest] = spec
        return self

    def default(self, **kwargs: Any) -> Scenario:
        """What the stand-in does for digests not listed."""
        return self.image("default", **kwargs)

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(self.images, indent=1), encoding="utf-8")
        return path

    def save(self) -> Path:
        """Write to `self.path` (the stand-in re-reads the file on every scan)."""
        if self.path is None:
            raise ValueError("Scenario.path is not set")
        return self.write(self.path)


# --------------------------------------------------------------- realistic findings
ALPINE_LAYER = "sha256:" + hashlib.sha256(b"alpine:3.10 base layer").hexdigest()
APP_LAYER = "sha256:" + hashlib.sha256(b"app layer").hexdigest()

OPENSSL_CVE_2019_1547 = StandinFinding(
    qid=376817,
    title="Alpine Linux Security Update for openssl",
    severity=3,
    cves=("CVE-2019-1547", "CVE-2019-1549", "CVE-2019-1563"),
    packages=(
        StandinPackage("openssl", "1.1.1c-r0", "1.1.1d-r0", ALPINE_LAYER),
        StandinPackage("libcrypto1.1", "1.1.1c-r0", "1.1.1d-r0", ALPINE_LAYER),
        StandinPackage("libssl1.1", "1.1.1c-r0", "1.1.1d-r0", ALPINE_LAYER),
    ),
    cvss3={"baseScore": 4.7, "vector": "CVSS:3.1/AV:L/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N"},
)
MUSL_CVE_2019_14697 = StandinFinding(
    qid=376802,
    title="Alpine Linux Security Update for musl",
    severity=5,
    cves=("CVE-2019-14697",),
    packages=(
        StandinPackage("musl", "1.1.22-r2", "1.1.22-r3", ALPINE_LAYER),
        StandinPackage("musl-utils", "1.1.22-r2", "1.1.22-r3", ALPINE_LAYER),
    ),
    cvss3={"baseScore": 9.8, "vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"},
)
CURL_CVE_2019_5481 = StandinFinding(
    qid=376705,
    title="Alpine Linux Security Update for curl",
    severity=4,
    cves=("CVE-2019-5481", "CVE-2019-5482"),
    packages=(
        StandinPackage("curl", "7.65.1-r0", "7.66.0-r0", APP_LAYER),
        StandinPackage("libcurl", "7.65.1-r0", "7.66.0-r0", APP_LAYER),
    ),
)
BUSYBOX_CVE_2019_5747 = StandinFinding(
    qid=376354,
    title="Alpine Linux Security Update for busybox",
    severity=2,
    cves=("CVE-2019-5747",),
    packages=(StandinPackage("busybox", "1.30.1-r1", "1.30.1-r2", ALPINE_LAYER),),
)
REQUESTS_CVE_2023_32681 = StandinFinding(
    qid=5000389,
    title="Python requests Information Disclosure Vulnerability",
    severity=3,
    cves=("CVE-2023-32681",),
    packages=(
        StandinPackage(
            "requests",
            "2.28.1",
            "2.31.0",
            APP_LAYER,
            path="/usr/lib/python3.11/site-packages/requests-2.28.1.dist-info/METADATA",
            language="python",
        ),
    ),
)
PYYAML_CVE_2020_14343 = StandinFinding(
    qid=5000127,
    title="PyYAML Arbitrary Code Execution Vulnerability",
    severity=5,
    cves=("CVE-2020-14343",),
    packages=(
        StandinPackage(
            "PyYAML",
            "5.3.1",
            "5.4",
            APP_LAYER,
            path="/app/requirements.txt",
            language="python",
        ),
    ),
)
ALL_FINDINGS = (
    OPENSSL_CVE_2019_1547,
    MUSL_CVE_2019_14697,
    CURL_CVE_2019_5481,
    BUSYBOX_CVE_2019_5747,
    REQUESTS_CVE_2023_32681,
    PYYAML_CVE_2020_14343,
)

AWS_KEY_SECRET = StandinSecret(
    rule="aws-access-key-id",
    category="AWS",
    title="AWS Access Key ID",
    severity="CRITICAL",
    file="/app/config/.env",
    line=3,
    match="AWS_ACCESS_KEY_ID=AKIA****************",
)
PRIVATE_KEY_SECRET = StandinSecret(
    rule="private-key",
    category="AsymmetricPrivateKey",
    title="Asymmetric Private Key",
    severity="HIGH",
    file="/root/.ssh/id_rsa",
    line=1,
    match="-----BEGIN RSA PRIVATE KEY-----****",
)
GITHUB_PAT_SECRET = StandinSecret(
    rule="github-pat",
    category="GitHub",
    title="GitHub Personal Access Token",
    severity="CRITICAL",
    file="/app/deploy.sh",
    line=12,
    match="ghp_************************************",
)


# A secret result as a non-GA QScanner (5.3.0-cnapp5) writes into the SARIF: no QID, no
# vulnerableSoftware. The runner skips and counts it (reference section 8, "other results").
SARIF_SECRET_RESULT = {
    "rule": {
        "id": "3f9a2c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b",
        "shortDescription": {"text": "AWS Access Key ID"},
        "properties": {"category": "AWS", "severity": "CRITICAL"},
    },
    "result": {
        "ruleId": "3f9a2c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b",
        "level": "error",
        "message": {"text": "Secret found"},
        "locations": [
            {
                "physicalLocation": {
                    "artifactLocation": {"uri": "/app/config/.env"},
                    "region": {"startLine": 3},
                }
            }
        ],
        "properties": {"category": "AWS"},
    },
}
