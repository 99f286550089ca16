"""Image access: read an image's layers as streams and keep only the files asked for.

Three sources give the same `ImageSource`: an OCI registry over the distribution API
(`check.builtin.registry`), an OCI image layout directory (`oci-layout:DIR`, image-spec
image-layout.md) and a `docker save` archive (`docker-archive:FILE`, with its
`manifest.json`, old or OCI-style).

`read_image` streams each layer once (`check.builtin.tarstream`: no seeking, nothing
extracted to disk), verifies the blob digest and the config's diff_id as the bytes go
by, applies the OCI whiteouts (`.wh.<name>` deletes, `.wh..wh..opq` makes a directory
opaque; image-spec layer.md) to the files it keeps, and hands every small text file to an
optional visitor (the secret scanner) with the layer it came from. Memory holds only the
wanted files.

Hostile input is refused with an `ImageError` naming the source, the layer and the member:
paths that climb out of the root (`..`), symlinks and hard links whose targets leave it,
wanted files larger than the cap, images that decompress beyond the cap, digests that do
not match, corrupt compression, truncated tar streams and malformed manifests. What a
hostile layer could use to exhaust memory or time is bounded before it is read: extended
tar headers (PAX, GNU long names) above `MAX_TAR_HEADER` are refused from their declared
size; zero padding after the gzip stream is skipped a megabyte at a time; no list of
seen members is kept; whiteouts are applied with sorted paths and bisection
(O((N + M) log N), not N x M); the deadline is checked on every read, not only between
entries. `check.builtin.sandbox` adds the last line: the scan's own process with an
address-space limit and a hard kill at the deadline.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import posixpath
import re
import tarfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from check.builtin.tarstream import (
    OversizedHeader,
    TarFormatError,
    TarMember,
    TarReader,
)
from securityhub.errors import ImageError, ScanError
from securityhub.logs import fields, get_logger

log = get_logger("check.builtin.image")

# Media types (image-spec media-types.md; Docker's Image Manifest V2 Schema 2).
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
# Layers that registries may refuse to serve (Windows base layers); never Linux content.
FOREIGN_LAYER_MARKERS = ("foreign", "nondistributable")

# The distribution registry refuses manifests above 4 MiB (registry/handlers/manifests.go,
# maxManifestBodySize); anything larger is not a manifest.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_INDEX_DEPTH = 2
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK = 1024 * 1024
DEFAULT_PLATFORM = "linux/amd64"


@dataclass(frozen=True)
class ImageLimits:
    """Caps that keep a hostile or huge image from exhausting memory or time."""

    max_wanted_file: int = 64 * 1024 * 1024  # a package database larger than this is hostile
    max_visited_file: int = 1024 * 1024  # larger files are not handed to the visitor
    max_image_bytes: int = 32 * 1024 * 1024 * 1024  # uncompressed, all layers together
    max_entries: int = 2_000_000


@dataclass(frozen=True)
class LayerRef:
    digest: str  # the blob digest; for docker archives, the diff_id (no blob digest exists)
    media_type: str
    size: int | None = None
    diff_id: str | None = None  # sha256 of the uncompressed tar, from the config
    member: str | None = None  # docker archives: the layer's member name in the archive


@dataclass
class ImageFiles:
    """What `read_image` kept: wanted files of the merged file system, by normalized path."""

    digest: str
    layers: tuple[str, ...]
    files: dict[str, tuple[str | None, bytes]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # symbolic links: path -> target
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    bytes_read: int = 0
    entries: int = 0


class ImageSource(Protocol):
    description: str

    def resolve(self) -> tuple[str, dict[str, Any], tuple[LayerRef, ...]]:
        """(manifest digest, config document, layers bottom to top)."""
        ...

    def open_blob(self, layer: LayerRef) -> IO[bytes]:
        """The stored bytes of a layer blob, as a stream."""
        ...

    def close(self) -> None: ...


# ------------------------------------------------------------------------ manifest logic


def load_json(data: bytes, what: str, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageError(
            f"{what} in {where} is not valid JSON ({exc}); it may be truncated",
            "re-push or re-export the image; check that the transfer completed",
        ) from None
    if not isinstance(doc, dict):
        raise ImageError(f"{what} in {where} is not a JSON object")
    return doc


def check_digest(digest: Any, where: str) -> str:
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise ImageError(
            f"unsupported or malformed digest {digest!r} in {where}",
            "only sha256 digests are supported",
        )
    return digest


def verify_bytes(data: bytes, digest: str, what: str, where: str) -> None:
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise ImageError(
            f"{what} in {where} does not match its digest: expected {digest}, got {actual}",
            "the image is corrupt or was tampered with",
        )


def manifest_kind(doc: dict[str, Any], media_type: str | None) -> str:
    """"index" or "manifest", from the document's mediaType, the transport's, or its shape."""
    for kind in (doc.get("mediaType"), media_type):
        if not isinstance(kind, str):  # a hostile document may put anything here
            continue
        if kind in INDEX_TYPES:
            return "index"
        if kind in MANIFEST_TYPES:
            return "manifest"
    # Registries may serve OCI documents as application/json and without mediaType.
    if isinstance(doc.get("manifests"), list):
        return "index"
    if isinstance(doc.get("layers"), list) and isinstance(doc.get("config"), dict):
        return "manifest"
    raise ImageError(f"unsupported manifest media type {doc.get('mediaType') or media_type!r}",
                     "containerscan reads OCI and Docker schema 2 images (not schema 1)")


def select_platform(index: dict[str, Any], platform: str, where: str) -> dict[str, Any]:
    """The index entry for `platform` ("os/arch[/variant]"), or the only entry."""
    entries = index.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise ImageError(f"the image index in {where} lists no manifests")
    want = platform.split("/")
    candidates = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        plat = _platform_of(entry)
        # BuildKit attestation manifests carry platform unknown/unknown.
        if plat.get("os") == "unknown":
            continue
        candidates.append(entry)
        if [plat.get("os"), plat.get("architecture")] == want[:2] and (
            len(want) < 3 or plat.get("variant") == want[2]
        ):
            return entry
    if len(candidates) == 1:
        return candidates[0]
    found = sorted(
        {f"{_platform_of(e).get('os')}/{_platform_of(e).get('architecture')}" for e in candidates}
    )
    raise ImageError(
        f"no {platform} image in the index of {where} (it has {', '.join(found)})",
        "choose one of the listed platforms",
    )


def _platform_of(entry: dict[str, Any]) -> dict[str, Any]:
    """An index entry's `platform` object ({} when absent or not an object)."""
    platform = entry.get("platform")
    return platform if isinstance(platform, dict) else {}


