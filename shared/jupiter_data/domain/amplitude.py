"""Amplitude export → BigQuery rows: the streaming transform. Pure: no network, no cloud clients.

``transform_export`` reads an Export API zip (a path or a seekable binary file) and writes three gzip
NDJSON streams to file-like objects the caller owns (a temporary file, a GCS blob writer...):

* ``amplitude.events`` rows: one per event, every column of ``schemas/bigquery/amplitude.events.json``
  present (null when the export lacks the key), typed the way BigQuery's NDJSON load wants them;
* ``amplitude.events_properties`` rows: one per (event, property_type, key), see below;
* dead letters: one per line that cannot become an event (fields: ``BAD_LINE_FIELDS``).

Streaming, bounded memory: members are read in archive order (their names are never parsed) through a
streaming gunzip in ``read_size`` pieces and split into lines; rows are compressed and written every
``chunk_bytes``. Memory is flat in the size of the export: a few pieces and chunks plus the longest line
(a line over ``max_line_bytes`` is dead-lettered without being held whole). Measured peak RSS: about
25 MB per process for 100k and for 500k events alike.

Speed: the work is CPU-bound Python (parse, type, serialise, flatten), so it is shared out to worker
*processes*, one member at a time (``workers``; by default one per CPU for exports of at least
``PARALLEL_MIN_BYTES``). Each worker compresses its own chunks of raw deflate, each from a fresh
compressor ended by a sync flush; this process stitches them into one gzip member per output, combining
the chunks' CRC-32s (``crc32_combine``). Queues are bounded, so memory stays flat with workers too.
Compression uses ISA-L (the optional ``isal`` package) when installed, about 4x faster than zlib at
the same ratio, and zlib otherwise; the output is standard single-member gzip either way.

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

Output gzip streams carry no file name and mtime 0. In one process, rows keep archive order and one
export always stages the same bytes (for a given codec); with several workers, rows come in the order
members finish: the same rows, in another order.
"""

from __future__ import annotations

import functools
import gzip
import importlib
import json
import multiprocessing
import operator
import os
import queue
import re
import struct
import threading
import traceback
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
DEFAULT_READ_SIZE = 64 << 10  # decompressed bytes per batch of lines: small batches keep memory hot
DEFAULT_CHUNK_BYTES = 1 << 20  # uncompressed bytes per compression call
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
    compressor: Callable[[int], Any]  # level -> gzip compressobj (compress(bytes), flush())
    raw_compressor: Callable[[int], Any]  # level -> raw deflate compressobj, for independent chunks
    sync_flush: int  # the codec's Z_SYNC_FLUSH
    reader: Callable[[IO[bytes]], Any]  # compressed stream -> decompressed stream (a GzipFile)
    errors: tuple[type[BaseException], ...]  # what reading corrupt data raises
    crc32: Callable[[bytes], int]
    crc32_combine: Callable[[int, int, int], int]


_ISAL_LEVELS = (0, 1, 1, 2, 2, 2, 3, 3, 3, 3)  # zlib's 0-9 onto ISA-L's 0-3, by compression ratio


@functools.cache
def _zlib_codec() -> _Codec:
    return _Codec(
        name="zlib",
        compressor=lambda level: zlib.compressobj(level, zlib.DEFLATED, 31),
        raw_compressor=lambda level: zlib.compressobj(level, zlib.DEFLATED, -15),
        sync_flush=zlib.Z_SYNC_FLUSH,
        reader=lambda stream: gzip.GzipFile(fileobj=stream, mode="rb"),
        errors=(gzip.BadGzipFile, zlib.error, EOFError),
        crc32=zlib.crc32,
        crc32_combine=crc32_combine,
    )


