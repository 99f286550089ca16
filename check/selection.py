"""Which repositories and images a run scans: pure functions over enumerated data.

Repository filters: include and exclude globs (`fnmatch` semantics, case-sensitive: ECR
names are lowercase; `*` also crosses `/`, so `payments/*` matches `payments/api/v2`),
then the shard. Image selection within one repository, in this order: explicit images
(digests or tags), tagged only, tag globs, pushed since, the rescan duration (pushed or
pulled within N days), in use only, the JMESPath filter over ECR's ImageDetail, and last
the newest N (so "the 5 newest prod images" means what it says).

An image the selection skips keeps its findings: it is still present in its repository (the
archiving scope), only not observed tonight (DESIGN: archive only what was observed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from check.request import ImageSelection, Shard

if TYPE_CHECKING:
    from check.ecr import ImageInfo


def repository_matches(name: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    return any(fnmatchcase(name, g) for g in include) and not any(
        fnmatchcase(name, g) for g in exclude
    )


def shard_of(account_id: str, region: str, repository: str, count: int) -> int:
    """The 1-based shard a repository belongs to, stable across runs, hosts and Pythons.

    A sha256 of "account/region/name" (not `hash()`, which is salted per process), so each
    of N tasks computes the same split without talking to the others.
    """
    digest = hashlib.sha256(f"{account_id}/{region}/{repository}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def in_shard(account_id: str, region: str, repository: str, shard: Shard | None) -> bool:
    return shard is None or shard_of(account_id, region, repository, shard.count) == shard.index


def select_repositories(
    names: Iterable[str],
    include: Sequence[str],
    exclude: Sequence[str],
    *,
    account_id: str,
    region: str,
    shard: Shard | None = None,
) -> list[str]:
    return sorted(
        n
        for n in names
        if repository_matches(n, include, exclude) and in_shard(account_id, region, n, shard)
    )


def _jmespath_filter(expression: str | None) -> Any:
    if not expression:
        return None
    import jmespath

    return jmespath.compile(expression)


def _pulled_at(image: ImageInfo) -> datetime | None:
    """ECR's `lastRecordedPullTime` (DescribeImages; recorded within about a day)."""
    value = image.detail.get("lastRecordedPullTime")
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def recent(image: ImageInfo, selection: ImageSelection) -> bool:
    """The rescan duration: pushed within N days OR pulled within M days (Inspector's rule);
    True when neither is set. An image never pulled counts by its push date only."""
    push_days, pull_days = selection.pushed_within_days, selection.pulled_within_days
    if push_days is None and pull_days is None:
        return True
    now = selection.reference_time
    if now is None:  # a selection built by hand, not by validate_request
        from datetime import UTC

        now = datetime.now(UTC)
    if push_days is not None and image.pushed_at is not None:
        if image.pushed_at >= now - timedelta(days=push_days):
            return True
    if pull_days is not None:
        pulled = _pulled_at(image)
        if pulled is not None and pulled >= now - timedelta(days=pull_days):
            return True
    return False


def select_images(
    images: Sequence[ImageInfo],
    selection: ImageSelection,
    in_use: Collection[str] | None = None,
) -> list[ImageInfo]:
    """The images of ONE repository that the selection keeps, newest first.

    `in_use`: the digests running now, for `in_use_only` (None: unknown, nothing skipped).
    """
    compiled = _jmespath_filter(selection.jmespath)
    wanted_digests = {i for i in selection.images if i.startswith("sha256:")}
    wanted_tags = {i for i in selection.images if not i.startswith("sha256:")}
    kept = []
    for image in images:
        if selection.images and not (
            image.digest in wanted_digests or wanted_tags.intersection(image.tags)
        ):
            continue
        if selection.tagged_only and not image.tags:
            continue
        if selection.tags and not any(
            fnmatchcase(tag, glob) for tag in image.tags for glob in selection.tags
        ):
            continue
        if selection.pushed_since and (
            image.pushed_at is None or image.pushed_at < selection.pushed_since
        ):
            continue
        if not recent(image, selection):
            continue
        if selection.in_use_only and in_use is not None and image.digest not in in_use:
            continue
        if compiled is not None and not compiled.search(image.detail):
            continue
        kept.append(image)
    kept.sort(key=lambda i: (i.pushed_at.timestamp() if i.pushed_at else 0.0, i.digest))
    kept.reverse()
    if selection.max_images is not None:
        kept = kept[: selection.max_images]
    return kept
