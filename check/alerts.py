"""One SNS alert per run, summarizing the NEW findings at or above a threshold.

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

from securityhub.aws import error_code
from securityhub.findings import SecretFinding, Severity, VulnerabilityFinding
from securityhub.logs import fields, get_logger

log = get_logger("check.alerts")

# SNS Publish: Subject at most 100 printable ASCII characters; Message at most 256 KB
# (SNS API reference). The body is kept well below.
SUBJECT_MAX = 100
MESSAGE_MAX = 200_000
MAX_LISTED = 200


@dataclass(frozen=True)
class Alert:
    subject: str
    message: str
    count: int


def _line(finding: Any) -> str:
    image = finding.resource
    where = f"{image.account_id}/{image.region}/{image.repository}@{image.digest[:19]}"
    if image.tags:
        where += f" ({', '.join(image.tags[:3])})"
    if isinstance(finding, VulnerabilityFinding):
        pkgs = ", ".join(f"{p.name} {p.installed_version}" for p in finding.packages[:3])
        head = f"[{finding.severity.name}] {finding.vulnerability_id} {finding.title}"
        return f"{head} in {where}: {pkgs}"
    if isinstance(finding, SecretFinding):
        return (
            f"[{finding.severity.name}] secret {finding.rule_id} in {where}: "
            f"{finding.file_path}:{finding.line}"
        )
    return f"[{finding.severity.name}] {where}"


def build_alert(
    run_id: str, new_findings: Sequence[Any], threshold: Severity, *, locations: Sequence[str] = ()
) -> Alert | None:
    """The alert for the new findings at or above `threshold`, or None if there are none."""
    severe = sorted(
        (f for f in new_findings if f.severity >= threshold),
        key=lambda f: (-int(f.severity), f.resource.repository, _line(f)),
    )
    if not severe:
        return None
    counts = Counter(f.severity.name for f in severe)
    summary = ", ".join(f"{counts[s.name]} {s.name}" for s in reversed(Severity) if counts[s.name])
    images = {(f.resource.account_id, f.resource.repository, f.resource.digest) for f in severe}
    subject = f"containerscan: {len(severe)} new finding(s) >= {threshold.name}"
    lines = [
        f"containerscan run {run_id}: {len(severe)} new finding(s) at or above {threshold.name}",
        f"({summary}) in {len(images)} image(s).",
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
