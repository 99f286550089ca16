"""The local quick start: a real sweep, end to end, on this machine only.

`python -m check.quickstart.demo`, `containerscan demo` or `make demo`:
1. starts a real OCI registry (Debian's `docker-registry`) and moto's server with the
   project's Security Hub semantics, both on 127.0.0.1 (`check.quickstart.local`);
2. builds two sample images from real files (`check.quickstart.sampleimages`), pushes them to the
   registry and registers the identical manifests in the emulated ECR (PutImage with the
   same bytes, so the digests match);
3. runs `containerscan init` and `containerscan sweep --scanner builtin` as a user would,
   in child processes whose AWS_ENDPOINT_URL points at the emulator and whose
   CONTAINERSCAN_REGISTRY_MIRRORS sends pulls of `<account>.dkr.ecr.<region>.amazonaws.com`
   to the local registry; then shows `containerscan findings`;
4. "fixes" shop/worker (a rebuilt image with upgraded packages pushed to the same tag, the
   old digest deleted from ECR), sweeps again, and shows the fixed findings archived;
5. stops everything and removes its temporary directory, also on Ctrl-C or SIGTERM.

The advisory database is CONTAINERSCAN_VULN_DB, else the database `containerscan db update`
wrote in its default location (`~/.cache/containerscan/vulndb`), else the real PyPA OSV and
Alpine secdb records shipped in `check/quickstart/advisories`: a clone is enough. Nothing
reaches AWS: the credentials are dummies and every client talks to the emulator.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

REGION = "us-east-1"
TABLE = "containerscan-demo"
BUCKET = "containerscan-demo-outputs"
VULN_DB_ENV = "CONTAINERSCAN_VULN_DB"
DEMO_CREDENTIALS = {  # nosec B105 - the emulator's dummy credentials, not a secret
    "AWS_ACCESS_KEY_ID": "demo",
    "AWS_SECRET_ACCESS_KEY": "demo-not-a-secret",
}
# Variables of the caller's shell that must not steer the demo's child processes elsewhere.
CLEARED_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE",
               "AWS_SHARED_CREDENTIALS_FILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
               "QSCANNER_PATH", "CONTAINERSCAN_REQUEST", "SNS_TOPIC_ARN", "SCAN_TYPES",
               "CONTAINERSCAN_PREFIX", "CONTAINERSCAN_FINDING_PREFIX")
EXIT_INTERRUPTED = 130
CHILD_TIMEOUT = 300.0  # seconds for one containerscan command; the whole demo takes ~15 s

Echo = Callable[[str], None]


class DemoFailed(Exception):
    """A step of the demo went wrong; the message says which and why."""


@dataclass(frozen=True)
class AdvisorySource:
    path: Path
    note: str  # how it was chosen, for the output


def advisory_source(environ: Mapping[str, str]) -> AdvisorySource:
    """CONTAINERSCAN_VULN_DB, else `db update`'s default location when it holds data, else
    the records shipped with the quick start."""
    from check.builtin.advisories import default_location
    from check.quickstart.data import advisories_dir

    chosen = environ.get(VULN_DB_ENV, "").strip()
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_dir():
            from securityhub.errors import ConfigurationError

            raise ConfigurationError(
                f"{VULN_DB_ENV}={chosen} is not a directory",
                "unset it, or point it at OSV records and Alpine secdb files "
                "(containerscan db update downloads them)")
        return AdvisorySource(path, f"from {VULN_DB_ENV}")
    downloaded = Path(default_location(dict(environ))).expanduser()
    if downloaded.is_dir() and any(downloaded.iterdir()):
        return AdvisorySource(downloaded, "from `containerscan db update`")
    return AdvisorySource(advisories_dir(), "the PyPA OSV and Alpine secdb records shipped "
                                            "with the quick start")


class Demo:
    """The steps, against a started `check.quickstart.local.LocalEnvironment`."""

    def __init__(self, local: Any, echo: Echo, environ: Mapping[str, str]) -> None:
        import boto3

        from check.builtin.registry import RegistryClient

        self.local = local
        self.echo = echo
        session = boto3.session.Session(
            aws_access_key_id=DEMO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DEMO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION)
        self.ecr = session.client("ecr", endpoint_url=local.endpoint)
        self.account = session.client("sts", endpoint_url=local.endpoint).get_caller_identity()[
            "Account"]
        self.ecr_host = f"{self.account}.dkr.ecr.{REGION}.amazonaws.com"
        self.registry = RegistryClient(local.registry.host)
        self.advisories = advisory_source(environ)
        self.env = self._child_environment(environ)

    def _child_environment(self, environ: Mapping[str, str]) -> dict[str, str]:
        env = {k: v for k, v in environ.items() if k not in CLEARED_ENV}
        env.update(DEMO_CREDENTIALS)
        env.update({
            "AWS_ENDPOINT_URL": self.local.endpoint,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "CONTAINERSCAN_TABLE": TABLE,
            "CONTAINERSCAN_BUCKET": BUCKET,
            "CONTAINERSCAN_WORKDIR": str(self.local.workdir / "scans"),
            "CONTAINERSCAN_LOG_LEVEL": environ.get("CONTAINERSCAN_LOG_LEVEL", "WARNING"),
            "CONTAINERSCAN_REGISTRY_MIRRORS": f"{self.ecr_host}={self.local.registry.url}",
        })
        env.pop(VULN_DB_ENV, None)  # the sweeps name the database with --vuln-db
        return env

    # ---------------------------------------------------------------------------- steps

    def heading(self, text: str) -> None:
        self.echo(f"\n== {text}")

    def containerscan(self, *args: str, show: bool = True) -> str:
        """Run the console script's module in a child process, as a user would."""
        command = [sys.executable, "-m", "check", *args]
        if show:
            self.echo(f"$ containerscan {' '.join(args)}")
        result = self.local.run(command, self.env, CHILD_TIMEOUT)
        if show and result.stdout.strip():
            self.echo(result.stdout.rstrip())
        if result.returncode != 0:
            raise DemoFailed(f"`containerscan {' '.join(args)}` exited {result.returncode}:\n"
                             f"{result.stderr.strip()[-2000:]}")
        return result.stdout

    def publish(self, image: Any) -> None:
        """Push to the registry, then register the identical manifest in the emulated ECR."""
        from check.quickstart.sampleimages import push_image

        digest = push_image(self.registry, image.repository, image.tag, image.blobs)
        self.ecr.put_image(
            repositoryName=image.repository, imageManifest=image.blobs.manifest.decode(),
            imageManifestMediaType=image.blobs.media_type, imageDigest=digest,
            imageTag=image.tag)
        name = f"{image.repository}:{image.tag}"
        self.echo(f"  {name:<16} {digest[:19]}  {image.summary}")

    def sweep(self) -> None:
        self.containerscan("sweep", "--scanner", "builtin", "--region", REGION,
                           "--vuln-db", str(self.advisories.path))

    def findings(self) -> list[dict[str, Any]]:
        out = self.containerscan("findings", "--state", "all", "--output", "json", show=False)
        found: list[dict[str, Any]] = json.loads(out)
        return found

    def run(self) -> tuple[int, int]:
        from check.quickstart.sampleimages import web_image, worker_image

        self.echo(f"  AWS emulator   {self.local.endpoint} (moto with Security Hub semantics)")
        self.echo(f"  OCI registry   {self.local.registry.host} (docker-registry), mirror of "
                  f"{self.ecr_host}")
        self.echo(f"  advisories     {self.advisories.path} ({self.advisories.note})")
        self.echo(f"  workspace      {self.local.workdir}")

        self.heading("1. containerscan init: ledger table, output bucket, Security Hub")
        self.containerscan("init", "--enable-security-hub")

        self.heading("2. sample images built from real files, pushed, registered in ECR")
        web, worker = web_image(), worker_image()
        for name in (web.repository, worker.repository):
            self.ecr.create_repository(repositoryName=name)
        self.publish(web)
        self.publish(worker)

        self.heading("3. sweep with the built-in scanner, then review the findings")
        self.sweep()
        self.containerscan("findings")
        first = self.findings()
        before = {f["Id"] for f in first if _repository(f) == worker.repository}

        self.heading(f"4. {worker.repository} fixed: rebuilt with upgraded packages, pushed to "
                     f"tag {worker.tag}; the old digest deleted from ECR; sweep again")
        fixed = worker_image(fixed=True)
        self.publish(fixed)
        self.ecr.batch_delete_image(repositoryName=worker.repository,
                                    imageIds=[{"imageDigest": worker.digest}])
        with self.registry.request(
                "DELETE", f"/v2/{worker.repository}/manifests/{worker.digest}",
                f"repository:{worker.repository}:delete", ok=(202,)):
            pass
        self.echo(f"  deleted {worker.repository}@{worker.digest[:19]} from ECR and the "
                  "registry")
        self.sweep()
        self.containerscan("findings", "--state", "archived")

        second = self.findings()
        states = Counter(str(f.get("RecordState")) for f in second)
        archived = {f["Id"] for f in second if f.get("RecordState") == "ARCHIVED"}
        if archived != before:
            raise DemoFailed(f"expected the {len(before)} finding(s) of the old "
                             f"{worker.repository} image archived, found {len(archived)} "
                             "archived")
        if not any(_repository(f) == web.repository for f in second
                   if f.get("RecordState") == "ACTIVE"):
            raise DemoFailed(f"the findings of {web.repository} should have stayed active")
        return states["ACTIVE"], states["ARCHIVED"]


