"""What a transform reports: its counts, and the failures that mean the day must not be published."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class MemberStats:
    name: str
    compressed_bytes: int = 0
    uncompressed_bytes: int = 0
    lines: int = 0
    blank_lines: int = 0
    events: int = 0
    property_rows: int = 0
    bad_lines: int = 0


@dataclass
class TransformStats:
    """Counts of one transform; ``events`` and ``property_rows`` are exactly the rows written."""

    export_day: str
    members: int = 0
    lines: int = 0  # every line read: events + bad_lines + blank_lines
    blank_lines: int = 0
    events: int = 0
    property_rows: int = 0
    bad_lines: int = 0
    late_events: int = 0  # events whose event_time is on a day before export_day
    bytes_in: int = 0  # compressed bytes of the members read
    bytes_uncompressed: int = 0  # NDJSON bytes after gunzip
    events_bytes_out: int = 0  # gzip bytes written to each output
    properties_bytes_out: int = 0
    bad_lines_bytes_out: int = 0
    member_stats: list[MemberStats] = field(default_factory=list)
    events_by_upload_hour: dict[str, int] = field(default_factory=dict)  # "YYYY-MM-DD HH" (UTC) -> events
    events_by_event_date: dict[str, int] = field(default_factory=dict)  # "YYYY-MM-DD" -> events

    @property
    def bad_fraction(self) -> float:
        candidates = self.events + self.bad_lines
        return self.bad_lines / candidates if candidates else 0.0

    @property
    def bytes_out(self) -> int:
        return self.events_bytes_out + self.properties_bytes_out + self.bad_lines_bytes_out

    def add_member(self, member: MemberStats) -> None:
        """Count a finished member in (``member_stats`` is the caller's to order)."""
        self.members += 1
        self.lines += member.lines
        self.blank_lines += member.blank_lines
        self.events += member.events
        self.property_rows += member.property_rows
        self.bad_lines += member.bad_lines
        self.bytes_in += member.compressed_bytes
        self.bytes_uncompressed += member.uncompressed_bytes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary for logs and the run ledger (without the per-member list)."""
        return {
            "export_day": self.export_day,
            "members": self.members,
            "lines": self.lines,
            "blank_lines": self.blank_lines,
            "events": self.events,
            "property_rows": self.property_rows,
            "bad_lines": self.bad_lines,
            "bad_fraction": self.bad_fraction,
            "late_events": self.late_events,
            "bytes_in": self.bytes_in,
            "bytes_uncompressed": self.bytes_uncompressed,
            "events_bytes_out": self.events_bytes_out,
            "properties_bytes_out": self.properties_bytes_out,
            "bad_lines_bytes_out": self.bad_lines_bytes_out,
            "events_by_upload_hour": dict(sorted(self.events_by_upload_hour.items())),
            "events_by_event_date": dict(sorted(self.events_by_event_date.items())),
        }


class AmplitudeTransformError(Exception):
    """Base of the transform's own failures: the day fails and nothing may be published."""


class CorruptExport(AmplitudeTransformError):
    """The zip or one of its members cannot be read completely. ``member`` is None for the zip itself."""

    def __init__(self, member: str | None, reason: str) -> None:
        where = f"member {member!r} of the export zip" if member is not None else "the export zip"
        super().__init__(f"{where} is unreadable: {reason}")
        self.member = member
        self.reason = reason


class TooManyBadLines(AmplitudeTransformError):
    """More malformed lines than ``max_bad_fraction`` allows; ``stats`` describes the whole export."""

    def __init__(self, stats: TransformStats, max_bad_fraction: float) -> None:
        super().__init__(
            f"{stats.bad_lines} of {stats.events + stats.bad_lines} lines of the export for "
            f"{stats.export_day} are malformed ({stats.bad_fraction:.4%}), over the limit of "
            f"{max_bad_fraction:.4%}; the day must not be published. The dead letters name each line."
        )
        self.stats = stats
        self.max_bad_fraction = max_bad_fraction
