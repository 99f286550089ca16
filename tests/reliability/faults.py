"""Fault injection at the HTTP layer of botocore: the code under test runs unchanged.

A `before-send` handler that returns an `AWSResponse` replaces the HTTP exchange; botocore
parses it like an answer from AWS and its retry handler (which runs around `before-send`,
unlike `before-call`) sees the throttling code or 5xx status and retries with backoff,
exactly as against AWS. `Flaky` answers a seeded fraction of the attempts to the services it
is registered for with such an error, in each service's own wire format, and counts them. It
is registered first, ahead of moto's own `before-send` stub, and passes the rest through.
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Per wire protocol: (HTTP status, error code) answers AWS gives under load, all retried by
# botocore (throttling codes, or a 5xx status).
JSON_ERRORS = (
    (400, "ThrottlingException"),
    (400, "ProvisionedThroughputExceededException"),
    (500, "InternalServerError"),
    (503, "ServiceUnavailable"),
)
# S3's SlowDown and SNS's Throttling are left out: they trip botocore's adaptive rate limiter,
# which then paces every call of the (shared) client for tens of seconds; correct, but slow.
XML_ERRORS = ((500, "InternalError"), (503, "ServiceUnavailable"))


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body


def error_response(protocol: str, status: int, code: str) -> Any:
    """An AWSResponse carrying `code` the way a service of `protocol` sends errors."""
    from botocore.awsrequest import AWSResponse

    if protocol in ("json", "rest-json"):
        body = json.dumps({"__type": code, "message": "injected fault"}).encode()
        headers = {"x-amzn-ErrorType": code, "Content-Type": "application/x-amz-json-1.1"}
    elif protocol == "rest-xml":
        body = (f"<Error><Code>{code}</Code><Message>injected fault</Message>"
                "<RequestId>0</RequestId></Error>").encode()  # fmt: skip
        headers = {"Content-Type": "application/xml"}
    else:  # query
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
                "<Message>injected fault</Message></Error><RequestId>0</RequestId>"
                "</ErrorResponse>").encode()  # fmt: skip
        headers = {"Content-Type": "text/xml"}
    return AWSResponse("https://injected.invalid", status, headers, _Raw(body))


@dataclass
class Flaky:
    fraction: float
    seed: int = 0
    throttling: bool = True  # False: 5xx answers only (no adaptive pacing: faster)
    protocols: dict[str, str] = field(default_factory=dict)
    injected: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    _random: random.Random = field(default_factory=random.Random, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._random.seed(self.seed)

    def __call__(self, request: Any, event_name: str = "", **_: Any) -> Any:
        # before-send.<service>.<Operation>
        _, service, operation = [*event_name.split("."), "", ""][:3]
        name = f"{service}.{operation}"
        with self._lock:
            self.calls[name] += 1
            if self._random.random() >= self.fraction:
                return None
            self.injected[name] += 1
            protocol = self.protocols.get(service, "json")
            errors = XML_ERRORS if protocol in ("rest-xml", "query") else JSON_ERRORS
            if not self.throttling:
                errors = tuple(e for e in errors if e[0] >= 500)
            status, code = self._random.choice(errors)
        return error_response(protocol, status, code)

    def install(self, session: Any, services: tuple[str, ...]) -> None:
        """Register on a boto3 session: every client it makes afterwards is affected."""
        for service in services:
            model = session._session.get_service_model(service)
            self.protocols[service] = model.metadata["protocol"]
            session.events.register_first(f"before-send.{service}", self,
                                          unique_id=f"flaky-{service}")  # fmt: skip

    @property
    def total(self) -> int:
        return sum(self.injected.values())


class CompressedTime:
    """`time` for botocore's endpoint module, with retry sleeps shortened `factor` times.

    botocore sleeps between attempts for up to 2**attempt seconds (jittered); the retry
    decisions are what the tests exercise, not the wall-clock waits, so the waits are
    compressed. Everything else is the real `time` module.
    """

    def __init__(self, factor: float = 20.0) -> None:
        import time

        self._time = time
        self.factor = factor
        self.slept = 0.0

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self._time.sleep(seconds / self.factor)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._time, name)
