"""A real `containerscan sweep` with a known token and planted secrets leaks none of them.

The sweep runs as a subprocess against moto's server. The Qualys token is known; the images
hold secrets whose values the (careless) scanner writes unmasked into its report, and one
scan prints the token and the registry password on stderr. Then every log line (stderr),
stdout, every file of the --output-dir tree, every S3 object, every DynamoDB item and every
finding in Security Hub is searched for each value.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.check.standin import CURL_CVE_2019_5481, MUSL_CVE_2019_14697, Scenario, StandinSecret
from tests.reliability.conftest import Served
from tests.reliability.world import (
    BUCKET,
    TABLE,
    TOKEN,
    Estate,
    active_findings,
    cli_env,
    hub_truth,
    run_cli,
    status_of,
    sweep_command,
)

PLANTED_AWS_KEY = "AKIAZ3PLANTED7LEAK4Q"
PLANTED_AWS_SECRET = "pL4nt3dS3cr3t/vAlue+NEVER+LEAK/0123456789"
PLANTED_PAT = "ghp_Pl4nt3dT0k3nN3v3rL34k0123456789abcd"


def _secret(rule: str, file: str, line: int, value: str) -> StandinSecret:
    return StandinSecret(rule=rule, category="AWS", title=rule, severity="CRITICAL",
                         file=file, line=line, match=value)  # fmt: skip


def _registry_password(served: Served) -> str:
    data = served.ecr.get_authorization_token()["authorizationData"][0]
    return base64.b64decode(data["authorizationToken"]).decode().split(":", 1)[1]


def _everything_written(served: Served, done_text: str, output_dir: Path) -> dict[str, str]:
    """where -> text, for every place the run wrote to."""
    places = {"stdout+stderr": done_text}
    for path in sorted(output_dir.rglob("*")):
        if path.is_file():
            places[f"file {path.relative_to(output_dir)}"] = path.read_bytes().decode(
                "utf-8", errors="replace"
            )
    for page in served.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            body = served.s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            places[f"s3 {obj['Key']}"] = body.decode("utf-8", errors="replace")
    items = served.dynamodb.scan(TableName=TABLE)["Items"]
    places["dynamodb"] = json.dumps(items, default=str)
    every = served.hub.get_findings(MaxResults=100)["Findings"]
    places["security hub"] = json.dumps(every, default=str)
    return places


@pytest.mark.slow  # two subprocess sweeps against moto's server (~6 s)
def test_no_token_or_secret_value_reaches_logs_outputs_or_findings(
    served: Served, tmp_path: Path
) -> None:
    estate = Estate()
    api = estate.add(served.ecr, "payments/api", "api-1", findings=[MUSL_CVE_2019_14697],
                     secrets=[_secret("aws-access-key-id", "/app/.env", 3, PLANTED_AWS_KEY),
                              _secret("aws-secret-access-key", "/app/.env", 4,
                                      PLANTED_AWS_SECRET)])  # fmt: skip
    web = estate.add(served.ecr, "web", "web-1", findings=[CURL_CVE_2019_5481],
                     secrets=[_secret("github-pat", "/srv/deploy.sh", 12, PLANTED_PAT)])  # fmt: skip
    failing = estate.add(served.ecr, "web", "web-2", tag="2")
    scenario = estate.scenario()
    # A careless scanner: prints the credentials it was given, then fails.
    scenario.image(failing, behaviour="exit:1", echo_credentials=True)
    scenario.image(web, findings=[CURL_CVE_2019_5481], echo_credentials=True,
                   secrets=estate.secrets[web])  # fmt: skip
    scenario.write(served.scenario)
    password = _registry_password(served)
    assert len(password) >= 8

    out = tmp_path / "out"
    done = run_cli(sweep_command(out, log_level="debug"), cli_env(served.endpoint, served.scenario))
    assert done.returncode == 3, done.stderr[-3000:]  # partial: the failing scan
    status = status_of(done)
    assert status["counts"]["scanned"] == 2 and status["counts"]["failed"] == 1
    # The sweep did its work: the secrets are findings (without their values).
    assert hub_truth(active_findings(served.hub)) == estate.truth([api, web])
    assert done.stderr.count("\n") > 5  # there were log lines to search

    places = _everything_written(served, done.stdout + done.stderr, out)
    assert any(k.startswith("file ") for k in places) and any(k.startswith("s3 ") for k in places)
    leaks = [
        f"{name} in {where}"
        for name, value in {
            "QUALYS_ACCESS_TOKEN": TOKEN,
            "registry password": password,
            "planted AWS key": PLANTED_AWS_KEY,
            "planted AWS secret": PLANTED_AWS_SECRET,
            "planted GitHub token": PLANTED_PAT,
        }.items()
        for where, text in places.items()
        if value in text
    ]
    assert not leaks, "\n".join(leaks)
    # The command line of every scanner run never held the token (the stand-in records it).
    assert TOKEN not in json.dumps(status)


def test_scenario_helper_accepts_echo() -> None:
    # The stand-in option this file relies on exists (guards against a silent rename).
    Scenario().image("sha256:" + "0" * 64, echo_credentials=True)


def test_raw_reports_are_masked_in_place(tmp_path: Path) -> None:
    from check.process import sanitize_raw_file
    from securityhub.logs import register_secret

    register_secret(TOKEN)
    report = tmp_path / "trivy.json"
    secret = {"RuleID": "aws-access-key-id", "Match": PLANTED_AWS_KEY, "StartLine": 3,
              "Code": {"Lines": [{"Number": 3, "Content": f"KEY={PLANTED_AWS_KEY}",
                                  "Highlighted": f"KEY={PLANTED_AWS_KEY}"}]}}  # fmt: skip
    doc = {"Results": [{"Target": "/app/.env", "Secrets": [secret]}], "Note": f"t={TOKEN}"}
    report.write_text(json.dumps(doc))
    garbage = tmp_path / "garbage.json"
    garbage.write_text(f"{{not json {TOKEN}")
    log = tmp_path / "qscanner.stderr.log"
    log.write_text(f"line one\nAuthorization: Bearer {PLANTED_PAT}\ntoken {TOKEN}\n")
    for path in (report, garbage, log, tmp_path / "missing.log"):
        sanitize_raw_file(path)
    for path in (report, garbage, log):
        text = path.read_text()
        assert not any(v in text for v in (TOKEN, PLANTED_AWS_KEY, PLANTED_PAT)), text
    masked = json.loads(report.read_text())["Results"][0]["Secrets"][0]
    assert masked["RuleID"] == "aws-access-key-id" and masked["StartLine"] == 3
    assert masked["Match"] == "***" and masked["Code"]["Lines"][0]["Content"] == "***"
    assert log.read_text().startswith("line one\n")
