"""Fixtures: the shared advisory data and a real distribution registry on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from check.quickstart.data import advisories_dir

REPO = Path(__file__).resolve().parents[3]
ADVISORIES_ENV = "CONTAINERSCAN_TEST_ADVISORIES"
REGISTRY_BINARY = "docker-registry"  # Debian's package of the distribution registry v2


def advisories_root() -> Path:
    return Path(os.environ.get(ADVISORIES_ENV) or advisories_dir())


@pytest.fixture(scope="session")
def advisories() -> Path:
    root = advisories_root()
    if not (root / "pypa-osv").is_dir() or not (root / "alpine-secdb").is_dir():
        pytest.fail(f"advisory data not found at {root}; the repository ships it in "
                    f"check/quickstart/advisories (or set {ADVISORIES_ENV})")
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Registry:
    host: str  # 127.0.0.1:<port>
    username: str | None = None
    password: str | None = None


def _htpasswd(username: str, password: str) -> str:
    # The registry's htpasswd auth accepts bcrypt only; crypt(3) of glibc writes it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:  # removed in Python 3.13
            pytest.skip("no bcrypt writer for the registry's htpasswd file (crypt module)")
    return f"{username}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n"


def _start_registry(tmp: Path, auth: str = "") -> Iterator[str]:
    binary = shutil.which(REGISTRY_BINARY)
    if binary is None:
        pytest.skip(f"{REGISTRY_BINARY} is not installed (apt-get install docker-registry)")
    port = free_port()
    config = tmp / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + auth
    )
    log = (tmp / "registry.log").open("wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    host = f"127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://{host}/v2/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # 401: up, and asking for credentials
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError((tmp / "registry.log").read_text()) from None
                time.sleep(0.05)
        yield host
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    for host in _start_registry(tmp_path_factory.mktemp("registry")):
        yield Registry(host)


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    user, password = "scanner", "s3cret-registry-pw"
    tmp = tmp_path_factory.mktemp("auth-registry")
    (tmp / "htpasswd").write_text(_htpasswd(user, password))
    auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {tmp / 'htpasswd'}\n"
    for host in _start_registry(tmp, auth):
        yield Registry(host, user, password)


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry behind bearer-token auth, with its token service on loopback."""
    pytest.importorskip("cryptography", reason="the token service signs JWTs with it")
    from tests.check.builtin.tokenserver import TokenServer

    user, password = "robot", "t0ken-service-pw"
    tmp = tmp_path_factory.mktemp("token-registry")
    tokens = TokenServer(tmp, user, password)
    tokens.start()
    try:
        for host in _start_registry(tmp, tokens.registry_auth_config()):
            yield Registry(host, user, password)
    finally:
        tokens.stop()
