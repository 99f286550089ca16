"""Hostile input, fuzzed with hypothesis: every parser either accepts or names the problem.

Targets: scan requests (documents, API Gateway events and bodies, ECR push events), request
files, TracingPolicies (YAML), QScanner SARIF / ScanResult, Trivy and Grype reports, and
image manifests, indexes and references. Inputs are random JSON/YAML, valid documents with
several random mutations (a value replaced by one of another type, a key deleted, a node
wrapped), and truncated or bit-flipped bytes. The only acceptable failure is a
`ContainerscanError` with a message (and, for a validation error, each problem's location);
anything else (KeyError, TypeError, RecursionError...) is a traceback reaching a user.

tests/check/test_reports.py already replaces each report value in turn with one other value;
these tests combine mutations and go below the JSON layer.
"""

from __future__ import annotations

import base64
import copy
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from check.builtin.image import layers_from_manifest, load_json, manifest_kind, select_platform
from check.builtin.registry import ImageReference
from check.reports.grype import parse_grype
from check.reports.sarif import parse_sarif
from check.reports.scanresult import parse_scan_result
from check.reports.trivy import parse_trivy
from check.request import (
    load_document,
    parse_request,
    validate_api_request,
    validate_event_request,
)
from securityhub.errors import ContainerscanError, ValidationError
from securityhub.findings import EcrImage, ScannerInfo
from sidecar.policy import parse_policy_text

REPO = Path(__file__).resolve().parents[2]
REPORTS = REPO / "tests" / "data" / "reports"
EXAMPLES = REPO / "policies" / "examples"
IMAGE = EcrImage("123456789012", "us-east-1", "payments/api", "sha256:" + "a" * 64)
CASES: Counter[str] = Counter()  # fuzz cases run per target, for the README figures
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that has hurt parsers and shells: metacharacters, Unicode of every width, controls.
_NASTY = st.sampled_from([
    "", " ", "$(id)", "`id`", "; rm -rf /", "' OR 1=1 --", "../../etc/passwd", "\x00", "\u202e",
    "ü", "😀", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\ud7ff", "\n", "%s%n", "{0}", "a" * 300, "NaN", "-1", "1e309",
])  # fmt: skip
_TEXT = _NASTY | st.text(max_size=40)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _TEXT
)
JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=20,
)


def check(target: str, call: Callable[[], Any]) -> Any:
    """Run `call`: it returns, or raises a ContainerscanError that says what was wrong."""
    CASES[target] += 1
    try:
        return call()
    except ContainerscanError as exc:
        assert exc.message.strip(), f"{target}: an error without a message"
        if isinstance(exc, ValidationError):
            assert exc.problems, f"{target}: a validation error listing no problem: {exc}"
            for where, what in exc.problems:
                assert isinstance(where, str) and what.strip(), exc.problems
        return exc


