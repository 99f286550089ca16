"""Deterministic, collision-free Security Hub finding Ids, GeneratorIds and ledger scope keys.

An Id is the configured prefix (default `containerscan/`, always delimiter-terminated so that
a PREFIX filter on `containerscan/` never matches `containerscan2/...`) followed by slash-
separated components. Every component is percent-encoded with `/`, `@`, `#` and `%` always
escaped, so a `/` inside a repository name (`team/app`) can never be mistaken for a
separator: decoding the components gives back the parts, which makes the mapping injective.

    <prefix>ecr/<account>/<region>/<repository>@<digest>/<identity parts...>
    <prefix>ecs/<account>/<region>/<task family>/<container>/<identity parts...>

Runtime Ids deliberately leave out the task ARN: tasks are ephemeral, and one finding per
(task family, container, rule, subject) is what a reviewer wants to see.

Security Hub accepts Ids of 1-512 characters (API model, `AwsSecurityFinding.Id`). An Id that
would be longer keeps a readable head and ends with `/#<sha256 of the full canonical Id>`;
`#` never appears in an encoded component, so a hashed Id cannot equal an unhashed one.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote

from securityhub.findings import EcrImage, EcsContainer, Finding, Resource

DEFAULT_PREFIX = "containerscan/"
# AwsSecurityFinding.Id and GeneratorId: at most 512 characters (botocore service-2.json).
MAX_ID_LENGTH = 512
HASH_MARK = "/#"
_HASH_TAIL = len(HASH_MARK) + 64  # sha256 hex digest
# Characters left readable in a component besides letters, digits and `_.-~`; never `/@#%`.
_SAFE = ":+=,"


def validate_prefix(prefix: str) -> str:
    """A prefix must be non-empty and end with '/' (a delimiter-terminated PREFIX filter)."""
    if not prefix or not prefix.endswith("/"):
        raise ValueError(f"finding Id prefix {prefix!r} must be non-empty and end with '/'")
    if len(prefix) > MAX_ID_LENGTH // 4:
        raise ValueError(f"finding Id prefix {prefix!r} is longer than {MAX_ID_LENGTH // 4}")
    return prefix


def component(text: str) -> str:
    """One Id component, percent-encoded so that it contains no '/', '@', '#' or '%'."""
    return quote(text, safe=_SAFE)


def _bounded(canonical: str) -> str:
    if len(canonical) <= MAX_ID_LENGTH:
        return canonical
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    head = canonical[: MAX_ID_LENGTH - _HASH_TAIL]
    # Do not cut an escape sequence in half: the head stays decodable for a reader.
    cut = head.rfind("%", len(head) - 2)
    if cut != -1:
        head = head[:cut]
    return f"{head}{HASH_MARK}{digest}"


def image_scope(image: EcrImage) -> str:
    """The ledger scope of an image: `ecr/<account>/<region>/<repository>@<digest>`."""
    return (
        f"ecr/{component(image.account_id)}/{component(image.region)}/"
        f"{component(image.repository)}@{component(image.digest)}"
    )


def repository_scope(account_id: str, region: str, repository: str) -> str:
    """The ledger scope of a repository; every image scope in it starts with this."""
    return f"ecr/{component(account_id)}/{component(region)}/{component(repository)}@"


def container_scope(container: EcsContainer) -> str:
    """The ledger scope of runtime findings: task family and container, not the task."""
    return (
        f"ecs/{component(container.account_id)}/{component(container.region)}/"
        f"{component(container.task_family)}/{component(container.container_name)}"
    )


def resource_scope(resource: Resource) -> str:
    if isinstance(resource, EcrImage):
        return image_scope(resource)
    return container_scope(resource)


def finding_id(finding: Finding, prefix: str = DEFAULT_PREFIX) -> str:
    """The Security Hub Id of `finding`: deterministic, collision-free, at most 512 chars."""
    parts = "/".join(component(p) for p in finding.identity())
    return _bounded(f"{prefix}{resource_scope(finding.resource)}/{parts}")


def generator_id(kind: str, prefix: str = DEFAULT_PREFIX) -> str:
    """`<prefix><kind>/`: delimiter-terminated so a PREFIX filter cannot over-match."""
    return f"{prefix}{component(kind)}/"
