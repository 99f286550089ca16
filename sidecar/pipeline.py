"""From runtime events to sink batches: sampling, aggregation, batching, bounded queues.

    tracer thread                 pipeline thread                  one thread per sink
    submit(event) --(bounded queue)--> aggregate -> batch --(bounded queue)--> sink.send(batch)

`submit` is called on the tracer's stop path, so it is O(1) and never blocks: a sampling
decision and a `put_nowait`; when the queue is full the event is dropped and counted. The
pipeline thread aggregates repeats (same rule, process, subject, action, container and
command line) into one event with a `count`, and cuts a batch when it holds `batchSize`
distinct events or when the oldest one has waited `batchTimeout` seconds. Each sink has its
own thread and bounded queue of batches, so a slow or failing sink (Qualys retrying with
backoff) never delays the others, nor the tracer: its batches are dropped and counted
instead. Memory is bounded by `queue_size` events plus `sink_queue_size` batches per sink.

Sampling follows `performance.samplingRate`, but never for `block` actions or `critical`
events: those always reach the sinks (unless the queue itself is full, which is counted).
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from securityhub.logs import fields, get_logger
from sidecar.events import RuntimeEvent
from sidecar.policy_model import Policy

if TYPE_CHECKING:
    from sidecar.sinks import Sink

log = get_logger("sidecar.pipeline")

DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_SINK_QUEUE_SIZE = 64  # batches waiting per sink
# The pipeline thread polls the event queue at this interval instead of being woken per event:
# a wake-up per event cost the traced application ~14 µs per stop (a futex wake and a GIL
# hand-off on the tracer's CPU); polling costs 50 idle wake-ups a second.
POLL_INTERVAL = 0.02
_STOP = object()


AggregationKey = tuple[str, str, str, str, "str | None", "str | None"]


def aggregation_key(event: RuntimeEvent) -> AggregationKey:
    """Repeats of one event: same rule, process, subject, action, container, and command
    line (the fingerprint): two command lines are never merged into one that keeps only
    the first. The batch bounds how many distinct keys are held at once."""
    return (
        event.rule,
        event.process,
        event.subject(),
        event.action,
        event.container,
        event.fingerprint,
    )


@dataclass
class _Pending:
    event: RuntimeEvent
    count: int
    last_seen: float


class _SinkWorker:
    """One sink behind its own bounded queue and thread."""

    def __init__(self, sink: Sink, size: int) -> None:
        self.sink = sink
        self.name = getattr(sink, "name", type(sink).__name__)
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=size)
        self.sent_batches = self.sent_events = 0
        self.failed_batches = self.dropped_batches = self.dropped_events = 0
        self.thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self.thread.start()

    def offer(self, batch: tuple[RuntimeEvent, ...]) -> None:
        try:
            self.queue.put_nowait(batch)
        except queue.Full:
            self.dropped_batches += 1
            self.dropped_events += len(batch)
            if self.dropped_batches == 1:
                log.warning(
                    "sink is too slow: dropping batches",
                    extra=fields(sink=self.name, events=len(batch)),
                )

    def _run(self) -> None:
        while True:
            batch = self.queue.get()
            if batch is _STOP:
                return
            try:
                self.sink.send(batch)
            # The unit of work is one batch to one sink: whatever a sink raises is recorded
            # here and must not end the thread that serves it.
            except Exception as exc:  # noqa: BLE001
                self.failed_batches += 1
                log.error(
                    "sink failed a batch",
                    extra=fields(sink=self.name, events=len(batch), error=str(exc)),
                )
            else:
                self.sent_batches += 1
                self.sent_events += len(batch)

    def stats(self) -> dict[str, int]:
        return {
            "sent_batches": self.sent_batches,
            "sent_events": self.sent_events,
            "failed_batches": self.failed_batches,
            "dropped_batches": self.dropped_batches,
            "dropped_events": self.dropped_events,
            "queued_batches": self.queue.qsize(),
        }


class Pipeline:
    def __init__(
        self,
        policy: Policy,
        sinks: Sequence[Sink],
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        sink_queue_size: int = DEFAULT_SINK_QUEUE_SIZE,
        rng: random.Random | None = None,
    ) -> None:
        perf = policy.performance
        self._rate = perf.sampling_rate
        self._batch_size = perf.batch_size
        self._batch_timeout = perf.batch_timeout
        self._clock = clock
        self._random = (rng or random.Random()).random  # noqa: S311 (sampling, not crypto)
        # deque.append is atomic and wakes nobody (see POLL_INTERVAL); the bound is a size
        # check before the append. With one tracer thread submitting it is exact; with
        # several it may overshoot by the number of submitting threads.
        self._queue: deque[Any] = deque()
        self._poll = min(POLL_INTERVAL, self._batch_timeout or POLL_INTERVAL)
        self._wake = threading.Event()  # set by close() only
        self._queue_size = queue_size
        self._closed = False
        # counters written by the submitting thread
        self.submitted = self.sampled_out = self.dropped = 0
        # counters written by the pipeline thread
        self.accepted = self.aggregated = self.batches = self.batched_events = 0
        self._workers = [_SinkWorker(s, sink_queue_size) for s in sinks]
        self._thread = threading.Thread(target=self._run, name="pipeline", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------- the caller side

    def submit(self, event: RuntimeEvent) -> None:
        """Queue one event; O(1), never blocks. Sampled-out and dropped events are counted."""
        self.submitted += 1
        if self._closed:
            self.dropped += 1
            return
        if (
            self._rate < 1.0
            and event.action != "block"
            and event.severity != "critical"
            and self._random() >= self._rate
        ):
            self.sampled_out += 1
            return
        if len(self._queue) >= self._queue_size:
            self.dropped += 1
            if self.dropped == 1:
                log.warning(
                    "event queue full: dropping events (sinks too slow?)",
                    extra=fields(queue_size=self._queue_size),
                )
            return
        self._queue.append(event)

    def stats(self) -> dict[str, Any]:
        return {
            "events": self.submitted,
            "accepted": self.accepted,
            "sampled_out": self.sampled_out,
            "dropped": self.dropped,
            "aggregated": self.aggregated,
            "batches": self.batches,
            "batched_events": self.batched_events,
            "queued": len(self._queue),
            "sinks": {w.name: w.stats() for w in self._workers},
        }

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is pending to the sinks and stop the threads (at most `timeout` s)."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        self._queue.append(_STOP)
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning(
                "pipeline did not drain before close", extra=fields(queued=len(self._queue))
            )
        for worker in self._workers:
            try:
                worker.queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                continue
        for worker in self._workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        stats = self.stats()
        log.info(
            "pipeline closed", extra=fields(**{k: v for k, v in stats.items() if k != "sinks"})
        )

    # ------------------------------------------------------------------ the worker side

    def _run(self) -> None:
        pending: dict[AggregationKey, _Pending] = {}
        deadline = 0.0
        take = self._queue.popleft
        while True:
            try:
                item = take()
            except IndexError:
                if pending and self._clock() >= deadline:
                    self._flush(pending)
                self._wake.wait(self._poll)
                continue
            if item is _STOP:
                self._flush(pending)
                return
            self.accepted += 1
            key = aggregation_key(item)
            slot = pending.get(key)
            if slot is not None:
                slot.count += item.count
                slot.last_seen = max(slot.last_seen, item.timestamp)
                self.aggregated += 1
            else:
                if not pending:
                    deadline = self._clock() + self._batch_timeout
                pending[key] = _Pending(item, item.count, item.timestamp)
            if len(pending) >= self._batch_size:
                self._flush(pending)
            elif self._clock() >= deadline:
                self._flush(pending)

    def _flush(self, pending: dict[Any, _Pending]) -> None:
        if not pending:
            return
        batch = tuple(
            replace(
                p.event,
                count=p.count,
                extra={**p.event.extra, "first_seen": p.event.timestamp, "last_seen": p.last_seen},
            )
            if p.count != 1
            else p.event
            for p in pending.values()
        )
        pending.clear()
        self.batches += 1
        self.batched_events += len(batch)
        for worker in self._workers:
            worker.offer(batch)