@functools.cache
def _isal_codec() -> _Codec | None:
    """ISA-L's zlib-compatible codec when the optional ``isal`` package is installed."""
    try:
        isal_zlib: Any = importlib.import_module("isal.isal_zlib")
        igzip: Any = importlib.import_module("isal.igzip")
    except ImportError:
        return None
    return _Codec(
        name="isal",
        compressor=lambda level: isal_zlib.compressobj(_ISAL_LEVELS[level], isal_zlib.DEFLATED, 31),
        raw_compressor=lambda level: isal_zlib.compressobj(_ISAL_LEVELS[level], isal_zlib.DEFLATED, -15),
        sync_flush=isal_zlib.Z_SYNC_FLUSH,
        reader=lambda stream: igzip.IGzipFile(fileobj=stream, mode="rb"),
        errors=(gzip.BadGzipFile, isal_zlib.error, zlib.error, EOFError),
        crc32=isal_zlib.crc32,
        crc32_combine=isal_zlib.crc32_combine,
    )


def _codec_named(name: str | None) -> _Codec:
    chosen = _isal_codec() if name in (None, "isal") else None
    if chosen is None:
        if name not in (None, "zlib"):
            raise ValueError(f"codec {name!r} is not available; available: {available_codecs()}")
        chosen = _zlib_codec()
    return chosen


_CRC_POLY = 0xEDB88320  # CRC-32 (gzip), reflected


def _multiply_mod_p(a: int, b: int) -> int:
    """a * b modulo the CRC-32 polynomial (bit-reflected), as zlib's multmodp."""
    product = 0
    bit = 1 << 31
    while a:
        if a & bit:
            product ^= b
            a ^= bit
        bit >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1
    return product


def _x_power_table() -> tuple[int, ...]:
    powers = [1 << 30]  # x^1
    for _ in range(31):
        powers.append(_multiply_mod_p(powers[-1], powers[-1]))
    return tuple(powers)  # powers[k] = x^(2^k) mod p


