"""The check's commands: `containerscan sweep` and `containerscan scan-image`.

Only click and the standard library are imported here at the top; the sweep's machinery
is imported inside the commands, so `containerscan --help` stays instant.

Exit codes: 0 done; 3 partial (some images, repositories, regions or imports failed);
4 findings at or above `--fail-on`; 2 bad request or configuration; 1 fatal.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import click

from securityhub.terminal import printable

REQUEST_ENV = "CONTAINERSCAN_REQUEST"
OUTPUTS = ("table", "json")
CYCLONEDX = "cyclonedx"  # scan-image only: the image's SBOM (check/sbom.py)
BUILTIN = "builtin"
# Local references (not ECR): what only the built-in scanner reads.
OCI_LAYOUT_PREFIX = "oci-layout:"
DOCKER_ARCHIVE_PREFIX = "docker-archive:"
# Flags that name ECR accounts and images; a local reference has none of these.
ECR_ONLY_FLAGS = {
    "accounts": "--account", "regions": "--region", "role": "--role",
    "external_id": "--external-id", "tag_scanned": "--tag-scanned",
}  # fmt: skip
# A bare `<repository>@sha256:...` or `<repository>:<tag>` in the default account and region.
BARE_REF_RE = re.compile(
    r"(?P<repository>[a-z0-9][a-z0-9._/-]*)(?:@(?P<digest>sha256:[0-9a-f]{64})|:(?P<tag>[^@/:]+))"
)


def _selection_options(func: Any) -> Any:
    options = [
        click.option("--account", "accounts", multiple=True, metavar="ID",
                     help="AWS account to sweep (repeatable; default: the caller's)."),
        click.option("--role", help="Role NAME to assume in accounts other than the caller's."),
        click.option("--external-id", help="External id for that role."),
        click.option("--region", "regions", multiple=True, help="Region (repeatable)."),
        click.option("--scan-types", help="Comma-separated: pkg,secret (default SCAN_TYPES)."),
        click.option("--scanner", help="qscanner, trivy, grype or builtin (default: auto)."),
        click.option("--force", is_flag=True, default=None, help="Ignore the scan cache."),
        click.option("--fail-on", metavar="SEVERITY",
                     help="Exit 4 when a finding reaches SEVERITY (pipelines)."),
        click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Also write the run's outputs under this directory."),
        click.option("--concurrency", type=click.IntRange(1, 256),
                     help="Parallel scans (default from CPUs and memory)."),
        click.option("--timeout", type=click.FloatRange(1), help="Seconds per image."),
        click.option("--tag-scanned", metavar="TAG", help="Add TAG to each scanned image."),
        click.option("--vuln-db", type=click.Path(file_okay=False, path_type=Path),
                     help="The built-in scanner's advisory database (else $CONTAINERSCAN_VULN_DB, "
                          "else ~/.cache/containerscan/vulndb; `containerscan db update` fills "
                          "it)."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


@click.command()
@click.option(
    "--request",
    "request_file",
    type=click.Path(exists=True, dir_okay=False),
    help=f"JSON request document (else ${REQUEST_ENV}); flags override it.",
)
@click.option(
    "--request-uri",
    metavar="S3URI",
    envvar="CONTAINERSCAN_REQUEST_URI",
    help="JSON request document in S3 (s3://bucket/key), as the launcher stores large ones.",
)
@click.option(
    "--repository",
    "repositories",
    multiple=True,
    metavar="GLOB",
    help="Repositories to include (repeatable; default all).",
)
@click.option("--exclude", multiple=True, metavar="GLOB", help="Repositories to exclude.")
@click.option("--image", "images", multiple=True, help="Only these digests or tags.")
@click.option("--tagged-only", is_flag=True, default=None, help="Skip untagged images.")
@click.option("--tag", "tags", multiple=True, metavar="GLOB", help="Keep images with such a tag.")
@click.option("--pushed-since", metavar="WHEN", help="7d, 12h, or an ISO 8601 time.")
@click.option("--pushed-within-days", type=int, metavar="N",
              help="Rescan duration: images pushed (or, with --pulled-within-days, pulled) "
                   "within N days.")  # fmt: skip
@click.option("--pulled-within-days", type=int, metavar="N",
              help="Images ECR recorded a pull of within N days (lastRecordedPullTime).")
@click.option("--in-use-only", is_flag=True, default=None,
              help="Only images an ECS task or a Lambda function runs now.")  # fmt: skip
@click.option("--max-images", type=int, metavar="N", help="The newest N per repository.")
@click.option(
    "--filter",
    "jmespath_filter",
    metavar="JMESPATH",
    help="Keep images whose ECR ImageDetail matches.",
)
@click.option("--shard", metavar="I/N", help="This task's share of the repositories (1/4).")
@click.option("--dry-run", is_flag=True, default=None, help="List what would be scanned.")
@_selection_options
@click.option("--output", type=click.Choice(OUTPUTS), default="table", show_default=True)
@click.pass_context
def sweep(
    ctx: click.Context, request_file: str | None, request_uri: str | None, **flags: Any
) -> None:
    """Sweep ECR repositories: enumerate, scan, correlate in Security Hub, report.

    \b
    containerscan sweep --account 123456789012 --region us-east-1 \\
        --repository 'payments/*' --exclude 'sandbox/*' --max-images 5 \\
        --scan-types pkg,secret --force

    Exit codes: 0 done, 3 partial (some images failed), 4 a finding reached --fail-on,
    2 bad request or configuration, 1 fatal.
    """
    from securityhub.errors import ContainerscanError

    try:
        from check.request import load_document

        base: dict[str, Any] = {}
        if request_file:
            base = load_document(Path(request_file).read_text(encoding="utf-8"), request_file)
        elif request_uri:
            base = load_document(_read_s3_text(request_uri), request_uri)
        elif os.environ.get(REQUEST_ENV):
            base = load_document(os.environ[REQUEST_ENV], REQUEST_ENV)
        source = "file" if request_file or request_uri else ("env" if base else "cli")
        _run(ctx, base, flags, source)
    except ContainerscanError as exc:
        _fail(ctx, exc)


@click.command("scan-image")
@click.argument("ref", required=False)
@click.option(
    "--event",
    "event_file",
    type=click.Path(exists=True, dir_okay=False),
    help="An EventBridge 'ECR Image Action' PUSH event (JSON file).",
)
@_selection_options
@click.option(
    "--output",
    type=click.Choice((*OUTPUTS, CYCLONEDX)),
    default="table",
    show_default=True,
    help="cyclonedx: the image's package inventory as a CycloneDX 1.5 SBOM (implies --force).",
)
@click.pass_context
def scan_image(ctx: click.Context, ref: str | None, event_file: str | None, **flags: Any) -> None:
    """Scan one image: an ECR reference, the image of an ECR push event, or a local image.

    \b
    containerscan scan-image 123456789012.dkr.ecr.us-east-1.amazonaws.com/app@sha256:...
    containerscan scan-image payments/api:1.4 --region us-east-1
    containerscan scan-image --event push-event.json
    containerscan scan-image oci-layout:./image --scanner builtin
    containerscan scan-image oci-layout:./image --output cyclonedx > sbom.cdx.json

    Exit codes as for `sweep`.
    """
    from securityhub.errors import ContainerscanError, ValidationError

    try:
        if bool(ref) == bool(event_file):
            raise ValidationError("give either REF or --event", [("REF", "exactly one is needed")])
        if event_file:
            from check.request import document_from_event, load_document

            event = load_document(Path(event_file).read_text(encoding="utf-8"), event_file)
            doc, problems = document_from_event(
                event, role=flags.get("role"), external_id=flags.get("external_id")
            )
            if doc is None:
                raise ValidationError(f"{event_file} is not an ECR push event", problems)
            _run(ctx, doc, flags, "event", single=True)
            return
        assert ref is not None
        doc = _reference_document(ref)
        if doc is None:
            _scan_local(ctx, ref, flags)
            return
        _run(ctx, doc, flags, "cli", single=True)
    except ContainerscanError as exc:
        _fail(ctx, exc)


# ----------------------------------------------------------------------------- helpers


def _reference_document(ref: str) -> dict[str, Any] | None:
    """The request for an ECR reference; None for anything else (local and other registries)."""
    from securityhub.ecrref import parse_ecr_reference

    if ecr := parse_ecr_reference(ref):
        return {
            "accounts": [ecr.account_id],
            "regions": [ecr.region],
            "repositories": [ecr.repository],
            "images": [ecr.digest or ecr.tag or "latest"],  # the digest pins it when both
        }
    if ":" in ref.split("/", 1)[0] or "." in ref.split("/", 1)[0]:
        return None  # oci-layout:DIR, docker-archive:FILE, registry.example.com/...
    if match := BARE_REF_RE.fullmatch(ref):
        return {
            "repositories": [match.group("repository")],
            "images": [match.group("digest") or match.group("tag")],
        }
    return None


def _flags_document(flags: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if flags.get("accounts"):
        doc["accounts"] = list(flags["accounts"])
    for flag, key in (
        ("regions", "regions"), ("repositories", "repositories"), ("exclude", "exclude"),
        ("images", "images"), ("tags", "tags"),
    ):  # fmt: skip
        if flags.get(flag):
            doc[key] = list(flags[flag])
    for flag, key in (
        ("tagged_only", "tagged_only"), ("pushed_since", "pushed_since"),
        ("max_images", "max_images"), ("jmespath_filter", "filter"), ("scan_types", "scan_types"),
        ("scanner", "scanner"), ("force", "force"), ("shard", "shard"), ("dry_run", "dry_run"),
        ("fail_on", "fail_on"), ("pushed_within_days", "pushed_within_days"),
        ("pulled_within_days", "pulled_within_days"), ("in_use_only", "in_use_only"),
    ):  # fmt: skip
        if flags.get(flag) is not None:
            doc[key] = flags[flag]
    return doc


# A request document is small; anything larger is not one (the launcher's are < 1 MB).
MAX_REQUEST_BYTES = 1024 * 1024


def _read_s3_text(uri: str) -> str:
    """The text of an `s3://bucket/key` object (the launcher's stored request)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from securityhub.aws import SessionFactory, error_code
    from securityhub.errors import AwsError, ValidationError

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or not key:
        raise ValidationError(
            "the request URI is invalid", [("--request-uri", f"expected s3://bucket/key: {uri}")]
        )
    s3 = SessionFactory().client("s3")
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read(MAX_REQUEST_BYTES + 1)
    except (ClientError, BotoCoreError) as exc:
        raise AwsError(f"cannot read the request {uri}: {error_code(exc)}") from exc
    if len(body) > MAX_REQUEST_BYTES:
        raise ValidationError(
            "the request document is too large", [(uri, f"over {MAX_REQUEST_BYTES} bytes")]
        )
    try:
        text: str = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError("the request is not UTF-8", [(uri, str(exc))]) from None
    return text


def _run(
    ctx: click.Context,
    base: dict[str, Any],
    flags: dict[str, Any],
    source: str,
    *,
    single: bool = False,
) -> None:
    from check.config import RunConfig
    from check.request import merge_documents, parse_request
    from check.scanners import scanner_names
    from check.sweep import build_sweep
    from securityhub.aws import SessionFactory
    from securityhub.credentials import require_credentials

    sbom_dir = None
    if flags.get("output") == CYCLONEDX:
        import tempfile

        flags = {**flags, "force": True}  # a cached result kept no inventory to describe
        if flags.get("output_dir") is None:
            sbom_dir = tempfile.TemporaryDirectory(prefix="containerscan-sbom-")
            flags["output_dir"] = Path(sbom_dir.name)
    config = RunConfig.from_env().with_overrides(
        output_dir=flags.get("output_dir"),
        concurrency=flags.get("concurrency"),
        image_timeout=flags.get("timeout"),
        tag_scanned=flags.get("tag_scanned"),
        role_name=flags.get("role"),
        external_id=flags.get("external_id"),
    )
    doc = merge_documents(base, _flags_document(flags))
    request = parse_request(
        doc,
        source=source,
        default_scan_types=config.scan_types,
        known_scanners=(*scanner_names(), "auto"),
    )
    sessions = SessionFactory(default_region=request.regions[0] if request.regions else None)
    require_credentials(sessions)
    scanner = None
    if not request.dry_run:
        scanner = _scanner(request.scanner or config.scanner, flags.get("vuln_db"))
    stream = sys.stderr if flags.get("output") == "table" else None
    status = build_sweep(
        request, config, sessions=sessions, scanner=scanner, progress_stream=stream
    ).run()
    report = status.as_dict()
    if flags.get("output") == CYCLONEDX:
        try:
            click.echo(_stored_sbom(Path(flags["output_dir"]), report))
        finally:
            if sbom_dir is not None:
                sbom_dir.cleanup()
    elif flags.get("output") == "json":
        click.echo(json.dumps(report, indent=2, default=str, ensure_ascii=False))
    else:
        click.echo(render_status(report, findings=single, records=status.records))
    ctx.exit(status.exit_code)


def _stored_sbom(output_dir: Path, report: dict[str, Any]) -> str:
    """The SBOM the run wrote for its one image."""
    from check.outputs import image_dir
    from check.sbom import SBOM_FILE
    from securityhub.errors import ScanError

    for image in report["images"]:
        path = output_dir / image_dir(report["run_id"], image["digest"]) / SBOM_FILE
        if path.is_file():
            return path.read_text(encoding="utf-8")
    failed = "; ".join(str(i.get("error")) for i in report["images"] if i.get("error"))
    raise ScanError(f"no SBOM was written for this image{': ' + failed if failed else ''}")


def _scanner(name: str | None, vuln_db: Path | None) -> Any:
    """The run's scanner. `--vuln-db` belongs to the built-in one; its database is opened
    here, so a missing one stops the run with exit 2 (naming `containerscan db update`)
    instead of failing every image."""
    from check.scanners import AUTO, default_scanner_name, make_scanner
    from securityhub.errors import ConfigurationError

    chosen = default_scanner_name() if name in (None, "", AUTO) else str(name)
    if vuln_db is not None and chosen != BUILTIN:
        raise ConfigurationError(
            f"--vuln-db is the built-in scanner's advisory database; {chosen} keeps its own",
            "drop --vuln-db, or add --scanner builtin")
    scanner = make_scanner(chosen, {"vuln_db": vuln_db} if vuln_db is not None else None)
    if chosen == BUILTIN:
        _ = scanner.database  # type: ignore[attr-defined]
    return scanner


def _local_reference(ref: str) -> None:
    """A local reference names something that exists, or a well-formed registry image."""
    from securityhub.errors import ImageError, ValidationError

    for prefix, is_right, what in (
        (OCI_LAYOUT_PREFIX, Path.is_dir, "an OCI layout directory"),
        (DOCKER_ARCHIVE_PREFIX, Path.is_file, "a `docker save` archive"),
    ):
        if ref.startswith(prefix):
            path = Path(ref[len(prefix):]).expanduser()
            if not is_right(path):
                raise ValidationError("the image reference names nothing", [
                    ("REF", f"{printable(str(path))} is not {what}")],
                    "oci-layout:DIR takes a directory an OCI tool wrote (skopeo copy ... "
                    "oci:DIR, buildah push ... oci:DIR); docker-archive:FILE a `docker save` tar")
            return
    from check.builtin.registry import ImageReference

    try:
        ImageReference.parse(ref)
    except ImageError as exc:
        raise ValidationError(
            "the image reference is malformed", [("REF", exc.message)],
            "give <account>.dkr.ecr.<region>.amazonaws.com/<repo>@sha256:..., "
            "host/repository:tag, oci-layout:DIR or docker-archive:FILE") from None


def _scan_local(ctx: click.Context, ref: str, flags: dict[str, Any]) -> None:
    """A reference outside ECR: the built-in scanner reads it (no Security Hub import).

    --scan-types, --scanner, --fail-on, --vuln-db, --timeout and --output-dir apply as for
    ECR images (the same request validation); the flags that name ECR accounts refuse.
    """
    from check.config import RunConfig
    from check.request import parse_request
    from check.scanners import scanner_names
    from securityhub.errors import ConfigurationError, ValidationError

    given = [flag for key, flag in ECR_ONLY_FLAGS.items() if flags.get(key)]
    if given:
        raise ValidationError(f"{printable(ref)} is not an ECR image", [
            (flag, "applies to ECR images only") for flag in given])
    config = RunConfig.from_env().with_overrides(output_dir=flags.get("output_dir"))
    request = parse_request(
        _flags_document(flags), source="cli", default_scan_types=config.scan_types,
        known_scanners=(*scanner_names(), "auto"))
    if (request.scanner or BUILTIN) not in (BUILTIN, "auto"):
        raise ConfigurationError(
            f"the {request.scanner} scanner cannot read {printable(ref)}: local images and "
            "registries other than ECR are read by the built-in scanner",
            "use --scanner builtin (or leave --scanner out)")
    _local_reference(ref)
    scanner = _scanner(BUILTIN, flags.get("vuln_db"))
    result, sbom = _scan_and_keep(ref, scanner, request.scan_types, config, flags.get("timeout"))
    if flags.get("output") == CYCLONEDX:
        click.echo(sbom)
    elif flags.get("output") == "json":
        from check.serialize import findings_to_dicts

        click.echo(
            json.dumps(
                {"reference": ref, "findings": findings_to_dicts(result.findings)},
                indent=2,
                default=str,
                ensure_ascii=False,
            )
        )
    else:
        click.echo(render_findings(result.findings))
    threshold = request.fail_on
    if threshold is not None and any(f.severity >= threshold for f in result.findings):
        ctx.exit(4)
    ctx.exit(0)


def _scan_and_keep(ref: str, scanner: Any, scan_types: tuple[str, ...], config: Any,
                   timeout: float | None) -> tuple[Any, str]:
    """Scan; the result and the image's SBOM. With --output-dir keep the run's tree as a
    sweep does: `runs/<run-id>/images/sha256-<hex>/results.json`, `sbom.cdx.json`, `raw/`."""
    import tempfile
    from dataclasses import asdict
    from datetime import UTC, datetime

    from check.builtin.scanner import DEFAULT_TIMEOUT, scan_reference
    from check.outputs import RunOutputs, image_dir
    from check.sbom import MEDIA_TYPE, SBOM_FILE, sbom_from_raw_files
    from check.serialize import findings_to_dicts
    from check.sweep import new_run_id

    with tempfile.TemporaryDirectory(prefix="containerscan-scan-") as workdir:
        result = scan_reference(ref, scan_types=scan_types, workdir=Path(workdir),
                                timeout=timeout or DEFAULT_TIMEOUT, scanner=scanner)
        digest = _scanned_digest(result)
        sbom = sbom_from_raw_files(result.raw_files, image_name=_image_name(ref), digest=digest,
                                   tool_version=result.scanner.version) or b""
        if config.output_dir is None:
            return result, sbom.decode()
        outputs = RunOutputs(local_dir=config.output_dir)
        run_id = config.run_id or new_run_id(datetime.now(UTC))
        base = image_dir(run_id, digest)
        outputs.write_bytes(f"{base}/{SBOM_FILE}", sbom, MEDIA_TYPE)
        outputs.write_json(f"{base}/results.json", {
            "reference": ref, "digest": digest, "scanner": asdict(result.scanner),
            "scan_types": list(result.scan_types), "notes": list(result.notes),
            "findings": findings_to_dicts(result.findings)})
        for path in result.raw_files:
            outputs.write_file(f"{base}/raw/{Path(path).name}", Path(path))
        for location in outputs.locations(run_id):
            click.echo(f"outputs: {location}", err=True)
        if outputs.errors:
            from securityhub.errors import ConfigurationError

            raise ConfigurationError(f"cannot write the outputs: {outputs.errors[0]}",
                                     "check --output-dir")
    return result, sbom.decode()


def _image_name(ref: str) -> str:
    """What the SBOM calls a local image: the path of a layout or archive, else the name."""
    for prefix in (OCI_LAYOUT_PREFIX, DOCKER_ARCHIVE_PREFIX):
        if ref.startswith(prefix):
            return str(Path(ref[len(prefix):]).resolve())
    return ref.split("@", 1)[0]


def _scanned_digest(result: Any) -> str:
    """The digest the built-in scanner read, from its inventory report."""
    from check.builtin.scanner import INVENTORY_FILE
    from securityhub.errors import ScanError

    for path in result.raw_files:
        if Path(path).name == INVENTORY_FILE:
            digest = json.loads(Path(path).read_text(encoding="utf-8")).get("digest")
            if isinstance(digest, str) and digest.startswith("sha256:"):
                return digest
    raise ScanError(f"the built-in scanner wrote no {INVENTORY_FILE} with the image digest")


def _fail(ctx: click.Context, exc: Any) -> None:
    from securityhub.aws import endpoint_problem
    from securityhub.logs import redact

    exc = endpoint_problem(exc) or exc  # an unreachable endpoint is configuration: exit 2
    click.echo(f"error: {redact(str(exc))}", err=True)
    ctx.exit(exc.exit_code)


def render_findings(findings: Any) -> str:
    from check.progress import table

    rows = []
    for f in sorted(findings, key=lambda f: (-int(f.severity), str(f.identity()))):
        if f.kind == "vulnerability":
            what = f.vulnerability_id
            detail = ", ".join(f"{p.name} {p.installed_version}" for p in f.packages[:3])
        else:
            what, detail = f.rule_id, f"{f.file_path}:{f.line}"
        rows.append(
            {"severity": f.severity.name, "id": what, "title": f.title[:60], "where": detail[:80]}
        )
    if not rows:
        return "no findings"
    return table(rows, ("severity", "id", "title", "where"))


SUMMARY_COLUMNS = (
    "images", "unique_digests", "scanned", "cached", "failed", "not_scanned",
    "findings", "new_findings",
)  # fmt: skip


def render_status(report: dict[str, Any], *, findings: bool = False, records: Any = ()) -> str:
    """The summary printed at the end of a run."""
    from check.progress import table

    counts = report["counts"]
    lines = [
        f"run {report['run_id']}: {report['status']} (exit {report['exit_code']}) "
        f"in {report['duration_s']}s",
        "",
        table(
            [{k: counts[k] for k in SUMMARY_COLUMNS}],
            SUMMARY_COLUMNS,
        ),
    ]
    if counts.get("severities"):
        lines.append(
            "severities: " + ", ".join(f"{k} {v}" for k, v in counts["severities"].items())
        )
    if report.get("security_hub"):
        rows = [{"scope": scope, **{k: v for k, v in s.items() if k != "errors"}}
                for scope, s in report["security_hub"].items()]  # fmt: skip
        lines += ["", "Security Hub:", table(rows, list(rows[0]))]
    if report["request"].get("dry_run"):
        rows = [{"repository": i["repository"], "digest": i["digest"][:19],
                 "tags": ",".join(i.get("tags", [])), "platform": i.get("platform", "")}
                for i in report["images"]]  # fmt: skip
        lines += ["", "would scan:" if rows else "nothing selected"]
        if rows:
            lines.append(table(rows, ("repository", "digest", "tags", "platform")))
    failed = [i for i in report["images"] if i["outcome"] == "failed"]
    if failed:
        rows = [{"repository": i["repository"], "digest": i["digest"][:19],
                 "error": i.get("error", "")[:100]} for i in failed]  # fmt: skip
        lines += ["", "failed images:", table(rows, ("repository", "digest", "error"))]
    for error in report.get("errors", ()):
        lines.append(printable(f"error in {error['scope']}: {error['error']}"))
    if report.get("tagging_problems"):
        for t in report["tagging_problems"]:
            where = f"{t['repository']}@{t['digest'][:19]}"
            lines.append(printable(f"tagging {where}: {t['outcome']} {t.get('error') or ''}"))
    if report.get("alert"):
        lines.append(
            f"alert: {report['alert']['findings']} new finding(s) >= {report['alert']['threshold']}"
        )
    if report.get("outputs", {}).get("locations"):
        lines.append(printable("outputs: " + " ".join(report["outputs"]["locations"])))
    if findings:
        for record in records:
            if record.outcome in ("scanned", "cached"):
                lines += ["", printable(f"{record.image.repository}@{record.image.digest}:"),
                          render_findings(record.findings)]  # fmt: skip
    return "\n".join(lines)
