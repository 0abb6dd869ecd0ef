"""What a ``daily-runs`` message asks for: which days to sync. No I/O."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

log = logging.getLogger(__name__)

MAX_DAYS = 366  # a backfill longer than a year is a typo, not a plan


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


def parse_request(data: bytes, now: datetime) -> SyncRequest:
    """``{}`` → yesterday; ``{"day": D}``; ``{"start": D1, "end": D2}``; optional ``"force": true``."""
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
    except (ValueError, KeyError, TypeError) as exc:
        log.error("ignoring an invalid sync request: %s", exc)
        return None
