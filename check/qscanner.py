"""The Qualys QScanner runner: one image per subprocess, reports parsed into findings.

Contract (shared/reference/qscanner.md; its section 8, from Qualys's own QScanner 4.8.0
README, overrides the wrappers):

    qscanner --mode get-report (--pod <POD> | --gateway-url <URL>) --scan-types pkg,secret
             --output-dir <workdir>/output --cache-dir <workdir>/cache
             --format json --report-format sarif,json --scan-timeout <N>s
             --max-network-retries <R> --network-retry-wait-min 5s
             --network-retry-wait-max 120s
             image <registry>/<repository>@sha256:<digest>

- Credentials travel in the child's environment only, never in argv nor in logs: the
  documented, preferred `QUALYS_CLIENT_ID` + `QUALYS_CLIENT_SECRET` (QScanner turns them
  into a 4-hour JWT), or the token kept "for backwards compatibility",
  `QUALYS_ACCESS_TOKEN` (also read from `QUALYS_TOKEN`). A run with neither fails before
  any scan. Registry credentials likewise (`QSCANNER_REGISTRY_USERNAME`/`_PASSWORD`).
- `QUALYS_GATEWAY_URL` replaces `--pod` for platforms outside the POD list.
- The environment is minimal: PATH, HOME, TMPDIR, locale, CA files, proxies, the scanner's
  own `QSCANNER_*` settings, the Qualys credentials and the registry credentials.
- `qscanner --version` names the version (part of cache keys). When it fails, the version
  becomes `unknown-sha256:<the binary's sha256>`: the cache keeps working for that binary,
  and every image's notes and the run's scanner version say so.
- Each scan has its own output directory. QScanner's cache (vulnerability DBs, secret
  rules) is not safe to share between concurrent processes, but downloading it again for
  every image is slow: with `CONTAINERSCAN_QSCANNER_CACHE=DIR` each concurrent scan borrows
  one of the slot directories `DIR/slot-<n>` (never two scans at once) and leaves it for the
  next scan; without it each scan gets a fresh cache under its workdir, removed afterwards.
- Deadlines (`deadlines()`): after uploading, QScanner waits 15 s for its report, then
  retries with back-off (5, 10, 20 ... 120 s, 10 times: ~13 minutes by default). The retry
  flags and `--scan-timeout` are sized so that scanning plus polling ends before our own
  kill, whether or not `--scan-timeout` covers the polling (the README does not say). At the
  deadline we kill its process group anyway, and the error says whether QScanner was still
  scanning or waiting for the report (its ScanResult.json is written before the upload).
- Report files are found whatever their prefix: `<64-hex image id>-Report.sarif.json` per
  the README, `<name>_ScanResult.json` per its FAQ.
- Exit codes are interpreted by name: 0 success, 42/43 policy DENY/AUDIT (recorded, the
  report is still parsed), 40 FAILED_TO_GET_VULN_REPORT (an error: without a report nothing
  can be proven fixed), anything else an error naming the code.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

from check.process import (
    DEFAULT_KILL_GRACE,
    DEFAULT_KILL_MARGIN,
    DEFAULT_OUTPUT_CAP,
    ProcessOutcome,
    ScannerFailedError,
    ScannerTimeoutError,
    check_finished,
    failure_detail,
    passthrough_environment,
    sanitize_raw_file,
    scan_timeout_for,
    start_scanner,
)
from check.reports.sarif import parse_sarif
from check.reports.scanresult import QScannerScanResult, parse_scan_result
from check.scanner import SCAN_TYPES, ScanResult, ScanTarget
from securityhub.errors import ConfigurationError, ScanError
from securityhub.findings import QUALYS_SEVERITY, Finding, ScannerInfo, Severity
from securityhub.logs import fields, get_logger, redact, register_secret

log = get_logger("check.qscanner")

NAME = "qscanner"
BINARY_ENV = "QSCANNER_PATH"
TOKEN_ENVS = ("QUALYS_ACCESS_TOKEN", "QUALYS_TOKEN")
TOKEN_ENV = "QUALYS_ACCESS_TOKEN"  # noqa: S105 - what the child gets (README pages 17, 43, 54)
CLIENT_ID_ENV = "QUALYS_CLIENT_ID"
CLIENT_SECRET_ENV = "QUALYS_CLIENT_SECRET"  # noqa: S105 - a variable name
GATEWAY_ENV = "QUALYS_GATEWAY_URL"
POD_ENV = "QUALYS_POD"
MODE_ENV = "CONTAINERSCAN_QSCANNER_MODE"
SEVERITY_MAP_ENV = "CONTAINERSCAN_QUALYS_SEVERITY_MAP"
CACHE_ENV = "CONTAINERSCAN_QSCANNER_CACHE"
MODES = ("get-report", "evaluate-policy", "scan-only", "inventory-only")
DEFAULT_MODE = "get-report"
# Modes that download a vulnerability report (the others only collect or upload inventory).
REPORT_MODES = frozenset({"get-report", "evaluate-policy"})
# Documented PODs (docs.qualys.com qscanner_modes.htm). Others pass a gateway URL.
PODS = frozenset(
    {"US1", "US2", "US3", "US4", "EU1", "EU2", "EU3", "IN1", "CA1", "AE1", "UK1", "AU1", "KSA1"}
)
# Exit codes (reference 2.1; the same enum in three independent wrappers).
EXIT_CODES = MappingProxyType(
    {
        0: "SUCCESS",
        1: "GENERIC_ERROR",
        2: "INVALID_PARAMETER",
        3: "LOGGER_INIT_FAILED",
        5: "FILESYSTEM_ARTIFACT_FAILED",
        6: "IMAGE_ARTIFACT_FAILED",
        7: "IMAGE_ARCHIVE_ARTIFACT_FAILED",
        8: "IMAGE_STORAGE_DRIVER_ARTIFACT_FAILED",
        9: "CONTAINER_ARTIFACT_FAILED",
        10: "OTHER_ARTIFACT_FAILED",
        11: "METADATA_SCAN_FAILED",
        12: "OS_SCAN_FAILED",
        13: "SCA_SCAN_FAILED",
        14: "SECRET_SCAN_FAILED",
        15: "OS_NOT_FOUND",
        16: "MALWARE_SCAN_FAILED",
        17: "OS_NOT_SUPPORTED",
        18: "FILE_INSIGHT_SCAN_FAILED",
        19: "COMPLIANCE_SCAN_FAILED",
        20: "MANIFEST_SCAN_FAILED",
        21: "WINREGISTRY_SCAN_FAILED",
        30: "JSON_RESULT_HANDLER_FAILED",
        31: "CHANGELIST_CREATION_FAILED",
        32: "CHANGELIST_COMPRESSION_FAILED",
        33: "CHANGELIST_UPLOAD_FAILED",
        34: "SPDX_HANDLER_FAILED",
        35: "CDX_HANDLER_FAILED",
        36: "SBOM_COMPRESSION_FAILED",
        37: "SBOM_UPLOAD_FAILED",
        38: "SECRET_RESULT_CREATION_FAILED",
        39: "SECRET_RESULT_UPLOAD_FAILED",
        40: "FAILED_TO_GET_VULN_REPORT",
        41: "FAILED_TO_GET_POLICY_EVALUATION_RESULT",
        42: "POLICY_EVALUATION_DENY",
        43: "POLICY_EVALUATION_AUDIT",
    }
)
EXIT_REPORT_UNAVAILABLE = 40
# Exit codes after which the reports are complete and parsed: code -> policy result.
POLICY_RESULTS = MappingProxyType({0: "ALLOW", 42: "DENY", 43: "AUDIT"})
VERSION_TIMEOUT = 30.0
_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?(?:-\d+)?")
UNKNOWN_VERSION_PREFIX = "unknown-sha256:"
# Report files: `<image id>-Report.sarif.json` (README pages 7-8, 43), `_` in its FAQ (57).
SARIF_SUFFIX = "Report.sarif.json"
SCAN_RESULT_SUFFIX = "ScanResult.json"
_SEPARATORS = ("-", "_")
# QScanner's report polling (README pages 43-44): 15 s first, then back-off from
# --network-retry-wait-min doubling up to --network-retry-wait-max, --max-network-retries
# times (defaults 5 s, 120 s, 10: about 13 minutes).
REPORT_FIRST_WAIT = 15
RETRY_WAIT_MIN = 5
RETRY_WAIT_MAX = 120
MAX_NETWORK_RETRIES = 10
# At most this share of an image's time budget goes to waiting for the report.
POLL_SHARE = 0.5


def exit_code_name(code: int) -> str:
    return EXIT_CODES.get(code, f"UNKNOWN_EXIT_CODE_{code}")


def polling_seconds(
    retries: int, wait_min: int = RETRY_WAIT_MIN, wait_max: int = RETRY_WAIT_MAX
) -> int:
    """QScanner's longest wait for a report with `retries` retries (README pages 43-44)."""
    waits = (min(wait_min * 2**attempt, wait_max) for attempt in range(retries))
    return REPORT_FIRST_WAIT + sum(waits)


