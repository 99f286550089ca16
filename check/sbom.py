"""The package inventory of a scanned image as a CycloneDX 1.5 SBOM, and back.

Every peer exports one (Inspector, Trivy, Syft/Grype): `runs/<run-id>/images/sha256-<hex>/
sbom.cdx.json` beside `results.json` (S3 and `--output-dir`), and `scan-image --output
cyclonedx`. The document is written with cyclonedx-python-lib; purls come from
packageurl-python, following the purl specification's types:

    apk   pkg:apk/alpine/musl@1.1.22-r2?arch=x86_64&distro=alpine-3.10.2
    dpkg  pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64&distro=debian-12
    pip   pkg:pypi/jinja2@2.10
    npm   pkg:npm/%40babel/core@7.0.0

The image is the BOM's `metadata.component` (type container, version = digest); the OS is a
component of type operating-system; each package a library with properties under
`containerscan:` (package manager, the file that recorded it, its layer, source package).
`inventory_from_sbom` reads such a document back into the inventory (name, version,
package manager, OS), so stored SBOMs can be matched again against newer advisories; it
also reads other tools' CycloneDX documents (QScanner's) from their purls alone.

QScanner writes its own CycloneDX document (`--format cyclonedx`): that one is kept as the
image's SBOM instead of one derived here (`sbom_from_raw_files`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from check.builtin.inventory import APK, DPKG, NPM, PIP, InstalledPackage, Inventory, OsInfo

SBOM_FILE = "sbom.cdx.json"
SPEC_VERSION = "1.5"
MEDIA_TYPE = "application/vnd.cyclonedx+json"
PROPERTY_PREFIX = "containerscan:"
# purl types (github.com/package-url/purl-spec, PURL-TYPES) by package manager.
PURL_TYPES = {APK: "apk", DPKG: "deb", PIP: "pypi", NPM: "npm"}
MANAGERS_BY_PURL_TYPE = {purl_type: manager for manager, purl_type in PURL_TYPES.items()}
# The raw files the scanners leave: the built-in inventory, QScanner's own SBOM.
BUILTIN_INVENTORY_FILE = "builtin-inventory.json"
QSCANNER_SBOM_SUFFIXES = (".cyclonedx.json", "-CycloneDX.json")


class SbomError(ValueError):
    """A document is not a CycloneDX SBOM this module can read; the message says where."""


def package_url(package: InstalledPackage, os_info: OsInfo | None) -> str:
    """The package's purl: type from its manager, namespace the distribution or npm scope."""
    from packageurl import PackageURL

    purl_type = PURL_TYPES.get(package.package_manager, "generic")
    namespace: str | None = None
    name = package.name
    qualifiers: dict[str, str] = {}
    if purl_type in ("apk", "deb"):
        namespace = os_info.id if os_info else None
        if package.architecture:
            qualifiers["arch"] = package.architecture
        if os_info and os_info.version_id:
            qualifiers["distro"] = f"{os_info.id}-{os_info.version_id}"
    elif purl_type == "pypi":
        name = name.lower().replace("_", "-")  # the purl spec's pypi normalization
    elif purl_type == "npm" and name.startswith("@") and "/" in name:
        namespace, name = name.split("/", 1)
    return str(PackageURL(type=purl_type, namespace=namespace, name=name,
                          version=package.version, qualifiers=qualifiers or None))


def sbom_document(inventory: Inventory, *, image_name: str, digest: str,
                  tool_version: str = "") -> dict[str, Any]:
    """The CycloneDX 1.5 document (as a dict) for the inventory of `image_name@digest`."""
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot5
    from packageurl import PackageURL

    bom = Bom()
    name = image_name.rsplit("/", 1)[-1] or image_name
    image = Component(
        type=ComponentType.CONTAINER, name=image_name, version=digest, bom_ref=digest,
        purl=PackageURL(type="oci", name=name.lower(), version=digest,
                        qualifiers={"repository_url": image_name}),
    )
    bom.metadata.component = image
    bom.metadata.properties.add(Property(name=f"{PROPERTY_PREFIX}tool",
                                         value=f"containerscan {tool_version}".strip()))
    members: list[Component] = []
    if inventory.os is not None:
        os_info = inventory.os
        properties = [Property(name=f"{PROPERTY_PREFIX}os:id_like", value=like)
                      for like in os_info.id_like]
        members.append(Component(
            type=ComponentType.OPERATING_SYSTEM, name=os_info.id, version=os_info.version_id,
            description=os_info.pretty_name or None, bom_ref=f"os:{os_info.id}",
            properties=properties))
    seen: set[str] = set()
    for package in inventory.packages:
        purl = package_url(package, inventory.os)
        ref = f"{purl}#{package.file_path}"
        if ref in seen:
            continue  # the same record twice: one component
        seen.add(ref)
        members.append(Component(
            type=ComponentType.LIBRARY, name=package.name, version=package.version,
            purl=PackageURL.from_string(purl), bom_ref=ref,
            properties=[Property(name=PROPERTY_PREFIX + key, value=value)
                        for key, value in _package_properties(package)]))
    for member in members:
        bom.components.add(member)
    bom.register_dependency(image, members)
    doc: dict[str, Any] = json.loads(JsonV1Dot5(bom).output_as_string())
    return doc


