"""Amplitude export → BigQuery rows: the streaming transform. Pure: no network, no cloud clients.

``transform_export`` reads an Export API zip (a path or a seekable binary file) and writes three gzip
NDJSON streams to file-like objects the caller owns (a temporary file, a GCS blob writer...):

* ``amplitude.events`` rows: one per event, every column of ``schemas/bigquery/amplitude.events.json``
  present (null when the export lacks the key), typed the way BigQuery's NDJSON load wants them;
* ``amplitude.events_properties`` rows: one per (event, property_type, key), see below;
* dead letters: one per line that cannot become an event (fields: ``BAD_LINE_FIELDS``).

Streaming, bounded memory: members are read in archive order (their names are never parsed) through a
streaming gunzip in ``read_size`` pieces and split into lines; each piece's rows are compressed and
written before the next piece is read. Memory is flat in the size of the export: a few pieces plus the
longest line (a line over ``max_line_bytes`` is dead-lettered without being held whole).

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
  UTC). Values are therefore validated, not rewritten: one regex per value checks the shape, 0 to 6
  fraction digits, the ranges and the calendar (leap years included; year 0000 excluded, as BigQuery
  starts at 0001). No ``datetime`` is built. An empty string is null. Anything else non-null (garbage,
  a number, 7+ fraction digits, ``2021-02-30``) makes the line a bad line naming the field: one bad
  value would otherwise fail the whole BigQuery load, and nulling it would lose data silently. With
  ``max_bad_fraction`` a format change fails the day instead of loading a day of nulls.
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
  dead-lettered. After the last member, ``bad_lines > max_bad_fraction * (events + bad_lines)`` raises
  ``TooManyBadLines``.
* **Failures**: an unreadable zip (truncated, not a zip) or member (corrupt or truncated gzip, CRC
  mismatch, not gzip, encrypted) raises ``CorruptExport`` naming the member. The outputs are then left
  without their gzip trailer, so they cannot pass for complete files, and must be discarded. On
  ``TooManyBadLines`` every member has been read and all three outputs are complete: the dead letters
  are worth keeping for diagnosis, the table outputs must not be loaded.

Output gzip streams carry no file name and mtime 0, so one export always stages the same bytes (for a
given compression backend). Compression and decompression use ISA-L (``isal``) when it is installed,
about 4x faster than zlib at the same ratio, and zlib otherwise; the output is standard gzip either way.
"""

from __future__ import annotations

import functools
import gzip
import importlib
import json
import operator
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from os import PathLike
from typing import IO, Any, NoReturn, Protocol, cast

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
DEFAULT_COMPRESSLEVEL = 1
DEFAULT_READ_SIZE = 1 << 20
DEFAULT_MAX_LINE_BYTES = 16 << 20
RAW_LINE_LIMIT = 64 << 10  # bytes of a bad line kept in its dead letter; member + line_number find the rest

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SAFE_INT = 2**53 - 1  # beyond this, BigQuery wants INT64 values as JSON strings
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_TIMESTAMP = re.compile(
    r"(?!0000)(?:[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)"
    rf"|(?:0[13578]|1[02])-31)|{_LEAP_YEAR}-02-29)"
    r" (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?",
    re.ASCII,
)
_DIGITS = re.compile(r"[-+]?[0-9]{1,19}", re.ASCII)
_GZIP_MAGIC = b"\x1f\x8b"


class Writable(Protocol):
    """Where an output goes: anything with ``write(bytes)`` (a file, a GCS blob writer, BytesIO)."""

    def write(self, data: bytes, /) -> object: ...


class AmplitudeTransformError(Exception):
    """Base of the transform's own failures: the day fails and nothing may be published."""


class CorruptExport(AmplitudeTransformError):
    """The zip or one of its members cannot be read completely. ``member`` is None for the zip itself."""

    def __init__(self, member: str | None, reason: str) -> None:
        where = f"member {member!r} of the export zip" if member is not None else "the export zip"
        super().__init__(f"{where} is unreadable: {reason}")
        self.member = member
        self.reason = reason