def layers_from_manifest(
    manifest: dict[str, Any], config: dict[str, Any], where: str
) -> tuple[LayerRef, ...]:
    entries = manifest.get("layers")
    if not isinstance(entries, list):
        raise ImageError(f"the manifest in {where} has no layer list; it may be truncated")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        diff_ids = []  # the layer digests still identify the layers; diff ids are optional
    layers = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ImageError(f"layer {position} of the manifest in {where} is malformed")
        media_type = str(entry.get("mediaType", ""))
        if any(marker in media_type for marker in FOREIGN_LAYER_MARKERS):
            continue
        diff_id = diff_ids[position] if position < len(diff_ids) else None
        layers.append(
            LayerRef(
                digest=check_digest(entry.get("digest"), f"layer {position} of {where}"),
                media_type=media_type,
                size=entry.get("size") if isinstance(entry.get("size"), int) else None,
                diff_id=diff_id if isinstance(diff_id, str) and DIGEST.match(diff_id) else None,
            )
        )
    return tuple(layers)


# ---------------------------------------------------------------------- OCI image layout


def _read_capped(stream: IO[bytes], cap: int, what: str, where: str) -> bytes:
    data = stream.read(cap + 1)
    if len(data) > cap:
        raise ImageError(
            f"{what} in {where} is larger than {cap} bytes",
            "this is not a manifest or configuration an image would carry",
        )
    return data


