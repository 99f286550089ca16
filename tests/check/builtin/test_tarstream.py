"""The tar reader against GNU tar's own archives, read back by tarfile as the reference."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from check.builtin.tarstream import MAX_TAR_HEADER, OversizedHeader, TarFormatError, TarReader


def _members(data: bytes) -> list[tuple[str, str, int, str, bytes]]:
    reader, found = TarReader(io.BytesIO(data).read), []
    while (member := reader.next()) is not None:
        content = reader.read_data() if member.isfile() else b""
        found.append((member.name, member.type.decode(), member.size, member.linkname, content))
    return found


def _reference(data: bytes) -> list[tuple[str, str, int, str, bytes]]:
    found = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for info in tar:
            stream = tar.extractfile(info) if info.isfile() else None
            kind = "0" if info.type == tarfile.AREGTYPE else info.type.decode()
            found.append((info.name, kind, info.size if info.isfile() else 0,
                          info.linkname, stream.read() if stream else b""))
    return found


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    deep = root / ("d" * 90) / ("e" * 90) / ("f" * 90)  # beyond ustar's 100+155 characters
    deep.mkdir(parents=True)
    (deep / ("long-name-" * 12 + ".txt")).write_text("deep\n")
    (root / "empty").write_bytes(b"")
    (root / "unicode-ü-😀.txt").write_text("ü\n")
    (root / "link").symlink_to("d" * 90 + "/" + "e" * 90 + "/" + "f" * 90)
    (root / "hard").hardlink_to(root / "empty")
    for source in sorted(Path("/usr/lib/python3.11/json").glob("*.py")):  # real files
        shutil.copy(source, root / source.name)
    return root


@pytest.mark.parametrize("fmt", ["gnu", "posix", "ustar"])
def test_gnu_tar_archives_read_like_tarfile_reads_them(tree: Path, fmt: str) -> None:
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is not installed")
    command = ["tar", f"--format={fmt}", "-C", str(tree), "-cf", "-", "."]
    if fmt == "ustar":  # ustar cannot hold the long names: leave the deep tree out
        command[-1:] = ["empty", "hard", "decoder.py", "encoder.py", "scanner.py"]
    data = subprocess.run(command, check=True, capture_output=True).stdout
    ours = _members(data)
    assert ours == [m for m in _reference(data) if m[1] != "g"]
    assert len(ours) >= 5


def test_oversized_extended_headers_and_corruption_are_refused() -> None:
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, MAX_TAR_HEADER + 1
    with pytest.raises(OversizedHeader):
        _members(header.tobuf(tarfile.USTAR_FORMAT))
    good = tarfile.TarInfo("a.txt")
    good.size = 3
    block = bytearray(good.tobuf(tarfile.USTAR_FORMAT))
    block[0] = ord("b")  # the checksum no longer matches
    with pytest.raises(TarFormatError, match="checksum"):
        _members(bytes(block))
    with pytest.raises(TarFormatError, match="truncated"):
        _members(good.tobuf(tarfile.USTAR_FORMAT) + b"ab")
