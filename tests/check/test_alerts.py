"""The per-run alert (pure), the progress reporter and the outputs tree."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from check.alerts import MAX_LISTED, SUBJECT_MAX, build_alert
from check.outputs import RunOutputs
from check.progress import Progress, table
from securityhub.findings import (
    EcrImage,
    ScannerInfo,
    SecretFinding,
    Severity,
    VulnerabilityFinding,
)

IMAGE = EcrImage("123456789012", "us-east-1", "payments/api", "sha256:" + "a" * 64, ("1.0",))
SCANNER = ScannerInfo("qscanner", "4.8.0-2")


def vuln(qid: str, severity: Severity) -> VulnerabilityFinding:
    return VulnerabilityFinding(IMAGE, qid, f"Update for {qid}", severity, SCANNER)


def test_alert_lists_new_findings_at_or_above_the_threshold() -> None:
    secret = SecretFinding(IMAGE, "aws-access-key-id", "AWS", "AWS key", Severity.CRITICAL,
                           SCANNER, "/app/.env", 3)  # fmt: skip
    findings = [
        vuln("1", Severity.LOW),
        vuln("2", Severity.HIGH),
        vuln("3", Severity.CRITICAL),
        secret,
    ]
    alert = build_alert("run-1", findings, Severity.HIGH, locations=["s3://b/runs/run-1/"])
    assert alert is not None and alert.count == 3
    assert "1 HIGH" in alert.message and "2 CRITICAL" in alert.message
    assert "/app/.env:3" in alert.message and "Update for 1" not in alert.message
    assert alert.message.index("Update for 3") < alert.message.index("Update for 2")
    assert "s3://b/runs/run-1/" in alert.message
    assert len(alert.subject) <= SUBJECT_MAX and alert.subject.isascii()
    assert build_alert("run-1", [vuln("1", Severity.LOW)], Severity.HIGH) is None


def test_alert_is_bounded() -> None:
    many = [vuln(str(i), Severity.CRITICAL) for i in range(MAX_LISTED + 50)]
    alert = build_alert("run-2", many, Severity.HIGH)
    assert alert is not None and "and 50 more" in alert.message


def test_progress_line_on_a_terminal_and_logs_elsewhere(caplog, monkeypatch) -> None:
    ticks = iter(range(100))
    stream = io.StringIO()
    progress = Progress(3, stream=stream, interactive=True, clock=lambda: float(next(ticks)))
    for outcome in ("scanned", "cached", "failed"):
        progress.advance(outcome)
    progress.finish()
    assert "\r[3/3] scanned 1 cached 1 failed 1" in stream.getvalue()
    caplog.set_level(logging.INFO, logger="containerscan")
    monkeypatch.setattr(logging.getLogger("containerscan"), "propagate", True)
    ticks2 = iter(range(0, 1000, 40))
    quiet = Progress(2, stream=None, log_interval=30, clock=lambda: float(next(ticks2)))
    quiet.advance("scanned")
    quiet.advance("scanned")
    records = [r for r in caplog.records if r.getMessage() == "sweep progress"]
    assert [r.fields["done"] for r in records] == [1, 2]


def test_table_aligns_columns() -> None:
    text = table([{"a": "x", "b": "long value"}, {"a": "yyyy", "b": ""}], ("a", "b"))
    lines = text.splitlines()
    assert lines[0].startswith("A     B") and lines[1].startswith("x     long value")


def test_local_outputs_tree(tmp_path: Path) -> None:
    outputs = RunOutputs(local_dir=tmp_path)
    outputs.write_json("runs/r1/status.json", {"ok": True})
    raw = tmp_path / "report.sarif.json"
    raw.write_text("{}")
    outputs.write_file("runs/r1/images/sha256-aa/raw/report.sarif.json", raw)
    outputs.write_file("runs/r1/images/sha256-aa/raw/missing.json", tmp_path / "missing.json")
    assert json.loads((tmp_path / "runs/r1/status.json").read_text()) == {"ok": True}
    assert (tmp_path / "runs/r1/images/sha256-aa/raw/report.sarif.json").read_text() == "{}"
    assert outputs.written == 2 and len(outputs.errors) == 1
    assert outputs.locations("r1") == [f"{tmp_path}/runs/r1/"]


def test_alert_lists_by_risk_and_the_default_rule_wants_exploitable_running_images() -> None:
    from dataclasses import replace

    from check.alerts import EXPLOITABLE
    from securityhub.exposure import Exposure

    running = Exposure(in_use=True, running_tasks=1, in_use_by=("prod/web",), risk=60)
    idle = Exposure(in_use=False, risk=40)
    high_running = replace(vuln("high-running", Severity.HIGH), exposure=running)
    critical_idle = replace(vuln("critical-idle", Severity.CRITICAL), exposure=idle)
    alert = build_alert("run-3", [critical_idle, high_running], Severity.HIGH)
    assert alert is not None
    # The HIGH that runs outranks the CRITICAL nobody runs.
    assert alert.message.index("high-running") < alert.message.index("critical-idle")
    assert "[risk 60 HIGH running: prod/web]" in alert.message
    # Neither is exploited nor likely to be: the default rule stays quiet.
    assert build_alert("run-3", [critical_idle, high_running], Severity.HIGH,
                       mode=EXPLOITABLE) is None  # fmt: skip
