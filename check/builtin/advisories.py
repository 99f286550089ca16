"""Advisory data for the built-in scanner: OSV records and Alpine secdb, loaded lazily.

Sources, found by walking the vulnerability database directory (`--vuln-db DIR`,
`CONTAINERSCAN_VULN_DB`):

- OSV records (ossf.github.io/osv-schema), one per file, as JSON or YAML, anywhere in the
  tree (the PyPA advisory database's `vulns/<package>/PYSEC-*.yaml` layout included);
- the per-ecosystem archives OSV publishes (`<ecosystem>/all.zip`, one JSON per record),
  read in place from the zip;
- Alpine secdb files (`v3.11/main.yaml`: for each package, the version that fixed each
  CVE in that branch; a fix version of "0" means the branch was never affected).

Loading is cheap: the first lookup builds an index from package name to the records that
may mention it, by a regular-expression pass over the raw text (a superset: any `name`
key counts). A record is parsed fully only when a package with one of its names is
looked up, and cached afterwards.

Matching follows the OSV schema's evaluation algorithm: a withdrawn record is ignored
(`withdrawn` set: the claim was retracted); the `versions` list is matched first, as exact
strings, before anything is parsed (so `joblib 0.3.2d`, not PEP 440, still matches a list
naming it); ECOSYSTEM and SEMVER ranges are evaluated over their events (introduced, fixed,
last_affected, limit) sorted in the ecosystem's own version order (`check.builtin.versions`).
An event the ordering cannot read (`fixed: 2019-09-12` for a PyPI package, secdb's
`2.7.16-33`, which apk itself rejects) never widens a range: the record's ranges are skipped
for that package, with a debug note. GIT ranges carry commit hashes, not versions, and are
ignored.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from check.builtin.inventory import APK, DPKG, NPM, PIP, InstalledPackage, OsInfo
from check.builtin.versions import Compare, VersionError, ordering
from securityhub.errors import ConfigurationError, ContainerscanError
from securityhub.findings import Cvss, Severity
from securityhub.logs import fields, get_logger

log = get_logger("check.builtin.advisories")

VULN_DB_ENV = "CONTAINERSCAN_VULN_DB"
RECORD_SUFFIXES = (".json", ".yaml", ".yml")
INDEX_FILE = ".containerscan-index"
INDEX_FORMAT = 2
# A single OSV record is a few KiB; anything this large is not one.
MAX_RECORD_BYTES = 16 * 1024 * 1024
RANGE_TYPES = frozenset({"ECOSYSTEM", "SEMVER"})
_JSON_NAME = re.compile(rb'"name"\s*:\s*"([^"\\]{1,214})"')
_YAML_NAME = re.compile(rb'(?m)^[ \t-]*name:[ \t]*["\']?([^"\'\s#]{1,214})')
_SECDB_MARK = re.compile(rb"(?m)^\s*secfixes:")
# A top-level `withdrawn` key: at the start of a YAML line, or quoted in JSON.
_WITHDRAWN = re.compile(rb'(?m)^withdrawn:|(?<!\\)"withdrawn"\s*:\s*"')
_PEP503 = re.compile(r"[-_.]+")


class AdvisoryDatabaseError(ConfigurationError):
    """The advisory database is missing, unreadable or cannot be downloaded."""

    default_remediation = (
        "run `containerscan db update` on a machine with network access, or point "
        f"--vuln-db / {VULN_DB_ENV} at a directory of OSV records and Alpine secdb files"
    )


class AdvisoryDownloadError(ContainerscanError):
    """`db update` could not fetch an advisory archive (network, HTTP, not a zip)."""

    default_remediation = "check the network access and the --base-url"


# ------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Range:
    type: str  # ECOSYSTEM or SEMVER
    events: tuple[tuple[str, str], ...]  # (introduced|fixed|last_affected|limit, version)


@dataclass(frozen=True)
class Affected:
    ecosystem: str  # "PyPI", "Debian:12", "Alpine:v3.11"
    name: str
    ranges: tuple[Range, ...] = ()
    versions: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Advisory:
    id: str
    aliases: tuple[str, ...] = ()
    summary: str = ""
    details: str = ""
    severity: Severity | None = None
    cvss: tuple[Cvss, ...] = ()
    references: tuple[str, ...] = ()
    affected: tuple[Affected, ...] = ()
    published: str | None = None
    source: str = "osv"
    withdrawn: str | None = None  # when the record was retracted; such a record never matches

    @property
    def cves(self) -> tuple[str, ...]:
        ids = (self.id, *self.aliases)
        return tuple(dict.fromkeys(i for i in ids if i.startswith("CVE-")))


@dataclass(frozen=True)
class Match:
    advisory: Advisory
    package: InstalledPackage
    fixed_version: str | None


def normalize_name(ecosystem: str, name: str) -> str:
    """The index key of a package name: PEP 503 for PyPI, lowercase elsewhere."""
    if ecosystem.split(":", 1)[0] == "PyPI":
        return _PEP503.sub("-", name).lower()
    return name.lower()


def _index_key(name: str) -> str:
    # One key for every ecosystem, so the index needs no parsing: the loosest normalization.
    return _PEP503.sub("-", name).lower()


# ------------------------------------------------------------------------------- CVSS v3

_CVSS3_WEIGHTS: dict[str, dict[str, float]] = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "UI": {"N": 0.85, "R": 0.62},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
    "I": {"H": 0.56, "L": 0.22, "N": 0.0},
    "A": {"H": 0.56, "L": 0.22, "N": 0.0},
}
_CVSS3_PR = {"U": {"N": 0.85, "L": 0.62, "H": 0.27}, "C": {"N": 0.85, "L": 0.68, "H": 0.5}}


def _roundup(value: float) -> float:
    # CVSS v3.1 specification, appendix A: round up to one decimal, float-safe.
    integer = round(value * 100000)
    if integer % 10000 == 0:
        return integer / 100000.0
    return (math.floor(integer / 10000) + 1) / 10.0


def cvss3_base_score(vector: str) -> float:
    """The base score of a CVSS v3.0/v3.1 vector (FIRST's specification, section 7.1)."""
    parts = dict(p.split(":", 1) for p in vector.split("/")[1:] if ":" in p)
    try:
        scope = parts["S"]
        iss = 1 - ((1 - _CVSS3_WEIGHTS["C"][parts["C"]]) * (1 - _CVSS3_WEIGHTS["I"][parts["I"]])
                   * (1 - _CVSS3_WEIGHTS["A"][parts["A"]]))
        if scope == "U":
            impact = 6.42 * iss
        else:
            impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15
        exploitability = (8.22 * _CVSS3_WEIGHTS["AV"][parts["AV"]]
                          * _CVSS3_WEIGHTS["AC"][parts["AC"]] * _CVSS3_PR[scope][parts["PR"]]
                          * _CVSS3_WEIGHTS["UI"][parts["UI"]])
    except KeyError:
        raise ValueError(f"not a CVSS v3 vector: {vector!r}") from None
    if impact <= 0:
        return 0.0
    if scope == "U":
        return _roundup(min(impact + exploitability, 10))
    return _roundup(min(1.08 * (impact + exploitability), 10))


def severity_from_score(score: float) -> Severity:
    """CVSS v3 qualitative ratings (specification, section 5)."""
    if score >= 9.0:
        return Severity.CRITICAL
    if score >= 7.0:
        return Severity.HIGH
    if score >= 4.0:
        return Severity.MEDIUM
    if score > 0:
        return Severity.LOW
    return Severity.INFORMATIONAL


_LABELS = {"MODERATE": "MEDIUM", "IMPORTANT": "HIGH", "NOT YET ASSIGNED": "UNKNOWN",
           "UNIMPORTANT": "LOW", "END-OF-LIFE": "UNKNOWN"}


def _label(value: Any) -> Severity | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().upper()
    try:
        return Severity.parse(_LABELS.get(text, text))
    except ValueError:
        return None


# ------------------------------------------------------------------------------- parsing


def parse_osv(doc: dict[str, Any], where: str) -> Advisory:
    """An OSV record as an Advisory; raises AdvisoryDatabaseError naming `where`."""
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        raise AdvisoryDatabaseError(f"{where} is not an OSV record (no id)")
    cvss = []
    severity = None
    for entry in doc.get("severity") or []:
        if not isinstance(entry, dict):
            continue
        kind, score = entry.get("type"), entry.get("score")
        if kind == "CVSS_V3" and isinstance(score, str):
            try:
                base = cvss3_base_score(score)
            except ValueError:
                log.debug("unreadable CVSS vector", extra=fields(record=where))
                continue
            version = "3.1" if score.startswith("CVSS:3.1") else "3.0"
            cvss.append(Cvss(version=version, base_score=base, vector=score, source="OSV"))
            severity = max(severity or Severity.INFORMATIONAL, severity_from_score(base))
        elif kind == "Ubuntu" and severity is None:  # Ubuntu's priority label: "medium"
            severity = _label(score)
    if severity is None:
        severity = _label((doc.get("database_specific") or {}).get("severity"))
    affected = []
    for entry in doc.get("affected") or []:
        package = entry.get("package") if isinstance(entry, dict) else None
        if not isinstance(package, dict) or not package.get("name"):
            continue
        ranges = []
        for rng in entry.get("ranges") or []:
            if not isinstance(rng, dict) or rng.get("type") not in RANGE_TYPES:
                continue  # GIT ranges are commit hashes
            events = tuple(
                (kind, str(value))
                for event in rng.get("events") or [] if isinstance(event, dict)
                for kind, value in event.items()
                if kind in ("introduced", "fixed", "last_affected", "limit")
            )
            ranges.append(Range(type=str(rng["type"]), events=events))
        if severity is None:
            severity = _label((entry.get("ecosystem_specific") or {}).get("severity"))
        affected.append(Affected(
            ecosystem=str(package.get("ecosystem", "")), name=str(package["name"]),
            ranges=tuple(ranges),
            versions=frozenset(str(v) for v in entry.get("versions") or []),
        ))
    return Advisory(
        id=doc["id"],
        aliases=tuple(str(a) for a in doc.get("aliases") or []),
        summary=str(doc.get("summary") or ""),
        details=str(doc.get("details") or ""),
        severity=severity,
        cvss=tuple(cvss),
        references=tuple(str(r["url"]) for r in doc.get("references") or []
                         if isinstance(r, dict) and r.get("url")),
        affected=tuple(affected),
        published=str(doc["published"]) if doc.get("published") else None,
        withdrawn=str(doc["withdrawn"]) if doc.get("withdrawn") else None,
    )


def parse_secdb(doc: dict[str, Any], where: str) -> dict[str, list[Advisory]]:
    """Alpine secdb: package name -> one Advisory per CVE fixed in this branch."""
    if not isinstance(doc, dict) or not isinstance(doc.get("packages"), list):
        raise AdvisoryDatabaseError(f"{where} is not an Alpine secdb file (no packages)")
    branch = str(doc.get("distroversion", ""))
    ecosystem = f"Alpine:{branch}" if branch else "Alpine"
    out: dict[str, list[Advisory]] = {}
    for entry in doc["packages"]:
        pkg = entry.get("pkg") if isinstance(entry, dict) else None
        if not isinstance(pkg, dict) or not pkg.get("name"):
            continue
        name = str(pkg["name"])
        for fixed, ids in (pkg.get("secfixes") or {}).items():
            fixed_text = str(fixed).strip()
            if fixed_text == "0":
                continue  # "0": the branch was never affected (secdb convention)
            for raw_id in ids or []:
                cve = str(raw_id).split()[0]
                affected = Affected(
                    ecosystem=ecosystem, name=name,
                    ranges=(Range("ECOSYSTEM", (("introduced", "0"), ("fixed", fixed_text))),),
                )
                out.setdefault(_index_key(name), []).append(Advisory(
                    id=cve, summary=f"{cve} in {name}, fixed in {fixed_text} ({branch})",
                    references=(f"https://security.alpinelinux.org/vuln/{cve}",),
                    affected=(affected,), source="alpine-secdb",
                ))
    return out


# ------------------------------------------------------------------------------ matching


def _sorted_events(events: tuple[tuple[str, str], ...], compare: Compare
                   ) -> list[tuple[str, str]]:
    key = functools.cmp_to_key(compare)
    readable = []
    for kind, version in events:
        if not ((kind == "introduced" and version == "0") or (kind == "limit" and version == "*")):
            compare(version, version)  # VersionError: never guess where the range ends
        readable.append((kind, version))

    def order(event: tuple[str, str]) -> Any:
        if event[1] == "0" and event[0] == "introduced":
            return (0, key("0"))
        return (2, key("0")) if event[1] == "*" else (1, key(event[1]))

    return sorted(readable, key=order)


def evaluate_range(version: str, rng: Range, compare: Compare) -> tuple[bool, str | None]:
    """(affected, fixed version) of `version` under one OSV range.

    Raises VersionError when an event's version is not readable in `compare`'s ordering.
    """
    affected = False
    fixed_version = None
    limits = []
    for kind, event_version in _sorted_events(rng.events, compare):
        if kind == "limit":
            limits.append(event_version)
        elif kind == "introduced":
            if event_version == "0" or compare(version, event_version) >= 0:
                affected = True
                fixed_version = None
        elif kind == "fixed":
            if compare(version, event_version) >= 0:
                affected = False
            elif affected and fixed_version is None:
                fixed_version = event_version
        elif kind == "last_affected" and compare(version, event_version) > 0:
            affected = False
    if affected and limits and not any(
        limit == "*" or compare(version, limit) < 0 for limit in limits
    ):
        affected = False
    return affected, fixed_version if affected else None


def affects(affected: Affected, version: str, compare: Compare) -> tuple[bool, str | None]:
    """Whether `version` is affected, and the first fixed version after it when known.

    The OSV algorithm: the `versions` list by exact string first, then the ranges. A range
    with an event the ordering cannot read makes the entry's ranges unusable for this
    package (they are skipped, never read as "every version").
    """
    hit, fixed = version in affected.versions, None
    try:
        compare(version, version)
    except VersionError:
        return hit, None  # an unreadable installed version: only the exact list can say
    outcomes = []
    for rng in affected.ranges:
        try:
            outcomes.append(evaluate_range(
                version, rng, ordering("SEMVER") if rng.type == "SEMVER" else compare))
        except VersionError as exc:
            log.debug("advisory range skipped: an event is unreadable",
                      extra=fields(package=affected.name, ecosystem=affected.ecosystem,
                                   version=version, error=str(exc)))
            return hit, None
    for in_range, range_fix in outcomes:
        if in_range:
            hit = True
            fixed = fixed or range_fix
    return hit, fixed


def ecosystem_of(package: InstalledPackage, os_info: OsInfo | None) -> str | None:
    """The OSV ecosystem (without release) whose advisories apply to `package`."""
    if package.package_manager == PIP:
        return "PyPI"
    if package.package_manager == NPM:
        return "npm"
    if package.package_manager == APK:
        return "Alpine"
    if package.package_manager == DPKG:
        if os_info and os_info.id == "ubuntu":
            return "Ubuntu"
        return "Debian"
    return None


def release_matches(ecosystem: str, os_info: OsInfo | None) -> bool:
    """Whether an ecosystem's release suffix (`Debian:12`, `Alpine:v3.11`) fits the OS."""
    base, _, release = ecosystem.partition(":")
    if not release or os_info is None or not os_info.version_id:
        return True
    if base == "Alpine":
        return release.lstrip("v") == alpine_branch(os_info.version_id)
    if base == "Debian":
        return release.split(".")[0] == os_info.version_id.split(".")[0]
    if base == "Ubuntu":
        return release.split(":")[0] == os_info.version_id
    return True


def alpine_branch(version_id: str) -> str:
    """`3.11.6` -> `3.11` (secdb and OSV name Alpine releases by branch)."""
    return ".".join(re.split(r"[._]", version_id)[:2])


# ------------------------------------------------------------------------------ database


@dataclass(frozen=True)
class _SourceRef:
    path: Path
    member: str | None = None  # a zip member
    secdb: bool = False


class AdvisoryDatabase:
    """The advisories under one directory; indexed on first use, parsed on demand."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._index: dict[str, list[_SourceRef]] | None = None
        self._parsed: dict[_SourceRef, dict[str, list[Advisory]]] = {}
        self._zips: dict[Path, zipfile.ZipFile] = {}
        self._lock = threading.Lock()
        self._zip_lock = threading.Lock()
        self._fingerprint: str | None = None
        self.records_indexed = 0
        self.records_withdrawn = 0  # counted by the index pass; never matched

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None,
                    environ: dict[str, str] | None = None) -> AdvisoryDatabase:
        """`path`, else $CONTAINERSCAN_VULN_DB, else the user cache directory."""
        env = os.environ if environ is None else environ
        chosen = path or env.get(VULN_DB_ENV) or default_location(env)
        root = Path(chosen).expanduser()
        if not root.is_dir():
            raise AdvisoryDatabaseError(f"the advisory database {root} does not exist")
        return cls(root)

    # ------------------------------------------------------------------------- index

    def _files(self) -> Iterator[Path]:
        for directory, subdirs, names in os.walk(self.root):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for name in sorted(names):
                if name.endswith((*RECORD_SUFFIXES, ".zip")):
                    yield Path(directory) / name

    def _add(self, index: dict[str, list[_SourceRef]], data: bytes, ref: _SourceRef) -> None:
        pattern = _JSON_NAME if (ref.member or ref.path.name).endswith(".json") else _YAML_NAME
        names = {_index_key(m.decode("utf-8", "replace")) for m in pattern.findall(data)}
        for name in names:
            index.setdefault(name, []).append(ref)
        self.records_indexed += 1
        if not ref.secdb and _WITHDRAWN.search(data):
            self.records_withdrawn += 1

    def index(self) -> dict[str, list[_SourceRef]]:
        with self._lock:
            if self._index is not None:
                return self._index
            saved = self._load_saved_index()
            if saved is not None:
                self._index = saved
                return saved
            self._index = self._build_index()
            return self._index

    def _build_index(self) -> dict[str, list[_SourceRef]]:
        index: dict[str, list[_SourceRef]] = {}
        for path in self._files():
            try:
                if path.suffix == ".zip":
                    archive = self._zip(path)
                    for info in archive.infolist():
                        if info.filename.endswith(RECORD_SUFFIXES) and \
                                info.file_size <= MAX_RECORD_BYTES:
                            self._add(index, archive.read(info),
                                      _SourceRef(path, info.filename))
                    continue
                if path.stat().st_size > MAX_RECORD_BYTES:
                    log.warning("advisory file too large; skipped",
                                extra=fields(path=str(path)))
                    continue
                data = path.read_bytes()
            except (OSError, zipfile.BadZipFile) as exc:
                raise AdvisoryDatabaseError(f"cannot read advisory file {path}: {exc}") \
                    from None
            is_secdb = path.suffix != ".json" and bool(_SECDB_MARK.search(data))
            self._add(index, data, _SourceRef(path, None, is_secdb))
        log.info("advisory index built", extra=fields(root=str(self.root),
                                                      records=self.records_indexed,
                                                      names=len(index)))
        return index

    # A saved index spares the scan of every record at start-up (seconds for OSV's full
    # archives). It is valid only for the exact files it was built from: the fingerprint
    # (paths, sizes, mtimes) is stored with it. Its name has no record suffix, so it is
    # never read as a record nor part of the fingerprint.
    def save_index(self) -> Path:
        """Write the index beside the data (`db update` does, after downloading)."""
        index = self.index()
        refs: dict[_SourceRef, int] = {}
        for entries in index.values():
            for ref in entries:
                refs.setdefault(ref, len(refs))
        doc = {
            "version": INDEX_FORMAT,
            "fingerprint": self.fingerprint(),
            "records": self.records_indexed,
            "withdrawn": self.records_withdrawn,
            "sources": [[str(r.path.relative_to(self.root)), r.member, r.secdb] for r in refs],
            "names": {name: [refs[r] for r in entries] for name, entries in index.items()},
        }
        target = self.root / INDEX_FILE
        temporary = target.with_name(target.name + ".part")
        temporary.write_text(json.dumps(doc, separators=(",", ":")))
        os.replace(temporary, target)
        return target

    def _load_saved_index(self) -> dict[str, list[_SourceRef]] | None:
        path = self.root / INDEX_FILE
        if not path.is_file():
            return None
        try:
            doc = json.loads(path.read_bytes())
            if doc.get("version") != INDEX_FORMAT or doc.get("fingerprint") != self.fingerprint():
                log.info("saved advisory index is stale; rebuilding",
                         extra=fields(path=str(path)))
                return None
            sources = [_SourceRef(self.root / rel, member, bool(secdb))
                       for rel, member, secdb in doc["sources"]]
            index = {name: [sources[i] for i in ids] for name, ids in doc["names"].items()}
            self.records_indexed = int(doc["records"])
            self.records_withdrawn = int(doc["withdrawn"])
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("saved advisory index is unreadable; rebuilding",
                        extra=fields(path=str(path), error=str(exc)))
            return None
        return index

    def _zip(self, path: Path) -> zipfile.ZipFile:
        # Reading members of one ZipFile from several threads is safe (it locks its file).
        with self._zip_lock:
            if path not in self._zips:
                self._zips[path] = zipfile.ZipFile(path)
            return self._zips[path]

    def close(self) -> None:
        for archive in self._zips.values():
            archive.close()
        self._zips.clear()

    def fingerprint(self) -> str:
        """Changes whenever a file of the database changes (part of the scanner version).

        Computed once per instance: a run sees one state of the database.
        """
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        import hashlib

        digest = hashlib.sha256()
        for path in self._files():
            stat = path.stat()
            digest.update(f"{path.relative_to(self.root)}:{stat.st_size}:{stat.st_mtime_ns}\n"
                          .encode())
        return digest.hexdigest()[:12]

    # ------------------------------------------------------------------------ lookup

    def _load(self, ref: _SourceRef) -> dict[str, list[Advisory]]:
        cached = self._parsed.get(ref)
        if cached is not None:
            return cached
        where = f"{ref.path}:{ref.member}" if ref.member else str(ref.path)
        try:
            data = self._zip(ref.path).read(ref.member) if ref.member else ref.path.read_bytes()
        except (OSError, KeyError, zipfile.BadZipFile) as exc:
            raise AdvisoryDatabaseError(f"cannot read advisory {where}: {exc}") from None
        doc = _decode(data, where)
        parsed: dict[str, list[Advisory]]
        if not ref.secdb and not (isinstance(doc, dict) and isinstance(doc.get("id"), str)):
            # Another YAML/JSON file that happens to have a `name` key (a README's front
            # matter, a CI file): not an advisory, and not a reason to fail every scan.
            log.warning("not an OSV record; skipped", extra=fields(path=where))
            parsed = {}
        elif ref.secdb:
            parsed = parse_secdb(doc, where)
        else:
            advisory = parse_osv(doc, where)
            parsed = {}
            for affected in advisory.affected:
                parsed.setdefault(_index_key(affected.name), []).append(advisory)
        with self._lock:
            self._parsed[ref] = parsed
        return parsed

    def advisories(self, ecosystem: str, name: str) -> list[Advisory]:
        """Advisories naming this package in this ecosystem (any release of it)."""
        key = _index_key(name)
        wanted = normalize_name(ecosystem, name)
        found: dict[str, Advisory] = {}
        for ref in self.index().get(key, ()):
            for advisory in self._load(ref).get(key, ()):
                if any(a.ecosystem.split(":", 1)[0] == ecosystem
                       and normalize_name(a.ecosystem, a.name) == wanted
                       for a in advisory.affected):
                    found.setdefault(f"{advisory.id}|{id(advisory)}", advisory)
        return list(found.values())

    def match(self, package: InstalledPackage, os_info: OsInfo | None) -> list[Match]:
        """Every advisory that affects the installed package."""
        ecosystem = ecosystem_of(package, os_info)
        if ecosystem is None or package.os_package:
            return []  # an OS package installed it: the OS advisories judge that package
        compare = ordering(ecosystem)
        # OS advisories are keyed by source package (Debian source, Alpine origin).
        lookups = [(package.name, package.version)]
        if package.source_name and package.source_name != package.name:
            lookups.append((package.source_name, package.source_version or package.version))
        matches: dict[str, Match] = {}
        for name, version in lookups:
            wanted = normalize_name(ecosystem, name)
            for advisory in self.advisories(ecosystem, name):
                if advisory.withdrawn:
                    continue  # retracted: the claim no longer stands
                for affected in advisory.affected:
                    if (affected.ecosystem.split(":", 1)[0] != ecosystem
                            or normalize_name(affected.ecosystem, affected.name) != wanted
                            or not release_matches(affected.ecosystem, os_info)):
                        continue
                    hit, fixed = affects(affected, version, compare)
                    if hit and advisory.id not in matches:
                        matches[advisory.id] = Match(advisory, package, fixed)
        return list(matches.values())


def _decode(data: bytes, where: str) -> Any:
    if where.endswith(".json"):
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise AdvisoryDatabaseError(f"advisory {where} is not valid JSON: {exc}") from None
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        # An alias (*name) needs an anchor (&name): a file without "&" cannot hold one, and
        # the event scan (cheap, the C parser) only runs for the few files that might.
        if b"&" in data:
            _refuse_aliases(yaml.parse(data, Loader=loader), where)
        return yaml.load(data, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise AdvisoryDatabaseError(f"advisory {where} is not valid YAML: {exc}") from None


def _refuse_aliases(events: Iterator[Any], where: str) -> None:
    """Refuse YAML aliases before anything is constructed.

    Secdb and OSV files never use them; an alias repeats an anchored node, and nested
    repeats grow exponentially (a "billion laughs" file of a few hundred bytes expands to
    gigabytes when walked), the same guard the TracingPolicy loader has.
    """
    import yaml

    for event in events:
        if isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1 if event.start_mark is not None else "?"
            raise AdvisoryDatabaseError(
                f"advisory {where}: YAML aliases are not supported (an alias *{event.anchor}"
                f" at line {line})",
                "advisory files never use anchors (&name) or aliases (*name): the file is "
                "corrupt or hostile; delete it and run `containerscan db update`",
            )


def default_location(environ: dict[str, str] | os._Environ[str] | None = None) -> str:
    env = os.environ if environ is None else environ
    cache = env.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return str(Path(cache) / "containerscan" / "vulndb")