class OciLayoutSource:
    """An OCI image layout directory: `oci-layout`, `index.json` and `blobs/sha256/*`."""

    def __init__(self, directory: Path, platform: str = DEFAULT_PLATFORM) -> None:
        self.directory = directory
        self.platform = platform
        self.description = f"oci-layout:{directory}"

    def _blob_path(self, digest: str) -> Path:
        algorithm, _, hexdigest = check_digest(digest, self.description).partition(":")
        return self.directory / "blobs" / algorithm / hexdigest

    def _read_blob(self, digest: str, cap: int, what: str) -> bytes:
        path = self._blob_path(digest)
        try:
            with path.open("rb") as stream:
                data = _read_capped(stream, cap, what, self.description)
        except FileNotFoundError:
            raise ImageError(
                f"{what} blob {digest} is missing from {self.description}",
                "the layout is incomplete; export the image again",
            ) from None
        verify_bytes(data, digest, what, self.description)
        return data

    def resolve(self) -> tuple[str, dict[str, Any], tuple[LayerRef, ...]]:
        index_path = self.directory / "index.json"
        if not index_path.is_file():
            raise ImageError(
                f"{self.description} has no index.json",
                "point oci-layout: at a directory written by an OCI tool",
            )
        with index_path.open("rb") as stream:
            doc = load_json(
                _read_capped(stream, MAX_MANIFEST_BYTES, "index.json", self.description),
                "index.json",
                self.description,
            )
        media_type: str | None = OCI_INDEX
        digest = ""
        for _ in range(MAX_INDEX_DEPTH + 1):
            if manifest_kind(doc, media_type) == "manifest":
                break
            entry = select_platform(doc, self.platform, self.description)
            digest = check_digest(entry.get("digest"), self.description)
            media_type = entry.get("mediaType")
            doc = load_json(
                self._read_blob(digest, MAX_MANIFEST_BYTES, "manifest"),
                "manifest",
                self.description,
            )
        else:
            raise ImageError(f"image indexes nested too deeply in {self.description}")
        config_digest = check_digest((doc.get("config") or {}).get("digest"), self.description)
        config = load_json(
            self._read_blob(config_digest, MAX_CONFIG_BYTES, "config"), "config", self.description
        )
        return digest, config, layers_from_manifest(doc, config, self.description)

    def open_blob(self, layer: LayerRef) -> IO[bytes]:
        try:
            return self._blob_path(layer.digest).open("rb")
        except FileNotFoundError:
            raise ImageError(
                f"layer {layer.digest} is missing from {self.description}",
                "the layout is incomplete; export the image again",
            ) from None

    def close(self) -> None:
        return None


# ----------------------------------------------------------------- docker save archives


def _safe_member_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise ImageError(f"a member name in {where} is malformed: {name!r}")
    normalized = posixpath.normpath(name.lstrip("/"))
    if normalized.startswith("..") or name.startswith("/"):
        raise ImageError(
            f"{where} refers to {name!r}, outside the archive",
            "the archive is hostile or corrupt; do not load it",
        )
    return normalized


