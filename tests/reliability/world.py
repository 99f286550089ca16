"""A small AWS estate for the reliability tests, in moto, and ways to look at it.

`InProcess` drives `check.sweep` in this process under `mock_aws` (fast: faults injected
with botocore hooks). `Served` runs moto's server on loopback (`securityhub.emulator.
LocalServer`) so that `containerscan sweep` can run as a real subprocess, be killed, and
leave its state behind for the next run.

The truth a sweep must leave in Security Hub is computed from the scenario, independently of
the code under test: for each image observed, one active finding per (resource, QID) and per
(resource, secret rule, file, line); nothing else active.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.check.ecrfixtures import put_image
from tests.check.standin import STANDIN, Scenario, StandinFinding, StandinSecret, rule_uuid

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
TABLE = "containerscan"
BUCKET = "containerscan-runs"
TOKEN = "qualys-token-RELIABILITY-7f3c9a51e2"  # the known token every leak test looks for


def resource_id(repository: str, digest: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:ecr:{REGION}:{account}:repository/{repository}/{digest}"


@dataclass
class Estate:
    """Repositories and images in ECR, and what the stand-in scanner says about each."""

    images: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, seed) -> digest
    findings: dict[str, tuple[StandinFinding, ...]] = field(default_factory=dict)
    secrets: dict[str, tuple[StandinSecret, ...]] = field(default_factory=dict)
    behaviours: dict[str, str] = field(default_factory=dict)

    def add(
        self,
        ecr: Any,
        repository: str,
        seed: str,
        *,
        tag: str | None = "1",
        findings: Iterable[StandinFinding] = (),
        secrets: Iterable[StandinSecret] = (),
        behaviour: str = "ok",
    ) -> str:
        existing = {r["repositoryName"] for r in _repositories(ecr)}
        if repository not in existing:
            ecr.create_repository(repositoryName=repository)
        digest = put_image(ecr, repository, seed, tag)
        self.images[(repository, seed)] = digest
        self.findings[digest] = tuple(findings)
        self.secrets[digest] = tuple(secrets)
        self.behaviours[digest] = behaviour
        return digest

    def scenario(self, overrides: Mapping[str, str] | None = None) -> Scenario:
        scenario = Scenario()
        for digest in set(self.images.values()):
            behaviour = (overrides or {}).get(digest, self.behaviours[digest])
            scenario.image(digest, findings=self.findings[digest],
                           secrets=self.secrets[digest], behaviour=behaviour)  # fmt: skip
        return scenario

    def truth(self, digests: Iterable[str] | None = None) -> set[tuple[str, str]]:
        """(resource id, CVE or secret rule) the hub must hold active for these digests."""
        chosen = set(self.images.values()) if digests is None else set(digests)
        out = set()
        for (repository, _), digest in self.images.items():
            if digest not in chosen:
                continue
            resource = resource_id(repository, digest)
            # One finding per CVE (issue 10); QScanner 4.8's secret rules are UUIDs.
            out |= {(resource, cve) for f in self.findings[digest] for cve in f.cves}
            out |= {(resource, rule_uuid(s.rule)) for s in self.secrets[digest]}
        return out


def _repositories(ecr: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for page in ecr.get_paginator("describe_repositories").paginate():
        out += page["repositories"]
    return out


def active_findings(hub: Any) -> dict[str, dict[str, Any]]:
    """Every ACTIVE finding, read directly from the (emulated) Security Hub."""
    found: dict[str, dict[str, Any]] = {}
    token = None
    while True:
        params: dict[str, Any] = {
            "Filters": {"RecordState": [{"Value": "ACTIVE", "Comparison": "EQUALS"}]},
            "MaxResults": 100,
        }
        if token:
            params["NextToken"] = token
        page = hub.get_findings(**params)
        for finding in page["Findings"]:
            assert finding["Id"] not in found, f"duplicate finding {finding['Id']}"
            found[finding["Id"]] = finding
        token = page.get("NextToken")
        if not token:
            return found


def hub_truth(findings: Mapping[str, Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(resource id, QID or secret rule) of the active findings; asserts no duplicates."""
    out: list[tuple[str, str]] = []
    for finding in findings.values():
        resource = finding["Resources"][0]["Id"]
        if finding.get("Vulnerabilities"):
            out.append((resource, str(finding["Vulnerabilities"][0]["Id"])))
        else:
            out.append((resource, finding["ProductFields"]["containerscan/secret/rule"]))
    assert len(out) == len(set(out)), f"two findings for one fact: {sorted(out)}"
    return set(out)


