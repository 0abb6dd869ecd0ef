"""Deterministic Amplitude Export API data, written as the real zip, one member at a time. Dev only.

The Export API answers ``GET /api/2/export?start=YYYYMMDDTHH&end=YYYYMMDDTHH`` (both hours inclusive,
selected by server upload time) with a zip whose members are
``<app>/<app>_<YYYY-MM-DD>_<H>#<n>.json.gz`` (hour not zero-padded, parts numbered from 0), each a
gzip of newline-delimited JSON, one event per line. This module produces that, streamed: an hour's
lines are generated lazily and gzipped straight into the zip, so a 500k-event export never sits in
memory.

Determinism: every hour draws from its own random generator seeded by ``(seed, app_id, hour)``, so an
hour's members are byte-identical whichever window they are exported in. Cheap plans (events,
malformed lines, late events and members per hour) are known without generating anything, which is
what :meth:`ExportSpec.expected` returns for reconciliation.

What the lines look like:

* every export field, with nulls and missing keys in any field except the five a good line always
  has (:data:`ALWAYS_PRESENT`); ``user_id`` null on about 10 % of lines (anonymous users);
* timestamps ``2020-11-24 09:59:55.977000`` and, on about 8 % of them, ``2020-11-24 09:59:55``;
* property bags nested 2-3 levels, with arrays, empty objects, nulls, non-Latin scripts, emoji,
  escapes, U+2028 inside strings (a ``str.splitlines`` trap), integers beyond 2**53; with
  ``property_bags=False`` every bag is null (events without property rows);
* late events: ``late_fraction`` (5 %) of an hour's events happened on the previous UTC day; every
  other event's ``event_time`` is on the upload day. ``server_upload_time`` is always inside the hour;
* optionally malformed lines at ``malformed_rate`` (per good event): text that is not JSON, cut-off
  JSON, invalid UTF-8, JSON that is not an object, and objects whose ``$insert_id``/``uuid`` are
  missing or null. They come in addition to the hour's events.

    python -m jupiter_data.local.amplitude_data --start 20240301T00 --end 20240301T23 \\
        --events-per-hour 20000 -o export.zip
"""

# Deliberate: look-alike letters from other scripts are test data here, and the random generators
# are seeded on purpose (reproducible data, not secrets).
# ruff: noqa: RUF001, S311

from __future__ import annotations

import argparse
import gzip
import io
import itertools
import os
import random
import sys
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import orjson

from jupiter_data.domain.amplitude import PROPERTY_TYPES

DEFAULT_APP_ID = 187520
HOUR = timedelta(hours=1)
# A good line always carries these keys with a non-null value; any other key may be absent or null.
ALWAYS_PRESENT = ("$insert_id", "uuid", "event_id", "event_time", "server_upload_time")
MEMBER_PARTS_WEIGHTS = (5, 3, 2)  # how often an hour has 1, 2 or 3 members

_US_PER_HOUR = 3_600_000_000
_US_PER_DAY = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LINES_PER_WRITE = 512
_PENDING_WRITES = 4


# --------------------------------------------------------------------------------------------- hours


def as_hour(value: datetime | date) -> datetime:
    """The UTC hour containing ``value`` (a naive datetime is taken as UTC; a date means its hour 0)."""
    if not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(minute=0, second=0, microsecond=0)


def hours_between(start: datetime | date, end: datetime | date) -> list[datetime]:
    """Every hour from ``start`` to ``end``, both inclusive, as the Export API reads a window."""
    first, last = as_hour(start), as_hour(end)
    if first > last:
        raise ValueError(f"start {first:%Y%m%dT%H} is after end {last:%Y%m%dT%H}")
    count = int((last - first) / HOUR) + 1
    return [first + i * HOUR for i in range(count)]


