"""Request parsing: every value a caller sends, checked against a strict shape before any query.

Dates, lengths, counts and allowed characters are checked here; a failure is an ``ApiProblem`` naming
each bad parameter. The values then travel only as BigQuery query parameters (``catalogue.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from jupiter_data.data_api.catalogue import SOURCES
from jupiter_data.data_api.problems import invalid

FORMATS = {"json": "application/json", "csv": "text/csv", "ndjson": "application/x-ndjson"}
MAX_PAGE_SIZE = 10_000
DEFAULT_PAGE_SIZE = 1_000
MAX_EVENT_TYPES = 100
MAX_TEXT = 256
EARLIEST = date(2000, 1, 1)  # nothing older exists in either source; bounds typos such as 0202-01-01
LATEST = date(2099, 12, 31)

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class EventFilter:
    """What every event query filters on. ``start``/``end`` are inclusive UTC days."""

    start: date
    end: date
    event_types: tuple[str, ...] = ()
    user_id: str | None = None
    source: str | None = None  # None: both

    def params(self) -> dict[str, Any]:
        """The query parameters of the shared ``events`` CTE: the same names, types and meaning always."""
        return {
            "start_time": datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC),
            "end_time": datetime(self.end.year, self.end.month, self.end.day, tzinfo=UTC) + timedelta(days=1),
            "event_types": list(self.event_types),
            "user_id": self.user_id or "",
            "include_sns": self.source in (None, "sns"),
            "include_amplitude": self.source in (None, "amplitude"),
        }


class QueryArgs:
    """Reads a query string strictly: unknown names, repeats of single values and bad shapes are errors."""

    def __init__(self, args: Mapping[str, Sequence[str]], allowed: Sequence[str]) -> None:
        self._args = args
        self.errors: list[tuple[str, str]] = [
            (name[:MAX_TEXT], "unknown parameter") for name in args if name not in allowed
        ]

    def one(self, name: str) -> str | None:
        values = self._args.get(name, ())
        if len(values) > 1:
            self.errors.append((name, "give it at most once"))
            return None
        return values[0] if values else None

    def many(self, name: str) -> list[str]:
        return list(self._args.get(name, ()))

    def check(self) -> None:
        if self.errors:
            raise invalid(self.errors)


def parse_day(name: str, raw: object, errors: list[tuple[str, str]]) -> date | None:
    if not isinstance(raw, str) or not _DATE.fullmatch(raw):
        errors.append((name, "a date as YYYY-MM-DD"))
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        errors.append((name, "not a calendar date"))
        return None
    if not EARLIEST <= day <= LATEST:
        errors.append((name, f"between {EARLIEST} and {LATEST}"))
        return None
    return day


def text_value(name: str, raw: object, errors: list[tuple[str, str]]) -> str | None:
    if not isinstance(raw, str) or not raw or len(raw) > MAX_TEXT or _CONTROL.search(raw):
        errors.append((name, f"1 to {MAX_TEXT} characters, no control characters"))
        return None
    return raw


def event_types(name: str, raw: object, errors: list[tuple[str, str]]) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_EVENT_TYPES:
        errors.append((name, f"a list of at most {MAX_EVENT_TYPES} event types"))
        return ()
    before = len(errors)
    values = tuple(value for item in raw if (value := text_value(name, item, errors)) is not None)
    del errors[before + 1 :]  # one message for the list is enough
    return tuple(dict.fromkeys(values))


def date_range(
    start: date | None, end: date | None, max_days: int, errors: list[tuple[str, str]], names: tuple[str, str]
) -> None:
    if start is None or end is None:
        return
    if end < start:
        errors.append((names[1], f"on or after {names[0]}"))
    elif (end - start).days + 1 > max_days:
        errors.append((names[1], f"at most {max_days} days after {names[0]}, both included"))


def event_filter(args: QueryArgs, max_days: int, *, user_id: str | None = None) -> EventFilter | None:
    """start, end (required), event_type (repeatable), user_id, source; None when anything is wrong."""
    errors = args.errors
    start, end = required_day(args, "start"), required_day(args, "end")
    date_range(start, end, max_days, errors, ("start", "end"))
    types = event_types("event_type", args.many("event_type"), errors)
    if user_id is None and (raw_user := args.one("user_id")) is not None:
        user_id = text_value("user_id", raw_user, errors)
    source = args.one("source")
    if source is not None and source not in SOURCES:
        errors.append(("source", f"one of {', '.join(SOURCES)}"))
    if errors or start is None or end is None:
        return None
    return EventFilter(start, end, types, user_id, source)


def required_day(args: QueryArgs, name: str) -> date | None:
    raw = args.one(name)
    if raw is None:
        if not any(error[0] == name for error in args.errors):
            args.errors.append((name, "required"))
        return None
    return parse_day(name, raw, args.errors)


def page_size(args: QueryArgs) -> int:
    raw = args.one("limit")
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        args.errors.append(("limit", f"an integer from 1 to {MAX_PAGE_SIZE}"))
        return DEFAULT_PAGE_SIZE
    return int(raw)


# ------------------------------------------------------------------------------------- legacy request


@dataclass(frozen=True)
class LegacyCountsRequest:
    start: date
    end: date
    event_types: tuple[str, ...]


def legacy_counts_request(body: object, max_days: int) -> LegacyCountsRequest:
    """``{"startDate", "endDate", "eventTypes"}`` as the replaced function took them (all required)."""
    errors: list[tuple[str, str]] = []
    if not isinstance(body, dict):
        raise invalid([("body", 'a JSON object {"startDate", "endDate", "eventTypes"}')])
    errors.extend((str(name)[:MAX_TEXT], "unknown field") for name in body if name not in _LEGACY_FIELDS)
    start = parse_day("startDate", body.get("startDate"), errors)
    end = parse_day("endDate", body.get("endDate"), errors)
    date_range(start, end, max_days, errors, ("startDate", "endDate"))
    types = event_types("eventTypes", body.get("eventTypes"), errors)
    if "eventTypes" in body and not types and not any(name == "eventTypes" for name, _ in errors):
        errors.append(("eventTypes", "at least one event type"))
    if errors or start is None or end is None:
        raise invalid(errors)
    return LegacyCountsRequest(start, end, types)


_LEGACY_FIELDS = ("startDate", "endDate", "eventTypes")


# -------------------------------------------------------------------------------------------- formats


def choose_format(requested: str | None, accept: str | None) -> str:
    """``format=`` wins; else the first of JSON, CSV, NDJSON the Accept header names; else JSON."""
    if requested is not None:
        if requested not in FORMATS:
            raise invalid([("format", f"one of {', '.join(FORMATS)}")])
        return requested
    for part in (accept or "").split(","):
        media = part.split(";", 1)[0].strip().lower()
        for name, mime in FORMATS.items():
            if media == mime or (name == "ndjson" and media == "application/ndjson"):
                return name
    return "json"
