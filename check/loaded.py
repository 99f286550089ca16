"""Loaded at runtime: join what sidecars saw mapped with which package owns each file.

For a vulnerability finding of an image digest, `containerscan/LoadedAtRuntime` is

- `true`: a file owned by one of the finding's packages was mapped executable by a process
  of that image under a sidecar (`securityhub.loaded`, written by `sidecar.loaded`);
- `false`: the image ran under a sidecar for at least the observation window
  (CONTAINERSCAN_LOADED_WINDOW, default one hour, first to last sample, every task family
  together), the record is complete (not truncated), the packages own files a process
  could load (shared objects, native extensions, programs), and none was ever loaded;
- `unknown`: everything else: never run under a sidecar, observed too briefly, no file
  ownership in the image's inventory, or a package whose code is read rather than mapped
  (pure-Python or JavaScript files: an interpreter reads them as data, which mappings do not
  show; only a policy tracing reads could tell).

File ownership comes from the digest's stored inventory (`check.inventories`): each
package's `files` (dpkg `info/<package>.list`, apk's file list, Python `RECORD`, the
package's `node_modules` directory). Paths are compared in merged-/usr form on both sides.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from securityhub.exposure import FALSE, TRUE, UNKNOWN
from securityhub.loaded import LoadedRecord, LoadedTable, canonical
from securityhub.logs import fields, get_logger

log = get_logger("check.loaded")

DEFAULT_WINDOW_SECONDS = 3600.0
# Directories whose files are programs (executed, so mapped executable when they run).
PROGRAM_DIRS = ("/usr/bin/", "/usr/sbin/", "/usr/libexec/", "/usr/local/bin/", "/usr/local/sbin/")


def mappable(path: str) -> bool:
    """Could a process map this file executable? ELF shared objects (`libz.so.1.2.13`,
    `_ssl.cpython-311-x86_64-linux-gnu.so`), Node addons (`.node`) and programs."""
    name = path.rsplit("/", 1)[-1]
    return ".so" in name or name.endswith(".node") or path.startswith(PROGRAM_DIRS)


def owned_files(inventory: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """package name -> the canonical paths it owns (packages listing `files` only)."""
    out: dict[str, set[str]] = {}
    for package in inventory.get("packages", ()):
        files = package.get("files") if isinstance(package, Mapping) else None
        if not isinstance(files, list | tuple) or not files:
            continue  # no list (a count, in the built-in scanner's raw output): not known
        owned = out.setdefault(str(package.get("name")), set())
        owned.update(canonical("/" + str(f).lstrip("/")) for f in files)
    return {name: frozenset(paths) for name, paths in out.items()}


def state(
    packages: Iterable[str],
    owned: Mapping[str, frozenset[str]],
    record: LoadedRecord | None,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
) -> str:
    """TRUE, FALSE or UNKNOWN for a finding affecting `packages` (see the module doc)."""
    if record is None:
        return UNKNOWN
    files = [owned.get(name) for name in packages]
    if any(f and f & record.paths for f in files):
        return TRUE
    if not files or any(f is None for f in files):
        return UNKNOWN  # some package's files are not known
    if not any(mappable(path) for f in files if f for path in f):
        return UNKNOWN  # code read as data: mappings cannot tell
    if record.truncated or record.observed_seconds < window_seconds:
        return UNKNOWN
    return FALSE


class LoadedJoin:
    """`(digest, finding) -> state`, reading each digest's record and inventory once."""

    def __init__(
        self, table: LoadedTable, inventories: Any, window_seconds: float = DEFAULT_WINDOW_SECONDS
    ) -> None:
        self.table = table
        self.inventories = inventories
        self.window_seconds = window_seconds
        self._lock = threading.Lock()
        self._digests: frozenset[str] | None = None
        self._known: dict[str, tuple[LoadedRecord | None, dict[str, frozenset[str]]]] = {}

    def _of(
        self, digest: str, index_digest: str | None = None
    ) -> tuple[LoadedRecord | None, dict[str, frozenset[str]]]:
        """The record of `digest` (or of the index it was reached through: ECS names the
        index a multi-arch task runs) and the ownership in `digest`'s own inventory."""
        from botocore.exceptions import BotoCoreError, ClientError

        with self._lock:
            if digest in self._known:
                return self._known[digest]
            record: LoadedRecord | None = None
            owned: dict[str, frozenset[str]] = {}
            try:
                if self._digests is None:
                    self._digests = self.table.digests()
                recorded = next((d for d in (digest, index_digest) if d in self._digests), None)
                if recorded is not None:
                    record = self.table.record(recorded)
            except (ClientError, BotoCoreError) as exc:
                log.warning("loaded files unreadable", extra=fields(digest=digest, error=str(exc)))
            if record is not None and self.inventories is not None:
                stored = self.inventories.get(digest)
                if stored is not None:
                    owned = owned_files(stored.inventory)
            self._known[digest] = (record, owned)
            return record, owned

    def __call__(self, digest: str, finding: Any, index_digest: str | None = None) -> str:
        record, owned = self._of(digest, index_digest)
        if record is None:
            return UNKNOWN
        return state((p.name for p in finding.packages), owned, record, self.window_seconds)
