"""What an export holds, known before generating it: per hour (:class:`HourPlan`) and per window
(:class:`ExportStats`, which a loader reconciles with)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from jupiter_data.local.amplitude_data.hours import format_export_hour


@dataclass(frozen=True)
class HourPlan:
    """What one hour holds, decided without generating it."""

    hour: datetime
    events: int
    malformed: int
    late: int
    member_names: tuple[str, ...]
    member_lines: tuple[int, ...]  # lines (events + malformed) in each member

    @property
    def lines(self) -> int:
        return self.events + self.malformed


@dataclass
class ExportStats:
    """Counts for an export window: what a loader must reconcile with.

    ``events`` are good lines, ``malformed`` the injected bad ones (not counted in ``events``).
    ``late`` events have an ``event_time`` on the UTC day before their upload day.
    ``bytes`` is the zip's size (0 when the stats come from :meth:`ExportSpec.expected`).
    Per-hour and per-day maps list only hours/days with data; hours are aware UTC datetimes.
    """

    start: datetime
    end: datetime
    events: int = 0
    malformed: int = 0
    late: int = 0
    members: int = 0
    bytes: int = 0
    events_per_hour: dict[datetime, int] = field(default_factory=dict)
    malformed_per_hour: dict[datetime, int] = field(default_factory=dict)
    events_per_day: dict[date, int] = field(default_factory=dict)  # by server_upload_time
    events_per_event_day: dict[date, int] = field(default_factory=dict)  # by event_time
    member_names: list[str] = field(default_factory=list)

    @property
    def lines(self) -> int:
        return self.events + self.malformed

    def add(self, plan: HourPlan) -> None:
        self.events += plan.events
        self.malformed += plan.malformed
        self.late += plan.late
        self.members += len(plan.member_names)
        self.member_names.extend(plan.member_names)
        if plan.events:
            self.events_per_hour[plan.hour] = plan.events
            day = plan.hour.date()
            self.events_per_day[day] = self.events_per_day.get(day, 0) + plan.events
            on_time = plan.events - plan.late
            if on_time:
                self.events_per_event_day[day] = self.events_per_event_day.get(day, 0) + on_time
            if plan.late:
                before = day - timedelta(days=1)
                self.events_per_event_day[before] = self.events_per_event_day.get(before, 0) + plan.late
        if plan.malformed:
            self.malformed_per_hour[plan.hour] = plan.malformed

    def to_json(self) -> dict[str, Any]:
        return {
            "start": format_export_hour(self.start),
            "end": format_export_hour(self.end),
            "events": self.events,
            "malformed": self.malformed,
            "lines": self.lines,
            "late": self.late,
            "members": self.members,
            "bytes": self.bytes,
            "events_per_hour": {format_export_hour(h): n for h, n in self.events_per_hour.items()},
            "malformed_per_hour": {format_export_hour(h): n for h, n in self.malformed_per_hour.items()},
            "events_per_day": {d.isoformat(): n for d, n in self.events_per_day.items()},
            "events_per_event_day": {d.isoformat(): n for d, n in sorted(self.events_per_event_day.items())},
            "member_names": list(self.member_names),
        }