@dataclass(frozen=True)
class Deadlines:
    """QScanner's own limits for one image, all inside our deadline minus the kill margin."""

    scan_timeout: int  # --scan-timeout, seconds
    network_retries: int  # --max-network-retries
    polling: int  # the longest report polling those retries allow, seconds


def deadlines(timeout: float, kill_margin: float, report: bool) -> Deadlines:
    """Split the image's budget: up to POLL_SHARE for report polling (as many retries as
    fit, at most QScanner's default 10), the rest for scanning (`--scan-timeout`).

    Either way `--scan-timeout` is read (covering the polling or not), QScanner gives up
    before `timeout - kill_margin`, so its own error, not our kill, says what happened.
    """
    budget = scan_timeout_for(timeout, kill_margin)
    if not report:
        return Deadlines(budget, 0, 0)
    retries = 0
    while retries < MAX_NETWORK_RETRIES and polling_seconds(retries + 1) <= budget * POLL_SHARE:
        retries += 1
    polling = polling_seconds(retries)
    return Deadlines(max(1, budget - polling), retries, polling)


class ReportUnavailableError(ScanError):
    """QScanner scanned the image but could not fetch its vulnerability report (exit 40)."""

    default_remediation = (
        "the Qualys platform had not produced the report in time; the image's findings are "
        "left untouched and the next run retries"
    )