class TooManyBadLines(AmplitudeTransformError):
    """More malformed lines than ``max_bad_fraction`` allows; ``stats`` describes the whole export."""

    def __init__(self, stats: TransformStats, max_bad_fraction: float) -> None:
        super().__init__(
            f"{stats.bad_lines} of {stats.events + stats.bad_lines} lines of the export for "
            f"{stats.export_day} are malformed ({stats.bad_fraction:.4%}), over the limit of "
            f"{max_bad_fraction:.4%}; the day must not be published. The dead letters name each line."
        )
        self.stats = stats
        self.max_bad_fraction = max_bad_fraction


class InvalidTimestamp(ValueError):
    """Not Amplitude's ``YYYY-MM-DD HH:MM:SS[.ffffff]`` (UTC), or not a real instant."""


@dataclass
class MemberStats:
    name: str
    compressed_bytes: int = 0
    uncompressed_bytes: int = 0
    lines: int = 0
    blank_lines: int = 0
    events: int = 0
    property_rows: int = 0
    bad_lines: int = 0


@dataclass
class TransformStats:
    """Counts of one transform; ``events`` and ``property_rows`` are exactly the rows written."""

    export_day: str
    codec: str = ""
    members: int = 0
    lines: int = 0  # every line read: events + bad_lines + blank_lines
    blank_lines: int = 0
    events: int = 0
    property_rows: int = 0
    bad_lines: int = 0
    late_events: int = 0  # events whose event_time is on a day before export_day
    bytes_in: int = 0  # compressed bytes of the members read
    bytes_uncompressed: int = 0  # NDJSON bytes after gunzip
    events_bytes_out: int = 0  # gzip bytes written to each output
    properties_bytes_out: int = 0
    bad_lines_bytes_out: int = 0
    member_stats: list[MemberStats] = field(default_factory=list)
    events_by_upload_hour: dict[str, int] = field(default_factory=dict)  # "YYYY-MM-DD HH" (UTC) -> events
    events_by_event_date: dict[str, int] = field(default_factory=dict)  # "YYYY-MM-DD" -> events

    @property
    def bad_fraction(self) -> float:
        candidates = self.events + self.bad_lines
        return self.bad_lines / candidates if candidates else 0.0

    @property
    def bytes_out(self) -> int:
        return self.events_bytes_out + self.properties_bytes_out + self.bad_lines_bytes_out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary for logs and the run ledger (without the per-member list)."""
        return {
            "export_day": self.export_day,
            "codec": self.codec,
            "members": self.members,
            "lines": self.lines,
            "blank_lines": self.blank_lines,
            "events": self.events,
            "property_rows": self.property_rows,
            "bad_lines": self.bad_lines,
            "bad_fraction": self.bad_fraction,
            "late_events": self.late_events,
            "bytes_in": self.bytes_in,
            "bytes_uncompressed": self.bytes_uncompressed,
            "events_bytes_out": self.events_bytes_out,
            "properties_bytes_out": self.properties_bytes_out,
            "bad_lines_bytes_out": self.bad_lines_bytes_out,
            "events_by_upload_hour": dict(sorted(self.events_by_upload_hour.items())),
            "events_by_event_date": dict(sorted(self.events_by_event_date.items())),
        }


# ---------------------------------------------------------------------------------------- timestamps


def _show(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def normalize_amplitude_timestamp(text: object) -> str | None:
    """The TIMESTAMP value loaded for an Amplitude timestamp: the same text, once validated.

    None and ``""`` give None; anything that is not ``YYYY-MM-DD HH:MM:SS`` with 0 to 6 fraction
    digits naming a real instant in 0001..9999 raises ``InvalidTimestamp``.
    """
    if text is None or text == "":
        return None
    if type(text) is not str or _TIMESTAMP.fullmatch(text) is None:
        raise InvalidTimestamp(f"not an Amplitude timestamp (YYYY-MM-DD HH:MM:SS[.ffffff]): {_show(text)}")
    return text


def parse_amplitude_timestamp(text: object) -> datetime | None:
    """An Amplitude timestamp as an aware UTC ``datetime``; None/``""`` give None, garbage raises.

    Accepts exactly what ``normalize_amplitude_timestamp`` accepts. The hot path does not use it.
    """
    valid = normalize_amplitude_timestamp(text)
    if valid is None:
        return None
    fraction = valid[20:]
    return datetime(
        int(valid[0:4]),
        int(valid[5:7]),
        int(valid[8:10]),
        int(valid[11:13]),
        int(valid[14:16]),
        int(valid[17:19]),
        int(fraction.ljust(6, "0")) if fraction else 0,
        tzinfo=UTC,
    )


# ---------------------------------------------------------------------------------------- properties


def flatten(properties: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf) for every leaf of ``properties``, depth first, in key order.

    Leaves are non-object values (arrays whole) and empty objects. Iterative: depth is not limited by
    Python's recursion limit.
    """
    stack: list[tuple[str, Iterator[tuple[str, Any]]]] = [(prefix, iter(properties.items()))]
    while stack:
        base, items = stack[-1]
        for key, value in items:
            if type(value) is dict and value:
                stack.append((f"{base}{key}.", iter(value.items())))
                break
            yield f"{base}{key}", value
        else:
            stack.pop()


