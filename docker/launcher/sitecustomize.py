"""Installed in the self-contained launcher's site-packages (docker/launcher/bundle.py).

The launcher's Python runs inside the application's image and must use nothing from it.
`ctypes.util.find_library` would: it runs the image's /sbin/ldconfig, gcc or ld and may name
one of the image's libraries (musl's libc, in an Alpine image) for the process to load.
python-ptrace calls it for "c" at import. Here it answers from the bundled libraries only:
their sonames, which the bundled loader finds in the bundle's lib/ directory.
"""

import ctypes.util
from pathlib import Path

_LIB = Path(__file__).resolve().parents[3]  # ROOT/lib/python3.X/site-packages -> ROOT/lib


def _find_library(name: str) -> str | None:
    for candidate in sorted(_LIB.glob(f"lib{name}.so*")):
        return candidate.name
    return None


ctypes.util.find_library = _find_library