@dataclass(frozen=True)
class QScannerConfig:
    """Validated QScanner settings (`from_environment` builds one)."""

    binary: Path
    pod: str | None
    token: str | None = field(repr=False)
    mode: str = DEFAULT_MODE
    report_formats: tuple[str, ...] = ("sarif", "json")
    kill_margin: float = DEFAULT_KILL_MARGIN
    kill_grace: float = DEFAULT_KILL_GRACE
    output_cap: int = DEFAULT_OUTPUT_CAP
    severity_map: Mapping[int, Severity] = field(default_factory=lambda: dict(QUALYS_SEVERITY))
    # The parent's variables the scanner may need (see check.process.PASSTHROUGH_ENV) and
    # its own QSCANNER_* settings; captured when the configuration is built.
    base_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Reused QScanner caches, one slot per concurrent scan; None: a fresh cache per scan.
    cache_root: Path | None = None
    # Client id and secret: the documented, preferred credentials (used over a token).
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    # For platforms outside the POD list: passed as --gateway-url instead of --pod.
    gateway_url: str | None = None

    @property
    def credentials(self) -> str | None:
        """Which credentials the child gets: "client" (id + secret), "token", or None."""
        if self.client_id and self.client_secret:
            return "client"
        return "token" if self.token else None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigurationError(
                f"unknown QScanner mode {self.mode!r}", f"use one of {', '.join(MODES)}"
            )
        if bool(self.client_id) != bool(self.client_secret):
            missing = CLIENT_SECRET_ENV if self.client_id else CLIENT_ID_ENV
            raise ConfigurationError(
                f"Qualys client credentials are incomplete: {missing} is not set",
                f"set both {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV} (e.g. from Secrets Manager)",
            )
        if self.gateway_url is not None and not re.fullmatch(
            r"https://[^\s/]+(/\S*)?", self.gateway_url
        ):
            raise ConfigurationError(
                f"{GATEWAY_ENV}={self.gateway_url!r} is not an https URL",
                "use the platform's gateway, e.g. https://gateway.qg1.apps.qualys.com",
            )
        if self.mode != "inventory-only":
            if self.credentials is None:
                raise ConfigurationError(
                    f"QScanner mode {self.mode} needs Qualys credentials and none are set",
                    f"set {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV} (preferred) or "
                    f"{TOKEN_ENV} (or QUALYS_TOKEN), e.g. from Secrets Manager",
                )
            if not self.pod and not self.gateway_url:
                raise ConfigurationError(
                    f"QScanner mode {self.mode} needs the Qualys platform",
                    f"set {POD_ENV} to one of {', '.join(sorted(PODS))}, or {GATEWAY_ENV} "
                    "for a platform not in that list",
                )
        if "sarif" not in self.report_formats and self.mode in REPORT_MODES:
            raise ConfigurationError(
                "QScanner report formats must include sarif", "the findings come from SARIF"
            )
        if sorted(self.severity_map) != [1, 2, 3, 4, 5] or not all(
            isinstance(label, Severity) for label in self.severity_map.values()
        ):
            raise ConfigurationError(
                "the Qualys severity mapping must map each of 1-5 to a severity label",
                f"e.g. {SEVERITY_MAP_ENV}=5=CRITICAL,4=HIGH,3=MEDIUM,2=LOW,1=INFORMATIONAL",
            )
        if self.kill_margin < 0 or self.kill_grace < 0 or self.output_cap <= 0:
            raise ConfigurationError(
                "kill margin and grace must be >= 0 seconds and the output cap > 0 bytes"
            )
        register_secret(self.token)
        register_secret(self.client_secret)

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> QScannerConfig:
        """Read QSCANNER_PATH (or `qscanner` on PATH), QUALYS_POD, QUALYS_GATEWAY_URL,
        QUALYS_CLIENT_ID + QUALYS_CLIENT_SECRET, QUALYS_ACCESS_TOKEN / QUALYS_TOKEN,
        CONTAINERSCAN_QSCANNER_MODE, CONTAINERSCAN_QUALYS_SEVERITY_MAP and
        CONTAINERSCAN_QSCANNER_CACHE; `overrides` win."""
        env = os.environ if environ is None else environ
        token = next((env[name] for name in TOKEN_ENVS if env.get(name)), None)
        values: dict[str, object] = {
            "pod": env.get(POD_ENV) or None,
            "token": token,
            "client_id": env.get(CLIENT_ID_ENV) or None,
            "client_secret": env.get(CLIENT_SECRET_ENV) or None,
            "gateway_url": env.get(GATEWAY_ENV) or None,
            "mode": env.get(MODE_ENV) or DEFAULT_MODE,
            "base_env": scanner_base_env(env),
            "cache_root": Path(env[CACHE_ENV]) if env.get(CACHE_ENV) else None,
        }
        if env.get(SEVERITY_MAP_ENV):
            values["severity_map"] = parse_severity_map(env[SEVERITY_MAP_ENV])
        values.update(overrides)
        if "binary" not in values:
            values["binary"] = find_binary(env)
        return cls(**values)  # type: ignore[arg-type]


