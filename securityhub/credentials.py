"""No credentials is a configuration problem (exit 2), said before any work starts.

Without this check a sweep fails every region one by one and ends "partial" (exit 3), and
`findings` ends with an AWS error (exit 1), both for what is a missing setting.
"""

from __future__ import annotations

from typing import Any

from securityhub.errors import ConfigurationError


def require_credentials(sessions: Any) -> None:
    """Raise ConfigurationError when the standard chain finds no credentials.

    botocore resolves the chain (environment, profile files, SSO, container and instance
    metadata) on `get_credentials()`; None means every provider came up empty.
    """
    if sessions.session().get_credentials() is None:
        raise ConfigurationError(
            "no AWS credentials found",
            "set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or run where a "
            "role provides them (ECS task role, instance profile); "
            "`aws sts get-caller-identity` shows what the chain finds",
        )
