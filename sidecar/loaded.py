"""What the traced processes actually load: executable mappings, sampled without ptrace stops.

A thread of its own reads `/proc/<pid>/maps` of every process the tracer holds, every
`interval` seconds (CONTAINERSCAN_LOADED_INTERVAL, default 10): the file-backed mappings
with the `x` permission are the programs, shared libraries and native extensions the
process runs (ld.so maps every DT_NEEDED library and every dlopen'ed one executable). The
tracer is not involved: reading another process's maps needs PTRACE_MODE_READ, which the
tracer holds, and costs the traced application nothing (no stop, no signal).

Recorded per (task family, image digest) in the check's DynamoDB table (the format:
`securityhub.loaded`), for the sweep (`check.loaded`) to join with the image's package
inventory. One UpdateItem per flush (ADD to a string set: DynamoDB deduplicates across
tasks). Only paths are recorded: never argv,
environment, file contents or anything a process wrote.

What this sees: ELF executables and shared objects, and native extensions of interpreted
languages (Python `.so`, Node `.node`). What it cannot see: code an interpreter reads as
data (`.py`, `.js`, `.jar` classes) — such packages stay `unknown` — and processes that
start and exit between two samples (a sample is also taken when the sidecar stops).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from securityhub.loaded import INDEX_PK, RECORD_PREFIX, RETENTION_DAYS, canonical
from securityhub.logs import fields, get_logger
from sidecar.context import seconds_from

log = get_logger("sidecar.loaded")

INTERVAL_ENV = "CONTAINERSCAN_LOADED_INTERVAL"
DEFAULT_INTERVAL = 10.0
# A DynamoDB item holds at most 400 KB (Developer Guide, quotas); the paths of one (family,
# digest) stay below this many bytes, the rest of the item is small. Past it, new paths are
# dropped and the record says `truncated`.
MAX_PATH_BYTES = 300 * 1024
MAX_PATH_LENGTH = 1024  # PATH_MAX is 4096; longer paths are not library paths


def executable_paths(maps: str) -> set[str]:
    """Paths of the file-backed executable mappings in a /proc/<pid>/maps text.

    Line format (proc(5)): `address perms offset dev inode pathname`; pathname may contain
    spaces and ends with " (deleted)" for an unlinked file.
    """
    out: set[str] = set()
    for line in maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or "x" not in parts[1]:
            continue
        path = parts[5].strip()
        if not path.startswith("/"):
            continue  # [vdso], [vsyscall], anonymous
        path = path.removesuffix(" (deleted)")
        if len(path) <= MAX_PATH_LENGTH:
            out.add(canonical(path))
    return out


def read_process(pid: int, proc: str = "/proc") -> set[str]:
    """The executable mappings of one process now; empty when it is gone or unreadable."""
    try:
        with open(f"{proc}/{pid}/maps", encoding="utf-8", errors="replace") as handle:
            return executable_paths(handle.read())
    except OSError:  # exited, or not ours to read
        return set()


@dataclass
class _Seen:
    first: datetime
    paths: set[str] = field(default_factory=set)
    new: set[str] = field(default_factory=set)
    size: int = 0
    truncated: bool = False

    def add(self, paths: Iterable[str]) -> None:
        for path in paths:
            if path in self.paths:
                continue
            if self.size + len(path) > MAX_PATH_BYTES:
                self.truncated = True
                continue
            self.paths.add(path)
            self.new.add(path)
            self.size += len(path)


class LoadedRecorder:
    """Writes one task family's observations (the format: `securityhub.loaded`)."""

    def __init__(self, client: Any, table: str, family: str) -> None:
        self.client = client
        self.table = table
        self.family = family
        self._indexed: set[str] = set()

    def write(
        self, digest: str, paths: set[str], truncated: bool, now: datetime, first: datetime
    ) -> None:
        """One UpdateItem (and the index item the first time): paths added to the set,
        the window extended from `first` (when this sidecar first sampled) to `now`."""
        from securityhub.asff import timestamp

        expires = str(int((now + timedelta(days=RETENTION_DAYS)).timestamp()))
        if digest not in self._indexed:
            self.client.put_item(
                TableName=self.table,
                Item={"pk": {"S": INDEX_PK}, "sk": {"S": digest}, "expires_at": {"N": expires}},
            )
            self._indexed.add(digest)
        update = "SET first_seen = if_not_exists(first_seen, :first), last_seen = :now, "
        update += "expires_at = :expires"
        values: dict[str, Any] = {
            ":now": {"S": timestamp(now)},
            ":first": {"S": timestamp(first)},
            ":expires": {"N": expires},
        }
        if truncated:
            update += ", truncated = :t"
            values[":t"] = {"BOOL": True}
        if paths:
            update += " ADD paths :paths"
            values[":paths"] = {"SS": sorted(paths)}
        self.client.update_item(
            TableName=self.table,
            Key={"pk": {"S": RECORD_PREFIX + digest}, "sk": {"S": self.family}},
            UpdateExpression=update,
            ExpressionAttributeValues=values,
        )


