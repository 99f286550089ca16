"""A forward-only reader of tar streams, for image layers (hostile input, read once).

Why not `tarfile`: in stream mode (`r|`) it copies its 10 KiB buffer on every header
read and parses each header field by field in Python, which made tar parsing the largest
cost of a scan (about 2 s of 7 for a 129 MB image of 13.9k files); it keeps every member
it has seen in a list; and it reads an extended header's whole declared size into memory
before looking at it (a 4.6 MB gzip layer declaring a 2.9 GB PAX header took 2.95 GB).
This reader does one thing, the way OCI layers need it: walk the members in order, hand
out the content of the ones asked for, skip the rest in bulk.

Formats (POSIX.1-2001 pax, ustar, GNU; the ones BuildKit, Docker, Kaniko and distribution
tools write): ustar `prefix`; pax extended headers (`x`, and Solaris `X`) for `path`,
`linkpath` and `size`; pax global headers (`g`) read and ignored; GNU long names (`L`,
`K`); base-256 numbers for sizes above 8 GiB; old GNU sparse entries (`S`) are skipped
with their extension blocks. Every extended header is refused above MAX_TAR_HEADER before
a byte of it is read. A header whose checksum is wrong is corrupt, not the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
SKIP_CHUNK = 1024 * 1024
# Extended tar headers (pax records, GNU long names) hold a path (PATH_MAX is 4096 on Linux)
# and extended attributes (at most 64 KiB each, XATTR_SIZE_MAX): 1 MiB is far above any real
# one.
MAX_TAR_HEADER = 1024 * 1024
REGULAR = frozenset({b"0", b"\0", b"7"})
SYMLINK, HARDLINK, DIRECTORY = b"2", b"1", b"5"
PAX, PAX_SOLARIS, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK, GNU_SPARSE = (
    b"x", b"X", b"g", b"L", b"K", b"S")
_EXTENDED = frozenset({PAX, PAX_SOLARIS, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK})
_USTAR_MAGIC = b"ustar\x0000"  # POSIX: the prefix field holds the leading path


class TarFormatError(ValueError):
    """The stream is not a readable tar archive (corrupt, truncated or hostile)."""


class OversizedHeader(TarFormatError):
    """An extended header declares more than MAX_TAR_HEADER bytes."""


@dataclass
class TarMember:
    name: str
    type: bytes
    size: int
    linkname: str = ""

    def isfile(self) -> bool:
        return self.type in REGULAR

    def issym(self) -> bool:
        return self.type == SYMLINK

    def islnk(self) -> bool:
        return self.type == HARDLINK


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256: the rest is a big-endian number
        value = int.from_bytes(field[1:], "big")
        return -value if field[0] == 0xFF else value
    digits = field.split(b"\0", 1)[0].strip()
    if not digits:
        return 0
    try:
        return int(digits, 8)
    except ValueError:
        raise TarFormatError(f"a tar header has a malformed number {digits[:20]!r}") from None


def _checksum_ok(block: bytes) -> bool:
    stored = _number(block[148:156])
    unsigned = sum(block) - sum(block[148:156]) + 8 * 32  # the field counts as spaces
    if stored == unsigned:
        return True
    # Some old tars summed signed chars; tarfile accepts both, so does this.
    high = sum(1 for b in block[:148] if b > 127) + sum(1 for b in block[156:] if b > 127)
    return stored == unsigned - 256 * high


def _pax_records(data: bytes) -> dict[str, str]:
    """`<length> <key>=<value>\\n` records (POSIX.1-2001, pax "extended header")."""
    records: dict[str, str] = {}
    position = 0
    while position < len(data):
        if data[position] == 0:
            break
        space = data.find(b" ", position)
        if space < 0:
            raise TarFormatError("a pax header record has no length")
        try:
            length = int(data[position:space])
        except ValueError:
            raise TarFormatError("a pax header record has a malformed length") from None
        end = position + length
        if length <= 0 or end > len(data) or data[end - 1:end] != b"\n":
            raise TarFormatError("a pax header record overruns its header")
        key, equals, value = data[space + 1:end - 1].partition(b"=")
        if not equals:
            raise TarFormatError("a pax header record has no '='")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        position = end
    return records


class TarReader:
    """Members of a tar stream in order; `read_data()` gives the current one's content.

    `read(n)` is the stream's read (a buffered reader: short reads only at the end).
    """

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self._unread = 0  # content bytes of the current member not consumed yet
        self._padding = 0
        self.ended = False

    def _exact(self, size: int) -> bytes:
        data = self._read(size)
        if len(data) != size:
            raise TarFormatError("the tar stream is truncated")
        return data

    def _skip(self, size: int) -> None:
        while size > 0:
            data = self._read(min(size, SKIP_CHUNK))
            if not data:
                raise TarFormatError("the tar stream is truncated")
            size -= len(data)

    def _finish_member(self) -> None:
        self._skip(self._unread + self._padding)
        self._unread = self._padding = 0

    def read_data(self) -> bytes:
        """The whole content of the current member (only once)."""
        data = self._exact(self._unread)
        self._unread = 0
        return data

    def next(self) -> TarMember | None:
        """The next member, or None at the end of the archive."""
        self._finish_member()
        pax: dict[str, str] = {}
        long_name = long_link = None
        while True:
            block = self._read(BLOCK)
            if not block or block == ZERO_BLOCK:
                self.ended = True  # an end marker, or a stream that simply stops (tarfile too)
                return None
            if len(block) < BLOCK:
                raise TarFormatError("the tar stream ends inside a header")
            if not _checksum_ok(block):
                raise TarFormatError("a tar header has a bad checksum")
            kind = block[156:157]
            size = _number(block[124:136])
            if size < 0:
                raise TarFormatError("a tar header has a negative size")
            padding = -size % BLOCK
            if kind in _EXTENDED:
                if size > MAX_TAR_HEADER:
                    raise OversizedHeader(
                        f"an extended header (type {kind.decode('latin-1')!r}) of {size} "
                        f"bytes, above the {MAX_TAR_HEADER}-byte cap")
                data = self._exact(size)
                self._skip(padding)
                if kind in (PAX, PAX_SOLARIS):
                    pax.update(_pax_records(data))
                elif kind == GNU_LONGNAME:
                    long_name = _text(data)
                elif kind == GNU_LONGLINK:
                    long_link = _text(data)
                continue  # a global header (g) changes nothing layers rely on
            if kind == GNU_SPARSE:
                extended = block[482]
                while extended:  # extension blocks of the sparse map
                    extended = self._exact(BLOCK)[504]
            name = _text(block[0:100])
            if block[257:265] == _USTAR_MAGIC and block[345]:
                name = _text(block[345:500]) + "/" + name
            if "size" in pax:
                try:
                    size = int(pax["size"])
                except ValueError:
                    raise TarFormatError("a pax size is not a number") from None
                padding = -size % BLOCK
            name = pax.get("path") or long_name or name
            if kind in (b"0", b"\0") and name.endswith("/"):
                kind = DIRECTORY  # a pre-POSIX directory entry
            member = TarMember(
                name=name.rstrip("/") if kind == DIRECTORY else name,
                type=kind,
                size=size,
                linkname=pax.get("linkpath") or long_link or _text(block[157:257]),
            )
            self._unread, self._padding = size, padding
            return member
