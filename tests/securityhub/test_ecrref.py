"""The one ECR image reference parser, on image URIs as AWS and the project's data write them."""

from __future__ import annotations

import pytest

from check.commands import _reference_document
from check.inuse import parse_image
from securityhub.asff import ecr_image_of
from securityhub.ecrref import EcrReference, parse_ecr_reference
from securityhub.findings import EcsContainer

# The ECS developer guide's task metadata v4 example (Fargate): the container's Image and
# its ImageID.
CURLTEST = "111122223333.dkr.ecr.us-west-2.amazonaws.com/curltest:latest"
CURLTEST_ID = "sha256:25f3695bedfb454a50f12d127839a68ad3caf91e451c1da073db34c542c4d2cb"
# The EMR on EKS guide's base image (AWS's own registry account, a nested repository).
EMR = "895885662937.dkr.ecr.us-west-2.amazonaws.com/spark/emr-7.9.0:latest"
# tests/data/reports (the stored scanner reports' image), by digest.
PAYMENTS = (
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/payments/api@"
    "sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270"
)


@pytest.mark.parametrize(
    ("uri", "expected", "partition"),
    [
        (CURLTEST, EcrReference("111122223333", "us-west-2", "curltest", "latest"), "aws"),
        (EMR, EcrReference("895885662937", "us-west-2", "spark/emr-7.9.0", "latest"), "aws"),
        (
            PAYMENTS,
            EcrReference("123456789012", "us-east-1", "payments/api", None, PAYMENTS[-71:]),
            "aws",
        ),
        # tag and digest together: what ECS reports for a pinned image
        (
            f"{CURLTEST}@{CURLTEST_ID}",
            EcrReference("111122223333", "us-west-2", "curltest", "latest", CURLTEST_ID),
            "aws",
        ),
        # the FIPS endpoints (AWS General Reference, Amazon ECR endpoints)
        (
            "111122223333.dkr.ecr-fips.us-east-1.amazonaws.com/curltest:latest",
            EcrReference("111122223333", "us-east-1", "curltest", "latest", fips=True),
            "aws",
        ),
        (
            "111122223333.dkr.ecr-fips.us-gov-west-1.amazonaws.com/app/web:v1.2_rc-3",
            EcrReference("111122223333", "us-gov-west-1", "app/web", "v1.2_rc-3", fips=True),
            "aws-us-gov",
        ),
        # the China regions: amazonaws.com.cn
        (
            f"111122223333.dkr.ecr.cn-north-1.amazonaws.com.cn/curltest@{CURLTEST_ID}",
            EcrReference("111122223333", "cn-north-1", "curltest", None, CURLTEST_ID),
            "aws-cn",
        ),
    ],
)
def test_real_image_uris(uri: str, expected: EcrReference, partition: str) -> None:
    ref = parse_ecr_reference(uri)
    assert ref is not None and ref == expected
    assert ref.partition == partition
    assert str(ref) == uri  # nothing lost


@pytest.mark.parametrize(
    "uri",
    [
        "nginx:1.25",  # Docker Hub
        "public.ecr.aws/nginx/nginx:latest",  # ECR Public is not a private registry
        "ghcr.io/owner/app@" + CURLTEST_ID,
        "111122223333.dkr.ecr.cn-north-1.amazonaws.com/curltest:latest",  # China without .cn
        "111122223333.dkr.ecr.us-east-1.amazonaws.com.cn/curltest:latest",  # .cn elsewhere
        "111122223333.dkr.ecr.us-west-2.amazonaws.com/CurlTest:latest",  # upper case
        "111122223333.dkr.ecr.us-west-2.amazonaws.com/a:latest",  # a 1-character repository
        "111122223333.dkr.ecr.us-west-2.amazonaws.com/curltest:-bad",
        "111122223333.dkr.ecr.us-west-2.amazonaws.com/curltest@sha256:abc",
        "11112222333.dkr.ecr.us-west-2.amazonaws.com/curltest:latest",  # 11 digits
        "111122223333.dkr.ecr.us-west-2.amazonaws.com.evil.example/curltest:latest",
        "",
    ],
)
def test_what_is_not_an_ecr_reference(uri: str) -> None:
    assert parse_ecr_reference(uri) is None


def test_the_three_readers_agree() -> None:
    """scan-image's request, the in-use index and runtime findings' image resource."""
    pinned = f"{CURLTEST}@{CURLTEST_ID}"
    assert _reference_document(pinned) == {
        "accounts": ["111122223333"],
        "regions": ["us-west-2"],
        "repositories": ["curltest"],
        "images": [CURLTEST_ID],
    }
    fips = "111122223333.dkr.ecr-fips.us-east-1.amazonaws.com/curltest:latest"
    assert (_reference_document(fips) or {}).get("regions") == ["us-east-1"]
    used = parse_image(pinned, "111122223333", "us-west-2")
    assert (used.repository, used.tag, used.digest) == ("curltest", "latest", CURLTEST_ID)
    china = f"111122223333.dkr.ecr.cn-north-1.amazonaws.com.cn/curltest:latest@{CURLTEST_ID}"
    container = EcsContainer(
        "111122223333", "cn-north-1", "arn:aws-cn:ecs:cn-north-1:111122223333:cluster/c",
        "arn:aws-cn:ecs:cn-north-1:111122223333:task/c/abc", "web", "app", china, CURLTEST_ID,
    )  # fmt: skip
    image = ecr_image_of(container)
    assert image is not None
    assert (image.repository, image.tags, image.partition) == ("curltest", ("latest",), "aws-cn")
    fips_container = EcsContainer(
        "111122223333", "us-east-1", "c", "t", "w", "a", fips, CURLTEST_ID
    )
    assert ecr_image_of(fips_container) is not None  # the FIPS host no longer hides it
