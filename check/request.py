"""The scan request: one validated model, whatever started the run.

A request comes from CLI flags, a JSON document (`--request FILE`, or the environment
variable `CONTAINERSCAN_REQUEST` that ECS container overrides set), an API Gateway body, or
an EventBridge "ECR Image Action" PUSH event. Every source becomes the same plain document
(a dict with the keys below), and `parse_request` turns that document into a frozen
`ScanRequest` or raises `ValidationError` listing EVERY problem by field, before any work.

The document (keys are snake_case; unknown keys are errors, never silently ignored):

    {
      "accounts": ["123456789012",
                   {"account_id": "210987654321", "role": "ContainerScanRole",
                    "external_id": "..."}],
      "regions": ["us-east-1"],
      "repositories": ["payments/*"],        # include globs (fnmatch; '*' crosses '/')
      "exclude": ["sandbox/*"],              # exclude globs
      "images": ["sha256:...", "v1.2"],      # explicit digests or tags (scan-image, events)
      "tagged_only": false,
      "tags": ["prod-*"],                    # keep images with a tag matching one glob
      "pushed_since": "7d" | "2026-01-31T00:00:00Z",
      "max_images": 5,                       # newest N per repository
      "filter": "imageSizeInBytes < `500000000`",  # JMESPath over ECR's ImageDetail
      "scan_types": "pkg,secret" | ["pkg", "secret"],
      "scanner": "qscanner",
      "force": false, "shard": "1/4", "dry_run": false, "fail_on": "HIGH"
    }

Names are validated against ECR's own rules (the botocore service model: repository names
2-256 characters matching `RepositoryName`'s pattern, tags 1-300 characters of anything).
Values are kept verbatim: a tag holding shell metacharacters or Unicode flows through to the
API calls unchanged, because nothing here or downstream ever builds a shell string.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from check.scanner import DEFAULT_SCAN_TYPES, SCAN_TYPES
from securityhub.errors import ValidationError
from securityhub.findings import Severity

# ECR naming rules, from botocore's ECR service model (shapes RepositoryName and ImageTag).
REPOSITORY_NAME_MIN = 2
REPOSITORY_NAME_MAX = 256
REPOSITORY_NAME_RE = re.compile(
    r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*"
)
IMAGE_TAG_MAX = 300
# A glob is compared with names of at most 256 characters; a longer one is a typo.
GLOB_MAX = 1024
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
ACCOUNT_RE = re.compile(r"\d{12}")
# Commercial, GovCloud, China and ISO partitions: us-east-1, us-gov-west-1, cn-north-1,
# us-iso-east-1, us-isob-east-1, eu-central-2, ap-southeast-5...
REGION_RE = re.compile(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}")
ROLE_ARN_RE = re.compile(r"arn:aws[a-z-]*:iam::(\d{12}):role/[\w+=,.@/-]{1,512}")
# IAM role names: 1-64 characters of [\w+=,.@-] (IAM CreateRole).
ROLE_NAME_RE = re.compile(r"[\w+=,.@-]{1,64}")
# STS AssumeRole ExternalId: 2-1224 characters of [\w+=,.@:/-].
EXTERNAL_ID_RE = re.compile(r"[\w+=,.@:/-]{2,1224}")
SCANNER_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
RELATIVE_RE = re.compile(r"(\d+)\s*([mhdw])")
RELATIVE_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_SHARDS = 1000

KNOWN_KEYS = (
    "accounts", "regions", "repositories", "exclude", "images", "tagged_only", "tags",
    "pushed_since", "max_images", "filter", "scan_types", "scanner", "force", "shard",
    "dry_run", "fail_on",
)  # fmt: skip

ECR_EVENT_SOURCE = "aws.ecr"
ECR_EVENT_DETAIL_TYPE = "ECR Image Action"


@dataclass(frozen=True)
class AccountSpec:
    """An account to sweep and how to get in: the role to assume (None: the caller's own)."""

    account_id: str
    role_arn: str | None = None
    external_id: str | None = None


@dataclass(frozen=True)
class Shard:
    """This task's share of the repositories: `index` of `count`, 1-based (`--shard 2/4`)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class ImageSelection:
    tagged_only: bool = False
    tags: tuple[str, ...] = ()
    pushed_since: datetime | None = None
    max_images: int | None = None
    jmespath: str | None = None
    images: tuple[str, ...] = ()  # explicit digests or tags


@dataclass(frozen=True)
class ScanRequest:
    accounts: tuple[AccountSpec, ...] = ()  # empty: the caller's account
    regions: tuple[str, ...] = ()  # empty: the session's region
    repositories: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    selection: ImageSelection = field(default_factory=ImageSelection)
    scan_types: tuple[str, ...] = DEFAULT_SCAN_TYPES
    scanner: str | None = None  # None: the default scanner
    force: bool = False
    shard: Shard | None = None
    dry_run: bool = False
    fail_on: Severity | None = None
    source: str = "cli"

    def as_dict(self) -> dict[str, Any]:
        """The request as a document `parse_request` accepts (for status.json and launchers)."""
        doc: dict[str, Any] = {
            "accounts": [
                {"account_id": a.account_id, "role": a.role_arn, "external_id": a.external_id}
                if a.role_arn
                else a.account_id
                for a in self.accounts
            ],
            "regions": list(self.regions),
            "repositories": list(self.repositories),
            "exclude": list(self.exclude),
            "images": list(self.selection.images),
            "tagged_only": self.selection.tagged_only,
            "tags": list(self.selection.tags),
            "pushed_since": self.selection.pushed_since.isoformat()
            if self.selection.pushed_since
            else None,
            "max_images": self.selection.max_images,
            "filter": self.selection.jmespath,
            "scan_types": list(self.scan_types),
            "scanner": self.scanner,
            "force": self.force,
            "shard": str(self.shard) if self.shard else None,
            "dry_run": self.dry_run,
            "fail_on": self.fail_on.name if self.fail_on is not None else None,
        }
        # The external id is not a secret in IAM's model, but it is not for everyone's eyes.
        for account in doc["accounts"]:
            if isinstance(account, dict) and account.get("external_id"):
                account["external_id"] = "***"
        return {k: v for k, v in doc.items() if v not in (None, [], False)}


# ------------------------------------------------------------------------------ parsing


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, where: str, what: str) -> None:
        self.items.append((where, what))


def _string_list(value: Any, where: str, problems: _Problems) -> list[str]:
    """A list of strings; a comma-separated string is accepted too ("pkg,secret")."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        problems.add(where, f"expected a list of strings, got {type(value).__name__}")
        return []
    out = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            out.append(item)
        else:
            problems.add(f"{where}[{i}]", f"expected a string, got {type(item).__name__}")
    return out


def _bool(value: Any, where: str, problems: _Problems) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    problems.add(where, f"expected true or false, got {value!r}")
    return False


def valid_repository_name(name: str) -> str | None:
    """Why `name` is not a valid ECR repository name, or None when it is."""
    if not REPOSITORY_NAME_MIN <= len(name) <= REPOSITORY_NAME_MAX:
        return f"must be {REPOSITORY_NAME_MIN}-{REPOSITORY_NAME_MAX} characters, got {len(name)}"
    if not REPOSITORY_NAME_RE.fullmatch(name):
        return (
            f"{name!r} is not a valid ECR repository name (lowercase letters, digits, "
            "'.', '_', '-' and '/' separating path components)"
        )
    return None


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _globs(value: Any, where: str, problems: _Problems) -> tuple[str, ...]:
    out = []
    for i, glob in enumerate(_string_list(value, where, problems)):
        here = f"{where}[{i}]"
        if not glob:
            problems.add(here, "empty pattern")
        elif len(glob) > GLOB_MAX:
            problems.add(here, f"pattern longer than {GLOB_MAX} characters")
        elif not _is_glob(glob) and (why := valid_repository_name(glob)):
            # A plain name (no wildcard) must be a name ECR could hold, or it matches nothing.
            problems.add(here, why)
        else:
            out.append(glob)
    return tuple(out)


def _accounts(
    value: Any, problems: _Problems, default_role: str | None, default_external_id: str | None
) -> tuple[AccountSpec, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        problems.add("accounts", f"expected a list, got {type(value).__name__}")
        return ()
    out: list[AccountSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        here = f"accounts[{i}]"
        role: Any = default_role
        external_id: Any = default_external_id
        if isinstance(item, str | int) and not isinstance(item, bool):
            account_id = str(item)
        elif isinstance(item, Mapping):
            unknown = sorted(set(item) - {"account_id", "id", "role", "role_arn", "external_id"})
            for key in unknown:
                problems.add(f"{here}.{key}", "unknown key (use account_id, role, external_id)")
            account_id = str(item.get("account_id", item.get("id", "")))
            role = item.get("role", item.get("role_arn", role))
            external_id = item.get("external_id", external_id)
        else:
            problems.add(here, f"expected an account id or an object, got {type(item).__name__}")
            continue
        if not ACCOUNT_RE.fullmatch(account_id):
            problems.add(here, f"{account_id!r} is not a 12-digit AWS account id")
            continue
        if account_id in seen:
            problems.add(here, f"account {account_id} is listed twice")
            continue
        seen.add(account_id)
        role_arn = None
        if role is not None:
            if not isinstance(role, str):
                problems.add(f"{here}.role", "expected a role name or ARN")
            elif match := ROLE_ARN_RE.fullmatch(role):
                if match.group(1) != account_id:
                    problems.add(
                        f"{here}.role", f"the role is in account {match.group(1)}, not {account_id}"
                    )
                role_arn = role
            elif ROLE_NAME_RE.fullmatch(role):
                role_arn = f"arn:aws:iam::{account_id}:role/{role}"
            else:
                problems.add(f"{here}.role", f"{role!r} is neither a role name nor a role ARN")
        if external_id is not None and (
            not isinstance(external_id, str) or not EXTERNAL_ID_RE.fullmatch(external_id)
        ):
            problems.add(
                f"{here}.external_id", "must be 2-1224 characters of letters, digits and +=,.@:/-"
            )
            external_id = None
        out.append(AccountSpec(account_id, role_arn, external_id))
    return tuple(out)


def _pushed_since(value: Any, now: datetime, problems: _Problems) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        problems.add("pushed_since", "expected a duration such as '7d' or an ISO 8601 time")
        return None
    if match := RELATIVE_RE.fullmatch(value.strip()):
        amount, unit = int(match.group(1)), RELATIVE_UNITS[match.group(2)]
        return now - timedelta(**{unit: amount})
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        problems.add(
            "pushed_since",
            f"{value!r} is neither a duration (30m, 12h, 7d, 2w) nor an ISO 8601 time",
        )
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _shard(value: Any, problems: _Problems) -> Shard | None:
    if value is None or value == "":
        return None
    text = str(value)
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match:
        problems.add("shard", f"{text!r} is not i/N (for example 1/4)")
        return None
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= count <= MAX_SHARDS or not 1 <= index <= count:
        problems.add("shard", f"need 1 <= i <= N <= {MAX_SHARDS}, got {text}")
        return None
    return Shard(index, count)


def _jmespath(value: Any, problems: _Problems) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        problems.add("filter", "expected a JMESPath expression (a string)")
        return None
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        jmespath.compile(value)
    except JMESPathError as exc:
        problems.add("filter", f"invalid JMESPath expression: {exc}")
        return None
    return value


def validate_request(
    doc: Any,
    *,
    source: str = "document",
    now: datetime | None = None,
    default_scan_types: Sequence[str] = DEFAULT_SCAN_TYPES,
    known_scanners: Collection[str] | None = None,
    default_role: str | None = None,
    default_external_id: str | None = None,
) -> tuple[ScanRequest | None, list[tuple[str, str]]]:
    """Parse a request document: (the request, []) or (None, every problem by field).

    This is the function launchers call (an API Gateway handler answers 400 with the list).
    """
    problems = _Problems()
    now = now or datetime.now(UTC)
    if not isinstance(doc, Mapping):
        return None, [("request", f"expected a JSON object, got {type(doc).__name__}")]
    for key in sorted(set(doc) - set(KNOWN_KEYS)):
        problems.add(key, f"unknown key; known keys: {', '.join(KNOWN_KEYS)}")

    accounts = _accounts(doc.get("accounts"), problems, default_role, default_external_id)
    regions = []
    for i, region in enumerate(_string_list(doc.get("regions"), "regions", problems)):
        if REGION_RE.fullmatch(region):
            if region not in regions:
                regions.append(region)
        else:
            problems.add(f"regions[{i}]", f"{region!r} is not an AWS region name")
    repositories = _globs(doc.get("repositories"), "repositories", problems) or ("*",)
    exclude = _globs(doc.get("exclude"), "exclude", problems)

    images: list[str] = []
    for i, image in enumerate(_string_list(doc.get("images"), "images", problems)):
        if image.startswith("sha256:"):
            if not DIGEST_RE.fullmatch(image):
                problems.add(f"images[{i}]", f"{image!r} is not sha256: and 64 hex digits")
                continue
        elif not 1 <= len(image) <= IMAGE_TAG_MAX:
            problems.add(f"images[{i}]", f"a tag has 1-{IMAGE_TAG_MAX} characters")
            continue
        images.append(image)
    tags = []
    for i, tag in enumerate(_string_list(doc.get("tags"), "tags", problems)):
        if 1 <= len(tag) <= GLOB_MAX:
            tags.append(tag)
        else:
            problems.add(f"tags[{i}]", f"a tag pattern has 1-{GLOB_MAX} characters")

    max_images = doc.get("max_images")
    if max_images is not None and (
        isinstance(max_images, bool)
        or not isinstance(max_images, int | str)
        or not str(max_images).isdigit()
        or int(max_images) < 1
    ):
        problems.add("max_images", f"expected a positive integer, got {max_images!r}")
        max_images = None
    selection = ImageSelection(
        tagged_only=_bool(doc.get("tagged_only"), "tagged_only", problems),
        tags=tuple(tags),
        pushed_since=_pushed_since(doc.get("pushed_since"), now, problems),
        max_images=int(max_images) if max_images is not None else None,
        jmespath=_jmespath(doc.get("filter"), problems),
        images=tuple(images),
    )

    scan_types: list[str] = []
    raw_types = doc.get("scan_types")
    given = _string_list(raw_types, "scan_types", problems) if raw_types is not None else None
    for i, scan_type in enumerate(given if given is not None else list(default_scan_types)):
        if scan_type not in SCAN_TYPES:
            where = f"scan_types[{i}]" if given is not None else "SCAN_TYPES"
            problems.add(
                where, f"unknown scan type {scan_type!r}; use {', '.join(sorted(SCAN_TYPES))}"
            )
        elif scan_type not in scan_types:
            scan_types.append(scan_type)
    if not scan_types and not any(w.startswith(("scan_types", "SCAN")) for w, _ in problems.items):
        problems.add("scan_types", "at least one scan type is needed")

    scanner = doc.get("scanner")
    if scanner is not None:
        if not isinstance(scanner, str) or not SCANNER_NAME_RE.fullmatch(scanner):
            problems.add("scanner", f"{scanner!r} is not a scanner name")
            scanner = None
        elif known_scanners is not None and scanner not in known_scanners:
            problems.add(
                "scanner", f"unknown scanner {scanner!r}; use {', '.join(sorted(known_scanners))}"
            )
            scanner = None

    fail_on = None
    if doc.get("fail_on") not in (None, ""):
        try:
            fail_on = Severity.parse(str(doc["fail_on"]))
        except ValueError as exc:
            problems.add("fail_on", str(exc))

    request = ScanRequest(
        accounts=accounts,
        regions=tuple(regions),
        repositories=repositories,
        exclude=exclude,
        selection=selection,
        scan_types=tuple(scan_types),
        scanner=scanner,
        force=_bool(doc.get("force"), "force", problems),
        shard=_shard(doc.get("shard"), problems),
        dry_run=_bool(doc.get("dry_run"), "dry_run", problems),
        fail_on=fail_on,
        source=source,
    )
    if problems.items:
        return None, problems.items
    return request, []


def parse_request(doc: Any, *, source: str = "document", **options: Any) -> ScanRequest:
    """`validate_request`, raising `ValidationError` (exit code 2) with every problem."""
    request, problems = validate_request(doc, source=source, **options)
    if request is None:
        raise ValidationError(
            f"the scan request ({source}) is invalid",
            problems,
            "fix the fields listed above; `containerscan sweep --help` describes each one",
        )
    return request


def load_document(text: str, where: str) -> dict[str, Any]:
    """A JSON request document from a file or an environment variable."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(
            f"{where} is not valid JSON",
            [(where, f"line {exc.lineno} column {exc.colno}: {exc.msg}")],
        ) from None
    if not isinstance(doc, dict):
        raise ValidationError(f"{where} is invalid", [(where, "expected a JSON object")])
    return doc


def document_from_api(
    event: Mapping[str, Any],
) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """The request document in an API Gateway proxy event (or a bare body object).

    API Gateway hands the body as a string, base64-encoded when `isBase64Encoded` is true.
    """
    if "body" not in event:
        return dict(event), []
    body = event.get("body")
    if body is None or body == "":
        return {}, []
    if isinstance(body, Mapping):
        return dict(body), []
    if not isinstance(body, str):
        return None, [("body", "expected a JSON string")]
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body, validate=True).decode("utf-8")
        except ValueError:  # binascii.Error, UnicodeDecodeError, or non-ASCII text to decode
            return None, [("body", "isBase64Encoded is true but the body is not base64 UTF-8")]
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, [("body", f"not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}")]
    if not isinstance(doc, dict):
        return None, [("body", "expected a JSON object")]
    return doc, []


def validate_api_request(
    event: Mapping[str, Any], **options: Any
) -> tuple[ScanRequest | None, list[tuple[str, str]]]:
    """An API Gateway request (proxy event or body object) -> (request, problems)."""
    doc, problems = document_from_api(event)
    if doc is None:
        return None, problems
    return validate_request(doc, source="api", **options)


def document_from_event(
    event: Any, *, role: str | None = None, external_id: str | None = None
) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """The request document for an EventBridge "ECR Image Action" PUSH event.

    The event names the account, region, repository and digest of the pushed image:
    `{"source": "aws.ecr", "detail-type": "ECR Image Action", "account": ..., "region": ...,
    "detail": {"action-type": "PUSH", "result": "SUCCESS", "repository-name": ...,
    "image-digest": "sha256:...", "image-tag": ...}}`. Other actions (DELETE) and failed
    pushes are problems, so a misrouted rule is visible rather than a silent no-op.
    """
    problems = _Problems()
    if not isinstance(event, Mapping):
        return None, [("event", "expected a JSON object")]
    if event.get("source") != ECR_EVENT_SOURCE:
        problems.add("source", f"expected {ECR_EVENT_SOURCE!r}, got {event.get('source')!r}")
    if event.get("detail-type") != ECR_EVENT_DETAIL_TYPE:
        problems.add(
            "detail-type", f"expected {ECR_EVENT_DETAIL_TYPE!r}, got {event.get('detail-type')!r}"
        )
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        problems.add("detail", "missing or not an object")
        return None, problems.items
    if detail.get("action-type") != "PUSH":
        problems.add(
            "detail.action-type", f"only PUSH is scanned, got {detail.get('action-type')!r}"
        )
    if detail.get("result") != "SUCCESS":
        problems.add("detail.result", f"the push did not succeed ({detail.get('result')!r})")
    for key in ("repository-name", "image-digest"):
        if not isinstance(detail.get(key), str) or not detail.get(key):
            problems.add(f"detail.{key}", "missing")
    for key in ("account", "region"):
        if not isinstance(event.get(key), str):
            problems.add(key, "missing")
    if problems.items:
        return None, problems.items
    account: dict[str, Any] = {"account_id": event["account"]}
    if role:
        account["role"] = role
    if external_id:
        account["external_id"] = external_id
    return {
        "accounts": [account],
        "regions": [event["region"]],
        "repositories": [detail["repository-name"]],
        "images": [detail["image-digest"]],
    }, []


def validate_event_request(
    event: Any, *, role: str | None = None, external_id: str | None = None, **options: Any
) -> tuple[ScanRequest | None, list[tuple[str, str]]]:
    """An ECR push event -> (request, problems); the launcher's entry point for events."""
    doc, problems = document_from_event(event, role=role, external_id=external_id)
    if doc is None:
        return None, problems
    return validate_request(doc, source="event", **options)


def raise_problems(source: str, problems: list[tuple[str, str]]) -> ValidationError:
    return ValidationError(f"the scan request ({source}) is invalid", problems)


def merge_documents(*docs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Later documents override earlier ones key by key (flags over a file over the env)."""
    merged: dict[str, Any] = {}
    for doc in docs:
        if doc:
            merged.update({k: v for k, v in doc.items() if v is not None})
    return merged
