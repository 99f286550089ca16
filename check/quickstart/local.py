"""The local environment of the quick start: an AWS emulator and a real OCI registry.

`LocalEnvironment` (a context manager) makes a private temporary directory, starts
Debian's `docker-registry` (the CNCF distribution registry) on 127.0.0.1 with its storage
there, and moto's server on 127.0.0.1 with the project's Security Hub semantics
(`securityhub.emulator.LocalServer`, a thread of this process). Both take free ports.
On the way out, normal or not, everything is stopped and the directory removed:

- Ctrl-C raises KeyboardInterrupt; SIGTERM and SIGHUP are turned into it while the
  environment is up, so the same `finally` blocks run; children started with `run` are
  killed and reaped on the way out (`SignalGuard` holds a signal while one is forked);
- the registry is a child in its own session (a terminal's Ctrl-C reaches only us, and we
  stop it in order) that the kernel sends SIGTERM should this process die without cleaning
  up (`PR_SET_PDEATHSIG`, Linux), so it never outlives the quick start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from securityhub.errors import ContainerscanError
from securityhub.logs import fields, get_logger

log = get_logger("check.quickstart.local")

REGISTRY_BINARY = "docker-registry"  # Debian's package of the distribution registry v2
READY_TIMEOUT = 20.0  # seconds for the registry to answer GET /v2/
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
START_ATTEMPTS = 3  # a free port can be taken between probing and binding
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
INTERRUPTING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class LocalEnvironmentError(ContainerscanError):
    """The local stand-ins (registry, emulator) could not be started."""

    default_remediation = (
        "install the Debian package docker-registry (sh scripts/system-deps.sh as root) and "
        "the local extra (pip install -e '.[local]')"
    )


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec function asking the kernel to SIGTERM the child when we die (Linux)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return preexec


class LocalRegistry:
    """`docker-registry serve` on 127.0.0.1:<free port>, storage under `workdir`."""

    def __init__(self, workdir: Path, binary: str | None = None) -> None:
        self.workdir = workdir
        self.binary = binary or shutil.which(REGISTRY_BINARY)
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        if self.port is None:
            raise LocalEnvironmentError("the registry is not running")
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    def _config(self, port: int) -> Path:
        config = self.workdir / "registry.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.workdir / 'storage'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        return config

    def start(self) -> str:
        """Start and wait until `/v2/` answers; returns `127.0.0.1:<port>`."""
        from securityhub.emulator import free_port

        if self.binary is None:
            raise LocalEnvironmentError(f"{REGISTRY_BINARY} is not installed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        problem = ""
        for _ in range(START_ATTEMPTS):
            port = free_port()
            config = self._config(port)
            with self.log_path.open("ab") as out:
                self.process = subprocess.Popen(
                    [self.binary, "serve", str(config)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    start_new_session=True, preexec_fn=_parent_death_signal(),  # noqa: PLW1509 - prctl only
                )
            self.port = port
            problem = self._wait_ready()
            if not problem:
                log.debug("registry started", extra=fields(host=self.host,
                                                           pid=self.process.pid))
                return self.host
            self.stop()
        raise LocalEnvironmentError(f"{REGISTRY_BINARY} did not start: {problem}")

    def _wait_ready(self) -> str:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return (f"exited {self.process.returncode}: "
                        + self.log_path.read_text(errors="replace")[-500:].strip())
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=1):  # noqa: S310 - loopback
                    return ""
            except urllib.error.HTTPError:
                return ""  # it answers (asking for credentials would be a 401)
            except OSError:
                time.sleep(0.05)
        return f"no answer on {self.host} within {READY_TIMEOUT:.0f}s"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class SignalGuard:
    """While entered: SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt (main thread).

    Inside `deferred()` the first such signal is held until the block ends, so that an
    interrupt cannot land between the fork of a child and the assignment of its Popen
    object (a child nobody would then stop), nor in the middle of the cleanup.
    """

    def __init__(self) -> None:
        self._previous: dict[signal.Signals, Any] = {}
        self._deferring = False
        self._pending: str | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._deferring:
            self._pending = self._pending or name
            return
        raise KeyboardInterrupt(name)

    def __enter__(self) -> SignalGuard:
        for signum in INTERRUPTING_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @contextmanager
    def deferred(self, *, raise_pending: bool = True) -> Iterator[None]:
        outer = self._deferring
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = outer
        pending, self._pending = (None, self._pending) if outer else (self._pending, None)
        if pending and raise_pending:
            raise KeyboardInterrupt(pending)


class LocalEnvironment:
    """Temporary directory + registry + AWS emulator, all gone after `with`."""

    def __init__(self, prefix: str = "containerscan-demo-") -> None:
        self.prefix = prefix
        self.workdir: Path | None = None
        self.registry: LocalRegistry | None = None
        self.endpoint: str | None = None
        self.signals = SignalGuard()
        self._stack = ExitStack()

    def __enter__(self) -> LocalEnvironment:
        stack = self._stack
        try:
            stack.enter_context(self.signals)
            self.workdir = Path(tempfile.mkdtemp(prefix=self.prefix))
            stack.callback(shutil.rmtree, self.workdir, True)
            os.chmod(self.workdir, 0o700)
            # The registry first: its preexec function runs before the emulator's threads.
            self.registry = LocalRegistry(self.workdir / "registry")
            stack.callback(self.registry.stop)
            self.registry.start()
            self.endpoint = self._start_emulator()
        except BaseException:
            self._close()
            raise
        return self

    def _start_emulator(self) -> str:
        from securityhub.emulator import LocalServer

        server = LocalServer()
        self._stack.callback(server.stop)
        try:
            return server.start()
        except ImportError as exc:  # moto is in the local extra only
            raise LocalEnvironmentError(f"the AWS emulator is not installed ({exc})") from None

    def run(self, command: list[str], env: dict[str, str],
            timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a child to completion; on any interruption it is killed and reaped."""
        process: subprocess.Popen[str] | None = None
        try:
            with self.signals.deferred():
                process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                           text=True)
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LocalEnvironmentError(
                f"{' '.join(command[:4])} did not finish within {timeout:.0f}s",
                "the machine may be overloaded; try again") from None
        finally:
            if process is not None and process.returncode is None:
                with self.signals.deferred(raise_pending=False):  # already on the way out
                    process.kill()
                    process.wait()
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    def _close(self) -> None:
        # A second Ctrl-C must not cut the cleanup short.
        with self.signals.deferred(raise_pending=False):
            self._stack.close()

    def __exit__(self, *exc: object) -> None:
        self._close()
