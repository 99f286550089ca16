"""Mask credentials in captured command lines before they leave the sidecar.

A rule with `captureArgs: true` copies argv into events, which go to the events file,
CloudWatch, SNS, Security Hub and Qualys. Command lines carry credentials often enough
(`curl -H "Authorization: Bearer ..."`, `git clone https://user:token@host/...`,
`mysql --password=...`, `AWS_SECRET_ACCESS_KEY=... cmd`), so every captured argument is
masked here: the shape stays readable (`Bearer ***`, `https://***@host`), the value goes.

Formats of the tokens matched: GitHub's (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` + 36
characters; fine-grained `github_pat_`), AWS access key ids (`AKIA`/`ASIA` + 16), and
HTTP `Authorization` schemes (RFC 9110 11.6.2). Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MASK = "***"
# Options whose *next* argument is a secret (`--password hunter2`, `curl -u user:pass`).
_SECRET_OPTIONS = frozenset(
    {
        "--password",
        "--passwd",
        "--pass",
        "--token",
        "--secret",
        "--api-key",
        "--apikey",
        "--access-token",
        "--client-secret",
        "--aws-secret-access-key",
        "--private-key",
    }
)
_USER_OPTIONS = frozenset({"-u", "--user", "--proxy-user", "-U"})  # curl: user:password

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://***@host
    (re.compile(r"(?<=://)[^/@\s]+@"), MASK + "@"),
    # Authorization / Proxy-Authorization header values, and bare `Bearer x` / `Basic x`
    (re.compile(r"(?i)\b(bearer|basic|token|digest)(\s+)[^\s\"',;]+"), r"\1\2" + MASK),
    (re.compile(r"(?i)(authorization\s*:\s*)(?!bearer|basic|token|digest)[^\s\"',;]+"),
     r"\1" + MASK),
    # GitHub tokens
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), "gh_" + MASK),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"), "github_pat_" + MASK),
    # AWS access key ids (the secret that goes with them is caught by the key=value rule)
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), r"\1" + MASK),
    # key=value and key: value with a secret-sounding key
    (re.compile(
        r"(?i)((?:^|[\s\"'&?;,{-])[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key"
        r"|access[_-]?key|private[_-]?key|credential)s?[\"']?\s*[:=]\s*[\"']?)[^\s\"'&;,}]+"
    ), r"\1" + MASK),
)  # fmt: skip


def mask_text(text: str) -> str:
    """`text` with every credential the rules recognise replaced by `***`."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def mask_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """argv with credentials masked, including the argument after `--password`-like
    options and the password half of `-u user:password`."""
    out: list[str] = []
    previous = ""
    for arg in argv:
        if previous in _SECRET_OPTIONS:
            out.append(MASK)
        elif previous in _USER_OPTIONS and ":" in arg:
            out.append(arg.split(":", 1)[0] + ":" + MASK)
        else:
            out.append(mask_text(arg))
        previous = arg.lower()
    return tuple(out)
