"""Build the self-contained sidecar launcher: containerscan, the Python running this script,
the third-party packages containerscan needs, every shared library they load, and the
dynamic loader, in one directory that runs on any Linux image of the same architecture.

    python3 docker/launcher/bundle.py DEST [--source DIR] [--cc gcc]

Run it with the interpreter to bundle (the sidecar image's, in Dockerfile.sidecar), in the
environment where containerscan's dependencies are installed. Layout of DEST:

    bin/containerscan-run   static entry point (containerscan-run.c, built with --cc)
    bin/python3             the interpreter's ELF
    lib/ld.so               its dynamic loader (PT_INTERP), run explicitly by the entry point
    lib/*.so*               every library `ldd` resolves for the interpreter and extensions
    lib/python3.X/          the standard library, lib-dynload, site-packages (containerscan
                            from --source, its requirements from this environment), and
                            sitecustomize.py (ctypes.util.find_library answers from lib/)
    share/containerscan/policies/   the bundled TracingPolicies (sidecar.policy.policies_dir)

Python finds its prefix from bin/python3's location (the lib/python3.X/os.py landmark), so
no PYTHONHOME is needed; the loader gets the library path as an argument, so no
LD_LIBRARY_PATH is needed either. Byte code is compiled with unchecked hashes, so a copy that
does not keep modification times (an init container's `cp -r`) still uses it.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT_PACKAGES = ("check", "securityhub", "sidecar")
DISTRIBUTION = "containerscan"
# Standard-library parts a headless tracer never imports (and their native libraries:
# Tk and X11, ncurses, readline, dbm).
STDLIB_SKIP = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "site-packages",
    "config-3*",  # static libpython and its build files
}
DYNLOAD_SKIP = ("_tkinter", "_curses", "readline", "_dbm", "_gdbm", "nis", "_test", "xxlimited")
# `ldd` lines: "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" and the loader's
# "/lib64/ld-linux-x86-64.so.2 (0x...)".
LDD_LIBRARY = re.compile(r"=>\s+(/\S+)")
LDD_LOADER = re.compile(r"^\s*(/\S*ld-linux\S*)\s+\(")


class BundleError(Exception):
    pass


def requirement_closure(name: str) -> list[metadata.Distribution]:
    """The installed distributions `name` requires (not its extras), transitively."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(_requirements(metadata.distribution(name)))
    while todo:
        req = todo.pop()
        key = req.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = metadata.distribution(req)
        except metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python
        seen[key] = dist
        todo.extend(_requirements(dist))
    return list(seen.values())


def _requirements(dist: metadata.Distribution) -> list[str]:
    out = []
    for spec in dist.requires or []:
        if "extra ==" in spec.replace("extra==", "extra =="):
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
        if match:
            out.append(match.group(0))
    return out


def copy_distribution(
    dist: metadata.Distribution, site: Path, dest_site: Path, suffix: str = ""
) -> None:
    """Copy the files a distribution installed under site-packages (RECORD), those whose
    name ends with `suffix`."""
    for file in dist.files or []:
        if not file.name.endswith(suffix):
            continue
        src = Path(str(dist.locate_file(file))).resolve()
        try:
            rel = src.relative_to(site)
        except ValueError:
            continue  # console scripts in bin/, headers: not needed
        if not src.is_file():
            continue
        target = dest_site / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def copy_tree(src: Path, dest: Path, skip: set[str] | None = None) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", *(skip or ()))
    shutil.copytree(src, dest, ignore=ignore, dirs_exist_ok=True, symlinks=False)


def elf_files(root: Path) -> list[Path]:
    out = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and ".so" in path.name:
            with open(path, "rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    out.append(path)
    return out


def shared_libraries(files: list[Path]) -> tuple[set[Path], Path | None]:
    """The libraries the loader resolves for `files`, and the loader itself."""
    ldd = shutil.which("ldd")
    if ldd is None:
        raise BundleError("ldd not found (Debian: libc-bin)")
    libraries: set[Path] = set()
    loader = None
    for path in files:
        result = subprocess.run([ldd, str(path)], capture_output=True, text=True, check=False)
        for line in result.stdout.splitlines():
            if "not found" in line:
                raise BundleError(f"{path}: {line.strip()}")
            found = LDD_LIBRARY.search(line)
            if found:
                libraries.add(Path(found.group(1)))
                continue
            found = LDD_LOADER.match(line)
            if found:
                loader = Path(found.group(1))
    return libraries, loader


def build_entry_point(cc: str, out: Path) -> None:
    source = HERE / "containerscan-run.c"
    cmd = [cc, "-static", "-Os", "-s", "-Wall", "-Wextra", "-o", str(out), str(source)]
    subprocess.run(cmd, check=True)


def bundle(dest: Path, source: Path, cc: str) -> None:
    if dest.exists() and any(dest.iterdir()):
        raise BundleError(f"{dest} is not empty")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    executable = Path(os.path.realpath(sys.executable))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    libdir = dest / "lib"
    pylib = libdir / version
    shutil.copy2(executable, dest / "bin" / "python3")
    copy_tree(stdlib, pylib, STDLIB_SKIP)
    dynload = pylib / "lib-dynload"
    for path in list(dynload.iterdir()):
        if path.name.startswith(DYNLOAD_SKIP):
            path.unlink()
    dest_site = pylib / "site-packages"
    dest_site.mkdir(exist_ok=True)
    for dist in requirement_closure(DISTRIBUTION):
        copy_distribution(dist, site, dest_site)
    for package in PROJECT_PACKAGES:
        copy_tree(source / package, dest_site / package)
    # The compiled stop loop (sidecar/stoploop): built by the install, not in the sources.
    copy_distribution(metadata.distribution(DISTRIBUTION), site, dest_site, suffix=".so")
    if not list((dest_site / "sidecar" / "stoploop").glob("_stoploop*.so")):
        raise BundleError(
            "sidecar/stoploop/_stoploop*.so is missing: install containerscan with a C "
            "compiler present (pip builds it) before bundling"
        )
    # Into the standard library directory, ahead of site-packages on sys.path, replacing a
    # distribution's own (Debian's links to /etc/python3.X/sitecustomize.py).
    (pylib / "sitecustomize.py").unlink(missing_ok=True)
    shutil.copy2(HERE / "sitecustomize.py", pylib / "sitecustomize.py")
    copy_tree(source / "policies", dest / "share" / "containerscan" / "policies")
    libraries, loader = shared_libraries([dest / "bin" / "python3", *elf_files(pylib)])
    if loader is None:
        raise BundleError(f"{executable}: no dynamic loader found (a static Python?)")
    for library in sorted(libraries):
        shutil.copy2(library, libdir / library.name)  # follows symlinks: the real file
    shutil.copy2(loader, libdir / "ld.so")
    strip = shutil.which("strip")
    if strip:  # debug symbols: most of libpython's size
        targets = [dest / "bin" / "python3", *(p for p in libdir.iterdir() if p.is_file())]
        subprocess.run([strip, "--strip-unneeded", *map(str, targets)], check=True)
    build_entry_point(cc, dest / "bin" / "containerscan-run")
    compileall.compile_dir(
        str(pylib),
        quiet=2,
        workers=1,
        ddir=None,
        invalidation_mode=compileall.py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--source", type=Path, default=HERE.parents[1], help="project root")
    parser.add_argument("--cc", default="gcc", help="C compiler for the static entry point")
    opts = parser.parse_args()
    try:
        bundle(opts.dest.resolve(), opts.source.resolve(), opts.cc)
    except (BundleError, OSError, subprocess.CalledProcessError) as exc:
        print(f"bundle: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
