"""The export written as the API's zip, streamed: each hour's lines gzipped straight into a member."""

from __future__ import annotations

import gzip
import io
import itertools
import os
import zipfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date, datetime
from typing import IO, TYPE_CHECKING, Any

from jupiter_data.local.amplitude_data.hours import hours_between
from jupiter_data.local.amplitude_data.plans import ExportStats

if TYPE_CHECKING:
    from jupiter_data.local.amplitude_data.spec import ExportSpec

_LINES_PER_WRITE = 512
_PENDING_WRITES = 4


def write_export_zip(
    spec: ExportSpec, out: str | os.PathLike[str] | IO[bytes], start: datetime | date, end: datetime | date
) -> ExportStats:
    """Write the export of ``start``..``end`` (inclusive hours) as the API's zip, streamed.

    ``out`` is a path or a binary file object (seekable or not; a socket-like stream works).
    Memory stays at about one batch of lines whatever the size of the window.
    """
    if isinstance(out, str | os.PathLike):
        with open(out, "wb") as handle:
            return write_export_zip(spec, handle, start, end)
    hours = hours_between(start, end)
    stats = ExportStats(hours[0], hours[-1])
    seekable = _seekable(out)
    counter = None if seekable else _CountingWriter(out)
    begin = out.tell() if seekable else 0
    with (
        ThreadPoolExecutor(1, thread_name_prefix="amplitude-gzip") as worker,
        zipfile.ZipFile(
            out if counter is None else counter, "w", compression=zipfile.ZIP_STORED, allowZip64=True
        ) as archive,
    ):
        for hour in hours:
            plan = spec.plan_hour(hour)
            written = 0
            for (name, lines), count in zip(spec.iter_hour(hour), plan.member_lines, strict=True):
                large = count > 1_000_000
                written += _write_member(archive, worker, spec.compresslevel, name, hour, lines, large=large)
            if written != plan.lines:  # pragma: no cover - a bug in this module
                raise AssertionError(f"{hour}: planned {plan.lines} lines, wrote {written}")
            stats.add(plan)
    stats.bytes = out.tell() - begin if counter is None else counter.count
    return stats


def _write_member(
    archive: zipfile.ZipFile,
    worker: ThreadPoolExecutor,
    compresslevel: int,
    name: str,
    hour: datetime,
    lines: Iterator[bytes],
    *,
    large: bool,
) -> int:
    info = zipfile.ZipInfo(name, date_time=(hour.year, hour.month, hour.day, hour.hour, 0, 0))
    info.compress_type = zipfile.ZIP_STORED  # the members are gzip already
    info.external_attr = 0o644 << 16
    count = 0
    # mtime=0 and no file name in the gzip header keep the bytes reproducible.
    with (
        archive.open(info, "w", force_zip64=large) as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=compresslevel, mtime=0) as gz,
    ):
        # zlib and crc32 release the GIL, so the worker compresses while the next lines are
        # generated. One worker keeps the order; at most _PENDING_WRITES batches are in flight.
        pending: deque[Future[int]] = deque()
        try:
            for batch in _batches(lines):
                pending.append(worker.submit(gz.write, b"\n".join(batch) + b"\n"))
                count += len(batch)
                if len(pending) > _PENDING_WRITES:
                    pending.popleft().result()
        finally:
            for write in pending:
                write.result()
    return count


def _batches(lines: Iterator[bytes]) -> Iterator[list[bytes]]:
    while batch := list(itertools.islice(lines, _LINES_PER_WRITE)):
        yield batch


def _seekable(out: IO[bytes]) -> bool:
    try:
        return bool(out.seekable()) and isinstance(out.tell(), int)
    except (AttributeError, OSError, ValueError):
        return False


class _CountingWriter(io.RawIOBase):
    """A non-seekable pass-through that counts bytes (zipfile then writes data descriptors)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._out.write(view)
        self.count += view.nbytes
        return view.nbytes

    def flush(self) -> None:
        self._out.flush()
