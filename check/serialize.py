"""Normalized image findings to JSON and back (for the scan cache and the run outputs).

The resource is NOT serialized: a cached result belongs to a digest, and the same digest
may sit in several repositories and accounts, so `findings_from_dicts` re-binds the
findings to the image they are loaded for. `from_dict(to_dict(f)) == f` for every image
finding (a hypothesis test holds it to that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields, replace
from datetime import datetime
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

FORMAT_VERSION = 1
ImageFinding = VulnerabilityFinding | SecretFinding


def _plain(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj) if getattr(obj, f.name) is not None}


def finding_to_dict(finding: ImageFinding) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": finding.kind}
    for f in fields(finding):
        value = getattr(finding, f.name)
        if f.name in ("resource", "exposure") or value is None:
            continue
        if isinstance(value, Severity):
            value = value.name
        elif isinstance(value, ScannerInfo):
            value = _plain(value)
        elif isinstance(value, datetime):
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
        values["severity"] = Severity[values["severity"]]
        values["scanner"] = ScannerInfo(**values["scanner"])
        if kind == "vulnerability":
            values["packages"] = tuple(Package(**p) for p in values.get("packages", ()))
            values["cvss"] = tuple(Cvss(**c) for c in values.get("cvss", ()))
            for name in ("cves", "references"):
                values[name] = tuple(values.get(name, ()))
            if values.get("published_at"):
                values["published_at"] = datetime.fromisoformat(values["published_at"])
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
    """The same findings, about `resource` (another repository holding the same digest)."""
    return tuple(replace(f, resource=resource) for f in findings if isinstance(f, ImageFinding))