def property_value(value: Any) -> tuple[str | None, str]:
    """(value, value_type) of one flattened leaf, as ``amplitude.events_properties`` stores it."""
    kind = type(value)
    if kind is str:
        return value, "string"
    if value is None:
        return None, "null"
    if kind is bool:
        return ("true" if value else "false"), "boolean"
    if kind is int or kind is float:
        return orjson.dumps(value).decode(), "number"
    if kind is list:
        return orjson.dumps(value).decode(), "array"
    if kind is dict:
        return orjson.dumps(value).decode(), "object"
    raise TypeError(f"not a JSON value: {kind.__name__}")


# ------------------------------------------------------------------------------------------- columns


class _BadLine(Exception):
    """This line cannot become an event; ``str()`` says why, naming the field."""


def _json_kind(value: object) -> str:
    kinds = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _to_text(column: str, value: Any) -> str:
    return orjson.dumps(value).decode()


def _to_int(column: str, value: Any) -> int | str:
    number: int | None = None
    if type(value) is int:
        number = value
    elif type(value) is float and value.is_integer():
        number = int(value)
    elif type(value) is str and _DIGITS.fullmatch(value.strip()):
        number = int(value.strip(), 10)
    if number is None or not _INT64_MIN <= number <= _INT64_MAX:
        raise _BadLine(f"{column}: expected an INT64 integer, got {_json_kind(value)} {_show(value)}")
    return number if -_SAFE_INT <= number <= _SAFE_INT else str(number)


def _to_float(column: str, value: Any) -> float:
    if type(value) is str:
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if number - number == 0:  # finite: BigQuery's JSON load takes no NaN or Infinity
                return number
    raise _BadLine(f"{column}: expected a number, got {_json_kind(value)} {_show(value)}")


def _to_bool(column: str, value: Any) -> bool:
    if type(value) is str and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if type(value) is int and value in (0, 1):
        return value == 1
    raise _BadLine(f"{column}: expected a boolean, got {_json_kind(value)} {_show(value)}")


def _to_timestamp(column: str, value: Any) -> str | None:
    try:
        return normalize_amplitude_timestamp(value)
    except InvalidTimestamp as error:
        raise _BadLine(f"{column}: {error}") from None


def _to_bag(column: str, value: Any) -> NoReturn:
    raise _BadLine(f"{column}: expected an object or null, got {_json_kind(value)} {_show(value)}")


_NONE = type(None)
# BigQuery type -> (types a value may already have, conversion of any other non-null value)
_CONVERSIONS: dict[str, tuple[frozenset[type], Callable[[str, Any], Any]]] = {
    "STRING": (frozenset({str, _NONE}), _to_text),
    "FLOAT": (frozenset({float, int, _NONE}), _to_float),
    "BOOLEAN": (frozenset({bool, _NONE}), _to_bool),
}


@dataclass(frozen=True)
class _Check:
    columns: tuple[str, ...]
    values: Callable[[dict[str, Any]], tuple[Any, ...]]
    allowed: frozenset[type]
    convert: Callable[[str, Any], Any]