def _paths(value: Any, where: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [where]
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*where, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += _paths(child, (*where, index))
    return out


def mutate(data: st.DataObject, doc: Any, times: int = 3) -> Any:
    """`doc` with up to `times` random mutations: replace, delete, wrap in a list or object."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, times))):
        paths = _paths(doc)[1:]
        if not paths:
            return data.draw(JSON)
        where = data.draw(st.sampled_from(paths))
        parent = doc
        for key in where[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["replace", "delete", "wrap", "wrap-object"]))
        if action == "replace":
            parent[where[-1]] = data.draw(JSON)
        elif action == "delete":
            del parent[where[-1]]
        elif action == "wrap":
            parent[where[-1]] = [parent[where[-1]]]
        else:
            parent[where[-1]] = {"value": parent[where[-1]]}
    return doc


# ------------------------------------------------------------------------ requests

VALID_REQUEST = {
    "accounts": [{"account_id": "123456789012", "role": "ContainerScanRole",
                  "external_id": "ext-1"}, "210987654321"],
    "regions": ["us-east-1", "eu-west-1"],
    "repositories": ["payments/*", "web"],
    "exclude": ["sandbox/*"],
    "images": ["v1.2", "sha256:" + "b" * 64],
    "tags": ["release-*"],
    "tagged_only": True,
    "pushed_since": "7d",
    "max_images": 5,
    "scan_types": ["pkg", "secret"],
    "force": False,
    "fail_on": "high",
    "shard": "1/4",
    "dry_run": False,
}  # fmt: skip
PUSH_EVENT = {
    "version": "0",
    "source": "aws.ecr",
    "detail-type": "ECR Image Action",
    "account": "123456789012",
    "region": "us-east-1",
    "detail": {"action-type": "PUSH", "result": "SUCCESS", "repository-name": "payments/api",
               "image-digest": "sha256:" + "c" * 64, "image-tag": "v1"},
}  # fmt: skip


def test_the_seeds_are_valid() -> None:
    assert parse_request(VALID_REQUEST, source="test").regions == ("us-east-1", "eu-west-1")
    request, problems = validate_event_request(PUSH_EVENT)
    assert request is not None, problems


@FUZZ
@given(st.data())
def test_scan_request_documents(data: st.DataObject) -> None:
    doc = data.draw(st.one_of(JSON, st.just(None)).map(lambda d: d) | st.just(VALID_REQUEST))
    if data.draw(st.booleans()):
        doc = mutate(data, VALID_REQUEST)
    check("scan request", lambda: parse_request(doc, source="fuzz"))


@FUZZ
@given(st.data())
def test_request_files_and_environment_text(data: st.DataObject) -> None:
    text = data.draw(
        st.text(max_size=200)
        | JSON.map(json.dumps)
        | st.builds(
            lambda d: json.dumps(d)[: data.draw(st.integers(0, 400))], st.just(VALID_REQUEST)
        )
    )
    result = check("request file", lambda: load_document(text, "CONTAINERSCAN_REQUEST"))
    if isinstance(result, dict):
        check("scan request", lambda: parse_request(result, source="file"))


def _validated(call: Callable[[], tuple[Any, list[tuple[str, str]]]], target: str) -> None:
    def run() -> None:
        request, problems = call()
        assert (request is None) == bool(problems), (request, problems)
        for where, what in problems:
            assert isinstance(where, str) and isinstance(what, str) and what.strip()

    check(target, run)


@FUZZ
@given(st.data())
def test_api_gateway_events_and_bodies(data: st.DataObject) -> None:
    body_doc = mutate(data, VALID_REQUEST) if data.draw(st.booleans()) else data.draw(JSON)
    text = json.dumps(body_doc)
    encoded = data.draw(st.booleans())
    body: Any = base64.b64encode(text.encode()).decode() if encoded else text
    if data.draw(st.integers(0, 4)) == 0:
        body = data.draw(JSON)  # not even a string
    elif data.draw(st.integers(0, 4)) == 0:
        body = body[: data.draw(st.integers(0, len(body)))]  # truncated
    event = {"body": body, "isBase64Encoded": encoded, "headers": data.draw(JSON)}
    _validated(lambda: validate_api_request(event), "API Gateway event")


@FUZZ
@given(st.data())
def test_ecr_push_events(data: st.DataObject) -> None:
    event = mutate(data, PUSH_EVENT) if data.draw(st.integers(0, 5)) else data.draw(JSON)
    _validated(lambda: validate_event_request(event, role="R"), "ECR event")


@FUZZ
@given(tag=_TEXT, name=st.text(max_size=300) | _NASTY)
def test_hostile_tags_and_names_are_accepted_verbatim_or_named(tag: str, name: str) -> None:
    doc = {"repositories": [name], "images": [tag]}
    result = check("repository/tag", lambda: parse_request(doc, source="fuzz"))
    if not isinstance(result, ContainerscanError):
        assert result.repositories == (name,)  # verbatim: never quoted, trimmed or escaped


# ------------------------------------------------------------------ TracingPolicies

POLICIES = [yaml.safe_load(p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))]


@FUZZ
@given(st.data())
def test_tracing_policies(data: st.DataObject) -> None:
    choice = data.draw(st.integers(0, 3))
    if choice == 0:
        text = data.draw(st.text(max_size=300))
    elif choice == 1:
        text = yaml.safe_dump(data.draw(JSON), allow_unicode=True)
    else:
        doc = mutate(data, data.draw(st.sampled_from(POLICIES)), times=4)
        text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
        if choice == 3:
            text = text[: data.draw(st.integers(0, len(text)))]
    check("TracingPolicy", lambda: parse_policy_text(text, "fuzz.yaml"))


def test_an_alias_bomb_policy_is_refused_quickly() -> None:
    """A YAML "billion laughs": nine levels of aliases, 10**9 strings once expanded."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        refs = ",".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    text = "\n".join(lines) + "\napiVersion: *a9\n"
    import time

    started = time.monotonic()
    result = check("TracingPolicy", lambda: parse_policy_text(text, "bomb.yaml"))
    assert isinstance(result, ContainerscanError)
    assert "alias" in str(result)
    assert time.monotonic() - started < 5


def test_a_self_referencing_policy_is_refused() -> None:
    result = check("TracingPolicy", lambda: parse_policy_text("a: &a [1, *a]\n", "loop.yaml"))
    assert isinstance(result, ContainerscanError) and "loop.yaml:1" in str(result)


# ----------------------------------------------------------------- scanner reports

SCANNER = ScannerInfo("qscanner", "4.8.0-2")
PARSERS: dict[str, Callable[[bytes | str], Any]] = {
    "qscanner-api-Report.sarif.json": lambda d: parse_sarif(
        d, "report.sarif.json", image=IMAGE, scanner=SCANNER
    ),
    "qscanner-api-ScanResult.json": lambda d: parse_scan_result(
        d, "ScanResult.json", image=IMAGE, scanner=SCANNER
    ),
    "trivy-api.json": lambda d: parse_trivy(
        d, "trivy.json", image=IMAGE, scanner=ScannerInfo("trivy", "0.50.1")
    ),
    "grype-api.json": lambda d: parse_grype(
        d, "grype.json", image=IMAGE, scanner=ScannerInfo("grype", "0.74.7")
    ),
}
DOCS = {name: json.loads((REPORTS / name).read_text()) for name in PARSERS}


@pytest.mark.parametrize("name", list(PARSERS))
def test_reports_with_combined_mutations(name: str) -> None:
    @FUZZ
    @given(st.data())
    def fuzz(data: st.DataObject) -> None:
        doc = mutate(data, DOCS[name], times=5)
        check(f"report {name}", lambda: PARSERS[name](json.dumps(doc)))

    fuzz()


@pytest.mark.parametrize("name", list(PARSERS))
def test_reports_truncated_or_bit_flipped(name: str) -> None:
    raw = (REPORTS / name).read_bytes()

    @FUZZ
    @given(
        cut=st.integers(0, len(raw)), flips=st.lists(st.integers(0, len(raw) * 8 - 1), max_size=4)
    )
    def fuzz(cut: int, flips: list[int]) -> None:
        data = bytearray(raw)
        for bit in flips:
            data[bit // 8] ^= 1 << (bit % 8)
        check(f"report {name}", lambda: PARSERS[name](bytes(data[: max(cut, 1)])))

    fuzz()


@FUZZ
@given(st.data())
def test_reports_of_random_json(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(list(PARSERS)))
    doc = data.draw(JSON)
    check(f"report {name}", lambda: PARSERS[name](json.dumps(doc)))


# ---------------------------------------------------------------- image manifests

MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 7,
               "digest": "sha256:" + "d" * 64},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 32,
                "digest": "sha256:" + "e" * 64}],
}  # fmt: skip
CONFIG = {"architecture": "amd64", "os": "linux",
          "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "f" * 64]}}  # fmt: skip
INDEX = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {"mediaType": MANIFEST["mediaType"], "size": 500, "digest": "sha256:" + "1" * 64,
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": MANIFEST["mediaType"], "size": 500, "digest": "sha256:" + "2" * 64,
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
    ],
}  # fmt: skip