def parse_severity_map(text: str) -> dict[int, Severity]:
    """`5=CRITICAL,4=HIGH,3=MEDIUM,2=LOW,1=INFORMATIONAL` -> {5: Severity.CRITICAL, ...}."""
    mapping: dict[int, Severity] = {}
    for item in text.split(","):
        number, sep, label = item.partition("=")
        try:
            if not sep:
                raise ValueError(f"expected <1-5>=<label>, got {item.strip()!r}")
            mapping[int(number)] = Severity.parse(label)
        except ValueError as exc:
            raise ConfigurationError(
                f"{SEVERITY_MAP_ENV}: {exc}",
                "use e.g. 5=CRITICAL,4=HIGH,3=MEDIUM,2=LOW,1=INFORMATIONAL",
            ) from None
    return mapping


def find_binary(environ: Mapping[str, str]) -> Path:
    """QSCANNER_PATH, or `qscanner` on PATH; ConfigurationError with a hint otherwise."""
    configured = environ.get(BINARY_ENV)
    if configured:
        path = Path(configured)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ConfigurationError(
                f"{BINARY_ENV}={configured} is not an executable file",
                "point QSCANNER_PATH at the qscanner binary from the Qualys tarball",
            )
        return path
    found = shutil.which(NAME, path=environ.get("PATH", os.defpath))
    if found is None:
        raise ConfigurationError(
            "the qscanner binary was not found",
            "set QSCANNER_PATH, put qscanner on PATH, or choose --scanner builtin|trivy|grype",
        )
    return Path(found)