@dataclass(frozen=True)
class _Plan:
    """The events schema file, arranged for the hot loop: the file is the one definition of columns."""

    columns: tuple[str, ...]
    template: dict[str, Any]
    known_keys: frozenset[str]  # export keys that have a column
    timestamps: tuple[str, ...]
    integers: tuple[str, ...]
    checks: tuple[_Check, ...]


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
def _plan() -> _Plan:
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
        _Check(tuple(by_type[kind]), _getter(tuple(by_type[kind])), allowed, convert)
        for kind, (allowed, convert) in _CONVERSIONS.items()
        if kind in by_type
    ]
    checks.append(_Check(PROPERTY_TYPES, _getter(PROPERTY_TYPES), frozenset({dict, _NONE}), _to_bag))
    return _Plan(
        columns=columns,
        template=dict.fromkeys(columns),
        known_keys=frozenset(RENAMED_COLUMNS.get(c, c) for c in columns if c not in DERIVED_COLUMNS),
        timestamps=tuple(by_type.get("TIMESTAMP", ())),
        integers=tuple(by_type.get("INTEGER", ())),
        checks=tuple(checks),
    )


# ------------------------------------------------------------------------------------------- streams


@dataclass(frozen=True)
class _Codec:
    name: str
    compressor: Callable[[int], Any]  # level -> an object with compress(bytes) and flush()
    reader: Callable[[IO[bytes]], Any]  # compressed stream -> decompressed stream (a GzipFile)
    errors: tuple[type[BaseException], ...]  # what reading corrupt data raises


def _zlib_codec() -> _Codec:
    return _Codec(
        "zlib",
        lambda level: zlib.compressobj(level, zlib.DEFLATED, 31),
        lambda stream: gzip.GzipFile(fileobj=stream, mode="rb"),
        (gzip.BadGzipFile, zlib.error, EOFError),
    )


@functools.cache
def _isal_codec() -> _Codec | None:
    """ISA-L's zlib-compatible codec when the optional ``isal`` package is installed."""
    try:
        isal_zlib: Any = importlib.import_module("isal.isal_zlib")
        igzip: Any = importlib.import_module("isal.igzip")
    except ImportError:
        return None
    levels = (0, 1, 1, 2, 2, 2, 3, 3, 3, 3)  # zlib's 0-9 onto ISA-L's 0-3, by compression ratio
    return _Codec(
        "isal",
        lambda level: isal_zlib.compressobj(levels[level], isal_zlib.DEFLATED, 31),
        lambda stream: igzip.IGzipFile(fileobj=stream, mode="rb"),
        (gzip.BadGzipFile, isal_zlib.error, zlib.error, EOFError),
    )


def available_codecs() -> tuple[str, ...]:
    return ("isal", "zlib") if _isal_codec() is not None else ("zlib",)


class _GzipSink:
    """A gzip stream to ``out``, written as it is compressed.

    Nothing is written at garbage collection: without ``finish()`` the stream has no trailer and
    every gzip reader reports it truncated.
    """

    def __init__(self, out: Writable, compressor: Any) -> None:
        self._out = out
        self._compressor = compressor
        self.bytes_in = 0
        self.bytes_out = 0

    def write(self, data: bytes) -> None:
        self.bytes_in += len(data)
        compressed = self._compressor.compress(data)
        if compressed:
            self._out.write(compressed)
            self.bytes_out += len(compressed)

    def finish(self) -> None:
        tail = self._compressor.flush()
        self._out.write(tail)
        self.bytes_out += len(tail)


@dataclass(frozen=True)
class _LongLine:
    """A line over ``max_line_bytes``: its start (for the dead letter) and its full length."""

    head: bytes
    length: int


