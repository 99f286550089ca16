"""ECR image references: `<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]/<repo>`,
then `:tag`, `@digest` or both.

One parser for every place that reads an image URI (a task definition's image, a
`scan-image` argument, a running container's image): the grammar is AWS's own.
- The host: `dkr.ecr.<region>.amazonaws.com`; `dkr.ecr-fips.<region>...` for the FIPS
  endpoints (AWS General Reference, "Amazon ECR endpoints"); `.amazonaws.com.cn` in the
  China regions, whose partition is `aws-cn`; GovCloud regions (`us-gov-*`) are `aws-us-gov`.
- The repository: ECR's RepositoryName pattern (botocore's ecr service-2.json), 2-256
  characters: lower-case components separated by `.`, `_`, `__` or dashes, joined by `/`.
- The tag: the OCI distribution grammar (`[A-Za-z0-9_][A-Za-z0-9._-]*`), at most 300
  characters as ECR's ImageTag allows; the digest `sha256:` and 64 hex digits. A reference
  may carry a tag, a digest, or both (`repo:tag@sha256:...`, as ECS reports pinned images).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from securityhub.findings import Partition, partition

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr(?P<fips>-fips)?\.(?P<region>[a-z]{2}(?:-[a-z0-9]+)+)"
    r"\.amazonaws\.com(?P<cn>\.cn)?/"
    rf"(?P<repository>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,299}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
REPOSITORY_LENGTH = (2, 256)  # ECR RepositoryName min/max (botocore ecr service-2.json)


@dataclass(frozen=True)
class EcrReference:
    """The parts of an ECR image reference."""

    account_id: str
    region: str
    repository: str
    tag: str | None = None
    digest: str | None = None
    fips: bool = False

    @property
    def partition(self) -> Partition:
        return partition(self.region)

    @property
    def registry(self) -> str:
        suffix = ".cn" if self.partition == "aws-cn" else ""
        endpoint = "ecr-fips" if self.fips else "ecr"
        return f"{self.account_id}.dkr.{endpoint}.{self.region}.amazonaws.com{suffix}"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.registry}/{self.repository}{tag}{digest}"


def parse_ecr_reference(text: str) -> EcrReference | None:
    """The parts of `text` when it is an ECR image reference, else None (another registry,
    a bare name, or a host whose suffix does not match its region's partition)."""
    match = _REFERENCE.fullmatch(text or "")
    if match is None:
        return None
    region, repository = match["region"], match["repository"]
    if bool(match["cn"]) != (partition(region) == "aws-cn"):
        return None  # China regions are served under .amazonaws.com.cn, and only they
    low, high = REPOSITORY_LENGTH
    if not low <= len(repository) <= high:
        return None
    return EcrReference(
        account_id=match["account"],
        region=region,
        repository=repository,
        tag=match["tag"],
        digest=match["digest"],
        fips=bool(match["fips"]),
    )
