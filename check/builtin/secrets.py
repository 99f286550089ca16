"""Secret detection in file contents: rules, a keyword pre-filter, an entropy check.

A file is searched only when it looks like text (no NUL byte in its first 8 KiB, not a
known binary or archive suffix) and one of the rules' keywords occurs in it, so the
regular expressions run on few files. A hit reports the rule, the file and the line; the
value itself never leaves this module except masked (`mask`): the rule's public prefix
(`AKIA`, `ghp_`) and asterisks. `securityhub.findings.SecretFinding` carries no value.

The generic rule (`password = "..."`, `api_key: ...`) fires only when the value's Shannon
entropy reaches `GENERIC_MIN_ENTROPY` bits per character and the value is not an obvious
placeholder, which keeps configuration templates and documentation quiet.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from securityhub.findings import Severity

BINARY_SNIFF_BYTES = 8192
# Shannon entropy, bits per character: random base64 is ~6, English words ~3-4 at this
# length; 3.5 keeps "changeme123" out and real generated passwords in.
GENERIC_MIN_ENTROPY = 3.5
SKIPPED_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".gif", ".ico", ".webp", ".gz", ".tgz", ".bz2", ".xz", ".zst",
    ".zip", ".jar", ".whl", ".so", ".a", ".o", ".pyc", ".mo", ".woff", ".woff2", ".ttf",
    ".otf", ".pdf", ".db", ".sqlite",
)
PLACEHOLDERS = re.compile(
    r"(?i)^(?:\$\{?[\w.-]+\}?|<[^>]*>|\{\{.*\}\}|%\(?\w+\)?s?|x{4,}|\*{3,}|changeme|"
    r"password|secret|example\w*|dummy\w*|placeholder|your[_-]?\w*|none|null|true|false)$"
)


@dataclass(frozen=True)
class SecretRule:
    id: str
    category: str
    title: str
    severity: Severity
    pattern: re.Pattern[bytes]
    keywords: tuple[bytes, ...]
    group: int = 0  # the regex group that holds the secret value
    shown_prefix: int = 0  # characters of the value that are a public prefix (AKIA, ghp_)
    min_entropy: float = 0.0


def _rule(rule_id: str, category: str, title: str, severity: Severity, pattern: str,  # noqa: PLR0917 - a table row
          keywords: tuple[str, ...], group: int = 0, shown_prefix: int = 0,
          min_entropy: float = 0.0) -> SecretRule:
    return SecretRule(rule_id, category, title, severity, re.compile(pattern.encode()),
                      tuple(k.encode() for k in keywords), group, shown_prefix, min_entropy)


RULES: tuple[SecretRule, ...] = (
    _rule("aws-access-key-id", "AWS", "AWS access key ID", Severity.CRITICAL,
          r"(?<![A-Z0-9])((?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16})(?![A-Z0-9])",
          ("akia", "asia", "abia", "acca"), group=1, shown_prefix=4),
    _rule("aws-secret-access-key", "AWS", "AWS secret access key", Severity.CRITICAL,
          r"(?i)aws_?(?:secret)?_?(?:access)?_?key[\"']?\s*[:=]\s*[\"']?"
          r"([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])",
          ("aws",), group=1),
    _rule("private-key", "PrivateKey", "Private key", Severity.HIGH,
          r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----",
          ("private key",), shown_prefix=0),
    _rule("github-pat", "GitHub", "GitHub personal access token", Severity.CRITICAL,
          r"(?<![A-Za-z0-9_])(gh[pousr]_[A-Za-z0-9]{36,255})", ("ghp_", "gho_", "ghu_",
                                                               "ghs_", "ghr_"),
          group=1, shown_prefix=4),
    _rule("github-fine-grained-pat", "GitHub", "GitHub fine-grained access token",
          Severity.CRITICAL, r"(github_pat_[A-Za-z0-9_]{82})", ("github_pat_",),
          group=1, shown_prefix=11),
    _rule("gitlab-pat", "GitLab", "GitLab personal access token", Severity.CRITICAL,
          r"(glpat-[A-Za-z0-9_-]{20})(?![A-Za-z0-9_-])", ("glpat-",), group=1,
          shown_prefix=6),
    _rule("slack-token", "Slack", "Slack token", Severity.HIGH,
          r"(xox[baprs]-[0-9A-Za-z-]{10,250})", ("xoxb-", "xoxa-", "xoxp-", "xoxr-", "xoxs-"),
          group=1, shown_prefix=5),
    _rule("slack-webhook-url", "Slack", "Slack webhook URL", Severity.MEDIUM,
          r"(https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{16,})",
          ("hooks.slack.com",), group=1, shown_prefix=31),
    _rule("generic-credential", "Generic", "Credential assigned in a file", Severity.MEDIUM,
          r"(?i)(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|credential)s?"
          r"[\"']?\s*(?:[:=]|:=|=>)\s*[\"']([^\"'\s]{8,200})[\"']",
          ("password", "passwd", "pwd", "secret", "token", "api_key", "apikey", "api-key",
           "access_key", "access-key", "credential"),
          group=1, min_entropy=GENERIC_MIN_ENTROPY),
)

_KEYWORDS = re.compile(
    b"|".join(re.escape(k) for k in sorted({k for r in RULES for k in r.keywords})),
    re.IGNORECASE,
)


def rule_by_id(rule_id: str) -> SecretRule:
    """The rule of a hit that crossed a process boundary as its id."""
    for rule in RULES:
        if rule.id == rule_id:
            return rule
    raise KeyError(rule_id)


@dataclass(frozen=True)
class SecretHit:
    rule: SecretRule
    path: str
    line: int
    masked: str  # the value with everything but its public prefix replaced by '*'


def shannon_entropy(value: bytes) -> float:
    if not value:
        return 0.0
    counts = Counter(value)
    total = len(value)
    return -sum(c / total * math.log2(c / total) for c in counts.values())


def mask(value: str, shown_prefix: int = 0) -> str:
    shown = value[:shown_prefix] if shown_prefix < len(value) else ""
    return shown + "*" * min(len(value) - len(shown), 32)


def is_text(path: str, data: bytes) -> bool:
    if path.lower().endswith(SKIPPED_SUFFIXES):
        return False
    return b"\0" not in data[:BINARY_SNIFF_BYTES]


def scan_bytes(path: str, data: bytes, rules: tuple[SecretRule, ...] = RULES
               ) -> Iterator[SecretHit]:
    """Every rule hit in one file's content, with its 1-based line number.

    The generic rule (the one with an entropy threshold) comes last in RULES and stays
    quiet on lines a specific rule already reported.
    """
    if not data or not is_text(path, data) or not _KEYWORDS.search(data):
        return
    lowered = data.lower()
    lines_hit: set[int] = set()
    for rule in rules:
        if not any(k in lowered for k in rule.keywords):
            continue
        for match in rule.pattern.finditer(data):
            value = match.group(rule.group)
            if rule.min_entropy:
                if shannon_entropy(value) < rule.min_entropy:
                    continue
                if PLACEHOLDERS.match(value.decode("utf-8", "replace")):
                    continue
            line = data.count(b"\n", 0, match.start()) + 1
            if rule.min_entropy and line in lines_hit:
                continue  # a specific rule already reported this line
            lines_hit.add(line)
            text = value.decode("utf-8", "replace")
            yield SecretHit(rule, path, line, mask(text, rule.shown_prefix))
