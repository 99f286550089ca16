"""Security Hub semantics for moto, for the tests and the local quick start.

moto 5.2.1's securityhub stores findings but ignores GetFindings Filters, has no RecordState
default and no UpdatedAt rule. `install()` replaces two methods of moto's
`SecurityHubBackend` (the class, so it applies to in-process `mock_aws` *and* to a
`moto.server.ThreadedMotoServer` running in this process) with the behaviour documented in
shared/reference/securityhub.md:

- BatchImportFindings: more than 100 findings -> InvalidInputException (whole request);
  a finding whose AwsAccountId is not the caller's, or whose ProductArn is not the caller's
  default product in this region -> AccessDeniedException (whole request); required fields,
  field limits and the 240 KB finding size -> `FailedFindings` entries with `InvalidInput`;
  an import whose UpdatedAt is not later than the stored one is silently ignored (counted as
  a success, as Security Hub does not report it); RecordState defaults to ACTIVE; Workflow
  NOTIFIED/RESOLVED becomes NEW on ARCHIVED -> ACTIVE; Workflow, Note, UserDefinedFields and
  VerificationState of an existing finding are kept (imports cannot change them).
- GetFindings: StringFilters EQUALS / PREFIX (OR-ed) and NOT_EQUALS / PREFIX_NOT_EQUALS /
  CONTAINS / NOT_CONTAINS on Id, GeneratorId, RecordState, AwsAccountId, Region,
  ProductArn, ResourceId, ResourceType, SeverityLabel, WorkflowStatus, Title; at most 10
  attributes and 20 values each; MaxResults 1-100 and NextToken pagination.
- Fault injection (`Faults`): a fraction of calls answered with TooManyRequestsException,
  a fraction of findings returned in FailedFindings with a transient code, and chosen Ids
  failed with `InvalidInput`. In server mode set them with `set_faults()` (the server runs in
  this process) or with `CONTAINERSCAN_EMULATOR_FAULTS="throttle=0.3,failed=0.05,seed=7"`,
  read once by `install()`.

DynamoDB: moto 5.2.1's TransactWriteItems deep-copies every table it touches (for its
rollback) on each call: O(table) per transaction, seconds per call once a table holds a few
thousand items, and a crash when another request thread writes meanwhile ("dictionary
changed size during iteration"). `install()` makes moto's DynamoDB writes (PutItem,
UpdateItem, DeleteItem and the BatchWriteItem built on them) take one lock, and replaces
TransactWriteItems with one that, under that lock, checks every action's condition first
and applies the actions only when all hold (so no rollback is needed): all or nothing
against concurrent writers, with the same CancellationReasons, as in DynamoDB.

moto is imported lazily: it is only in the `local` and `test` extras.
"""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FAULTS_ENV = "CONTAINERSCAN_EMULATOR_FAULTS"
# Limits the emulator enforces, from botocore's securityhub service-2.json.
MAX_IMPORT_FINDINGS = 100
MAX_FINDING_BYTES = 240 * 1024
MAX_FILTER_ATTRIBUTES = 10
MAX_FILTER_VALUES = 20
MAX_PAGE = 100
REQUIRED_FIELDS = (
    "SchemaVersion",
    "Id",
    "ProductArn",
    "GeneratorId",
    "AwsAccountId",
    "CreatedAt",
    "UpdatedAt",
    "Title",
    "Description",
    "Resources",
)
FIELD_LIMITS = {"Title": 256, "Description": 1024, "Id": 512, "GeneratorId": 512}
RECOMMENDATION_LIMIT = 512
PRODUCT_FIELD_VALUE_LIMIT = 2048
# Fields only the customer changes (BatchUpdateFindings); imports cannot overwrite them.
CUSTOMER_FIELDS = ("Workflow", "WorkflowState", "Note", "UserDefinedFields", "VerificationState")


