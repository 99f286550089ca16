"""Build, push and promote the containerscan images (the check and the sidecar).

`python -m release.imagebuild build check --qscanner ./qscanner --qscanner-sha256 HEX --push`
builds `docker/Dockerfile.check` with the Docker SDK (the `docker` extra), logs in to ECR
with the authorization token from `ecr:GetAuthorizationToken`, pushes, and prints the image
pinned by digest, the value the CloudFormation parameters want. `promote` gives an
already-pushed digest a new tag (`prod`) with ECR's own BatchGetImage/PutImage, so what is
promoted is byte for byte what was tested.

The build context is what `.dockerignore` (an allow-list) lets through, plus the QScanner
binary, which is not publicly downloadable: it is added from wherever the caller keeps it
at `docker/qscanner/qscanner`, and the Dockerfile checks its SHA-256. The ECR password
only ever travels to the Docker daemon; it is registered as a secret, so it is masked in
every log line.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import json
import os
import re
import sys
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from securityhub.aws import error_code
from securityhub.errors import AwsError, ConfigurationError, ContainerscanError
from securityhub.logs import fields, get_logger, register_secret

log = get_logger("release.imagebuild")

ROOT = Path(__file__).resolve().parent.parent
# Where the Dockerfile expects the QScanner binary inside the build context.
QSCANNER_CONTEXT_PATH = "docker/qscanner/qscanner"
# The Docker Engine API version the tool speaks (Engine 20.10+); pinned so that the SDK does
# not probe /version first.
DOCKER_API_VERSION = "1.41"
# Fargate runs linux/amd64 in the task definitions (RuntimePlatform X86_64).
PLATFORM = "linux/amd64"
# A build context larger than this is a sign that .dockerignore lets junk through.
MAX_CONTEXT_BYTES = 200 * 1024 * 1024
# ECR image tags: 1-128 characters of [A-Za-z0-9_.-], not starting with . or - (ECR docs).
MAX_TAG_LENGTH = 128


class ImageBuildError(ContainerscanError):
    """The Docker daemon refused or failed a build, tag, login or push."""

    default_remediation = (
        "read the daemon's message above; `docker info` checks that the engine is reachable "
        "(DOCKER_HOST)"
    )


@dataclass(frozen=True)
class ImageSpec:
    name: str
    dockerfile: str
    needs_qscanner: bool
    description: str


IMAGES: dict[str, ImageSpec] = {
    "check": ImageSpec("check", "docker/Dockerfile.check", True, "the sweep with QScanner"),
    "sidecar": ImageSpec("sidecar", "docker/Dockerfile.sidecar", False, "the runtime monitor"),
}


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    tag: str
    log: tuple[str, ...] = field(default=(), repr=False)


# ------------------------------------------------------------------------ build context


def dockerignore_patterns(root: Path) -> list[str]:
    path = root / ".dockerignore"
    if not path.exists():
        raise ConfigurationError(
            f"{path} is missing", "the build context is an allow-list kept in .dockerignore"
        )
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def context_files(root: Path, spec: ImageSpec) -> list[str]:
    """The files (relative paths) `.dockerignore` lets into the context, Dockerfile included."""
    from docker.utils.build import exclude_paths

    paths = exclude_paths(str(root), dockerignore_patterns(root), dockerfile=spec.dockerfile)
    return sorted(p for p in paths if (root / p).is_file())


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def build_context(root: Path, spec: ImageSpec, qscanner: Path | None = None) -> bytes:
    """A gzipped tar of the context; the QScanner binary goes in at QSCANNER_CONTEXT_PATH.

    Entries are sorted and their owners and times reset, so the same sources give the same
    context bytes (and the daemon's layer cache hits).
    """
    if spec.needs_qscanner and qscanner is None:
        raise ConfigurationError(
            f"the {spec.name} image needs the QScanner binary",
            "pass --qscanner PATH (QScanner is not publicly downloadable: get it from the "
            "Qualys portal) and --qscanner-sha256",
        )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for relative in context_files(root, spec):
            if relative == QSCANNER_CONTEXT_PATH:
                continue  # only the binary the caller names goes in
            _add(tar, root / relative, relative)
        if spec.needs_qscanner and qscanner is not None:
            if not qscanner.is_file():
                raise ConfigurationError(f"QScanner binary {qscanner} does not exist")
            _add(tar, qscanner, QSCANNER_CONTEXT_PATH, mode=0o555)
    data = buffer.getvalue()
    if len(data) > MAX_CONTEXT_BYTES:
        raise ConfigurationError(
            f"the build context is {len(data) >> 20} MiB", "tighten .dockerignore"
        )
    return data


def _add(tar: tarfile.TarFile, path: Path, arcname: str, mode: int | None = None) -> None:
    info = tar.gettarinfo(str(path), arcname=arcname)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    if mode is not None:
        info.mode = mode
    with path.open("rb") as handle:
        tar.addfile(info, handle)


# ------------------------------------------------------------------------------- engine


def _docker_sdk() -> Any:
    """The Docker SDK module, imported lazily.

    Imported by name: this repository's own `docker/` directory (Dockerfiles) would shadow
    the SDK for static analysis, though not at run time (a regular package beats a namespace
    directory on sys.path).
    """
    return importlib.import_module("docker")


def docker_client(base_url: str | None = None) -> Any:
    """A Docker SDK client (DOCKER_HOST and friends when base_url is None)."""
    try:
        docker = _docker_sdk()
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "the Docker SDK is not installed", "pip install 'containerscan[docker]'"
        ) from exc
    try:
        if base_url:
            return docker.DockerClient(base_url=base_url, version=DOCKER_API_VERSION)
        return docker.from_env(version=DOCKER_API_VERSION)
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"cannot reach the Docker engine: {exc}") from exc


def _stream(chunks: Iterable[Mapping[str, Any]], what: str) -> Iterator[Mapping[str, Any]]:
    """Yield the daemon's JSON progress messages; raise on the first error message."""
    for chunk in chunks:
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk.get("error")
            raise ImageBuildError(f"{what} failed: {detail}")
        yield chunk


def build_image(
    client: Any,
    context: bytes,
    spec: ImageSpec,
    tag: str,
    *,
    buildargs: Mapping[str, str] | None = None,
    pull: bool = True,
) -> BuildResult:
    """Build `spec` from `context` as `tag`; return the image id and the build log."""
    docker = _docker_sdk()

    lines: list[str] = []
    image_id = ""
    try:
        chunks = client.api.build(
            fileobj=io.BytesIO(context),
            custom_context=True,
            encoding="gzip",
            dockerfile=spec.dockerfile,
            tag=tag,
            buildargs=dict(buildargs or {}),
            platform=PLATFORM,
            pull=pull,
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in _stream(chunks, f"building {spec.name}"):
            if "stream" in chunk:
                text = str(chunk["stream"]).rstrip()
                if text:
                    lines.append(text)
                    log.debug(text, extra=fields(image=spec.name))
            aux = chunk.get("aux")
            if isinstance(aux, Mapping) and aux.get("ID"):
                image_id = str(aux["ID"])
    except docker.errors.APIError as exc:
        raise ImageBuildError(f"building {spec.name} failed: {exc.explanation or exc}") from exc
    if not image_id:
        raise ImageBuildError(f"building {spec.name} reported no image id")
    log.info("image built", extra=fields(image=spec.name, tag=tag, id=image_id))
    return BuildResult(image_id=image_id, tag=tag, log=tuple(lines))


@dataclass(frozen=True)
class RegistryLogin:
    registry: str  # host, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com
    username: str
    password: str

    def __repr__(self) -> str:
        return (
            f"RegistryLogin(registry={self.registry!r}, username={self.username!r}, "
            "password='***')"
        )


def ecr_credentials(ecr: Any) -> RegistryLogin:
    """Decode ECR's authorization token ("AWS:<password>", base64; valid for 12 hours)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        data = ecr.get_authorization_token()["authorizationData"][0]
    except (BotoCoreError, ClientError) as exc:
        raise AwsError(f"cannot get an ECR authorization token: {exc}") from exc
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    register_secret(password)
    registry = data["proxyEndpoint"].removeprefix("https://").removeprefix("http://")
    return RegistryLogin(registry=registry.rstrip("/"), username=username, password=password)


def docker_login(client: Any, login: RegistryLogin) -> None:
    docker = _docker_sdk()

    try:
        client.login(
            username=login.username,
            password=login.password,
            registry=f"https://{login.registry}",
            reauth=True,
        )
    except docker.errors.APIError as exc:
        message = exc.explanation or exc
        raise ImageBuildError(f"login to {login.registry} failed: {message}") from exc
    log.info("logged in to the registry", extra=fields(registry=login.registry))


def push_image(client: Any, image_id: str, repository_uri: str, tag: str,
               login: RegistryLogin) -> str:
    """Tag `image_id` as repository_uri:tag, push it, and return the pushed manifest digest."""
    docker = _docker_sdk()

    validate_tag(tag)
    auth = {"username": login.username, "password": login.password}
    digest = ""
    try:
        if not client.api.tag(image_id, repository_uri, tag=tag):
            raise ImageBuildError(f"tagging {image_id} as {repository_uri}:{tag} failed")
        chunks = client.api.push(
            repository_uri, tag=tag, auth_config=auth, stream=True, decode=True
        )
        for chunk in _stream(chunks, f"pushing {repository_uri}:{tag}"):
            aux = chunk.get("aux")
            if isinstance(aux, Mapping) and aux.get("Digest"):
                digest = str(aux["Digest"])
    except docker.errors.APIError as exc:
        message = exc.explanation or exc
        raise ImageBuildError(f"pushing {repository_uri}:{tag} failed: {message}") from exc
    if not digest.startswith("sha256:"):
        raise ImageBuildError(f"pushing {repository_uri}:{tag} reported no digest")
    log.info("image pushed", extra=fields(repository=repository_uri, tag=tag, digest=digest))
    return digest


def validate_tag(tag: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag) or len(tag) > MAX_TAG_LENGTH:
        raise ConfigurationError(
            f"invalid image tag {tag!r}",
            "use 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        )


# ------------------------------------------------------------------------------ promote


def promote(ecr: Any, repository: str, digest: str, tag: str) -> None:
    """Give the image `digest` the tag `tag` in `repository`, server side (no pull, no push).

    ECR's PutImage with the exact manifest bytes of BatchGetImage keeps the digest; an
    immutable repository refuses to move an existing tag (ImageTagAlreadyExistsException).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    validate_tag(tag)
    try:
        found = ecr.batch_get_image(
            repositoryName=repository,
            imageIds=[{"imageDigest": digest}],
            acceptedMediaTypes=[
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.distribution.manifest.list.v2+json",
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.index.v1+json",
            ],
        )
    except (BotoCoreError, ClientError) as exc:
        raise AwsError(f"cannot read {repository}@{digest}: {exc}") from exc
    images = found.get("images", [])
    if not images:
        raise ConfigurationError(f"{repository}@{digest} does not exist", "push it first")
    image = images[0]
    params: dict[str, Any] = {
        "repositoryName": repository,
        "imageManifest": image["imageManifest"],
        "imageTag": tag,
        "imageDigest": digest,
    }
    if image.get("imageManifestMediaType"):
        params["imageManifestMediaType"] = image["imageManifestMediaType"]
    try:
        ecr.put_image(**params)
    except ClientError as exc:  # ImageAlreadyExists is fine, the rest is not
        if error_code(exc) == "ImageAlreadyExistsException":
            log.info("tag already on that digest", extra=fields(repository=repository, tag=tag))
            return
        raise AwsError(f"cannot tag {repository}@{digest} as {tag}: {exc}") from exc
    except BotoCoreError as exc:
        raise AwsError(f"cannot tag {repository}@{digest} as {tag}: {exc}") from exc
    log.info("image promoted", extra=fields(repository=repository, digest=digest, tag=tag))


# ---------------------------------------------------------------------- launcher package

# The Lambda runtime of the launcher (cloudformation/containerscan.yaml Runtime python3.12)
# and the wheels that run there.
LAMBDA_PYTHON = "3.12"
LAMBDA_PLATFORM = "manylinux2014_x86_64"
# Lambda: 250 MB unzipped for a function's code and layers (Lambda quotas).
LAMBDA_UNZIPPED_MAX = 250 * 1024 * 1024


def launcher_wheel_command(python: str, root: Path, wheels: Path) -> list[str]:
    return [python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels),
            str(root)]  # fmt: skip


# The launcher runs no sidecar: its wheel leaves out the compiled stop loop (setup.py), so it
# is pure Python (py3-none-any) and installs for Lambda's Python and platform.
PURE_WHEEL_ENV = {"CONTAINERSCAN_NO_EXTENSIONS": "1"}


def launcher_install_command(python: str, root: Path, wheel: Path, target: Path) -> list[str]:
    """pip install of the project's own wheel *file* (never the name: an index could hold
    another package of that name) and its pinned dependencies, as Lambda runs them."""
    return [
        python, "-m", "pip", "install", "--quiet", "--target", str(target),
        "--constraint", str(root / "docker" / "constraints.txt"),
        "--platform", LAMBDA_PLATFORM, "--python-version", LAMBDA_PYTHON,
        "--only-binary=:all:", str(wheel),
    ]  # fmt: skip


def zip_package(package: Path, output: Path) -> int:
    """Zip `package` reproducibly (sorted entries, fixed times, no caches); its size unzipped."""
    import zipfile

    total = 0
    files = sorted(
        p for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(package).as_posix(), (1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if path.stat().st_mode & 0o111 else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            total += len(data)
            archive.writestr(info, data)
    if total > LAMBDA_UNZIPPED_MAX:
        raise ConfigurationError(f"the launcher package is {total >> 20} MiB unzipped",
                                 "Lambda allows 250 MiB; drop dependencies the launcher "
                                 "does not import")
    if not (package / "check" / "launcher.py").exists():
        raise ConfigurationError("the package has no check/launcher.py")
    return total


def build_launcher_package(output: Path, python: str, root: Path = ROOT) -> int:
    import subprocess
    import tempfile

    def run(command: list[str], env: dict[str, str] | None = None) -> None:
        proc = subprocess.run(
            command, capture_output=True, text=True, check=False, env=env and {**os.environ, **env}
        )
        if proc.returncode != 0:
            raise ImageBuildError(
                f"{' '.join(command[1:4])} failed ({proc.returncode}): "
                f"{proc.stderr.strip()[-2000:]}",
                "pip needs access to the package index for the Lambda wheels",
            )

    with tempfile.TemporaryDirectory(prefix="containerscan-launcher-") as tmp:
        workdir = Path(tmp)
        run(launcher_wheel_command(python, root, workdir / "wheels"), PURE_WHEEL_ENV)
        wheels = sorted((workdir / "wheels").glob("containerscan-*.whl"))
        if len(wheels) != 1:
            raise ImageBuildError(f"expected one containerscan wheel, found {len(wheels)}")
        run(launcher_install_command(python, root, wheels[0], workdir / "package"))
        size = zip_package(workdir / "package", output)
    log.info("launcher package built", extra=fields(output=str(output), unzipped=size))
    return size


# ---------------------------------------------------------------------------------- CLI


def repository_uri(registry: str, repository: str) -> str:
    return f"{registry}/{repository}"


@click.group()
def main() -> None:
    """Build, push and promote the containerscan images."""
    from securityhub import logs

    logs.configure("INFO")


@main.command("build")
@click.argument("image", type=click.Choice(sorted(IMAGES)))
@click.option("--tag", required=True, help="Image tag, e.g. the git commit.")
@click.option("--repository", help="ECR repository name (default containerscan/IMAGE).")
@click.option("--qscanner", type=click.Path(dir_okay=False, path_type=Path),
              help="The QScanner binary (check image only).")
@click.option("--qscanner-sha256", help="Its SHA-256 (hex); the build verifies it.")
@click.option("--qscanner-version", default="unknown", show_default=True)
@click.option("--push/--no-push", default=False, help="Log in to ECR and push.")
@click.option("--region", help="AWS region of the repository.")
@click.option("--docker-host", help="Docker engine URL (default DOCKER_HOST).")
def build_command(*, image: str, tag: str, repository: str | None, qscanner: Path | None,
                  qscanner_sha256: str | None, qscanner_version: str, push: bool,
                  region: str | None, docker_host: str | None) -> None:
    """Build IMAGE (check or sidecar); with --push, push it and print repo@digest."""
    spec = IMAGES[image]
    validate_tag(tag)
    buildargs: dict[str, str] = {}
    if spec.needs_qscanner:
        if qscanner is None or not qscanner_sha256:
            raise click.UsageError("the check image needs --qscanner and --qscanner-sha256")
        actual = sha256_file(qscanner)
        if actual != qscanner_sha256.lower():
            raise click.UsageError(f"{qscanner} has SHA-256 {actual}, not {qscanner_sha256}")
        buildargs = {"QSCANNER_SHA256": actual, "QSCANNER_VERSION": qscanner_version}
    context = build_context(ROOT, spec, qscanner)
    client = docker_client(docker_host)
    repo = repository or f"containerscan/{image}"
    local_tag = f"{repo}:{tag}"
    result = build_image(client, context, spec, local_tag, buildargs=buildargs)
    if not push:
        click.echo(result.image_id)
        return
    from securityhub.aws import SessionFactory

    ecr = SessionFactory(default_region=region).client("ecr", region)
    login = ecr_credentials(ecr)
    docker_login(client, login)
    uri = repository_uri(login.registry, repo)
    digest = push_image(client, result.image_id, uri, tag, login)
    click.echo(json.dumps({"image": f"{uri}@{digest}", "tag": f"{uri}:{tag}"}))


@main.command("launcher-package")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("build/launcher.zip"), show_default=True)
@click.option("--python", "python", default=sys.executable, show_default=True,
              help="The interpreter whose pip builds the package.")
def launcher_package_command(output: Path, python: str) -> None:
    """Build the launcher Lambda's zip (Python 3.12 wheels, pinned versions)."""
    size = build_launcher_package(output, python)
    click.echo(f"{output} ({size >> 20} MiB unzipped)")


@main.command("promote")
@click.option("--repository", required=True, help="ECR repository name.")
@click.option("--digest", required=True, help="The tested image's digest (sha256:...).")
@click.option("--tag", required=True, help="The tag to give it, e.g. prod.")
@click.option("--region", help="AWS region of the repository.")
def promote_command(repository: str, digest: str, tag: str, region: str | None) -> None:
    """Tag an already-pushed DIGEST (server side, same bytes)."""
    from securityhub.aws import SessionFactory

    promote(SessionFactory(default_region=region).client("ecr", region), repository, digest, tag)
    click.echo(f"{repository}@{digest} -> {tag}")


if __name__ == "__main__":  # pragma: no cover
    main()
