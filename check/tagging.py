"""Tagging scanned images (the seed's "tagging of scanned images"), optional.

ECR has no "add a tag" call: a tag is added by putting the image's own manifest again with
the new tag (BatchGetImage for the manifest and its media type, then PutImage with the same
manifest, media type, digest and tag); no layer moves. Outcomes:

- `tagged`: done;
- `already`: the image already carries the tag (ImageAlreadyExistsException);
- `immutable`: the repository has immutable tags and the tag is on another image
  (ImageTagAlreadyExistsException, or ImageAlreadyExists in an immutable repository);
  reported in the run status, never fatal;
- `failed`: anything else (permissions: ecr:PutImage), with the error code.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from check.ecr import EcrRegistry
from securityhub.aws import error_code
from securityhub.errors import AwsError


@dataclass(frozen=True)
class TagOutcome:
    repository: str
    digest: str
    tag: str
    outcome: str  # tagged | already | immutable | failed
    error: str | None = None


def tag_image(
    registry: EcrRegistry, repository: str, digest: str, tag: str, *, immutable: bool = False
) -> TagOutcome:
    try:
        manifests = registry.manifests(repository, [digest])
    except AwsError as exc:
        return TagOutcome(repository, digest, tag, "failed", exc.message)
    if digest not in manifests:
        return TagOutcome(repository, digest, tag, "failed", "image not found (deleted?)")
    manifest, media_type = manifests[digest]
    params = {
        "registryId": registry.account_id,
        "repositoryName": repository,
        "imageManifest": manifest,
        "imageTag": tag,
        "imageDigest": digest,
    }
    if media_type:
        params["imageManifestMediaType"] = media_type
    try:
        registry.client.put_image(**params)
    except ClientError as exc:
        code = error_code(exc)
        if code == "ImageTagAlreadyExistsException" or (
            immutable
            and code == "ImageAlreadyExistsException"
            and not _on_image(registry, repository, digest, tag)
        ):
            return TagOutcome(repository, digest, tag, "immutable", code)
        if code == "ImageAlreadyExistsException":
            return TagOutcome(repository, digest, tag, "already")
        return TagOutcome(repository, digest, tag, "failed", f"{code}: {exc}")
    except BotoCoreError as exc:
        return TagOutcome(repository, digest, tag, "failed", str(exc))
    return TagOutcome(repository, digest, tag, "tagged")


def _on_image(registry: EcrRegistry, repository: str, digest: str, tag: str) -> bool:
    try:
        response = registry.client.describe_images(
            registryId=registry.account_id, repositoryName=repository, imageIds=[{"imageTag": tag}]
        )
    except (ClientError, BotoCoreError):
        return False
    return any(d.get("imageDigest") == digest for d in response.get("imageDetails", ()))
