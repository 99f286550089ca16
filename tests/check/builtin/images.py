"""Build real image artifacts for the tests: tar layers, OCI layouts, docker-save archives.

Everything here writes the formats byte for byte as the specifications say (image-spec
image-layout.md and manifest.md; Docker's `docker save` layout), so the code under test reads
what a registry or `docker save` would hand it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Layer:
    """A tar layer built entry by entry."""

    buffer: io.BytesIO = field(default_factory=io.BytesIO)
    tar: tarfile.TarFile | None = None

    def __post_init__(self) -> None:
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.PAX_FORMAT)

    def file(self, path: str, data: bytes | str, mode: int = 0o644) -> Layer:
        raw = data.encode() if isinstance(data, str) else data
        info = tarfile.TarInfo(path)
        info.size = len(raw)
        info.mode = mode
        assert self.tar is not None
        self.tar.addfile(info, io.BytesIO(raw))
        return self

    def directory(self, path: str) -> Layer:
        info = tarfile.TarInfo(path)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        assert self.tar is not None
        self.tar.addfile(info)
        return self

    def symlink(self, path: str, target: str) -> Layer:
        info = tarfile.TarInfo(path)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        assert self.tar is not None
        self.tar.addfile(info)
        return self

    def hardlink(self, path: str, target: str) -> Layer:
        info = tarfile.TarInfo(path)
        info.type = tarfile.LNKTYPE
        info.linkname = target
        assert self.tar is not None
        self.tar.addfile(info)
        return self

    def whiteout(self, path: str) -> Layer:
        directory, _, name = path.rpartition("/")
        return self.file(f"{directory}/.wh.{name}" if directory else f".wh.{name}", b"")

    def opaque(self, directory: str) -> Layer:
        return self.file(f"{directory}/.wh..wh..opq", b"")

    def bytes(self) -> bytes:
        assert self.tar is not None
        self.tar.close()
        return self.buffer.getvalue()


@dataclass(frozen=True)
class Blobs:
    """An image as registry blobs: config, manifest and compressed layers."""

    config: bytes
    manifest: bytes
    layers: tuple[bytes, ...]  # as stored (gzip or plain tar)

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest)

    def all(self) -> dict[str, bytes]:
        blobs = {sha256(self.config): self.config, sha256(self.manifest): self.manifest}
        blobs.update({sha256(layer): layer for layer in self.layers})
        return blobs


def build_blobs(tars: list[bytes], compress: bool = True, architecture: str = "amd64") -> Blobs:
    stored = [gzip.compress(t, compresslevel=1, mtime=0) if compress else t for t in tars]
    config = json.dumps({
        "architecture": architecture, "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(t) for t in tars]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": LAYER_GZIP if compress else LAYER_TAR,
                    "digest": sha256(b), "size": len(b)} for b in stored],
    }).encode()
    return Blobs(config, manifest, tuple(stored))


def write_blob(root: Path, data: bytes) -> str:
    digest = sha256(data)
    path = root / "blobs" / "sha256" / digest.split(":")[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def write_oci_layout(root: Path, images: list[tuple[Blobs, str]], index: bool = False) -> Path:
    """An OCI layout; each image with its platform "os/arch". `index`: nest an image index."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    entries = []
    for blobs, platform in images:
        for data in blobs.all().values():
            write_blob(root, data)
        os_name, arch = platform.split("/")
        entries.append({"mediaType": OCI_MANIFEST, "digest": blobs.manifest_digest,
                        "size": len(blobs.manifest),
                        "platform": {"os": os_name, "architecture": arch}})
    top = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    if index:
        nested = json.dumps(top).encode()
        top = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_INDEX, "digest": write_blob(root, nested), "size": len(nested)}]}
    (root / "index.json").write_text(json.dumps(top))
    return root


def write_docker_archive(path: Path, tars: list[bytes], tag: str = "sample:1") -> Path:
    """The classic `docker save` layout: <id>/layer.tar, <config>.json, manifest.json."""
    blobs = build_blobs(tars, compress=False)
    config_name = sha256(blobs.config).split(":")[1] + ".json"
    members: dict[str, bytes] = {config_name: blobs.config}
    names = []
    for position, layer in enumerate(tars):
        name = f"{hashlib.sha256(str(position).encode() + layer).hexdigest()}/layer.tar"
        members[name] = layer
        names.append(name)
    members["manifest.json"] = json.dumps(
        [{"Config": config_name, "RepoTags": [tag], "Layers": names}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
