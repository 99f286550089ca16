"""QScanner's SARIF vulnerability report (`*-Report.sarif.json`) -> VulnerabilityFinding.

Shape (reference 3.1, after nelssec/qualys-jenkins SarifParser.java):

    runs[].tool.driver{ name, version, rules[] }
    rules[]: id (the QID), shortDescription.text, fullDescription.text, helpUri,
             defaultConfiguration.level,
             properties{ severity (Qualys 1-5; fallback customerSeverity), "cve-ids"[], qds,
                         cvssV3{baseScore, vector}, cvssV2{baseScore, vector} }
    results[]: ruleId, level, message.text,
               properties{ QID, vulnerableSoftware[]{ name, installedVersion, fixedVersion,
                                                      layerSHA, packageManager, filePath } }
    runs[].properties / artifacts[0].properties: imageID, imageDigest | repoDigest, os, ...

`cvssV3`/`cvssV2`, `packageManager` and `filePath` are not confirmed in real QScanner output
(the reference found no CVSS there); they are read when present. The package manager and
file path are otherwise taken from the ScanResult inventory (`scanresult.py`).

Per SARIF 2.1.0, a run whose `results` is absent means the tool failed; an empty array
means no findings. The former is a parse error: an empty report must never archive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from check.reports.document import Node, load_json, opt_str
from check.reports.packages import FindingGroups, cvss_version, package_manager
from check.reports.scanresult import InventoryPackage
from securityhub.findings import (
    QUALYS_SEVERITY,
    Cvss,
    EcrImage,
    Package,
    ScannerInfo,
    Severity,
    VulnerabilityFinding,
)

NVD_URL = "https://nvd.nist.gov/vuln/detail/{}"
# Fixed versions QScanner writes when there is no fix.
_NO_FIX = {"", "none", "n/a", "not fixed", "unfixed", "-"}


@dataclass(frozen=True)
class _Rule:
    qid: str
    title: str
    description: str
    severity: Severity
    vendor_severity: str
    cves: tuple[str, ...]
    cvss: tuple[Cvss, ...]
    references: tuple[str, ...]


@dataclass(frozen=True)
class SarifReport:
    findings: tuple[VulnerabilityFinding, ...]
    tool_version: str | None
    image_digest: str | None  # what the report says it scanned, when it says


def parse_sarif(
    data: bytes | str,
    source: str,
    *,
    image: EcrImage,
    scanner: ScannerInfo,
    severity_map: Mapping[int, Severity] = QUALYS_SEVERITY,
    inventory: Mapping[str, Sequence[InventoryPackage]] | None = None,
) -> SarifReport:
    """Parse a QScanner SARIF report: ONE finding per QID with every affected package."""
    root = load_json(data, source)
    groups = FindingGroups()
    tool_version: str | None = None
    image_digest: str | None = None
    for run in root.get("runs").items():
        driver = run.get("tool").get("driver")
        tool_version = tool_version or opt_str(driver, "version")
        image_digest = image_digest or _image_digest(run)
        rules: dict[str, _Rule] = {}
        rules_node = driver.opt("rules")
        for rule_node in rules_node.items() if rules_node else ():
            parsed = _rule(rule_node, severity_map)
            rules[parsed.qid] = parsed
        for result in run.get("results").items():
            props = result.get("properties")
            qid_node = props.first("QID", "qid")
            qid = qid_node.text()
            # ruleId is SARIF's link to the rule; QScanner's rule ids are the QIDs.
            rule_id = opt_str(result, "ruleId") or qid
            rule = rules.get(rule_id) or rules.get(qid)
            if rule is None:
                raise qid_node.error(f"QID {qid} has no rule in tool.driver.rules")
            if rule.qid.isdigit() and rule.qid != qid:
                raise qid_node.error(f"QID {qid} does not match ruleId {rule.qid}")
            packages = [
                _package(node, inventory or {}) for node in props.get("vulnerableSoftware").items()
            ]
            title = rule.title or _message(result) or f"QID {qid}"
            groups.add(
                VulnerabilityFinding(
                    resource=image,
                    vulnerability_id=qid,
                    qid=qid,
                    title=title,
                    description=rule.description,
                    severity=rule.severity,
                    vendor_severity=rule.vendor_severity,
                    scanner=scanner,
                    cves=rule.cves,
                    cvss=rule.cvss,
                    references=rule.references,
                ),
                packages,
            )
    return SarifReport(groups.findings(), tool_version, image_digest)


def _message(result: Node) -> str | None:
    message = result.opt("message")
    return opt_str(message, "text") if message is not None else None


def _image_digest(run: Node) -> str | None:
    props = run.opt("properties")
    if props is not None:
        digest = opt_str(props, "imageDigest", "repoDigest")
        if digest:
            return digest.rsplit("@", 1)[-1]
    artifacts = run.opt("artifacts")
    for artifact in artifacts.items() if artifacts else ():
        art_props = artifact.opt("properties")
        digest = opt_str(art_props, "repoDigest", "imageDigest") if art_props else None
        if digest:
            return digest.rsplit("@", 1)[-1]
        break  # the image is artifacts[0]
    return None


def _rule(node: Node, severity_map: Mapping[int, Severity]) -> _Rule:
    qid = node.get("id").text()
    props = node.get("properties")
    severity_node = props.first("severity", "customerSeverity")
    number = severity_node.integer()
    if number not in severity_map:
        raise severity_node.error(
            f"unknown Qualys severity {number}; expected one of {sorted(severity_map)}"
        )
    cve_node = props.opt("cve-ids", "cveIds", "cves")
    cves = tuple(c.strip() for c in cve_node.strings()) if cve_node else ()
    short = node.opt("shortDescription")
    full = node.opt("fullDescription")
    cvss = []
    for key, version in (("cvssV3", "3.1"), ("cvssV2", "2.0")):
        cvss_node = props.opt(key)
        if cvss_node is not None:
            vector = opt_str(cvss_node, "vector")
            cvss.append(
                Cvss(
                    version=cvss_version(vector, version),
                    base_score=cvss_node.get("baseScore").number(),
                    vector=vector,
                    source="Qualys",
                )
            )
    references = []
    help_uri = opt_str(node, "helpUri")
    if help_uri:
        references.append(help_uri)
    references += [NVD_URL.format(cve) for cve in cves if cve.startswith("CVE-")]
    return _Rule(
        qid=qid,
        title=(opt_str(short, "text") if short else None) or "",
        description=(opt_str(full, "text") if full else None) or "",
        severity=severity_map[number],
        vendor_severity=str(number),
        cves=cves,
        cvss=tuple(cvss),
        references=tuple(references),
    )


def _package(node: Node, inventory: Mapping[str, Sequence[InventoryPackage]]) -> Package:
    name = node.get("name").string()
    installed = node.get("installedVersion").text()
    fixed = opt_str(node, "fixedVersion")
    if fixed is not None and fixed.strip().lower() in _NO_FIX:
        fixed = None
    known = _inventory_match(inventory.get(name, ()), installed)
    manager = package_manager(opt_str(node, "packageManager", "type"))
    return Package(
        name=name,
        installed_version=installed,
        fixed_version=fixed,
        package_manager=manager or (known.package_manager if known else None),
        file_path=opt_str(node, "filePath", "path") or (known.file_path if known else None),
        layer=opt_str(node, "layerSHA", "layerDigest"),
    )


def _inventory_match(
    candidates: Sequence[InventoryPackage], installed: str
) -> InventoryPackage | None:
    for candidate in candidates:
        if candidate.version == installed:
            return candidate
    return candidates[0] if len(candidates) == 1 else None
