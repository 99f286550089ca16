"""ECR enumeration against moto: repositories, images, multi-arch indexes, the auth token."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from check.ecr import EcrRegistry, expand_indexes, parse_index, selectable
from check.request import ImageSelection
from check.selection import select_images
from securityhub.errors import AwsError
from securityhub.logs import redact
from tests.check.ecrfixtures import put_image, put_index

REGION = "us-east-1"
ACCOUNT = "123456789012"


@pytest.fixture
def ecr():
    with mock_aws():
        yield boto3.client("ecr", region_name=REGION)


def test_repositories_and_images(ecr) -> None:
    ecr.create_repository(repositoryName="payments/api")
    ecr.create_repository(repositoryName="locked", imageTagMutability="IMMUTABLE")
    digest = put_image(ecr, "payments/api", "api-1", "v1;rm -rf /")
    registry = EcrRegistry(ecr, ACCOUNT, REGION)
    repos = {r.name: r for r in registry.repositories()}
    assert set(repos) == {"payments/api", "locked"}
    assert repos["locked"].immutable and not repos["payments/api"].immutable
    [info] = registry.images("payments/api")
    assert info.digest == digest and info.tags == ("v1;rm -rf /",)
    assert info.pushed_at is not None and isinstance(info.detail["imagePushedAt"], str)
    assert info.resource(ACCOUNT, REGION).reference == (
        f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/payments/api@{digest}"
    )
    with pytest.raises(AwsError, match="RepositoryNotFoundException"):
        registry.images("missing")


def test_multi_arch_index_is_expanded_to_platform_images(ecr) -> None:
    ecr.create_repository(repositoryName="app")
    index, children = put_index(ecr, "app", "multi", "2.0")
    single = put_image(ecr, "app", "single", "1.0")
    registry = EcrRegistry(ecr, ACCOUNT, REGION)
    images = registry.images("app")
    assert len(images) == 5  # index, two platforms, attestation, single
    platforms = registry.platforms("app", images)
    candidates = selectable(images, platforms)
    assert {i.digest for i in candidates} == {index, single}  # children never on their own
    chosen = expand_indexes(images, select_images(candidates, ImageSelection()), platforms)
    by_digest = {i.digest: i for i in chosen}
    assert set(by_digest) == {single, children["amd64"], children["arm64"]}
    arm = by_digest[children["arm64"]]
    assert arm.platform == "linux/arm64/v8" and arm.tags == ("2.0",) and arm.index_digest == index
    # Selecting by the index's tag selects its platforms.
    chosen = expand_indexes(
        images, select_images(candidates, ImageSelection(images=("2.0",))), platforms
    )
    assert {i.digest for i in chosen} == set(children.values())


def test_parse_index_tolerates_garbage() -> None:
    assert parse_index("{not json") == []
    assert parse_index(json.dumps({"manifests": [{"digest": 3}, "x"]})) == []
    refs = parse_index(json.dumps({"manifests": [
        {"digest": "sha256:a", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:b"},
    ]}))  # fmt: skip
    assert [(r.digest, r.platform) for r in refs] == [
        ("sha256:a", "linux/amd64"),
        ("sha256:b", None),
    ]


def test_artifacts_and_archived_images_are_not_selectable() -> None:
    from check.ecr import ImageInfo

    images = [
        ImageInfo("app", "sha256:1", ("1",)),
        ImageInfo("app", "sha256:2", subject_digest="sha256:1",
                  artifact_media_type="application/vnd.dev.cosign.artifact.sig.v1+json"),
        ImageInfo("app", "sha256:3", ("old",), status="ARCHIVED"),
        ImageInfo("app", "sha256:4", artifact_media_type="application/vnd.cncf.helm.config.v1+json"),
    ]  # fmt: skip
    assert [i.digest for i in selectable(images, {})] == ["sha256:1"]


def test_auth_token_becomes_registry_auth_and_is_masked_in_logs(ecr) -> None:
    auth = EcrRegistry(ecr, ACCOUNT, REGION).auth()
    assert auth.username == "AWS" and auth.password
    assert auth.password not in repr(auth)
    assert auth.password not in redact(f"token {auth.password} leaked")


def test_every_page_is_read(ecr) -> None:
    """moto answers in one page; a real registry pages by 1000: pages injected at HTTP level."""
    from botocore.awsrequest import AWSResponse

    seen_tokens: list[str | None] = []

    def pages(params: dict, **_: object) -> object:
        token = json.loads(params["body"]).get("nextToken")
        seen_tokens.append(token)
        number = int(token or 0)
        details = [
            {"repositoryName": "app", "registryId": ACCOUNT,
             "imageDigest": f"sha256:{number * 10 + i:064x}", "imageTags": [f"t{number}-{i}"]}
            for i in range(3)
        ]  # fmt: skip
        body: dict = {"imageDetails": details}
        if number < 2:
            body["nextToken"] = str(number + 1)
        return (AWSResponse("https://ecr", 200, {}, None), body)

    ecr.meta.events.register("before-call.ecr.DescribeImages", pages)
    images = EcrRegistry(ecr, ACCOUNT, REGION).images("app")
    assert seen_tokens == [None, "1", "2"]
    assert len(images) == 9 and len({i.digest for i in images}) == 9
