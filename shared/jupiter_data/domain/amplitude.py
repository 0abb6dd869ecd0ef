"""Amplitude export → BigQuery rows: the conversion rules. Pure: no network, no files but the schema.

The schema file ``schemas/bigquery/amplitude.events.json`` is the one definition of the events
columns; ``events_plan()`` arranges it for the row builder (``domain/amplitude_rows.py``), which turns
one export line into its rows. ``jupiter_data.amplitude_transform`` streams a whole export zip through
it, in parallel.

Decisions:

* **Identity / dedup key**: ``(insert_id, uuid)``: Amplitude's ``$insert_id`` (renamed, as ``$`` is
  not valid in a BigQuery column name) and ``uuid``. A line with neither (missing, null or empty) is a
  bad line. Both columns are nullable; every loaded row has at least one. The transform does not
  deduplicate (that would hold a day's ids in memory); readers of the tables do.
* **export_day**: the caller's export window day, on every row of both tables: the partition column.
  The Export API selects by upload time, so a late event (``event_time`` on an earlier day) is exported
  once, with the day it was uploaded in, and belongs to that export day. ``event_date`` (the date of
  ``event_time``) is there for queries.
* **Timestamps**: Amplitude writes ``YYYY-MM-DD HH:MM:SS[.f]`` in UTC, which is BigQuery's canonical
  TIMESTAMP literal (no zone means UTC; so does the BigQuery emulator, whose DuckDB session runs in
  UTC). Values are therefore validated, not rewritten: one regex per value (``TIMESTAMP``) checks the
  shape, 0 to 6 fraction digits, the ranges and the calendar (leap years included; year 0000 excluded,
  as BigQuery starts at 0001). No ``datetime`` is built. An empty string is null. Anything else
  non-null (garbage, a number, 7+ fraction digits, ``2021-02-30``) makes the line a bad line naming the
  field: one bad value would otherwise fail the whole BigQuery load, and nulling it would lose data
  silently. With ``max_bad_fraction`` a format change fails the day instead of loading a day of nulls.
* **Other types**: INTEGER takes JSON integers (also integral floats and digit strings) within INT64;
  beyond ±(2**53 - 1) they are written as JSON strings, as BigQuery asks, so no float rounding can
  touch them. FLOAT takes numbers and numeric strings; BOOLEAN takes booleans, ``"true"``/``"false"``
  and 0/1. STRING columns keep strings and store any other value as its JSON text (lossless). A value
  none of this fits is a bad line naming the field.
* **Property bags** (``PROPERTY_TYPES``) must be objects or null (else a bad line). They are stored
  whole in JSON columns (``{}`` stays ``{}``, null stays null) and flattened into
  ``amplitude.events_properties``. ``plan`` is a JSON column holding any JSON value.
* **Unknown top-level keys** (``$schema``, ``amplitude_attribution_ids``...) go, as one object, to the
  ``extra`` JSON column: nothing in an export is dropped, and a new Amplitude field breaks nothing.
* **Properties rows**: nested objects flatten to dotted keys (``a.b.c``); arrays are one value; an
  empty nested object is one row with value ``{}``; an empty or null bag gives no row. ``value`` is the
  string itself for strings, SQL NULL for JSON null (so the string ``"null"`` and null stay apart), the
  JSON text otherwise (``1``, ``2.5``, ``true``, ``[1,"a"]``, ``{}``). ``value_type`` is the JSON type:
  ``string``, ``number``, ``boolean``, ``null``, ``array`` or ``object`` (empty objects only).
  Flattening is not injective (a key ``"a.b"`` and ``{"a": {"b": ...}}`` give the same key); both
  rows are kept.
* **Bad lines**: not valid JSON (orjson: strict UTF-8, nesting up to 1024), not an object, no event
  id, a value its column cannot hold, too deep to re-encode (over 254 levels; BigQuery's JSON type
  allows 500), or longer than ``max_line_bytes``. Blank lines are counted (``blank_lines``), not
  dead-lettered. After the last member, ``bad_lines > max_bad_fraction * (events + bad_lines)`` fails
  the day.
"""

from __future__ import annotations

import functools
import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson

from jupiter_data.resources import SCHEMAS

EVENTS_TABLE = "amplitude.events"
PROPERTIES_TABLE = "amplitude.events_properties"
EVENTS_SCHEMA_FILE = "bigquery/amplitude.events.json"
PROPERTIES_SCHEMA_FILE = "bigquery/amplitude.events_properties.json"

#: The columns that identify an event (``insert_id`` is the export's ``$insert_id``).
DEDUP_KEY = ("insert_id", "uuid")
#: Bags flattened into ``amplitude.events_properties`` (the ``property_type`` values), in output order.
PROPERTY_TYPES = ("event_properties", "user_properties", "group_properties", "groups", "data")
#: Columns of ``amplitude.events`` that the transform computes rather than copies.
DERIVED_COLUMNS = ("export_day", "event_date", "resolved_user_id", "extra")
#: Columns whose export key differs from the column name.
RENAMED_COLUMNS = {"insert_id": "$insert_id"}
#: Fields of each dead-letter row.
BAD_LINE_FIELDS = ("export_day", "member", "line_number", "error", "raw", "raw_bytes", "raw_truncated")

DEFAULT_MAX_BAD_FRACTION = 0.001
RAW_LINE_LIMIT = 64 << 10  # bytes of a bad line kept in its dead letter; member + line_number find the rest

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SAFE_INT = 2**53 - 1  # beyond this, BigQuery wants INT64 values as JSON strings
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
#: An Amplitude timestamp naming a real instant in 0001..9999 (UTC), with 0 to 6 fraction digits.
TIMESTAMP = re.compile(
    r"(?!0000)(?:[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
    rf"|(?:0[13578]|1[02])-31)|{_LEAP_YEAR}-02-29)"
    r" (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?",
    re.ASCII,
)
_DIGITS = re.compile(r"[-+]?[0-9]{1,19}", re.ASCII)


