"""`ProcessMemory.cstrings` (one read for strings side by side: an exec's environment)
must answer exactly what `cstring` answers for each address, on real memory of this process:
strings in one block, scattered ones, a string cut by the limit, one running into an unmapped
page, a NULL and an unmapped pointer."""

from __future__ import annotations

import ctypes
import mmap
import os

import pytest

from sidecar.decode import STRINGS_SPAN, ProcessMemory

PROT_NONE = 0  # <sys/mman.h>; the mmap module has no name for it


@pytest.fixture
def mem():
    m = ProcessMemory(os.getpid())
    yield m
    m.close()


def _block(strings: list[bytes]) -> tuple[object, list[int]]:
    """The strings NUL-terminated one after the other in one buffer, and their addresses."""
    data = b"".join(s + b"\0" for s in strings)
    buf = ctypes.create_string_buffer(data, len(data))
    base = ctypes.addressof(buf)
    addrs, at = [], 0
    for s in strings:
        addrs.append(base + at)
        at += len(s) + 1
    return buf, addrs


@pytest.mark.parametrize("limit", [1, 5, 128, 4096])
def test_side_by_side_and_scattered_strings(mem: ProcessMemory, limit: int) -> None:
    names = [b"PATH=/usr/bin", b"HOME=/root", b"", b"X" * 300 + b"=1", b"LANG=C.UTF-8"]
    block, addrs = _block(names)
    far = [ctypes.create_string_buffer(b"FAR=%d" % i) for i in range(3)]
    big = ctypes.create_string_buffer(b"B" * (STRINGS_SPAN + 50))  # longer than a span
    everything = [
        *addrs,
        *(ctypes.addressof(b) for b in far),
        0,
        8,  # page zero: unmapped
        ctypes.addressof(big),
        addrs[1],
        ctypes.addressof(big) + STRINGS_SPAN - 3,
    ]
    assert mem.cstrings(everything, limit) == [mem.cstring(a, limit) for a in everything]
    del block, far, big


def test_a_string_running_into_an_unmapped_page(mem: ProcessMemory) -> None:
    page = mmap.PAGESIZE
    area = mmap.mmap(-1, 2 * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    anchor = ctypes.c_char.from_buffer(area)
    base = ctypes.addressof(anchor)
    area[page - 12 : page] = b"A=1\0NOTERMIN"  # the second string reaches the page's end
    try:
        assert ctypes.CDLL(None).mprotect(ctypes.c_void_p(base + page), page, PROT_NONE) == 0
        addrs = [base + page - 12, base + page - 8, base + page - 1]
        for limit in (4, 8, 128):
            assert mem.cstrings(addrs, limit) == [mem.cstring(a, limit) for a in addrs]
        assert mem.cstrings(addrs, 128)[:2] == [b"A=1", b"NOTERMIN"]
    finally:
        ctypes.CDLL(None).mprotect(
            ctypes.c_void_p(base + page), page, mmap.PROT_READ | mmap.PROT_WRITE
        )
        del anchor
        area.close()
