"""AWS sessions and clients, shared by the check, the sidecar and the Security Hub layer.

Nothing here runs at import time. A `SessionFactory` is built once per process and passed in;
it hands out one boto3 session per account (assuming the named role for cross-account work,
with an external id) and caches one client per (account, region, service).

Retries: every client uses botocore's *standard* mode, for transport errors, throttling and
5xx on a single HTTP call. Security Hub's client makes few attempts, because the gateway
retries whole calls on top of it (through `securityhub.retry`, the one policy for our own
loops): the two never multiply into a storm (adaptive mode's 10 attempts under the gateway's
10 cost 110 calls per batch; now 10 x 3). The other services have no loop above botocore for
a failed call (DynamoDB's loops only re-send unprocessed items), so their clients keep more
attempts to ride out throttling. The first call of every command, STS GetCallerIdentity,
makes two attempts only, so a wrong endpoint fails in seconds.

Endpoints: `AWS_ENDPOINT_URL` (honoured by botocore itself) points every client at an
emulator. A short connect timeout and `endpoint_problem()` make a wrong endpoint (connection
refused, DNS failure) a configuration error (exit 2) within seconds, with a hint naming the
endpoint, rather than a minute of retries blamed on credentials.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Final

from securityhub.errors import AwsError, ConfigurationError

# botocore's standard mode (botocore/retries/standard.py): exponential backoff with jitter
# capped at 20 s. Security Hub: its default 3 attempts, the gateway's loop on top. Others: 8,
# which rides out 30% of calls throttled (0.3**8 < 1e-4 per call) as adaptive mode's 10 did.
DEFAULT_MAX_ATTEMPTS = 8
SECURITY_HUB_ATTEMPTS = 3
PROBE_ATTEMPTS = 2  # STS GetCallerIdentity, the first call: fail fast on a wrong endpoint
RETRY_MODE: Final = "standard"
# botocore's default connect timeout is 60 s; an AWS endpoint answers a TCP connect in well
# under a second, so a few seconds only ever cut short a wrong or unreachable endpoint.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0  # botocore's default
ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL"
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
        retries={"mode": RETRY_MODE, "total_max_attempts": max_attempts},
        user_agent_extra=USER_AGENT_EXTRA,
        max_pool_connections=max_pool,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
    )


class EndpointError(ConfigurationError):
    """The AWS endpoint cannot be reached (connection refused, DNS failure, no route)."""


def endpoint_problem(exc: BaseException | None) -> EndpointError | None:
    """An `EndpointError` when `exc` (or what caused it) is a failure to reach the endpoint.

    botocore raises EndpointConnectionError (refused, unreachable, DNS) and ConnectTimeoutError;
    a wrong `AWS_ENDPOINT_URL` is by far the usual cause, so the hint names it.
    """
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, EndpointError):
            return exc
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
            url = str(getattr(exc, "kwargs", {}).get("endpoint_url") or "the AWS endpoint")
            configured = os.environ.get(ENDPOINT_VARIABLE)
            hint = (
                f"{ENDPOINT_VARIABLE} is set to {configured!r}: check that an emulator listens "
                f"there, or unset {ENDPOINT_VARIABLE} to use AWS"
                if configured
                else f"check the network, the region, and {ENDPOINT_VARIABLE} if an emulator "
                "should answer"
            )
            return EndpointError(f"cannot connect to {url}: {exc}", hint)
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class SessionFactory:
    """One boto3 session per account, one client per (account, region, service)."""

    def __init__(
        self,
        default_region: str | None = None,
        max_attempts: int | None = None,
        base_session: Any | None = None,
    ) -> None:
        import boto3

        self._base = base_session or boto3.session.Session(region_name=default_region)
        self.default_region = default_region or self._base.region_name
        # `max_attempts` given: every client makes that many (tests); else per service.
        self._config = client_config(max_attempts or DEFAULT_MAX_ATTEMPTS)
        self._hub_config = client_config(max_attempts or SECURITY_HUB_ATTEMPTS)
        self._probe_config = client_config(max_attempts or PROBE_ATTEMPTS)
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

    def client(
        self, service: str, region: str | None = None, target: AccountTarget | None = None
    ) -> Any:
        key = (target.role_arn if target else None, self.region(region), service)
        with self._lock:
            if key not in self._clients:
                config = self._hub_config if service == "securityhub" else self._config
                self._clients[key] = self.session(target).client(
                    service, region_name=key[1], config=config
                )
            return self._clients[key]

    def account_id(self, target: AccountTarget | None = None) -> str:
        """The account the session for `target` acts in (STS GetCallerIdentity, cached)."""
        key = target.role_arn if target else None
        with self._lock:
            if key not in self._caller:
                from botocore.exceptions import BotoCoreError, ClientError

                # Its own client: few attempts, the first call of a run is the endpoint probe.
                sts = self.session(target).client(
                    "sts", region_name=self.region(), config=self._probe_config
                )
                try:
                    self._caller[key] = sts.get_caller_identity()["Account"]
                except (ClientError, BotoCoreError) as exc:
                    unreachable = endpoint_problem(exc)
                    if unreachable is not None:
                        raise unreachable from exc
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