def ledger_state(dynamodb: Any, table: str = TABLE) -> dict[str, str]:
    """finding id -> record state, for every ledger entry (a Scan: tests only)."""
    out = {}
    for item in _scan(dynamodb, table):
        doc = {k: next(iter(v.values())) for k, v in item.items()}
        if "finding_id" in doc:
            out[str(doc["finding_id"])] = str(doc.get("record_state", ""))
    return out


def _scan(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"TableName": table}
    while True:
        page = dynamodb.scan(**params)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def summaries_contradicting(dynamodb: Any, table: str = TABLE) -> dict[str, str]:
    """Repository summaries that vouch for a state their partition's entries do not hold
    (pk -> what differs). Computed here from the documented format (the sha256 of the sorted
    "scope US kind US finding id US fingerprint" lines of the ACTIVE entries), not by the
    code under test. Tombstones and unreadable summaries vouch for nothing."""
    items = _scan(dynamodb, table)
    lines: dict[str, list[str]] = {}
    for item in items:
        doc = {k: next(iter(v.values())) for k, v in item.items()}
        pk = str(doc["pk"])
        if pk.startswith("ledger#ecr/") and doc.get("record_state") == "ACTIVE":
            row = [doc.get(k) for k in ("scope", "kind", "finding_id", "fingerprint")]
            lines.setdefault(pk, []).append("\x1f".join(str(v) for v in row))
    out = {}
    for item in items:
        doc = {k: next(iter(v.values())) for k, v in item.items()}
        pk = str(doc["pk"])
        readable = (
            str(doc.get("format")) == "1"
            and isinstance(doc.get("stamp"), str)
            and len(str(doc.get("digest", ""))) == 64
            and str(doc.get("count", "")).isdigit()
        )
        if not pk.startswith("ledger-summary#") or not readable:
            continue
        partition = "ledger#" + pk.removeprefix("ledger-summary#")
        rows = sorted(lines.get(partition, []))
        digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()
        if (doc["digest"], str(doc.get("count"))) != (digest, str(len(rows))):
            out[pk] = f"summary {doc['digest'][:12]}/{doc.get('count')}, entries {digest[:12]}/{len(rows)}"
    return out


def cli_env(
    endpoint: str, scenario: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a `containerscan` subprocess pointed at the local server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QSCANNER_", "QUALYS_"))}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        CONTAINERSCAN_TABLE=TABLE,
        CONTAINERSCAN_BUCKET=BUCKET,
        QSCANNER_PATH=str(STANDIN),
        QSCANNER_STANDIN_SCENARIO=str(scenario),
        QUALYS_POD="US1",
        QUALYS_ACCESS_TOKEN=TOKEN,
        PYTHONPATH=str(REPO),
    )
    env.update(extra or {})
    return env


def sweep_command(output_dir: Path, *args: str, log_level: str = "info") -> list[str]:
    return [sys.executable, "-m", "check", "--log-level", log_level, "sweep", "--output", "json",
            "--output-dir", str(output_dir), "--region", REGION, *args]  # fmt: skip


def run_cli(
    argv: list[str], env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, env=dict(env), capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def status_of(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON the sweep printed on stdout."""
    return dict(json.loads(done.stdout))