class DockerArchiveSource:
    """A `docker save` tar: `manifest.json` names the config and the layer members.

    The archive is read with random access (`tarfile.open` on the file); members are read
    from it in place, never extracted.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"docker-archive:{path}"
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}

    def _open(self) -> tarfile.TarFile:
        if self._tar is None:
            try:
                self._tar = tarfile.open(self.path, "r:*")  # closed in close()
                self._members = {
                    posixpath.normpath(m.name.lstrip("/")): m for m in self._tar.getmembers()
                }
            except FileNotFoundError:
                raise ImageError(f"{self.description} does not exist") from None
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                raise ImageError(
                    f"{self.description} is not a readable tar archive ({exc})",
                    "produce it with `docker save IMAGE -o FILE`",
                ) from None
        return self._tar

    def _member(self, name: Any, what: str) -> IO[bytes]:
        tar = self._open()
        normalized = _safe_member_name(name, self.description)
        info = self._members.get(normalized)
        if info is None or not info.isfile():
            raise ImageError(
                f"{what} {name!r} is missing from {self.description}",
                "the archive is incomplete; save the image again",
            )
        stream = tar.extractfile(info)
        if stream is None:
            raise ImageError(f"{what} {name!r} in {self.description} is not a file")
        return stream

    def resolve(self) -> tuple[str, dict[str, Any], tuple[LayerRef, ...]]:
        where = self.description
        raw = _read_capped(
            self._member("manifest.json", "manifest.json"),
            MAX_MANIFEST_BYTES,
            "manifest.json",
            where,
        )
        try:
            entries = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ImageError(
                f"manifest.json in {where} is not valid JSON ({exc}); it may be truncated",
                "save the image again",
            ) from None
        if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
            raise ImageError(f"manifest.json in {where} lists no image")
        entry = entries[0]
        if len(entries) > 1:
            log.info(
                "docker archive holds several images; reading the first",
                extra=fields(source=where, images=len(entries)),
            )
        config_raw = _read_capped(
            self._member(entry.get("Config"), "config"), MAX_CONFIG_BYTES, "config", where
        )
        config = load_json(config_raw, "config", where)
        config_digest = "sha256:" + hashlib.sha256(config_raw).hexdigest()
        names = entry.get("Layers")
        if not isinstance(names, list):
            raise ImageError(f"manifest.json in {where} has no layer list")
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list):
            diff_ids = []
        if len(diff_ids) != len(names):
            raise ImageError(
                f"{where}: the config lists {len(diff_ids)} layers, manifest.json {len(names)}",
                "the archive is corrupt",
            )
        layers = []
        for name, listed in zip(names, diff_ids, strict=True):
            # The member's own digest is not recorded; the diff_id check covers its content.
            diff_id = check_digest(listed, where)
            layers.append(
                LayerRef(
                    digest=diff_id,
                    media_type="",
                    diff_id=diff_id,
                    member=_safe_member_name(name, where),
                )
            )
        # `docker save` has no manifest digest; the config digest is the image id.
        return config_digest, config, tuple(layers)

    def open_blob(self, layer: LayerRef) -> IO[bytes]:
        return self._member(layer.member, "layer")

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None


# ---------------------------------------------------------------------- layer streaming


class _HashingReader(io.RawIOBase):
    """Hashes and counts the bytes read through it; `cap` bounds the total.

    `on_read` runs before every read (the deadline check: a slow registry or a huge
    member cannot keep a read going past it).
    """

    def __init__(
        self, stream: IO[bytes], cap: int | None = None, on_cap: Callable[[], None] | None = None,
        on_read: Callable[[], None] | None = None,
    ) -> None:
        self._stream = stream
        self.hash = hashlib.sha256()
        self.count = 0
        self._cap = cap
        self._on_cap = on_cap
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._on_read is not None:
            self._on_read()
        data = self._stream.read(len(buffer))
        if not data:
            return 0
        self.count += len(data)
        if self._cap is not None and self.count > self._cap and self._on_cap:
            self._on_cap()
        self.hash.update(data)
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


class _GzipMembers(io.RawIOBase):
    """Concatenated gzip members (RFC 1952 2.2), decompressed at most CHUNK at a time.

    What follows the last member may be zero padding (some tools pad blobs to a block
    size); it is skipped a CHUNK at a time, where gzip.GzipFile reads it byte by byte.
    Anything else after a member must be another member.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def _next_member(self) -> bool:
        rest = self._inflater.unused_data.lstrip(b"\0")
        while len(rest) < len(GZIP_MAGIC):
            chunk = self._stream.read(CHUNK)
            if not chunk:
                if rest:
                    raise zlib.error("trailing garbage after the gzip stream")
                return False
            rest = (rest + chunk).lstrip(b"\0") if not rest else rest + chunk
        if not rest.startswith(GZIP_MAGIC):
            raise zlib.error("trailing garbage after the gzip stream")
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = memoryview(self._inflater.decompress(rest, CHUNK))
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            if self._done:
                return 0
            if self._inflater.eof:
                if not self._next_member():
                    self._done = True
                continue
            data = self._inflater.unconsumed_tail or self._stream.read(CHUNK)
            if not data:
                raise EOFError("the gzip stream ends before its end-of-stream marker")
            self._pending = memoryview(self._inflater.decompress(data, CHUNK))
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _decompressor(stream: Any, where: str) -> Any:
    magic = stream.peek(4)[:4]
    if magic.startswith(GZIP_MAGIC):
        return io.BufferedReader(_GzipMembers(stream), CHUNK)
    if magic == ZSTD_MAGIC:
        try:
            import zstandard
        except ImportError:
            raise ImageError(
                f"{where} is zstd-compressed, which this installation cannot read",
                "install the `zstandard` package (pip install zstandard)",
            ) from None
        return zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
    return stream


