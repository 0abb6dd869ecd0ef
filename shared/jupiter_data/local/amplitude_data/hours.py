"""Hours as the Export API names them: ``YYYYMMDDTHH`` windows (both ends inclusive) and member names."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

HOUR = timedelta(hours=1)


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
