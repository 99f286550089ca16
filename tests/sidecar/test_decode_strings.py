"""`ProcessMemory.cstrings` (one read for strings side by side: an exec's environment)
must answer exactly what `cstring` answers for each address, on real memory of this process:
strings in one block, scattered ones, a string cut by the limit, one running into an unmapped
page, a NULL and an unmapped pointer. The same for an exec's argv read in clusters against
the former one read per argument, and for pointer arrays read in two reads."""

from __future__ import annotations

import ctypes
import itertools
import mmap
import os
import random
import struct

import pytest

from sidecar.decode import (
    ARG_MAX_COUNT,
    ARG_MAX_LEN,
    ARGV_MAX_TOTAL,
    POINTERS_FIRST,
    STRINGS_SPAN,
    ProcessMemory,
    _argv,
)

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


# --- argv in clusters, pointer arrays in two reads (issue 15: cheaper exec stops) -------


def _argv_one_read_per_string(memory: ProcessMemory, addr: int) -> tuple[tuple[str, ...], bool]:
    """What the former `_argv` answered: the pointer array in one read of ARG_MAX_COUNT + 1
    entries, each argument in a read of its own (up to ARG_MAX_LEN + 1 bytes), the whole
    cut at ARGV_MAX_TOTAL bytes. The new one must agree."""
    data = memory.read(addr, 8 * (ARG_MAX_COUNT + 1))
    words = [w for (w,) in struct.iter_unpack("<Q", data[: len(data) - len(data) % 8])]
    pointers = words[: words.index(0)] if 0 in words else words
    strings = [memory.cstring(p, ARG_MAX_LEN + 1) or b"" for p in pointers[:ARG_MAX_COUNT]]
    ends = list(itertools.accumulate(len(x) for x in strings))
    kept = [x for x, end in zip(strings, ends, strict=True) if end <= ARGV_MAX_TOTAL]
    cut = len(kept) < len(strings)
    if cut:
        kept.append(strings[len(kept)][: ARGV_MAX_TOTAL - sum(map(len, kept))])
    text = tuple(x.decode("utf-8", "surrogateescape") for x in kept)
    return text, cut or len(pointers) > ARG_MAX_COUNT


def _array(pointers: list[int]) -> tuple[object, int]:
    array = (ctypes.c_uint64 * (len(pointers) + 1))(*pointers, 0)
    return array, ctypes.addressof(array)


def test_argv_in_clusters_reads_what_one_read_per_string_read(mem: ProcessMemory) -> None:
    """Side by side, scattered, longer than a span, a NULL and an unmapped pointer, one
    argument, the ARGV_MAX_TOTAL cut and more than ARG_MAX_COUNT entries."""
    rng = random.Random(15)
    short, addrs = _block([b"tar", b"-xf", b"/tmp/a.tar", b"-C", b"", "é".encode()])
    long_one = ctypes.create_string_buffer(b"L" * (STRINGS_SPAN + 700))
    huge = ctypes.create_string_buffer(b"H" * (ARG_MAX_LEN + 10))  # runs past one entry
    scattered = [ctypes.create_string_buffer(b"s%d" % i * rng.randint(1, 90)) for i in range(40)]
    # Strings 7,900 bytes apart: clusters of two, 8 KiB each, until the read budget
    # (ARGV_MAX_TOTAL) is spent; the rest are read one by one.
    spread = ctypes.create_string_buffer(7900 * 200)
    for i in range(200):
        name = b"p%d\0" % i
        ctypes.memmove(ctypes.addressof(spread) + 7900 * i, name, len(name))
    layouts = [
        addrs,
        addrs[:1],
        [*addrs, ctypes.addressof(long_one), addrs[2]],
        [ctypes.addressof(b) for b in scattered],
        [addrs[0], 8, addrs[1]],  # an unmapped pointer in the middle
        [ctypes.addressof(huge)] * 3,  # the ARGV_MAX_TOTAL cut
        [addrs[0]] * (ARG_MAX_COUNT + 5),
        rng.sample([*addrs, *(ctypes.addressof(b) for b in scattered)], 30),
        [ctypes.addressof(spread) + 7900 * i for i in range(200)],
    ]
    for layout in layouts:
        array, addr = _array(layout)
        assert _argv(mem, addr) == _argv_one_read_per_string(mem, addr), layout[:5]
        del array
    del short, long_one, huge, scattered, spread


def test_a_pointer_array_read_in_two_reads(mem: ProcessMemory) -> None:
    """`pointers` reads POINTERS_FIRST, then the rest: the same answer as one read of the
    whole array, also for an array that runs into an unmapped page."""
    for count in (0, 1, POINTERS_FIRST - 1, POINTERS_FIRST, POINTERS_FIRST + 1, 300):
        array, addr = _array(list(range(1, count + 1)))
        assert mem.pointers(addr, 1024) == list(range(1, count + 1))
        assert mem.pointers(addr, 5) == list(range(1, min(count, 5) + 1))
        del array
    page = mmap.PAGESIZE
    area = mmap.mmap(-1, 2 * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    anchor = ctypes.c_char.from_buffer(area)
    base = ctypes.addressof(anchor)
    # 40 pointers and no NULL before the page's end: the second read comes back short
    area[page - 320 : page] = struct.pack("<40Q", *range(1, 41))
    try:
        assert ctypes.CDLL(None).mprotect(ctypes.c_void_p(base + page), page, PROT_NONE) == 0
        assert mem.pointers(base + page - 80, 1024) == list(range(31, 41))
        assert mem.pointers(base + page - 320, 1024) == list(range(1, 41))
    finally:
        ctypes.CDLL(None).mprotect(
            ctypes.c_void_p(base + page), page, mmap.PROT_READ | mmap.PROT_WRITE
        )
        del anchor
        area.close()
