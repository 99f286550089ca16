"""Running an external scanner: argument list, minimal environment, capped output, hard kill.

One helper for every scanner runner (QScanner, Trivy, Grype). What it guarantees:

- The child gets an argument list (never a shell string) and exactly the environment the
  caller built: nothing of the parent's environment leaks unless the caller copied it.
- The child leads its own process group (`start_new_session`), so a timeout kills the
  scanner AND everything it started: SIGTERM to the group, then SIGKILL after a grace
  period. When the scanner exits on its own, stragglers left in its group are killed too.
- Stdout and stderr are drained continuously into files, keeping at most `output_cap`
  bytes of each; the rest is read and discarded, so a scanner printing gigabytes neither
  fills memory nor the disk, nor blocks on a full pipe.

Linux behaviour relied on: a pidfd (`os.pidfd_open`, Linux >= 5.3) becomes readable when
the process exits, before it is reaped. While the leader is an unreaped zombie its pid, and
so its process group id, cannot be reused; the group is killed in that window, so `killpg`
never hits an unrelated group.
"""

from __future__ import annotations

import contextlib
import math
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from securityhub.errors import ConfigurationError, ScanError
from securityhub.logs import MASK, redact

# Bytes of stdout/stderr kept per stream; scanners log progress, not reports, on them.
DEFAULT_OUTPUT_CAP = 8 * 1024 * 1024
# Seconds between SIGTERM and SIGKILL to the process group.
DEFAULT_KILL_GRACE = 5.0
# Seconds reserved between a scanner's own timeout flag and our hard kill (at most a tenth
# of the timeout), so that the scanner can stop cleanly and say why.
DEFAULT_KILL_MARGIN = 15.0
MIN_SCAN_TIMEOUT = 1
# Seconds to drain the pipes after the group is gone (kernel buffers, at most 64 KiB each).
_DRAIN_AFTER_EXIT = 2.0
_READ_SIZE = 64 * 1024
# Environment variables a scanner may need from the parent: where things are, proxies.
PASSTHROUGH_ENV = (
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


class ScannerTimeoutError(ScanError):
    """The scanner ran past its timeout and was killed (with everything it started)."""

    default_remediation = (
        "raise the scan timeout for large images; the image's findings are left untouched"
    )


class ScannerFailedError(ScanError):
    """The scanner exited with a failure code or died of a signal."""

    def __init__(self, message: str, code: int | None = None, remediation: str | None = None):
        super().__init__(message, remediation)
        self.code = code


@dataclass(frozen=True)
class ProcessOutcome:
    """How a scanner process ended."""

    argv0: str
    returncode: int | None  # None when it was killed by us (timed out)
    timed_out: bool
    duration: float
    stdout_path: Path
    stderr_path: Path
    stdout_bytes: int  # bytes the child wrote, kept or not
    stderr_bytes: int
    killed_signal: int | None = None  # the signal that ended it, if one did

    @property
    def stdout_truncated(self) -> bool:
        return self.stdout_bytes > _size(self.stdout_path)

    @property
    def stderr_truncated(self) -> bool:
        return self.stderr_bytes > _size(self.stderr_path)

    def stderr_tail(self, limit: int = 2000) -> str:
        """The end of stderr, for error messages (the caller redacts before logging)."""
        try:
            with self.stderr_path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, size - limit))
                return handle.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def scan_timeout_for(timeout: float, kill_margin: float = DEFAULT_KILL_MARGIN) -> int:
    """A scanner's own timeout (whole seconds): our deadline minus a margin."""
    margin = min(kill_margin, timeout / 10)
    return max(MIN_SCAN_TIMEOUT, math.floor(timeout - margin))


def passthrough_environment(
    parent: Mapping[str, str], prefix: str, exclude: frozenset[str] = frozenset()
) -> dict[str, str]:
    """`minimal_environment` plus the parent's `<prefix>*` settings (minus `exclude`)."""
    env = minimal_environment(parent)
    env.update(
        {
            name: value
            for name, value in parent.items()
            if name.startswith(prefix) and name not in exclude
        }
    )
    return env


