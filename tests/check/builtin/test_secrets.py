"""Secret rules: found, located, masked; quiet on placeholders and binaries."""

from __future__ import annotations

import pytest

from check.builtin.secrets import mask, scan_bytes, shannon_entropy

# Fake credentials with the right shapes (none is live).
CASES = [
    ("aws-access-key-id", b"key=AKIAQX7ZK2LMNOPQRS4T\n", "AKIA****************"),
    ("aws-secret-access-key",
     b"aws_secret_access_key = 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\n", "*" * 32),
    ("private-key", b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1r\n", None),
    ("github-pat", b"GH=ghp_" + b"a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8\n", "ghp_" + "*" * 32),
    ("github-fine-grained-pat", b"github_pat_" + b"A1b2" * 20 + b"Zz\n", None),
    ("gitlab-pat", b"token glpat-Ab3dE6gH9jK2mN5pQ8sT\n", "glpat-" + "*" * 20),
    ("slack-token", b"SLACK=xoxb-1234567890-0987654321-AbCdEfGhIjKl\n", None),
    ("slack-webhook-url",
     b"url: https://hooks.slack.com/services/T0123ABCD/B0456EFGH/aBcDeFgHiJkLmNoPqRsTuVwX\n",
     None),
    ("generic-credential", b'db_password = "Zx9#kLq2!vB7pR"\n', "*" * 14),
]


@pytest.mark.parametrize(("rule", "content", "masked"), CASES, ids=[c[0] for c in CASES])
def test_rule_finds_and_masks(rule, content, masked):
    text = b"first line\n" + content
    hits = list(scan_bytes("etc/app.conf", text))
    assert [(h.rule.id, h.line) for h in hits] == [(rule, 2)]
    if masked is not None:
        assert hits[0].masked == masked
    secret_part = content.split(b"=", 1)[-1].strip().strip(b'"')[8:].decode(errors="ignore")
    assert not secret_part or secret_part not in hits[0].masked


@pytest.mark.parametrize("content", [
    b'password = "changeme"\n',
    b'password: "${DB_PASSWORD}"\n',
    b'api_key = "xxxxxxxxxxxxxxxx"\n',
    b'token = "aaaaaaaabbbbbbbb"\n',  # low entropy
    b"Set the token in the environment.\n",
    b"AKIAQX7ZK2LMNOPQRS4TX\n",  # 21 characters: not a key id
])
def test_quiet_on_placeholders_and_lookalikes(content):
    assert list(scan_bytes("etc/app.conf", content)) == []


def test_binary_and_skipped_suffixes_are_not_searched():
    secret = b"AKIAQX7ZK2LMNOPQRS4T"
    assert list(scan_bytes("usr/lib/libx.so", secret)) == []
    assert list(scan_bytes("data.bin", b"\0\1\2" + secret)) == []
    assert len(list(scan_bytes("data.txt", secret))) == 1


def test_specific_rule_wins_over_generic_on_the_same_line():
    hits = list(scan_bytes("x.env", b'aws_secret_access_key = "q8Yb3Zr0Kx1Nw7Vt5Lm9Pc2Hs4Jd6Fg0Ae3Bi5Ck"\n'))
    assert [h.rule.id for h in hits] == ["aws-secret-access-key"]


def test_entropy_and_mask():
    assert shannon_entropy(b"aaaa") == 0
    assert shannon_entropy(b"abcd") == 2
    assert mask("AKIAQX7ZK2LMNOPQRS4T", 4) == "AKIA" + "*" * 16
    assert mask("ab", 4) == "**"
