"""The analysts' data API, without I/O: request validation, page cursors, API keys, problem details.

Every value a caller sends is checked here against a strict shape (dates, lengths, counts, allowed
characters) before anything reaches a query; a failure is an ``ApiProblem`` naming the parameter. The
values then travel only as BigQuery query parameters (``services/data_api.py``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

SOURCES = ("sns", "amplitude")
FORMATS = {"json": "application/json", "csv": "text/csv", "ndjson": "application/x-ndjson"}
MAX_PAGE_SIZE = 10_000
DEFAULT_PAGE_SIZE = 1_000
MAX_EVENT_TYPES = 100
MAX_TEXT = 256
MAX_TOKEN = 1_024
EARLIEST = date(2000, 1, 1)  # nothing older exists in either source; bounds typos such as 0202-01-01
LATEST = date(2099, 12, 31)

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ApiProblem(Exception):
    """An RFC 9457 problem: the HTTP status, a short title, a detail for humans, per-field errors."""

    status: int
    title: str
    detail: str
    errors: tuple[dict[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = list(self.errors)
        return body


def invalid(errors: Sequence[tuple[str, str]]) -> ApiProblem:
    first = dict(reversed(errors))  # one message per parameter: the first found
    fields = tuple(
        {"parameter": name, "message": first[name]} for name in dict.fromkeys(n for n, _ in errors)
    )
    names = ", ".join(first_name["parameter"] for first_name in fields)
    return ApiProblem(400, "Invalid request", f"invalid parameter(s): {names}", fields)


# ------------------------------------------------------------------------------------------ requests


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


@dataclass(frozen=True)
class PageRequest:
    filter: EventFilter
    limit: int
    after: CursorKey | None
    fingerprint: str  # binds a page token to the request that produced it


@dataclass(frozen=True)
class CursorKey:
    """The sort key of the last row of a page: the next page starts strictly after it."""

    event_time: datetime
    source: str
    event_id: str


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


# ------------------------------------------------------------------------------------------- cursors


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


# ------------------------------------------------------------------------------------------- API keys


@dataclass(frozen=True)
class ApiKeys:
    """Callers' keys as ``name:sha256-hex`` pairs (the keys themselves are never stored or logged).

    Keys are random 256-bit tokens, so a plain SHA-256 is enough to make the stored form useless to a
    reader; every stored digest is compared in constant time, without stopping at the first match.
    """

    digests: tuple[tuple[str, bytes], ...] = field(default=())

    @classmethod
    def parse(cls, raw: str) -> ApiKeys:
        entries = []
        for item in filter(None, re.split(r"[,\s]+", raw)):  # one per line in a key file
            name, _, digest = item.partition(":")
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", name) or not re.fullmatch(
                r"[0-9a-f]{64}", digest
            ):
                raise ValueError("expected name:sha256hex entries (name: lowercase letters, digits, _ and -)")
            entries.append((name, bytes.fromhex(digest)))
        if not entries:
            raise ValueError("no keys given")
        return cls(tuple(entries))

    @staticmethod
    def digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def caller(self, authorization: str | None) -> str:
        """The caller's name for the ``Authorization: Bearer <key>`` header, or an ``ApiProblem``."""
        if not authorization:
            raise ApiProblem(
                401, "Unauthorized", "send an API key as 'Authorization: Bearer <key>'",
                headers=(("WWW-Authenticate", 'Bearer realm="jupiter-data"'),),
            )  # fmt: skip
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiProblem(
                401, "Unauthorized", "the Authorization header must be 'Bearer <key>'",
                headers=(("WWW-Authenticate", 'Bearer realm="jupiter-data", error="invalid_request"'),),
            )  # fmt: skip
        presented = hashlib.sha256(key.strip().encode("utf-8", "surrogateescape")).digest()
        found = None
        for name, digest in self.digests:
            if hmac.compare_digest(presented, digest) and found is None:
                found = name
        if found is None:
            raise ApiProblem(403, "Forbidden", "the API key is not valid")
        return found
