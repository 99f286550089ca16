"""Sample container images built from real files, for the local quick start and the tests.

Images are written byte for byte as the OCI image spec says (tar layers, gzip-compressed,
an OCI config and manifest), so a registry, ECR's PutImage and the built-in scanner see
what `docker build` + `docker push` would give them. Nothing here touches the network;
`push_image` talks to the registry client it is given.

The demo's images (`web_image`, `worker_image`) are made of real files:
- `shop/web`: this machine's `os-release` and a trimmed copy of its dpkg database (a
  Debian-style image), the real core metadata (`*.dist-info/METADATA`) of the Jinja2 and
  Werkzeug distributions installed here with the Version header set to old releases, and
  a planted FAKE credential: the example key pair of the AWS documentation.
- `shop/worker`: an Alpine 3.10 package database whose openssl, musl and busybox versions
  are the ones Alpine 3.10.0-3.10.2 shipped, plus requests' real metadata at 2.22.0. The
  fixed build has the versions the Alpine 3.10 secdb and the PyPA advisories name as fixed.

Expected matches with the shared advisory data (`alpine-secdb/v3.10/main.yaml`,
`pypa-osv/vulns/{jinja2,werkzeug,requests}`): openssl 1.1.1c-r0 -> CVE-2019-1547,
CVE-2019-1549, CVE-2019-1563 (fixed 1.1.1d-r0); musl 1.1.22-r2 -> CVE-2019-14697 (fixed
1.1.22-r3); requests 2.22.0 -> CVE-2023-32681 (fixed 2.31.0); jinja2 2.10 ->
CVE-2019-10906 (2.10.1), CVE-2020-28493 (2.11.3); werkzeug 2.3.6 -> CVE-2023-46136 (2.3.8).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.metadata
import io
import json
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from check.builtin.image import OCI_INDEX, OCI_MANIFEST
from securityhub.errors import ContainerscanError

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
SITE = "usr/lib/python3/dist-packages"
ALPINE_SITE = "usr/lib/python3.7/site-packages"
# A fake key pair: no account behind it, exactly the shape the secret rules look for. Not
# the AWS documentation's example pair: the scanner rightly treats that one as an example.
FAKE_AWS_KEY_ID = "AKIAQX7ZK2LMNOPQRS4T"
FAKE_AWS_SECRET = "q8Yb3Zr0Kx1Nw7Vt5Lm9Pc2Hs4Jd6Fg0Ae3Bi5Ck"  # noqa: S105 - a fake
# The stanzas kept from this machine's dpkg database: a small, realistic base system.
DPKG_PACKAGES = ("base-files", "libc6", "libssl3", "openssl", "zlib1g", "ca-certificates",
                 "tzdata", "libexpat1")
HOST_OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
HOST_DPKG_STATUS = "var/lib/dpkg/status"
ALPINE_OS_RELEASE = """NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.10.2
PRETTY_NAME="Alpine Linux v3.10"
HOME_URL="https://alpinelinux.org/"
BUG_REPORT_URL="https://bugs.alpinelinux.org/"
"""
# (name, vulnerable version, fixed version, origin, description): Alpine 3.10 main.
ALPINE_PACKAGES = (
    ("musl", "1.1.22-r2", "1.1.22-r3", "musl", "the musl c library (libc) implementation"),
    ("busybox", "1.30.1-r2", "1.30.1-r2", "busybox", "Size optimized toolbox of many common "
                                                    "UNIX utilities"),
    ("libcrypto1.1", "1.1.1c-r0", "1.1.1d-r0", "openssl", "Crypto library from openssl"),
    ("libssl1.1", "1.1.1c-r0", "1.1.1d-r0", "openssl", "SSL shared libraries"),
)


class SampleImageError(ContainerscanError):
    """A sample image cannot be built from this machine's files."""

    default_remediation = "install the `local` extra: pip install -e '.[local]'"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------ layers