class BadLine(Exception):
    """This line cannot become an event; ``str()`` says why, naming the field (the dead letter's error)."""


def json_kind(value: object) -> str:
    kinds = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------- columns
# Each conversion takes a value its column does not hold as it is, and returns what the column holds
# or raises BadLine naming the column.


def to_text(column: str, value: Any) -> str:
    return orjson.dumps(value).decode()


def to_int(column: str, value: Any) -> int | str:
    number: int | None = None
    if type(value) is int:
        number = value
    elif type(value) is float and value.is_integer():
        number = int(value)
    elif type(value) is str and _DIGITS.fullmatch(value.strip()):
        number = int(value.strip(), 10)
    if number is None or not INT64_MIN <= number <= INT64_MAX:
        raise BadLine(f"{column}: expected an INT64 integer, got {json_kind(value)} {_show(value)}")
    return number if -SAFE_INT <= number <= SAFE_INT else str(number)


def to_float(column: str, value: Any) -> float:
    if type(value) is str:
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if number - number == 0:  # finite: BigQuery's JSON load takes no NaN or Infinity
                return number
    raise BadLine(f"{column}: expected a number, got {json_kind(value)} {_show(value)}")


def to_bool(column: str, value: Any) -> bool:
    if type(value) is str and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if type(value) is int and value in (0, 1):
        return value == 1
    raise BadLine(f"{column}: expected a boolean, got {json_kind(value)} {_show(value)}")


def to_timestamp(column: str, value: Any) -> str | None:
    """The TIMESTAMP loaded for a value that is not already a valid timestamp string: "" is null."""
    if value == "":
        return None
    if type(value) is str and TIMESTAMP.fullmatch(value) is not None:
        return value
    raise BadLine(f"{column}: not an Amplitude timestamp (YYYY-MM-DD HH:MM:SS[.ffffff]): {_show(value)}")


def to_bag(column: str, value: Any) -> NoReturn:
    raise BadLine(f"{column}: expected an object or null, got {json_kind(value)} {_show(value)}")


_NONE = type(None)
# BigQuery type -> (types a value may already have, conversion of any other non-null value)
_CONVERSIONS: dict[str, tuple[frozenset[type], Callable[[str, Any], Any]]] = {
    "STRING": (frozenset({str, _NONE}), to_text),
    "FLOAT": (frozenset({float, int, _NONE}), to_float),
    "BOOLEAN": (frozenset({bool, _NONE}), to_bool),
}


@dataclass(frozen=True)
class Check:
    """Columns of one type: values of the ``allowed`` types pass, any other goes through ``convert``."""

    columns: tuple[str, ...]
    values: Callable[[dict[str, Any]], tuple[Any, ...]]
    allowed: frozenset[type]
    convert: Callable[[str, Any], Any]


@dataclass(frozen=True)
class Plan:
    """The events schema file, arranged for the row builder: the file is the one definition of columns."""

    columns: tuple[str, ...]
    template: dict[str, Any]
    known_keys: frozenset[str]  # export keys that have a column
    timestamps: tuple[str, ...]
    integers: tuple[str, ...]
    checks: tuple[Check, ...]


def load_schema(name: str) -> list[dict[str, Any]]:
    """A BigQuery JSON schema shipped in the package (``EVENTS_SCHEMA_FILE``, ``PROPERTIES_SCHEMA_FILE``)."""
    schema: list[dict[str, Any]] = json.loads((SCHEMAS / name).read_text())
    return schema


def _getter(columns: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    get = operator.itemgetter(*columns)
    if len(columns) == 1:
        return lambda row: (get(row),)
    return get


@functools.cache
def events_plan() -> Plan:
    schema = load_schema(EVENTS_SCHEMA_FILE)
    columns = tuple(column["name"] for column in schema)
    missing = {*DERIVED_COLUMNS, *PROPERTY_TYPES, *DEDUP_KEY, "event_time", "event_type"} - set(columns)
    missing |= {"user_id", "amplitude_id", "server_upload_time"} - set(columns)
    if missing:
        raise RuntimeError(f"{EVENTS_SCHEMA_FILE} lacks columns the transform fills: {sorted(missing)}")
    by_type: dict[str, list[str]] = {}
    for column in schema:
        if column["name"] not in DERIVED_COLUMNS and column["name"] not in PROPERTY_TYPES:
            by_type.setdefault(column["type"], []).append(column["name"])
    unknown = set(by_type) - {*_CONVERSIONS, "TIMESTAMP", "INTEGER", "JSON"}
    if unknown:
        raise RuntimeError(f"{EVENTS_SCHEMA_FILE}: the transform has no conversion for {sorted(unknown)}")
    checks = [
        Check(tuple(by_type[kind]), _getter(tuple(by_type[kind])), allowed, convert)
        for kind, (allowed, convert) in _CONVERSIONS.items()
        if kind in by_type
    ]
    checks.append(Check(PROPERTY_TYPES, _getter(PROPERTY_TYPES), frozenset({dict, _NONE}), to_bag))
    return Plan(
        columns=columns,
        template=dict.fromkeys(columns),
        known_keys=frozenset(RENAMED_COLUMNS.get(c, c) for c in columns if c not in DERIVED_COLUMNS),
        timestamps=tuple(by_type.get("TIMESTAMP", ())),
        integers=tuple(by_type.get("INTEGER", ())),
        checks=tuple(checks),
    )