_X_POWERS = _x_power_table()


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of A + B from crc32(A), crc32(B) and len(B), as zlib's crc32_combine.

    Lets independently compressed chunks be stitched into one gzip member.
    """
    shift = 1 << 31  # x^0
    bits, k = length2 * 8, 0
    while bits:
        if bits & 1:
            shift = _multiply_mod_p(_X_POWERS[k & 31], shift)
        bits >>= 1
        k += 1
    return _multiply_mod_p(shift, crc1) ^ crc2


def available_codecs() -> tuple[str, ...]:
    return ("isal", "zlib") if _isal_codec() is not None else ("zlib",)


class _GzipSink:
    """A gzip stream to ``out``: pieces are gathered to ``chunk_bytes``, then compressed and written.

    With ``threaded``, a worker thread compresses and writes (zlib and ISA-L release the GIL while
    they work, so this overlaps with the transform on a second core); at most two chunks wait for it,
    so memory stays bounded. Nothing is written at garbage collection or on ``abort()``: without
    ``finish()`` the stream has no trailer and every gzip reader reports it truncated.
    """

    def __init__(self, out: Writable, compressor: Any, chunk_bytes: int, threaded: bool) -> None:
        self._out = out
        self._compressor = compressor
        self._chunk_bytes = chunk_bytes
        self._pieces: list[bytes] = []
        self._pending = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        if threaded:
            self._queue = queue.Queue(maxsize=2)
            self._thread = threading.Thread(target=self._work, name="amplitude-gzip", daemon=True)
            self._thread.start()

    def write(self, data: bytes) -> None:
        self._pieces.append(data)
        self._pending += len(data)
        if self._pending >= self._chunk_bytes:
            self._hand_over()

    def finish(self) -> None:
        """Compress what is left, write the gzip trailer; raises what the worker met, if anything."""
        self._hand_over()
        self._stop()
        if self._error is not None:
            raise self._error
        tail = self._compressor.flush()
        self._out.write(tail)
        self.bytes_out += len(tail)

    def abort(self) -> None:
        """Stop without a trailer (the transform failed)."""
        self._pieces = []
        self._stop()

    def _hand_over(self) -> None:
        if not self._pieces:
            return
        data = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
        self._pieces = []
        self._pending = 0
        self.bytes_in += len(data)
        if self._queue is None:
            self._compress(data)
            return
        if self._error is not None:
            raise self._error
        self._queue.put(data)

    def _compress(self, data: bytes) -> None:
        compressed = self._compressor.compress(data)
        if compressed:
            self._out.write(compressed)
            self.bytes_out += len(compressed)

    def _work(self) -> None:
        assert self._queue is not None
        while (data := self._queue.get()) is not None:
            if self._error is None:  # after a failure, keep draining so the producer never blocks
                try:
                    self._compress(data)
                except BaseException as error:
                    self._error = error

    def _stop(self) -> None:
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0, OS unknown
_FINAL_EMPTY_BLOCK = b"\x03\x00"  # a final, empty, fixed-Huffman deflate block


class _StitchedGzipSink:
    """One gzip member made of raw deflate chunks compressed elsewhere (worker processes).

    Each chunk comes from a fresh compressor ended by a sync flush: byte-aligned, referring to no
    earlier data, so chunks concatenate into one valid deflate stream in any order; the CRC-32 of the
    whole is combined from the chunks' CRCs.
    """

    def __init__(self, out: Writable, codec: _Codec) -> None:
        self._out = out
        self._codec = codec
        self._crc = 0
        self._size = 0
        self.bytes_in = 0
        self.bytes_out = 0

    def write_chunk(self, data: bytes, crc: int, length: int) -> None:
        if not self.bytes_out:
            self._put(_GZIP_HEADER)
        self._crc = self._codec.crc32_combine(self._crc, crc, length)
        self._size += length
        self.bytes_in += length
        self._put(data)

    def finish(self) -> None:
        if not self.bytes_out:
            self._put(_GZIP_HEADER)
        self._put(_FINAL_EMPTY_BLOCK + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))

    def abort(self) -> None:
        pass

    def _put(self, data: bytes) -> None:
        self._out.write(data)
        self.bytes_out += len(data)


class _ChunkSink:
    """Worker side of ``_StitchedGzipSink``: compresses ~``chunk_bytes`` pieces and sends them on."""

    def __init__(self, which: int, results: Any, codec: _Codec, level: int, chunk_bytes: int) -> None:
        self._which = which
        self._results = results
        self._codec = codec
        self._level = level
        self._chunk_bytes = chunk_bytes
        self._pieces: list[bytes] = []
        self._pending = 0

    def write(self, data: bytes) -> None:
        self._pieces.append(data)
        self._pending += len(data)
        if self._pending >= self._chunk_bytes:
            self.flush()

    def flush(self) -> None:
        if not self._pieces:
            return
        data = b"".join(self._pieces)
        self._pieces = []
        self._pending = 0
        compressor = self._codec.raw_compressor(self._level)
        compressed = compressor.compress(data) + compressor.flush(self._codec.sync_flush)
        self._results.put(("chunk", self._which, compressed, self._codec.crc32(data), len(data)))


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

_KEY_CACHE_SIZE = 100_000  # distinct property keys remembered per property_type (memory stays bounded)
_PROPERTY_TYPE_PARTS = {name: f',"property_type":"{name}","key":'.encode() for name in PROPERTY_TYPES}
_VALUE = b',"value":'
_TRUE, _FALSE, _NULL, _EMPTY_OBJECT = b'"true"', b'"false"', b"null", b'"{}"'
_END_STRING, _END_NUMBER, _END_BOOLEAN, _END_NULL, _END_ARRAY, _END_OBJECT = (
    f',"value_type":"{name}"}}\n'.encode()
    for name in ("string", "number", "boolean", "null", "array", "object")
)


class _Transformer:
    def __init__(
        self, export_day: str, events: Writable, properties: Writable, bad: Writable, stats: TransformStats
    ) -> None:
        self.export_day = export_day
        self.events = events
        self.properties = properties
        self.bad_sink = bad
        self.stats = stats
        self.plan = _plan()
        # per property_type: key -> the row bytes between the event's columns and the value
        self.key_parts: dict[str, dict[str, bytes]] = {name: {} for name in PROPERTY_TYPES}

    def property_rows(self, head: bytes, property_type: str, bag: dict[str, Any], parts: list[bytes]) -> int:
        """Append the rows of one non-empty bag to ``parts`` (4 pieces per row); returns how many.

        A row is ``head`` (the event's columns), the cached ``,"property_type":..,"key":..,"value":``
        piece, the value and the ``value_type`` ending: one ``orjson.dumps`` of a short value per row.
        """
        dumps = orjson.dumps
        key_parts = self.key_parts[property_type]
        start = len(parts)
        stack: list[tuple[Iterator[tuple[str, Any]], str]] = []
        items = iter(bag.items())
        prefix = ""
        while True:
            for key, value in items:
                kind = type(value)
                if kind is dict and value:  # descend; the rest of this object waits on the stack
                    stack.append((items, prefix))
                    items, prefix = iter(value.items()), f"{prefix}{key}."
                    break
                middle = key_parts.get(prefix + key if prefix else key)
                if middle is None:
                    middle = self.key_part(property_type, prefix + key)
                if kind is str:
                    parts += (head, middle, dumps(value), _END_STRING)
                elif kind is int:
                    parts += (head, middle, b'"%d"' % value, _END_NUMBER)
                elif value is None:
                    parts += (head, middle, _NULL, _END_NULL)
                elif kind is bool:
                    parts += (head, middle, _TRUE if value else _FALSE, _END_BOOLEAN)
                elif kind is float:
                    parts += (head, middle, b'"%s"' % dumps(value), _END_NUMBER)
                elif kind is dict:
                    parts += (head, middle, _EMPTY_OBJECT, _END_OBJECT)
                else:
                    parts += (head, middle, dumps(dumps(value).decode()), _END_ARRAY)
            else:
                if not stack:
                    return (len(parts) - start) // 4
                items, prefix = stack.pop()

    def key_part(self, property_type: str, key: str) -> bytes:
        """``,"property_type":"..","key":"..","value":`` for a key, remembered (up to a bound)."""
        key_parts = self.key_parts[property_type]
        if len(key_parts) >= _KEY_CACHE_SIZE:
            key_parts.clear()
        part = key_parts[key] = b"%s%s%s" % (_PROPERTY_TYPE_PARTS[property_type], orjson.dumps(key), _VALUE)
        return part

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
        bags = operator.itemgetter(*PROPERTY_TYPES)
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
                    head = None
                    for property_type, bag in zip(PROPERTY_TYPES, bags(row), strict=True):
                        if bag:
                            if head is None:  # the columns every row of this event repeats
                                head = dumps(
                                    {
                                        "insert_id": row["insert_id"],
                                        "uuid": row["uuid"],
                                        "export_day": export_day,
                                        "event_type": row["event_type"],
                                        "event_time": event_time,
                                    }
                                )[:-1]
                            rows += self.property_rows(head, property_type, bag, property_lines)
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
    workers: int | None = None,
    threads: bool = True,
    read_size: int = DEFAULT_READ_SIZE,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    progress: Callable[[TransformStats], None] | None = None,
) -> TransformStats:
    """Transform one Export API zip into gzip NDJSON for both tables and the dead letters.

    ``zip_file`` is a path or a seekable binary file (e.g. the downloaded temporary file). The outputs
    are only written to (never flushed or closed), possibly from a worker thread: do not touch them
    before this returns. ``export_day`` goes on every row. ``compresslevel`` is zlib's 0-9 (mapped
    onto ISA-L's 0-3); ``codec`` is ``"isal"``, ``"zlib"`` or None for the fastest installed.

    ``workers``: processes transforming members in parallel. None: one per available CPU when
    ``zip_file`` is a path and the members hold at least ``PARALLEL_MIN_BYTES``, else 1; 1 keeps all
    in this process. Workers start with ``spawn``, which imports the caller's ``__main__``: scripts
    must guard their entry point. ``threads``: in one process, compress on a second thread when the
    codec is zlib and a CPU is spare.

    ``progress`` gets the running stats after each member. Raises ``CorruptExport`` or
    ``TooManyBadLines`` (the module docstring says what the outputs hold then); returns the stats.
    """
    if type(export_day) is not date:
        raise TypeError(f"export_day must be a datetime.date, got {type(export_day).__name__}")
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be within [0, 1], got {max_bad_fraction}")
    if not 0 <= compresslevel <= 9:
        raise ValueError(f"compresslevel must be within 0..9, got {compresslevel}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    chosen = _codec_named(codec)
    stats = TransformStats(export_day=export_day.isoformat(), codec=chosen.name)
    try:
        archive = zipfile.ZipFile(zip_file)
    except (zipfile.BadZipFile, EOFError) as error:
        raise CorruptExport(None, f"{error} (a truncated download, or not a zip)") from error
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        count = _worker_count(workers, zip_file, members)
        if count > 1:
            options = _Options(
                stats.export_day, chosen.name, compresslevel, read_size, chunk_bytes, max_line_bytes
            )
            stitched = tuple(
                _StitchedGzipSink(out, chosen) for out in (events_out, properties_out, bad_lines_out)
            )
            _transform_in_workers(
                os.fspath(cast(str, zip_file)), members, options, count, stitched, stats, progress
            )
            for stitched_sink in stitched:
                stitched_sink.finish()
            sinks: tuple[_StitchedGzipSink | _GzipSink, ...] = stitched
        else:
            # A compression thread pays with zlib (~40 % of the work, the GIL released while it runs).
            # ISA-L is fast enough that it gains little, and that process's memory crept up with it.
            threaded = threads and chosen.name == "zlib" and _cpus() > 1
            local = (
                _GzipSink(events_out, chosen.compressor(compresslevel), chunk_bytes, threaded),
                _GzipSink(properties_out, chosen.compressor(compresslevel), chunk_bytes, threaded),
                _GzipSink(bad_lines_out, chosen.compressor(compresslevel), 0, False),
            )
            try:
                transformer = _Transformer(stats.export_day, local[0], local[1], local[2], stats)
                for info in members:
                    member = _read_member(archive, info, chosen, transformer, read_size, max_line_bytes)
                    stats.member_stats.append(member)
                    _add_member(stats, member)
                    if progress is not None:
                        progress(stats)
                for sink in local:
                    sink.finish()
            except BaseException:
                for sink in local:
                    sink.abort()
                raise
            sinks = local
    stats.events_bytes_out, stats.properties_bytes_out, stats.bad_lines_bytes_out = (
        s.bytes_out for s in sinks
    )
    if stats.bad_lines > max_bad_fraction * (stats.events + stats.bad_lines):
        raise TooManyBadLines(stats, max_bad_fraction)
    return stats


PARALLEL_MIN_BYTES = (
    8 << 20
)  # below this much compressed input, starting worker processes costs more than it saves


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _worker_count(requested: int | None, zip_file: object, members: list[zipfile.ZipInfo]) -> int:
    has_path = isinstance(zip_file, str | PathLike)
    if requested is None:
        if not has_path or sum(info.compress_size for info in members) < PARALLEL_MIN_BYTES:
            return 1
        requested = _cpus()
    elif requested > 1 and not has_path:
        raise ValueError("workers > 1 needs zip_file as a path: worker processes open the zip themselves")
    return max(1, min(requested, len(members)))


def _add_member(stats: TransformStats, member: MemberStats) -> None:
    """Count a finished member into ``stats`` (``member_stats`` is the caller's to order)."""
    stats.members += 1
    stats.lines += member.lines
    stats.blank_lines += member.blank_lines
    stats.events += member.events
    stats.property_rows += member.property_rows
    stats.bad_lines += member.bad_lines
    stats.bytes_in += member.compressed_bytes
    stats.bytes_uncompressed += member.uncompressed_bytes


def _read_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    codec: _Codec,
    transformer: _Transformer,
    read_size: int,
    max_line_bytes: int,
) -> MemberStats:
    """Feed one member's lines to ``transformer``; any reading error becomes ``CorruptExport`` naming it."""
    member = MemberStats(info.filename, compressed_bytes=info.compress_size)
    if info.flag_bits & 0x1:
        raise CorruptExport(info.filename, "the member is encrypted")
    read_errors: tuple[type[BaseException], ...] = (zipfile.BadZipFile, NotImplementedError, *codec.errors)
    try:
        with archive.open(info) as stream:
            magic = cast(zipfile.ZipExtFile, stream).peek(2)[:2]
            if magic and magic != _GZIP_MAGIC:
                raise CorruptExport(info.filename, f"not gzip data (it starts with {magic!r})")
            if magic:  # an empty member holds no lines
                with codec.reader(stream) as gz:
                    lines = _member_lines(gz, read_size, max_line_bytes, member)
                    transformer.member(member, lines, max_line_bytes)
    except read_errors as error:
        reason = str(error) or type(error).__name__
        if isinstance(error, EOFError):
            reason = f"truncated gzip data ({reason})"
        raise CorruptExport(info.filename, reason) from error
    return member


# ------------------------------------------------------------------------------------ worker processes


@dataclass(frozen=True)
class _Options:
    export_day: str
    codec: str
    compresslevel: int
    read_size: int
    chunk_bytes: int
    max_line_bytes: int


def _transform_in_workers(
    path: str,
    members: list[zipfile.ZipInfo],
    options: _Options,
    count: int,
    sinks: tuple[_StitchedGzipSink, ...],
    stats: TransformStats,
    progress: Callable[[TransformStats], None] | None,
) -> None:
    """Members go to ``count`` processes; their compressed chunks and counts come back here.

    Queues are bounded, so memory stays flat: a worker waits while this process is behind.
    """
    context = multiprocessing.get_context("spawn")
    tasks: Any = context.Queue()
    results: Any = context.Queue(maxsize=4 * count)
    for index in range(len(members)):
        tasks.put(index)
    for _ in range(count):
        tasks.put(None)
    processes = [
        context.Process(target=_worker, args=(path, options, tasks, results), name=f"amplitude-transform-{n}")
        for n in range(count)
    ]
    for process in processes:
        process.daemon = True
        process.start()
    finished: dict[int, MemberStats] = {}
    try:
        running = count
        while running:
            try:
                message = results.get(timeout=1.0)
            except queue.Empty:
                dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"an Amplitude transform worker died (exit code {dead[0]})") from None
                continue
            kind = message[0]
            if kind == "chunk":
                _, which, data, crc, length = message
                sinks[which].write_chunk(data, crc, length)
            elif kind == "member":
                _, index, member, late, by_hour, by_date = message
                finished[index] = member
                stats.member_stats[:] = [finished[i] for i in sorted(finished)]  # archive order
                _add_member(stats, member)
                stats.late_events += late
                for totals, counts in (
                    (stats.events_by_upload_hour, by_hour),
                    (stats.events_by_event_date, by_date),
                ):
                    for key, value in counts.items():
                        totals[key] = totals.get(key, 0) + value
                if progress is not None:
                    progress(stats)
            elif kind == "corrupt":
                raise CorruptExport(message[1], message[2])
            elif kind == "failed":
                raise RuntimeError(f"an Amplitude transform worker failed: {message[1]}")
            else:  # "done"
                running -= 1
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()
        for channel in (tasks, results):
            channel.close()
            channel.cancel_join_thread()


