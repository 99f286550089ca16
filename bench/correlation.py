"""Correlation and import cost of the Security Hub layer.

    python -m bench.correlation                 # all parts, defaults below
    python -m bench.correlation --images 5000 --per-image 40 --e2e-images 50 --throttled 50000

1. Planning: 200,000 findings over 5,000 images against a full ledger (pure `plan()`), for an
   identical run (nothing to import unless refreshes are due), a run 8 days later (all
   refreshed) and a run with 1% changed (imports exactly those, in ceil(n/100) calls).
2. End to end with the publisher (ASFF, ledger in DynamoDB, gateway) against in-process moto
   with the Security Hub emulator: a first run, an identical second run (zero
   BatchImportFindings calls), and a run with 1% of findings changed.
3. Throughput under faults: 50,000 findings through the gateway with 30% of calls throttled
   (TooManyRequestsException) at the real client-side rate of 10 imports/s; every finding
   must land.
4. Retries stacked: HTTP calls per BatchImportFindings batch with 30% of calls throttled,
   and for a batch throttled on every call, with the clients as configured before issue 11
   (botocore adaptive mode, 10 attempts, under the gateway's 10) and now (standard mode,
   `securityhub.aws.SECURITY_HUB_ATTEMPTS`). Every HTTP attempt is counted by a botocore
   `before-send` hook; the waits (botocore's and the gateway's) are skipped.

Timings are wall-clock on a shared 2-core machine where other work runs at the same time:
read them as orders of magnitude. Call and finding counts are exact. Part 2's time is mostly
moto's DynamoDB (0.1-0.3 s per Query in-process); part 3's floor is the quota itself
(calls / 10 per second), plus the backoff of the throttled calls.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from securityhub import asff
from securityhub.correlate import Action, LedgerEntry, Observed, ObservedScope, plan
from securityhub.gateway import batches


def _synthetic(images: int, per_image: int) -> tuple[list[ObservedScope], list[Observed]]:
    scopes, observed = [], []
    for i in range(images):
        scope = f"ecr/123456789012/us-east-1/repo{i % 200}@sha256%3A{i:064x}"
        scopes.append(ObservedScope(scope, frozenset({"vulnerability", "secret"})))
        for j in range(per_image):
            observed.append(
                Observed(f"containerscan/{scope}/vuln/CVE-{j}", scope, "vulnerability", f"fp{j}")
            )
    return scopes, observed


def bench_planning(images: int, per_image: int) -> None:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    scopes, observed = _synthetic(images, per_image)
    then = now - timedelta(days=1)
    ledger = [
        LedgerEntry(o.finding_id, o.scope, o.kind, o.fingerprint, then, then, then)
        for o in observed
    ]
    n = len(observed)
    print(
        f"planning: {n:,} findings over {images:,} images against a full ledger of {len(ledger):,}"
    )

    started = time.perf_counter()
    same = plan(scopes, observed, ledger, now)
    elapsed = time.perf_counter() - started
    print(
        f"  identical run:   {elapsed:.2f} s  imports={len(same.changes)} unchanged={same.unchanged:,}"
        " (target < 2 s)"
    )

    started = time.perf_counter()
    later = plan(scopes, observed, ledger, now + timedelta(days=7))
    print(
        f"  8 days later:    {time.perf_counter() - started:.2f} s  refreshed={later.count(Action.REFRESH):,}"
        " (refresh interval 7 days)"
    )

    changed = [
        Observed(o.finding_id, o.scope, o.kind, o.fingerprint + "x") if k % 100 == 0 else o
        for k, o in enumerate(observed)
    ]
    started = time.perf_counter()
    one_percent = plan(scopes, changed, ledger, now)
    elapsed = time.perf_counter() - started
    updates = one_percent.count(Action.UPDATE)
    docs = [{"Id": c.finding_id, "Description": "x" * 2000} for c in one_percent.changes]
    calls = len(batches(docs))
    print(
        f"  1% changed:      {elapsed:.2f} s  updated={updates:,} -> {calls} BatchImportFindings calls"
        f" (ceil(n/100) = {math.ceil(updates / 100)})"
    )


def _findings(images: int, per_image: int, version: str = "1") -> list[Any]:
    from securityhub.findings import (
        EcrImage,
        Observation,
        Package,
        ScannerInfo,
        Severity,
        VulnerabilityFinding,
    )

    scanner = ScannerInfo("qscanner", "4.8.0-2")
    out = []
    for i in range(images):
        image = EcrImage(
            "123456789012", "us-east-1", f"bench/repo{i % 20}", f"sha256:{i:064x}", ("latest",)
        )
        findings = tuple(
            VulnerabilityFinding(
                resource=image,
                vulnerability_id=f"CVE-2024-{j:05d}",
                title=f"CVE-2024-{j:05d} in libfoo{j}",
                severity=Severity.HIGH,
                scanner=scanner,
                description="A flaw in libfoo. " * 8,
                cves=(f"CVE-2024-{j:05d}",),
                packages=(
                    Package(
                        f"libfoo{j}",
                        "1.0-1",
                        version if (i * per_image + j) % 100 == 0 else "1",
                        "dpkg",
                    ),
                ),
                references=(f"https://nvd.nist.gov/vuln/detail/CVE-2024-{j:05d}",),
                vendor_severity="4",
            )
            for j in range(per_image)
        )
        out.append(Observation(image, frozenset({"vulnerability", "secret"}), findings))
    return out


def _aws_env() -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }.items():
        os.environ[name] = value
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)


def _sessions() -> Any:
    from securityhub.aws import SessionFactory

    # One botocore attempt: the gateway's retries (and their counts) are what is measured.
    return SessionFactory("us-east-1", max_attempts=1)


def bench_end_to_end(images: int, per_image: int, rate: float) -> None:
    from moto import mock_aws

    from securityhub import emulator
    from securityhub.hub import SecurityHubPublisher
    from securityhub.ledger import create_table

    _aws_env()
    emulator.install()
    now = [datetime(2026, 11, 23, tzinfo=UTC)]
    with mock_aws():
        sessions = _sessions()
        create_table(sessions.client("dynamodb"), "bench")
        publisher = SecurityHubPublisher(
            sessions, "bench", clock=lambda: now[0], gateway_options={"import_rate": rate}
        )
        n = images * per_image
        print(
            f"end to end (moto + emulator, ledger in DynamoDB): {n:,} findings over {images} images,"
            f" {rate:g} imports/s"
        )
        for label, observations, advance in (
            ("first run", _findings(images, per_image), timedelta(0)),
            ("identical run", _findings(images, per_image), timedelta(hours=1)),
            ("1% changed", _findings(images, per_image, version="2"), timedelta(hours=1)),
        ):
            now[0] += advance
            faults = emulator.set_faults()
            started = time.perf_counter()
            summary = publisher.publish("us-east-1", observations)
            elapsed = time.perf_counter() - started
            calls = faults.calls.get("BatchImportFindings", 0)
            counts = {k: v for k, v in summary.as_dict().items() if v and k != "errors"}
            print(f"  {label:14} {elapsed:6.2f} s  BatchImportFindings calls={calls:<4} {counts}")
        changed = sum(1 for k in range(n) if k % 100 == 0)
        print(
            f"  (1% changed = {changed} findings -> ceil(n/100) = {math.ceil(changed / 100)} calls)"
        )


def bench_throttled(count: int, throttle: float, rate: float) -> None:
    from moto import mock_aws

    from securityhub import emulator
    from securityhub.gateway import Gateway

    _aws_env()
    emulator.install()
    ctx = asff.BuildContext("123456789012", "us-east-1")
    observations = _findings(max(1, count // 50), 50)
    with mock_aws():
        sessions = _sessions()
        started = time.perf_counter()
        stamp = datetime(2026, 11, 23, tzinfo=UTC)
        docs = [
            asff.stamp(
                asff.build(f, ctx),
                created_at=stamp,
                first_observed_at=stamp,
                updated_at=stamp,
                last_observed_at=stamp,
            )
            for o in observations
            for f in o.findings
        ][:count]
        built = time.perf_counter() - started
        gateway = Gateway(
            sessions.client("securityhub", "us-east-1"), import_rate=rate, backoff_base=0.05
        )
        faults = emulator.set_faults(emulator.Faults(throttle=throttle, seed=11))
        started = time.perf_counter()
        outcome = gateway.import_findings(docs)
        elapsed = time.perf_counter() - started
        emulator.set_faults()
        # The check reads back through the API, unthrottled (not part of the measure).
        reader = Gateway(sessions.client("securityhub", "us-east-1"), get_rate=1000.0)
        landed = sum(
            1
            for _ in reader.get_findings(
                {"Id": [{"Value": "containerscan/", "Comparison": "PREFIX"}]}
            )
        )
        print(
            f"throttled imports: {len(docs):,} findings (ASFF built in {built:.1f} s, "
            f"{len(docs) / built:,.0f}/s), {throttle:.0%} of calls throttled, {rate:g} imports/s"
        )
        print(
            f"  {elapsed:.1f} s  calls={outcome.calls} throttled={faults.throttled} "
            f"accepted={len(outcome.accepted):,} failed={len(outcome.failed)} "
            f"in the hub={landed:,} (ideal without throttling: {math.ceil(len(docs) / 100) / rate:.0f} s)"
        )


class _NoWait:
    """botocore.endpoint's `time`, without the retry sleeps (the calls are what is counted)."""

    def sleep(self, _seconds: float) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _calls_per_batch(config: Any, batches_n: int, throttle: float) -> list[int]:
    """HTTP attempts of each one-finding batch through a gateway on a client with `config`."""
    import boto3

    from securityhub import emulator
    from securityhub.gateway import Gateway

    ctx = asff.BuildContext("123456789012", "us-east-1")
    stamp = datetime(2026, 11, 23, tzinfo=UTC)
    docs = [
        asff.stamp(asff.build(f, ctx), created_at=stamp, first_observed_at=stamp,
                   updated_at=stamp, last_observed_at=stamp)
        for o in _findings(batches_n, 1)
        for f in o.findings
    ]  # fmt: skip
    client = boto3.session.Session().client("securityhub", "us-east-1", config=config)
    attempts = [0]

    def count(**_: Any) -> None:
        attempts[0] += 1

    client.meta.events.register("before-send.securityhub.BatchImportFindings", count)
    gateway = Gateway(client, import_rate=1e6, sleep=lambda _s: None)
    emulator.set_faults(emulator.Faults(throttle=throttle, seed=5,
                                        operations=frozenset({"BatchImportFindings"})))  # fmt: skip
    out = []
    for doc in docs:
        attempts[0] = 0
        gateway.import_findings([doc])
        out.append(attempts[0])
    emulator.set_faults()
    return out


