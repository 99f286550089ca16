"""The run's page: `runs/<run-id>/status.html` beside `status.json`, for a person.

One self-contained HTML file (inline style, no script, no external asset, so it opens from
S3, a mail attachment or a laptop as it is): the run's outcome; findings by severity and by
repository; what is new and what was fixed since the previous run; the failed images and
why. Pure: it takes this run's status document (and the previous run's, when known) and
returns the page; every value is HTML-escaped.

"New" and "fixed" come from the ledger's correlation (findings created and archived by this
run in Security Hub) and, when the previous run's status is known, from comparing the two:
repositories whose findings went down, images that are gone.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL")
STATUS_PAGE = "status.html"
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;color:#1b1f24}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.8em}
table{border-collapse:collapse;margin:.5em 0}th,td{padding:.25em .8em;text-align:left;
border-bottom:1px solid #d0d7de}td.n{text-align:right;font-variant-numeric:tabular-nums}
.CRITICAL{color:#8b0000;font-weight:600}.HIGH{color:#b54708}.status-done{color:#116329}
.status-partial,.status-failed,.status-findings{color:#8b0000}code{font-size:.92em}
.muted{color:#57606a}
"""


def _text(value: Any) -> str:
    return escape("" if value is None else str(value))


def _table(columns: Sequence[str], rows: Iterable[Sequence[Any]],
           numeric: Iterable[int] = ()) -> str:
    numbers = set(numeric)
    head = "".join(f"<th>{_text(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="n">{_text(v)}</td>' if i in numbers else f"<td>{_text(v)}</td>"
            for i, v in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def by_repository(images: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """repository -> images, findings, new findings and one count per severity."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for image in images:
        counts = out[str(image.get("repository", ""))]
        counts["images"] += 1
        counts["findings"] += int(image.get("findings", 0))
        counts["new"] += int(image.get("new_findings", 0))
        counts["failed"] += image.get("outcome") == "failed"
        for severity, n in (image.get("severities") or {}).items():
            counts[severity] += int(n)
    return {repo: dict(c) for repo, c in sorted(out.items())}


def _since_previous(status: Mapping[str, Any],
                    previous: Mapping[str, Any] | None) -> tuple[list[list[Any]], list[list[Any]]]:
    """(repositories with fewer findings than before, images that are gone)."""
    if previous is None:
        return [], []
    now = by_repository(status.get("images", ()))
    before = by_repository(previous.get("images", ()))
    fewer = [[repo, counts.get("findings", 0), now.get(repo, {}).get("findings", 0)]
             for repo, counts in before.items()
             if now.get(repo, {}).get("findings", 0) < counts.get("findings", 0)]
    present = {(i.get("repository"), i.get("digest")) for i in status.get("images", ())}
    gone = [[i.get("repository"), str(i.get("digest", ""))[:19], i.get("findings", 0)]
            for i in previous.get("images", ())
            if (i.get("repository"), i.get("digest")) not in present]
    return fewer, gone


def render(status: Mapping[str, Any], previous: Mapping[str, Any] | None = None) -> str:
    """The page for `status` (the run's status.json document)."""
    run_id = _text(status.get("run_id"))
    state = str(status.get("status", "unknown"))
    counts = status.get("counts") or {}
    severities = counts.get("severities") or {}
    images = list(status.get("images") or ())
    hub = status.get("security_hub") or {}
    scanner = status.get("scanner") or {}
    used = f", scanner {_text(scanner.get('name'))} {_text(scanner.get('version'))}"
    parts = [
        f"<h1>containerscan run <code>{run_id}</code></h1>",
        f'<p><span class="status-{_text(state)}">{_text(state)}</span> '
        f"(exit {_text(status.get('exit_code'))}) in {_text(status.get('duration_s'))} s, "
        f"started {_text(status.get('started_at'))}{used if scanner else ''}</p>",
        _table(["images", "unique digests", "scanned", "cached", "failed", "findings",
                "new findings"],
               [[counts.get(k, 0) for k in ("images", "unique_digests", "scanned", "cached",
                                            "failed", "findings", "new_findings")]],
               numeric=range(7)),
        "<h2>Findings by severity</h2>",
        _table(["severity", "findings"],
               [[s, severities.get(s, 0)] for s in SEVERITIES], numeric=[1]),
        "<h2>Findings by repository</h2>",
    ]
    repositories = by_repository(images)
    parts.append(_table(
        ["repository", "images", "findings", *SEVERITIES, "new", "failed"],
        [[repo, c.get("images", 0), c.get("findings", 0), *(c.get(s, 0) for s in SEVERITIES),
          c.get("new", 0), c.get("failed", 0)] for repo, c in repositories.items()],
        numeric=range(1, 10)) if repositories else '<p class="muted">no images</p>')

    parts.append("<h2>New since the previous run</h2>")
    new_images = [[i.get("repository"), str(i.get("digest", ""))[:19], i.get("new_findings", 0)]
                  for i in images if i.get("new_findings")]
    parts.append(_table(["repository", "digest", "new findings"], new_images, numeric=[2])
                 if new_images else '<p class="muted">no new findings</p>')

    parts.append("<h2>Fixed since the previous run</h2>")
    archived = [[scope, s.get("archived", 0)] for scope, s in hub.items() if s.get("archived")]
    parts.append(_table(["Security Hub scope", "findings archived"], archived, numeric=[1])
                 if archived else '<p class="muted">no findings archived</p>')
    fewer, gone = _since_previous(status, previous)
    if previous is not None:
        parts.append(f'<p class="muted">compared with run '
                     f"<code>{_text(previous.get('run_id'))}</code></p>")
        if fewer:
            parts.append(_table(["repository", "findings before", "findings now"], fewer,
                                numeric=[1, 2]))
        if gone:
            parts.append(_table(["image gone", "digest", "findings it had"], gone, numeric=[2]))

    parts.append("<h2>Failed images</h2>")
    failed = [[i.get("repository"), str(i.get("digest", ""))[:19], i.get("error", "")]
              for i in images if i.get("outcome") == "failed"]
    parts.append(_table(["repository", "digest", "why"], failed)
                 if failed else '<p class="muted">none: every selected image was scanned</p>')
    errors = [[e.get("scope"), e.get("error")] for e in status.get("errors") or ()]
    if errors:
        parts += ["<h2>Errors</h2>", _table(["scope", "error"], errors)]
    body = "\n".join(parts)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width\">"
            # Nothing outside the file may load, whoever opens it.
            "<meta http-equiv=\"Content-Security-Policy\" "
            "content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            f"<title>containerscan run {run_id}: {_text(state)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")
