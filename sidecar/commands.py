"""`containerscan sidecar run -- CMD` and `containerscan sidecar attach`.

Only click and the standard library at the top: the tracer, the policy loader and the sinks
are imported inside the commands (`containerscan --help` stays instant).

Launch mode wraps the workload (use it as the container's entrypoint); attach mode traces
processes already running in the task's shared PID namespace. See `sidecar.tracer` for when
to use which and what each costs.
"""

from __future__ import annotations

import os
import sys

import click

SECCOMP_ENV = "CONTAINERSCAN_ATTACH_SECCOMP"
POLICY_HELP = (
    "TracingPolicy file or directory (repeatable; merged). Default: TRACING_POLICY_PATH, "
    "else the bundled policies of MONITORING_MODE (minimal|balanced|aggressive)."
)


@click.group()
def sidecar() -> None:
    """Runtime monitor for Fargate tasks: trace a workload with ptrace, report by policy.

    `run` wraps the container's entrypoint: only the policy's syscalls stop (seccomp-bpf),
    the cheapest mode and the one that can block before a syscall runs. `attach` traces
    processes already running in the task (`pidMode: task`): nearly free for process-only
    policies, a stop per syscall otherwise, or with `--seccomp` the same filter as `run`,
    injected into each process (which then dies with the sidecar). Both need SYS_PTRACE.
    """


@sidecar.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option("--policy", "policies", multiple=True, metavar="FILE", help=POLICY_HELP)
@click.option(
    "--events-file",
    type=click.Path(dir_okay=False, writable=True),
    help="Also append events as JSON lines to this file (created 0600).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(policies: tuple[str, ...], events_file: str | None, command: tuple[str, ...]) -> None:
    """Run COMMAND under the monitor (launch mode): `sidecar run -- app --flag`.

    Only the policy's syscalls stop the workload (seccomp-bpf). Signals sent to the sidecar
    are forwarded to COMMAND; its exit status (or 128 + signal) is the sidecar's.
    """
    from sidecar.monitor import Monitor

    argv = list(command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise click.UsageError("give the command to run after `--`")
    monitor = Monitor(os.environ, policies, events_file)
    sys.exit(monitor.launch(argv))


@sidecar.command()
@click.option("--pid", "pids", type=int, multiple=True, help="A pid to trace (repeatable).")
@click.option("--match", metavar="REGEX", help="Trace processes whose command line matches.")
@click.option("--all", "everything", is_flag=True, help="Trace every process in the PID namespace.")
@click.option("--policy", "policies", multiple=True, metavar="FILE", help=POLICY_HELP)
@click.option(
    "--events-file",
    type=click.Path(dir_okay=False, writable=True),
    help="Also append events as JSON lines to this file (created 0600).",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="Seconds between scans of /proc for new matching processes.",
)
@click.option(
    "--seccomp",
    "seccomp_filter",
    is_flag=True,
    envvar=SECCOMP_ENV,
    help=(
        "Inject the policy's seccomp-bpf filter into each traced process, so only watched "
        f"syscalls stop (as `run`). Also set by {SECCOMP_ENV}=1. The processes then die "
        "with the sidecar and are never detached; they run with no_new_privs (setuid "
        "programs gain no privileges). A process that refuses is traced without it, logged."
    ),
)
def attach(  # noqa: PLR0917 - click passes the options positionally by name
    pids: tuple[int, ...],
    match: str | None,
    everything: bool,
    policies: tuple[str, ...],
    events_file: str | None,
    poll_interval: float,
    seccomp_filter: bool,
) -> None:
    """Trace running processes (attach mode) until SIGTERM, then detach.

    The sidecar itself and its ancestors are never traced. New processes matching --match
    (or any with --all) are picked up as they appear; children of traced processes always.

    With --seccomp, each process gets the filter `run` installs (prctl(PR_SET_NO_NEW_PRIVS)
    and seccomp(SECCOMP_SET_MODE_FILTER, TSYNC) run inside it through ptrace): unwatched
    syscalls cost nothing, but a filter cannot be removed and a watched syscall without a
    tracer fails with ENOSYS, so the processes are bound to the sidecar (PTRACE_O_EXITKILL:
    killing the sidecar kills them; SIGTERM detaches only the others), exactly as in `run`.
    Make the sidecar container essential. x86_64 and aarch64.
    """
    import re

    from sidecar.monitor import Monitor

    if not (pids or match or everything):
        raise click.UsageError("name what to trace: --pid N, --match REGEX or --all")
    if match:
        try:
            re.compile(match)
        except re.error as exc:
            raise click.BadParameter(
                f"not a regular expression: {exc}", param_hint="--match"
            ) from None
    monitor = Monitor(os.environ, policies, events_file)
    sys.exit(
        monitor.attach(list(pids), match, everything, poll_interval, seccomp_filter=seccomp_filter)
    )
