"""AWS sessions and clients, shared by the check, the sidecar and the Security Hub layer.

Nothing here runs at import time. A `SessionFactory` is built once per process and passed in;
it hands out one boto3 session per account (assuming the named role for cross-account work,
with an external id) and caches one client per (account, region, service). Every client uses
botocore's adaptive retry mode, which retries throttling and 5xx errors with backoff and
jitter. `AWS_ENDPOINT_URL` (honoured by botocore itself) points every client at an emulator.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from securityhub.errors import AwsError, ConfigurationError

# botocore's default of 3 attempts gives up too early under Security Hub's 10 TPS quota and
# ECR's per-account limits; 10 attempts with adaptive backoff rides out bursts.
DEFAULT_MAX_ATTEMPTS = 10
USER_AGENT_EXTRA = "containerscan/0.1"
# STS AssumeRole session names: 2-64 characters of [\w+=,.@-].
ROLE_SESSION_NAME = "containerscan"
ASSUME_ROLE_SECONDS = 3600


@dataclass(frozen=True)
class AccountTarget:
    """An account to work in; `role_arn` is None for the caller's own account."""

    account_id: str | None = None
    role_arn: str | None = None
    external_id: str | None = None


def client_config(max_attempts: int = DEFAULT_MAX_ATTEMPTS, max_pool: int = 32) -> Any:
    from botocore.config import Config

    return Config(
        retries={"mode": "adaptive", "max_attempts": max_attempts},
        user_agent_extra=USER_AGENT_EXTRA,
        max_pool_connections=max_pool,
    )


class SessionFactory:
    """One boto3 session per account, one client per (account, region, service)."""

    def __init__(
        self,
        default_region: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        base_session: Any | None = None,
    ) -> None:
        import boto3

        self._base = base_session or boto3.session.Session(region_name=default_region)
        self.default_region = default_region or self._base.region_name
        self._config = client_config(max_attempts)
        self._sessions: dict[str | None, Any] = {}
        self._clients: dict[tuple[str | None, str, str], Any] = {}
        self._caller: dict[str | None, str] = {}
        self._lock = threading.RLock()

    def region(self, region: str | None = None) -> str:
        chosen = region or self.default_region
        if not chosen:
            raise ConfigurationError(
                "no AWS region is set",
                "pass --region or set AWS_REGION / AWS_DEFAULT_REGION",
            )
        return chosen

    def session(self, target: AccountTarget | None = None) -> Any:
        """The boto3 session for `target` (the base session for the caller's account)."""
        key = target.role_arn if target else None
        with self._lock:
            if key not in self._sessions:
                self._sessions[key] = self._assume(target) if target and key else self._base
            return self._sessions[key]

    def client(self, service: str, region: str | None = None,
               target: AccountTarget | None = None) -> Any:
        key = (target.role_arn if target else None, self.region(region), service)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self.session(target).client(
                    service, region_name=key[1], config=self._config
                )
            return self._clients[key]

    def account_id(self, target: AccountTarget | None = None) -> str:
        """The account the session for `target` acts in (STS GetCallerIdentity, cached)."""
        key = target.role_arn if target else None
        with self._lock:
            if key not in self._caller:
                from botocore.exceptions import BotoCoreError, ClientError

                sts = self.client("sts", target=target)
                try:
                    self._caller[key] = sts.get_caller_identity()["Account"]
                except (ClientError, BotoCoreError) as exc:
                    raise AwsError(f"cannot identify the AWS account: {exc}") from exc
            return self._caller[key]

    def _assume(self, target: AccountTarget) -> Any:
        """A session whose credentials re-assume the role before they expire.

        A nightly sweep of a large registry outlives the one-hour role session, so the
        credentials are botocore RefreshableCredentials rather than a fixed set.
        """
        import boto3
        from botocore.credentials import RefreshableCredentials
        from botocore.exceptions import BotoCoreError, ClientError
        from botocore.session import get_session

        sts = self._base.client("sts", region_name=self.default_region, config=self._config)
        params: dict[str, Any] = {
            "RoleArn": target.role_arn,
            "RoleSessionName": ROLE_SESSION_NAME,
            "DurationSeconds": ASSUME_ROLE_SECONDS,
        }
        if target.external_id:
            params["ExternalId"] = target.external_id

        def fetch() -> dict[str, str]:
            try:
                creds = sts.assume_role(**params)["Credentials"]
            except (ClientError, BotoCoreError) as exc:
                raise AwsError(
                    f"cannot assume {target.role_arn}: {exc}",
                    "check that the spoke role trusts the hub's task role and that the "
                    "external id matches",
                ) from exc
            return {
                "access_key": creds["AccessKeyId"],
                "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"],
                "expiry_time": creds["Expiration"].isoformat(),
            }

        credentials = RefreshableCredentials.create_from_metadata(
            metadata=fetch(), refresh_using=fetch, method="sts-assume-role"
        )
        botocore_session = get_session()
        botocore_session._credentials = credentials  # type: ignore[attr-defined]
        return boto3.session.Session(
            botocore_session=botocore_session, region_name=self.default_region
        )


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError, or the exception's class name."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(exc).__name__
