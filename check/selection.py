"""Which repositories and images a run scans: pure functions over enumerated data.

Repository filters: include and exclude globs (`fnmatch` semantics, case-sensitive: ECR
names are lowercase; `*` also crosses `/`, so `payments/*` matches `payments/api/v2`),
then the shard. Image selection within one repository, in this order: explicit images
(digests or tags), tagged only, tag globs, pushed since, the JMESPath filter over ECR's
ImageDetail, and last the newest N (so "the 5 newest prod images" means what it says).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
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


def select_images(images: Sequence[ImageInfo], selection: ImageSelection) -> list[ImageInfo]:
    """The images of ONE repository that the selection keeps, newest first."""
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
        if compiled is not None and not compiled.search(image.detail):
            continue
        kept.append(image)
    kept.sort(key=lambda i: (i.pushed_at.timestamp() if i.pushed_at else 0.0, i.digest))
    kept.reverse()
    if selection.max_images is not None:
        kept = kept[: selection.max_images]
    return kept
