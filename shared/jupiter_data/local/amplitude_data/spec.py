"""What decides an export's content (:class:`ExportSpec`): its plans, its lines and its zip."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import IO, Any

from jupiter_data.local.amplitude_data.events import HourGenerator
from jupiter_data.local.amplitude_data.hours import as_hour, hours_between, member_name
from jupiter_data.local.amplitude_data.plans import ExportStats, HourPlan
from jupiter_data.local.amplitude_data.zip_writer import write_export_zip

DEFAULT_APP_ID = 187520
MEMBER_PARTS_WEIGHTS = (5, 3, 2)  # how often an hour has 1, 2 or 3 members


def _rounded(value: float) -> int:
    return int(value + 0.5)


@dataclass(frozen=True)
class ExportSpec:
    """Everything that decides an export's content. Equal specs give byte-identical exports."""

    events_per_hour: int = 1000
    seed: int = 0
    app_id: int = DEFAULT_APP_ID
    late_fraction: float = 0.05
    malformed_rate: float = 0.0
    empty_days: frozenset[date] = frozenset()
    empty_hours: frozenset[datetime] = frozenset()  # aware UTC hour starts
    compresslevel: int = 6
    property_bags: bool = True  # False: every bag null, so an export of events without property rows

    def __post_init__(self) -> None:
        if self.events_per_hour < 0:
            raise ValueError("events_per_hour must be >= 0")
        if not 0.0 <= self.late_fraction <= 1.0:
            raise ValueError("late_fraction must be within [0, 1]")
        if self.malformed_rate < 0.0:
            raise ValueError("malformed_rate must be >= 0")
        object.__setattr__(self, "empty_days", frozenset(self.empty_days))
        object.__setattr__(self, "empty_hours", frozenset(as_hour(h) for h in self.empty_hours))

    def with_options(self, **changes: Any) -> ExportSpec:
        return replace(self, **changes)

    def _rng(self, hour: datetime, purpose: str) -> random.Random:
        # str seeds hash with SHA-512: stable across processes and Python versions (unlike hash()).
        seed = f"amplitude/{self.seed}/{self.app_id}/{hour:%Y%m%dT%H}/{purpose}"
        return random.Random(seed)  # noqa: S311 - reproducible data, not a secret

    def plan_hour(self, hour: datetime | date) -> HourPlan:
        hour = as_hour(hour)
        if self.events_per_hour == 0 or hour.date() in self.empty_days or hour in self.empty_hours:
            return HourPlan(hour, 0, 0, 0, (), ())
        events = self.events_per_hour
        malformed = _rounded(events * self.malformed_rate)
        late = _rounded(events * self.late_fraction)
        lines = events + malformed
        rng = self._rng(hour, "plan")
        parts = min(rng.choices((1, 2, 3), weights=MEMBER_PARTS_WEIGHTS)[0], lines)
        cuts = [0, *sorted(rng.sample(range(1, lines), parts - 1)), lines]
        sizes = tuple(b - a for a, b in itertools.pairwise(cuts))
        names = tuple(member_name(self.app_id, hour, part) for part in range(parts))
        return HourPlan(hour, events, malformed, late, names, sizes)

    def expected(self, start: datetime | date, end: datetime | date) -> ExportStats:
        """The counts of an export of ``start``..``end`` (inclusive hours), without generating it."""
        hours = hours_between(start, end)
        stats = ExportStats(hours[0], hours[-1])
        for hour in hours:
            stats.add(self.plan_hour(hour))
        return stats

    def has_data(self, start: datetime | date, end: datetime | date) -> bool:
        return any(self.plan_hour(hour).lines for hour in hours_between(start, end))

    def iter_hour(self, hour: datetime | date) -> Iterator[tuple[str, Iterator[bytes]]]:
        """The hour's members in order, each with a lazy iterator of its lines (no newlines).

        Consume each member's lines before moving to the next member.
        """
        plan = self.plan_hour(hour)
        generator = HourGenerator(
            plan,
            self._rng(plan.hour, "lines"),
            seed=self.seed,
            app_id=self.app_id,
            property_bags=self.property_bags,
        )
        lines = generator.lines()
        for name, count in zip(plan.member_names, plan.member_lines, strict=True):
            yield name, _take(lines, count)

    def write_zip(
        self, out: str | os.PathLike[str] | IO[bytes], start: datetime | date, end: datetime | date
    ) -> ExportStats:
        """Write the export of ``start``..``end`` (inclusive hours) as the API's zip, streamed.

        ``out`` is a path or a binary file object (seekable or not; a socket-like stream works).
        """
        return write_export_zip(self, out, start, end)


def _take(lines: Iterator[bytes], count: int) -> Iterator[bytes]:
    for _ in range(count):
        yield next(lines)