@dataclass
class Faults:
    """What the emulator does wrong on purpose; counters say what it did."""

    throttle: float = 0.0  # fraction of calls answered with TooManyRequestsException
    failed: float = 0.0  # fraction of findings returned in FailedFindings
    failed_code: str = "InternalFailure"
    invalid_ids: frozenset[str] = frozenset()  # always failed with InvalidInput
    seed: int = 0
    operations: frozenset[str] = frozenset({"BatchImportFindings", "GetFindings"})
    calls: dict[str, int] = field(default_factory=dict)
    throttled: int = 0
    failed_findings: int = 0
    _random: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self._random.seed(self.seed)

    def roll(self, fraction: float) -> bool:
        return fraction > 0 and self._random.random() < fraction

    @classmethod
    def parse(cls, text: str) -> Faults:
        """`throttle=0.3,failed=0.05,code=InternalFailure,seed=7` (the env var's format)."""
        values: dict[str, Any] = {}
        for item in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = item.partition("=")
            if key == "throttle":
                values["throttle"] = float(value)
            elif key == "failed":
                values["failed"] = float(value)
            elif key == "code":
                values["failed_code"] = value
            elif key == "seed":
                values["seed"] = int(value)
            else:
                raise ValueError(
                    f"{FAULTS_ENV}: unknown key {key!r} (use throttle, failed, code, seed)"
                )
        return cls(**values)


_lock = threading.RLock()
_faults = Faults()
_originals: dict[str, Any] = {}


def set_faults(faults: Faults | None = None) -> Faults:
    """Replace the injected faults (None: no faults); returns the object now in force."""
    global _faults
    with _lock:
        _faults = faults if faults is not None else Faults()
        return _faults


def faults() -> Faults:
    return _faults


def _error(code: str, message: str) -> Exception:
    from moto.securityhub.exceptions import SecurityHubClientError

    return SecurityHubClientError(code, message)


def _maybe_throttle(operation: str) -> None:
    with _lock:
        state = _faults
        state.calls[operation] = state.calls.get(operation, 0) + 1
        if operation in state.operations and state.roll(state.throttle):
            state.throttled += 1
            raise _error("TooManyRequestsException", "Too Many Requests")


# ------------------------------------------------------------------------------ imports


ASFF_ERROR = "Finding does not adhere to Amazon Finding Format. "


def _too_long(path: str, limit: int) -> str:
    return f"{ASFF_ERROR}data.{path} should NOT be longer than {limit} characters."


def _invalid(finding: Mapping[str, Any]) -> str | None:
    """The InvalidInput message Security Hub would give, or None."""
    for name in REQUIRED_FIELDS:
        if name not in finding or finding[name] in (None, "", []):
            return f"{ASFF_ERROR}data should have required property '{name}'"
    for name, limit in FIELD_LIMITS.items():
        if len(str(finding.get(name, ""))) > limit:
            return _too_long(name, limit)
    text = finding.get("Remediation", {}).get("Recommendation", {}).get("Text")
    if text is not None and (not text or len(text) > RECOMMENDATION_LIMIT):
        return _too_long("Remediation.Recommendation.Text", RECOMMENDATION_LIMIT)
    for key, value in (finding.get("ProductFields") or {}).items():
        if len(str(value)) > PRODUCT_FIELD_VALUE_LIMIT:
            return _too_long(f"ProductFields.{key}", PRODUCT_FIELD_VALUE_LIMIT)
    if not isinstance(finding["Resources"], list) or not 1 <= len(finding["Resources"]) <= 32:
        return f"{ASFF_ERROR}data.Resources should have 1 to 32 items."
    size = len(json.dumps(finding, separators=(",", ":")).encode("utf-8"))
    if size > MAX_FINDING_BYTES:
        return f"Finding is larger than 240 Kb ({size} bytes)"
    return None


def _index(backend: Any) -> dict[str, Any]:
    """Id -> moto Finding, kept beside moto's list (its own lookup is a linear scan)."""
    index = getattr(backend, "_containerscan_index", None)
    if index is None or len(index) != len(backend.findings):
        index = {f.id: f for f in backend.findings}
        backend._containerscan_index = index
    return index