class LoadedSampler:
    """Samples the traced processes' executable mappings on a thread of its own.

    `pids()` names the processes (the tracer's); `digest_of(pid)` the image digest of the
    process's container (None: not one of the task's images, not recorded).
    """

    def __init__(
        self,
        pids: Callable[[], Iterable[int]],
        digest_of: Callable[[int], str | None],
        recorder: LoadedRecorder | None,
        *,
        interval: float = DEFAULT_INTERVAL,
        flush_every: int = 6,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        proc: str = "/proc",
    ) -> None:
        self.pids = pids
        self.digest_of = digest_of
        self.recorder = recorder
        self.interval = interval
        self.flush_every = max(1, flush_every)
        self.clock = clock
        self.proc = proc
        self.seen: dict[str, _Seen] = {}
        self.samples = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loaded", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """A last sample and flush (the sidecar is stopping)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval + 5.0)
        self.sample()
        self.flush()

    def paths(self, digest: str) -> frozenset[str]:
        with self._lock:
            found = self.seen.get(digest)
            return frozenset(found.paths) if found else frozenset()

    def sample(self) -> None:
        for pid in tuple(self.pids()):
            digest = self.digest_of(pid)
            if digest is None:
                continue
            paths = read_process(pid, self.proc)
            with self._lock:
                if digest not in self.seen:
                    self.seen[digest] = _Seen(self.clock())
                self.seen[digest].add(paths)
        self.samples += 1

    def flush(self) -> None:
        if self.recorder is None:
            return
        now = self.clock()
        with self._lock:
            pending = [(d, set(s.new), s.truncated, s.first) for d, s in self.seen.items()]
            for seen in self.seen.values():
                seen.new.clear()
        for digest, paths, truncated, first in pending:
            try:
                self.recorder.write(digest, paths, truncated, now, first)
            except Exception as exc:  # noqa: BLE001 - a sink: never harm the workload
                # The unit of work is one flush: the paths go back to be written next time.
                self.errors += 1
                with self._lock:
                    self.seen[digest].new |= paths
                log.warning(
                    "loaded files not recorded", extra=fields(digest=digest, error=str(exc))
                )

    def _run(self) -> None:
        ticks = 0
        while not self._stop.wait(self.interval):
            self.sample()
            ticks += 1
            if ticks % self.flush_every == 0:
                self.flush()


def interval_from(environ: Mapping[str, str]) -> float:
    """CONTAINERSCAN_LOADED_INTERVAL: seconds between samples (positive)."""
    return seconds_from(environ, INTERVAL_ENV, DEFAULT_INTERVAL)


def build_sampler(
    pids: Callable[[], Iterable[int]],
    context: Any,
    environ: Mapping[str, str],
    sessions: Any,
    *,
    launch: bool,
) -> LoadedSampler | None:
    """The sampler for a task: needs the task context (family, image digests) and the
    table (CONTAINERSCAN_TABLE); without either there is nothing to record to.

    Launch mode wraps the application's own entrypoint: its processes run the image of the
    sidecar's container. Attach mode (shared PID namespace): each pid's own container.
    """
    table = environ.get("CONTAINERSCAN_TABLE")
    if context is None or not table:
        return None
    images: Mapping[str, tuple[str | None, str | None]] = context.images
    own = images.get(context.container_name or "", (None, None))[1]

    def digest_of(pid: int) -> str | None:
        if launch:
            digest = own
        else:
            name = context.container_of(pid)
            digest = images.get(name, (None, None))[1] if name else None
        return digest if digest and digest.startswith("sha256:") else None

    if sessions is None:
        from securityhub.aws import SessionFactory

        sessions = SessionFactory(environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION"))
    recorder = LoadedRecorder(sessions.client("dynamodb"), table, context.task_family)
    return LoadedSampler(pids, digest_of, recorder, interval=interval_from(environ))
