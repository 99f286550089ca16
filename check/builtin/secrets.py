"""Secret detection in file contents: a rule set, an Aho-Corasick prefilter, RE2 regexes.

A file is searched only when it looks like text (no NUL byte in its first 8 KiB, not a
known binary or archive suffix). One Aho-Corasick pass (`pyahocorasick`) over the
lowercased content finds which rules' keywords occur; only those rules' regular
expressions run, and they run on RE2 (`google-re2`: linear time whatever the input, so no
file can make a rule backtrack for minutes). A single RE2 alternation of all keywords goes
first: a file without any is done after one DFA pass. A hit reports the rule, the file and the line;
the value itself never leaves this module except masked (`mask`): the rule's public prefix
(`AKIA`, `ghp_`) and asterisks. `securityhub.findings.SecretFinding` carries no value.

False positives are kept down three ways:
- an allowlist (`is_placeholder`): the documented example values (AWS's
  `AKIAIOSFODNN7EXAMPLE`, anything containing "example"), placeholders (`ghp_XXXX...`,
  `${TOKEN}`, `<password>`, `changeme`, one character repeated, counting sequences) are
  never reported, so a documented example is never CRITICAL;
- the generic `KEY=value` rule needs a value whose Shannon entropy reaches
  `GENERIC_MIN_ENTROPY` bits per character, that holds a digit or a symbol (what separates
  `DJANGO_SECRET_KEY=k8#...` from `token = self.token` or `key: "_RSAPrivateKey"`), that
  is not a path or a URL, and, unquoted, runs to the next blank in the characters
  credentials are made of (so `token = split_header[1]` is code, not a value);
- severity by kind: live cloud, VCS, payment and registry tokens are CRITICAL, other
  service tokens, private keys, JWTs and database URLs HIGH, generic assignments MEDIUM.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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
# Values that are shapes, not secrets: template variables, markup, masks, the usual words.
PLACEHOLDERS = re.compile(
    r"(?i)^(?:\$\{?[\w.-]+\}?|<[^>]*>|\{\{.*\}\}|%\(?\w+\)?s?|\$\(.*\)|\*{3,}.*|x{4,}|"
    r"changeme\w*|pass(?:word|wd)?\d*|secret|example\w*|dummy\w*|placeholder\w*|sample\w*|"
    r"your[_-]?\w*|my[_-]\w*|none|null|true|false|undefined|redacted|replace[_-]?me\w*|"
    r"insert[_-]?\w*|todo|tbd|fixme|test(?:ing)?\d*|foo|bar|baz|foobar|qux)$"
)
_PLACEHOLDER_PARTS = ("example", "xxxx", "****", "${", "{{", "0123456789", "123456789",
                      "abcdefghij", "your_", "your-", "placeholder", "changeme", "<", ">")
# Published examples that are not marked as such, and keys that are not secrets by design:
# jwt.io's sample token signature, PyJWT's README token, the OAuth examples of RFC 6749
# (sections 4.1.4, 5.1), RFC 7009 (2.1) and RFC 5849 (1.2); Stripe's publishable (pk_) and
# test-mode keys.
DOCUMENTED_EXAMPLES = ("SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
                       "4twFt5NiznN84AWoo1d7KO1T_yoc0Z6XOpOVswacPZg",
                       "2YotnFZFEjr1zCsicMWpAA", "tGzv3JOkF0XG5Qx2TlKWIA",
                       "SplxlOBeZQQYbYS6WxSbIA", "ad180jjd733klru7", "hh5s93j4hdidpola",
                       "nnch734d00sl2jdk", "pfkkdhi9sl3r4s00",
                       "45ghiukldjahdnhzdauz", "agabcdefddddafdd")
NOT_SECRET_PREFIXES = ("pk_live_", "pk_test_", "sk_test_", "rk_test_")


@dataclass(frozen=True)
class SecretRule:
    id: str
    category: str
    title: str
    severity: Severity
    pattern: bytes  # an RE2 pattern; the first non-empty group of `groups` is the value
    keywords: tuple[str, ...]  # lowercase; the rule's regex runs only if one occurs
    groups: tuple[int, ...] = (0,)
    shown_prefix: int = 0  # characters of the value that are a public prefix (AKIA, ghp_)
    min_entropy: float = 0.0

    @functools.cached_property
    def regex(self) -> Any:
        import re2

        return re2.compile(self.pattern)


def _rule(rule_id: str, category: str, title: str, severity: Severity, pattern: str,  # noqa: PLR0917 - a table row
          keywords: tuple[str, ...], groups: tuple[int, ...] = (1,), shown_prefix: int = 0,
          min_entropy: float = 0.0) -> SecretRule:
    return SecretRule(rule_id, category, title, severity, pattern.encode(), keywords, groups,
                      shown_prefix, min_entropy)


_C, _H, _M = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM
_GENERIC_KEY = (r"(?i)\b[a-z0-9_.-]*?(?:password|passwd|pwd|secret|token|api[_-]?key|"
                r"access[_-]?key|credentials?|private[_-]?key|auth)"
                r"(?:[_-]?(?:key|base|value))?s?[\"']?[ \t]*(?::=|=>|[:=])[ \t]*")

RULES: tuple[SecretRule, ...] = (
    # Cloud providers.
    _rule("aws-access-key-id", "AWS", "AWS access key ID", _C,
          r"\b((?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16})\b", ("akia", "asia", "abia", "acca"),
          shown_prefix=4),
    _rule("aws-secret-access-key", "AWS", "AWS secret access key", _C,
          r"(?im)aws_?(?:secret)?_?(?:access)?_?key[\"']?\s*(?::=|=>|[:=])\s*[\"']?"
          r"([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)", ("aws",)),
    _rule("gcp-api-key", "GCP", "Google API key", _H,
          r"\b(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)", ("aiza",), shown_prefix=4),
    _rule("azure-storage-account-key", "Azure", "Azure storage account key", _C,
          r"(?i)AccountKey=([A-Za-z0-9+/]{86}==)", ("accountkey=",)),
    # Version control and CI.
    _rule("github-pat", "GitHub", "GitHub access token", _C,
          r"\b(gh[pousr]_[A-Za-z0-9]{36,255})\b", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
          shown_prefix=4),
    _rule("github-fine-grained-pat", "GitHub", "GitHub fine-grained access token", _C,
          r"\b(github_pat_[A-Za-z0-9_]{82})\b", ("github_pat_",), shown_prefix=11),
    _rule("gitlab-pat", "GitLab", "GitLab personal access token", _C,
          r"\b(glpat-[A-Za-z0-9_-]{20})(?:[^A-Za-z0-9_-]|$)", ("glpat-",), shown_prefix=6),
    # Package registries.
    _rule("npm-token", "npm", "npm access token", _C, r"\b(npm_[A-Za-z0-9]{36})\b", ("npm_",),
          shown_prefix=4),
    _rule("pypi-token", "PyPI", "PyPI API token", _C,
          r"\b(pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,})", ("pypi-ageichlwas5vcmc",),
          shown_prefix=5),
    _rule("npmrc-auth", "npm", "Registry credential in .npmrc", _H,
          r"(?im)(?:^|:)_(?:authToken|auth|password)\s*=\s*[\"']?([^\s\"']{8,})",
          ("_authtoken", "_auth", "_password")),
    _rule("docker-config-auth", "Docker", "Registry credential in a Docker config.json", _H,
          r"\"(?:auth|identitytoken)\"\s*:\s*\"([A-Za-z0-9+/_.-]{12,}={0,2})\"",
          ("\"auth\"", "\"identitytoken\"")),
    # Payment.
    _rule("stripe-secret-key", "Stripe", "Stripe live secret key", _C,
          r"\b((?:sk|rk)_live_[0-9A-Za-z]{24,99})\b", ("sk_live_", "rk_live_"), shown_prefix=8),
    # Chat and messaging.
    _rule("slack-token", "Slack", "Slack token", _H, r"\b(xox[baprs]-[0-9A-Za-z-]{10,250})",
          ("xoxb-", "xoxa-", "xoxp-", "xoxr-", "xoxs-"), shown_prefix=5),
    _rule("slack-webhook-url", "Slack", "Slack webhook URL", _M,
          r"(https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{16,})",
          ("hooks.slack.com",), shown_prefix=31),
    _rule("sendgrid-api-key", "SendGrid", "SendGrid API key", _H,
          r"\b(SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})", ("sg.",), shown_prefix=3),
    # Keys and tokens of any service.
    _rule("private-key", "PrivateKey", "Private key", _H,
          r"(-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----)\s*"
          r"(?:[A-Za-z-]+: [^\n]*\n\s*)*[A-Za-z0-9+/=]{12,}", ("private key",)),
    _rule("jwt", "JWT", "JSON Web Token", _H,
          r"\b(eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,})", ("eyj",),
          shown_prefix=3),
    _rule("database-url-password", "Database", "Password in a database URL", _H,
          r"(?i)\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|"
          r"sqlserver)://[^:@/\s]{0,100}:([^@\s/]{3,200})@",
          ("postgres", "mysql", "mariadb", "mongodb", "redis", "amqp", "mssql", "sqlserver")),
    # Last: quiet on lines a specific rule reported.
    _rule("generic-credential", "Generic", "Credential assigned in a file", _M,
          _GENERIC_KEY + r"(?:\"([^\"\s]{8,200})\"|'([^'\s]{8,200})'|"
          r"([A-Za-z0-9!#$%&*()+./:=?@^_~-]{8,200})(?:\s|$))",
          ("password", "passwd", "pwd", "secret", "token", "api_key", "apikey", "api-key",
           "access_key", "access-key", "credential", "private_key", "auth"),
          groups=(1, 2, 3), min_entropy=GENERIC_MIN_ENTROPY),
)
_BY_ID = {rule.id: rule for rule in RULES}


def rule_by_id(rule_id: str) -> SecretRule:
    """The rule of a hit that crossed a process boundary as its id."""
    return _BY_ID[rule_id]


@functools.lru_cache(maxsize=1)
def _any_keyword() -> Any:
    """One RE2 alternation of every keyword: most files have none, and RE2's DFA says so
    several times faster than the Aho-Corasick walk that then names the rules."""
    import re2

    keywords = sorted({k for rule in RULES for k in rule.keywords})
    return re2.compile(b"|".join(re2.escape(k.encode()) for k in keywords))


@functools.lru_cache(maxsize=1)
def _automaton() -> Any:
    """Keyword -> the indexes of the rules it enables, as one Aho-Corasick automaton."""
    import ahocorasick

    by_keyword: dict[str, list[int]] = {}
    for index, rule in enumerate(RULES):
        for keyword in rule.keywords:
            by_keyword.setdefault(keyword, []).append(index)
    automaton = ahocorasick.Automaton()
    for keyword, indexes in by_keyword.items():
        automaton.add_word(keyword, tuple(indexes))
    automaton.make_automaton()
    return automaton


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


def is_placeholder(value: str, shown_prefix: int = 0) -> bool:
    """A documented example, a template variable, a mask or a filler, not a credential."""
    rest = value[shown_prefix:]
    lowered = value.lower()
    if PLACEHOLDERS.match(value) or any(part in lowered for part in _PLACEHOLDER_PARTS):
        return True
    if any(example in value for example in DOCUMENTED_EXAMPLES) or \
            value.startswith(NOT_SECRET_PREFIXES):
        return True
    return len(set(rest.lower())) <= 3  # ghp_AAAA..., 0000..., abab...


_SYMBOLS = frozenset("!#$%&*+=?@^~")
_CALL = re.compile(r"[A-Za-z_][\w.]*\(")  # `self.recv(2)`: code, not a value


def _credential_shaped(value: str) -> bool:
    """What a generic assignment's value must look like: a digit or a symbol in it (an
    identifier, a type name or an attribute chain has neither), not a path or a URL."""
    if value.startswith(("/", "./", "~/", "http:", "https:")) or _CALL.match(value):
        return False
    return any(c.isdigit() or c in _SYMBOLS for c in value)


def prepare() -> None:
    """Compile every rule and the keyword automaton now (a scan's child process forked
    afterwards inherits them instead of compiling them again for each image)."""
    _any_keyword()
    _automaton()
    for rule in RULES:
        _ = rule.regex


def rules_for(lowered: bytes) -> list[int]:
    """The indexes of the rules whose keywords occur in the lowercased content."""
    found: set[int] = set()
    for _, indexes in _automaton().iter(lowered.decode("latin-1")):
        found.update(indexes)
        if len(found) == len(RULES):
            break
    return sorted(found)


def scan_bytes(path: str, data: bytes, rules: tuple[SecretRule, ...] = RULES
               ) -> Iterator[SecretHit]:
    """Every rule hit in one file's content, with its 1-based line number.

    The generic rule (the one with an entropy threshold) comes last in RULES and stays
    quiet on lines a specific rule already reported.
    """
    if not data or not is_text(path, data):
        return
    lowered = data.lower()
    if not _any_keyword().search(lowered):
        return
    triggered = rules_for(lowered)
    if not triggered:
        return
    lines_hit: set[int] = set()
    chosen = None if rules is RULES else {rule.id for rule in rules}
    for index in triggered:
        rule = RULES[index]
        if chosen is not None and rule.id not in chosen:
            continue
        position, line = 0, 1  # matches come in order: count the newlines once
        for match in rule.regex.finditer(data):
            group = next((g for g in rule.groups if match.group(g)), rule.groups[0])
            value = match.group(group)
            text = value.decode("utf-8", "replace")
            if is_placeholder(text, rule.shown_prefix):
                continue
            if rule.min_entropy and shannon_entropy(value) < rule.min_entropy:
                continue
            if rule.min_entropy and not _credential_shaped(text):
                continue
            start = match.start(group)
            line += data.count(b"\n", position, start)
            position = start
            if rule.min_entropy and line in lines_hit:
                continue  # a specific rule already reported this line
            lines_hit.add(line)
            yield SecretHit(rule, path, line, mask(text, rule.shown_prefix))
