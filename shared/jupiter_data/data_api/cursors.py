"""Paging: a page request, and the opaque token that carries the last row's sort key to the next page.

A token is bound to the request that produced it (a fingerprint of everything that decides the result
set), so a token replayed with other filters is refused instead of skipping or repeating rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from jupiter_data.data_api.catalogue import SOURCES
from jupiter_data.data_api.parsing import EventFilter, QueryArgs, event_filter, page_size
from jupiter_data.data_api.problems import invalid

MAX_TOKEN = 1_024


@dataclass(frozen=True)
class CursorKey:
    """The sort key of the last row of a page: the next page starts strictly after it."""

    event_time: datetime
    source: str
    event_id: str


@dataclass(frozen=True)
class PageRequest:
    filter: EventFilter
    limit: int
    after: CursorKey | None
    fingerprint: str  # binds a page token to the request that produced it


def page_request(args: QueryArgs, max_days: int, route: str, user_id: str | None = None) -> PageRequest:
    filters = event_filter(args, max_days, user_id=user_id)
    limit = page_size(args)
    token = args.one("page_token")
    args.check()
    assert filters is not None
    fingerprint = request_fingerprint(route, filters)
    after = decode_cursor(token, fingerprint) if token is not None else None
    return PageRequest(filters, limit, after, fingerprint)


def request_fingerprint(route: str, filters: EventFilter) -> str:
    """A digest of everything that decides a result set (not the page size): tokens are bound to it."""
    material = orjson.dumps(
        [
            route,
            filters.start.isoformat(),
            filters.end.isoformat(),
            sorted(filters.event_types),
            filters.user_id,
            filters.source,
        ]
    )
    return hashlib.sha256(material).hexdigest()[:16]


def encode_cursor(key: CursorKey, fingerprint: str) -> str:
    """An opaque token: the last row's sort key and the request it belongs to, base64url JSON."""
    payload = {
        "v": 1,
        "f": fingerprint,
        "t": key.event_time.astimezone(UTC).isoformat(timespec="microseconds"),
        "s": key.source,
        "i": key.event_id,
    }
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def decode_cursor(token: str, fingerprint: str) -> CursorKey:
    problem = invalid([("page_token", "not a page token of this request; start again without it")])
    if not token or len(token) > MAX_TOKEN or not re.fullmatch(r"[A-Za-z0-9_-]+", token):
        raise problem
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise problem from None
    if not isinstance(payload, dict) or payload.get("v") != 1 or payload.get("f") != fingerprint:
        raise problem
    moment, source, event_id = payload.get("t"), payload.get("s"), payload.get("i")
    if not (isinstance(moment, str) and source in SOURCES and isinstance(event_id, str) and event_id):
        raise problem
    try:
        event_time = datetime.fromisoformat(moment)
    except ValueError:
        raise problem from None
    if event_time.tzinfo is None:
        raise problem
    return CursorKey(event_time.astimezone(UTC), source, event_id)