def _member_lines(
    gz: IO[bytes], read_size: int, max_line_bytes: int, member: MemberStats
) -> Iterator[list[bytes] | _LongLine]:
    """Lines of a decompressed member without terminators, in batches of about ``read_size`` bytes.

    A line over ``max_line_bytes`` comes as a ``_LongLine`` and is never held whole.
    """
    pending: list[bytes] = []  # the start of a line whose end is not read yet
    pending_length = 0
    long_head: bytes | None = None  # set while skipping the rest of an over-long line
    long_length = 0
    while data := gz.read(read_size):
        member.uncompressed_bytes += len(data)
        end = data.find(b"\n")
        if end < 0:
            if long_head is not None:
                long_length += len(data)
                continue
            pending.append(data)
            pending_length += len(data)
            if pending_length > max_line_bytes:
                long_head, long_length = b"".join(pending)[:RAW_LINE_LIMIT], pending_length
                pending, pending_length = [], 0
            continue
        if long_head is not None:
            yield _LongLine(long_head, long_length + end)
            long_head = None
            data = data[end + 1 :]
        elif pending:
            data = b"".join((*pending, data))
            pending, pending_length = [], 0
        lines = data.split(b"\n")
        last = lines.pop()
        if last:
            pending, pending_length = [last], len(last)
        if len(data) > max_line_bytes and any(len(line) > max_line_bytes for line in lines):
            start = 0
            for index, line in enumerate(lines):
                if len(line) > max_line_bytes:
                    if index > start:
                        yield lines[start:index]
                    yield _LongLine(line[:RAW_LINE_LIMIT], len(line))
                    start = index + 1
            lines = lines[start:]
        if lines:
            yield lines
    if long_head is not None:
        yield _LongLine(long_head, long_length)
    elif pending:
        last = b"".join(pending)  # the last line had no final newline
        yield [last] if len(last) <= max_line_bytes else _LongLine(last[:RAW_LINE_LIMIT], len(last))