def _repository(finding: Mapping[str, Any]) -> str:
    for resource in finding.get("Resources") or ():
        details = (resource.get("Details") or {}).get("AwsEcrContainerImage") or {}
        if details.get("RepositoryName"):
            return str(details["RepositoryName"])
    return ""


def run(echo: Echo = click.echo, environ: Mapping[str, str] | None = None) -> int:
    """The demo; 0 when every step worked, 130 when interrupted, else the failure's code
    (1, or 2 for a configuration problem such as a bad CONTAINERSCAN_VULN_DB)."""
    from check.quickstart.local import LocalEnvironment
    from securityhub.errors import ContainerscanError

    started = time.monotonic()
    env = dict(os.environ if environ is None else environ)
    echo("containerscan demo: a real sweep on this machine; nothing reaches AWS")
    try:
        with LocalEnvironment() as local:
            active, archived = Demo(local, echo, env).run()
    except KeyboardInterrupt:
        echo("\ndemo interrupted: servers stopped, temporary files removed")
        return EXIT_INTERRUPTED
    except DemoFailed as exc:
        echo(f"\ndemo FAILED: {exc}")
        return 1
    except ContainerscanError as exc:  # the message carries the remediation hint
        echo(f"\ndemo FAILED: {exc}")
        return exc.exit_code
    echo(f"\ndemo finished in {time.monotonic() - started:.0f}s: {active} active, "
         f"{archived} archived (the fixed image's findings); servers stopped, temporary "
         "files removed")
    return 0


@click.command("demo")
def demo() -> None:
    """Run the local end-to-end quick start: registry and AWS emulator on loopback."""
    code = run()
    if code:
        sys.exit(code)


if __name__ == "__main__":
    demo()