def batch_import_findings(
    self: Any, findings: list[dict[str, Any]]
) -> tuple[int, int, list[dict[str, Any]]]:
    """SecurityHubBackend.batch_import_findings with Security Hub's semantics."""
    from moto.securityhub.models import Finding

    _maybe_throttle("BatchImportFindings")
    if not 1 <= len(findings) <= MAX_IMPORT_FINDINGS:
        raise _error(
            "InvalidInputException",
            f"Invalid parameter 'Findings'. Size '{len(findings)}' is greater than maximum "
            f"value: {MAX_IMPORT_FINDINGS}"
            if findings
            else "Invalid parameter 'Findings'. Size '0' is less than minimum value: 1",
        )
    account_id = self.account_id
    default_arn = (
        f"arn:aws:securityhub:{self.region_name}:{account_id}:product/{account_id}/default"
    )
    for finding in findings:
        account = finding.get("AwsAccountId")
        arn = finding.get("ProductArn")
        if account != self.account_id or arn != default_arn:
            raise _error(
                "AccessDeniedException",
                f"User: arn:aws:iam::{self.account_id}:root is not authorized to perform: "
                f"securityhub:BatchImportFindings on resource: {arn}",
            )
    index = _index(self)
    self._containerscan_version = getattr(self, "_containerscan_version", 0) + 1
    failed: list[dict[str, Any]] = []
    success = 0
    with _lock:
        state = _faults
        for data in findings:
            finding_id = str(data.get("Id", ""))
            message = _invalid(data)
            code = "InvalidInput"
            if message is None and finding_id in state.invalid_ids:
                message = f"{ASFF_ERROR}data.Title injected fault."
            if message is None and state.roll(state.failed):
                code, message = state.failed_code, "injected transient failure"
            if message is not None:
                state.failed_findings += 1
                failed.append({"Id": finding_id, "ErrorCode": code, "ErrorMessage": message})
                continue
            success += 1
            stored = index.get(finding_id)
            incoming = json.loads(json.dumps(data))
            incoming.setdefault("RecordState", "ACTIVE")
            incoming.setdefault("Region", self.region_name)
            incoming.setdefault("ProductName", "Default")
            incoming.setdefault("CompanyName", "Personal")
            if stored is None:
                incoming["Workflow"] = {"Status": "NEW"}
                incoming["WorkflowState"] = "NEW"
                for name in ("Note", "UserDefinedFields"):
                    incoming.pop(name, None)
                record = Finding(finding_id, incoming)
                self.findings.append(record)
                index[finding_id] = record
                continue
            if _ts(incoming["UpdatedAt"]) <= _ts(stored.data.get("UpdatedAt", "")):
                continue  # older or equal UpdatedAt: silently ignored
            for name in CUSTOMER_FIELDS:
                if name in stored.data:
                    incoming[name] = stored.data[name]
                else:
                    incoming.pop(name, None)
            reactivated = (
                stored.data.get("RecordState") == "ARCHIVED" and incoming["RecordState"] == "ACTIVE"
            )
            workflow = incoming.get("Workflow") or {"Status": "NEW"}
            if reactivated and workflow.get("Status") in ("NOTIFIED", "RESOLVED"):
                workflow = {**workflow, "Status": "NEW"}
                incoming["WorkflowState"] = "NEW"
            incoming["Workflow"] = workflow
            stored.data = incoming
    return len(failed), success, failed


def _ts(text: str) -> float:
    from datetime import datetime

    if not text:
        return float("-inf")
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------------------------ queries


def _values(data: Mapping[str, Any], key: str) -> list[str]:
    if key == "ResourceId":
        return [str(r.get("Id", "")) for r in data.get("Resources", [])]
    if key == "ResourceType":
        return [str(r.get("Type", "")) for r in data.get("Resources", [])]
    if key == "SeverityLabel":
        severity = data.get("Severity") or data.get("FindingProviderFields", {}).get("Severity", {})
        return [str(severity.get("Label", ""))]
    if key == "WorkflowStatus":
        return [str((data.get("Workflow") or {}).get("Status", ""))]
    if key == "Type":
        return [str(t) for t in data.get("Types", [])]
    value = data.get(key)
    return [] if value is None else [str(value)]


