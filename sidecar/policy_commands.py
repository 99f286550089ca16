"""`containerscan policy validate FILE...` and `containerscan policy schema`.

Only click and the standard library at the top: the loader (pyyaml, jsonschema) is imported
inside the commands so that `containerscan --help` stays instant.
"""

from __future__ import annotations

import json
import sys

import click


@click.group()
def policy() -> None:
    """Validate TracingPolicies; print their JSON Schema."""


@policy.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--show", is_flag=True, help="Print the merged policy's requirements too.")
def validate(files: tuple[str, ...], show: bool) -> None:
    """Check policy FILES (or directories): exit 0 when valid, 2 with the problems when not.

    Every file is checked on its own, then all of them are merged as the sidecar would.
    """
    from securityhub.errors import EXIT_USAGE, PolicyError
    from sidecar.policy import load_documents, merge

    failed = False
    for name in files:
        try:
            docs = load_documents([name])
        except PolicyError as exc:
            failed = True
            click.echo(str(exc), err=True)
            continue
        for doc in docs:
            click.echo(f"ok: {doc.source}:{doc.start_line} ({doc.data['metadata']['name']})")
    if failed:
        # SystemExit, not click's Exit: the root runs click with standalone_mode=False,
        # which turns Exit into a return value that `python -m check` would ignore.
        sys.exit(EXIT_USAGE)
    merged = merge(load_documents(list(files)))
    if show:
        from sidecar.engine import Engine

        needs = Engine(merged).requirements()
        click.echo(
            json.dumps(
                {
                    "policy": merged.name,
                    "syscalls": sorted(needs.syscalls),
                    "process_only": needs.process_only,
                    "open_needs_read": needs.open_needs_read,
                },
                indent=2,
            )
        )


@policy.command()
def schema() -> None:
    """Print the TracingPolicy JSON Schema."""
    from sidecar.policy import schema as load_schema

    click.echo(json.dumps(load_schema(), indent=2))
