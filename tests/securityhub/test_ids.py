"""Finding Ids: deterministic, collision-free, at most 512 characters, under the prefix."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from securityhub import ids
from securityhub.findings import EcrImage, EcsContainer, RuntimeFinding, ScannerInfo, Severity
from tests.securityhub.conftest import ACCOUNT, DIGEST_A, REGION, image, secret, vuln

SCANNER = ScannerInfo("containerscan-sidecar", "0.1")


def runtime(task_arn: str, rule: str = "shell-spawned", subject: str = "/bin/sh") -> RuntimeFinding:
    container = EcsContainer(
        ACCOUNT, REGION, "arn:aws:ecs:us-east-1:1:cluster/c", task_arn, "web", "app"
    )
    return RuntimeFinding(container, rule, "process", Severity.HIGH, "alert", subject, SCANNER)


def test_image_id_shape_and_determinism() -> None:
    img = image(DIGEST_A, "team/app")
    fid = ids.finding_id(vuln(img, "CVE-2024-0001"))
    assert fid == (
        f"containerscan/ecr/{ACCOUNT}/{REGION}/team%2Fapp@sha256:{'a' * 64}/vuln/CVE-2024-0001"
    )
    assert ids.finding_id(vuln(img, "CVE-2024-0001")) == fid
    assert ids.finding_id(vuln(img, "CVE-2024-0001"), "acme/cs/").startswith("acme/cs/ecr/")


def test_secret_and_vulnerability_of_one_image_differ() -> None:
    img = image()
    assert ids.finding_id(secret(img, 3)) != ids.finding_id(secret(img, 4))
    assert ids.finding_id(secret(img)) != ids.finding_id(vuln(img))


def test_runtime_id_ignores_the_task() -> None:
    first = runtime("arn:aws:ecs:us-east-1:1:task/c/111")
    second = runtime("arn:aws:ecs:us-east-1:1:task/c/222")
    assert ids.finding_id(first) == ids.finding_id(second)
    assert ids.finding_id(first).startswith("containerscan/ecs/")
    assert ids.finding_id(runtime("t", subject="/bin/bash")) != ids.finding_id(first)


def test_slash_in_repository_cannot_collide() -> None:
    # repository "a/b" + vuln "c"  vs  repository "a" + ... : components are encoded.
    one = ids.finding_id(vuln(image(DIGEST_A, "a/b"), "x"))
    two = ids.finding_id(vuln(image(DIGEST_A, "a"), "b/x"))
    assert one != two


def test_long_ids_are_bounded_and_distinct() -> None:
    img = image(DIGEST_A, "r" * 250)
    long_a = ids.finding_id(vuln(img, "V" * 400 + "a"))
    long_b = ids.finding_id(vuln(img, "V" * 400 + "b"))
    assert len(long_a) <= ids.MAX_ID_LENGTH and len(long_b) <= ids.MAX_ID_LENGTH
    assert long_a != long_b
    assert ids.HASH_MARK in long_a
    assert long_a.startswith("containerscan/ecr/")


def test_generator_id_is_delimiter_terminated() -> None:
    assert ids.generator_id("vulnerability") == "containerscan/vulnerability/"


@pytest.mark.parametrize("prefix", ["", "containerscan", "x" * 200 + "/"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError):
        ids.validate_prefix(prefix)


def test_scopes_nest() -> None:
    img = image(DIGEST_A, "team/app")
    assert ids.image_scope(img).startswith(ids.repository_scope(ACCOUNT, REGION, "team/app"))
    assert not ids.image_scope(image(DIGEST_A, "team/app2")).startswith(
        ids.repository_scope(ACCOUNT, REGION, "team/app")
    )


text = st.text(min_size=1, max_size=40)
long_text = st.text(min_size=1, max_size=300)


@settings(max_examples=300, deadline=None)
@given(
    a=st.tuples(text, text, long_text, long_text),
    b=st.tuples(text, text, long_text, long_text),
)
def test_ids_are_injective(a: tuple[str, str, str, str], b: tuple[str, str, str, str]) -> None:
    """Different (region, repository, digest, vulnerability) never give the same Id."""

    def make(parts: tuple[str, str, str, str]) -> str:
        region, repo, digest, vid = parts
        return ids.finding_id(vuln(EcrImage(ACCOUNT, region, repo, digest), vid))

    fa, fb = make(a), make(b)
    assert len(fa) <= ids.MAX_ID_LENGTH
    assert (fa == fb) == (a == b)


@settings(max_examples=200, deadline=None)
@given(repo=text, digest=text, vid=text)
def test_short_ids_decode_back(repo: str, digest: str, vid: str) -> None:
    fid = ids.finding_id(vuln(EcrImage(ACCOUNT, REGION, repo, digest), vid))
    if ids.HASH_MARK in fid:
        return
    body = fid.removeprefix("containerscan/ecr/")
    account, region, rest, kind, vid_enc = body.split("/")
    repo_enc, digest_enc = rest.split("@")
    assert (unquote(account), unquote(region)) == (ACCOUNT, REGION)
    assert (unquote(repo_enc), unquote(digest_enc), kind, unquote(vid_enc)) == (
        repo,
        digest,
        "vuln",
        vid,
    )
