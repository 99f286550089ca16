"""A small client of the OCI distribution API (distribution-spec v1.1), on the stdlib.

Pull: manifests (OCI and Docker schema 2, indexes and manifest lists) and blobs, streamed.
Push (for the local quick start and the tests): monolithic blob uploads and manifests.

Authentication follows the registry's `WWW-Authenticate` challenge (distribution's
token-auth spec): `Bearer realm=...,service=...,scope=...` fetches a token from the realm
(with the basic credentials when there are some), `Basic` sends the credentials directly.
ECR answers with a Basic challenge and takes the `AWS:<password>` pair that
GetAuthorizationToken returns (`check.ecr`), so ECR needs nothing special here.

Time: every socket operation has a timeout (`timeout`, capped by what is left before the
`deadline`), and every read checks the deadline, so a registry that drips a byte at a time
cannot hold a scan past it (a per-operation timeout alone never fires on a drip).

Blob downloads may redirect to object storage (ECR and Docker Hub send S3/CloudFront
URLs, presigned). Redirects are followed by hand without the Authorization header, which
such storage rejects.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import IO, Any

from check.builtin.image import (
    DEFAULT_PLATFORM,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MAX_CONFIG_BYTES,
    MAX_INDEX_DEPTH,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    LayerRef,
    check_digest,
    layers_from_manifest,
    load_json,
    manifest_kind,
    select_platform,
    verify_bytes,
)
from check.scanner import RegistryAuth
from securityhub.errors import ImageError, ScanError
from securityhub.logs import fields, get_logger, register_secret

log = get_logger("check.builtin.registry")

DOCKER_HUB = "registry-1.docker.io"
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
MAX_REDIRECTS = 5
CHUNK = 1024 * 1024
DEFAULT_TIMEOUT = 60.0
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_REFERENCE = re.compile(
    r"^(?P<name>[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class ImageReference:
    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @classmethod
    def parse(cls, text: str) -> ImageReference:
        """`[host[:port]/]name[:tag][@sha256:...]`, with Docker Hub's defaults."""
        host, slash, rest = text.partition("/")
        if not slash or not ("." in host or ":" in host or host == "localhost"):
            host, rest = DOCKER_HUB, text
            if "/" not in rest.split("@")[0].split(":")[0]:
                rest = "library/" + rest
        match = _REFERENCE.match(rest)
        if not match:
            raise ImageError(
                f"not an image reference: {text!r}",
                "use host/repository:tag or host/repository@sha256:<hex>",
            )
        return cls(host=host, repository=match["name"], tag=match["tag"], digest=match["digest"])


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the caller follows redirects itself, without the credentials


