"""Credential masking of captured command lines (sidecar.redact), on real-shaped values.

The token shapes are the vendors' documented formats: GitHub (`ghp_` + 36, `github_pat_`),
AWS (`AKIA` + 16, the documentation's example key pair), HTTP Authorization schemes.
"""

from __future__ import annotations

import pytest

from sidecar.redact import mask_argv

GHP = "ghp_" + "x7Yq2Lm9Rt" * 3 + "AbCdEf"  # 36 characters after the prefix
PAT = "github_pat_11ABCDEFG0" + "abcdefghij" * 5
AWS_ID = "AKIAIOSFODNN7EXAMPLE"  # AWS documentation's example key id
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # and its example secret

CASES = [
    (["curl", "-H", f"Authorization: Bearer {GHP}", "https://api.github.com"], [GHP]),
    (["curl", "-H", "Authorization: Basic dXNlcjpodW50ZXIy", "http://a"], ["dXNlcjpodW50ZXIy"]),
    (["curl", "--header=Proxy-Authorization: token abc123def"], ["abc123def"]),
    (["git", "clone", f"https://x-access-token:{GHP}@github.com/o/r"], [GHP, "x-access-token"]),
    (["git", "push", f"https://oauth2:{PAT}@gitlab.example/o/r"], [PAT]),
    (["echo", PAT], [PAT]),
    (["env", f"AWS_ACCESS_KEY_ID={AWS_ID}", f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", "aws"],
     [AWS_ID, AWS_SECRET]),
    (["mysql", "--password=hunter2", "-h", "db"], ["hunter2"]),
    (["tool", "--password", "hunter2"], ["hunter2"]),
    (["tool", "--token", "t0k3n"], ["t0k3n"]),
    (["curl", "-u", "bob:hunter2", "http://a"], ["hunter2"]),
    (["sh", "-c", "wget 'http://a/?api_key=k3y&x=1' && PASSWORD=p4ss ./run"], ["k3y", "p4ss"]),
    (["pip", "install", "--proxy", "http://u:s3cr3t@proxy:8080", "requests"], ["s3cr3t"]),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "secrets"), CASES)
def test_credentials_are_masked(argv: list[str], secrets: list[str]) -> None:
    masked = mask_argv(argv)
    assert len(masked) == len(argv)
    for secret in secrets:
        assert all(secret not in arg for arg in masked), masked
    assert masked[0] == argv[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["ls", "-la", "/etc/passwd"],
        ["cat", "/root/.aws/credentials"],
        ["grep", "-r", "password", "/etc"],
        ["python3", "-m", "http.server", "8080"],
        ["curl", "https://example.com/path?page=2"],
    ],
)
def test_ordinary_command_lines_are_left_alone(argv: list[str]) -> None:
    assert mask_argv(argv) == tuple(argv)
