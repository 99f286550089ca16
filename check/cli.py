"""The `containerscan` console script: one click group, every command loaded lazily.

Commands live beside the code they drive (`check/commands.py`, `securityhub/commands.py`,
`sidecar/commands.py`). The root knows them only by import string and one-line help, so
`containerscan --help` imports nothing but click. Command modules import only click and the
standard library at the top; everything heavy is imported inside the command.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

# name -> (module, attribute, one-line help). The help is repeated here so that listing the
# commands does not import them.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "sweep": ("check.commands", "sweep", "Sweep ECR repositories: scan, correlate, report."),
    "scan-image": ("check.commands", "scan_image", "Scan one image, or the image of an ECR event."),
    "db": ("check.builtin.commands", "db", "Manage the built-in scanner's advisory database."),
    "init": ("securityhub.commands", "init", "Create the table and bucket a run needs."),
    "findings": ("securityhub.commands", "findings", "Review findings as Security Hub shows them."),
    "reconcile": ("securityhub.commands", "reconcile", "Repair the ledger from Security Hub."),
    "policy": ("sidecar.policy_commands", "policy", "Validate TracingPolicies; print the schema."),
    "sidecar": ("sidecar.commands", "sidecar", "Run the runtime monitor (launch or attach)."),
    "demo": ("check.quickstart.demo", "demo", "Run the local end-to-end quick start."),
}


class LazyGroup(click.Group):
    """Commands imported on first use; containerscan errors become a message and an exit code
    here, so every way in (the console script, click's test runner) behaves the same."""

    def invoke(self, ctx: click.Context) -> Any:
        from securityhub.errors import ContainerscanError

        try:
            return super().invoke(ctx)
        except ContainerscanError as exc:
            from securityhub.logs import redact

            click.echo(f"error: {redact(str(exc))}", err=True)
            ctx.exit(exc.exit_code)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in COMMANDS:
            return None
        module_name, attr, _ = COMMANDS[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                return None  # that part is not built yet
            raise
        command = getattr(module, attr, None)
        return command if isinstance(command, click.Command) else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in sorted(COMMANDS)]
        rows += [
            (name, cmd.get_short_help_str())
            for name, cmd in sorted(self.commands.items())
            if name not in COMMANDS
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
    envvar="CONTAINERSCAN_LOG_LEVEL",
    help="Logging level (JSON lines when stderr is not a terminal).",
)
@click.version_option(package_name="containerscan", prog_name="containerscan")
@click.pass_context
def cli(ctx: click.Context, log_level: str) -> None:
    """containerscan: ECR image scanning, Security Hub correlation, Fargate runtime monitoring.

    Findings land in Security Hub under the Id prefix `containerscan/`.
    """
    from securityhub import logs

    logs.configure(log_level)
    ctx.obj = {"log_level": log_level}


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the group, turning containerscan errors into exit codes and messages."""
    from securityhub.errors import ContainerscanError

    try:
        result = cli.main(args=argv, prog_name="containerscan", standalone_mode=False)
        # Without standalone mode, click returns ctx.exit(N) codes instead of exiting.
        if isinstance(result, int) and not isinstance(result, bool):
            sys.exit(result)
        return result
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except ContainerscanError as exc:
        from securityhub.logs import redact

        click.echo(f"error: {redact(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