@dataclass
class Layer:
    """A tar layer built entry by entry (PAX format, as BuildKit writes them)."""

    buffer: io.BytesIO = field(default_factory=io.BytesIO)
    tar: tarfile.TarFile | None = None

    def __post_init__(self) -> None:
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.PAX_FORMAT)

    def _add(self, info: tarfile.TarInfo, data: bytes | None = None) -> Layer:
        assert self.tar is not None, "the layer was already closed"
        self.tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return self

    def file(self, path: str, data: bytes | str, mode: int = 0o644) -> Layer:
        raw = data.encode() if isinstance(data, str) else data
        info = tarfile.TarInfo(path)
        info.size = len(raw)
        info.mode = mode
        return self._add(info, raw)

    def directory(self, path: str) -> Layer:
        info = tarfile.TarInfo(path)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        return self._add(info)

    def symlink(self, path: str, target: str) -> Layer:
        info = tarfile.TarInfo(path)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        return self._add(info)

    def hardlink(self, path: str, target: str) -> Layer:
        info = tarfile.TarInfo(path)
        info.type = tarfile.LNKTYPE
        info.linkname = target
        return self._add(info)

    def whiteout(self, path: str) -> Layer:
        directory, _, name = path.rpartition("/")
        return self.file(f"{directory}/.wh.{name}" if directory else f".wh.{name}", b"")

    def opaque(self, directory: str) -> Layer:
        return self.file(f"{directory}/.wh..wh..opq", b"")

    def bytes(self) -> bytes:
        if self.tar is not None:
            self.tar.close()
            self.tar = None
        return self.buffer.getvalue()


# ------------------------------------------------------------------------------ images


@dataclass(frozen=True)
class Blobs:
    """An image as registry blobs: config, manifest and layers as stored."""

    config: bytes
    manifest: bytes
    layers: tuple[bytes, ...]
    media_type: str = OCI_MANIFEST

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest)

    def all(self) -> dict[str, bytes]:
        blobs = {sha256(self.config): self.config, sha256(self.manifest): self.manifest}
        blobs.update({sha256(layer): layer for layer in self.layers})
        return blobs


def build_blobs(tars: Iterable[bytes], compress: bool = True,
                architecture: str = "amd64") -> Blobs:
    """Config and manifest for uncompressed tar layers; gzip with mtime 0 (reproducible)."""
    tars = list(tars)
    stored = [gzip.compress(t, compresslevel=1, mtime=0) if compress else t for t in tars]
    config = json.dumps({
        "architecture": architecture, "os": "linux",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]},
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


class Pusher(Protocol):
    """`check.builtin.registry.RegistryClient`, as far as pushing goes."""

    def push_blob(self, repository: str, data: bytes) -> str: ...

    def push_manifest(self, repository: str, reference: str, data: bytes,
                      media_type: str) -> str: ...


def push_image(client: Pusher, repository: str, tag: str, blobs: Blobs) -> str:
    """Blobs first, then the manifest under `tag`; returns the manifest digest."""
    for data in (blobs.config, *blobs.layers):
        client.push_blob(repository, data)
    return client.push_manifest(repository, tag, blobs.manifest, blobs.media_type)


# ------------------------------------------------------------------------- real files


def real_metadata(distribution: str, version: str) -> str:
    """The installed distribution's real METADATA, with its Version header replaced."""
    try:
        text = importlib.metadata.distribution(distribution).read_text("METADATA") or ""
    except importlib.metadata.PackageNotFoundError:
        text = ""
    if not text:
        raise SampleImageError(f"the {distribution} distribution is not installed here; its "
                               "metadata is part of the sample images")
    return re.sub(r"(?m)^Version: .*$", f"Version: {version}", text, count=1)


def host_os_release(root: Path = Path("/")) -> bytes:
    for candidate in HOST_OS_RELEASE:
        path = root / candidate
        if path.is_file():
            return path.read_bytes()
    raise SampleImageError("this machine has no os-release file",
                           "run the quick start on a Debian machine")


def trimmed_dpkg_status(status: str, keep: Iterable[str] = DPKG_PACKAGES) -> str:
    """The stanzas of `keep` from a dpkg status file, in the file's order."""
    wanted = set(keep)
    stanzas = [s for s in re.split(r"\n\s*\n", status) if s.strip()]
    chosen = []
    for stanza in stanzas:
        match = re.match(r"Package: (\S+)", stanza)
        if match and match.group(1) in wanted:
            chosen.append(stanza.strip("\n"))
    return "\n\n".join(chosen) + "\n" if chosen else ""


