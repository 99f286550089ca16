"""The glue of `containerscan sidecar run|attach`: policy -> engine -> tracer -> pipeline ->
sinks, plus the heartbeat.

Order matters in launch mode: the workload is forked before any thread exists (the pipeline
and sink workers, the heartbeat), so the child never inherits a lock held by another thread
between fork and exec. Signals the tracer handles are blocked before the threads start, so
the kernel delivers them to the main thread, whose blocking wait they interrupt; the main
thread unblocks them once the tracer's handlers are installed.

An invalid policy raises `PolicyError` before anything starts (exit 2 with the file, the line
and the fix); a tracer that cannot trace raises `TracerError` with the remedy.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from securityhub.errors import ConfigurationError
from securityhub.logs import fields, get_logger
from sidecar.context import Heartbeat, TaskContext, discover, seconds_from
from sidecar.events import RuntimeEvent
from sidecar.tracer import DETACH_SIGNALS, FORWARDED_SIGNALS, Tracer

log = get_logger("sidecar.monitor")

DEFAULT_HEARTBEAT_SECONDS = 60.0
HEARTBEAT_ENV = "CONTAINERSCAN_HEARTBEAT_SECONDS"
# Time given to the sinks to flush at exit (the workload has finished by then).
FLUSH_TIMEOUT = 5.0


# The sidecar's own secrets: in wrap mode they are set on the application's container, for the
# sidecar; the workload it launches never gets them.
SIDECAR_ONLY_ENV = frozenset({"QUALYS_ACCESS_TOKEN", "QUALYS_TOKEN", "TRACING_POLICY_DOCUMENT"})


def workload_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The launched workload's environment: the sidecar's, less its secrets."""
    return {key: value for key, value in environ.items() if key not in SIDECAR_ONLY_ENV}


def heartbeat_seconds(environ: Mapping[str, str]) -> float:
    """CONTAINERSCAN_HEARTBEAT_SECONDS: seconds between heartbeat lines (0: only at exit)."""
    return seconds_from(environ, HEARTBEAT_ENV, DEFAULT_HEARTBEAT_SECONDS, zero="none")


class _HeartbeatThread:
    def __init__(self, tracer: Tracer, pipeline: Any, interval: float) -> None:
        self.tracer = tracer
        self.pipeline = pipeline
        self.interval = interval
        self.beats = Heartbeat()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def line(self) -> dict[str, Any]:
        return self.beats.beat(asdict(self.tracer.stats), self.pipeline.stats())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            log.info("heartbeat", extra=fields(**self.line()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1.0)
        log.info("final heartbeat", extra=fields(**self.line()))


class Monitor:
    """Everything one sidecar run needs, built from the policy and the environment."""

    def __init__(
        self,
        environ: Mapping[str, str],
        policy_paths: Sequence[str] = (),
        events_file: str | None = None,
        sessions: Any = None,
    ) -> None:
        from sidecar.engine import Engine
        from sidecar.policy import resolve_policy

        self.environ = environ
        self.events_file = events_file
        self.sessions = sessions
        self.policy = resolve_policy(environ, list(policy_paths), sessions)
        self.engine = Engine(self.policy)
        self.requirements = self.engine.requirements()
        self.context: TaskContext | None = None
        try:
            self.context = discover(environ)
        except ConfigurationError as exc:
            # The workload must run even when the metadata endpoint does not answer; only
            # the Security Hub sink needs the task context (it says so when it is skipped).
            log.warning("no ECS task context", extra=fields(error=str(exc)))
        self.pipeline: Any = None
        self.sinks: list[Any] = []
        self.loaded: Any = None  # sidecar.loaded.LoadedSampler, when there is a table
        self.tracer = Tracer(
            self.requirements,
            self.engine.evaluate,
            self._submit,
            container_of=self.context.container_of if self.context else None,
        )
        self.heartbeat_interval = heartbeat_seconds(environ)
        log.info(
            "policy loaded",
            extra=fields(
                policy=getattr(self.policy, "name", None),
                syscalls=sorted(self.requirements.syscalls),
                process_only=self.requirements.process_only,
                open_needs_read=self.requirements.open_needs_read,
            ),
        )

    def _submit(self, event: RuntimeEvent) -> None:
        self.pipeline.submit(event)

    def _start_pipeline(self) -> None:
        from sidecar.pipeline import Pipeline
        from sidecar.sinks import build_sinks

        sinks = build_sinks(
            self.policy,
            self.environ,
            events_file=self.events_file,
            sessions=self.sessions,
            context=self.context,
        )
        self.sinks = sinks
        self.pipeline = Pipeline(self.policy, sinks)

    def _start_loaded(self, launch: bool) -> None:
        from sidecar.loaded import build_sampler

        self.loaded = build_sampler(
            self.tracer.traced_pids, self.context, self.environ, self.sessions, launch=launch
        )
        if self.loaded is not None:
            self.loaded.start()

    def _loop(self, handled: Sequence[int], begin: Any, body: Any) -> int:
        """Start the threads with `handled` signals blocked, then `begin()` (the workload
        runs or the tracer attaches, once the sidecar's own start-up is over, so the two do
        not compete for a small task's CPU) and run `body` in this thread."""
        signal.pthread_sigmask(signal.SIG_BLOCK, handled)
        heartbeat = None
        try:
            self._start_pipeline()
            self._start_loaded(launch=self.tracer.root_pid is not None)
            heartbeat = _HeartbeatThread(self.tracer, self.pipeline, self.heartbeat_interval)
            heartbeat.start()
        finally:
            self.tracer.install_signal_handlers()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
        try:
            begin()
            return int(body())
        finally:
            # Before anything else: a SIGTERM from here on must not kill the flush.
            self.tracer.hold_signals()
            if heartbeat is not None:
                heartbeat.stop()
            if self.loaded is not None:
                self.loaded.stop()
            if self.pipeline is not None:
                self.pipeline.close(FLUSH_TIMEOUT)
            for sink in self.sinks:
                close = getattr(sink, "close", None)
                if callable(close):
                    with contextlib.suppress(OSError):
                        close()

    def launch(self, argv: list[str]) -> int:
        """Run `argv` under the tracer; the workload's exit status."""
        # Fork now, while no thread exists; it waits stopped.
        self.tracer.launch(argv, workload_environment(self.environ))
        handled = (*FORWARDED_SIGNALS, signal.SIGALRM)
        return self._loop(handled, self.tracer.start, self.tracer.run)

    def attach(
        self,
        pids: Sequence[int],
        match: str | None,
        everything: bool,
        poll_interval: float,
        *,
        seccomp_filter: bool = False,
    ) -> int:
        """Trace running processes until SIGTERM (or, with only --pid, until they exit);
        `seccomp_filter`: inject the filter (Tracer.configure_attach)."""
        self.tracer.configure_attach(match, everything, poll_interval, seccomp_filter)
        handled = (*DETACH_SIGNALS, signal.SIGALRM)
        forever = match is not None or everything
        return self._loop(
            handled,
            lambda: self.tracer.attach(pids),
            self.tracer.run_attach_forever if forever else self.tracer.run,
        )