def parse_export_hour(text: str) -> datetime:
    """``YYYYMMDDTHH`` → the aware UTC hour; ValueError with a message otherwise."""
    if len(text) != 11 or text[8] != "T" or not (text[:8] + text[9:]).isdigit():
        raise ValueError(f"{text!r} is not YYYYMMDDTHH")
    try:
        return datetime.strptime(text, "%Y%m%dT%H").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid hour (YYYYMMDDTHH)") from None


def format_export_hour(hour: datetime) -> str:
    return as_hour(hour).strftime("%Y%m%dT%H")


def member_name(app_id: int, hour: datetime, part: int) -> str:
    hour = as_hour(hour)
    return f"{app_id}/{app_id}_{hour:%Y-%m-%d}_{hour.hour}#{part}.json.gz"


# ---------------------------------------------------------------------------------------------- plans


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
        return random.Random(f"amplitude/{self.seed}/{self.app_id}/{hour:%Y%m%dT%H}/{purpose}")

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
        lines = _HourGenerator(self, plan).lines()
        for name, count in zip(plan.member_names, plan.member_lines, strict=True):
            yield name, _take(lines, count)

    def generate_hour(self, hour: datetime | date) -> list[tuple[str, list[bytes]]]:
        """The hour's members with their lines, in memory: for tests and small hours."""
        return [(name, list(lines)) for name, lines in self.iter_hour(hour)]

    def write_zip(
        self, out: str | os.PathLike[str] | IO[bytes], start: datetime | date, end: datetime | date
    ) -> ExportStats:
        """Write the export of ``start``..``end`` (inclusive hours) as the API's zip, streamed.

        ``out`` is a path or a binary file object (seekable or not; a socket-like stream works).
        Memory stays at about one batch of lines whatever the size of the window.
        """
        if isinstance(out, str | os.PathLike):
            with open(out, "wb") as handle:
                return self.write_zip(handle, start, end)
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
                plan = self.plan_hour(hour)
                written = 0
                for (name, lines), count in zip(self.iter_hour(hour), plan.member_lines, strict=True):
                    written += self._write_member(archive, worker, name, hour, lines, large=count > 1_000_000)
                if written != plan.lines:  # pragma: no cover - a bug in this module
                    raise AssertionError(f"{hour}: planned {plan.lines} lines, wrote {written}")
                stats.add(plan)
        stats.bytes = out.tell() - begin if counter is None else counter.count
        return stats

    def _write_member(
        self,
        archive: zipfile.ZipFile,
        worker: ThreadPoolExecutor,
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
            gzip.GzipFile(
                filename="", fileobj=raw, mode="wb", compresslevel=self.compresslevel, mtime=0
            ) as gz,
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


def _take(lines: Iterator[bytes], count: int) -> Iterator[bytes]:
    for _ in range(count):
        yield next(lines)


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


# ------------------------------------------------------------------------------ convenience functions


def generate_hour(
    day: date,
    hour: int,
    events: int,
    seed: int = 0,
    *,
    malformed_rate: float = 0.0,
    app_id: int = DEFAULT_APP_ID,
) -> list[tuple[str, list[bytes]]]:
    """Members of one hour with their lines (bytes, no trailing newline)."""
    spec = ExportSpec(events_per_hour=events, seed=seed, malformed_rate=malformed_rate, app_id=app_id)
    return spec.generate_hour(datetime(day.year, day.month, day.day, hour, tzinfo=UTC))


def write_export_zip(
    out: str | os.PathLike[str] | IO[bytes],
    start: datetime | date,
    end: datetime | date,
    events_per_hour: int = 1000,
    seed: int = 0,
    *,
    malformed_rate: float = 0.0,
    app_id: int = DEFAULT_APP_ID,
) -> ExportStats:
    """Stream the export zip of ``start``..``end`` (inclusive hours) to ``out``; see ExportSpec."""
    spec = ExportSpec(
        events_per_hour=events_per_hour, seed=seed, malformed_rate=malformed_rate, app_id=app_id
    )
    return spec.write_zip(out, start, end)


# -------------------------------------------------------------------------------------- generation
#
# Hot path: ~45 fields per event. ``int(rand() * n)`` and ``seq[int(rand() * len(seq))]`` stand in for
# randrange/choice (several times faster, equally deterministic); timestamps are formatted by hand.

Rand = Callable[[], float]


@lru_cache(maxsize=65536)
def _hour_text(epoch_hours: int) -> str:
    return (_EPOCH + timedelta(hours=epoch_hours)).strftime("%Y-%m-%d %H:")


def format_timestamp(epoch_us: int, fraction: bool = True) -> str:
    """Amplitude's timestamp text: ``2020-11-24 09:59:55.977000`` or, without fraction, ``…09:59:55``."""
    epoch_hours, rest = divmod(epoch_us, _US_PER_HOUR)
    seconds, micros = divmod(rest, 1_000_000)
    minutes, seconds = divmod(seconds, 60)
    if fraction:
        return f"{_hour_text(epoch_hours)}{minutes:02d}:{seconds:02d}.{micros:06d}"
    return f"{_hour_text(epoch_hours)}{minutes:02d}:{seconds:02d}"


def _epoch_us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _uuid(rng: random.Random) -> str:
    value = rng.getrandbits(128) & ~(0xF000 << 64) & ~(0xC000 << 48) | (0x4000 << 64) | (0x8000 << 48)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _below(rand: Rand, n: int) -> int:
    return int(rand() * n)


def _pick(rand: Rand, options: tuple[Any, ...]) -> Any:
    return options[int(rand() * len(options))]


TEXTS = (
    "Привіт, світ",
    "你好，世界",
    "こんにちは 🌸",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "Γειά σου Κόσμε",
    "שלום עולם",
    "안녕하세요",
    "👩‍👩‍👧‍👦 family",
    "🇺🇦🇯🇵🏳️‍🌈",
    "café naïve façade — “quoted”",
    'tab\tand "quotes" and \\backslash',
    "two\nlines",
    "line\u2028separator",
    "zero\u200bwidth",
    "e\u0301 combining",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 astral",
    "",
    "plain ascii",
)

# (country, region, city, dma, lat, lng, language)
PLACES: tuple[tuple[str, str | None, str | None, str | None, float | None, float | None, str], ...] = (
    (
        "United States",
        "California",
        "San Francisco",
        "San Francisco-Oakland-San Jose, CA",
        37.7749,
        -122.4194,
        "English",
    ),
    ("United States", "New York", "New York", "New York, NY", 40.7128, -74.006, "English"),
    ("Ukraine", "Kyiv City", "Kyiv", None, 50.4501, 30.5234, "Ukrainian"),
    ("Japan", "Tokyo", "Tokyo", None, 35.6762, 139.6503, "Japanese"),
    ("Germany", "Bavaria", "München", None, 48.1351, 11.582, "German"),
    ("Brazil", "São Paulo", "São Paulo", None, -23.5505, -46.6333, "Portuguese"),
    ("Poland", "Łódź Voivodeship", "Łódź", None, 51.7592, 19.456, "Polish"),
    ("India", "Maharashtra", "Mumbai", None, 19.076, 72.8777, "Hindi"),
    ("Egypt", "Cairo Governorate", "Cairo", None, 30.0444, 31.2357, "Arabic"),
    ("South Korea", None, None, None, None, None, "Korean"),
    ("Netherlands", "North Holland", "Amsterdam", None, 52.3676, 4.9041, "Dutch"),
)

# (platform, os_name, os_versions, library, carriers, models)
# where each model is (brand, manufacturer, model, family, type)
DEVICES: tuple[tuple[Any, ...], ...] = (
    (
        "iOS",
        "ios",
        ("16.7.2", "17.1.2", "17.4"),
        "amplitude-ios/8.17.1",
        ("AT&T", "Vodafone", "NTT DOCOMO", "Київстар", None),
        (
            ("Apple", "Apple", "iPhone14,5", "Apple iPhone", "Apple iPhone 13"),
            ("Apple", "Apple", "iPhone15,2", "Apple iPhone", "Apple iPhone 14 Pro"),
        ),
    ),
    (
        "Android",
        "android",
        ("12", "13", "14"),
        "amplitude-android/2.40.1",
        ("T-Mobile", "Orange", "Jio", None),
        (
            ("samsung", "Samsung", "SM-S911B", "Samsung Galaxy S23", "Samsung Galaxy S23"),
            ("google", "Google", "Pixel 7", "Google Pixel", "Google Pixel 7"),
        ),
    ),
    (
        "Web",
        "Chrome",
        ("119", "120", "121"),
        "amplitude-ts/2.3.0",
        (None,),
        (
            (None, None, "Mac", "Mac", "Mac"),
            (None, None, "Windows", "Windows", "Windows"),
            (None, None, None, None, None),
        ),
    ),
    (None, None, (None,), "http/2.0", (None,), ((None, None, None, None, None),)),
)


@dataclass(frozen=True)
class _User:
    base: dict[str, Any]  # the per-user fields of a line, merged into every event
    user_properties: dict[str, Any]
    device_id: str
    creation_us: int


def _user_properties(rng: random.Random, index: int) -> dict[str, Any]:
    shape = rng.random()
    if shape < 0.1:
        return {}
    props: dict[str, Any] = {
        "plan": rng.choice(("free", "pro", "team", None)),
        "cohort": f"2020-W{rng.randint(1, 52):02d}",
        "[Amplitude] Device Family": rng.choice(("Apple iPhone", "Samsung Galaxy", "Mac")),
        "名前": rng.choice(TEXTS),
        "prefs": {
            "lang": rng.choice(("uk", "ja", "en", "ar")),
            "notifications": {
                "email": rng.random() < 0.5,
                "push": rng.random() < 0.5,
                "quiet_hours": [22, 7],
            },
        },
        "ltv": round(rng.uniform(0, 500), 2),
        "tags": rng.sample(("beta", "vip", "churn-risk", "β-tester", "🎮"), rng.randint(0, 3)),
    }
    if shape > 0.8:
        props["referral"] = {
            "code": f"REF{index:05d}",
            "by": {"user": f"user-{rng.randrange(10**6)}", "level": 2},
        }
    return props


@lru_cache(maxsize=8)
def _population(seed: int, app_id: int, size: int = 2000) -> tuple[_User, ...]:
    """A fixed set of users per (seed, app): the same in every hour and every window."""
    rng = random.Random(f"amplitude/{seed}/{app_id}/users")
    base_us = _epoch_us(datetime(2019, 1, 1, tzinfo=UTC))
    users = []
    for index in range(size):
        country, region, city, dma, lat, lng, language = rng.choice(PLACES)
        platform, os_name, os_versions, library, carriers, models = rng.choice(DEVICES)
        brand, manufacturer, model, family, device_type = rng.choice(models)
        ios, android = platform == "iOS", platform == "Android"
        anonymous = rng.random() < 0.1
        device_id = _uuid(rng).upper() if ios else _uuid(rng)
        base: dict[str, Any] = {
            "app": app_id,
            "amplitude_id": 100_000_000_000 + rng.randrange(10**10),
            "user_id": None
            if anonymous
            else rng.choice((f"user-{index:06d}", f"u{index}@example.com", str(index))),
            "device_id": device_id,
            "country": country,
            "region": region,
            "city": city,
            "dma": dma,
            "location_lat": lat,
            "location_lng": lng,
            "language": language,
            "platform": platform,
            "os_name": os_name,
            "os_version": rng.choice(os_versions),
            "device_brand": brand,
            "device_manufacturer": manufacturer,
            "device_model": model,
            "device_family": family,
            "device_type": device_type,
            "device_carrier": rng.choice(carriers),
            "ip_address": (
                f"203.0.113.{rng.randrange(1, 255)}"
                if rng.random() < 0.8
                else f"2001:db8::{rng.randrange(65536):x}"
            ),
            "library": library,
            "paying": rng.choice((True, False, None)),
            "sample_rate": None,
            "start_version": rng.choice(("1.0.0", "2.3.1", None)),
            "version_name": rng.choice(("3.4.0", "3.5.1", "4.0.0-beta.2", None)),
            "adid": _uuid(rng) if android and rng.random() < 0.7 else None,
            "idfa": _uuid(rng).upper() if ios and rng.random() < 0.4 else None,
            "partner_id": rng.choice((None, None, None, "partner-42")),
            "source_id": None,
            "is_attribution_event": False,
            "data_type": "event",
        }
        creation_us = base_us + rng.randrange(4 * 365 * _US_PER_DAY)
        users.append(_User(base, _user_properties(rng, index), device_id, creation_us))
    return tuple(users)


_SCREENS = ("home", "Главная", "設定", "checkout", "profile")
_SOURCES = ("push", "deeplink", None)
_CURRENCIES = ("USD", "EUR", "UAH", "JPY")
_METHODS = ("card", "apple_pay", None)
_RATIOS = (0.5, 1e-7, 12345.678, -3.0)
_BIG_IDS = (9_007_199_254_740_993, 2**63 - 1)  # beyond float precision; INT64 max
_TAG_SETS: tuple[list[str], ...] = ([], ["new"], ["sale", "β"], ["new", "sale", "β", "★"])


def _screen(rand: Rand) -> dict[str, Any]:
    return {
        "screen": _pick(rand, _SCREENS),
        "referrer": {
            "source": _pick(rand, _SOURCES),
            "campaign": {"id": _below(rand, 100), "name": _pick(rand, TEXTS)},
        },
        "duration_ms": 50 + _below(rand, 120_000),
    }


def _purchase(rand: Rand) -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {
            "sku": f"SKU-{_below(rand, 1000):03d}",
            "qty": 1 + _below(rand, 3),
            "price": _below(rand, 9900) / 100 + 0.5,
        }
        for _ in range(_below(rand, 4))
    ]
    return {
        "order_id": _below(rand, 10**9) if rand() < 0.9 else _pick(rand, _BIG_IDS),
        "amount": round(sum(i["qty"] * i["price"] for i in items), 2),
        "currency": _pick(rand, _CURRENCIES),
        "items": items,
        "payment": {"method": _pick(rand, _METHODS), "card": {"brand": "visa", "3ds": rand() < 0.5}},
        "coupon": None,
    }


