"""Build the Dockerfiles with Debian's buildah and run what they built, on this machine.

Public base images cannot be pulled here, so the base is made from Debian's packages:
`debootstrap` (bookworm, minbase, plus python3, python3-venv, python-is-python3 and
ca-certificates), committed with `buildah from scratch`. The machine's CA bundle goes into
it as PIP_CERT, so that pip inside the build reaches PyPI through the same TLS path as pip
outside. Builds use `--isolation chroot` (no OCI runtime: `podman run` fails here on
cgroups) and the vfs storage driver under a directory of the test's own.

`buildah run` cannot make the root file system read-only, so `run_image` runs the image the
way its configuration says (entrypoint, command, environment, user, working directory) with
util-linux `unshare` and coreutils `chroot`: a private mount namespace, the image's root
bind-mounted read-only, a writable directory at /tmp, /proc and /dev, the network of the
host (the emulator listens on its loopback), then the image's user.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUITE = "bookworm"
# debootstrap fetches from the mirror this machine's apt already uses (deb822 `.sources`
# files, else `sources.list`): the test names no mirror of its own.
APT_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
BASE_IMAGE = "localhost/containerscan-test-base:bookworm"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
IMAGE_CA = "/etc/ssl/certs/host-ca-bundle.crt"
TOOLS = ("buildah", "debootstrap", "unshare", "chroot")


def debian_mirror(sources: Sequence[Path] = APT_SOURCES, suite: str = SUITE) -> str:
    """The URI apt is configured to fetch `suite` from on this machine."""
    for source in sources:
        files = sorted(source.glob("*.sources")) if source.is_dir() else [source]
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except OSError:
                continue
            if path.suffix == ".sources":  # deb822: stanzas of `Key: value` lines
                for stanza in text.split("\n\n"):
                    keys = dict(line.split(":", 1) for line in stanza.splitlines()
                                if ":" in line and not line.lstrip().startswith("#"))
                    if suite in keys.get("Suites", "").split() and keys.get("URIs"):
                        return keys["URIs"].split()[0]
            else:  # one-line style: deb [options] URI suite components...
                for line in text.splitlines():
                    words = [w for w in line.split() if not w.startswith("[")]
                    if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                        return words[1]
    raise AssertionError(f"no Debian mirror for {suite} in {', '.join(map(str, sources))}: "
                         "debootstrap needs one (configure apt first)")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


@dataclass(frozen=True)
class Buildah:
    """buildah with its own storage (vfs) under `root`."""

    root: Path

    def command(self, *args: str) -> list[str]:
        return ["buildah", "--root", str(self.root / "storage"), "--runroot",
                str(self.root / "run"), "--storage-driver", "vfs", *args]

    def __call__(self, *args: str, timeout: float = 900) -> str:
        result = subprocess.run(self.command(*args), capture_output=True, text=True,
                                timeout=timeout, check=False)
        if result.returncode != 0:
            raise AssertionError(f"buildah {' '.join(args[:3])} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result.stdout.strip()

    def has_image(self, name: str) -> bool:
        result = subprocess.run(self.command("inspect", "--type", "image", name),
                                capture_output=True, text=True, timeout=60, check=False)
        return result.returncode == 0

    def base_image(self, cache: Path) -> str:
        """The debootstrap'd base, made once per cache directory."""
        if self.has_image(BASE_IMAGE):
            return BASE_IMAGE
        rootfs = cache / f"rootfs-{SUITE}"
        if not (rootfs / "usr" / "bin" / "python3").exists():
            shutil.rmtree(rootfs, ignore_errors=True)
            subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                            SUITE, str(rootfs), debian_mirror()],
                           capture_output=True, text=True, timeout=1800, check=True)
        shutil.copyfile(HOST_CA, rootfs / IMAGE_CA.lstrip("/"))
        container = self("from", "scratch")
        mount = Path(self("mount", container))
        subprocess.run(["cp", "-a", f"{rootfs}/.", f"{mount}/"], check=True, timeout=600)
        self("umount", container)
        self("config", "--env", f"PIP_CERT={IMAGE_CA}", "--env",
             "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", container)
        self("commit", "-q", container, BASE_IMAGE)
        self("rm", container)
        return BASE_IMAGE

    def build(self, context: Path, dockerfile: str, tag: str,
              build_args: Mapping[str, str]) -> str:
        args = [f"--build-arg={k}={v}" for k, v in build_args.items()]
        self("bud", "--isolation", "chroot", *args, "-f", dockerfile, "-t", tag, str(context),
             timeout=1800)
        return tag

    def config(self, image: str) -> dict[str, Any]:
        config: dict[str, Any] = json.loads(self("inspect", "--type", "image", image))["OCIv1"][
            "config"]
        return config

    def rootfs(self, image: str) -> tuple[str, Path]:
        container = self("from", image)
        return container, Path(self("mount", container))


def run_image(rootfs: Path, config: Mapping[str, Any], tmp: Path, *,
              command: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the image's entrypoint (with `command` instead of its Cmd) as the image's user,
    the root read-only, `tmp` writable at /tmp."""
    user = str(config.get("User") or "0:0")
    if ":" not in user:
        user = f"{user}:{user}"
    variables = dict(item.split("=", 1) for item in config.get("Env") or ())
    variables.update(env or {})
    argv = [*(config.get("Entrypoint") or ()), *(command if command is not None
                                                 else config.get("Cmd") or ())]
    workdir = config.get("WorkingDir") or "/"
    root = shlex.quote(str(rootfs))
    script = "\n".join([
        "set -e",
        f"mount --bind {root} {root}",
        f"mount --bind {shlex.quote(str(tmp))} {root}/tmp",
        f"mount -t proc proc {root}/proc",
        f"mount --bind /dev {root}/dev",
        f"mount -o remount,bind,ro {root}",
        f"exec chroot --userspec={shlex.quote(user)} {root} /usr/bin/env -i -C "
        f"{shlex.quote(workdir)} "
        + " ".join(shlex.quote(f"{k}={v}") for k, v in variables.items())
        + " " + " ".join(shlex.quote(a) for a in argv),
    ])
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c",
                           script], capture_output=True, text=True, timeout=timeout, check=False)
