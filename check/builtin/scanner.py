"""The built-in offline scanner: inventory, advisory matching and secret detection.

`BuiltinScanner` implements `check.scanner.Scanner` without any external binary. It reads
the image (`check.builtin.image`: a registry, an OCI layout or a docker-save archive), builds the
package inventory (`check.builtin.inventory`), matches it against the advisory database
(`check.builtin.advisories`) and searches small text files for credentials
(`check.builtin.secrets`).

Findings follow the contract of `securityhub.findings`:
- one VulnerabilityFinding per (image, vulnerability id) with every affected package. The
  id is the advisory's first CVE when it has one (so a PYSEC and a GHSA record of the same
  CVE make one finding), else the advisory id.
- severity: the highest CVSS v3 base score's rating when the advisory has a vector, else
  its own label (GHSA's database_specific.severity, a distribution's urgency), else
  `DEFAULT_SEVERITY`. PYSEC records rarely and Alpine secdb entries never carry a
  severity; MEDIUM shows such a known, fixable vulnerability without ranking it with the
  scored critical ones (Trivy reports these as UNKNOWN).
- one SecretFinding per (image, rule, file, line), with the layer, never the value.

Raw outputs in the work directory: `builtin-inventory.json` (the OS, every package with its
layer and file) and `builtin-findings.json` (the findings, secrets masked).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from check.builtin.advisories import AdvisoryDatabase, AdvisoryDatabaseError, Match
from check.builtin.image import (
    DEFAULT_PLATFORM,
    DockerArchiveSource,
    ImageLimits,
    ImageSource,
    OciLayoutSource,
    read_image,
)
from check.builtin.inventory import Inventory, build_inventory, wants
from check.builtin.registry import LOOPBACK_HOSTS, ImageReference, RegistryClient, RegistrySource
from check.builtin.secrets import SecretHit, scan_bytes
from check.scanner import DEFAULT_SCAN_TYPES, RegistryAuth, ScanResult, ScanTarget
from securityhub.errors import ConfigurationError
from securityhub.findings import (
    EcrImage,
    Finding,
    Package,
    ScannerInfo,
    SecretFinding,
    Severity,
    VulnerabilityFinding,
    split_by_cve,
)
from securityhub.logs import fields, get_logger

log = get_logger("check.builtin.scanner")

SCANNER_NAME = "builtin"
SCANNER_VERSION = "1.0"
DEFAULT_SEVERITY = Severity.MEDIUM
DEFAULT_TIMEOUT = 900.0
PLATFORM_ENV = "CONTAINERSCAN_PLATFORM"
MAX_SECRET_FILE_ENV = "CONTAINERSCAN_MAX_SECRET_FILE_BYTES"  # noqa: S105 - a variable name
INVENTORY_FILE = "builtin-inventory.json"
FINDINGS_FILE = "builtin-findings.json"
OCI_LAYOUT_PREFIX = "oci-layout:"
DOCKER_ARCHIVE_PREFIX = "docker-archive:"
# A file with thousands of credential-looking lines is a dictionary or a test corpus; the
# finding count per image stays bounded so one image cannot flood Security Hub.
MAX_SECRET_FINDINGS = 1000
# `host=url,...`: pull images named after `host` from `url` (see RegistryMirror).
MIRRORS_ENV = "CONTAINERSCAN_REGISTRY_MIRRORS"
# A registry host as image references name it: DNS labels, an optional port.
_REGISTRY_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
                            r"(?::\d{1,5})?", re.IGNORECASE)


@dataclass(frozen=True)
class RegistryMirror:
    """Where images named after `host` are pulled from instead: `scheme://netloc/prefix`.

    Production use: a pull-through cache or a private endpoint in front of ECR; the quick
    start: a registry on loopback holding the same manifests as the emulated ECR. The image
    keeps its identity (the original host, repository and digest); a pinned digest is
    verified against the bytes the mirror serves, so a mirror cannot substitute content.
    """

    host: str
    scheme: str
    netloc: str
    prefix: str = ""

    @property
    def insecure(self) -> bool:
        return self.scheme == "http"

    def reference(self, ref: ImageReference) -> ImageReference:
        repository = f"{self.prefix}/{ref.repository}" if self.prefix else ref.repository
        return dataclasses.replace(ref, host=self.netloc, repository=repository)

    def auth(self, auth: RegistryAuth | None) -> RegistryAuth | None:
        """The original registry's credentials travel to the mirror over HTTPS only, and
        only when it asks (RegistryClient answers challenges); a plain-HTTP loopback mirror
        never sees them."""
        return None if self.insecure else auth


def _loopback(netloc: str) -> bool:
    """`127.0.0.1:5000`, `localhost`, `[::1]:5000`: what RegistryClient serves over http."""
    if netloc.startswith("["):
        return netloc.partition("]")[0] + "]" in LOOPBACK_HOSTS
    return netloc.rsplit(":", 1)[0] in LOOPBACK_HOSTS


def parse_mirrors(text: str, source: str = MIRRORS_ENV) -> dict[str, RegistryMirror]:
    """`host=url[,host=url...]` -> {host: mirror}; ConfigurationError names the bad entry."""
    mirrors: dict[str, RegistryMirror] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        host, equals, url = (part.strip() for part in entry.partition("="))
        hint = ("use host=url, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com="
                "https://mirror.example.com/ecr")
        if not equals or not _REGISTRY_HOST.fullmatch(host):
            raise ConfigurationError(f"{source}: {entry!r} is not host=url", hint)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query \
                or parts.fragment or "@" in parts.netloc:
            raise ConfigurationError(
                f"{source}: {url!r} (for {host}) is not an http(s) URL without credentials, "
                "query or fragment", hint)
        if parts.scheme == "http" and not _loopback(parts.netloc):
            raise ConfigurationError(
                f"{source}: plain http is allowed for loopback mirrors only, not {parts.netloc}",
                "use https:// for a mirror on another host")
        if host in mirrors:
            raise ConfigurationError(f"{source}: {host} has two mirrors", hint)
        mirrors[host] = RegistryMirror(host, parts.scheme, parts.netloc, parts.path.strip("/"))
    return mirrors


def open_source(ref: str, auth: RegistryAuth | None = None,
                platform: str = DEFAULT_PLATFORM,
                mirrors: Mapping[str, RegistryMirror] | None = None) -> ImageSource:
    """`oci-layout:DIR`, `docker-archive:FILE` or a registry reference (through its mirror)."""
    if ref.startswith(OCI_LAYOUT_PREFIX):
        return OciLayoutSource(Path(ref[len(OCI_LAYOUT_PREFIX):]), platform)
    if ref.startswith(DOCKER_ARCHIVE_PREFIX):
        return DockerArchiveSource(Path(ref[len(DOCKER_ARCHIVE_PREFIX):]))
    parsed = ImageReference.parse(ref)
    mirror = (mirrors or {}).get(parsed.host)
    if mirror is None:
        return RegistrySource(parsed, auth, platform)
    log.debug("pulling through a mirror", extra=fields(image=ref, mirror=mirror.netloc))
    source = RegistrySource(mirror.reference(parsed), mirror.auth(auth), platform,
                            insecure=mirror.insecure)
    source.description = f"{parsed} (mirror {mirror.scheme}://{mirror.netloc})"
    return source


class BuiltinScanner:
    """`check.scanner.Scanner` on the standard library and the advisory database."""

    name = SCANNER_NAME

    def __init__(self, *, vuln_db: str | os.PathLike[str] | None = None,
                 platform: str | None = None, limits: ImageLimits | None = None,
                 default_severity: Severity = DEFAULT_SEVERITY,
                 environ: Mapping[str, str] | None = None,
                 mirrors: Mapping[str, RegistryMirror] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        self._vuln_db_path = vuln_db
        self._env = env
        self.platform = platform or env.get(PLATFORM_ENV) or DEFAULT_PLATFORM
        if limits is None:
            limits = ImageLimits()
            if env.get(MAX_SECRET_FILE_ENV):
                try:
                    limits = dataclasses.replace(
                        limits, max_visited_file=int(env[MAX_SECRET_FILE_ENV]))
                except ValueError:
                    raise ConfigurationError(
                        f"{MAX_SECRET_FILE_ENV} must be a number of bytes") from None
        self.limits = limits
        self.default_severity = default_severity
        self.mirrors = (parse_mirrors(env.get(MIRRORS_ENV, "")) if mirrors is None
                        else dict(mirrors))
        self._db: AdvisoryDatabase | None = None

    # ----------------------------------------------------------------------- interface

    @property
    def database(self) -> AdvisoryDatabase:
        if self._db is None:
            self._db = AdvisoryDatabase.from_config(self._vuln_db_path, self._env)
        return self._db

    def version(self) -> str:
        """`1.0+db.<fingerprint>`: cached results expire when the advisories change."""
        try:
            return f"{SCANNER_VERSION}+db.{self.database.fingerprint()}"
        except AdvisoryDatabaseError:
            return f"{SCANNER_VERSION}+db.none"

    def info(self) -> ScannerInfo:
        return ScannerInfo(name=SCANNER_NAME, version=self.version())

    def scan(self, target: ScanTarget, workdir: Path, timeout: float) -> ScanResult:
        deadline = time.monotonic() + timeout
        ref = target.source or target.image.reference
        database = self.database if "pkg" in target.scan_types else None
        if database is not None:
            database.index()  # fail on a broken database before reading the image
        scanner = self.info()
        hits: list[tuple[SecretHit, str]] = []

        def visit(path: str, layer: str, data: bytes) -> None:
            if len(hits) < MAX_SECRET_FINDINGS:
                hits.extend((hit, layer) for hit in scan_bytes(path, data))

        source = open_source(ref, target.auth, self.platform, self.mirrors)
        started = time.monotonic()
        try:
            files = read_image(source, wants, visit if "secret" in target.scan_types else None,
                               self.limits, deadline)
        finally:
            source.close()
        resource = target.image
        if not resource.digest:
            # A pinned reference was verified by the registry client; an index digest
            # stays the resource (the sweep's identity), with the platform image read.
            resource = dataclasses.replace(resource, digest=files.digest)
        inventory = build_inventory(files.files)
        findings: list[Finding] = []
        matches: list[Match] = []
        if database is not None:
            for package in inventory.packages:
                matches += database.match(package, inventory.os)
            findings += vulnerability_findings(matches, resource, scanner, self.default_severity)
        if "secret" in target.scan_types:
            findings += secret_findings(hits[:MAX_SECRET_FINDINGS], resource, scanner)
        notes = list(files.notes)
        if len(hits) >= MAX_SECRET_FINDINGS:
            notes.append(f"secret findings capped at {MAX_SECRET_FINDINGS}")
        workdir.mkdir(parents=True, exist_ok=True)
        raw = (
            _write_json(workdir / INVENTORY_FILE, {
                "image": resource.reference, "digest": files.digest,
                "layers": list(files.layers), **inventory.to_json(),
            }),
            _write_json(workdir / FINDINGS_FILE, {
                "image": resource.reference, "scanner": dataclasses.asdict(scanner),
                "findings": [_finding_json(f) for f in findings],
                "secrets": [{"rule": h.rule.id, "file": "/" + h.path, "line": h.line,
                             "layer": layer, "masked": h.masked} for h, layer in hits],
            }),
        )
        log.info("builtin scan done", extra=fields(
            image=resource.reference, packages=len(inventory.packages),
            vulnerabilities=sum(1 for f in findings if f.kind == "vulnerability"),
            secrets=sum(1 for f in findings if f.kind == "secret"),
            seconds=round(time.monotonic() - started, 3)))
        return ScanResult(scanner=scanner, findings=tuple(findings),
                          scan_types=tuple(target.scan_types), raw_files=raw,
                          notes=tuple(notes))

    def inventory(self, ref: str, auth: RegistryAuth | None = None) -> Inventory:
        """The package inventory of an image, without matching (for `db` tooling, tests)."""
        source = open_source(ref, auth, self.platform, self.mirrors)
        try:
            files = read_image(source, wants, None, self.limits)
        finally:
            source.close()
        return build_inventory(files.files)


# -------------------------------------------------------------------------------- findings


def vulnerability_id(match: Match) -> str:
    cves = match.advisory.cves
    return cves[0] if cves else match.advisory.id


def vulnerability_findings(matches: list[Match], resource: EcrImage, scanner: ScannerInfo,
                           default_severity: Severity = DEFAULT_SEVERITY
                           ) -> list[VulnerabilityFinding]:
    """One finding per vulnerability id, with every affected package."""
    groups: dict[str, list[Match]] = {}
    for match in matches:
        groups.setdefault(vulnerability_id(match), []).append(match)
    findings = []
    for vuln_id, group in sorted(groups.items()):
        advisories = list({m.advisory.id: m.advisory for m in group}.values())
        rated = [a.severity for a in advisories if a.severity is not None]
        severity = max(rated) if rated else default_severity
        packages: dict[tuple[str, str, str], Package] = {}
        for match in group:
            pkg = match.package
            packages.setdefault((pkg.package_manager, pkg.name, pkg.file_path), Package(
                name=pkg.name, installed_version=pkg.version, fixed_version=match.fixed_version,
                package_manager=pkg.package_manager, file_path="/" + pkg.file_path,
                layer=pkg.layer, architecture=pkg.architecture,
                remediation=(f"upgrade {pkg.name} to {match.fixed_version} or later"
                             if match.fixed_version else None),
            ))
        lead = advisories[0]
        names = ", ".join(sorted({p.name for p in packages.values()}))
        summary = lead.summary or lead.details.split("\n", 1)[0]
        fixes = sorted({p.remediation for p in packages.values() if p.remediation})
        findings.append(VulnerabilityFinding(
            resource=resource,
            vulnerability_id=vuln_id,
            title=f"{vuln_id} in {names}" + (f": {summary}" if summary else ""),
            severity=severity,
            scanner=scanner,
            description=lead.details or lead.summary,
            cves=tuple(dict.fromkeys(c for a in advisories for c in a.cves)),
            packages=tuple(packages.values()),
            cvss=tuple(c for a in advisories for c in a.cvss),
            references=tuple(dict.fromkeys(r for a in advisories for r in a.references)),
            vendor_severity=", ".join(sorted({a.severity.name for a in advisories
                                               if a.severity is not None})) or None,
            remediation="; ".join(fixes) or None,
            published_at=None,
        ))
    return list(split_by_cve(findings))  # issue 10: one finding per (image, CVE)


def secret_findings(hits: list[tuple[SecretHit, str]], resource: EcrImage,
                    scanner: ScannerInfo) -> list[SecretFinding]:
    """One finding per (rule, file, line); the lowest layer that holds it is reported."""
    findings: dict[tuple[str, str, int], SecretFinding] = {}
    for hit, layer in hits:
        key = (hit.rule.id, hit.path, hit.line)
        findings.setdefault(key, SecretFinding(
            resource=resource, rule_id=hit.rule.id, category=hit.rule.category,
            title=hit.rule.title, severity=hit.rule.severity, scanner=scanner,
            file_path="/" + hit.path, line=hit.line, layer=layer,
        ))
    return list(findings.values())


def _finding_json(finding: Finding) -> dict[str, Any]:
    doc = dataclasses.asdict(finding)
    doc.pop("resource", None)
    doc["kind"] = finding.kind
    doc["severity"] = finding.severity.name
    return doc


def _write_json(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc, indent=2, default=str, sort_keys=False) + "\n")
    return path


# --------------------------------------------------------------------------- scan-image


def scan_reference(ref: str, *, vuln_db: str | os.PathLike[str] | None = None,
                   scan_types: tuple[str, ...] = DEFAULT_SCAN_TYPES,
                   workdir: Path | None = None, auth: RegistryAuth | None = None,
                   timeout: float = DEFAULT_TIMEOUT, platform: str | None = None,
                   scanner: BuiltinScanner | None = None) -> ScanResult:
    """Scan `oci-layout:DIR`, `docker-archive:FILE` or a registry reference (not ECR).

    The resource of the findings is an EcrImage with `registry_host` set: the registry host
    (tags are pinned to the digest they point at now), or `oci-layout` / `docker-archive`
    with the absolute path as the repository (`oci-layout/srv/images/app@sha256:...`).
    Raw outputs are written to `workdir` when given; without one they are not kept.
    """
    chosen = scanner or BuiltinScanner(vuln_db=vuln_db, platform=platform)
    if ref.startswith(OCI_LAYOUT_PREFIX):
        image = EcrImage(account_id="", region="", registry_host="oci-layout",
                         repository=str(Path(ref[len(OCI_LAYOUT_PREFIX):]).resolve()).lstrip("/"),
                         digest="")
        target = ScanTarget(image=image, scan_types=scan_types, auth=auth, source=ref)
    elif ref.startswith(DOCKER_ARCHIVE_PREFIX):
        image = EcrImage(account_id="", region="", registry_host="docker-archive",
                         repository=str(Path(ref[len(DOCKER_ARCHIVE_PREFIX):]).resolve()).lstrip("/"),
                         digest="")
        target = ScanTarget(image=image, scan_types=scan_types, auth=auth, source=ref)
    else:
        parsed = ImageReference.parse(ref)
        digest = parsed.digest
        if digest is None:  # pin the tag: the findings belong to what it points at now
            mirror = chosen.mirrors.get(parsed.host)
            pull = mirror.reference(parsed) if mirror else parsed
            client = (RegistryClient(pull.host, mirror.auth(auth), mirror.insecure) if mirror
                      else RegistryClient(parsed.host, auth))
            _, _, digest = client.get_manifest(pull.repository, pull.reference)
        image = EcrImage(account_id="", region="", registry_host=parsed.host,
                         repository=parsed.repository, digest=digest,
                         tags=(parsed.tag,) if parsed.tag else ())
        target = ScanTarget(image=image, scan_types=scan_types, auth=auth)
    if workdir is not None:
        return chosen.scan(target, workdir, timeout)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="containerscan-builtin-") as temporary:
        result = chosen.scan(target, Path(temporary), timeout)
    return dataclasses.replace(result, raw_files=())  # they went with the directory
