"""The local quick start (interim): the Security Hub layer end to end against an emulator.

`python -m check.demo` or `containerscan demo`:
1. starts moto's server on 127.0.0.1 (a free port) with the Security Hub emulator,
2. points AWS_ENDPOINT_URL and dummy credentials at it (nothing reaches AWS),
3. runs `containerscan init` in a child process (table, bucket, Security Hub),
4. publishes realistic findings of two sample images and prints them with
   `containerscan findings`,
5. publishes a second run in which one image was fixed (rescanned, clean) and shows its
   findings archived, the other image's untouched,
6. stops the server.

The full sweep replaces this module later; it needs only `pip install -e .[local]`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import click

REGION = "us-east-1"
TABLE = "containerscan-demo"
BUCKET = "containerscan-demo-outputs"
DEMO_ENV = {
    "AWS_ACCESS_KEY_ID": "demo",
    "AWS_SECRET_ACCESS_KEY": "demo-not-a-secret",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "CONTAINERSCAN_TABLE": TABLE,
    "CONTAINERSCAN_BUCKET": BUCKET,
}
CLEARED_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Set `values` (and clear profile/session variables) for this process, then restore."""
    saved = {k: os.environ.get(k) for k in (*values, *CLEARED_ENV)}
    os.environ.update(values)
    for name in CLEARED_ENV:
        os.environ.pop(name, None)
    try:
        yield dict(os.environ)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _containerscan(args: list[str], env: Mapping[str, str], echo: Any) -> None:
    """Run the console script's module in a child process, as a user would."""
    command = [sys.executable, "-m", "check", *args]
    echo(f"$ containerscan {' '.join(args)}")
    result = subprocess.run(command, env=dict(env), capture_output=True, text=True, check=False)
    if result.stdout:
        echo(result.stdout.rstrip())
    if result.returncode != 0:
        raise click.ClickException(
            f"`containerscan {' '.join(args)}` exited {result.returncode}: {result.stderr[-2000:]}"
        )


def sample_observations(account: str, *, worker_fixed: bool = False) -> list[Any]:
    """Two sample images: `shop/web` (vulnerabilities and a secret), `shop/worker`."""
    from datetime import UTC, datetime

    from securityhub.findings import (
        Cvss,
        EcrImage,
        Observation,
        Package,
        ScannerInfo,
        SecretFinding,
        Severity,
        VulnerabilityFinding,
    )

    qscanner = ScannerInfo("qscanner", "4.8.0-2")
    pushed = datetime(2026, 10, 30, 9, 15, tzinfo=UTC)
    web = EcrImage(
        account, REGION, "shop/web", "sha256:" + "4e" * 32, ("1.4.2", "latest"), pushed, "amd64"
    )
    worker = EcrImage(
        account, REGION, "shop/worker", "sha256:" + "9b" * 32, ("2.0.1",), pushed, "amd64"
    )
    layer = "sha256:" + "1f" * 32

    def vuln(  # noqa: PLR0917 - a local sample builder
        image: EcrImage,
        cve: str,
        qid: str,
        level: int,
        title: str,
        packages: tuple[Package, ...],
        score: float,
    ) -> VulnerabilityFinding:
        from securityhub.findings import QUALYS_SEVERITY

        return VulnerabilityFinding(
            resource=image,
            vulnerability_id=cve,
            title=title,
            severity=QUALYS_SEVERITY[level],
            scanner=qscanner,
            description=f"{title}. Fixed versions are available from the distribution.",
            cves=(cve,),
            packages=packages,
            cvss=(Cvss("3.1", score, None, "NVD"),),
            references=(f"https://nvd.nist.gov/vuln/detail/{cve}",),
            qid=qid,
            vendor_severity=str(level),
        )

    openssl = (
        Package("libssl3", "3.0.11-1~deb12u1", "3.0.13-1~deb12u1", "dpkg", layer=layer),
        Package("openssl", "3.0.11-1~deb12u1", "3.0.13-1~deb12u1", "dpkg", layer=layer),
    )
    web_findings = (
        vuln(
            web,
            "CVE-2023-5678",
            "5001204",
            3,
            "OpenSSL DH key generation denial of service",
            openssl,
            5.3,
        ),
        vuln(
            web,
            "CVE-2024-24790",
            "5002311",
            4,
            "Go net/netip IPv4-mapped address checks",
            (Package("stdlib", "1.21.6", "1.21.11", "gomod", "/app/server", layer),),
            9.8,
        ),
        SecretFinding(
            web,
            "aws-access-key-id",
            "AWS",
            "AWS access key id",
            Severity.CRITICAL,
            qscanner,
            "/app/config/.env",
            7,
            layer,
        ),
    )
    worker_findings = (
        vuln(
            worker,
            "CVE-2024-6387",
            "42046",
            5,
            "OpenSSH regreSSHion remote code execution",
            (Package("openssh-client", "1:9.2p1-2", "1:9.2p1-2+deb12u3", "dpkg", layer=layer),),
            8.1,
        ),
        vuln(
            worker,
            "CVE-2023-5678",
            "5001204",
            3,
            "OpenSSL DH key generation denial of service",
            openssl,
            5.3,
        ),
    )
    kinds = frozenset({"vulnerability", "secret"})
    return [
        Observation(web, kinds, web_findings),
        Observation(worker, kinds, () if worker_fixed else worker_findings),
    ]


def run(echo: Any = click.echo) -> int:
    """The demo; returns 0 when every step worked."""
    from securityhub.aws import SessionFactory
    from securityhub.emulator import LocalServer
    from securityhub.hub import SecurityHubPublisher

    with LocalServer() as endpoint, _environment({**DEMO_ENV, "AWS_ENDPOINT_URL": endpoint}) as env:
        echo(f"AWS emulator (moto + Security Hub semantics) on {endpoint}")
        _containerscan(["init", "--enable-security-hub"], env, echo)
        sessions = SessionFactory(REGION)
        account = sessions.account_id()
        publisher = SecurityHubPublisher(sessions, TABLE)

        echo("\n-- run 1: two images scanned")
        first = publisher.publish(REGION, sample_observations(account))
        echo(f"published: {first.as_dict()}")
        _containerscan(["findings", "--state", "all"], env, echo)

        echo("\n-- run 2: shop/worker rebuilt on patched packages, rescanned clean")
        second = publisher.publish(REGION, sample_observations(account, worker_fixed=True))
        echo(f"published: {second.as_dict()}")
        _containerscan(["findings", "--state", "all"], env, echo)
        _containerscan(
            ["findings", "--state", "archived", "--repository", "shop/worker"], env, echo
        )
        ok = first.created == 5 and second.archived == 2 and not (first.failed or second.failed)
    echo("\ndemo finished: " + ("OK" if ok else "UNEXPECTED COUNTS"))
    return 0 if ok else 1


@click.command("demo")
def demo() -> None:
    """Run the local end-to-end quick start against an emulator on loopback."""
    code = run()
    if code:
        sys.exit(code)


if __name__ == "__main__":
    demo()
