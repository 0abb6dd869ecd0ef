"""Worker processes: members go to ``count`` processes; their compressed chunks and counts come back.

The work is CPU-bound Python (parse, type, serialise, flatten), so it is shared out to processes,
one member at a time. Each worker compresses its own chunks of raw deflate; this process stitches
them into one gzip member per output. Queues are bounded, so memory stays flat: a worker waits while
this process is behind.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from typing import Any

from jupiter_data.amplitude_transform.gzip_streams import Chunked, StitchedGzipSink, crc32, deflate_chunk
from jupiter_data.amplitude_transform.members import MemberTransformer
from jupiter_data.amplitude_transform.stats import CorruptExport, MemberStats, TransformStats

# Below this much compressed input, starting worker processes costs more than it saves.
PARALLEL_MIN_BYTES = 8 << 20


@dataclass(frozen=True)
class Options:
    export_day: str
    compresslevel: int
    read_size: int
    chunk_bytes: int
    max_line_bytes: int


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def worker_count(requested: int | None, zip_file: object, members: list[zipfile.ZipInfo]) -> int:
    """How many processes to use: None picks one per CPU for a large export given as a path, else 1."""
    has_path = isinstance(zip_file, str | PathLike)
    if requested is None:
        if not has_path or sum(info.compress_size for info in members) < PARALLEL_MIN_BYTES:
            return 1
        requested = cpus()
    elif requested > 1 and not has_path:
        raise ValueError("workers > 1 needs zip_file as a path: worker processes open the zip themselves")
    return max(1, min(requested, len(members)))


def transform_in_workers(
    path: str,
    members: list[zipfile.ZipInfo],
    options: Options,
    count: int,
    sinks: tuple[StitchedGzipSink, ...],
    stats: TransformStats,
    progress: Callable[[TransformStats], None] | None,
) -> None:
    """Transform ``members`` of the zip at ``path`` in ``count`` processes into ``sinks``."""
    context = multiprocessing.get_context("spawn")
    tasks: Any = context.Queue()
    results: Any = context.Queue(maxsize=4 * count)
    for index in range(len(members)):
        tasks.put(index)
    for _ in range(count):
        tasks.put(None)
    processes = [
        context.Process(target=worker, args=(path, options, tasks, results), name=f"amplitude-transform-{n}")
        for n in range(count)
    ]
    for process in processes:
        process.daemon = True
        process.start()
    finished: dict[int, MemberStats] = {}
    try:
        running = count
        while running:
            try:
                message = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"an Amplitude transform worker died (exit code {dead[0]})") from None
                continue
            kind = message[0]
            if kind == "chunk":
                _, which, data, crc, length = message
                sinks[which].write_chunk(data, crc, length)
            elif kind == "member":
                _, index, member, late, by_hour, by_date = message
                finished[index] = member
                stats.member_stats[:] = [finished[i] for i in sorted(finished)]  # archive order
                stats.add_member(member)
                stats.late_events += late
                for totals, counts in (
                    (stats.events_by_upload_hour, by_hour),
                    (stats.events_by_event_date, by_date),
                ):
                    for key, value in counts.items():
                        totals[key] = totals.get(key, 0) + value
                if progress is not None:
                    progress(stats)
            elif kind == "corrupt":
                raise CorruptExport(message[1], message[2])
            elif kind == "failed":
                raise RuntimeError(f"an Amplitude transform worker failed: {message[1]}")
            else:  # "done"
                running -= 1
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()
        for channel in (tasks, results):
            channel.close()
            channel.cancel_join_thread()


class ChunkSink(Chunked):
    """Worker side of ``StitchedGzipSink``: compresses ~``chunk_bytes`` pieces and sends them on."""

    def __init__(self, which: int, results: Any, level: int, chunk_bytes: int) -> None:
        super().__init__(chunk_bytes)
        self._which = which
        self._results = results
        self._level = level

    def compress(self, data: bytes) -> None:
        self._results.put(("chunk", self._which, deflate_chunk(data, self._level), crc32(data), len(data)))


def _next_task(tasks: Any) -> int | None:
    """The next member index, or None when there is none or the parent process is gone."""
    while True:
        try:
            index: int | None = tasks.get(timeout=5.0)
        except queue.Empty:
            parent = multiprocessing.parent_process()
            if parent is not None and not parent.is_alive():
                return None
            continue
        return index


def worker(path: str, options: Options, tasks: Any, results: Any) -> None:
    """A worker process: transform the members named by ``tasks``, report on ``results``."""
    try:
        sinks = tuple(ChunkSink(n, results, options.compresslevel, options.chunk_bytes) for n in range(3))
        stats = TransformStats(options.export_day)
        transformer = MemberTransformer(stats, *sinks)
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            while (index := _next_task(tasks)) is not None:
                try:
                    member = transformer.read(
                        archive, members[index], options.read_size, options.max_line_bytes
                    )
                except CorruptExport as error:
                    results.put(("corrupt", error.member, error.reason))
                    return
                for sink in sinks:
                    sink.flush()
                results.put(
                    (
                        "member",
                        index,
                        member,
                        stats.late_events,
                        stats.events_by_upload_hour,
                        stats.events_by_event_date,
                    )
                )
                stats.late_events, stats.events_by_upload_hour, stats.events_by_event_date = 0, {}, {}
        results.put(("done",))
    except BaseException as error:  # reported, so the parent fails with the reason rather than a timeout
        results.put(("failed", "".join(traceback.format_exception_only(error)).strip()))