def normalize_member(name: str, layer_where: str) -> str:
    """The image path of a tar member: no leading `/` or `./`; `..` is refused."""
    path = posixpath.normpath("/" + name).lstrip("/")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise ImageError(
            f"{layer_where}: member {name!r} climbs out of the image root",
            "the layer is hostile; do not run this image",
        )
    return path


def _check_link(info: TarMember, path: str, layer_where: str) -> None:
    target = info.linkname
    if info.issym():
        if target.startswith("/"):
            return  # absolute targets resolve inside the image root when the image runs
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
        if resolved == ".." or resolved.startswith("../"):
            raise ImageError(
                f"{layer_where}: symlink {path!r} -> {target!r} points outside the image root",
                "the layer is hostile; do not run this image",
            )
    elif info.islnk() and ".." in target.replace("\\", "/").split("/"):
        raise ImageError(
            f"{layer_where}: hard link {path!r} -> {target!r} points outside the image root",
            "the layer is hostile; do not run this image",
        )


def apply_whiteouts(entries: dict[str, Any], deleted: list[str], opaque: list[str]) -> None:
    """Remove what a layer's whiteouts hide from the lower layers' `entries` (by path).

    `.wh.<name>` deletes `name` and everything under it; `.wh..wh..opq` empties its
    directory. The paths are sorted once and each whiteout finds its subtree by bisection:
    O((N + M) log N) for N entries and M whiteouts.
    """
    if not entries or not (deleted or opaque):
        return
    paths = sorted(entries)

    def drop_under(prefix: str) -> None:
        index = bisect.bisect_left(paths, prefix)
        while index < len(paths) and paths[index].startswith(prefix):
            entries.pop(paths[index], None)
            index += 1

    for directory in opaque:
        drop_under(directory + "/" if directory else "")
    for path in deleted:
        entries.pop(path, None)
        drop_under(path + "/")


Visitor = Callable[[str, str, bytes], None]


@dataclass
class _LayerState:
    kept: dict[str, tuple[str | None, bytes]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    replaced: list[str] = field(default_factory=list)  # lower symlinks this layer overwrote
    deleted: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)


