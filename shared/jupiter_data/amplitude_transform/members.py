"""One member of the export zip: its gzip stream read in pieces, split into lines, each line through
the row builder, the rows written to the outputs a batch at a time. The hot loop is here."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, cast

from jupiter_data.amplitude_transform.gzip_streams import GZIP_MAGIC, READ_ERRORS, Writable, gunzip
from jupiter_data.amplitude_transform.stats import CorruptExport, MemberStats, TransformStats
from jupiter_data.domain.amplitude import RAW_LINE_LIMIT, BadLine
from jupiter_data.domain.amplitude_rows import RowBuilder, bad_line_row


@dataclass(frozen=True)
class LongLine:
    """A line over ``max_line_bytes``: its start (for the dead letter) and its full length."""

    head: bytes
    length: int


def member_lines(
    gz: IO[bytes], read_size: int, max_line_bytes: int, member: MemberStats
) -> Iterator[list[bytes] | LongLine]:
    """Lines of a decompressed member without terminators, in batches of about ``read_size`` bytes.

    A line over ``max_line_bytes`` comes as a ``LongLine`` and is never held whole.
    """
    pending: list[bytes] = []  # the start of a line whose end is not read yet
    pending_length = 0
    long_head: bytes | None = None  # set while skipping the rest of an over-long line
    long_length = 0
    while data := gz.read(read_size):
        member.uncompressed_bytes += len(data)
        end = data.find(b"\n")
        if end < 0:
            if long_head is not None:
                long_length += len(data)
                continue
            pending.append(data)
            pending_length += len(data)
            if pending_length > max_line_bytes:
                long_head, long_length = b"".join(pending)[:RAW_LINE_LIMIT], pending_length
                pending, pending_length = [], 0
            continue
        if long_head is not None:
            yield LongLine(long_head, long_length + end)
            long_head = None
            data = data[end + 1 :]
        elif pending:
            data = b"".join((*pending, data))
            pending, pending_length = [], 0
        lines = data.split(b"\n")
        last = lines.pop()
        if last:
            pending, pending_length = [last], len(last)
        if len(data) > max_line_bytes and any(len(line) > max_line_bytes for line in lines):
            start = 0
            for index, line in enumerate(lines):
                if len(line) > max_line_bytes:
                    if index > start:
                        yield lines[start:index]
                    yield LongLine(line[:RAW_LINE_LIMIT], len(line))
                    start = index + 1
            lines = lines[start:]
        if lines:
            yield lines
    if long_head is not None:
        yield LongLine(long_head, long_length)
    elif pending:
        last = b"".join(pending)  # the last line had no final newline
        yield [last] if len(last) <= max_line_bytes else LongLine(last[:RAW_LINE_LIMIT], len(last))


class MemberTransformer:
    """Writes the rows of members to the three outputs and counts them into ``stats``."""

    def __init__(
        self, stats: TransformStats, events: Writable, properties: Writable, bad_lines: Writable
    ) -> None:
        self.stats = stats
        self.builder = RowBuilder(stats.export_day)
        self.events, self.properties, self.bad_lines = events, properties, bad_lines

    def read(
        self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, read_size: int, max_line_bytes: int
    ) -> MemberStats:
        """Transform one member; any reading error becomes ``CorruptExport`` naming it."""
        member = MemberStats(info.filename, compressed_bytes=info.compress_size)
        if info.flag_bits & 0x1:
            raise CorruptExport(info.filename, "the member is encrypted")
        try:
            with archive.open(info) as stream:
                magic = cast(zipfile.ZipExtFile, stream).peek(2)[:2]
                if magic and magic != GZIP_MAGIC:
                    raise CorruptExport(info.filename, f"not gzip data (it starts with {magic!r})")
                if magic:  # an empty member holds no lines
                    with gunzip(stream) as gz:
                        lines = member_lines(gz, read_size, max_line_bytes, member)
                        self.member(member, lines, max_line_bytes)
        except (zipfile.BadZipFile, NotImplementedError, *READ_ERRORS) as error:
            reason = str(error) or type(error).__name__
            if isinstance(error, EOFError):
                reason = f"truncated gzip data ({reason})"
            raise CorruptExport(info.filename, reason) from error
        return member

    def member(self, member: MemberStats, batches: Iterator[list[bytes] | LongLine], max_line: int) -> None:
        """Every line of one member. The hot loop: locals only, the rows of a batch written at once."""
        build = self.builder.event
        export_day = self.stats.export_day
        by_hour, by_date = self.stats.events_by_upload_hour, self.stats.events_by_event_date
        line_number = member.lines
        events = property_rows = blank = late = 0
        for batch in batches:
            if isinstance(batch, LongLine):
                line_number += 1
                reason = f"line longer than {max_line} bytes ({batch.length} bytes)"
                self.bad(member, line_number, reason, batch.head, batch.length)
                continue
            event_lines: list[bytes] = []
            property_lines: list[bytes] = []
            for line in batch:
                line_number += 1
                mark = len(property_lines)
                try:
                    event_line, rows, event_date, upload = build(line, property_lines)
                except BadLine as error:
                    del property_lines[mark:]
                    if line.strip():
                        self.bad(member, line_number, str(error), line, len(line))
                    else:
                        blank += 1
                    continue
                event_lines.append(event_line)
                events += 1
                property_rows += rows
                if event_date is not None:
                    by_date[event_date] = by_date.get(event_date, 0) + 1
                    if event_date < export_day:
                        late += 1
                if upload is not None:
                    hour = upload[:13]
                    by_hour[hour] = by_hour.get(hour, 0) + 1
            if event_lines:
                self.events.write(b"".join(event_lines))
            if property_lines:
                self.properties.write(b"".join(property_lines))
        member.lines = line_number
        member.blank_lines += blank
        member.events += events
        member.property_rows += property_rows
        self.stats.late_events += late

    def bad(self, member: MemberStats, line_number: int, error: str, raw: bytes, size: int) -> None:
        member.bad_lines += 1
        self.bad_lines.write(bad_line_row(self.stats.export_day, member.name, line_number, error, raw, size))