def _search(rand: Rand) -> dict[str, Any]:
    return {
        "query": _pick(rand, TEXTS),
        "results": _below(rand, 500),
        "filters": {"tags": _pick(rand, _TAG_SETS), "price": {"min": 0, "max": None}},
        "ratio": _pick(rand, _RATIOS),
    }


def _message(rand: Rand) -> dict[str, Any]:
    return {"text": _pick(rand, TEXTS), "length": _below(rand, 280), "attachments": [], "thread": {}}


def _empty(rand: Rand) -> dict[str, Any]:
    return {}


# (event_type, amplitude_event_type, event_properties builder), each listed as often as it is common
EVENT_TYPES: tuple[tuple[str, str | None, Callable[[Rand], dict[str, Any]]], ...] = (
    *[("app opened", None, _empty)] * 4,
    *[("screen viewed", None, _screen)] * 6,
    *[("payment succeeded", None, _purchase)] * 2,
    *[("search", None, _search)] * 3,
    *[("message sent ✉️", None, _message)] * 2,
    ("session_start", None, _empty),
    ("$identify", "$identify", _empty),
    ("[Amplitude] Revenue", None, _purchase),
)

# Keys a good line may lack or carry as null: everything but ALWAYS_PRESENT.
DAMAGEABLE = (
    "user_id",
    "device_id",
    "session_id",
    "event_type",
    "amplitude_id",
    "app",
    "client_event_time",
    "client_upload_time",
    "server_received_time",
    "processed_time",
    "user_creation_time",
    "event_properties",
    "user_properties",
    "group_properties",
    "groups",
    "data",
    "country",
    "city",
    "region",
    "dma",
    "language",
    "platform",
    "os_name",
    "os_version",
    "device_brand",
    "device_manufacturer",
    "device_model",
    "device_family",
    "device_type",
    "device_carrier",
    "ip_address",
    "library",
    "location_lat",
    "location_lng",
    "paying",
    "sample_rate",
    "start_version",
    "version_name",
    "is_attribution_event",
    "amplitude_event_type",
    "adid",
    "idfa",
    "partner_id",
    "plan",
    "source_id",
    "data_type",
)