def bench_retry_stack(batches_n: int, throttle: float) -> None:
    import botocore.endpoint
    from botocore.config import Config
    from moto import mock_aws

    from securityhub import emulator
    from securityhub.aws import SECURITY_HUB_ATTEMPTS, client_config
    from securityhub.gateway import MAX_ATTEMPTS

    _aws_env()
    emulator.install()
    before = Config(retries={"mode": "adaptive", "max_attempts": 10})
    saved = botocore.endpoint.time
    botocore.endpoint.time = _NoWait()  # type: ignore[assignment]
    try:
        with mock_aws():
            print(f"retries stacked: HTTP calls per BatchImportFindings batch "
                  f"(gateway: {MAX_ATTEMPTS} attempts)")  # fmt: skip
            for label, config in (("before: adaptive x10", before), ("now: standard", client_config(SECURITY_HUB_ATTEMPTS))):
                calls = _calls_per_batch(config, batches_n, throttle)
                worst = _calls_per_batch(config, 2, 1.0)
                print(f"  {label:22} {throttle:.0%} throttled: mean {sum(calls) / len(calls):.2f}, "
                      f"max {max(calls)} over {len(calls)} batches; "
                      f"every call throttled: {max(worst)} calls")  # fmt: skip
    finally:
        botocore.endpoint.time = saved  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.correlation", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--per-image", type=int, default=40)
    parser.add_argument("--e2e-images", type=int, default=50)
    parser.add_argument("--throttled", type=int, default=50_000)
    parser.add_argument("--throttle", type=float, default=0.3)
    parser.add_argument("--retry-batches", type=int, default=300)
    parser.add_argument(
        "--rate", type=float, default=10.0, help="client-side BatchImportFindings/s"
    )
    args = parser.parse_args(argv)
    print("(timings: shared 2-core machine, other work running; counts are exact)")
    bench_planning(args.images, args.per_image)
    bench_end_to_end(args.e2e_images, args.per_image, args.rate)
    bench_throttled(args.throttled, args.throttle, args.rate)
    bench_retry_stack(args.retry_batches, args.throttle)


if __name__ == "__main__":
    main()
