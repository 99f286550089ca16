"""Repository filters, shards and image selection: pure functions."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from check.ecr import ImageInfo
from check.request import ImageSelection, Shard
from check.selection import repository_matches, select_images, select_repositories, shard_of

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def image(n: int, tags: tuple[str, ...] = (), size: int = 1000, days: int = 0) -> ImageInfo:
    pushed = T0 + timedelta(days=days)
    return ImageInfo(
        repository="app",
        digest=f"sha256:{n:064x}",
        tags=tags,
        pushed_at=pushed,
        size=size,
        detail={"imageDigest": f"sha256:{n:064x}", "imageTags": list(tags),
                "imageSizeInBytes": size, "imagePushedAt": pushed.isoformat()},
    )  # fmt: skip


def test_globs_include_then_exclude() -> None:
    assert repository_matches("payments/api/v2", ["payments/*"], [])
    assert not repository_matches("payments/api", ["payments/*"], ["payments/a*"])
    assert not repository_matches("web", ["payments/*"], [])
    names = ["payments/api", "payments/worker", "sandbox/tmp", "web"]
    assert select_repositories(names, ["*"], ["sandbox/*"], account_id="1", region="r") == [
        "payments/api", "payments/worker", "web",
    ]  # fmt: skip


@settings(max_examples=50, deadline=None)
@given(names=st.sets(st.from_regex(r"[a-z0-9]{2,12}(/[a-z0-9]{2,8})?", fullmatch=True),
                     min_size=1, max_size=40),
       count=st.integers(1, 7))  # fmt: skip
def test_shards_partition_the_repositories(names: set[str], count: int) -> None:
    parts = [
        select_repositories(names, ["*"], [], account_id="123456789012", region="us-east-1",
                            shard=Shard(i, count))
        for i in range(1, count + 1)
    ]  # fmt: skip
    merged = Counter(n for part in parts for n in part)
    assert set(merged) == names and set(merged.values()) == {1}


def test_shards_are_stable_and_depend_on_account_and_region() -> None:
    # A fixed value: the split must not change between Python processes or versions.
    assert shard_of("123456789012", "us-east-1", "payments/api", 4) == shard_of(
        "123456789012", "us-east-1", "payments/api", 4
    )
    spread = Counter(shard_of("123456789012", "us-east-1", f"repo-{i}", 4) for i in range(400))
    assert set(spread) == {1, 2, 3, 4} and min(spread.values()) > 60


def test_newest_n_after_the_other_filters() -> None:
    images = [image(1, ("prod-1",), days=1), image(2, ("dev",), days=2),
              image(3, ("prod-3",), days=3), image(4, days=4), image(5, ("prod-5",), days=5)]  # fmt: skip
    chosen = select_images(images, ImageSelection(tags=("prod-*",), max_images=2))
    assert [i.digest[-1] for i in chosen] == ["5", "3"]
    chosen = select_images(images, ImageSelection(tagged_only=True))
    assert len(chosen) == 4
    chosen = select_images(images, ImageSelection(pushed_since=T0 + timedelta(days=3)))
    assert [i.digest[-1] for i in chosen] == ["5", "4", "3"]


def test_jmespath_over_image_details_and_explicit_images() -> None:
    images = [image(1, ("a",), size=10), image(2, ("b",), size=900_000_000), image(3, ("c",))]
    chosen = select_images(images, ImageSelection(jmespath="imageSizeInBytes < `500000000`"))
    assert {i.digest[-1] for i in chosen} == {"1", "3"}
    chosen = select_images(images, ImageSelection(jmespath="contains(imageTags, 'b')"))
    assert [i.digest[-1] for i in chosen] == ["2"]
    chosen = select_images(images, ImageSelection(images=("c", images[0].digest)))
    assert {i.digest[-1] for i in chosen} == {"1", "3"}


def test_odd_tags_match_literally() -> None:
    images = [image(1, ("v1;rm -rf /",)), image(2, ("prod-ü",)), image(3, ("$(id)",))]
    assert [i.digest[-1] for i in select_images(images, ImageSelection(images=("$(id)",)))] == ["3"]
    assert [i.digest[-1] for i in select_images(images, ImageSelection(tags=("prod-*",)))] == ["2"]


def _pulled(info: ImageInfo, days: int) -> ImageInfo:
    from dataclasses import replace

    pulled = (T0 + timedelta(days=days)).isoformat()
    return replace(info, detail={**info.detail, "lastRecordedPullTime": pulled})


def test_rescan_duration_is_pushed_or_pulled_within() -> None:
    """Inspector's rule: an image stays monitored while pushed OR pulled recently."""
    now = T0 + timedelta(days=100)
    fresh = image(1, days=95)  # pushed 5 days ago, never pulled
    old_but_pulled = _pulled(image(2, days=10), days=98)  # pushed 90 days ago, pulled 2 ago
    forgotten = _pulled(image(3, days=10), days=20)  # pushed 90, pulled 80 days ago
    never = image(4, days=10)
    images = [fresh, old_but_pulled, forgotten, never]

    def kept(**selection: object) -> list[str]:
        chosen = select_images(images, ImageSelection(reference_time=now, **selection))  # type: ignore[arg-type]
        return sorted(i.digest[-1] for i in chosen)

    assert kept() == ["1", "2", "3", "4"]
    assert kept(pushed_within_days=30) == ["1"]
    assert kept(pulled_within_days=30) == ["2"]
    assert kept(pushed_within_days=30, pulled_within_days=30) == ["1", "2"]
    assert kept(pushed_within_days=30, pulled_within_days=90) == ["1", "2", "3"]


def test_in_use_only_keeps_running_images_and_skips_nothing_when_unknown() -> None:
    images = [image(1), image(2), image(3)]
    running = {image(2).digest}
    chosen = select_images(images, ImageSelection(in_use_only=True), running)
    assert [i.digest for i in chosen] == [image(2).digest]
    assert len(select_images(images, ImageSelection(in_use_only=True), None)) == 3
    assert len(select_images(images, ImageSelection(), running)) == 3