_GROUPS: tuple[tuple[dict[str, Any] | None, dict[str, Any] | None], ...] = (
    ({}, {}),
    ({}, {}),
    ({"company": {"name": "Acme", "tier": {"level": 3, "since": "2021-01-01"}}}, {"company": ["Acme"]}),
    ({"team": {"名称": "開発チーム"}}, {"team": ["dev", "ops"]}),
    (None, None),
)
_DATA: tuple[dict[str, Any] | None, ...] = (
    {},
    {"first_event": True},
    {"path": "/2/httpapi", "user_properties_updated": True, "group_first_event": {}, "group_ids": {}},
    {"path": "/batch", "lib": {"name": "amplitude-ts", "meta": {"retries": 1, "queue": [1, 2]}}},
    None,
)
_PLANS: tuple[dict[str, Any] | None, ...] = (
    {},
    {"branch": "main", "source": "web", "version": "12"},
    {"branch": "feature/ü", "version": "3"},
    None,
)
_NOT_OBJECTS = (b'["not", "an", "object"]', b'"just a string"', b"null", b"42")


class _HourGenerator:
    """Lines of one hour: good events in upload order, with malformed lines interleaved."""

    def __init__(self, spec: ExportSpec, plan: HourPlan) -> None:
        self.plan = plan
        self.rng = spec._rng(plan.hour, "lines")
        self.rand = self.rng.random
        self.users = _population(spec.seed, spec.app_id)
        self.hour_us = _epoch_us(plan.hour)
        self.property_bags = spec.property_bags
        self.day_start_us = self.hour_us - self.hour_us % _US_PER_DAY

    def lines(self) -> Iterator[bytes]:
        rand = self.rand
        events, malformed_left, late_left = self.plan.events, self.plan.malformed, self.plan.late
        total = events + malformed_left
        index = 0  # good events emitted so far
        dumps = orjson.dumps
        for line in range(total):
            # Selection sampling (Knuth's algorithm S): exact counts, no list of positions held.
            if malformed_left and rand() * (total - line) < malformed_left:
                malformed_left -= 1
                yield self._malformed(index)
                continue
            late = late_left > 0 and rand() * (events - index) < late_left
            late_left -= late
            yield dumps(self._event(index, late))
            index += 1

    def _event(self, index: int, late: bool) -> dict[str, Any]:
        rand = self.rand
        user = self.users[int(rand() * len(self.users))]
        # Stratified upload times: sorted, inside the hour, without holding a list of times.
        upload_us = self.hour_us + int((index + rand()) * _US_PER_HOUR) // self.plan.events
        if late:
            # Happened on the previous UTC day (an offline device, a queued batch), uploaded now.
            event_us = self.day_start_us - _US_PER_DAY + int(rand() * _US_PER_DAY)
        else:  # up to 10 minutes before upload, never before the upload day's midnight
            event_us = upload_us - int(rand() * min(600_000_000, upload_us - self.day_start_us))
        event_type, amplitude_event_type, properties = _pick(rand, EVENT_TYPES)
        group_properties, groups = _pick(rand, _GROUPS)
        whole = 0.08  # share of timestamps written without a fraction
        event: dict[str, Any] = {
            "$insert_id": _uuid(self.rng) if rand() < 0.7 else f"{user.device_id}-{event_us // 1000}-{index}",
            "uuid": _uuid(self.rng),
            "event_id": 1 + int(rand() * 1_000_000),
            "session_id": -1 if rand() < 0.05 else (event_us - int(rand() * 1_800_000_000)) // 1000,
            "event_type": event_type,
            "amplitude_event_type": amplitude_event_type,
            "event_time": format_timestamp(event_us, rand() >= whole),
            "client_event_time": format_timestamp(event_us - int(rand() * 2_000_000), rand() >= whole),
            "client_upload_time": format_timestamp(
                upload_us - 1_000_000 - int(rand() * 2_000_000), rand() >= whole
            ),
            "server_received_time": format_timestamp(upload_us - int(rand() * 1_000_000), rand() >= whole),
            "server_upload_time": format_timestamp(upload_us, rand() >= whole),
            "processed_time": format_timestamp(
                upload_us + 1_000_000 + int(rand() * 89_000_000), rand() >= whole
            ),
            "user_creation_time": format_timestamp(user.creation_us, rand() >= whole),
            "event_properties": properties(rand) if rand() >= 0.03 else None,
            "user_properties": user.user_properties,
            "group_properties": group_properties,
            "groups": groups,
            "data": _pick(rand, _DATA),
            "plan": _pick(rand, _PLANS),
            **user.base,
        }
        if rand() < 0.25:  # a quarter of the lines lose one to three keys, or carry them as null
            for key in self.rng.sample(DAMAGEABLE, 1 + int(rand() * 3)):
                if key == "user_id" or rand() < 0.6:
                    event[key] = None
                else:
                    del event[key]
        if not self.property_bags:  # after every draw, so the rest of the line is the same
            event.update((key, None) for key in PROPERTY_TYPES if key in event)
        return event

    def _malformed(self, index: int) -> bytes:
        rand = self.rand
        kind = int(rand() * 7)
        if kind == 0:
            return b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        if kind == 1:
            return b"not json at all \xe2\x9c\x97"
        if kind == 2:  # cut off mid-object
            text = orjson.dumps(self._event(index, False))
            return text[: len(text) // 2]
        if kind == 3:  # invalid UTF-8 inside a string
            return (
                b'{"$insert_id": "\xff\xfe\xfd", "uuid": "'
                + _uuid(self.rng).encode()
                + b'", "event_type": "bad"}'
            )
        if kind == 4:
            return bytes(_pick(rand, _NOT_OBJECTS))
        event = self._event(index, False)
        if kind == 5:  # no id at all
            del event["$insert_id"], event["uuid"]
        else:  # ids present but null
            event["$insert_id"] = event["uuid"] = None
        return orjson.dumps(event)


# ---------------------------------------------------------------------------------------------- CLI


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--start", required=True, type=parse_export_hour, help="first hour, YYYYMMDDTHH")
    parser.add_argument(
        "--end", required=True, type=parse_export_hour, help="last hour, YYYYMMDDTHH (inclusive)"
    )
    parser.add_argument("--events-per-hour", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--malformed-rate", type=float, default=0.0)
    parser.add_argument("--compresslevel", type=int, default=6)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(list(argv) if argv is not None else None)
    spec = ExportSpec(
        events_per_hour=args.events_per_hour,
        seed=args.seed,
        malformed_rate=args.malformed_rate,
        compresslevel=args.compresslevel,
    )
    began = time.perf_counter()
    stats = spec.write_zip(args.output, args.start, args.end)
    elapsed = time.perf_counter() - began
    summary = {k: v for k, v in stats.to_json().items() if k not in {"member_names", "events_per_hour"}}
    summary["seconds"] = round(elapsed, 3)
    summary["events_per_second"] = round(stats.events / elapsed) if elapsed else None
    sys.stdout.buffer.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":
    main()


__all__ = [
    "ALWAYS_PRESENT",
    "DEFAULT_APP_ID",
    "ExportSpec",
    "ExportStats",
    "HourPlan",
    "as_hour",
    "format_export_hour",
    "format_timestamp",
    "generate_hour",
    "hours_between",
    "member_name",
    "parse_export_hour",
    "write_export_zip",
]