POSITIVE = ("EQUALS", "PREFIX", "CONTAINS")


def _test(comparison: str, wanted: str, value: str) -> bool:
    if comparison in ("EQUALS", "NOT_EQUALS"):
        return value == wanted
    if comparison in ("PREFIX", "PREFIX_NOT_EQUALS"):
        return value.startswith(wanted)
    if comparison in ("CONTAINS", "NOT_CONTAINS"):
        return wanted in value
    raise _error("InvalidInputException", f"Unsupported comparison {comparison!r}")


def matches(data: Mapping[str, Any], filters: Mapping[str, list[Mapping[str, str]]]) -> bool:
    """Security Hub's filter semantics: keys AND-ed; EQUALS/PREFIX/CONTAINS OR-ed; NOT_* AND-ed."""
    for key, conditions in filters.items():
        values = _values(data, key)
        positive = [c for c in conditions if c.get("Comparison", "EQUALS") in POSITIVE]
        negative = [c for c in conditions if c.get("Comparison", "EQUALS") not in POSITIVE]
        if positive and not any(
            _test(c.get("Comparison", "EQUALS"), str(c["Value"]), v)
            for c in positive
            for v in values
        ):
            return False
        for c in negative:
            if any(_test(c["Comparison"], str(c["Value"]), v) for v in values):
                return False
    return True


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
    except (ValueError, KeyError, TypeError) as exc:
        raise _error("InvalidInputException", "The NextToken is not valid") from exc


