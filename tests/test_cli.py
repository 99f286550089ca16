"""The console script itself: help is instant and imports nothing heavy; errors map to codes."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import click
import pytest
from click.testing import CliRunner

from check import cli as cli_module
from securityhub.errors import EXIT_USAGE, ConfigurationError


def test_help_lists_every_command_without_importing_them() -> None:
    code = (
        "import sys; from check.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('boto3', 'botocore', 'yaml', 'ptrace', 'jsonschema') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout
    for name in cli_module.COMMANDS:
        assert name in out.stdout


def test_containerscan_error_becomes_message_and_exit_code(monkeypatch) -> None:
    @click.command("explode")
    def explode() -> None:
        raise ConfigurationError("CONTAINERSCAN_TABLE is not set", "export CONTAINERSCAN_TABLE=...")

    monkeypatch.setitem(cli_module.cli.commands, "explode", explode)
    result = CliRunner().invoke(cli_module.cli, ["explode"])
    assert result.exit_code == EXIT_USAGE and isinstance(result.exception, SystemExit)
    assert "error: CONTAINERSCAN_TABLE is not set" in result.output
    proc = subprocess.run(
        [sys.executable, "-c",
         "import click, sys\n"
         "from check import cli\n"
         "from securityhub.errors import ConfigurationError\n"
         "@click.command('explode')\n"
         "def explode():\n    raise ConfigurationError('CONTAINERSCAN_TABLE is not set', 'export it')\n"
         "cli.cli.add_command(explode)\n"
         "cli.main(['explode'])\n"],
        capture_output=True, text=True,
    )
    assert proc.returncode == EXIT_USAGE
    assert "error: CONTAINERSCAN_TABLE is not set" in proc.stderr
    assert "hint: export it" in proc.stderr
    assert "Traceback" not in proc.stderr


def run(*args: str) -> Any:
    """The group as the console script runs it, through click's runner."""
    return CliRunner().invoke(cli_module.cli, ["--log-level", "ERROR", *args])


def assert_usage_error(result: Any, named: str) -> None:
    assert result.exit_code == EXIT_USAGE, result.output
    assert named in result.output, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


# Every command, a bad value of each kind it takes: exit 2, the message names what is wrong.
BAD_VALUES = [
    (("--log-level", "LOUD", "findings"), "--log-level"),
    (("sweep", "--fail-on", "BOGUS"), "fail_on"),
    (("sweep", "--scanner", "nope"), "unknown scanner 'nope'"),
    (("sweep", "--scan-types", "bogus"), "scan_types[0]"),
    (("sweep", "--concurrency", "0"), "--concurrency"),
    (("sweep", "--shard", "3/2"), "shard"),
    (("sweep", "--pushed-since", "whenever"), "pushed_since"),
    (("sweep", "--max-images", "-3"), "max_images"),
    (("sweep", "--region", "mars-1"), "regions[0]"),
    (("sweep", "--request", "/nonexistent.json"), "--request"),
    (("sweep", "--request-uri", "http://bucket/key"), "s3://bucket/key"),
    (("sweep", "--output", "yaml"), "--output"),
    (("scan-image",), "REF"),
    (("scan-image", "Not^A^Ref"), "the image reference is malformed"),
    (("scan-image", "oci-layout:/nonexistent"), "is not an OCI layout directory"),
    (("scan-image", "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1", "--fail-on", "x"),
     "fail_on"),
    (("findings", "--severity", "BOGUS"), "--severity"),
    (("findings", "--state", "gone"), "--state"),
    (("findings", "--prefix", "no-slash"), "--prefix"),
    (("reconcile", "--prefix", "no-slash", "--table", "t-1"), "--prefix"),
    (("init", "--region", "us-east-1"), "--bucket"),
    (("db", "info", "--vuln-db", "/nonexistent-db"), "containerscan db update"),
    (("policy", "validate", "/nonexistent.yaml"), "no such policy file"),
    (("policy", "schema", "--format", "xml"), "--format"),
    (("sidecar", "attach"), "--pid N, --match REGEX or --all"),
    (("sidecar", "attach", "--pid", "abc"), "--pid"),
    (("sidecar", "run", "--policy", "/nonexistent.yaml", "--", "true"), "no such policy file"),
    (("demo", "--bogus"), "--bogus"),
]


@pytest.mark.parametrize(("args", "named"), BAD_VALUES, ids=lambda v: " ".join(v)
                         if isinstance(v, tuple) else None)
def test_every_bad_value_exits_2_with_what_is_wrong(args: tuple[str, ...], named: str,
                                                  monkeypatch) -> None:
    monkeypatch.setenv("CONTAINERSCAN_TABLE", "cs-ledger")
    assert_usage_error(run(*args), named)


def test_every_command_is_covered() -> None:
    covered = {args[0] if args[0] != "--log-level" else args[2] for args, _ in BAD_VALUES}
    assert covered == set(cli_module.COMMANDS)


@pytest.fixture
def no_credentials(monkeypatch) -> None:
    """The standard chain finds nothing: no variables, no files, no metadata service."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_SECURITY_TOKEN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("CONTAINERSCAN_TABLE", "cs-ledger")
    monkeypatch.setenv("CONTAINERSCAN_BUCKET", "cs-outputs")


@pytest.mark.parametrize("args", [
    ("sweep", "--region", "us-east-1"),
    ("sweep", "--dry-run"),
    ("scan-image", "123456789012.dkr.ecr.us-east-1.amazonaws.com/app@sha256:" + "a" * 64),
    ("findings",),
    ("reconcile",),
    ("init",),
], ids=" ".join)
def test_missing_credentials_exit_2_with_a_hint(no_credentials, args: tuple[str, ...]) -> None:
    result = run(*args)
    assert_usage_error(result, "no AWS credentials found")
    assert "hint: set AWS_PROFILE" in result.output
