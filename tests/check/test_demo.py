"""The interim quick start: moto's server with the emulator, init, two runs, archive shown."""

from __future__ import annotations

import pytest

from check import demo


@pytest.mark.slow
def test_demo_runs_end_to_end() -> None:
    lines: list[str] = []
    assert demo.run(lines.append) == 0
    text = "\n".join(lines)
    assert "table containerscan-demo: created" in text
    assert "'created': 5" in text and "'archived': 2" in text
    # The last `findings --state archived --repository shop/worker` lists exactly two.
    assert text.rstrip().splitlines()[-2] == "2 finding(s)"
    assert text.count("ARCHIVED") >= 4