def _next_task(tasks: Any) -> int | None:
    """The next member index, or None when there is none or the parent process is gone."""
    while True:
        try:
            index: int | None = tasks.get(timeout=5.0)
        except queue.Empty:
            parent = multiprocessing.parent_process()
            if parent is not None and not parent.is_alive():
                return None
            continue
        return index


def _worker(path: str, options: _Options, tasks: Any, results: Any) -> None:
    """A worker process: transform the members named by ``tasks``, report on ``results``."""
    try:
        codec = _codec_named(options.codec)
        sinks = tuple(
            _ChunkSink(n, results, codec, options.compresslevel, options.chunk_bytes) for n in range(3)
        )
        stats = TransformStats(options.export_day)
        transformer = _Transformer(options.export_day, sinks[0], sinks[1], sinks[2], stats)
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            while (index := _next_task(tasks)) is not None:
                try:
                    member = _read_member(
                        archive, members[index], codec, transformer, options.read_size, options.max_line_bytes
                    )
                except CorruptExport as error:
                    results.put(("corrupt", error.member, error.reason))
                    return
                for sink in sinks:
                    sink.flush()
                results.put(
                    (
                        "member",
                        index,
                        member,
                        stats.late_events,
                        stats.events_by_upload_hour,
                        stats.events_by_event_date,
                    )
                )
                stats.late_events, stats.events_by_upload_hour, stats.events_by_event_date = 0, {}, {}
        results.put(("done",))
    except BaseException as error:  # reported, so the parent fails with the reason rather than a timeout
        results.put(("failed", "".join(traceback.format_exception_only(error)).strip()))