def get_findings(
    self: Any,
    filters: dict[str, Any] | None = None,
    sort_criteria: list[dict[str, str]] | None = None,
    max_results: int | None = None,
    next_token: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """SecurityHubBackend.get_findings with filters and offset-token pagination."""
    _maybe_throttle("GetFindings")
    filters = filters or {}
    if len(filters) > MAX_FILTER_ATTRIBUTES or any(
        len(v) > MAX_FILTER_VALUES for v in filters.values()
    ):
        raise _error(
            "InvalidInputException",
            f"Filters may use at most {MAX_FILTER_ATTRIBUTES} attributes with "
            f"{MAX_FILTER_VALUES} values each",
        )
    limit = MAX_PAGE if max_results is None else int(max_results)
    if not 1 <= limit <= MAX_PAGE:
        raise _error("InvalidInputException", "MaxResults must be a number between 1 and 100")
    # Paging through N findings would filter all of them on every page (quadratic); the
    # selection is cached per (query, store version) so a paginated read stays linear.
    key = json.dumps([filters, sort_criteria], sort_keys=True, default=str)
    version = getattr(self, "_containerscan_version", 0)
    cached = getattr(self, "_containerscan_query", None)
    if cached is not None and cached[0] == (key, version, len(self.findings)):
        selected = cached[1]
    else:
        selected = [f.data for f in self.findings if matches(f.data, filters)]
        for criterion in reversed(sort_criteria or []):
            name = criterion.get("Field", "")

            def by_field(doc: dict[str, Any], name: str = name) -> str:
                return str(doc.get(name, ""))

            selected.sort(key=by_field, reverse=criterion.get("SortOrder") == "desc")
        self._containerscan_query = ((key, version, len(self.findings)), selected)
    start = _offset(next_token)
    page = selected[start : start + limit]
    more = start + limit < len(selected)
    return [json.loads(json.dumps(d)) for d in page], _token(start + limit) if more else None


# ----------------------------------------------------------------------- installation


def install() -> None:
    """Patch moto's SecurityHubBackend class; idempotent. Reads CONTAINERSCAN_EMULATOR_FAULTS."""
    import warnings

    from moto.securityhub.models import SecurityHubBackend

    # TooManyRequestsException is what Security Hub really returns, but it is not an error
    # shape of the API model, so moto's serializer warns about it on every injected throttle.
    warnings.filterwarnings(
        "ignore", message=r".*code TooManyRequestsException does not match an error shape"
    )
    with _lock:
        if not _originals:
            _serialize_dynamodb_writes()
            _originals["get_findings"] = SecurityHubBackend.__dict__["get_findings"]
            _originals["batch_import_findings"] = SecurityHubBackend.__dict__[
                "batch_import_findings"
            ]
            setattr(SecurityHubBackend, "get_findings", get_findings)  # noqa: B010
            setattr(SecurityHubBackend, "batch_import_findings", batch_import_findings)  # noqa: B010
        spec = os.environ.get(FAULTS_ENV)
        if spec:
            set_faults(Faults.parse(spec))


# moto's DynamoDBBackend methods that write (re-entrant lock: transactions call them).
DYNAMODB_WRITES = ("put_item", "update_item", "delete_item")
# TransactWriteItems: at most 100 actions (DynamoDB API reference), as moto checks.
MAX_TRANSACT_ITEMS = 100
_dynamodb_lock = threading.RLock()
_dynamodb_originals: dict[str, Any] = {}


def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    """moto's TransactWriteItems without its table copies: conditions first, then writes."""
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > MAX_TRANSACT_ITEMS:
        raise TooManyTransactionsException()
    with _dynamodb_lock:
        actions: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        errors: list[tuple[Any, Any, Any]] = []
        targets: set[tuple[str, str]] = set()
        for entry in transact_items:
            if len(entry) > 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(entry.items()))
            table = self.get_table(op["TableName"])
            if op_type == "Put":
                key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = op["Item"][table.range_key_attr]
            else:
                key = op["Key"]
            target = (op["TableName"], str(dict(sorted(key.items()))))
            if target in targets:
                raise MultipleTransactionsException()
            targets.add(target)
            actions.append((op_type, op, key))
            condition = op.get("ConditionExpression")
            current = self.get_item(op["TableName"], key)
            if condition is not None and not get_filter_expression(
                condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            ).expr(current):
                old = None
                if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                    old = current.to_json()["Attributes"]
                errors.append(("ConditionalCheckFailed", "The conditional request failed", old))
            else:
                errors.append((None, None, None))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)
        for op_type, op, key in actions:  # every condition holds: apply them all
            if op_type == "Put":
                self.put_item(op["TableName"], op["Item"])
            elif op_type == "Delete":
                self.delete_item(op["TableName"], key)
            elif op_type == "Update":
                self.update_item(
                    op["TableName"],
                    key,
                    update_expression=op["UpdateExpression"],
                    expression_attribute_names=op.get("ExpressionAttributeNames"),
                    expression_attribute_values=op.get("ExpressionAttributeValues"),
                )


def _serialize_dynamodb_writes() -> None:
    from moto.dynamodb.models import DynamoDBBackend

    for name in DYNAMODB_WRITES:
        original = DynamoDBBackend.__dict__[name]
        _dynamodb_originals[name] = original

        def locked(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with _dynamodb_lock:
                return _original(self, *args, **kwargs)

        setattr(DynamoDBBackend, name, locked)
    _dynamodb_originals["transact_write_items"] = DynamoDBBackend.__dict__["transact_write_items"]
    setattr(DynamoDBBackend, "transact_write_items", transact_write_items)  # noqa: B010


def uninstall() -> None:
    """Restore moto's own methods."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.securityhub.models import SecurityHubBackend

    with _lock:
        for name, original in _originals.items():
            setattr(SecurityHubBackend, name, original)
        _originals.clear()
        for name, original in _dynamodb_originals.items():
            setattr(DynamoDBBackend, name, original)
        _dynamodb_originals.clear()


def installed() -> bool:
    return bool(_originals)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalServer:
    """moto's ThreadedMotoServer on loopback with the emulator installed.

    `with LocalServer() as endpoint:` gives `http://127.0.0.1:<port>`; point
    AWS_ENDPOINT_URL at it. The server runs in this process, so `set_faults()` controls it.
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        import logging

        from moto.server import ThreadedMotoServer

        install()
        # werkzeug logs every request at INFO on stderr; the quick start's output is ours.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
