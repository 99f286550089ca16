"""Run sidecar.tracer.Tracer with a minimal stand-in engine, for the tracer tests.

The stand-in replaces SIDECAR-POLICY's Engine only (the tracer, seccomp and decoding are the
real code under test): it records every SyscallEvent it is asked about as a JSON line and
blocks the ones whose path or exec basename is in --block.

    python -m tests.sidecar.workloads.harness --events OUT [--watch a,b] [--process-only]
        [--open-read] [--block PATH]... [--stats OUT] run -- CMD ARGS
    ... attach [--pid N]... [--match REGEX] [--ready FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import asdict

from sidecar.events import Requirements, RuntimeEvent, SyscallEvent, Verdict
from sidecar.tracer import Tracer


def zombies() -> int:
    """Children of this process left as zombies (none may remain after the tracer ran)."""
    count = 0
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and fields[1] == me:
            count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", required=True)
    parser.add_argument("--stats")
    parser.add_argument("--submitted", help="write the submitted RuntimeEvents as JSON lines")
    parser.add_argument("--watch", default="execve,execveat,connect")
    parser.add_argument("--process-only", action="store_true")
    parser.add_argument("--open-read", action="store_true")
    parser.add_argument("--block", action="append", default=[])
    parser.add_argument("--report-exec", action="store_true", help="an event for every exec")
    parser.add_argument("--seccomp", action="store_true", help="attach: inject the filter")
    parser.add_argument("mode", choices=["run", "attach"])
    parser.add_argument("--pid", type=int, action="append", default=[])
    parser.add_argument("--match")
    parser.add_argument("--ready")
    parser.add_argument("argv", nargs="*")
    opts = parser.parse_args()

    out = open(opts.events, "a", buffering=1)
    blocked = set(opts.block)

    def evaluate(event: SyscallEvent) -> Verdict:
        doc = asdict(event)
        doc["access"] = sorted(event.access)
        out.write(json.dumps(doc) + "\n")
        subject = event.path or ""
        if subject in blocked or os.path.basename(subject) in blocked:
            rt = RuntimeEvent(
                event.timestamp,
                "file",
                "test-block",
                "high",
                "block",
                event.pid,
                event.ppid,
                event.exe,
                event.syscall,
                path=event.path,
            )
            return Verdict((rt,), block=True)
        if opts.report_exec and event.kind == "exec":
            rt = RuntimeEvent(
                event.timestamp,
                "process",
                "test-exec",
                "low",
                "log",
                event.pid,
                event.ppid,
                event.exe,
                event.syscall,
                path=event.path,
            )
            return Verdict((rt,))
        return Verdict()

    submitted: list[RuntimeEvent] = []
    sub_out = open(opts.submitted, "a", buffering=1) if opts.submitted else None

    def submit(event: RuntimeEvent) -> None:
        submitted.append(event)
        if sub_out is not None:
            sub_out.write(json.dumps(event.as_dict()) + "\n")

    syscalls = frozenset(s for s in opts.watch.split(",") if s)
    req = Requirements(syscalls, process_only=opts.process_only, open_needs_read=opts.open_read)
    tracer = Tracer(req, evaluate, submit)
    if opts.mode == "run":
        tracer.launch(opts.argv)
        tracer.install_signal_handlers()
        tracer.start()
        status = tracer.run()
    else:
        tracer.configure_attach(opts.match, poll_interval=0.2, seccomp_filter=opts.seccomp)
        tracer.attach(opts.pid)
        tracer.install_signal_handlers()
        if opts.ready:
            with open(opts.ready, "w") as fh:
                fh.write(str(os.getpid()))
        status = tracer.run_attach_forever() if opts.match else tracer.run()
    if opts.stats:
        with open(opts.stats, "w") as fh:
            json.dump(
                {
                    **vars(tracer.stats),
                    "submitted": len(submitted),
                    "submitted_paths": [e.path for e in submitted],
                    "zombies": zombies(),
                },
                fh,
            )
    out.close()
    if sub_out is not None:
        sub_out.close()
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
