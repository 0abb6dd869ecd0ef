"""The transform's gzip: ISA-L (``isal``), about 4x faster than zlib at the same ratio; the output is
standard single-member gzip with no file name and mtime 0.

In one process a ``GzipSink`` compresses each output as one stream. Worker processes compress their
own chunks of raw deflate (``deflate_chunk``: a fresh compressor ended by a sync flush), which
``StitchedGzipSink`` joins into one gzip member, combining the chunks' CRC-32s.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from typing import IO, Any, Protocol, cast

from isal import igzip, isal_zlib

DEFAULT_COMPRESSLEVEL = 1
_ISAL_LEVELS = (0, 1, 1, 2, 2, 2, 3, 3, 3, 3)  # zlib's 0-9 onto ISA-L's 0-3, by compression ratio
#: What reading a corrupt or truncated gzip stream raises.
# (isal's stub declares its error class as an instance)
READ_ERRORS = (gzip.BadGzipFile, cast(type[Exception], isal_zlib.error), zlib.error, EOFError)
GZIP_MAGIC = b"\x1f\x8b"
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0, OS unknown
_FINAL_EMPTY_BLOCK = b"\x03\x00"  # a final, empty, fixed-Huffman deflate block


class Writable(Protocol):
    """Where an output goes: anything with ``write(bytes)`` (a file, a GCS blob writer, BytesIO)."""

    def write(self, data: bytes, /) -> object: ...


def gunzip(stream: IO[bytes]) -> IO[bytes]:
    """The decompressed stream of a gzip stream (concatenated members read as one)."""
    return cast(IO[bytes], igzip.IGzipFile(fileobj=stream, mode="rb"))  # type: ignore[no-untyped-call]


def deflate_chunk(data: bytes, level: int) -> bytes:
    """Raw deflate of ``data`` that refers to nothing before it and ends byte-aligned: chunks made
    this way concatenate into one valid deflate stream."""
    compressor = isal_zlib.compressobj(_ISAL_LEVELS[level], isal_zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(isal_zlib.Z_SYNC_FLUSH)


def crc32(data: bytes) -> int:
    return isal_zlib.crc32(data)


class Chunked:
    """Gathers written pieces and hands them to ``compress`` about ``chunk_bytes`` at a time."""

    def __init__(self, chunk_bytes: int) -> None:
        self._chunk_bytes = chunk_bytes
        self._pieces: list[bytes] = []
        self._pending = 0

    def write(self, data: bytes) -> None:
        self._pieces.append(data)
        self._pending += len(data)
        if self._pending >= self._chunk_bytes:
            self.flush()

    def flush(self) -> None:
        if not self._pieces:
            return
        data = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
        self._pieces = []
        self._pending = 0
        self.compress(data)

    def compress(self, data: bytes) -> None:
        raise NotImplementedError


class GzipSink(Chunked):
    """A gzip stream to ``out``, compressed a chunk at a time.

    Without ``finish()`` the stream has no trailer and every gzip reader reports it truncated.
    """

    def __init__(self, out: Writable, level: int, chunk_bytes: int) -> None:
        super().__init__(chunk_bytes)
        self._out = out
        self._compressor: Any = isal_zlib.compressobj(_ISAL_LEVELS[level], isal_zlib.DEFLATED, 31)
        self.bytes_out = 0

    def finish(self) -> None:
        """Compress what is left and write the gzip trailer."""
        self.flush()
        self._put(self._compressor.flush())

    def compress(self, data: bytes) -> None:
        self._put(self._compressor.compress(data))

    def _put(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self.bytes_out += len(data)


class StitchedGzipSink:
    """One gzip member made of ``deflate_chunk`` chunks compressed elsewhere (worker processes), in
    the order they come; the CRC-32 of the whole is combined from the chunks' CRCs."""

    def __init__(self, out: Writable) -> None:
        self._out = out
        self._crc = 0
        self._size = 0
        self.bytes_out = 0

    def write_chunk(self, data: bytes, crc: int, length: int) -> None:
        if not self.bytes_out:
            self._put(_GZIP_HEADER)
        self._crc = isal_zlib.crc32_combine(self._crc, crc, length)
        self._size += length
        self._put(data)

    def finish(self) -> None:
        if not self.bytes_out:
            self._put(_GZIP_HEADER)
        self._put(_FINAL_EMPTY_BLOCK + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))

    def _put(self, data: bytes) -> None:
        self._out.write(data)
        self.bytes_out += len(data)
