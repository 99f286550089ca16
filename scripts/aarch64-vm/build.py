"""Build an arm64 guest that runs the seccomp-injection tests on a real arm64 kernel.

    python3 scripts/aarch64-vm/build.py [--cache DIR]

Everything comes from Debian's arm64 archive through apt, with no arm64 code run on this
machine: the packages are downloaded (`apt-get download`, with a private apt state so the
host's dpkg configuration is left alone), unpacked with `dpkg-deb`, and packed with the
project's sources and the pure-Python packages its tests import into an initramfs (a newc
cpio archive) whose /init is `guest-init.sh`. The kernel is Debian's generic arm64 kernel
(`linux-image-arm64`); only its /boot/vmlinuz is kept.

Outputs, in the cache directory (default `.tools/aarch64-vm` in the repository):
`vmlinuz`, `initramfs.cpio` and `build.json` (the package versions). Downloads are kept
in `debs/` and reused; the initramfs is rebuilt on each run (a few seconds) so it always
holds the current sources. `run.py` boots it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_CACHE = REPO / ".tools" / "aarch64-vm"
KERNEL_META = "linux-image-arm64"  # depends on the current linux-image-<abi>-arm64
# The guest's user space: a static busybox (init, sh, true, sleep, poweroff) and Debian's
# Python 3.11 with the shared libraries its interpreter and the imported modules load.
USERLAND = (
    "busybox-static",
    "libc6",
    "libgcc-s1",  # glibc loads it to unwind threads on exit/cancel
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "libffi8",  # ctypes
    "zlib1g",
    "libexpat1",
    "libssl3",  # hashlib
    "libbz2-1.0",
    "liblzma5",
    "libuuid1",
)
# Pure-Python packages the tests import (taken from this interpreter's installation).
PURE_PYTHON = ("ptrace", "pytest", "_pytest", "pluggy", "iniconfig", "packaging", "pygments", "py")
# The project's files the guest needs: the code under test and its tests.
PROJECT = (
    "setup.cfg",
    "securityhub",
    "sidecar",
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/sidecar",
    "scripts/aarch64-vm/guest.py",
)
BUSYBOX_LINKS = ("sh", "true", "sleep", "mount", "poweroff", "cat", "cut", "echo", "mkdir")
APT_TIMEOUT = 600.0  # seconds for one apt command (the kernel package is ~60 MB)
GUEST_SITE = "usr/local/lib/python3.11/dist-packages"


class BuildError(RuntimeError):
    """The guest could not be built."""


class Unavailable(BuildError):
    """What the guest is built from cannot be had here: a host tool is missing, or apt
    cannot reach Debian's arm64 archive (exit status 3: the test that boots it skips)."""


