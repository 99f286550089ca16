"""A long-running application for the attach tests: it ticks a counter file.

    python sleeper.py COUNTER_FILE [OPEN_FILE]

Every 20 ms it writes its tick count to COUNTER_FILE (so a test can see it still runs)
and, with OPEN_FILE, opens that file for writing and execs /bin/true every 10 ticks, with a
second thread alive all along.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time


def main() -> None:
    counter = sys.argv[1]
    target = sys.argv[2] if len(sys.argv) > 2 else None
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
    tick = 0
    while True:
        tick += 1
        with open(counter, "w") as fh:
            fh.write(str(tick))
        if target and tick % 10 == 0:
            with open(target, "w") as fh:
                fh.write(str(tick))
            subprocess.run(["/bin/true"], check=False)
        time.sleep(0.02)


if __name__ == "__main__":
    main()
