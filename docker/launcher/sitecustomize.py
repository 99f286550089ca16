"""Installed in the self-contained launcher's lib/python3.X/ (docker/launcher/bundle.py).

The launcher's Python runs inside the application's image and must use nothing from it.

- `ctypes.util.find_library` would: it runs the image's /sbin/ldconfig, gcc or ld and may
  name one of the image's libraries (musl's libc, in an Alpine image) for the process to
  load. python-ptrace calls it for "c" at import. Here it answers from the bundled libraries
  only: their sonames, which the bundled loader finds in the bundle's lib/ directory.
- The bundle's site-packages is put on sys.path: a distribution's interpreter may look
  elsewhere (Debian's looks in dist-packages directories only).
"""

import ctypes.util
import site
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent  # ROOT/lib/python3.X
_LIB = _HERE.parent  # ROOT/lib
_SITE = _HERE / "site-packages"


def _find_library(name: str) -> str | None:
    for candidate in sorted(_LIB.glob(f"lib{name}.so*")):
        return candidate.name
    return None


ctypes.util.find_library = _find_library
if str(_SITE) not in sys.path:
    site.addsitedir(str(_SITE))
