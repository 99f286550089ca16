"""The scan request: one model from every source, every problem listed by field."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from check.request import (
    REPOSITORY_NAME_MAX,
    AccountSpec,
    Shard,
    parse_request,
    valid_repository_name,
    validate_api_request,
    validate_event_request,
    validate_request,
)
from securityhub.errors import EXIT_USAGE, ValidationError
from securityhub.findings import Severity

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32

PUSH_EVENT = {
    "version": "0",
    "id": "13cde686-328b-6117-af20-0e5566167482",
    "detail-type": "ECR Image Action",
    "source": "aws.ecr",
    "account": "210987654321",
    "time": "2026-11-23T11:59:58Z",
    "region": "eu-west-1",
    "resources": [],
    "detail": {
        "result": "SUCCESS",
        "repository-name": "payments/api",
        "image-digest": DIGEST,
        "action-type": "PUSH",
        "image-tag": "1.4.2",
    },
}


def test_a_full_document_becomes_a_frozen_request() -> None:
    request = parse_request(
        {
            "accounts": ["123456789012", {"account_id": "210987654321", "role": "Scan",
                                          "external_id": "ext-42"}],
            "regions": ["us-east-1", "eu-west-1"],
            "repositories": ["payments/*"],
            "exclude": ["sandbox/*"],
            "tagged_only": True,
            "tags": ["prod-*"],
            "pushed_since": "7d",
            "max_images": 5,
            "filter": "imageSizeInBytes < `500000000`",
            "scan_types": "pkg",
            "scanner": "qscanner",
            "force": True,
            "shard": "2/4",
            "fail_on": "high",
        },
        now=NOW,
    )  # fmt: skip
    assert request.accounts == (
        AccountSpec("123456789012"),
        AccountSpec("210987654321", "arn:aws:iam::210987654321:role/Scan", "ext-42"),
    )
    assert request.selection.pushed_since == NOW - timedelta(days=7)
    assert request.selection.max_images == 5
    assert request.scan_types == ("pkg",)
    assert request.shard == Shard(2, 4)
    assert request.fail_on is Severity.HIGH
    with pytest.raises(AttributeError):
        request.force = False  # type: ignore[misc]
    # as_dict round-trips (with the external id masked).
    again = parse_request(request.as_dict() | {"accounts": ["123456789012"]}, now=NOW)
    assert again.selection == request.selection


def test_every_problem_is_listed_by_field() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_request(
            {
                "accounts": ["12345", {"account_id": "210987654321", "role": "bad role!"}],
                "regions": ["us-east-9x", "moon-1"],
                "repositories": ["Payments/API"],
                "images": ["sha256:abc"],
                "pushed_since": "yesterday",
                "max_images": 0,
                "filter": "imageTags[?",
                "scan_types": ["pkg", "malware"],
                "shard": "5/4",
                "fail_on": "catastrophic",
                "dry-run": True,
            }
        )
    error = caught.value
    assert error.exit_code == EXIT_USAGE
    fields = {where for where, _ in error.problems}
    assert fields >= {
        "accounts[0]", "accounts[1].role", "regions[0]", "regions[1]", "repositories[0]",
        "images[0]", "pushed_since", "max_images", "filter", "scan_types[1]", "shard",
        "fail_on", "dry-run",
    }  # fmt: skip
    text = str(error)
    assert "dry-run: unknown key" in text and "malware" in text


@pytest.mark.parametrize(
    "name, ok",
    [
        ("payments/api", True),
        ("a1", True),
        ("team.one/svc_a/x--y", True),
        ("a", False),  # under 2 characters
        ("Payments", False),  # uppercase
        ("payments//api", False),
        ("payments/api;rm -rf /", False),
        ("paiements/é", False),
        ("-leading", False),
        ("x" * REPOSITORY_NAME_MAX, True),
        ("x" * (REPOSITORY_NAME_MAX + 1), False),
    ],
)
def test_repository_names_follow_ecr_rules(name: str, ok: bool) -> None:
    assert (valid_repository_name(name) is None) is ok


def test_tags_with_metacharacters_and_unicode_flow_through_verbatim() -> None:
    odd = ["v1;rm -rf /", "$(whoami)", "prod-ü-ß", "`id`", "a" * 300, "*'\"|&"]
    request = parse_request({"images": odd[:5], "tags": odd})
    assert request.selection.images == tuple(odd[:5])
    assert request.selection.tags == tuple(odd)
    with pytest.raises(ValidationError) as caught:
        parse_request({"images": ["a" * 301]})
    assert caught.value.problems[0][0] == "images[0]"


def test_defaults_and_scan_types_from_the_environment_default() -> None:
    request = parse_request({}, default_scan_types=("secret",))
    assert request.repositories == ("*",)
    assert request.scan_types == ("secret",)
    assert request.accounts == () and request.shard is None and not request.force
    request, problems = validate_request({}, default_scan_types=("pkg", "virus"))
    assert request is None and problems[0][0] == "SCAN_TYPES"


def test_role_arn_must_match_its_account_and_unknown_scanner() -> None:
    _, problems = validate_request(
        {"accounts": [{"account_id": "210987654321",
                       "role": "arn:aws:iam::111111111111:role/Scan"}],
         "scanner": "nessus"},
        known_scanners=("qscanner", "builtin"),
    )  # fmt: skip
    assert [w for w, _ in problems] == ["accounts[0].role", "scanner"]


def test_push_event_becomes_a_one_image_request() -> None:
    request, problems = validate_event_request(PUSH_EVENT, role="ContainerScanRole")
    assert problems == [] and request is not None
    assert request.source == "event"
    assert request.accounts[0].role_arn == "arn:aws:iam::210987654321:role/ContainerScanRole"
    assert request.regions == ("eu-west-1",)
    assert request.repositories == ("payments/api",)
    assert request.selection.images == (DIGEST,)


def test_other_ecr_events_are_refused_with_reasons() -> None:
    delete = json.loads(json.dumps(PUSH_EVENT))
    delete["detail"]["action-type"] = "DELETE"
    delete["detail"]["result"] = "FAILURE"
    request, problems = validate_event_request(delete)
    assert request is None
    assert {w for w, _ in problems} == {"detail.action-type", "detail.result"}
    request, problems = validate_event_request({"source": "aws.s3"})
    assert request is None and {"source", "detail-type", "detail"} <= {w for w, _ in problems}


def test_api_gateway_bodies_plain_and_base64() -> None:
    body = json.dumps({"repositories": ["payments/*"], "regions": ["us-east-1"]})
    for event in (
        {"body": body},
        {"body": base64.b64encode(body.encode()).decode(), "isBase64Encoded": True},
        {"repositories": ["payments/*"], "regions": ["us-east-1"]},
    ):
        request, problems = validate_api_request(event)
        assert problems == [] and request is not None
        assert request.repositories == ("payments/*",) and request.source == "api"
    request, problems = validate_api_request({"body": "{not json"})
    assert request is None and problems[0][0] == "body"
    request, problems = validate_api_request({"body": "[1, 2]"})
    assert request is None


def test_pushed_since_absolute_and_relative() -> None:
    request = parse_request({"pushed_since": "2026-01-31T00:00:00Z"})
    assert request.selection.pushed_since == datetime(2026, 1, 31, tzinfo=UTC)
    request = parse_request({"pushed_since": "12h"}, now=NOW)
    assert request.selection.pushed_since == NOW - timedelta(hours=12)


def test_a_base64_body_with_non_ascii_text_is_a_field_error() -> None:
    """b64decode raises a plain ValueError for non-ASCII text (found by the hostile-input fuzz)."""
    from check.request import document_from_api

    doc, problems = document_from_api({"body": "\x80", "isBase64Encoded": True})
    assert doc is None and problems[0][0] == "body"
