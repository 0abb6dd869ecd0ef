"""``transform_export``: one Export API zip → gzip NDJSON for both tables and the dead letters."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from datetime import date
from os import PathLike
from typing import IO, cast

from jupiter_data.amplitude_transform.gzip_streams import (
    DEFAULT_COMPRESSLEVEL,
    GzipSink,
    StitchedGzipSink,
    Writable,
)
from jupiter_data.amplitude_transform.members import MemberTransformer
from jupiter_data.amplitude_transform.stats import CorruptExport, TooManyBadLines, TransformStats
from jupiter_data.amplitude_transform.workers import Options, transform_in_workers, worker_count
from jupiter_data.domain.amplitude import DEFAULT_MAX_BAD_FRACTION

DEFAULT_READ_SIZE = 64 << 10  # decompressed bytes per batch of lines: small batches keep memory hot
DEFAULT_CHUNK_BYTES = 1 << 20  # uncompressed bytes per compression call
DEFAULT_MAX_LINE_BYTES = 16 << 20


def transform_export(
    zip_file: IO[bytes] | str | PathLike[str],
    events_out: Writable,
    properties_out: Writable,
    bad_lines_out: Writable,
    export_day: date,
    *,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    compresslevel: int = DEFAULT_COMPRESSLEVEL,
    workers: int | None = None,
    read_size: int = DEFAULT_READ_SIZE,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    progress: Callable[[TransformStats], None] | None = None,
) -> TransformStats:
    """Transform one Export API zip into gzip NDJSON for both tables and the dead letters.

    ``zip_file`` is a path or a seekable binary file (e.g. the downloaded temporary file). The outputs
    are only written to (never flushed or closed). ``export_day`` goes on every row.
    ``compresslevel`` is zlib's 0-9 (mapped onto ISA-L's 0-3).

    ``workers``: processes transforming members in parallel. None: one per available CPU when
    ``zip_file`` is a path and the members hold at least ``PARALLEL_MIN_BYTES``, else 1; 1 keeps all
    in this process. Workers start with ``spawn``, which imports the caller's ``__main__``: scripts
    must guard their entry point.

    ``progress`` gets the running stats after each member. Raises ``CorruptExport`` or
    ``TooManyBadLines`` (the package docstring says what the outputs hold then); returns the stats.
    """
    if type(export_day) is not date:
        raise TypeError(f"export_day must be a datetime.date, got {type(export_day).__name__}")
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be within [0, 1], got {max_bad_fraction}")
    if not 0 <= compresslevel <= 9:
        raise ValueError(f"compresslevel must be within 0..9, got {compresslevel}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    stats = TransformStats(export_day=export_day.isoformat())
    try:
        archive = zipfile.ZipFile(zip_file)
    except (zipfile.BadZipFile, EOFError) as error:
        raise CorruptExport(None, f"{error} (a truncated download, or not a zip)") from error
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        count = worker_count(workers, zip_file, members)
        sinks: tuple[StitchedGzipSink | GzipSink, ...]
        if count > 1:
            options = Options(stats.export_day, compresslevel, read_size, chunk_bytes, max_line_bytes)
            stitched = tuple(StitchedGzipSink(out) for out in (events_out, properties_out, bad_lines_out))
            path = os.fspath(cast(str, zip_file))
            transform_in_workers(path, members, options, count, stitched, stats, progress)
            sinks = stitched
        else:
            local = (
                GzipSink(events_out, compresslevel, chunk_bytes),
                GzipSink(properties_out, compresslevel, chunk_bytes),
                GzipSink(bad_lines_out, compresslevel, 0),
            )
            transformer = MemberTransformer(stats, *local)
            for info in members:
                member = transformer.read(archive, info, read_size, max_line_bytes)
                stats.member_stats.append(member)
                stats.add_member(member)
                if progress is not None:
                    progress(stats)
            sinks = local
        for sink in sinks:
            sink.finish()
    stats.events_bytes_out, stats.properties_bytes_out, stats.bad_lines_bytes_out = (
        sink.bytes_out for sink in sinks
    )
    if stats.bad_lines > max_bad_fraction * (stats.events + stats.bad_lines):
        raise TooManyBadLines(stats, max_bad_fraction)
    return stats