def minimal_environment(
    parent: Mapping[str, str], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The passthrough variables of `parent` plus `extra`; nothing else."""
    env = {name: parent[name] for name in PASSTHROUGH_ENV if name in parent}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    if extra:
        env.update(extra)
    return env


class _CappedSink:
    """Writes the first `cap` bytes to a file and counts the rest."""

    def __init__(self, path: Path, cap: int) -> None:
        self.path = path
        self.cap = cap
        self.seen = 0
        self._handle = path.open("wb")

    def feed(self, data: bytes) -> None:
        room = self.cap - self.seen
        if room > 0:
            self._handle.write(data[:room])
        self.seen += len(data)

    def close(self) -> None:
        self._handle.close()


def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float,
    stdout_path: Path,
    stderr_path: Path,
    output_cap: int = DEFAULT_OUTPUT_CAP,
    kill_grace: float = DEFAULT_KILL_GRACE,
) -> ProcessOutcome:
    """Run `argv` to completion or until `timeout` seconds, then kill its process group.

    Raises OSError when the executable cannot be started (the caller turns it into its own
    error). Never raises for what the child does.
    """
    stdout_sink = _CappedSink(stdout_path, output_cap)
    stderr_sink = _CappedSink(stderr_path, output_cap)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
    except OSError:
        stdout_sink.close()
        stderr_sink.close()
        raise
    assert proc.stdout is not None and proc.stderr is not None  # PIPE above
    sinks = {proc.stdout.fileno(): stdout_sink, proc.stderr.fileno(): stderr_sink}
    # Cannot fail for a child we have not reaped (Linux >= 5.3, which this project needs).
    pidfd = os.pidfd_open(proc.pid)
    selector = selectors.DefaultSelector()
    for fd in sinks:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    selector.register(pidfd, selectors.EVENT_READ)

    deadline = started + timeout
    exited = False
    timed_out = False
    term_sent_at: float | None = None
    drain_until: float | None = None
    try:
        while True:
            now = time.monotonic()
            if exited and not _pipes_open(selector, pidfd):
                break
            if drain_until is not None and now >= drain_until:
                break  # something outside the group still holds a pipe: stop reading
            if not exited:
                if term_sent_at is None and now >= deadline:
                    timed_out = True
                    term_sent_at = now
                    _signal_group(proc.pid, signal.SIGTERM)
                elif term_sent_at is not None and now >= term_sent_at + kill_grace:
                    _signal_group(proc.pid, signal.SIGKILL)
                    term_sent_at = float("inf")  # SIGKILL sent once; wait for the pidfd
            wake = [drain_until or float("inf")]
            if not exited:
                wake.append(deadline if term_sent_at is None else term_sent_at + kill_grace)
            wait = max(0.0, min(wake) - now) if min(wake) != float("inf") else None
            for key, _ in selector.select(timeout=wait):
                fd = int(key.fd)
                if fd == pidfd:
                    exited = True
                    selector.unregister(pidfd)
                    # The leader is a zombie: its group id is still reserved. Kill
                    # stragglers (grandchildren) so none outlives the scan.
                    _signal_group(proc.pid, signal.SIGKILL)
                    drain_until = time.monotonic() + _DRAIN_AFTER_EXIT
                    continue
                try:
                    data = os.read(fd, _READ_SIZE)
                except BlockingIOError:
                    continue
                if data:
                    sinks[fd].feed(data)
                else:
                    selector.unregister(fd)
    finally:
        if not exited:  # an exception on our side: never leave the scanner running
            _signal_group(proc.pid, signal.SIGKILL)
        selector.close()
        os.close(pidfd)
        returncode = proc.wait()
        for sink in sinks.values():
            sink.close()
        proc.stdout.close()
        proc.stderr.close()

    return ProcessOutcome(
        argv0=str(argv[0]),
        returncode=None if timed_out else returncode,
        timed_out=timed_out,
        duration=time.monotonic() - started,
        stdout_path=stdout_path,
        stderr_path=stderr_path,
        stdout_bytes=stdout_sink.seen,
        stderr_bytes=stderr_sink.seen,
        killed_signal=-returncode if returncode < 0 else None,
    )


def _pipes_open(selector: selectors.BaseSelector, pidfd: int) -> bool:
    """True while a pipe is still registered (the pidfd does not count)."""
    return any(key.fd != pidfd for key in selector.get_map().values())


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already gone
        os.killpg(pgid, sig)


def start_scanner(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    workdir: Path,
    timeout: float,
    output_cap: int = DEFAULT_OUTPUT_CAP,
    kill_grace: float = DEFAULT_KILL_GRACE,
) -> ProcessOutcome:
    """`run_process` in `workdir` (stdout/stderr to `<name>.stdout.log`/`.stderr.log`
    there), with start failures turned into containerscan errors.

    A binary that is missing or not executable is a configuration problem for every image
    (ConfigurationError); other start failures (no memory, too many processes) affect this
    image only (ScanError).
    """
    try:
        return run_process(
            argv,
            env=env,
            cwd=workdir,
            timeout=timeout,
            stdout_path=workdir / f"{name}.stdout.log",
            stderr_path=workdir / f"{name}.stderr.log",
            output_cap=output_cap,
            kill_grace=kill_grace,
        )
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise ConfigurationError(
            f"cannot run {name} at {argv[0]}: {exc.strerror}",
            f"install {name} or point the configuration at an executable binary",
        ) from None
    except OSError as exc:
        raise ScanError(f"cannot start {name}: {exc}") from None


def check_finished(name: str, outcome: ProcessOutcome, timeout: float) -> None:
    """Raise for a timeout or a death by signal; exit codes are the caller's to judge."""
    if outcome.timed_out:
        raise ScannerTimeoutError(f"{name} timed out after {timeout:g}s; killed its process group")
    if outcome.killed_signal is not None:
        try:
            signame = signal.Signals(outcome.killed_signal).name
        except ValueError:
            signame = f"signal {outcome.killed_signal}"
        raise ScannerFailedError(
            f"{name} crashed: killed by {signame}{failure_detail(outcome)}",
            remediation="the scanner's stderr is kept with the run's outputs",
        )


def failure_detail(outcome: ProcessOutcome, limit: int = 500) -> str:
    """`: <end of stderr>` with secrets masked, or nothing when stderr is empty."""
    tail = outcome.stderr_tail(limit)
    return f": {redact(tail)}" if tail else ""


# ------------------------------------------------------------------ raw outputs

# Keys of a secret finding in Trivy-style reports (QScanner's ScanResult.json, Trivy's JSON):
# `Match` holds the matched text, `Code.Lines[].Content/Highlighted` the lines around it.
# Scanners are meant to mask them; a raw report copied to the run's outputs must not rely on it.
_SECRET_TEXT_KEYS = ("Match",)
_SECRET_LINE_KEYS = ("Content", "Highlighted")


def _mask_secret_values(doc: object) -> bool:
    """Mask, in place, the matched text of every secret finding in a JSON document."""
    changed = False
    if isinstance(doc, list):
        for item in doc:
            changed = _mask_secret_values(item) or changed
    elif isinstance(doc, dict):
        if "RuleID" in doc and any(k in doc for k in _SECRET_TEXT_KEYS):
            for key in _SECRET_TEXT_KEYS:
                if isinstance(doc.get(key), str) and doc[key] != MASK:
                    doc[key], changed = MASK, True
            lines = doc.get("Code", {}).get("Lines") if isinstance(doc.get("Code"), dict) else None
            for line in lines if isinstance(lines, list) else ():
                for key in _SECRET_LINE_KEYS:
                    if isinstance(line, dict) and isinstance(line.get(key), str):
                        line[key], changed = MASK, True
        for value in doc.values():
            changed = _mask_secret_values(value) or changed
    return changed


def sanitize_raw_file(path: Path) -> None:
    """Make a scanner's raw output safe to keep with the run's outputs, in place.

    Every registered secret (the Qualys token, registry passwords: `securityhub.logs`) is
    masked in every file, as the logs do; in JSON reports the matched text of secret findings
    is masked too. A file that is not JSON is only redacted. Files are at most the output cap
    (stdout/stderr) or one report, so they are rewritten in memory.
    """
    import json

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    text = data.decode("utf-8", errors="replace")
    if path.suffix == ".json":
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if doc is not None and _mask_secret_values(doc):
            text = json.dumps(doc, indent=1, ensure_ascii=False)
    cleaned = redact(text)
    if cleaned != text or cleaned.encode("utf-8", errors="replace") != data:
        path.write_text(cleaned, encoding="utf-8")
