"""`trivy image -f json` (schema version 2) -> VulnerabilityFinding and SecretFinding.

Shape (reference 6, from aquasecurity/trivy pkg/types): `Results[]` per target (an OS, a
lock file, a binary, a file with secrets), each with `Vulnerabilities[]` (one entry per
package and vulnerability) and `Secrets[]`. Empty arrays are omitted by Trivy, so a missing
`Results` means nothing was found. Findings are grouped: one per vulnerability id with
every affected package. Secret `Match`/`Code` (the matched text) is never read.
"""

from __future__ import annotations

from dataclasses import dataclass

from check.reports.document import Node, load_json, opt_str
from check.reports.packages import FindingGroups, cvss_version, package_manager
from securityhub.findings import (
    Cvss,
    EcrImage,
    Package,
    ScannerInfo,
    SecretFinding,
    Severity,
    VulnerabilityFinding,
)

SUPPORTED_SCHEMA = 2
# Trivy's CVSS keys -> (version label, vector key).
_CVSS_KEYS = (
    ("V40Score", "V40Vector", "4.0"),
    ("V3Score", "V3Vector", "3.1"),
    ("V2Score", "V2Vector", "2.0"),
)


@dataclass(frozen=True)
class TrivyReport:
    vulnerabilities: tuple[VulnerabilityFinding, ...]
    secrets: tuple[SecretFinding, ...]
    trivy_version: str | None
    image_digests: tuple[str, ...]  # Metadata.RepoDigests, digests only


def parse_trivy(
    data: bytes | str, source: str, *, image: EcrImage, scanner: ScannerInfo
) -> TrivyReport:
    root = load_json(data, source)
    schema = root.get("SchemaVersion")
    if schema.integer() != SUPPORTED_SCHEMA:
        raise schema.error(
            f"unsupported schema version {schema.value}; expected {SUPPORTED_SCHEMA}"
        )
    groups = FindingGroups()
    secrets: dict[tuple[str, ...], SecretFinding] = {}
    results = root.opt("Results")
    for result in results.items() if results else ():
        target = result.get("Target").string()
        result_class = opt_str(result, "Class") or ""
        manager = package_manager(opt_str(result, "Type"))
        vulns = result.opt("Vulnerabilities")
        for node in vulns.items() if vulns else ():
            finding, package = _vulnerability(
                node,
                target=target,
                result_class=result_class,
                manager=manager,
                image=image,
                scanner=scanner,
            )
            groups.add(finding, [package])
        found = result.opt("Secrets")
        for node in found.items() if found else ():
            secret = _secret(node, target, image, scanner)
            secrets.setdefault(secret.identity(), secret)
    version = None
    trivy_node = root.opt("Trivy")
    if trivy_node is not None:
        version = opt_str(trivy_node, "Version")
    digests: tuple[str, ...] = ()
    metadata = root.opt("Metadata")
    repo_digests = metadata.opt("RepoDigests") if metadata else None
    if repo_digests is not None:
        digests = tuple(d.rsplit("@", 1)[-1] for d in repo_digests.strings())
    return TrivyReport(
        vulnerabilities=groups.findings(),
        secrets=tuple(secrets[key] for key in sorted(secrets)),
        trivy_version=version,
        image_digests=digests,
    )


def _severity(node: Node) -> Severity:
    try:
        return Severity.parse(node.string())
    except ValueError as exc:
        raise node.error(str(exc)) from None


def _cvss(node: Node | None) -> tuple[Cvss, ...]:
    if node is None:
        return ()
    out = []
    for source, entry in sorted(node.members()):
        for score_key, vector_key, version in _CVSS_KEYS:
            score = entry.opt(score_key)
            if score is None or score.number() == 0:
                continue
            vector = opt_str(entry, vector_key)
            out.append(
                Cvss(
                    version=cvss_version(vector, version),
                    base_score=score.number(),
                    vector=vector,
                    source=source,
                )
            )
    return tuple(out)


def _vulnerability(
    node: Node,
    *,
    target: str,
    result_class: str,
    manager: str | None,
    image: EcrImage,
    scanner: ScannerInfo,
) -> tuple[VulnerabilityFinding, Package]:
    vuln_id = node.get("VulnerabilityID").string()
    layer = node.opt("Layer")
    file_path = opt_str(node, "PkgPath")
    if file_path is None and result_class == "lang-pkgs":
        file_path = target
    package = Package(
        name=node.get("PkgName").string(),
        installed_version=node.get("InstalledVersion").text(),
        fixed_version=opt_str(node, "FixedVersion"),
        package_manager=manager,
        file_path=file_path,
        layer=opt_str(layer, "Digest", "DiffID") if layer is not None else None,
    )
    severity_node = node.get("Severity")
    references = []
    primary = opt_str(node, "PrimaryURL")
    if primary:
        references.append(primary)
    refs = node.opt("References")
    references += [r for r in (refs.strings() if refs else ()) if r not in references]
    published = node.opt("PublishedDate")
    modified = node.opt("LastModifiedDate")
    finding = VulnerabilityFinding(
        resource=image,
        vulnerability_id=vuln_id,
        title=opt_str(node, "Title") or vuln_id,
        description=opt_str(node, "Description") or "",
        severity=_severity(severity_node),
        vendor_severity=severity_node.string(),
        scanner=scanner,
        cves=(vuln_id,) if vuln_id.startswith("CVE-") else (),
        cvss=_cvss(node.opt("CVSS")),
        references=tuple(references),
        published_at=published.timestamp() if published is not None else None,
        # The advisory source Trivy rated it from (nvd, alpine, debian, ghsa...).
        vendor=opt_str(node, "SeveritySource"),
        vendor_url=primary,
        vendor_updated_at=modified.timestamp() if modified is not None else None,
    )
    return finding, package


def _secret(node: Node, target: str, image: EcrImage, scanner: ScannerInfo) -> SecretFinding:
    rule_id = node.get("RuleID").string()
    layer = node.opt("Layer")
    return SecretFinding(
        resource=image,
        rule_id=rule_id,
        category=opt_str(node, "Category") or "Generic",
        title=opt_str(node, "Title") or rule_id,
        severity=_severity(node.get("Severity")),
        scanner=scanner,
        file_path=target,
        line=node.get("StartLine").integer(),
        layer=opt_str(layer, "Digest", "DiffID") if layer is not None else None,
    )
