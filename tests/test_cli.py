"""The console script itself: help is instant and imports nothing heavy; errors map to codes."""

from __future__ import annotations

import subprocess
import sys

import click
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
    result = CliRunner().invoke(cli_module.cli, ["explode"], standalone_mode=False)
    assert isinstance(result.exception, ConfigurationError)
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
