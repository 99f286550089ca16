"""ECR enumeration: repositories, images, index manifests, the registry's auth token.

One `EcrRegistry` per (account, region), built on one client from the `SessionFactory`
(which assumes the account's role for cross-account work). Every list is paginated.

Multi-arch images (the choice, deliberately): an image index (OCI index or Docker manifest
list) is EXPANDED: each platform image it lists is scanned under its own digest, carrying
the index's tags and its platform as `architecture` ("linux/arm64/v8"). Platforms differ in
packages (a distroless arm64 image is not its amd64 twin), so scanning the index once for
one platform would hide the others' vulnerabilities, and the child digest is what a
registry serves a client of that platform. Selection (tags, pushed since, JMESPath, newest
N) applies to the index, the unit people push and tag; untagged platform manifests listed
by DescribeImages are not selected on their own unless named by digest (scan-image, a push
event); de-duplication by digest means one reached twice is scanned once. Attestation
manifests (buildx's `vnd.docker.reference.type: attestation-manifest`, platform
unknown/unknown) and OCI referrer artifacts (signatures, SBOMs: DescribeImages'
`subjectManifestDigest` set, or a non-image `artifactMediaType`) are not images and are
skipped. Archived images
(`imageStatus: ARCHIVED`) cannot be pulled and are skipped, but they still exist, so their
findings stay (they count as present in the repository scope).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from check.scanner import RegistryAuth
from securityhub.aws import error_code
from securityhub.errors import AwsError
from securityhub.findings import EcrImage
from securityhub.logs import register_secret

# DescribeRepositories and DescribeImages accept maxResults up to 1000 (ECR API reference).
DESCRIBE_PAGE_SIZE = 1000
# BatchGetImage takes at most 100 image ids per call (ECR API reference, imageIds).
BATCH_GET_IMAGE_MAX = 100

INDEX_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
IMAGE_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
IMAGE_CONFIG_MEDIA_TYPES = frozenset(
    {
        "application/vnd.docker.container.image.v1+json",
        "application/vnd.oci.image.config.v1+json",
    }
)
ATTESTATION_ANNOTATION = "vnd.docker.reference.type"


@dataclass(frozen=True)
class Repository:
    name: str
    arn: str
    uri: str
    registry_id: str
    immutable: bool = False


@dataclass(frozen=True)
class ImageInfo:
    """One image of a repository as DescribeImages shows it (or a platform of an index)."""

    repository: str
    digest: str
    tags: tuple[str, ...] = ()
    pushed_at: datetime | None = None
    media_type: str | None = None
    artifact_media_type: str | None = None
    size: int | None = None
    status: str | None = None
    subject_digest: str | None = None
    platform: str | None = None  # "linux/arm64/v8" for a platform image of an index
    index_digest: str | None = None  # the index this platform image was reached through
    # ECR's ImageDetail, JSON-safe (datetimes as ISO strings): what JMESPath filters see.
    detail: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES

    @property
    def is_artifact(self) -> bool:
        """A referrer (signature, SBOM, attestation) rather than a runnable image."""
        if self.subject_digest:
            return True
        return bool(
            self.artifact_media_type
            and not self.is_index
            and self.artifact_media_type not in IMAGE_CONFIG_MEDIA_TYPES
        )

    def resource(self, account_id: str, region: str) -> EcrImage:
        return EcrImage(
            account_id=account_id,
            region=region,
            repository=self.repository,
            digest=self.digest,
            tags=self.tags,
            pushed_at=self.pushed_at,
            architecture=self.platform,
        )


@dataclass(frozen=True)
class PlatformRef:
    digest: str
    platform: str | None  # None: not a runnable image (an attestation, an unknown platform)


def image_from_detail(detail: Mapping[str, Any]) -> ImageInfo:
    pushed = detail.get("imagePushedAt")
    return ImageInfo(
        repository=detail["repositoryName"],
        digest=detail["imageDigest"],
        tags=tuple(detail.get("imageTags") or ()),
        pushed_at=pushed if isinstance(pushed, datetime) else None,
        media_type=detail.get("imageManifestMediaType"),
        artifact_media_type=detail.get("artifactMediaType"),
        size=detail.get("imageSizeInBytes"),
        status=detail.get("imageStatus"),
        subject_digest=detail.get("subjectManifestDigest"),
        detail={k: v.isoformat() if isinstance(v, datetime) else v for k, v in detail.items()},
    )


def parse_index(manifest: str | bytes) -> list[PlatformRef]:
    """Every manifest an index lists; attestations and unknown platforms get platform None."""
    try:
        doc = json.loads(manifest)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return []
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    refs = []
    for entry in entries or ():
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            continue
        annotations = entry.get("annotations") or {}
        platform = entry.get("platform") or {}
        os_name, arch = platform.get("os", "unknown"), platform.get("architecture", "unknown")
        name: str | None = f"{os_name}/{arch}"
        if platform.get("variant"):
            name = f"{name}/{platform['variant']}"
        if annotations.get(ATTESTATION_ANNOTATION) == "attestation-manifest" or "unknown" in (
            os_name,
            arch,
        ):
            name = None
        refs.append(PlatformRef(entry["digest"], name))
    return refs


def expand_indexes(
    images: Sequence[ImageInfo],
    selected: Sequence[ImageInfo],
    platforms: Mapping[str, Sequence[PlatformRef]],
) -> list[ImageInfo]:
    """Replace each selected index by its platform images (see the module docstring)."""
    by_digest = {i.digest: i for i in images}
    out: list[ImageInfo] = []
    for image in selected:
        if not image.is_index:
            out.append(image)
            continue
        for ref in platforms.get(image.digest, ()):
            if ref.platform is None:
                continue
            child = by_digest.get(ref.digest)
            out.append(
                ImageInfo(
                    repository=image.repository,
                    digest=ref.digest,
                    tags=image.tags,
                    pushed_at=image.pushed_at,
                    media_type=child.media_type if child else None,
                    size=child.size if child else None,
                    platform=ref.platform,
                    index_digest=image.digest,
                    detail=image.detail,
                )
            )
    return out


def selectable(images: Sequence[ImageInfo], platforms: Mapping[str, Sequence[PlatformRef]]):
    """Top-level, runnable, pullable images: what the selection chooses among."""
    children = {ref.digest for refs in platforms.values() for ref in refs}
    return [
        i
        for i in images
        if not i.is_artifact and i.status != "ARCHIVED" and i.digest not in children
    ]


def _aws_error(what: str, exc: Exception) -> AwsError:
    return AwsError(f"{what}: {error_code(exc)}: {exc}")


class EcrRegistry:
    """The ECR API of one account and region, through one client."""

    def __init__(self, client: Any, account_id: str, region: str) -> None:
        self.client = client
        self.account_id = account_id
        self.region = region

    @property
    def host(self) -> str:
        return f"{self.account_id}.dkr.ecr.{self.region}.amazonaws.com"

    def repositories(self, names: Sequence[str] | None = None) -> list[Repository]:
        """DescribeRepositories, every page (or just `names` when they are exact)."""
        params: dict[str, Any] = {"registryId": self.account_id}
        if names:
            params["repositoryNames"] = list(names)
        try:
            pages = self.client.get_paginator("describe_repositories").paginate(
                **params, PaginationConfig={"PageSize": DESCRIBE_PAGE_SIZE}
            )
            return [
                Repository(
                    name=r["repositoryName"],
                    arn=r["repositoryArn"],
                    uri=r.get("repositoryUri", ""),
                    registry_id=r.get("registryId", self.account_id),
                    immutable=str(r.get("imageTagMutability", "MUTABLE")).startswith("IMMUTABLE"),
                )
                for page in pages
                for r in page.get("repositories", ())
            ]
        except (ClientError, BotoCoreError) as exc:
            raise _aws_error(
                f"cannot list the repositories of {self.account_id} in {self.region}", exc
            ) from exc

    def images(self, repository: str) -> list[ImageInfo]:
        """DescribeImages, every page."""
        try:
            pages = self.client.get_paginator("describe_images").paginate(
                registryId=self.account_id,
                repositoryName=repository,
                PaginationConfig={"PageSize": DESCRIBE_PAGE_SIZE},
            )
            return [image_from_detail(d) for page in pages for d in page.get("imageDetails", ())]
        except (ClientError, BotoCoreError) as exc:
            raise _aws_error(f"cannot list the images of {repository}", exc) from exc

    def _batch_get_image(self, repository: str, digests: Sequence[str]) -> dict[str, Any]:
        """One BatchGetImage call (at most 100 digests); ClientError/BotoCoreError pass."""
        response: dict[str, Any] = self.client.batch_get_image(
            registryId=self.account_id,
            repositoryName=repository,
            imageIds=[{"imageDigest": d} for d in digests],
            acceptedMediaTypes=sorted(INDEX_MEDIA_TYPES | IMAGE_MEDIA_TYPES),
        )
        return response

    def manifests(self, repository: str, digests: Sequence[str]) -> dict[str, tuple[str, str]]:
        """BatchGetImage in chunks of 100: digest -> (manifest, media type)."""
        out: dict[str, tuple[str, str]] = {}
        for chunk in _chunks(list(digests), BATCH_GET_IMAGE_MAX):
            try:
                response = self._batch_get_image(repository, chunk)
            except (ClientError, BotoCoreError) as exc:
                raise _aws_error(f"cannot read manifests of {repository}", exc) from exc
            for image in response.get("images", ()):
                digest = image.get("imageId", {}).get("imageDigest")
                manifest = image.get("imageManifest", "")
                media_type = image.get("imageManifestMediaType") or _media_type(manifest)
                if digest:
                    out[digest] = (manifest, media_type)
        return out

    def existing(self, repository: str, digests: Sequence[str]) -> set[str]:
        """Which of `digests` still exist in `repository` (BatchGetImage, 100 per call).

        Only ECR's own `ImageNotFound` (or the repository being gone) counts as absence; any
        other failure keeps the digests it may concern: an image is archived only when
        proven gone.
        """
        present: set[str] = set()
        for chunk in _chunks(list(digests), BATCH_GET_IMAGE_MAX):
            try:
                response = self._batch_get_image(repository, chunk)
            except ClientError as exc:
                if error_code(exc) == "RepositoryNotFoundException":
                    return set()
                raise _aws_error(f"cannot check images of {repository}", exc) from exc
            except BotoCoreError as exc:
                raise _aws_error(f"cannot check images of {repository}", exc) from exc
            for image in response.get("images", ()):
                present.add(str(image.get("imageId", {}).get("imageDigest", "")))
            for failure in response.get("failures", ()):
                if failure.get("failureCode") == "ImageNotFound":
                    continue
                named = failure.get("imageId", {}).get("imageDigest")
                present |= {named} if named else set(chunk)
        return present & set(digests)

    def platforms(
        self, repository: str, images: Sequence[ImageInfo]
    ) -> dict[str, list[PlatformRef]]:
        """index digest -> its platform images, for every index in the repository."""
        indexes = [i.digest for i in images if i.is_index]
        if not indexes:
            return {}
        return {d: parse_index(m) for d, (m, _) in self.manifests(repository, indexes).items()}

    def auth(self) -> RegistryAuth:
        """GetAuthorizationToken -> RegistryAuth; the password is registered as a secret.

        The token is base64("AWS:<password>") and is valid for 12 hours (ECR docs).
        """
        try:
            response = self.client.get_authorization_token()
            token = response["authorizationData"][0]["authorizationToken"]
            username, _, password = base64.b64decode(token).decode().partition(":")
        except (ClientError, BotoCoreError) as exc:
            raise _aws_error(f"cannot get an ECR token for {self.account_id}", exc) from exc
        except (KeyError, IndexError, binascii.Error, UnicodeDecodeError) as exc:
            raise AwsError(f"ECR returned an unreadable authorization token: {exc}") from exc
        register_secret(password)
        return RegistryAuth(username=username, password=password)


def _media_type(manifest: str) -> str:
    try:
        doc = json.loads(manifest)
    except json.JSONDecodeError:
        return ""
    return str(doc.get("mediaType", "")) if isinstance(doc, dict) else ""


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