def is_configured(environ: Mapping[str, str]) -> bool:
    """Whether a QScanner binary is available (decides the default scanner)."""
    if environ.get(BINARY_ENV):
        return True
    return shutil.which(NAME, path=environ.get("PATH", os.defpath)) is not None


# Credentials we set ourselves per scan: never copied from the parent.
_OWN_VARS = frozenset(
    {
        "QSCANNER_PATH",
        "QSCANNER_REGISTRY_USERNAME",
        "QSCANNER_REGISTRY_PASSWORD",
        "QSCANNER_REGISTRY_TOKEN",
    }
)


def scanner_base_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What of the parent environment the scanner gets: passthroughs and QSCANNER_*."""
    return passthrough_environment(environ, "QSCANNER_", _OWN_VARS)


def build_argv(
    config: QScannerConfig,
    target: ScanTarget,
    output_dir: Path,
    cache_dir: Path,
    limits: Deadlines,
) -> list[str]:
    """The argument list: global flags, then `image <immutable reference>`. No secrets."""
    argv = [str(config.binary), "--mode", config.mode]
    if config.gateway_url:
        argv += ["--gateway-url", config.gateway_url]
    elif config.pod:
        argv += ["--pod", config.pod]
    argv += [
        "--scan-types",
        ",".join(target.scan_types),
        "--output-dir",
        str(output_dir),
        "--cache-dir",
        str(cache_dir),
        "--format",
        "json,cyclonedx",  # the inventory, and the image's SBOM (kept as sbom.cdx.json)
    ]
    if config.mode in REPORT_MODES:
        argv += ["--report-format", ",".join(config.report_formats)]
    if config.mode != "inventory-only":  # every other mode uploads and may poll
        argv += [
            "--max-network-retries",
            str(limits.network_retries),
            "--network-retry-wait-min",
            f"{RETRY_WAIT_MIN}s",
            "--network-retry-wait-max",
            f"{RETRY_WAIT_MAX}s",
        ]
    argv += ["--scan-timeout", f"{limits.scan_timeout}s", "image", target.image.reference]
    return argv


def build_environment(config: QScannerConfig, target: ScanTarget) -> dict[str, str]:
    """The child's whole environment: base variables, ONE kind of Qualys credentials (client
    id + secret when set, else the token), registry credentials."""
    env = dict(config.base_env)
    if config.credentials == "client":
        assert config.client_id and config.client_secret
        register_secret(config.client_secret)  # masked in logs and raw outputs
        env[CLIENT_ID_ENV] = config.client_id
        env[CLIENT_SECRET_ENV] = config.client_secret
    elif config.token:
        register_secret(config.token)
        env[TOKEN_ENV] = config.token
    if target.auth is not None:
        register_secret(target.auth.password)
        env["QSCANNER_REGISTRY_USERNAME"] = target.auth.username
        env["QSCANNER_REGISTRY_PASSWORD"] = target.auth.password
    return env


class QScanner:
    """The Scanner for Qualys QScanner (see the module docstring for the contract)."""

    name = NAME

    def __init__(self, config: QScannerConfig) -> None:
        self.config = config
        self._version: str | None = None
        # Why `qscanner --version` failed, when it did: said in every image's notes.
        self.version_problem: str | None = None
        self._cache_slots = _CacheSlots(config.cache_root) if config.cache_root else None

    @classmethod
    def from_config(cls, environ: Mapping[str, str] | None = None, **options: object) -> QScanner:
        """The registry's factory: settings from the environment, `options` override."""
        return cls(QScannerConfig.from_environment(environ, **options))

    # ------------------------------------------------------------------- version
    def version(self) -> str:
        """`qscanner --version`, e.g. "4.8.0-2" (run once per instance; part of cache keys).

        When it fails the version is `unknown-sha256:<binary sha256>`, so that the cache
        still works (keyed on this very binary), and the failure is logged as an error and
        noted on every image (`version_problem`).
        """
        if self._version is None:
            try:
                self._version = self._probe_version()
            except ScannerFailedError as exc:
                self.version_problem = f"`qscanner --version` failed: {exc.message}"
                self._version = UNKNOWN_VERSION_PREFIX + _sha256_file(self.config.binary)
                log.error(
                    "qscanner version unknown; the scan cache is keyed on the binary's sha256",
                    extra=fields(error=self.version_problem, version=self._version),
                )
        return self._version

    def _probe_version(self) -> str:
        with tempfile.TemporaryDirectory(prefix="qscanner-version-") as tmp:
            outcome = start_scanner(
                NAME,
                [str(self.config.binary), "--version"],
                env=dict(self.config.base_env),
                workdir=Path(tmp),
                timeout=VERSION_TIMEOUT,
                output_cap=64 * 1024,
            )
            try:
                check_finished(NAME, outcome, VERSION_TIMEOUT)
            except ScanError as exc:  # a timeout or a crash: the version is unknown too
                raise ScannerFailedError(exc.message) from None
            text = outcome.stdout_path.read_text("utf-8", "replace")
            text += outcome.stderr_path.read_text("utf-8", "replace")
        match = _VERSION.search(text)
        if outcome.returncode != 0 or match is None:
            raise ScannerFailedError(
                f"exit {outcome.returncode}: {redact(text[:300].strip())}",
                code=outcome.returncode,
            )
        return match.group(0)

    @contextmanager
    def _cache_dir(self, workdir: Path) -> Iterator[Path]:
        """A reused slot of the shared cache, or a fresh per-scan cache removed afterwards."""
        if self._cache_slots is not None:
            with self._cache_slots.lend() as slot:
                yield slot
            return
        cache_dir = workdir / "cache"
        cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            yield cache_dir
        finally:
            _remove_cache(cache_dir)

    # ---------------------------------------------------------------------- scan
    def scan(self, target: ScanTarget, workdir: Path, timeout: float) -> ScanResult:
        """Scan one image; raw outputs stay under `workdir` (listed in raw_files)."""
        unknown = set(target.scan_types) - SCAN_TYPES
        if unknown:
            raise ScanError(f"unsupported scan types for qscanner: {', '.join(sorted(unknown))}")
        workdir = workdir.resolve()  # the child runs in workdir: relative paths would shift
        output_dir = workdir / "output"
        if output_dir.exists():
            shutil.rmtree(output_dir)  # a previous attempt's reports must not be parsed
        output_dir.mkdir(parents=True)
        limits = deadlines(timeout, self.config.kill_margin, self.config.mode in REPORT_MODES)
        reference = target.image.reference
        log.info(
            "qscanner scan started",
            extra=fields(
                image=reference,
                mode=self.config.mode,
                scan_types=target.scan_types,
                credentials=self.config.credentials,
                scan_timeout=limits.scan_timeout,
                network_retries=limits.network_retries,
            ),
        )
        with self._cache_dir(workdir) as cache_dir:
            argv = build_argv(self.config, target, output_dir, cache_dir, limits)
            outcome = start_scanner(
                NAME,
                argv,
                env=build_environment(self.config, target),
                workdir=workdir,
                timeout=timeout,
                output_cap=self.config.output_cap,
                kill_grace=self.config.kill_grace,
            )
        raw_files = _raw_files(output_dir, outcome)
        if outcome.timed_out:
            raise ScannerTimeoutError(
                f"qscanner on {reference} timed out after {timeout:g}s "
                f"{_phase(output_dir, self.config.mode)}; killed its process group"
            )
        check_finished(f"qscanner on {reference}", outcome, timeout)
        code = outcome.returncode
        assert code is not None  # check_finished raised for timeouts and signals
        if code == EXIT_REPORT_UNAVAILABLE:
            raise ReportUnavailableError(
                f"qscanner could not get the vulnerability report for {reference} "
                f"(exit {code} FAILED_TO_GET_VULN_REPORT){failure_detail(outcome)}"
            )
        if code not in POLICY_RESULTS:
            raise ScannerFailedError(
                f"qscanner failed on {reference}: exit {code} {exit_code_name(code)}"
                f"{failure_detail(outcome)}",
                code=code,
            )
        result = self._parse(target, output_dir, raw_files, outcome)
        log.info(
            "qscanner scan finished",
            extra=fields(
                image=reference,
                exit_code=code,
                exit_name=exit_code_name(code),
                findings=len(result.findings),
                duration=round(outcome.duration, 3),
                stdout_truncated=outcome.stdout_truncated,
            ),
        )
        return result

    def _parse(
        self,
        target: ScanTarget,
        output_dir: Path,
        raw_files: tuple[Path, ...],
        outcome: ProcessOutcome,
    ) -> ScanResult:
        code = outcome.returncode
        assert code is not None
        image = target.image
        requested = set(target.scan_types)
        notes: list[str] = []
        scan_result_file = _single(output_dir, SCAN_RESULT_SUFFIX)
        sarif_file = _single(output_dir, SARIF_SUFFIX)
        scanner = ScannerInfo(NAME, self._version or "unknown")

        inventory: QScannerScanResult | None = None
        if scan_result_file is not None:
            inventory = parse_scan_result(
                scan_result_file.read_bytes(),
                scan_result_file.name,
                image=image,
                scanner=scanner,
                severity_map=self.config.severity_map,
            )
            if self._version is None and inventory.qscanner_version:
                scanner = ScannerInfo(NAME, inventory.qscanner_version)
            if inventory.metadata.matches_digest(image.digest) is False:
                described = ", ".join(inventory.metadata.repo_digests)
                raise ScanError(
                    f"{scan_result_file.name} describes {described}, not {image.reference}",
                    "the scanner resolved another image; the report was not used",
                )
            if image.architecture is None and inventory.metadata.architecture:
                # A single-platform image: ECR names no platform, QScanner does.
                image = replace(image, architecture=inventory.metadata.architecture)
                inventory = replace(
                    inventory, secrets=tuple(replace(f, resource=image) for f in inventory.secrets)
                )
        elif "secret" in requested:
            raise ScanError(
                f"qscanner exited {code} on {image.reference} but wrote no *{SCAN_RESULT_SUFFIX}",
                "the secrets of this image are unknown; its findings are left untouched",
            )

        findings: list[Finding] = []
        covered: set[str] = set()
        if "pkg" in requested:
            if self.config.mode not in REPORT_MODES:
                notes.append(f"mode {self.config.mode} gives no vulnerability report")
            elif sarif_file is None and self.config.mode == "evaluate-policy":
                # Whether evaluate-policy also writes the report is not documented: without
                # it the verdict stands, and the vulnerabilities are simply not observed.
                notes.append("evaluate-policy wrote no vulnerability report")
            elif sarif_file is None:
                raise ScanError(
                    f"qscanner exited {code} on {image.reference} but wrote no *{SARIF_SUFFIX}",
                    "the vulnerabilities of this image are unknown; its findings are untouched",
                )
            else:
                report = parse_sarif(
                    sarif_file.read_bytes(),
                    sarif_file.name,
                    image=image,
                    scanner=scanner,
                    severity_map=self.config.severity_map,
                    inventory=inventory.package_index() if inventory else None,
                )
                if report.image_digest and report.image_digest != image.digest:
                    raise ScanError(
                        f"{sarif_file.name} describes {report.image_digest}, not {image.reference}",
                        "the scanner resolved another image; the report was not used",
                    )
                findings.extend(report.findings)
                covered.add("pkg")
                if report.skipped_count:
                    notes.append(
                        f"{report.skipped_count} SARIF result(s) skipped (not vulnerabilities "
                        f"this parser reads): {'; '.join(report.skipped)}"
                    )
        if "secret" in requested and inventory is not None:
            findings.extend(inventory.secrets)
            covered.add("secret")
        if inventory is not None:
            for failed in sorted(inventory.failed_scan_types() & covered):
                covered.discard(failed)
                notes.append(f"qscanner reported its {failed} scan as failed")
        policy = POLICY_RESULTS[code] if code or self.config.mode == "evaluate-policy" else None
        if policy is not None:
            notes.append(f"policy evaluation: {policy} (exit {code} {exit_code_name(code)})")
        if outcome.stdout_truncated or outcome.stderr_truncated:
            notes.append(f"scanner output truncated at {self.config.output_cap} bytes")
        if self.version_problem:
            notes.append(f"{self.version_problem}; cache keyed on the binary's sha256")
        return ScanResult(
            scanner=scanner,
            findings=tuple(findings),
            scan_types=tuple(t for t in target.scan_types if t in covered),
            raw_files=raw_files,
            policy_result=policy,
            notes=tuple(notes),
            metadata=tuple(sorted(inventory.metadata.as_dict().items())) if inventory else (),
        )


