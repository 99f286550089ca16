"""One SNS alert per run: what became urgent, most risky first.

Two rules (`CONTAINERSCAN_ALERT`):
- `exploitable` (the default): findings NEWLY exploitable in a RUNNING image: exploited (CISA
  KEV) or likely to be (EPSS at or above `CONTAINERSCAN_ALERT_EPSS`, default 0.1), in an
  image an ECS task or a Lambda function runs now (`securityhub.risk.urgent`). "Newly" is a
  finding this run created, reactivated or updated (its content changed: the image started
  running, the CVE entered KEV, its EPSS band rose, ...); one that was urgent already and
  did not change is not repeated. A content change of an urgent finding for another reason
  (a package list changed) alerts again: that is the approximation, on the safe side.
- `severity`: the NEW findings (created or reactivated) at or above `ALERT_THRESHOLD`, as
  below.

Either way the findings are listed by risk score (`containerscan/Risk`), highest first.

"New" means: created in Security Hub by this run, or reactivated (a finding archived before
that came back is news); the sweep takes them from `PublishSummary.new_ids`. So a nightly
rerun of an unchanged registry alerts on nothing, neither does a rescan after a scanner
upgrade or an expired scan cache, an image pushed since the last run alerts on all of its
severe findings, and a rescan that found a fresh advisory alerts on that one. A finding
that failed to import is not new (the next run that imports it alerts). The message names
the image, the vulnerability or the secret rule, file and line, never a secret value
(findings do not carry one). No message at all when nothing new reaches the threshold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from securityhub import risk
from securityhub.aws import error_code
from securityhub.findings import SecretFinding, Severity, VulnerabilityFinding
from securityhub.logs import fields, get_logger

log = get_logger("check.alerts")

# SNS Publish: Subject at most 100 printable ASCII characters; Message at most 256 KB
# (SNS API reference). The body is kept well below.
SUBJECT_MAX = 100
MESSAGE_MAX = 200_000
MAX_LISTED = 200
EXPLOITABLE, SEVERITY = "exploitable", "severity"
ALERT_MODES = (EXPLOITABLE, SEVERITY)


@dataclass(frozen=True)
class Alert:
    subject: str
    message: str
    count: int


def _tag(finding: Any) -> str:
    """`[risk 90 CRITICAL KEV running]`: what put the finding where it is in the list."""
    parts = [finding.severity.name]
    exposure = getattr(finding, "exposure", None)
    if exposure is not None and exposure.risk is not None:
        parts.insert(0, f"risk {exposure.risk}")
    signals = risk.signals_of(finding)
    if signals.kev:
        parts.append("KEV")
    elif signals.epss is not None:
        parts.append(f"EPSS {signals.epss:.2f}")
    if exposure is not None and exposure.in_use:
        parts.append("running: " + ", ".join(exposure.in_use_by[:3]))
    return "[" + " ".join(parts) + "]"


def _line(finding: Any) -> str:
    image = finding.resource
    where = f"{image.account_id}/{image.region}/{image.repository}@{image.digest[:19]}"
    if image.tags:
        where += f" ({', '.join(image.tags[:3])})"
    if isinstance(finding, VulnerabilityFinding):
        pkgs = ", ".join(f"{p.name} {p.installed_version}" for p in finding.packages[:3])
        head = f"{_tag(finding)} {finding.vulnerability_id} {finding.title}"
        return f"{head} in {where}: {pkgs}"
    if isinstance(finding, SecretFinding):
        at = f"{finding.file_path}:{finding.line}"
        return f"{_tag(finding)} secret {finding.rule_id} in {where}: {at}"
    return f"{_tag(finding)} {where}"


def alertable(
    findings: Sequence[Any], mode: str, threshold: Severity, epss: float = risk.DEFAULT_ALERT_EPSS
) -> list[Any]:
    """The findings the rule alerts on, highest risk first (pure)."""
    if mode == EXPLOITABLE:
        chosen = [
            f
            for f in findings
            if f.exposure is not None and risk.urgent(risk.signals_of(f), f.exposure, epss)
        ]
    else:
        chosen = [f for f in findings if f.severity >= threshold]
    return sorted(
        chosen,
        key=lambda f: (-risk.risk_of(f), -int(f.severity), f.resource.repository, _line(f)),
    )


def build_alert(
    run_id: str,
    new_findings: Sequence[Any],
    threshold: Severity,
    *,
    locations: Sequence[str] = (),
    mode: str = SEVERITY,
    epss: float = risk.DEFAULT_ALERT_EPSS,
) -> Alert | None:
    """The alert for the findings the rule keeps (`alertable`), or None if there are none.

    `new_findings`: for `severity`, the created or reactivated ones; for `exploitable`, the
    created, reactivated or updated ones (the sweep passes what the mode needs).
    """
    severe = alertable(new_findings, mode, threshold, epss)
    if not severe:
        return None
    counts = Counter(f.severity.name for f in severe)
    summary = ", ".join(f"{counts[s.name]} {s.name}" for s in reversed(Severity) if counts[s.name])
    images = {(f.resource.account_id, f.resource.repository, f.resource.digest) for f in severe}
    if mode == EXPLOITABLE:
        what = f"finding(s) newly exploitable (KEV or EPSS >= {epss:g}) in running images"
        subject = f"containerscan: {len(severe)} exploitable finding(s) in running images"
    else:
        what = f"new finding(s) at or above {threshold.name}"
        subject = f"containerscan: {len(severe)} new finding(s) >= {threshold.name}"
    lines = [
        f"containerscan run {run_id}: {len(severe)} {what}",
        f"({summary}) in {len(images)} image(s), highest risk first.",
        "",
    ]
    body = "\n".join(lines)
    listed = 0
    for finding in severe[:MAX_LISTED]:
        line = _line(finding) + "\n"
        if len(body) + len(line) > MESSAGE_MAX:
            break
        body += line
        listed += 1
    if listed < len(severe):
        body += f"... and {len(severe) - listed} more (see the run's status).\n"
    if locations:
        body += "\nRun outputs: " + " ".join(locations) + "\n"
    ascii_subject = subject.encode("ascii", "replace").decode()[:SUBJECT_MAX]
    return Alert(subject=ascii_subject, message=body, count=len(severe))


def send_alert(sns: Any, topic_arn: str, alert: Alert) -> str | None:
    """Publish; the message id, or None (logged) when SNS refused it."""
    try:
        response = sns.publish(TopicArn=topic_arn, Subject=alert.subject, Message=alert.message)
    except (ClientError, BotoCoreError) as exc:
        log.error("alert not sent", extra=fields(topic=topic_arn, error=error_code(exc)))
        return None
    return str(response.get("MessageId"))