def _package_properties(package: InstalledPackage) -> Iterable[tuple[str, str]]:
    for key in ("package_manager", "file_path", "layer", "source_name", "source_version",
                "architecture"):
        value = getattr(package, key)
        if value:
            yield key, str(value)


def inventory_from_sbom(doc: Mapping[str, Any], where: str = "SBOM") -> Inventory:
    """The inventory an SBOM describes: ours in full, another tool's from its purls."""
    from packageurl import PackageURL

    if doc.get("bomFormat") != "CycloneDX":
        raise SbomError(f"{where}: not a CycloneDX document (bomFormat is "
                        f"{doc.get('bomFormat')!r})")
    components = doc.get("components")
    if not isinstance(components, list):
        raise SbomError(f"{where}: components is not a list")
    os_info: OsInfo | None = None
    packages: list[InstalledPackage] = []
    for i, component in enumerate(components):
        if not isinstance(component, Mapping):
            raise SbomError(f"{where}: components[{i}] is not an object")
        properties = _properties(component)
        if component.get("type") == "operating-system":
            os_info = OsInfo(
                id=str(component.get("name", "")), version_id=str(component.get("version", "")),
                pretty_name=str(component.get("description") or ""),
                id_like=tuple(v for k, v in properties if k == "os:id_like"))
            continue
        if component.get("type") not in ("library", "application", "framework"):
            continue
        fields = dict(properties)
        purl = None
        if component.get("purl"):
            try:
                purl = PackageURL.from_string(str(component["purl"]))
            except ValueError as exc:
                raise SbomError(f"{where}: components[{i}].purl: {exc}") from None
        manager = fields.get("package_manager") or (
            MANAGERS_BY_PURL_TYPE.get(purl.type, purl.type) if purl else "")
        if not manager:
            continue  # neither our properties nor a purl: nothing to match against
        name = str(component.get("name") or (purl.name if purl else ""))
        if purl is not None and purl.type == "npm" and purl.namespace and "/" not in name:
            name = f"{purl.namespace}/{name}"
        arch = fields.get("architecture") or (
            (purl.qualifiers or {}).get("arch") if purl and isinstance(purl.qualifiers, dict)
            else None)
        packages.append(InstalledPackage(
            name=name, version=str(component.get("version") or (purl.version if purl else "")),
            package_manager=manager, file_path=fields.get("file_path", ""),
            layer=fields.get("layer"), source_name=fields.get("source_name"),
            source_version=fields.get("source_version"), architecture=arch))
    return Inventory(os=os_info, packages=tuple(packages))


def _properties(component: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for prop in component.get("properties") or ():
        key = str(prop.get("name", ""))
        if key.startswith(PROPERTY_PREFIX):
            out.append((key[len(PROPERTY_PREFIX):], str(prop.get("value", ""))))
    return out


def inventory_from_json(doc: Mapping[str, Any]) -> Inventory:
    """The built-in scanner's `builtin-inventory.json` (`Inventory.to_json()` plus the image)."""
    raw_os = doc.get("os")
    os_info = None
    if isinstance(raw_os, Mapping):
        os_info = OsInfo(id=str(raw_os.get("id", "")), version_id=str(raw_os.get("version_id", "")),
                         pretty_name=str(raw_os.get("pretty_name", "")),
                         id_like=tuple(raw_os.get("id_like") or ()))
    packages = tuple(InstalledPackage(**p) for p in doc.get("packages") or ())
    return Inventory(os=os_info, packages=packages)


def sbom_from_raw_files(raw_files: Sequence[Path], *, image_name: str, digest: str,
                        tool_version: str = "") -> bytes | None:
    """The SBOM to keep for a scan: QScanner's own CycloneDX output when it wrote one, else
    one derived from the built-in scanner's inventory, else None (no inventory to tell)."""
    for path in raw_files:
        if Path(path).name.endswith(QSCANNER_SBOM_SUFFIXES):
            return Path(path).read_bytes()
    for path in raw_files:
        if Path(path).name == BUILTIN_INVENTORY_FILE:
            inventory = inventory_from_json(json.loads(Path(path).read_text(encoding="utf-8")))
            doc = sbom_document(inventory, image_name=image_name, digest=digest,
                                tool_version=tool_version)
            return json.dumps(doc, indent=2, ensure_ascii=False).encode()
    return None