def _bad_line_row(export_day: str, member: str, line_number: int, error: str, raw: bytes, size: int) -> bytes:
    return orjson.dumps(
        {
            "export_day": export_day,
            "member": member,
            "line_number": line_number,
            "error": error,
            "raw": raw[:RAW_LINE_LIMIT].decode("utf-8", "backslashreplace"),
            "raw_bytes": size,
            "raw_truncated": size > RAW_LINE_LIMIT,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


# --------------------------------------------------------------------------------------- the transform


def _nested_property_rows(row: dict[str, Any], key: str, value: dict[str, Any], out: list[bytes]) -> int:
    """Rows of a non-empty nested object under ``key``, appended to ``out``; returns how many."""
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    count = 0
    for dotted_key, leaf in flatten(value, f"{key}."):
        row["key"] = dotted_key
        row["value"], row["value_type"] = property_value(leaf)
        out.append(dumps(row, option=newline))
        count += 1
    return count


class _Transformer:
    def __init__(
        self, export_day: str, events: _GzipSink, properties: _GzipSink, bad: _GzipSink, stats: TransformStats
    ) -> None:
        self.export_day = export_day
        self.events = events
        self.properties = properties
        self.bad_sink = bad
        self.stats = stats
        self.plan = _plan()

    def bad(self, member: MemberStats, line_number: int, error: str, raw: bytes, size: int) -> None:
        member.bad_lines += 1
        self.bad_sink.write(_bad_line_row(self.export_day, member.name, line_number, error, raw, size))

    def convert(self, row: dict[str, Any], check: _Check) -> None:
        for column in check.columns:
            value = row[column]
            if type(value) not in check.allowed:
                row[column] = check.convert(column, value)

    def member(self, member: MemberStats, batches: Iterator[list[bytes] | _LongLine], max_line: int) -> None:
        """Transform every line of one member. The hot loop: locals only, one dict per event."""
        plan = self.plan
        template, known_keys, width = plan.template, plan.known_keys, len(plan.template)
        timestamps, integers, checks = plan.timestamps, plan.integers, plan.checks
        loads, dumps, newline = orjson.loads, orjson.dumps, orjson.OPT_APPEND_NEWLINE
        decode_error, encode_error = orjson.JSONDecodeError, orjson.JSONEncodeError
        timestamp_ok = _TIMESTAMP.fullmatch
        safe_low, safe_high = -_SAFE_INT, _SAFE_INT
        export_day = self.export_day
        by_hour, by_date = self.stats.events_by_upload_hour, self.stats.events_by_event_date
        line_number = member.lines
        events = property_rows = blank = late = 0
        for batch in batches:
            if isinstance(batch, _LongLine):
                line_number += 1
                reason = f"line longer than {max_line} bytes ({batch.length} bytes)"
                self.bad(member, line_number, reason, batch.head, batch.length)
                continue
            event_lines: list[bytes] = []
            property_lines: list[bytes] = []
            for line in batch:
                line_number += 1
                mark = len(property_lines)
                try:
                    event = loads(line)
                    if type(event) is not dict:
                        raise _BadLine(f"not a JSON object but {_json_kind(event)}")
                    insert_id = event.get("$insert_id")
                    uuid = event.get("uuid")
                    if (insert_id is None or insert_id == "") and (uuid is None or uuid == ""):
                        raise _BadLine("no event id: $insert_id and uuid are both missing, null or empty")
                    row = template.copy()
                    row.update(event)
                    if (
                        len(row) != width + ("$insert_id" in event)
                        or "insert_id" in event
                        or "export_day" in event
                        or "event_date" in event
                        or "resolved_user_id" in event
                        or "extra" in event
                    ):  # keys without a column (or named like a computed one) go to "extra"
                        row = template.copy()
                        row["extra"] = {key: event.pop(key) for key in sorted(event.keys() - known_keys)}
                        row.update(event)
                    row["insert_id"] = row.pop("$insert_id", None)
                    for column in timestamps:
                        value = row[column]
                        if value is not None and (type(value) is not str or timestamp_ok(value) is None):
                            row[column] = _to_timestamp(column, value)
                    for column in integers:
                        value = row[column]
                        if value is not None and (
                            type(value) is not int or not safe_low <= value <= safe_high
                        ):
                            row[column] = _to_int(column, value)
                    for check in checks:
                        if not check.allowed.issuperset(map(type, check.values(row))):
                            self.convert(row, check)
                    user_id = row["user_id"]
                    if user_id is None or user_id == "":
                        amplitude_id = row["amplitude_id"]
                        row["resolved_user_id"] = None if amplitude_id is None else str(amplitude_id)
                    else:
                        row["resolved_user_id"] = user_id
                    event_time = row["event_time"]
                    event_date = row["event_date"] = None if event_time is None else event_time[:10]
                    row["export_day"] = export_day
                    event_line = dumps(row, option=newline)
                    rows = 0
                    prop_row: dict[str, Any] | None = None
                    for property_type in PROPERTY_TYPES:
                        bag = row[property_type]
                        if not bag:
                            continue
                        if prop_row is None:
                            prop_row = {
                                "insert_id": row["insert_id"],
                                "uuid": row["uuid"],
                                "export_day": export_day,
                                "event_type": row["event_type"],
                                "event_time": event_time,
                                "property_type": property_type,
                                "key": None,
                                "value": None,
                                "value_type": None,
                            }
                        else:
                            prop_row["property_type"] = property_type
                        for key, value in bag.items():
                            kind = type(value)
                            if kind is str:
                                prop_row["key"] = key
                                prop_row["value"] = value
                                prop_row["value_type"] = "string"
                            elif kind is dict and value:
                                rows += _nested_property_rows(prop_row, key, value, property_lines)
                                continue
                            else:
                                prop_row["key"] = key
                                prop_row["value"], prop_row["value_type"] = property_value(value)
                            property_lines.append(dumps(prop_row, option=newline))
                            rows += 1
                except (decode_error, _BadLine, encode_error) as error:
                    if not line.strip():
                        blank += 1
                        continue
                    if isinstance(error, decode_error):
                        reason = f"not valid JSON: {error}"
                    elif isinstance(error, encode_error):
                        reason = f"cannot be re-encoded as JSON: {error}"
                    else:
                        reason = str(error)
                    del property_lines[mark:]
                    self.bad(member, line_number, reason, line, len(line))
                    continue
                # everything this line gives is built: now it counts
                event_lines.append(event_line)
                events += 1
                property_rows += rows
                if event_date is not None:
                    by_date[event_date] = by_date.get(event_date, 0) + 1
                    if event_date < export_day:
                        late += 1
                upload = row["server_upload_time"]
                if upload is not None:
                    hour = upload[:13]
                    by_hour[hour] = by_hour.get(hour, 0) + 1
            if event_lines:
                self.events.write(b"".join(event_lines))
            if property_lines:
                self.properties.write(b"".join(property_lines))
        member.lines = line_number
        member.blank_lines += blank
        member.events += events
        member.property_rows += property_rows
        self.stats.late_events += late


def transform_export(
    zip_file: IO[bytes] | str | PathLike[str],
    events_out: Writable,
    properties_out: Writable,
    bad_lines_out: Writable,
    export_day: date,
    *,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    compresslevel: int = DEFAULT_COMPRESSLEVEL,
    codec: str | None = None,
    read_size: int = DEFAULT_READ_SIZE,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    progress: Callable[[TransformStats], None] | None = None,
) -> TransformStats:
    """Transform one Export API zip into gzip NDJSON for both tables and the dead letters.

    ``zip_file`` must be seekable (e.g. the downloaded temporary file). The outputs are written to,
    never flushed or closed. ``compresslevel`` is zlib's 0-9 (mapped onto ISA-L's 0-3); ``codec`` is
    ``"isal"``, ``"zlib"`` or None for the fastest installed. ``progress`` gets the running stats
    after each member. Raises ``CorruptExport`` or ``TooManyBadLines`` (the module docstring says what
    the outputs hold then); returns the stats otherwise.
    """
    if type(export_day) is not date:
        raise TypeError(f"export_day must be a datetime.date, got {type(export_day).__name__}")
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be within [0, 1], got {max_bad_fraction}")
    if not 0 <= compresslevel <= 9:
        raise ValueError(f"compresslevel must be within 0..9, got {compresslevel}")
    chosen = _isal_codec() if codec in (None, "isal") else None
    if chosen is None:
        if codec not in (None, "zlib"):
            raise ValueError(f"codec {codec!r} is not available; available: {available_codecs()}")
        chosen = _zlib_codec()
    day = export_day.isoformat()
    stats = TransformStats(export_day=day, codec=chosen.name)
    events_sink, properties_sink, bad_sink = (
        _GzipSink(out, chosen.compressor(compresslevel))
        for out in (events_out, properties_out, bad_lines_out)
    )
    transformer = _Transformer(day, events_sink, properties_sink, bad_sink, stats)
    read_errors: tuple[type[BaseException], ...] = (zipfile.BadZipFile, NotImplementedError, *chosen.errors)
    try:
        archive = zipfile.ZipFile(zip_file)
    except (zipfile.BadZipFile, EOFError) as error:
        raise CorruptExport(None, f"{error} (a truncated download, or not a zip)") from error
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            member = MemberStats(info.filename, compressed_bytes=info.compress_size)
            stats.member_stats.append(member)
            if info.flag_bits & 0x1:
                raise CorruptExport(info.filename, "the member is encrypted")
            try:
                with archive.open(info) as stream:
                    magic = cast(zipfile.ZipExtFile, stream).peek(2)[:2]
                    if magic and magic != _GZIP_MAGIC:
                        raise CorruptExport(info.filename, f"not gzip data (it starts with {magic!r})")
                    if magic:  # an empty member holds no lines
                        with chosen.reader(stream) as gz:
                            lines = _member_lines(gz, read_size, max_line_bytes, member)
                            transformer.member(member, lines, max_line_bytes)
            except read_errors as error:
                reason = str(error) or type(error).__name__
                if isinstance(error, EOFError):
                    reason = f"truncated gzip data ({reason})"
                raise CorruptExport(info.filename, reason) from error
            stats.members += 1
            stats.lines += member.lines
            stats.blank_lines += member.blank_lines
            stats.events += member.events
            stats.property_rows += member.property_rows
            stats.bad_lines += member.bad_lines
            stats.bytes_in += member.compressed_bytes
            stats.bytes_uncompressed += member.uncompressed_bytes
            if progress is not None:
                progress(stats)
    for sink in (events_sink, properties_sink, bad_sink):
        sink.finish()
    stats.events_bytes_out = events_sink.bytes_out
    stats.properties_bytes_out = properties_sink.bytes_out
    stats.bad_lines_bytes_out = bad_sink.bytes_out
    if stats.bad_lines > max_bad_fraction * (stats.events + stats.bad_lines):
        raise TooManyBadLines(stats, max_bad_fraction)
    return stats
