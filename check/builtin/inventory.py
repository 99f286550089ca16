"""Package inventory of an image's file system: pure parsers over file contents.

`check.builtin.image` streams the layers and hands over the few files this module asks for
(`wants`): the OS identification, the package databases of dpkg and apk, Python
distribution metadata and Node package manifests, each with the layer that last wrote it.
Parsing here never touches the image or the disk.

- dpkg: `var/lib/dpkg/status` (only stanzas whose Status says `installed`) and the
  one-stanza-per-file `var/lib/dpkg/status.d/*` that distroless images use; the files each
  package owns from `var/lib/dpkg/info/<package>[:arch].list` (distroless:
  `status.d/<package>.md5sums`).
- apk: `lib/apk/db/installed` (`P:` name, `V:` version, `A:` arch, `o:` origin; `F:` a
  directory and the `R:` files in it that the package owns).
- Python: `*.dist-info/METADATA`, `*.egg-info/PKG-INFO` and `*.egg/EGG-INFO/PKG-INFO`
  (core metadata, RFC 822 style).
- Node: `node_modules/<name>/package.json` and `node_modules/@scope/<name>/package.json`.
- OS: `etc/os-release`, else `usr/lib/os-release` (os-release(5)).

The package databases are found however the image links them: the reader keeps the files
under any directory that ends like a database's (`usr/lib/apk/db/installed`, Alpine's own
layout since 3.19) and hands over the image's symbolic links; `build_inventory` resolves each
standard location through those links, inside the image root only.

Ownership: each package carries the files it installed (`InstalledPackage.files`): dpkg's
and apk's file lists, a Python distribution's `RECORD`. A Python or Node package whose
metadata belongs to an OS package (Debian's `python3-urllib3` ships
`urllib3-1.26.12.egg-info`) carries that package's name in `os_package`; the advisories of
its language ecosystem do not apply to it, the OS's do. `Inventory.owner_of(path)` answers
which package owns any file: the OS package that lists it, else the Python distribution
whose RECORD lists it, else the Node package whose `node_modules/<name>/` holds it.
"""

from __future__ import annotations

import csv
import json
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d/"
DPKG_INFO = "var/lib/dpkg/info/"
APK_INSTALLED = "lib/apk/db/installed"
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
# Symbolic links followed while resolving a path (Linux gives up after 40: path_resolution(7)).
MAX_LINK_HOPS = 40
# The OS families whose package database the inventory reads, by os-release ID / ID_LIKE.
OS_DATABASES = {"debian": "dpkg", "ubuntu": "dpkg", "alpine": "apk"}

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
    # The image paths (no leading "/") the package installed, as its package manager
    # recorded them: dpkg/apk file lists (directories included), a Python RECORD. Empty
    # when nothing records them (Node packages own their node_modules/<name>/ directory).
    files: tuple[str, ...] = field(default=(), compare=False, repr=False)
    # Language packages: "dpkg:python3-urllib3" when an OS package installed this one's
    # metadata; the OS advisories judge it, never the language ecosystem's.
    os_package: str | None = None


