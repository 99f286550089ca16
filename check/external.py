"""Trivy and Grype behind the Scanner interface (`--scanner trivy|grype`).

    trivy image --format json --output <workdir>/trivy-report.json --scanners vuln,secret
                --timeout <N>s --quiet <registry>/<repository>@sha256:<digest>
    grype registry:<registry>/<repository>@sha256:<digest> -o json
          --file <workdir>/grype-report.json

Both run through `check.process` like QScanner: argument lists, a minimal environment
(passthroughs plus the tool's own `TRIVY_*` / `GRYPE_*` settings, e.g. TRIVY_CACHE_DIR or
GRYPE_DB_CACHE_DIR), registry credentials in the environment only (TRIVY_USERNAME /
TRIVY_PASSWORD; GRYPE_REGISTRY_AUTH_AUTHORITY / _USERNAME / _PASSWORD), stdout and stderr
capped into files, a hard kill of the process group at the deadline.

The report goes to a file (`--output`, `--file`), not stdout, so the output cap never cuts
a report. Their vulnerability databases are NOT per scan (hundreds of MB): point
TRIVY_CACHE_DIR / GRYPE_DB_CACHE_DIR at a shared directory and update it before a sweep.

The binaries: CONTAINERSCAN_TRIVY_PATH / CONTAINERSCAN_GRYPE_PATH, else `trivy` / `grype`
on PATH. (Not TRIVY_PATH: Trivy reads every TRIVY_* variable as one of its flags.)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Self

from check.process import (
    DEFAULT_KILL_GRACE,
    DEFAULT_KILL_MARGIN,
    DEFAULT_OUTPUT_CAP,
    ProcessOutcome,
    ScannerFailedError,
    check_finished,
    failure_detail,
    passthrough_environment,
    sanitize_raw_file,
    scan_timeout_for,
    start_scanner,
)
from check.reports.grype import parse_grype
from check.reports.trivy import parse_trivy
from check.scanner import ScanResult, ScanTarget
from securityhub.errors import ConfigurationError, ScanError
from securityhub.findings import Finding, ScannerInfo
from securityhub.logs import fields, get_logger, redact, register_secret

log = get_logger("check.external")

VERSION_TIMEOUT = 30.0
_VERSION = re.compile(r"Version:\s*v?(\d+\.\d+\.\d+\S*)")


@dataclass(frozen=True)
class ExternalScannerConfig:
    binary: Path
    output_cap: int = DEFAULT_OUTPUT_CAP
    kill_grace: float = DEFAULT_KILL_GRACE
    kill_margin: float = DEFAULT_KILL_MARGIN
    base_env: Mapping[str, str] = field(default_factory=dict, repr=False)


def find_tool(name: str, path_env: str, environ: Mapping[str, str]) -> Path:
    configured = environ.get(path_env)
    if configured:
        path = Path(configured)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ConfigurationError(
                f"{path_env}={configured} is not an executable file",
                f"point {path_env} at the {name} binary",
            )
        return path
    found = shutil.which(name, path=environ.get("PATH", os.defpath))
    if found is None:
        raise ConfigurationError(
            f"the {name} binary was not found",
            f"install {name}, set {path_env}, or choose another --scanner",
        )
    return Path(found)


class _ExternalScanner:
    """The shared run: argv + env from the subclass, the report file parsed by it."""

    name = ""
    path_env = ""
    env_prefix = ""
    report_name = ""
    version_argv: tuple[str, ...] = ("--version",)
    supported_scan_types: frozenset[str] = frozenset()
    # Variables we set per scan: never copied from the parent.
    own_vars: frozenset[str] = frozenset()

    def __init__(self, config: ExternalScannerConfig) -> None:
        self.config = config
        self._version: str | None = None

    @classmethod
    def from_config(cls, environ: Mapping[str, str] | None = None, **options: object) -> Self:
        """The registry's factory: binary and base environment from `environ`."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "base_env": passthrough_environment(env, cls.env_prefix, cls.own_vars),
        }
        values.update(options)
        if "binary" not in values:
            values["binary"] = find_tool(cls.name, cls.path_env, env)
        return cls(ExternalScannerConfig(**values))  # type: ignore[arg-type]

    # ---------------------------------------------------------- subclass hooks
    def build_argv(self, target: ScanTarget, report: Path, scan_timeout: int) -> list[str]:
        raise NotImplementedError

    def auth_environment(self, target: ScanTarget) -> dict[str, str]:
        raise NotImplementedError

    def parse(
        self, data: bytes, source: str, target: ScanTarget, scanner: ScannerInfo
    ) -> tuple[list[Finding], tuple[str, ...]]:
        """(findings, digests the report says it scanned)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def version(self) -> str:
        if self._version is None:
            with tempfile.TemporaryDirectory(prefix=f"{self.name}-version-") as tmp:
                outcome = start_scanner(
                    self.name,
                    [str(self.config.binary), *self.version_argv],
                    env=dict(self.config.base_env),
                    workdir=Path(tmp),
                    timeout=VERSION_TIMEOUT,
                    output_cap=64 * 1024,
                )
                check_finished(self.name, outcome, VERSION_TIMEOUT)
                text = outcome.stdout_path.read_text("utf-8", "replace")
            match = _VERSION.search(text)
            if outcome.returncode != 0 or match is None:
                raise ScannerFailedError(
                    f"`{self.name} {' '.join(self.version_argv)}` failed "
                    f"(exit {outcome.returncode}): {redact(text[:300])}",
                    code=outcome.returncode,
                )
            self._version = match.group(1)
        return self._version

    def scan(self, target: ScanTarget, workdir: Path, timeout: float) -> ScanResult:
        covered = tuple(t for t in target.scan_types if t in self.supported_scan_types)
        notes = tuple(
            f"{self.name} does not scan for {t}"
            for t in target.scan_types
            if t not in self.supported_scan_types
        )
        scanner = ScannerInfo(self.name, self.version())
        if not covered:
            return ScanResult(scanner=scanner, findings=(), scan_types=(), notes=notes)
        workdir = workdir.resolve()  # the child runs in workdir: relative paths would shift
        workdir.mkdir(parents=True, exist_ok=True)
        report = workdir / self.report_name
        report.unlink(missing_ok=True)  # never parse a previous attempt's report
        env = dict(self.config.base_env)
        env.update(self.auth_environment(target))
        reference = target.image.reference
        target = replace(target, scan_types=covered)
        argv = self.build_argv(target, report, scan_timeout_for(timeout, self.config.kill_margin))
        outcome = start_scanner(
            self.name,
            argv,
            env=env,
            workdir=workdir,
            timeout=timeout,
            output_cap=self.config.output_cap,
            kill_grace=self.config.kill_grace,
        )
        kept = [report] if report.is_file() else []
        raw_files = (*kept, outcome.stdout_path, outcome.stderr_path)
        for path in raw_files:  # kept with the run's outputs: no secret may stay in them
            sanitize_raw_file(path)
        check_finished(f"{self.name} on {reference}", outcome, timeout)
        if outcome.returncode != 0:
            raise ScannerFailedError(
                f"{self.name} failed on {reference}: exit {outcome.returncode}"
                f"{failure_detail(outcome)}",
                code=outcome.returncode,
            )
        if not report.is_file():
            raise ScanError(f"{self.name} exited 0 on {reference} but wrote no {report.name}")
        findings, digests = self.parse(report.read_bytes(), report.name, target, scanner)
        if digests and target.image.digest not in digests:
            raise ScanError(
                f"{report.name} describes {', '.join(digests)}, not {reference}",
                "the scanner resolved another image; the report was not used",
            )
        log.info(
            f"{self.name} scan finished",
            extra=fields(image=reference, findings=len(findings), duration=outcome.duration),
        )
        return ScanResult(
            scanner=scanner,
            findings=tuple(findings),
            scan_types=covered,
            raw_files=raw_files,
            notes=notes + _truncation_note(outcome, self.config.output_cap),
        )


def _truncation_note(outcome: ProcessOutcome, cap: int) -> tuple[str, ...]:
    if outcome.stdout_truncated or outcome.stderr_truncated:
        return (f"scanner output truncated at {cap} bytes",)
    return ()


class TrivyScanner(_ExternalScanner):
    """Aqua Trivy (`trivy image`): vulnerabilities and secrets."""

    name = "trivy"
    path_env = "CONTAINERSCAN_TRIVY_PATH"
    env_prefix = "TRIVY_"
    report_name = "trivy-report.json"
    version_argv = ("--version",)
    supported_scan_types = frozenset({"pkg", "secret"})
    own_vars = frozenset({"TRIVY_USERNAME", "TRIVY_PASSWORD", "TRIVY_REGISTRY_TOKEN"})
    # Our scan types -> Trivy's --scanners values.
    SCANNERS = {"pkg": "vuln", "secret": "secret"}  # noqa: RUF012  # nosec B105 # scan types

    def build_argv(self, target: ScanTarget, report: Path, scan_timeout: int) -> list[str]:
        scanners = ",".join(self.SCANNERS[t] for t in target.scan_types if t in self.SCANNERS)
        return [
            str(self.config.binary),
            "image",
            "--format",
            "json",
            "--output",
            str(report),
            "--scanners",
            scanners,
            "--timeout",
            f"{scan_timeout}s",
            "--quiet",
            target.image.reference,
        ]

    def auth_environment(self, target: ScanTarget) -> dict[str, str]:
        if target.auth is None:
            return {}
        register_secret(target.auth.password)
        return {"TRIVY_USERNAME": target.auth.username, "TRIVY_PASSWORD": target.auth.password}

    def parse(
        self, data: bytes, source: str, target: ScanTarget, scanner: ScannerInfo
    ) -> tuple[list[Finding], tuple[str, ...]]:
        report = parse_trivy(data, source, image=target.image, scanner=scanner)
        findings: list[Finding] = []
        if "pkg" in target.scan_types:
            findings += report.vulnerabilities
        if "secret" in target.scan_types:
            findings += report.secrets
        return findings, report.image_digests


class GrypeScanner(_ExternalScanner):
    """Anchore Grype: vulnerabilities only (no secret scanning)."""

    name = "grype"
    path_env = "CONTAINERSCAN_GRYPE_PATH"
    env_prefix = "GRYPE_"
    report_name = "grype-report.json"
    version_argv = ("version",)
    supported_scan_types = frozenset({"pkg"})
    own_vars = frozenset(
        {
            "GRYPE_REGISTRY_AUTH_AUTHORITY",
            "GRYPE_REGISTRY_AUTH_USERNAME",
            "GRYPE_REGISTRY_AUTH_PASSWORD",
            "GRYPE_REGISTRY_AUTH_TOKEN",
        }
    )

    def build_argv(self, target: ScanTarget, report: Path, scan_timeout: int) -> list[str]:
        # `registry:` makes Grype pull from the registry instead of asking a Docker daemon.
        # Grype has no timeout flag: our deadline is the only one.
        del scan_timeout
        return [
            str(self.config.binary),
            f"registry:{target.image.reference}",
            "-o",
            "json",
            "--file",
            str(report),
        ]

    def auth_environment(self, target: ScanTarget) -> dict[str, str]:
        if target.auth is None:
            return {}
        register_secret(target.auth.password)
        return {
            "GRYPE_REGISTRY_AUTH_AUTHORITY": target.image.registry,
            "GRYPE_REGISTRY_AUTH_USERNAME": target.auth.username,
            "GRYPE_REGISTRY_AUTH_PASSWORD": target.auth.password,
        }

    def parse(
        self, data: bytes, source: str, target: ScanTarget, scanner: ScannerInfo
    ) -> tuple[list[Finding], tuple[str, ...]]:
        report = parse_grype(data, source, image=target.image, scanner=scanner)
        digests = (report.image_digest,) if report.image_digest else ()
        return list(report.vulnerabilities), digests