class RegistryClient:
    """Talks to one registry host; caches one bearer token per scope."""

    def __init__(
        self,
        host: str,
        auth: RegistryAuth | None = None,
        insecure: bool | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        deadline: float | None = None,
    ) -> None:
        self.host = host
        self.deadline = deadline  # a time.monotonic() value; None: no overall deadline
        self.auth = auth
        if insecure is None:  # plain HTTP on loopback only, as docker does for localhost
            insecure = host.rsplit(":", 1)[0] in LOOPBACK_HOSTS or host.startswith("[::1]")
        plain = insecure
        self.base = f"{'http' if plain else 'https'}://{host}"
        self.timeout = timeout
        self._tokens: dict[str, str] = {}
        self._opener = urllib.request.build_opener(_NoRedirect)
        if auth:
            register_secret(auth.password)

    # ------------------------------------------------------------------------- transport

    def socket_timeout(self) -> float:
        """The timeout of the next socket operation; a ScanError past the deadline."""
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ScanError(f"{self.host}: timed out (the scan's deadline passed)",
                            "raise the scan timeout, or check the registry's health")
        return min(self.timeout, left)

    def read_capped(self, response: Any, cap: int) -> bytes:
        """Up to `cap` + 1 bytes of a response, checking the deadline between reads."""
        chunks, size = [], 0
        while size <= cap:
            self.socket_timeout()
            chunk = response.read1(min(CHUNK, cap + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    def _basic(self) -> str | None:
        if not self.auth:
            return None
        pair = f"{self.auth.username}:{self.auth.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def _authorization(self, scope: str) -> str | None:
        token = self._tokens.get(scope)
        return f"Bearer {token}" if token else None

    def _fetch_token(self, challenge: str, scope: str) -> None:
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        realm = params.get("realm")
        if not realm:
            raise ImageError(f"{self.host} sent a bearer challenge without a realm")
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        request = urllib.request.Request(url)  # noqa: S310 - the registry's own realm
        basic = self._basic()
        if basic:
            request.add_header("Authorization", basic)
        try:
            with self._opener.open(request, timeout=self.socket_timeout()) as response:
                doc = json.loads(self.read_capped(response, MAX_MANIFEST_BYTES))
        except urllib.error.HTTPError as exc:
            raise ImageError(
                f"{self.host}: the token service refused the credentials (HTTP {exc.code})",
                "check the registry user name and password",
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ImageError(f"{self.host}: cannot get a token from {realm}: {exc}") from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise ImageError(f"{self.host}: the token service returned no token")
        register_secret(token)
        self._tokens[scope] = token

    def request(
        self,
        method: str,
        path_or_url: str,
        scope: str,
        *,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> Any:
        """Send one request, answering the auth challenge and following redirects."""
        url = path_or_url if "://" in path_or_url else self.base + path_or_url
        send_auth = True
        challenged = False
        for _ in range(MAX_REDIRECTS + 2):
            request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
            for key, value in (headers or {}).items():
                request.add_header(key, value)
            if send_auth:
                authorization = self._authorization(scope) or (
                    self._basic() if challenged else None
                )
                if authorization:
                    request.add_header("Authorization", authorization)
            try:
                response = self._opener.open(request, timeout=self.socket_timeout())
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and send_auth and not challenged:
                    challenged = True
                    challenge = exc.headers.get("WWW-Authenticate", "")
                    exc.close()
                    if challenge.lower().startswith("bearer"):
                        self._fetch_token(challenge, scope)
                    elif not self.auth:
                        raise ImageError(
                            f"{self.host} requires credentials for {scope}",
                            "pass the registry credentials",
                        ) from None
                    continue
                if exc.code in (301, 302, 303, 307, 308) and exc.headers.get("Location"):
                    url = urllib.parse.urljoin(url, exc.headers["Location"])
                    send_auth = urllib.parse.urlsplit(url).netloc == self.host
                    exc.close()
                    continue
                detail = exc.read(2048).decode("utf-8", "replace")
                exc.close()
                if exc.code in ok:
                    return exc
                if exc.code == 401:
                    raise ImageError(
                        f"{self.host} refused the credentials for {scope}",
                        "check the registry user name and password",
                    ) from None
                raise ImageError(
                    f"{self.host}: {method} {urllib.parse.urlsplit(url).path} "
                    f"failed with HTTP {exc.code}: {detail.strip()[:300]}"
                ) from None
            except (urllib.error.URLError, OSError) as exc:
                raise ImageError(
                    f"cannot reach registry {self.host}: {exc}",
                    "check the network and the registry address",
                ) from None
            if response.status in ok:
                return response
            response.close()
            # Paths only: redirect targets carry presigned signatures in their query.
            raise ImageError(f"{self.host}: unexpected HTTP {response.status} for {method} "
                             f"{urllib.parse.urlsplit(url).path}")
        raise ImageError(f"{self.host}: too many redirects or challenges for "
                         f"{urllib.parse.urlsplit(url).path}")

    # ------------------------------------------------------------------------------ pull

    def get_manifest(self, repository: str, reference: str) -> tuple[str, bytes, str]:
        """(media type, bytes, digest) of a manifest or index; verified when pinned."""
        with self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            f"repository:{repository}:pull",
            headers={"Accept": ACCEPT},
        ) as response:
            data = self.read_capped(response, MAX_MANIFEST_BYTES)
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        where = f"{self.host}/{repository}@{reference}"
        if len(data) > MAX_MANIFEST_BYTES:
            raise ImageError(f"the manifest of {where} is larger than {MAX_MANIFEST_BYTES} bytes")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if reference.startswith("sha256:"):
            verify_bytes(data, reference, "manifest", where)
        return media_type, data, digest

    def open_blob(self, repository: str, digest: str) -> IO[bytes]:
        check_digest(digest, f"{self.host}/{repository}")
        response = self.request(
            "GET", f"/v2/{repository}/blobs/{digest}", f"repository:{repository}:pull"
        )
        if self.deadline is None:
            return response
        return io.BufferedReader(_DeadlineReader(response, self), CHUNK)

    # ------------------------------------------------------------------------------ push

    def push_blob(self, repository: str, data: bytes) -> str:
        """Monolithic upload (POST then PUT with the digest); returns the digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        scope = f"repository:{repository}:pull,push"
        head = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scope, ok=(200, 404))
        exists = head.status == 200
        head.close()
        if exists:
            return digest
        with self.request(
            "POST", f"/v2/{repository}/blobs/uploads/", scope, data=b"", ok=(202,)
        ) as response:
            location = response.headers["Location"]
        url = urllib.parse.urljoin(self.base + "/", location)
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
        with self.request(
            "PUT",
            url,
            scope,
            headers={"Content-Type": "application/octet-stream"},
            data=data,
            ok=(201,),
        ):
            pass
        return digest

    def push_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        scope = f"repository:{repository}:pull,push"
        with self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            scope,
            headers={"Content-Type": media_type},
            data=data,
            ok=(201,),
        ):
            pass
        return "sha256:" + hashlib.sha256(data).hexdigest()


class _DeadlineReader(io.RawIOBase):
    """A blob response read with `read1` (what has arrived) and the deadline checked."""

    def __init__(self, response: Any, client: RegistryClient) -> None:
        self._response = response
        self._client = client

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._client.socket_timeout()
        data = self._response.read1(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._response.close()
        super().close()


class RegistrySource:
    """An image in a registry, as a `check.builtin.image.ImageSource`."""

    def __init__(
        self,
        reference: ImageReference,
        auth: RegistryAuth | None = None,
        platform: str = DEFAULT_PLATFORM,
        insecure: bool | None = None,
        client: RegistryClient | None = None,
        *,
        deadline: float | None = None,
    ) -> None:
        self.ref = reference
        self.platform = platform
        self.client = client or RegistryClient(reference.host, auth, insecure, deadline=deadline)
        self.description = str(reference)

    def resolve(self) -> tuple[str, dict[str, Any], tuple[LayerRef, ...]]:
        repo = self.ref.repository
        media_type, data, digest = self.client.get_manifest(repo, self.ref.reference)
        doc = load_json(data, "manifest", self.description)
        for _ in range(MAX_INDEX_DEPTH + 1):
            if manifest_kind(doc, media_type or None) == "manifest":
                break
            entry = select_platform(doc, self.platform, self.description)
            child = check_digest(entry.get("digest"), self.description)
            media_type, data, digest = self.client.get_manifest(repo, child)
            doc = load_json(data, "manifest", self.description)
        else:
            raise ImageError(f"image indexes nested too deeply in {self.description}")
        config_digest = check_digest((doc.get("config") or {}).get("digest"), self.description)
        with self.client.open_blob(repo, config_digest) as stream:
            config_raw = stream.read(MAX_CONFIG_BYTES + 1)
        if len(config_raw) > MAX_CONFIG_BYTES:
            raise ImageError(f"the config of {self.description} is too large")
        verify_bytes(config_raw, config_digest, "config", self.description)
        config = load_json(config_raw, "config", self.description)
        log.debug("manifest resolved", extra=fields(image=self.description, digest=digest))
        return digest, config, layers_from_manifest(doc, config, self.description)

    def open_blob(self, layer: LayerRef) -> IO[bytes]:
        return self.client.open_blob(self.ref.repository, layer.digest)

    def close(self) -> None:
        return None