@dataclass(frozen=True)
class Inventory:
    os: OsInfo | None
    packages: tuple[InstalledPackage, ...] = field(default_factory=tuple)
    notes: tuple[str, ...] = ()  # what the inventory could not find (no package database)
    # path -> owner (OS packages win over language ones); package directory -> Node package
    owners: Mapping[str, InstalledPackage] = field(default_factory=dict, compare=False,
                                                   repr=False)
    node_roots: Mapping[str, InstalledPackage] = field(default_factory=dict, compare=False,
                                                       repr=False)

    def owner_of(self, path: str) -> InstalledPackage | None:
        """The package that owns `path` (an image path, with or without a leading "/").

        The OS package whose file list names it; else the Python distribution whose
        RECORD names it; else the Node package whose node_modules directory holds it
        (the innermost one). None when no package claims it.
        """
        normalized = posixpath.normpath("/" + path).lstrip("/")
        owner = self.owners.get(normalized)
        if owner is not None or not self.node_roots:
            return owner
        directory = posixpath.dirname(normalized)
        while directory:
            if directory in self.node_roots:
                return self.node_roots[directory]
            directory = posixpath.dirname(directory)
        return None

    def to_json(self) -> dict[str, Any]:
        # Every field but the file lists (tens of thousands of paths in a Debian image), so
        # that `InstalledPackage(**doc)` reads a package back (check.sbom does).
        names = [f.name for f in fields(InstalledPackage) if f.name != "files"]
        packages = [{name: getattr(package, name) for name in names}
                    for package in self.packages]  # flat values: no deep copy, unlike asdict
        return {
            "os": asdict(self.os) if self.os else None,
            "packages": packages,
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- which files

_PY_METADATA = re.compile(
    r"(?:^|/)[^/]+\.(?:dist-info/METADATA|egg-info/PKG-INFO|egg/EGG-INFO/PKG-INFO)$")
_PY_EGG_FILE = re.compile(r"(?:^|/)(?:site|dist)-packages/[^/]+\.egg-info$")
_NODE_MANIFEST = re.compile(r"(?:^|/)node_modules/(?:@[^/]+/)?[^/@]+/package\.json$")
_PY_RECORD = re.compile(r"(?:^|/)[^/]+\.dist-info/RECORD$")
# The package databases and os-release wherever a link may have moved them: any directory
# that ends like the standard one (`usr/lib/apk/db/installed` behind `lib/apk/db`).
_DATABASE = re.compile(
    r"(?:^|/)(?:lib/apk/db/installed|lib/dpkg/status|lib/dpkg/status\.d/[^/]+"
    r"|lib/dpkg/info/[^/]+\.list|(?:etc|lib)/os-release)$")


_WANTED = re.compile("|".join(f"(?:{p.pattern})" for p in (
    _DATABASE, _PY_METADATA, _PY_EGG_FILE, _NODE_MANIFEST, _PY_RECORD)))


def wants(path: str) -> bool:
    """Whether the inventory needs the content of this file (a normalized image path)."""
    return _WANTED.search(path) is not None


def resolve_path(path: str, links: Mapping[str, str]) -> str | None:
    """`path` with every symbolic link in it followed, inside the image root.

    `links` maps an image path (no leading "/") to its link target. Absolute targets start
    again at the image root and `..` stops at it, as in a container whose root is the
    image; None after MAX_LINK_HOPS links (a loop).
    """
    pending = list(reversed(path.split("/")))
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        target = links.get("/".join([*resolved, part]))
        if target is None:
            resolved.append(part)
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            return None
        if target.startswith("/"):
            resolved = []
        pending.extend(reversed(target.split("/")))
    return "/".join(resolved)


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
        files: list[str] = []
        directory = ""
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":":
                values.setdefault(line[0], line[2:].strip())
                if line[0] == "F":  # a directory; the R: lines after it are its files
                    directory = line[2:].strip().strip("/")
                    files.append(directory)
                elif line[0] == "R":
                    files.append(posixpath.join(directory, line[2:].strip()))
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
                    files=tuple(files),
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


def parse_file_list(text: str) -> tuple[str, ...]:
    """dpkg's `info/<package>.list` (absolute paths) or a distroless `.md5sums` file
    (`<md5>  <relative path>`): the image paths, without a leading "/"."""
    paths = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry.startswith("/"):
            entry = entry.partition("  ")[2] or entry  # md5sums: the path after two spaces
        entry = posixpath.normpath("/" + entry).lstrip("/")
        if entry:
            paths.append(entry)
    return tuple(paths)


def _canonical(files: Mapping[str, tuple[str | None, bytes]],
               links: Mapping[str, str]) -> dict[str, tuple[str | None, bytes]]:
    """The files of the standard database locations, found through the image's links.

    Every other file keeps its own path (the language metadata is found by pattern).
    """
    chosen: dict[str, tuple[str | None, bytes]] = {
        path: entry for path, entry in files.items() if not _DATABASE.search(path)}
    for path in (DPKG_STATUS, APK_INSTALLED, *OS_RELEASE):
        real = resolve_path(path, links)
        if real is not None and real in files:
            chosen[path] = files[real]
    for directory in (DPKG_STATUS_D, DPKG_INFO):
        real_dir = resolve_path(directory.rstrip("/"), links)
        if real_dir is None:
            continue
        prefix = real_dir + "/"
        for path, entry in files.items():
            if path.startswith(prefix) and "/" not in path[len(prefix):]:
                chosen[directory + path[len(prefix):]] = entry
    return chosen


def _dpkg_files(files: Mapping[str, tuple[str | None, bytes]]) -> dict[str, tuple[str, ...]]:
    """Package name -> the files it owns, from `info/*.list` and `status.d/*.md5sums`."""
    owned: dict[str, tuple[str, ...]] = {}
    for path, (_, data) in files.items():
        for directory, suffix in ((DPKG_INFO, ".list"), (DPKG_STATUS_D, ".md5sums")):
            if path.startswith(directory) and path.endswith(suffix):
                name = path[len(directory):-len(suffix)].partition(":")[0]  # pkg:amd64
                owned[name] = owned.get(name, ()) + parse_file_list(
                    data.decode("utf-8", "replace"))
    return owned


def parse_record(text: str, dist_info: str) -> tuple[str, ...]:
    """A wheel's RECORD (PEP 376/627: CSV `path,hash,size`, paths relative to the
    directory holding the .dist-info) as image paths; paths that climb out are dropped."""
    base = posixpath.dirname(dist_info)
    paths = []
    for row in csv.reader(text.splitlines()):
        if not row or not row[0]:
            continue
        path = posixpath.normpath(posixpath.join(base, row[0]))
        if not path.startswith(("../", "/")) and path != "..":
            paths.append(path)
    return tuple(paths)


def _with_records(packages: list[InstalledPackage],
                  files: Mapping[str, tuple[str | None, bytes]]) -> list[InstalledPackage]:
    """Python distributions with the files their RECORD lists."""
    out = []
    for package in packages:
        record = posixpath.join(posixpath.dirname(package.file_path), "RECORD")
        if package.package_manager == PIP and package.file_path.endswith(
                ".dist-info/METADATA") and record in files:
            listed = parse_record(files[record][1].decode("utf-8", "replace"),
                                  posixpath.dirname(package.file_path))
            out.append(replace(package, files=listed))
        else:
            out.append(package)
    return out


def _mark_os_owned(packages: list[InstalledPackage],
                   owners: Mapping[str, InstalledPackage]) -> list[InstalledPackage]:
    """Language packages whose metadata an OS package installed get `os_package` set."""
    marked = []
    for package in packages:
        owner = None
        if package.package_manager in (PIP, NPM):
            owner = owners.get(package.file_path) or owners.get(posixpath.dirname(
                package.file_path))
        marked.append(package if owner is None else replace(
            package, os_package=f"{owner.package_manager}:{owner.name}"))
    return marked


def _missing_database(os_info: OsInfo | None, packages: list[InstalledPackage]) -> list[str]:
    if os_info is None:
        return []
    family = next((OS_DATABASES[i] for i in (os_info.id, *os_info.id_like)
                   if i in OS_DATABASES), None)
    if family is None or any(p.package_manager == family for p in packages):
        return []
    where = APK_INSTALLED if family == APK else f"{DPKG_STATUS} or {DPKG_STATUS_D}"
    return [f"{os_info.pretty_name or os_info.id} recognised, but its {family} package "
            f"database (/{where}) was not found: OS packages were not inventoried"]


def build_inventory(files: Mapping[str, tuple[str | None, bytes]],
                    links: Mapping[str, str] | None = None) -> Inventory:
    """The inventory from the wanted files of the merged file system: path -> (layer, data).

    `links` are the image's symbolic links (path -> target), used to find the package
    databases wherever the image keeps them.
    """
    files = _canonical(files, links or {})
    os_info = None
    for path in OS_RELEASE:
        if path in files:
            os_info = parse_os_release(files[path][1].decode("utf-8", "replace"))
            if os_info:
                break
    owned = _dpkg_files(files)
    packages: list[InstalledPackage] = []
    for path in sorted(files):
        layer, data = files[path]
        if path == DPKG_STATUS:
            packages += parse_dpkg_status(data.decode("utf-8", "replace"), path, layer)
        elif path.startswith(DPKG_STATUS_D):
            if path.endswith(".md5sums"):
                continue
            packages += parse_dpkg_status(
                data.decode("utf-8", "replace"), path, layer, require_status=False
            )
        elif path == APK_INSTALLED:
            packages += parse_apk_installed(data.decode("utf-8", "replace"), path, layer)
        elif _DATABASE.search(path) or _PY_RECORD.search(path):
            continue  # a file list, or a database copy no standard location leads to
        elif _PY_METADATA.search(path) or _PY_EGG_FILE.search(path):
            pkg = parse_python_metadata(data.decode("utf-8", "replace"), path, layer)
            if pkg:
                packages.append(pkg)
        elif _NODE_MANIFEST.search(path):
            pkg = parse_package_json(data, path, layer)
            if pkg:
                packages.append(pkg)
    packages = [replace(p, files=owned.get(p.name, ())) if p.package_manager == DPKG else p
                for p in packages]
    os_owners = {path: p for p in packages if p.package_manager in (DPKG, APK)
                 for path in p.files}
    packages = _with_records(_mark_os_owned(packages, os_owners), files)
    owners = {path: p for p in packages if p.package_manager == PIP for path in p.files}
    owners.update(os_owners)
    node_roots = {posixpath.dirname(p.file_path): p for p in packages
                  if p.package_manager == NPM}
    return Inventory(os=os_info, packages=tuple(_unique(packages)),
                     notes=tuple(_missing_database(os_info, packages)), owners=owners,
                     node_roots=node_roots)


def _unique(packages: Iterable[InstalledPackage]) -> Iterator[InstalledPackage]:
    seen = set()
    for pkg in packages:
        key = (pkg.package_manager, pkg.name, pkg.version, pkg.file_path)
        if key not in seen:
            seen.add(key)
            yield pkg
