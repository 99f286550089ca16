"""QScanner's SARIF vulnerability report (`*-Report.sarif.json`) -> VulnerabilityFinding.

Shape (reference 3.1 after nelssec/qualys-jenkins SarifParser.java, and section 8: the
concepts Qualys's QScanner 4.8.0 README names; the exact keys are not published, so each
documented spelling is accepted):

    runs[].tool.driver{ name, version, rules[] }
    rules[]: id (the QID), shortDescription.text, fullDescription.text, helpUri,
             properties{ severity | customerSeverity (Qualys 1-5), "cve-ids"[], qds,
                         CVSS3Info{baseScore, temporalScore, accessVector} | cvssV3{baseScore,
                         vector}, CVSSInfo{...} | cvssV2{...}, TypeDetected, Published }
    results[]: ruleId, message.text,
               properties{ QID, vulnerableSoftware[]{ name, installedVersion, fixedVersion,
                                                      layerSHA, path, packageManager },
                           and any of the rule's properties (the result's win) }
    runs[].properties / artifacts[0].properties: imageID, imageDigest | repoDigest, os, ...

A result this parser cannot read (a secret, compliance or IaC result of a newer QScanner,
an unknown shape) is skipped and counted in `SarifReport.skipped`: the caller reports it in
the image's status; it never rejects the report. Per SARIF 2.1.0, a run whose `results` is
absent means the tool failed; an empty array means no findings. The former is a parse
error: an empty report must never archive.

Findings come out one per (image, CVE) (`securityhub.findings.split_by_cve`); the QIDs
naming a CVE stay on the finding (`qid`) for ProductFields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from check.reports.document import Node, ReportFieldError, load_json, opt_str
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
VENDOR = "QUALYS"
# (keys QScanner may use, the CVSS version when no vector says): CVSS3Info/CVSSInfo are the
# README's names, cvssV3/cvssV2 the earlier wrappers'. "3.x": the README does not say
# whether Qualys scores are CVSS 3.0 or 3.1.
_CVSS_KEYS = (
    (("CVSS3Info", "cvss3Info", "cvssV3"), "3.x"),
    (("CVSSInfo", "cvssInfo", "cvssV2"), "2.0"),
)
# Skipped-result reasons kept in the report (the count is always exact).
MAX_SKIP_REASONS = 5
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
    help_uri: str | None
    props: Node


@dataclass(frozen=True)
class SarifReport:
    findings: tuple[VulnerabilityFinding, ...]
    tool_version: str | None
    image_digest: str | None  # what the report says it scanned, when it says
    # Results that could not be read as vulnerabilities: (count, the first few reasons).
    skipped_count: int = 0
    skipped: tuple[str, ...] = field(default_factory=tuple)


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
    skipped: list[str] = []
    for run in root.get("runs").items():
        driver = run.get("tool").get("driver")
        tool_version = tool_version or opt_str(driver, "version")
        image_digest = image_digest or _image_digest(run)
        rules: dict[str, _Rule | ReportFieldError] = {}
        rules_node = driver.opt("rules")
        for rule_node in rules_node.items() if rules_node else ():
            try:
                parsed = _rule(rule_node, severity_map)
            except ReportFieldError as exc:  # a rule of a result kind we do not read
                rule_id = rule_node.opt("id")
                if rule_id is not None and isinstance(rule_id.value, str | int):
                    rules[str(rule_id.value)] = exc
                continue
            rules[parsed.qid] = parsed
        for result in run.get("results").items():
            try:
                finding, packages = _result(
                    result,
                    rules=rules,
                    severity_map=severity_map,
                    image=image,
                    scanner=scanner,
                    inventory=inventory,
                )
            except ReportFieldError as exc:
                skipped.append(exc.args[0])
                continue
            groups.add(finding, packages)
    return SarifReport(
        groups.findings(),
        tool_version,
        image_digest,
        skipped_count=len(skipped),
        skipped=tuple(skipped[:MAX_SKIP_REASONS]),
    )


def _result(
    result: Node,
    *,
    rules: Mapping[str, _Rule | ReportFieldError],
    severity_map: Mapping[int, Severity],
    image: EcrImage,
    scanner: ScannerInfo,
    inventory: Mapping[str, Sequence[InventoryPackage]] | None,
) -> tuple[VulnerabilityFinding, list[Package]]:
    """One vulnerability result; ReportFieldError when it is not one this parser reads."""
    props = result.get("properties")
    qid_node = props.first("QID", "qid", "Qid")
    qid = qid_node.text()
    # ruleId is SARIF's link to the rule; QScanner's rule ids are the QIDs.
    rule_id = opt_str(result, "ruleId") or qid
    rule = rules.get(rule_id) or rules.get(qid)
    if isinstance(rule, ReportFieldError):
        raise rule
    if rule is None:
        raise qid_node.error(f"QID {qid} has no rule in tool.driver.rules")
    if rule.qid.isdigit() and rule.qid != qid:
        raise qid_node.error(f"QID {qid} does not match ruleId {rule.qid}")
    software = props.first("vulnerableSoftware", "VulnerableSoftware", "Softwares", "softwares")
    packages = [_package(node, inventory or {}) for node in software.items()]
    # A result may carry the rule's properties itself (the README lists them per detection).
    severity, vendor_severity = rule.severity, rule.vendor_severity
    if props.opt("severity", "Severity", "customerSeverity", "CustomerSeverity") is not None:
        severity, vendor_severity = _severity(props, severity_map)
    cves = _cves(props) or rule.cves
    cvss = _cvss(props) or rule.cvss
    title = rule.title or _message(result) or f"QID {qid}"
    published = _published(props) or _published(rule.props)
    return (
        VulnerabilityFinding(
            resource=image,
            vulnerability_id=qid,
            qid=qid,
            title=title,
            description=rule.description,
            severity=severity,
            vendor_severity=vendor_severity,
            scanner=scanner,
            cves=cves,
            cvss=cvss,
            references=_references(rule.help_uri, cves),
            qds=_text(props, "qds", "QDS") or _text(rule.props, "qds", "QDS"),
            type_detected=_type_detected(props) or _type_detected(rule.props),
            published_at=published,
            vendor=VENDOR,
            vendor_url=rule.help_uri,
        ),
        packages,
    )


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
    severity, vendor_severity = _severity(props, severity_map)
    cves = _cves(props)
    short = node.opt("shortDescription")
    full = node.opt("fullDescription")
    help_uri = opt_str(node, "helpUri")
    return _Rule(
        qid=qid,
        title=(opt_str(short, "text") if short else None) or "",
        description=(opt_str(full, "text") if full else None) or "",
        severity=severity,
        vendor_severity=vendor_severity,
        cves=cves,
        cvss=_cvss(props),
        references=_references(help_uri, cves),
        help_uri=help_uri,
        props=props,
    )


def _severity(props: Node, severity_map: Mapping[int, Severity]) -> tuple[Severity, str]:
    severity_node = props.first("severity", "Severity", "customerSeverity", "CustomerSeverity")
    number = severity_node.integer()
    if number not in severity_map:
        raise severity_node.error(
            f"unknown Qualys severity {number}; expected one of {sorted(severity_map)}"
        )
    return severity_map[number], str(number)


def _cves(props: Node) -> tuple[str, ...]:
    node = props.opt("cve-ids", "CVE-IDs", "cveIds", "cves", "CVEs")
    if node is None:
        return ()
    if isinstance(node.value, str):  # "CVE-2019-1547, CVE-2019-1549"
        return tuple(c.strip() for c in node.value.split(",") if c.strip())
    return tuple(dict.fromkeys(c.strip() for c in node.strings() if c.strip()))


def _cvss(props: Node) -> tuple[Cvss, ...]:
    out = []
    for keys, default_version in _CVSS_KEYS:
        node = props.opt(*keys)
        if node is None or not node.has("baseScore"):
            continue
        vector = opt_str(node, "vector", "vectorString")
        temporal = node.opt("temporalScore")
        out.append(
            Cvss(
                version=cvss_version(vector, default_version),
                base_score=node.get("baseScore").number(),
                vector=vector,
                source=VENDOR,
                temporal_score=temporal.number() if temporal is not None else None,
                access_vector=opt_str(node, "accessVector"),
            )
        )
    return tuple(out)


def _references(help_uri: str | None, cves: Sequence[str]) -> tuple[str, ...]:
    references = [help_uri] if help_uri else []
    references += [NVD_URL.format(cve) for cve in cves if cve.startswith("CVE-")]
    return tuple(references)


def _text(node: Node, *keys: str) -> str | None:
    child = node.opt(*keys)
    if child is None or isinstance(child.value, bool):
        return None
    if isinstance(child.value, int | float):
        return f"{child.value:g}"
    return opt_str(node, *keys)


def _type_detected(props: Node) -> str | None:
    value = _text(props, "TypeDetected", "typeDetected")
    return value.upper() if value else None


def _published(props: Node) -> datetime | None:
    """`Published`: RFC 3339, a date, or epoch milliseconds (the CS API's form); else None."""
    node = props.opt("Published", "published", "publishedDate")
    if node is None:
        return None
    value = node.value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value / 1000 if value > 10**11 else value
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None  # an unknown date form loses the date, not the finding
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None


def _package(node: Node, inventory: Mapping[str, Sequence[InventoryPackage]]) -> Package:
    name = node.get("name").string()
    installed = node.first("installedVersion", "installed", "InstalledVersion").text()
    fixed = opt_str(node, "fixedVersion", "fixed", "FixedVersion")
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
        layer=opt_str(node, "layerSHA", "layer", "layerDigest"),
    )


def _inventory_match(
    candidates: Sequence[InventoryPackage], installed: str
) -> InventoryPackage | None:
    for candidate in candidates:
        if candidate.version == installed:
            return candidate
    return candidates[0] if len(candidates) == 1 else None
