"""Normalized image findings to JSON and back (for the scan cache and the run outputs).

The resource is NOT serialized: a cached result belongs to a digest, and the same digest
may sit in several repositories and accounts, so `findings_from_dicts` re-binds the
findings to the image they are loaded for. `from_dict(to_dict(f)) == f` for every image
finding (a hypothesis test holds it to that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from datetime import date, datetime
from typing import Any

from securityhub.errors import ReportParseError
from securityhub.findings import (
    Cvss,
    EcrImage,
    Package,
    ScannerInfo,
    SecretFinding,
    Severity,
    VulnerabilityFinding,
)

# 2: one vulnerability finding per (image, CVE) (issue 10); results stored in format 1 are
# keyed by QID and are scanned again rather than published under the old Ids.
FORMAT_VERSION = 2
_DATETIMES = ("published_at", "vendor_updated_at")
ImageFinding = VulnerabilityFinding | SecretFinding


def _plain(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj) if getattr(obj, f.name) is not None}


# What the scanner learnt about the image (a single-platform image's architecture, from
# QScanner's ScanResult.json) travels with its findings, so a cached result and a fresh scan
# build the same Security Hub content.
IMAGE_ARCHITECTURE = "image_architecture"


def finding_to_dict(finding: ImageFinding) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": finding.kind}
    if finding.resource.architecture:
        doc[IMAGE_ARCHITECTURE] = finding.resource.architecture
    for f in fields(finding):
        value = getattr(finding, f.name)
        if f.name == "resource" or value is None:
            continue
        if isinstance(value, Severity):
            value = value.name
        elif isinstance(value, ScannerInfo):
            value = _plain(value)
        elif isinstance(value, datetime | date):
            value = value.isoformat()
        elif f.name in ("packages", "cvss"):
            value = [_plain(v) for v in value]
        elif isinstance(value, tuple):
            value = list(value)
        doc[f.name] = value
    return doc


def finding_from_dict(doc: Mapping[str, Any], resource: EcrImage) -> ImageFinding:
    try:
        values = dict(doc)
        kind = values.pop("kind")
        resource = _with_architecture(resource, values.pop(IMAGE_ARCHITECTURE, None))
        values["severity"] = Severity[values["severity"]]
        values["scanner"] = ScannerInfo(**values["scanner"])
        if kind == "vulnerability":
            values["packages"] = tuple(Package(**p) for p in values.get("packages", ()))
            values["cvss"] = tuple(Cvss(**c) for c in values.get("cvss", ()))
            for name in ("cves", "references"):
                values[name] = tuple(values.get(name, ()))
            for name in _DATETIMES:
                if values.get(name):
                    values[name] = datetime.fromisoformat(values[name])
            if values.get("kev_date_added"):
                values["kev_date_added"] = date.fromisoformat(values["kev_date_added"])
            return VulnerabilityFinding(resource=resource, **values)
        if kind == "secret":
            return SecretFinding(resource=resource, **values)
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportParseError(
            f"stored findings are unreadable: {type(exc).__name__}: {exc}"
        ) from exc
    raise ReportParseError(f"stored findings have an unknown kind {kind!r}")


def findings_to_dicts(findings: Iterable[Any]) -> list[dict[str, Any]]:
    return [finding_to_dict(f) for f in findings if isinstance(f, ImageFinding)]


def findings_from_dicts(
    docs: Iterable[Mapping[str, Any]], resource: EcrImage
) -> tuple[ImageFinding, ...]:
    return tuple(finding_from_dict(d, resource) for d in docs)


def rebind(findings: Iterable[Any], resource: EcrImage) -> tuple[ImageFinding, ...]:
    """The same findings, about `resource` (another repository holding the same digest),
    keeping the architecture the scanner found when `resource` names none."""
    return tuple(
        replace(f, resource=_with_architecture(resource, f.resource.architecture))
        for f in findings
        if isinstance(f, ImageFinding)
    )


def _with_architecture(resource: EcrImage, architecture: str | None) -> EcrImage:
    if resource.architecture or not architecture:
        return resource
    return replace(resource, architecture=architecture)