def test_manifest_seeds_are_valid() -> None:
    assert manifest_kind(MANIFEST, None) == "manifest"
    assert len(layers_from_manifest(MANIFEST, CONFIG, "seed")) == 1
    assert select_platform(INDEX, "linux/arm64/v8", "seed")["digest"].endswith("2" * 64)


@FUZZ
@given(st.data())
def test_manifests_indexes_and_configs(data: st.DataObject) -> None:
    manifest = mutate(data, MANIFEST, times=3) if data.draw(st.booleans()) else MANIFEST
    config = mutate(data, CONFIG, times=2) if data.draw(st.booleans()) else CONFIG
    index = mutate(data, INDEX, times=3)
    raw = json.dumps(data.draw(st.sampled_from([manifest, index, data.draw(JSON)]))).encode()
    raw = raw[: data.draw(st.integers(0, len(raw)))] if data.draw(st.booleans()) else raw

    def parse() -> None:
        doc = load_json(raw, "manifest", "fuzz")
        kind = manifest_kind(doc, None)
        if kind == "index":
            select_platform(doc, "linux/amd64", "fuzz")
        else:
            layers_from_manifest(doc, config if isinstance(config, dict) else {}, "fuzz")

    check("manifest", parse)
    if isinstance(manifest, dict):
        check("manifest", lambda: layers_from_manifest(manifest, config, "fuzz"))
    if isinstance(index, dict):
        platform = data.draw(_TEXT)
        check("index", lambda: select_platform(index, platform, "fuzz"))


@FUZZ
@given(st.text(max_size=300) | _NASTY)
def test_image_references(text: str) -> None:
    check("image reference", lambda: ImageReference.parse(text))
