"""`grype -o json` -> VulnerabilityFinding (Grype has no secret scanning).

Shape (reference 7, from anchore/grype grype/presenter/models): `matches[]`, each a
vulnerability matched to one package (`artifact`), with `relatedVulnerabilities[]` (often
the NVD record carrying the CVSS for a GHSA or distro advisory). Findings are grouped: one
per vulnerability id with every affected package.
"""

from __future__ import annotations

from dataclasses import dataclass

from check.reports.document import Node, load_json, opt_str
from check.reports.packages import FindingGroups, package_manager
from securityhub.findings import (
    Cvss,
    EcrImage,
    Package,
    ScannerInfo,
    Severity,
    VulnerabilityFinding,
)

# Characters of the description used as the title (Grype has no title field).
TITLE_LENGTH = 200


@dataclass(frozen=True)
class GrypeReport:
    vulnerabilities: tuple[VulnerabilityFinding, ...]
    grype_version: str | None
    image_digest: str | None  # source.target.manifestDigest


def parse_grype(
    data: bytes | str, source: str, *, image: EcrImage, scanner: ScannerInfo
) -> GrypeReport:
    root = load_json(data, source)
    groups = FindingGroups()
    for match in root.get("matches").items():
        finding, package = _match(match, image, scanner)
        groups.add(finding, [package])
    descriptor = root.opt("descriptor")
    version = opt_str(descriptor, "version") if descriptor is not None else None
    digest = None
    src = root.opt("source")
    target = src.opt("target") if src is not None else None
    if target is not None and isinstance(target.value, dict):
        digest = opt_str(target, "manifestDigest")
    return GrypeReport(groups.findings(), version, digest)


def _cvss(node: Node | None) -> list[Cvss]:
    out: list[Cvss] = []
    for entry in node.items() if node is not None else ():
        metrics = entry.get("metrics")
        out.append(
            Cvss(
                version=entry.get("version").text(),
                base_score=metrics.get("baseScore").number(),
                vector=opt_str(entry, "vector"),
                source=opt_str(entry, "source"),
            )
        )
    return out


def _match(
    node: Node, image: EcrImage, scanner: ScannerInfo
) -> tuple[VulnerabilityFinding, Package]:
    vuln = node.get("vulnerability")
    vuln_id = vuln.get("id").string()
    severity_node = vuln.get("severity")
    try:
        severity = Severity.parse(severity_node.string())
    except ValueError as exc:
        raise severity_node.error(str(exc)) from None
    cves = [vuln_id] if vuln_id.startswith("CVE-") else []
    cvss = _cvss(vuln.opt("cvss"))
    description = opt_str(vuln, "description") or ""
    references = []
    data_source = opt_str(vuln, "dataSource")
    if data_source:
        references.append(data_source)
    urls = vuln.opt("urls")
    references += urls.strings() if urls else ()
    advisories = vuln.opt("advisories")
    for advisory in advisories.items() if advisories else ():
        link = opt_str(advisory, "link")
        if link:
            references.append(link)
    related = node.opt("relatedVulnerabilities")
    for other in related.items() if related else ():
        other_id = other.get("id").string()
        if other_id.startswith("CVE-") and other_id not in cves:
            cves.append(other_id)
        cvss += [c for c in _cvss(other.opt("cvss")) if c not in cvss]
        description = description or opt_str(other, "description") or ""
    artifact = node.get("artifact")
    fixed = None
    fix = vuln.opt("fix")
    if fix is not None:
        state = opt_str(fix, "state")
        versions = fix.opt("versions")
        if state == "fixed" and versions is not None and versions.strings():
            fixed = ", ".join(versions.strings())
    locations = artifact.opt("locations")
    first_location = next(iter(locations.items()), None) if locations else None
    package = Package(
        name=artifact.get("name").string(),
        installed_version=artifact.get("version").text(),
        fixed_version=fixed,
        package_manager=package_manager(opt_str(artifact, "type")),
        file_path=opt_str(first_location, "path") if first_location else None,
        layer=opt_str(first_location, "layerID") if first_location else None,
    )
    title = description.split("\n", 1)[0][:TITLE_LENGTH] if description else vuln_id
    finding = VulnerabilityFinding(
        resource=image,
        vulnerability_id=vuln_id,
        title=title,
        description=description,
        severity=severity,
        vendor_severity=severity_node.string(),
        scanner=scanner,
        cves=tuple(cves),
        cvss=tuple(cvss),
        # The advisory namespace ("alpine:distro:alpine:3.10", "github:language:python").
        vendor=opt_str(vuln, "namespace"),
        vendor_url=data_source,
        references=tuple(dict.fromkeys(references)),
    )
    return finding, package
