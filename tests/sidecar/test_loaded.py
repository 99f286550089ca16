"""The loaded-files sampler: deduplicated, bounded, and a failed write is retried later."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sidecar import loaded
from sidecar.loaded import LoadedSampler

DIGEST = "sha256:" + "d" * 64


def _maps(proc: Path, pid: int, *paths: str) -> None:
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    lines = [
        f"7f00000{i:05x}-7f00001{i:05x} r-xp 00000000 08:01 {i} {p}" for i, p in enumerate(paths)
    ]
    (proc / str(pid) / "maps").write_text("\n".join(lines) + "\n")


class Recorder:
    """Keeps what the sampler writes; fails the first `failures` writes."""

    def __init__(self, failures: int = 0) -> None:
        self.writes: list[tuple[str, set[str], bool]] = []
        self.failures = failures

    def write(self, digest: str, paths: set[str], truncated: bool, now: Any, first: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("table unavailable")
        self.writes.append((digest, paths, truncated))


def test_samples_are_deduplicated_and_only_new_paths_are_written(tmp_path: Path) -> None:
    _maps(tmp_path, 10, "/usr/bin/python3.11", "/lib/x86_64-linux-gnu/libz.so.1")
    _maps(tmp_path, 11, "/usr/bin/python3.11")
    recorder = Recorder(failures=1)
    sampler = LoadedSampler(lambda: (10, 11, 12), lambda pid: DIGEST, recorder,  # type: ignore[arg-type]
                            proc=str(tmp_path), clock=lambda: datetime.now(UTC))  # fmt: skip
    sampler.sample()
    sampler.flush()  # fails: kept for the next flush
    assert sampler.errors == 1 and recorder.writes == []
    sampler.sample()
    sampler.flush()
    assert recorder.writes == [
        (DIGEST, {"/usr/bin/python3.11", "/usr/lib/x86_64-linux-gnu/libz.so.1"}, False)
    ]
    sampler.flush()  # nothing new: the window is extended, no path sent again
    assert recorder.writes[-1] == (DIGEST, set(), False)


def test_the_bound_truncates_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loaded, "MAX_PATH_BYTES", 40)
    _maps(tmp_path, 10, "/usr/lib/a-long-library-name.so.1", "/usr/lib/another-one.so.2")
    recorder = Recorder()
    sampler = LoadedSampler(lambda: (10,), lambda pid: DIGEST, recorder, proc=str(tmp_path))  # type: ignore[arg-type]
    sampler.sample()
    sampler.flush()
    [(_, paths, truncated)] = recorder.writes
    assert len(paths) == 1 and truncated


def test_interval_setting() -> None:
    from securityhub.errors import ConfigurationError

    assert loaded.interval_from({}) == loaded.DEFAULT_INTERVAL
    assert loaded.interval_from({loaded.INTERVAL_ENV: "0.5"}) == 0.5
    with pytest.raises(ConfigurationError, match=loaded.INTERVAL_ENV):
        loaded.interval_from({loaded.INTERVAL_ENV: "soon"})


def test_launch_mode_records_under_its_own_image_and_attach_mode_under_each_pid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from sidecar.context import TaskContext

    context = TaskContext.from_metadata(
        {
            "TaskARN": "arn:aws:ecs:us-east-1:123456789012:task/prod/abc",
            "Family": "shop-web",
            "Containers": [{"Name": "app", "DockerId": "abc-1", "ImageID": DIGEST}],
        },
        {"Name": "app"},
    )

    class Client:  # the recorder is built, never written to here
        pass

    class Sessions:
        def client(self, service: str) -> Client:
            assert service == "dynamodb"
            return Client()

    env = {"CONTAINERSCAN_TABLE": "containerscan"}
    launch = loaded.build_sampler(lambda: (), context, env, Sessions(), launch=True)
    attach = loaded.build_sampler(lambda: (), context, env, Sessions(), launch=False)
    assert launch is not None and attach is not None
    assert launch.digest_of(os.getpid()) == DIGEST
    # This test process is in no container of the task: nothing is attributed to it.
    assert attach.digest_of(os.getpid()) is None
    assert loaded.build_sampler(lambda: (), None, env, Sessions(), launch=True) is None
    assert loaded.build_sampler(lambda: (), context, {}, Sessions(), launch=True) is None