def apt_options(cache: Path) -> list[str]:
    """apt with arm64 as its only architecture and its own lists and (empty) dpkg status."""
    state = cache / "apt"
    (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (state / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    status = state / "status"
    status.touch()
    return [
        "-o", "APT::Architecture=arm64",
        "-o", "APT::Architectures=arm64",
        "-o", f"Dir::State::Lists={state / 'lists'}",
        "-o", f"Dir::State::status={status}",
        "-o", f"Dir::Cache={state / 'cache'}",
        "-o", "Debug::NoLocking=1",
    ]  # fmt: skip


def _tool(name: str) -> str:
    """The full path of a host tool (build() checked they are all there)."""
    path = shutil.which(name)
    if path is None:
        raise Unavailable(f"{name} is not installed")
    return path


def _run(argv: list[str], what: str, cwd: Path | None = None, error: type = BuildError) -> str:
    try:
        done = subprocess.run(
            argv, check=False, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        raise error(f"{what}: timed out after {APT_TIMEOUT:g} s") from exc
    if done.returncode != 0:
        raise error(f"{what} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return done.stdout


def download(cache: Path) -> dict[str, Path]:
    """The kernel and user-space .debs (name -> file), downloaded once. The arm64 package
    lists are fetched on first use, and again when a download fails with them (the
    archive has moved on to newer versions)."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    opts = apt_options(cache)
    update = [_tool("apt-get"), *opts, "-q", "update"]
    if not any((cache / "apt" / "lists").glob("*Packages*")):
        _run(update, "apt-get update (arm64 lists)", error=Unavailable)
        return _fetch(debs, opts)
    try:
        return _fetch(debs, opts)
    except Unavailable:
        _run(update, "apt-get update (arm64 lists)", error=Unavailable)
        return _fetch(debs, opts)


def _fetch(debs: Path, opts: list[str]) -> dict[str, Path]:
    depends = _run([_tool("apt-cache"), *opts, "depends", KERNEL_META], "apt-cache depends")
    kernels = [
        line.split(":", 1)[1].strip()
        for line in depends.splitlines()
        if line.strip().startswith("Depends:") and "linux-image-" in line
    ]
    if not kernels:
        raise BuildError(f"{KERNEL_META} names no kernel package:\n{depends}")
    wanted = [kernels[0].split(":")[0], *USERLAND]
    found = {}
    missing = []
    for name in wanted:
        have = sorted(debs.glob(f"{name}_*_arm64.deb"))
        if have:
            found[name] = have[-1]
        else:
            missing.append(name)
    if missing:
        _run(
            [_tool("apt-get"), *opts, "-q", "download", *missing],
            "apt-get download",
            debs,
            Unavailable,
        )
        for name in missing:
            have = sorted(debs.glob(f"{name}_*_arm64.deb"))
            if not have:
                raise BuildError(f"apt-get download gave no arm64 .deb for {name}")
            found[name] = have[-1]
    found["kernel"] = found.pop(wanted[0])
    return found


def unpack(deb: Path, root: Path) -> None:
    """The data of a .deb into `root`, through the merged-/usr symlinks already there."""
    tar = subprocess.Popen([_tool("dpkg-deb"), "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert tar.stdout is not None
    _run_tar = subprocess.run(
        [_tool("tar"), "-x", "--keep-directory-symlink", "-C", str(root)],
        stdin=tar.stdout,
        capture_output=True,
        check=False,
        text=True,
    )
    tar.stdout.close()
    if tar.wait() != 0 or _run_tar.returncode != 0:
        raise BuildError(f"cannot unpack {deb.name}: {_run_tar.stderr.strip()}")


def kernel_image(deb: Path, out: Path) -> None:
    """/boot/vmlinuz-* of the kernel package (the modules are not needed: an initramfs root
    and the virt machine's PL011 console need none)."""
    boot = out.parent / "kernel-boot"
    shutil.rmtree(boot, ignore_errors=True)
    boot.mkdir()
    dpkg = subprocess.Popen([_tool("dpkg-deb"), "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    tar = subprocess.run(
        [_tool("tar"), "-x", "--wildcards", "-C", str(boot), "./boot/vmlinuz-*"],
        stdin=dpkg.stdout,
        capture_output=True,
        check=False,
        text=True,
    )
    assert dpkg.stdout is not None
    dpkg.stdout.close()
    dpkg.wait()
    images = sorted(boot.glob("boot/vmlinuz-*"))
    if tar.returncode != 0 or not images:
        raise BuildError(f"{deb.name} has no /boot/vmlinuz-*: {tar.stderr.strip()}")
    images[0].replace(out)
    shutil.rmtree(boot)


def make_root(debs: dict[str, Path], root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    for sub in ("usr/bin", "usr/sbin", "usr/lib", "proc", "sys", "dev", "tmp", "work", "etc"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib"):
        (root / link).symlink_to(f"usr/{link}")
    for name, deb in debs.items():
        if name != "kernel":
            unpack(deb, root)
    for prune in (
        "usr/share/doc",
        "usr/share/man",
        "usr/share/lintian",
        "usr/lib/python3.11/ensurepip",
    ):
        shutil.rmtree(root / prune, ignore_errors=True)
    gconv = root / "usr/lib/aarch64-linux-gnu/gconv"
    shutil.rmtree(gconv, ignore_errors=True)
    for name in BUSYBOX_LINKS:
        target = root / "usr/bin" / name
        if not target.exists():
            target.symlink_to("busybox")
    (root / "usr/bin/python3").unlink(missing_ok=True)
    (root / "usr/bin/python3").symlink_to("python3.11")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    init = root / "init"
    shutil.copyfile(HERE / "guest-init.sh", init)
    init.chmod(0o755)
    site = root / GUEST_SITE
    site.mkdir(parents=True, exist_ok=True)
    for module in PURE_PYTHON:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise BuildError(f"the pure-Python package {module} is not installed here")
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            _copy_tree(origin.parent, site / module)
        else:
            shutil.copyfile(origin, site / origin.name)
    for rel in PROJECT:
        source = REPO / rel
        dest = root / "work/containerscan" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            _copy_tree(source, dest)
        else:
            shutil.copyfile(source, dest)


def _copy_tree(source: Path, dest: Path) -> None:
    """Sources only: no bytecode, and no compiled extension (an x86_64 one would not load;
    python-ptrace then uses its pure-Python binding)."""
    shutil.copytree(
        source,
        dest,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"),
        dirs_exist_ok=True,
    )


def pack(root: Path, out: Path) -> None:
    """An uncompressed newc cpio of `root` (the kernel unpacks it without decompressing)."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    with open(out, "wb") as fh:
        done = subprocess.run(
            [_tool("cpio"), "--quiet", "-o", "-H", "newc", "--owner", "0:0"],
            cwd=root,
            input="\n".join(names).encode(),
            stdout=fh,
            stderr=subprocess.PIPE,
            check=False,
        )
    if done.returncode != 0:
        raise BuildError(f"cpio failed: {done.stderr.decode().strip()}")


def build(cache: Path) -> dict[str, str]:
    for tool in ("apt-get", "dpkg-deb", "tar", "cpio"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} is not installed (Debian: apt-get install {tool})")
    cache.mkdir(parents=True, exist_ok=True)
    debs = download(cache)
    kernel = cache / "vmlinuz"
    if not kernel.exists() or kernel.stat().st_mtime < debs["kernel"].stat().st_mtime:
        kernel.unlink(missing_ok=True)
        kernel_image(debs["kernel"], kernel)
    root = cache / "root"
    make_root(debs, root)
    pack(root, cache / "initramfs.cpio")
    info = {name: deb.name for name, deb in sorted(debs.items())}
    (cache / "build.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    opts = parser.parse_args()
    try:
        info = build(opts.cache.resolve())
    except BuildError as exc:
        print(f"aarch64-vm: {exc}", file=sys.stderr)
        return 3 if isinstance(exc, Unavailable) else 2
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
