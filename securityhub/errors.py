"""The one exception hierarchy of containerscan.

Every error carries a message (what went wrong, and where) and a remediation (what the user
can do about it). The CLI maps the classes to the documented exit codes: 2 for a bad request
or configuration, 1 for anything fatal. Catch narrowly, at the unit of work.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3


class ContainerscanError(Exception):
    """Base of every error containerscan raises on purpose."""

    exit_code = EXIT_FATAL
    default_remediation = ""

    def __init__(self, message: str, remediation: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.remediation = remediation if remediation is not None else self.default_remediation

    def __str__(self) -> str:
        if self.remediation:
            return f"{self.message}\n  hint: {self.remediation}"
        return self.message


class ConfigurationError(ContainerscanError):
    """A setting (flag, environment variable, file) is missing or wrong."""

    exit_code = EXIT_USAGE


class ValidationError(ConfigurationError):
    """A document (request, policy, event) failed validation; `problems` lists each one.

    Each problem is a (location, message) pair, such as
    ("regions[1]", "unknown region 'us-east-9'").
    """

    def __init__(
        self,
        message: str,
        problems: list[tuple[str, str]] | None = None,
        remediation: str | None = None,
    ) -> None:
        super().__init__(message, remediation)
        self.problems = list(problems or [])

    def __str__(self) -> str:
        lines = [self.message]
        lines += [f"  - {where}: {what}" for where, what in self.problems]
        if self.remediation:
            lines.append(f"  hint: {self.remediation}")
        return "\n".join(lines)


class AwsError(ContainerscanError):
    """An AWS call failed after its retries."""

    default_remediation = (
        "check the credentials, the region and the IAM permissions; "
        "throttling errors usually pass on a later run"
    )


class SecurityHubError(AwsError):
    """Security Hub refused or failed an import or a query."""


class ScanError(ContainerscanError):
    """One image could not be scanned (scanner failure, timeout, unreadable report)."""


class ReportParseError(ScanError):
    """A scanner report is malformed; `where` says the file and the position."""

    default_remediation = "the raw report is kept with the run's outputs; check the scanner version"


class ImageError(ScanError):
    """An image could not be read (registry, manifest, layer, archive)."""


class PolicyError(ValidationError):
    """A TracingPolicy is invalid; the sidecar does not start."""


class TracerError(ContainerscanError):
    """The runtime tracer could not start or attach."""
