"""`containerscan init | findings | reconcile`: the Security Hub layer from the terminal.

Only click and the standard library are imported here; boto3 and the layer's modules are
imported inside the commands so that `containerscan --help` stays instant.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

DEFAULT_PREFIX = "containerscan/"
TABLE_ENV = "CONTAINERSCAN_TABLE"
BUCKET_ENV = "CONTAINERSCAN_BUCKET"
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL")


def _fail(error: Exception) -> None:
    """Show a containerscan error with its hint and exit with its code."""
    from securityhub.aws import endpoint_problem
    from securityhub.logs import redact

    error = endpoint_problem(error) or error  # an unreachable endpoint: exit 2

    click.echo(f"error: {redact(str(error))}", err=True)
    sys.exit(getattr(error, "exit_code", 1))


def _sessions(region: str | None) -> Any:
    """The session factory, once the standard chain has found credentials."""
    from securityhub.aws import SessionFactory
    from securityhub.credentials import require_credentials

    sessions = SessionFactory(region)
    require_credentials(sessions)
    return sessions


def _require(value: str | None, env: str, what: str) -> str:
    if not value:
        from securityhub.errors import ConfigurationError

        _fail(ConfigurationError(f"no {what} given", f"pass --{what} or set {env}"))
    return str(value)


# ----------------------------------------------------------------------------- init


def create_bucket(client: Any, bucket: str, region: str) -> bool:
    """Create the bucket (SSE, public access blocked) unless it exists; True if created."""
    created = False
    try:
        client.head_bucket(Bucket=bucket)
    except client.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
        params: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        client.create_bucket(**params)
        created = True
    client.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"},
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    client.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    return created


@click.command("init")
@click.option(
    "--table", envvar=TABLE_ENV, help=f"DynamoDB table (ledger + scan cache) [{TABLE_ENV}]."
)
@click.option("--bucket", envvar=BUCKET_ENV, help=f"S3 bucket for run outputs [{BUCKET_ENV}].")
@click.option("--region", envvar="AWS_REGION", help="AWS region (default: the SDK's).")
@click.option(
    "--enable-security-hub/--no-enable-security-hub",
    default=False,
    show_default=True,
    help="Also enable Security Hub in the region (for emulators and fresh accounts).",
)
def init(
    table: str | None, bucket: str | None, region: str | None, enable_security_hub: bool
) -> None:
    """Create, idempotently, the DynamoDB table and the S3 bucket a run needs.

    The table: pk/sk string keys, on-demand billing, TTL on `expires_at`, KMS encryption.
    The bucket: default KMS encryption, all public access blocked. CloudFormation creates
    the same in AWS; this command serves the local quick start and the tests.
    """
    from securityhub.errors import ContainerscanError
    from securityhub.ledger import create_table

    table_name = _require(table, TABLE_ENV, "table")
    bucket_name = _require(bucket, BUCKET_ENV, "bucket")
    try:
        sessions = _sessions(region)
        chosen = sessions.region(region)
        made_table = create_table(sessions.client("dynamodb", chosen), table_name)
        made_bucket = create_bucket(sessions.client("s3", chosen), bucket_name, chosen)
        if enable_security_hub:
            hub = sessions.client("securityhub", chosen)
            try:
                hub.enable_security_hub(EnableDefaultStandards=False)
            except hub.exceptions.ResourceConflictException:
                pass  # already enabled
    except ContainerscanError as exc:
        _fail(exc)
        return
    click.echo(f"table {table_name}: {'created' if made_table else 'exists'}")
    click.echo(f"bucket {bucket_name}: {'created' if made_bucket else 'exists'}")


# ------------------------------------------------------------------------- findings


def _filters(
    prefix: str,
    account: str,
    region: str,
    *,
    state: str,
    severities: tuple[str, ...],
    repository: str | None,
) -> dict[str, Any]:
    from securityhub import ids

    id_prefix = prefix
    if repository:
        id_prefix = prefix + ids.repository_scope(account, region, repository)
    filters: dict[str, Any] = {
        "Id": [{"Value": id_prefix, "Comparison": "PREFIX"}],
        "AwsAccountId": [{"Value": account, "Comparison": "EQUALS"}],
        "Region": [{"Value": region, "Comparison": "EQUALS"}],
    }
    if state != "all":
        filters["RecordState"] = [{"Value": state.upper(), "Comparison": "EQUALS"}]
    if severities:
        filters["SeverityLabel"] = [{"Value": s, "Comparison": "EQUALS"} for s in severities]
    return filters


def _resource(finding: dict[str, Any]) -> str:
    resource = (finding.get("Resources") or [{}])[0]
    details = resource.get("Details", {})
    image = details.get("AwsEcrContainerImage")
    if image:
        digest = str(image.get("ImageDigest", ""))
        return f"{image.get('RepositoryName')}@{digest[:19]}"
    other = details.get("Other", {})
    if other:
        return f"{other.get('TaskFamily')}/{other.get('ContainerName')}"
    return str(resource.get("Id", ""))


TABLE_COLUMNS = ("severity", "state", "updated", "resource", "title")
TITLE_WIDTH = 70


def render_table(findings: list[dict[str, Any]]) -> str:
    """One line per finding; every cell escaped (`securityhub.terminal`), so a title or a
    file name from an image can neither break a line nor send escape sequences."""
    from securityhub.terminal import table

    rows = [
        {
            "severity": (f.get("Severity") or {}).get("Label", ""),
            "state": f.get("RecordState", ""),
            "updated": str(f.get("UpdatedAt", ""))[:19],
            "resource": _resource(f),
            "title": str(f.get("Title", ""))[:TITLE_WIDTH],
        }
        for f in findings
    ]
    return f"{table(rows, TABLE_COLUMNS)}\n{len(findings)} finding(s)"


def _severity_list(values: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            name = part.strip().upper()
            if not name:
                continue
            if name not in SEVERITIES:
                raise click.BadParameter(
                    f"{part!r}: use {', '.join(SEVERITIES)}", param_hint="--severity"
                )
            out.append(name)
    return tuple(dict.fromkeys(out))


prefix_option = click.option(
    "--prefix",
    default=DEFAULT_PREFIX,
    show_default=True,
    envvar="CONTAINERSCAN_FINDING_PREFIX",
    help="Finding Id prefix [CONTAINERSCAN_FINDING_PREFIX].",
)


@click.command("findings")
@prefix_option
@click.option(
    "--state",
    type=click.Choice(["active", "archived", "all"]),
    default="active",
    show_default=True,
    help="RecordState to show.",
)
@click.option("--severity", multiple=True, help="Severity label(s): CRITICAL,HIGH,...")
@click.option("--repository", help="Only findings of images in this ECR repository.")
@click.option("--region", envvar="AWS_REGION", help="AWS region (default: the SDK's).")
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def findings(  # noqa: PLR0917 - one parameter per click option
    prefix: str,
    state: str,
    severity: tuple[str, ...],
    repository: str | None,
    region: str | None,
    output: str,
) -> None:
    """Review findings as the Security Hub console filter shows them.

    Reads GetFindings with Id PREFIX, AwsAccountId, Region, RecordState and SeverityLabel
    filters, every page, at most 3 requests per second.
    """
    from securityhub.errors import ContainerscanError
    from securityhub.gateway import Gateway
    from securityhub.ids import validate_prefix

    severities = _severity_list(severity)
    try:
        validate_prefix(prefix)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--prefix") from exc
    try:
        sessions = _sessions(region)
        chosen = sessions.region(region)
        account = sessions.account_id()
        gateway = Gateway(sessions.client("securityhub", chosen))
        filters = _filters(
            prefix, account, chosen, state=state, severities=severities, repository=repository
        )
        found = list(gateway.get_findings(filters))
    except ContainerscanError as exc:
        _fail(exc)
        return
    found.sort(key=lambda f: (-(f.get("Severity") or {}).get("Normalized", 0), str(f.get("Id"))))
    if output == "json":
        click.echo(json.dumps(found, indent=2, default=str))
    else:
        click.echo(render_table(found))


# ------------------------------------------------------------------------ reconcile


@click.command("reconcile")
@prefix_option
@click.option("--table", envvar=TABLE_ENV, help=f"DynamoDB ledger table [{TABLE_ENV}].")
@click.option("--region", envvar="AWS_REGION", help="AWS region (default: the SDK's).")
@click.option("--dry-run", is_flag=True, help="Report the differences; change nothing.")
@click.option("--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def reconcile(
    prefix: str, table: str | None, region: str | None, dry_run: bool, output: str
) -> None:
    """Rebuild or repair the ledger from Security Hub, reporting what differed."""
    from securityhub.errors import ContainerscanError
    from securityhub.gateway import Gateway
    from securityhub.ids import validate_prefix
    from securityhub.ledger import Ledger
    from securityhub.reconcile import Reconciler

    table_name = _require(table, TABLE_ENV, "table")
    try:
        validate_prefix(prefix)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--prefix") from exc
    try:
        sessions = _sessions(region)
        chosen = sessions.region(region)
        reconciler = Reconciler(
            Gateway(sessions.client("securityhub", chosen)),
            Ledger(sessions.client("dynamodb"), table_name),
            sessions.account_id(),
            chosen,
        )
        difference = reconciler.run(prefix, dry_run=dry_run)
    except ContainerscanError as exc:
        _fail(exc)
        return
    report = difference.as_dict()
    report["dry_run"] = dry_run
    if output == "json":
        click.echo(json.dumps(report, indent=2))
        return
    verb = "would repair" if dry_run else "repaired"
    click.echo(
        f"ledger vs Security Hub ({prefix}, {chosen}): {report['matching']} matching, "
        f"{report['missing']} missing, {report['drifted']} drifted, {report['stale']} stale, "
        f"{report['corrupt']} corrupt "
        f"({verb} {report['missing'] + report['drifted'] + report['stale']})"
    )
    for label in ("missing", "drifted", "stale"):
        for finding_id in report[f"{label}_ids"]:
            click.echo(f"  {label:8} {finding_id}")