def _single(directory: Path, suffix: str) -> Path | None:
    """The one file named `<prefix>-<suffix>` or `<prefix>_<suffix>`, whatever the prefix
    (the 64-hex image id per the README)."""
    matches = sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and p.name.endswith(suffix) and p.name[: -len(suffix)][-1:] in _SEPARATORS
    )
    if len(matches) > 1:
        raise ScanError(
            f"several *{suffix} files in {directory}: {', '.join(p.name for p in matches)}"
        )
    return matches[0] if matches else None


def _phase(output_dir: Path, mode: str) -> str:
    """What QScanner was doing when killed: its ScanResult.json is written once the image is
    scanned, before the upload and the report polling."""
    if mode not in REPORT_MODES or _single(output_dir, SCAN_RESULT_SUFFIX) is None:
        return "while scanning the image"
    return "while uploading the inventory or waiting for the vulnerability report"


def _sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class _CacheSlots:
    """Cache directories under `root`, each lent to one scan at a time and then reused."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._free: list[Path] = []
        self._count = 0
        self._lock = threading.Lock()

    @contextmanager
    def lend(self) -> Iterator[Path]:
        with self._lock:
            if self._free:
                slot = self._free.pop()
            else:
                slot = self.root / f"slot-{self._count}"
                self._count += 1
        slot.mkdir(parents=True, exist_ok=True)
        try:
            yield slot
        finally:
            with self._lock:
                self._free.append(slot)


def _remove_cache(cache_dir: Path) -> None:
    """Drop the scan's cache (vulnerability DBs, secret rules: large, not a raw output)."""
    try:
        shutil.rmtree(cache_dir)
    except OSError as exc:  # disk space is the only cost: say so, do not fail the scan
        log.warning(
            "could not remove the qscanner cache", extra=fields(path=str(cache_dir), error=str(exc))
        )


def _raw_files(output_dir: Path, outcome: ProcessOutcome) -> tuple[Path, ...]:
    """The files kept with the run's outputs, secrets masked (`sanitize_raw_file`)."""
    files = (*sorted(p for p in output_dir.rglob("*") if p.is_file()),
             outcome.stdout_path, outcome.stderr_path)  # fmt: skip
    for path in files:
        sanitize_raw_file(path)
    return files
