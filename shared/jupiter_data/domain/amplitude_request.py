"""What a ``daily-runs`` message asks for: which days to sync. No I/O."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

log = logging.getLogger(__name__)

MAX_DAYS = 366  # a backfill longer than a year is a typo, not a plan
# Amplitude's data for an hour is complete about 2 h after it, so day D is complete at D+1 02:00 UTC.
COMPLETE_AFTER = timedelta(hours=26)


class DayNotComplete(ValueError):
    """A day whose Amplitude data is not complete yet: syncing it would record a partial day as done."""


@dataclass(frozen=True)
class SyncRequest:
    days: list[date]
    force: bool = False


def days_between(first: date, last: date) -> list[date]:
    if last < first:
        raise ValueError(f"end {last} is before start {first}")
    if (last - first).days >= MAX_DAYS:
        raise ValueError(f"{first}..{last} is more than {MAX_DAYS} days")
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def yesterday(now: datetime) -> date:
    return (now.astimezone(UTC) - timedelta(days=1)).date()


def latest_complete_day(now: datetime) -> date:
    return (now.astimezone(UTC) - COMPLETE_AFTER).date()


def refuse_incomplete(days: Sequence[date], now: datetime) -> None:
    """Raise ``DayNotComplete`` if any of ``days`` is not complete at ``now``, whatever ``force`` says."""
    latest = latest_complete_day(now)
    late = sorted(day for day in days if day > latest)
    if late:
        which = str(late[0]) if len(late) == 1 else f"{late[0]}..{late[-1]} ({len(late)} days)"
        raise DayNotComplete(
            f"{which} not complete yet: Amplitude's data for a day is complete at 02:00 UTC the next day; "
            f"the latest complete day is {latest} (now {now.astimezone(UTC):%Y-%m-%d %H:%M} UTC)"
        )


def parse_request(data: bytes, now: datetime) -> SyncRequest:
    """``{}`` → yesterday; ``{"day": D}``; ``{"start": D1, "end": D2}``; optional ``"force": true``.

    A request reaching a day that is not complete at ``now`` is refused whole (``DayNotComplete``).
    """
    request = _parse(data, now)
    refuse_incomplete(request.days, now)
    return request


def _parse(data: bytes, now: datetime) -> SyncRequest:
    document = json.loads(data or b"{}")
    if not isinstance(document, dict) or set(document) - {"day", "start", "end", "force"}:
        raise ValueError('expected {}, {"day": "YYYY-MM-DD"} or {"start": ..., "end": ...}')
    force = document.get("force", False) is True
    if "day" in document:
        if "start" in document or "end" in document:
            raise ValueError("give either day, or start and end")
        return SyncRequest([date.fromisoformat(document["day"])], force)
    if "start" in document or "end" in document:
        return SyncRequest(
            days_between(date.fromisoformat(document["start"]), date.fromisoformat(document["end"])), force
        )
    return SyncRequest([yesterday(now)], force)


def days_requested(data: bytes, now: datetime) -> SyncRequest | None:
    """The request, or None (logged) when it can never be served."""
    try:
        return parse_request(data, now)
    except DayNotComplete as exc:
        # A permanent refusal (redelivery for hours would only dead-letter it): the message the
        # "Amplitude sync failed" alert counts, so a day the scheduler could not sync is seen.
        log.error(
            "Amplitude sync failed", extra={"fields": {"error": str(exc), "reason": "day not complete"}}
        )
        return None
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        # The reason may quote the request: cut it, as every echo of untrusted input is.
        log.error("ignoring an invalid sync request: %.200s", f"{type(exc).__name__}: {exc}")
        return None
