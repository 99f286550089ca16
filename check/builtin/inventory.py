"""Package inventory of an image's file system: pure parsers over file contents.

`check.builtin.image` streams the layers and hands over the few files this module asks for
(`wants`): the OS identification, the package databases of dpkg and apk, Python
distribution metadata and Node package manifests, each with the layer that last wrote it.
Parsing here never touches the image or the disk.

- dpkg: `var/lib/dpkg/status` (only stanzas whose Status says `installed`) and the
  one-stanza-per-file `var/lib/dpkg/status.d/*` that distroless images use.
- apk: `lib/apk/db/installed` (`P:` name, `V:` version, `A:` arch, `o:` origin).
- Python: `*.dist-info/METADATA` and `*.egg-info/PKG-INFO` (core metadata, RFC 822 style).
- Node: `node_modules/<name>/package.json` and `node_modules/@scope/<name>/package.json`.
- OS: `etc/os-release`, else `usr/lib/os-release` (os-release(5)).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d/"
APK_INSTALLED = "lib/apk/db/installed"
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")

# Package managers, as `securityhub.findings.Package.package_manager` names them.
DPKG, APK, PIP, NPM = "dpkg", "apk", "pip", "npm"


@dataclass(frozen=True)
class OsInfo:
    id: str  # debian, ubuntu, alpine, ...
    version_id: str = ""
    pretty_name: str = ""
    id_like: tuple[str, ...] = ()


@dataclass(frozen=True)
class InstalledPackage:
    name: str
    version: str
    package_manager: str
    file_path: str  # where the package was recorded in the image
    layer: str | None = None
    source_name: str | None = None  # dpkg Source: / apk origin
    source_version: str | None = None
    architecture: str | None = None


@dataclass(frozen=True)
class Inventory:
    os: OsInfo | None
    packages: tuple[InstalledPackage, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "os": asdict(self.os) if self.os else None,
            "packages": [asdict(p) for p in self.packages],
        }


# --------------------------------------------------------------------------- which files

_PY_METADATA = re.compile(r"(?:^|/)[^/]+\.(?:dist-info/METADATA|egg-info/PKG-INFO)$")
_PY_EGG_FILE = re.compile(r"(?:^|/)(?:site|dist)-packages/[^/]+\.egg-info$")
_NODE_MANIFEST = re.compile(r"(?:^|/)node_modules/(?:@[^/]+/)?[^/@]+/package\.json$")


def wants(path: str) -> bool:
    """Whether the inventory needs the content of this file (a normalized image path)."""
    return (
        path == DPKG_STATUS
        or (path.startswith(DPKG_STATUS_D) and "/" not in path[len(DPKG_STATUS_D) :])
        or path == APK_INSTALLED
        or path in OS_RELEASE
        or bool(_PY_METADATA.search(path))
        or bool(_PY_EGG_FILE.search(path))
        or bool(_NODE_MANIFEST.search(path))
    )


# --------------------------------------------------------------------------------- parsers


def parse_os_release(text: str) -> OsInfo | None:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    if "ID" not in values:
        return None
    return OsInfo(
        id=values["ID"].lower(),
        version_id=values.get("VERSION_ID", ""),
        pretty_name=values.get("PRETTY_NAME", ""),
        id_like=tuple(values.get("ID_LIKE", "").split()),
    )


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    """RFC 822-style paragraphs (deb822): continuation lines start with whitespace."""
    current: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                yield current
            current, key = {}, None
        elif line[0] in " \t":
            if key is not None:
                current[key] += "\n" + line.strip()
        else:
            name, sep, value = line.partition(":")
            if sep:
                key = name.strip()
                current[key] = value.strip()
    if current:
        yield current


_SOURCE_FIELD = re.compile(r"^(\S+)(?:\s+\((\S+)\))?$")


def parse_dpkg_status(
    text: str, file_path: str, layer: str | None, require_status: bool = True
) -> list[InstalledPackage]:
    packages = []
    for stanza in _stanzas(text):
        name, version = stanza.get("Package"), stanza.get("Version")
        if not name or not version:
            continue
        status = stanza.get("Status")
        if status is not None:
            if status.split()[-1:] != ["installed"]:
                continue
        elif require_status:
            continue
        source_name = source_version = None
        if stanza.get("Source"):
            match = _SOURCE_FIELD.match(stanza["Source"])
            if match:
                source_name, source_version = match.group(1), match.group(2)
        packages.append(
            InstalledPackage(
                name=name,
                version=version,
                package_manager=DPKG,
                file_path=file_path,
                layer=layer,
                source_name=source_name or name,
                source_version=source_version or version,
                architecture=stanza.get("Architecture"),
            )
        )
    return packages


def parse_apk_installed(text: str, file_path: str, layer: str | None) -> list[InstalledPackage]:
    packages = []
    for block in re.split(r"\n\s*\n", text):
        values: dict[str, str] = {}
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":":
                values.setdefault(line[0], line[2:].strip())
        if values.get("P") and values.get("V"):
            packages.append(
                InstalledPackage(
                    name=values["P"],
                    version=values["V"],
                    package_manager=APK,
                    file_path=file_path,
                    layer=layer,
                    source_name=values.get("o") or values["P"],
                    source_version=values["V"],
                    architecture=values.get("A"),
                )
            )
    return packages


def parse_python_metadata(text: str, file_path: str, layer: str | None) -> InstalledPackage | None:
    name = version = None
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first blank line; the body is the description
        key, sep, value = line.partition(":")
        if not sep:
            continue
        if key == "Name" and name is None:
            name = value.strip()
        elif key == "Version" and version is None:
            version = value.strip()
    if not name or not version:
        return None
    return InstalledPackage(
        name=name, version=version, package_manager=PIP, file_path=file_path, layer=layer
    )


def parse_package_json(data: bytes, file_path: str, layer: str | None) -> InstalledPackage | None:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None  # a broken manifest in node_modules is not a package we can match
    if not isinstance(doc, dict):
        return None
    name, version = doc.get("name"), doc.get("version")
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        return None
    return InstalledPackage(
        name=name, version=version, package_manager=NPM, file_path=file_path, layer=layer
    )


def build_inventory(files: Mapping[str, tuple[str | None, bytes]]) -> Inventory:
    """The inventory from the wanted files of the merged file system: path -> (layer, data)."""
    os_info = None
    for path in OS_RELEASE:
        if path in files:
            os_info = parse_os_release(files[path][1].decode("utf-8", "replace"))
            if os_info:
                break
    packages: list[InstalledPackage] = []
    for path in sorted(files):
        layer, data = files[path]
        if path == DPKG_STATUS:
            packages += parse_dpkg_status(data.decode("utf-8", "replace"), path, layer)
        elif path.startswith(DPKG_STATUS_D):
            packages += parse_dpkg_status(
                data.decode("utf-8", "replace"), path, layer, require_status=False
            )
        elif path == APK_INSTALLED:
            packages += parse_apk_installed(data.decode("utf-8", "replace"), path, layer)
        elif _PY_METADATA.search(path) or _PY_EGG_FILE.search(path):
            pkg = parse_python_metadata(data.decode("utf-8", "replace"), path, layer)
            if pkg:
                packages.append(pkg)
        elif _NODE_MANIFEST.search(path):
            pkg = parse_package_json(data, path, layer)
            if pkg:
                packages.append(pkg)
    return Inventory(os=os_info, packages=tuple(_unique(packages)))


def _unique(packages: Iterable[InstalledPackage]) -> Iterator[InstalledPackage]:
    seen = set()
    for pkg in packages:
        key = (pkg.package_manager, pkg.name, pkg.version, pkg.file_path)
        if key not in seen:
            seen.add(key)
            yield pkg
