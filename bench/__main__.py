"""Run every benchmark module's `main()` in turn: `python -m bench [name ...]`."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import time
from pathlib import Path


def modules() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    chosen = argv or modules()
    unknown = sorted(set(chosen) - set(modules()))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(modules())}")
        return 2
    for name in chosen:
        module = importlib.import_module(f"bench.{name}")
        entry = getattr(module, "main", None)
        if entry is None:
            continue
        print(f"\n=== bench.{name} ===", flush=True)
        started = time.perf_counter()
        # Benchmarks with an argv parameter get an empty one: their defaults, not our args.
        if inspect.signature(entry).parameters:
            entry([])
        else:
            entry()
        print(f"=== bench.{name}: {time.perf_counter() - started:.1f} s ===", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