def host_dpkg_status(root: Path = Path("/")) -> str:
    path = root / HOST_DPKG_STATUS
    if not path.is_file():
        raise SampleImageError(f"{path} is missing: this machine is not Debian-based",
                               "run the quick start on a Debian machine")
    trimmed = trimmed_dpkg_status(path.read_text(encoding="utf-8", errors="replace"))
    if not trimmed:
        raise SampleImageError(f"{path} holds none of {', '.join(DPKG_PACKAGES)}")
    return trimmed


def apk_installed(packages: Iterable[tuple[str, str, str, str]]) -> str:
    """`lib/apk/db/installed` stanzas (apk's field letters) for (name, version, origin, T)."""
    out = []
    for name, version, origin, description in packages:
        checksum = hashlib.sha1(f"{name}-{version}".encode(), usedforsecurity=False).digest()
        out.append(
            f"C:Q1{base64.b64encode(checksum).decode()}\nP:{name}\nV:{version}\n"
            f"A:x86_64\nS:0\nI:0\nT:{description}\nU:https://alpinelinux.org\nL:MIT\n"
            f"o:{origin}\nm:Natanael Copa <ncopa@alpinelinux.org>\n\n"
        )
    return "".join(out)


# ------------------------------------------------------------------------ demo images


@dataclass(frozen=True)
class SampleImage:
    repository: str
    tag: str
    summary: str  # one line for the demo's output
    blobs: Blobs

    @property
    def digest(self) -> str:
        return self.blobs.manifest_digest


def web_image(root: Path = Path("/")) -> SampleImage:
    """Debian base (this machine's files), old Jinja2/Werkzeug, a planted fake AWS key."""
    base = Layer()
    base.file("usr/lib/os-release", host_os_release(root))
    base.symlink("etc/os-release", "../usr/lib/os-release")
    base.file(HOST_DPKG_STATUS, host_dpkg_status(root))
    python = Layer()
    python.file(f"{SITE}/Jinja2-2.10.dist-info/METADATA", real_metadata("jinja2", "2.10"))
    python.file(f"{SITE}/Werkzeug-2.3.6.dist-info/METADATA", real_metadata("werkzeug", "2.3.6"))
    app = Layer()
    app.file("app/config/.env",
             "# deployment settings (committed by mistake)\nREGION=us-east-1\n"
             f"AWS_ACCESS_KEY_ID={FAKE_AWS_KEY_ID}\n"
             f"AWS_SECRET_ACCESS_KEY={FAKE_AWS_SECRET}\n")
    app.file("app/server.py", "from werkzeug.serving import run_simple\n")
    return SampleImage("shop/web", "1.4.2",
                       "Debian dpkg database, Jinja2 2.10, Werkzeug 2.3.6, a fake AWS key",
                       build_blobs([base.bytes(), python.bytes(), app.bytes()]))


def worker_image(*, fixed: bool = False) -> SampleImage:
    """Alpine 3.10 with old openssl/musl and requests 2.22.0; `fixed`: upgraded packages."""
    packages = [(name, fixed_version if fixed else version, origin, description)
                for name, version, fixed_version, origin, description in ALPINE_PACKAGES]
    requests_version = "2.31.0" if fixed else "2.22.0"
    base = Layer()
    base.file("etc/os-release", ALPINE_OS_RELEASE)
    base.file("lib/apk/db/installed", apk_installed(packages))
    app = Layer()
    app.file(f"{ALPINE_SITE}/requests-{requests_version}.dist-info/METADATA",
             real_metadata("requests", requests_version))
    app.file("worker/main.py", "import requests\n")
    openssl = next(p[1] for p in packages if p[0] == "libssl1.1")
    return SampleImage("shop/worker", "2.0",
                       f"Alpine 3.10, openssl {openssl}, requests {requests_version}",
                       build_blobs([base.bytes(), app.bytes()]))
