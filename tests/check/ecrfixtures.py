"""Building ECR content in moto for the check's tests: images, multi-arch indexes, tables.

moto computes an image digest from the layer digests (and a random one for an index), so
these helpers compute the real digest (sha256 of the manifest bytes) and pass it to
PutImage as `imageDigest`, the way a registry client does.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha256(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def manifest(seed: str, media_type: str = DOCKER_MANIFEST) -> str:
    """A realistic single-platform manifest whose layers depend on `seed`."""
    config = {
        "mediaType": "application/vnd.docker.container.image.v1+json"
        if media_type == DOCKER_MANIFEST
        else "application/vnd.oci.image.config.v1+json",
        "size": 1469,
        "digest": sha256(f"config {seed}"),
    }
    layer_type = (
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
        if media_type == DOCKER_MANIFEST
        else "application/vnd.oci.image.layer.v1.tar+gzip"
    )
    layers = [
        {"mediaType": layer_type, "size": 2797541, "digest": sha256("alpine 3.10 base")},
        {"mediaType": layer_type, "size": 1024 + len(seed), "digest": sha256(f"app {seed}")},
    ]
    return json.dumps(
        {"schemaVersion": 2, "mediaType": media_type, "config": config, "layers": layers}
    )


def put_image(ecr: Any, repository: str, seed: str, tag: str | None = None) -> str:
    body = manifest(seed)
    digest = sha256(body)
    params: dict[str, Any] = {
        "repositoryName": repository,
        "imageManifest": body,
        "imageManifestMediaType": DOCKER_MANIFEST,
        "imageDigest": digest,
    }
    if tag is not None:
        params["imageTag"] = tag
    ecr.put_image(**params)
    return digest


def put_index(
    ecr: Any, repository: str, seed: str, tag: str, platforms: tuple[str, ...] = ("amd64", "arm64")
) -> tuple[str, dict[str, str]]:
    """A multi-arch image: one platform manifest per architecture, an attestation, an index.

    Returns (index digest, {architecture: platform digest}).
    """
    children: dict[str, str] = {}
    entries = []
    for arch in platforms:
        body = manifest(f"{seed}/{arch}", OCI_MANIFEST)
        digest = sha256(body)
        ecr.put_image(
            repositoryName=repository,
            imageManifest=body,
            imageManifestMediaType=OCI_MANIFEST,
            imageDigest=digest,
        )
        children[arch] = digest
        platform = {"architecture": arch, "os": "linux"}
        if arch == "arm64":
            platform["variant"] = "v8"
        entries.append(
            {"mediaType": OCI_MANIFEST, "size": len(body), "digest": digest, "platform": platform}
        )
    # buildx's provenance attestation: listed in the index, not an image to scan.
    attestation = manifest(f"{seed}/attestation", OCI_MANIFEST)
    ecr.put_image(
        repositoryName=repository,
        imageManifest=attestation,
        imageManifestMediaType=OCI_MANIFEST,
        imageDigest=sha256(attestation),
    )
    entries.append(
        {
            "mediaType": OCI_MANIFEST,
            "size": len(attestation),
            "digest": sha256(attestation),
            "platform": {"architecture": "unknown", "os": "unknown"},
            "annotations": {
                "vnd.docker.reference.type": "attestation-manifest",
                "vnd.docker.reference.digest": children[platforms[0]],
            },
        }
    )
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    digest = sha256(index)
    ecr.put_image(
        repositoryName=repository,
        imageManifest=index,
        imageManifestMediaType=OCI_INDEX,
        imageDigest=digest,
        imageTag=tag,
    )
    return digest, children


def create_table(dynamodb: Any, name: str) -> None:
    """The table layout `containerscan init` creates: pk/sk strings, TTL on expires_at."""
    dynamodb.create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