@dataclass
class _Walk:
    """One pass over an image's layers (the arguments of `read_image`)."""

    source: ImageSource
    want: Callable[[str], bool]
    visitor: Visitor | None
    limits: ImageLimits
    deadline: float | None
    result: ImageFiles

    def layer(self, layer: LayerRef, where: str) -> _LayerState:
        state = _LayerState()
        limits, result = self.limits, self.result
        budget = limits.max_image_bytes - result.bytes_read

        def too_big() -> None:
            raise ImageError(
                f"{where} expands beyond the {limits.max_image_bytes}-byte cap",
                "the layer is a decompression bomb or the image is too large to scan here",
            )

        def in_time() -> None:
            if self.deadline is not None and time.monotonic() > self.deadline:
                raise ScanError(
                    f"{self.source.description}: timed out while reading {where}",
                    "raise the scan timeout",
                )

        raw_stream = self.source.open_blob(layer)
        try:
            blob = _HashingReader(raw_stream, on_read=in_time)
            buffered = io.BufferedReader(blob, CHUNK)
            tar_bytes = _HashingReader(_decompressor(buffered, where), budget, too_big, in_time)
            tar_stream = io.BufferedReader(tar_bytes, CHUNK)
            try:
                tar = TarReader(tar_stream.read)
                while (info := tar.next()) is not None:
                    self.member(tar, info, layer.digest, where, state)
                    result.entries += 1
                    if result.entries > limits.max_entries:
                        raise ImageError(
                            f"{where}: more than {limits.max_entries} entries",
                            "the image is hostile or too large to scan",
                        )
                    in_time()
                while tar_stream.read(CHUNK):  # tar stops at its end marker; hash the rest
                    pass
                while buffered.read(CHUNK):  # and whatever trails the compressed stream
                    pass
            except OversizedHeader as exc:
                raise ImageError(f"{where}: {exc}",
                                 "the layer is hostile; do not run this image") from None
            except (TarFormatError, OSError, EOFError, zlib.error) as exc:
                raise ImageError(
                    f"{where} is corrupt or truncated ({exc})",
                    "the layer could not be decompressed or read as tar; re-push the image",
                ) from None
            result.bytes_read += tar_bytes.count
            if layer.member is None and blob.digest != layer.digest:
                raise ImageError(
                    f"{where} does not match its digest (got {blob.digest})",
                    "the layer is corrupt or was tampered with",
                )
            if layer.diff_id and tar_bytes.digest != layer.diff_id:
                raise ImageError(
                    f"{where}: uncompressed content does not match diff_id "
                    f"{layer.diff_id} (got {tar_bytes.digest})",
                    "the layer is corrupt or was tampered with",
                )
        finally:
            raw_stream.close()
        return state

    def member(
        self,
        tar: TarReader,
        info: TarMember,
        layer: str,
        where: str,
        state: _LayerState,
    ) -> None:
        path = normalize_member(info.name, where)
        if path in ("", "."):
            return
        directory, base = posixpath.split(path)
        if base == OPAQUE_WHITEOUT:
            state.opaque.append(directory)
            return
        if base.startswith(WHITEOUT_PREFIX):
            state.deleted.append(posixpath.join(directory, base[len(WHITEOUT_PREFIX) :]))
            return
        if info.issym() or info.islnk():
            _check_link(info, path, where)
            if info.issym():
                state.links[path] = info.linkname
            elif self.want(path):
                target = normalize_member(info.linkname, where)
                linked = state.kept.get(target) or self.result.files.get(target)
                if linked is not None:
                    state.kept[path] = (layer, linked[1])
                else:
                    self.result.notes.append(
                        f"{where}: hard link {path} -> {target}: the target was not kept")
            return
        if path in self.result.links:
            state.replaced.append(path)  # a file or directory now where a link was
        if not info.isfile():
            return
        wanted = self.want(path)
        if wanted and info.size > self.limits.max_wanted_file:
            raise ImageError(
                f"{where}: {path} is {info.size} bytes, above the "
                f"{self.limits.max_wanted_file}-byte cap for package metadata",
                "the image is hostile or its package database is corrupt",
            )
        visit = self.visitor is not None and info.size <= self.limits.max_visited_file
        if not wanted and not visit:
            return  # the reader skips the member's bytes on the next iteration
        data = tar.read_data()
        if wanted:
            state.kept[path] = (layer, data)
        if visit and self.visitor is not None:
            self.visitor(path, layer, data)


def read_image(
    source: ImageSource,
    want: Callable[[str], bool],
    visitor: Visitor | None = None,
    limits: ImageLimits | None = None,
    deadline: float | None = None,
) -> ImageFiles:
    """Stream every layer of `source`; keep the wanted files; visit small regular files.

    `deadline` is a `time.monotonic()` value; past it the read stops with a ScanError.
    The caller closes `source`.
    """
    digest, config, layers = source.resolve()
    result = ImageFiles(
        digest=digest, layers=tuple(layer.digest for layer in layers), config=config
    )
    walk = _Walk(source, want, visitor, limits or ImageLimits(), deadline, result)
    for position, layer in enumerate(layers):
        where = f"{source.description}: layer {position} ({layer.digest})"
        state = walk.layer(layer, where)
        apply_whiteouts(result.files, state.deleted, state.opaque)
        apply_whiteouts(result.links, state.deleted, state.opaque)
        for path in state.replaced:
            result.links.pop(path, None)
        for path in state.links:
            result.files.pop(path, None)
        result.files.update(state.kept)
        result.links.update(state.links)
    log.debug(
        "image read",
        extra=fields(
            source=source.description,
            layers=len(layers),
            entries=result.entries,
            bytes=result.bytes_read,
        ),
    )
    return result
