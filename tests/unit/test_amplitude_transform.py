"""Amplitude export → BigQuery rows: the streaming transform. Zips are built in memory; only the tests
of path input and of worker processes (which open the zip by path) write one to ``tmp_path``.

Every row the transform writes is checked against the BigQuery schema files Terraform uses
(``amplitude.events.json``, ``amplitude.events_properties.json``): exactly their columns, in their
order, REQUIRED ones non-null, each value of a shape BigQuery's NDJSON load accepts for its type.
"""

from __future__ import annotations

import gzip
import io
import json
import multiprocessing
import queue
import re
import zipfile
import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jupiter_data.amplitude_transform import (
    CorruptExport,
    TooManyBadLines,
    TransformStats,
    gzip_streams,
    transform_export,
    workers,
)
from jupiter_data.domain import amplitude
from jupiter_data.domain.amplitude import BadLine
from jupiter_data.domain.amplitude_rows import RowBuilder

DAY = date(2020, 11, 24)
EVENTS_SCHEMA = amplitude.load_schema(amplitude.EVENTS_SCHEMA_FILE)
PROPERTIES_SCHEMA = amplitude.load_schema(amplitude.PROPERTIES_SCHEMA_FILE)
BUILDER = RowBuilder(DAY.isoformat())

# Every field of an Amplitude export line, by the type its column must have.
TIMESTAMP_FIELDS = (
    "event_time",
    "client_event_time",
    "client_upload_time",
    "server_received_time",
    "server_upload_time",
    "processed_time",
    "user_creation_time",
)
INTEGER_FIELDS = ("event_id", "amplitude_id", "app", "session_id")
FLOAT_FIELDS = ("location_lat", "location_lng", "sample_rate")
BOOLEAN_FIELDS = ("paying", "is_attribution_event")
JSON_FIELDS = ("event_properties", "user_properties", "group_properties", "groups", "data", "plan")
STRING_FIELDS = (
    "uuid",
    "user_id",
    "device_id",
    "event_type",
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
    "start_version",
    "version_name",
    "amplitude_event_type",
    "adid",
    "idfa",
    "partner_id",
    "source_id",
    "data_type",
)


def full_event(**overrides: Any) -> dict[str, Any]:
    """A complete export line, as Amplitude writes it."""
    event: dict[str, Any] = {
        "$insert_id": "ins-1",
        "$schema": 12,
        "adid": None,
        "amplitude_attribution_ids": None,
        "amplitude_event_type": None,
        "amplitude_id": 100393279723,
        "app": 187520,
        "city": "Kyiv",
        "client_event_time": "2020-11-24 09:59:55.977000",
        "client_upload_time": "2020-11-24 09:59:56.001",
        "country": "Ukraine",
        "data": {"path": "/2/httpapi", "group_ids": {}},
        "data_type": "event",
        "device_brand": "Apple",
        "device_carrier": "Kyivstar",
        "device_family": "iOS",
        "device_id": "1CA1F133-31E3-4E39-856A-1CAB4781C219",
        "device_manufacturer": "Apple",
        "device_model": "iPhone13,2",
        "device_type": "Apple iPhone 12",
        "dma": None,
        "event_id": 983323,
        "event_properties": {"screen": "home", "referrer": {"source": "push", "campaign": {"id": 7}}},
        "event_time": "2020-11-24 09:59:55.977000",
        "event_type": "screen viewed",
        "global_user_properties": {},
        "group_properties": {},
        "groups": {"team": ["dev", "ops"]},
        "idfa": None,
        "ip_address": "203.0.113.7",
        "is_attribution_event": False,
        "language": "Ukrainian",
        "library": "amplitude-ios/8.3.0",
        "location_lat": 50.45,
        "location_lng": 30.52,
        "os_name": "ios",
        "os_version": "15.1",
        "partner_id": None,
        "paying": True,
        "plan": {"branch": "main", "version": "3"},
        "platform": "iOS",
        "processed_time": "2020-11-24 10:00:40.123456",
        "region": "Kyiv City",
        "sample_rate": None,
        "server_received_time": "2020-11-24 09:59:56.5",
        "server_upload_time": "2020-11-24 09:59:57",
        "session_id": 1606211995000,
        "source_id": None,
        "start_version": "1.0.0",
        "user_creation_time": "2020-08-19 22:16:45.283901",
        "user_id": "user-1",
        "user_properties": {"plan": "team", "ltv": 36.27, "tags": ["β"], "名前": "你好"},
        "uuid": "8ef7c313-0e79-4f8a-973d-90e923065c95",
        "version_name": "3.4.0",
    }
    event.update(overrides)
    return event


def line(event: Any) -> bytes:
    return orjson.dumps(event)


def gz(lines: list[bytes], *, trailing_newline: bool = True) -> bytes:
    text = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    return gzip.compress(text, compresslevel=6, mtime=0)


def make_zip(members: list[tuple[str, bytes]], *, directories: tuple[str, ...] = ()) -> bytes:
    """A zip of (name, member bytes), in that order; member bytes are stored as given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for directory in directories:
            archive.writestr(zipfile.ZipInfo(directory), b"")
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def export(*hours: list[bytes], app: int = 187520, day: date = DAY) -> bytes:
    """A zip with one member per list of lines, named as the Export API names them."""
    return make_zip([(f"{app}/{app}_{day}_{h}#0.json.gz", gz(lines)) for h, lines in enumerate(hours)])


@dataclass
class Result:
    stats: TransformStats
    events: list[dict[str, Any]]
    properties: list[dict[str, Any]]
    bad: list[dict[str, Any]]
    raw: tuple[bytes, bytes, bytes]


def ndjson(data: bytes) -> list[dict[str, Any]]:
    text = gzip.decompress(data)
    assert text == b"" or text.endswith(b"\n")
    return [orjson.loads(row) for row in text.split(b"\n") if row]


def run(zip_bytes: bytes, day: date = DAY, **options: Any) -> Result:
    outs = io.BytesIO(), io.BytesIO(), io.BytesIO()
    stats = transform_export(io.BytesIO(zip_bytes), *outs, day, **options)
    raw = tuple(out.getvalue() for out in outs)
    result = Result(stats, ndjson(raw[0]), ndjson(raw[1]), ndjson(raw[2]), raw)  # type: ignore[arg-type]
    check_result(result)
    return result


def run_lines(lines: list[bytes], **options: Any) -> Result:
    options.setdefault("max_bad_fraction", 1.0)
    return run(export(lines), **options)


# ------------------------------------------------------------------------------------ schema checks

BIGQUERY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")
DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


TIMESTAMP_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?")


def instant(text: str) -> datetime:
    """The UTC instant BigQuery reads in a TIMESTAMP literal without a zone (a test oracle)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _is_timestamp(value: Any) -> bool:
    return type(value) is str and TIMESTAMP_TEXT.fullmatch(value) is not None and instant(value).year > 0


def _is_int64(value: Any) -> bool:
    if type(value) is str:  # how values beyond 2**53 travel
        return re.fullmatch(r"-?[0-9]+", value) is not None and -(2**63) <= int(value) < 2**63
    return type(value) is int and -(2**53) < value < 2**53


VALUE_CHECKS = {
    "STRING": lambda v: type(v) is str,
    "INTEGER": _is_int64,
    "FLOAT": lambda v: type(v) in (int, float),
    "BOOLEAN": lambda v: type(v) is bool,
    "TIMESTAMP": _is_timestamp,
    "DATE": lambda v: type(v) is str and date.fromisoformat(v) is not None and DATE_TEXT.fullmatch(v),
    "JSON": lambda v: True,
}


def check_rows(rows: list[dict[str, Any]], schema: list[dict[str, Any]]) -> None:
    names = [column["name"] for column in schema]
    for row in rows:
        assert list(row) == names
        for column in schema:
            value = row[column["name"]]
            if value is None:
                assert column["mode"] == "NULLABLE", column["name"]
            else:
                assert VALUE_CHECKS[column["type"]](value), (column["name"], value)


def check_result(result: Result) -> None:
    check_rows(result.events, EVENTS_SCHEMA)
    check_rows(result.properties, PROPERTIES_SCHEMA)
    stats = result.stats
    assert stats.events == len(result.events)
    assert stats.property_rows == len(result.properties)
    assert stats.bad_lines == len(result.bad)
    assert stats.lines == stats.events + stats.bad_lines + stats.blank_lines
    assert stats.events_bytes_out == len(result.raw[0])
    assert stats.properties_bytes_out == len(result.raw[1])
    assert stats.bad_lines_bytes_out == len(result.raw[2])
    assert stats.bytes_out == sum(map(len, result.raw))
    for row in result.events:
        assert row["insert_id"] or row["uuid"]
        assert row["export_day"] == stats.export_day
    for row in result.properties:
        assert row["export_day"] == stats.export_day
        assert row["property_type"] in amplitude.PROPERTY_TYPES
    for bad in result.bad:
        assert tuple(bad) == amplitude.BAD_LINE_FIELDS
    json.dumps(stats.to_dict())


# ------------------------------------------------------------------------------------------ schemas


def test_schema_files_are_bigquery_schemas_with_a_column_for_every_export_field() -> None:
    for schema in (EVENTS_SCHEMA, PROPERTIES_SCHEMA):
        names = [column["name"] for column in schema]
        assert len(names) == len(set(names))
        for column in schema:
            assert set(column) == {"name", "type", "mode", "description"}
            assert BIGQUERY_NAME.fullmatch(column["name"])
            assert column["mode"] in ("NULLABLE", "REQUIRED")
            assert column["description"].strip()
    types = {column["name"]: column["type"] for column in EVENTS_SCHEMA}
    expected = {
        **dict.fromkeys(TIMESTAMP_FIELDS, "TIMESTAMP"),
        **dict.fromkeys(INTEGER_FIELDS, "INTEGER"),
        **dict.fromkeys(FLOAT_FIELDS, "FLOAT"),
        **dict.fromkeys(BOOLEAN_FIELDS, "BOOLEAN"),
        **dict.fromkeys(JSON_FIELDS, "JSON"),
        **dict.fromkeys(STRING_FIELDS, "STRING"),
        "insert_id": "STRING",
        "resolved_user_id": "STRING",
        "export_day": "DATE",
        "event_date": "DATE",
        "extra": "JSON",
    }
    assert types == expected
    required = {c["name"] for c in EVENTS_SCHEMA if c["mode"] == "REQUIRED"}
    assert required == {"export_day"}
    assert [c["name"] for c in PROPERTIES_SCHEMA] == [
        "insert_id",
        "uuid",
        "export_day",
        "event_type",
        "event_time",
        "property_type",
        "key",
        "value",
        "value_type",
    ]
    required = {c["name"] for c in PROPERTIES_SCHEMA if c["mode"] == "REQUIRED"}
    assert required == {"export_day", "property_type", "key", "value_type"}


# --------------------------------------------------------------------------------------- timestamps


def event_time_loaded(value: Any) -> Any:
    """The ``event_time`` of the events row the row builder makes of an event with this value."""
    event_line, *_ = BUILDER.event(line({"uuid": "u", "event_time": value}), [])
    return orjson.loads(event_line)["event_time"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-11-24 09:59:55.977000", datetime(2020, 11, 24, 9, 59, 55, 977000, tzinfo=UTC)),
        ("2020-11-24 09:59:55", datetime(2020, 11, 24, 9, 59, 55, tzinfo=UTC)),
        ("2020-11-24 09:59:55.9", datetime(2020, 11, 24, 9, 59, 55, 900000, tzinfo=UTC)),
        ("2020-11-24 09:59:55.97", datetime(2020, 11, 24, 9, 59, 55, 970000, tzinfo=UTC)),
        ("2020-11-24 09:59:55.977", datetime(2020, 11, 24, 9, 59, 55, 977000, tzinfo=UTC)),
        ("2020-11-24 09:59:55.0001", datetime(2020, 11, 24, 9, 59, 55, 100, tzinfo=UTC)),
        ("2020-11-24 09:59:55.00001", datetime(2020, 11, 24, 9, 59, 55, 10, tzinfo=UTC)),
        ("2020-11-24 09:59:55.000001", datetime(2020, 11, 24, 9, 59, 55, 1, tzinfo=UTC)),
        ("2020-02-29 23:59:59.999999", datetime(2020, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)),
        ("2000-02-29 00:00:00", datetime(2000, 2, 29, tzinfo=UTC)),
        ("0001-01-01 00:00:00", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31 23:59:59.999999", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        (None, None),
        ("", None),
    ],
)
def test_timestamps_with_and_without_fraction_load_as_written(
    text: str | None, expected: datetime | None
) -> None:
    # what is loaded is the text itself: BigQuery's canonical TIMESTAMP literal, UTC without a zone
    assert event_time_loaded(text) == (text or None)
    if text:
        assert instant(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        "2020-11-24",
        "2020-11-24T09:59:55",
        "2020-11-24T09:59:55Z",
        "2020-11-24 09:59:55Z",
        "2020-11-24 09:59:55+00:00",
        "2020-11-24 09:59:55.",
        "2020-11-24 09:59:55.1234567",
        "2020-11-24 9:59:55",
        "2020-11-24  09:59:55",
        " 2020-11-24 09:59:55",
        "2020-11-24 09:59:55 ",
        "2020-11-24 09:59:55\n",
        "2020-13-01 00:00:00",
        "2020-00-01 00:00:00",
        "2020-11-00 00:00:00",
        "2020-11-31 00:00:00",
        "2021-02-29 00:00:00",
        "1900-02-29 00:00:00",
        "2020-02-30 00:00:00",
        "0000-01-01 00:00:00",
        "2020-11-24 24:00:00",
        "2020-11-24 09:60:00",
        "2020-11-24 09:59:60",
        "\uff12\uff10\uff12\uff10-11-24 09:59:55"  # full-width digits,
        "2020-11-24 09:59:5५",
        1606211995,
        1606211995.977,
        True,
        ["2020-11-24 09:59:55"],
    ],
)
def test_timestamp_garbage_is_rejected_with_a_clear_error(text: Any) -> None:
    with pytest.raises(BadLine, match=r"^event_time: not an Amplitude timestamp"):
        event_time_loaded(text)


@pytest.mark.parametrize(
    "year", [1, 4, 100, 400, 1582, 1600, 1700, 1900, 1996, 2000, 2019, 2020, 2100, 2400, 9996, 9999]
)
def test_timestamp_calendar_matches_python_for_every_day_of_a_year(year: int) -> None:
    for month in range(1, 14):
        for day in range(0, 33):
            text = f"{year:04d}-{month:02d}-{day:02d} 12:00:00"
            try:
                real = date(year, month, day)
            except ValueError:
                real = None
            if real is None:
                with pytest.raises(BadLine):
                    event_time_loaded(text)
            else:
                assert event_time_loaded(text) == text


@given(
    moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)),
    digits=st.integers(0, 6),
)
def test_any_amplitude_timestamp_round_trips(moment: datetime, digits: int) -> None:
    text = f"{moment.year:04d}-{moment:%m-%d %H:%M:%S}"
    fraction = f"{moment.microsecond:06d}"[:digits]
    if digits:
        text += "." + fraction
    expected = moment.replace(microsecond=int(fraction.ljust(6, "0")) if digits else 0, tzinfo=UTC)
    assert event_time_loaded(text) == text
    assert instant(text) == expected


# ---------------------------------------------------------------------------------------- properties


def property_rows(bag: Any) -> list[tuple[str, str | None, str]]:
    """(key, value, value_type) of the property rows the row builder makes of an ``event_properties`` bag."""
    parts: list[bytes] = []
    BUILDER.event(line({"uuid": "u", "event_properties": bag}), parts)
    rows = [orjson.loads(row) for row in b"".join(parts).splitlines()]
    return [(row["key"], row["value"], row["value_type"]) for row in rows]


def test_nested_keys_flatten_to_dots_and_arrays_and_empty_objects_stay_whole() -> None:
    properties = {
        "a": 1,
        "b": {"c": {"d": "x", "e": []}, "f": {}},
        "g": [{"h": 1}],
        "i": None,
        "j.k": True,
        "": "empty key",
    }
    assert property_rows(properties) == [
        ("a", "1", "number"),
        ("b.c.d", "x", "string"),
        ("b.c.e", "[]", "array"),
        ("b.f", "{}", "object"),
        ("g", '[{"h":1}]', "array"),
        ("i", None, "null"),
        ("j.k", "true", "boolean"),
        ("", "empty key", "string"),
    ]
    assert property_rows({}) == []


def test_flattening_is_not_limited_by_the_recursion_limit() -> None:
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(5000):
        deep = {"n": deep}
    parts: list[bytes] = []
    # deeper than any line can be (orjson reads 1024 levels): the bag is given to the builder as is
    assert RowBuilder(DAY.isoformat()).property_rows(b'{"uuid":"u"', "data", deep, parts) == 1
    row = orjson.loads(b"".join(parts))
    assert (row["key"], row["value"]) == ("n." * 5000 + "leaf", "1")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", ("text", "string")),
        ("", ("", "string")),
        ("null", ("null", "string")),
        (None, (None, "null")),
        (True, ("true", "boolean")),
        (False, ("false", "boolean")),
        (0, ("0", "number")),
        (-12, ("-12", "number")),
        (9_007_199_254_740_993, ("9007199254740993", "number")),
        (2.5, ("2.5", "number")),
        (1e-7, ("1e-7", "number")),
        ([1, "a", None], ('[1,"a",null]', "array")),
        ([], ("[]", "array")),
        ({}, ("{}", "object")),
    ],
)
def test_property_values_are_text_with_their_json_type(value: Any, expected: tuple[Any, str]) -> None:
    assert property_rows({"v": value}) == [("v", *expected)]


def test_property_rows_one_per_leaf_of_every_bag() -> None:
    event = full_event(
        event_properties={
            "screen": "Главная",
            "count": 3,
            "ratio": 0.5,
            "big": 9_007_199_254_740_993,
            "ok": False,
            "missing": None,
            "tags": ["new", "★"],
            "referrer": {"source": "push", "campaign": {"id": 7, "name": None}, "empty": {}},
            'quote"and\\slash': 'say "hi"\\',
            "line\u2028sep": "a\u2028b",
        },
        user_properties={"plan": "team"},
        group_properties=None,
        groups={},
        data={"first_event": True},
    )
    result = run_lines([line(event)])
    rows = [(r["property_type"], r["key"], r["value"], r["value_type"]) for r in result.properties]
    assert rows == [
        ("event_properties", "screen", "Главная", "string"),
        ("event_properties", "count", "3", "number"),
        ("event_properties", "ratio", "0.5", "number"),
        ("event_properties", "big", "9007199254740993", "number"),
        ("event_properties", "ok", "false", "boolean"),
        ("event_properties", "missing", None, "null"),
        ("event_properties", "tags", '["new","★"]', "array"),
        ("event_properties", "referrer.source", "push", "string"),
        ("event_properties", "referrer.campaign.id", "7", "number"),
        ("event_properties", "referrer.campaign.name", None, "null"),
        ("event_properties", "referrer.empty", "{}", "object"),
        ("event_properties", 'quote"and\\slash', 'say "hi"\\', "string"),
        ("event_properties", "line\u2028sep", "a\u2028b", "string"),
        ("user_properties", "plan", "team", "string"),
        ("data", "first_event", "true", "boolean"),
    ]
    for row in result.properties:
        assert (row["insert_id"], row["uuid"], row["event_type"]) == ("ins-1", event["uuid"], "screen viewed")
        assert row["event_time"] == "2020-11-24 09:59:55.977000"
    # the bags themselves land whole in the JSON columns
    (row,) = result.events
    assert row["event_properties"] == event["event_properties"]
    assert (row["group_properties"], row["groups"]) == (None, {})
    assert result.stats.property_rows == 15


def test_property_keys_repeat_across_events_and_stay_correct() -> None:
    lines = [
        line(
            full_event(
                **{"$insert_id": f"i{n}", "uuid": f"u{n}"}, event_properties={"k": n, "n": {"k": str(n)}}
            )
        )
        for n in range(50)
    ]
    result = run_lines(lines)
    props = [
        (r["insert_id"], r["key"], r["value"])
        for r in result.properties
        if r["property_type"] == "event_properties"
    ]
    assert props == [(f"i{n}", key, str(n)) for n in range(50) for key in ("k", "n.k")]


# ------------------------------------------------------------------------------------------- events


def test_a_full_event_maps_every_field_with_its_type() -> None:
    event = full_event()
    result = run_lines([line(event)])
    (row,) = result.events
    assert row["insert_id"] == "ins-1"
    assert row["export_day"] == "2020-11-24"
    assert row["event_date"] == "2020-11-24"
    assert row["resolved_user_id"] == "user-1"
    for name in (
        *TIMESTAMP_FIELDS,
        *INTEGER_FIELDS,
        *FLOAT_FIELDS,
        *BOOLEAN_FIELDS,
        *JSON_FIELDS,
        *STRING_FIELDS,
    ):
        assert row[name] == event[name], name
    assert row["extra"] == {"$schema": 12, "amplitude_attribution_ids": None, "global_user_properties": {}}
    assert result.stats.late_events == 0
    assert result.stats.events_by_upload_hour == {"2020-11-24 09": 1}
    assert result.stats.events_by_event_date == {"2020-11-24": 1}


def test_a_line_with_only_an_insert_id_becomes_a_row_of_nulls() -> None:
    result = run_lines([b'{"$insert_id":"only"}', b'{"uuid":"u-only","user_id":null}'])
    first, second = result.events
    assert first["insert_id"] == "only"
    assert {k for k, v in first.items() if v is not None} == {"insert_id", "export_day"}
    assert second["uuid"] == "u-only"
    assert {k for k, v in second.items() if v is not None} == {"uuid", "export_day"}
    assert result.properties == []
    assert result.stats.events_by_upload_hour == {}


@pytest.mark.parametrize("field", sorted(set(full_event()) - {"$insert_id", "uuid"}))
def test_any_field_may_be_null_or_missing(field: str) -> None:
    nulled = full_event(**{field: None})
    missing = full_event()
    del missing[field]
    result = run_lines([line(nulled), line(missing)])
    assert len(result.events) == 2
    column = "extra" if field in ("$schema", "amplitude_attribution_ids", "global_user_properties") else field
    if column != "extra":
        assert result.events[0][column] is None
        assert result.events[1][column] is None


@pytest.mark.parametrize(
    ("fields", "resolved"),
    [
        ({"user_id": "user-7", "amplitude_id": 5}, "user-7"),
        ({"user_id": None, "amplitude_id": 100393279723}, "100393279723"),
        ({"amplitude_id": 42}, "42"),
        ({"user_id": "", "amplitude_id": 42}, "42"),
        ({"user_id": 734, "amplitude_id": 42}, "734"),
        ({"user_id": None, "amplitude_id": None}, None),
        ({"user_id": None, "amplitude_id": 2**60}, str(2**60)),
        ({}, None),
    ],
)
def test_resolved_user_id_falls_back_to_the_amplitude_id(
    fields: dict[str, Any], resolved: str | None
) -> None:
    result = run_lines([line({"uuid": "u", **fields})])
    assert result.events[0]["resolved_user_id"] == resolved


def test_unicode_survives_everywhere() -> None:
    event = full_event(
        event_type="message sent ✉️",
        city="東京",
        user_id="użytkownik-ü",
        user_properties={"名前": "你好\uff0c世界", "emoji": "👩‍👩‍👧‍👦", "sep": "a\u2028b\u2029c"},
    )
    result = run_lines([line(event), line(full_event(uuid="second"))])
    assert len(result.events) == 2  # U+2028 inside a string does not split the line
    row = result.events[0]
    assert (row["event_type"], row["city"], row["user_id"]) == ("message sent ✉️", "東京", "użytkownik-ü")
    assert row["user_properties"] == event["user_properties"]
    keys = {
        r["key"]: r["value"]
        for r in result.properties
        if r["property_type"] == "user_properties" and r["uuid"] == event["uuid"]
    }
    assert keys == {"名前": "你好\uff0c世界", "emoji": "👩‍👩‍👧‍👦", "sep": "a\u2028b\u2029c"}


def test_values_are_converted_to_their_column_types_where_lossless() -> None:
    event = full_event(
        event_id="123",
        app=187520.0,
        session_id=2**60,
        amplitude_id=-(2**53) + 1,
        location_lat="52.5",
        location_lng=13,
        sample_rate=1,
        paying="TRUE",
        is_attribution_event=0,
        version_name=3.4,
        city={"name": "Kyiv"},
        dma=["x"],
        platform=True,
    )
    (row,) = run_lines([line(event)]).events
    assert (row["event_id"], row["app"], row["session_id"], row["amplitude_id"]) == (
        123,
        187520,
        str(2**60),
        -(2**53) + 1,
    )
    assert (row["location_lat"], row["location_lng"], row["sample_rate"]) == (52.5, 13, 1)
    assert (row["paying"], row["is_attribution_event"]) == (True, False)
    assert (row["version_name"], row["city"], row["dma"], row["platform"]) == (
        "3.4",
        '{"name":"Kyiv"}',
        '["x"]',
        "true",
    )


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"event_time": "2020-11-24T09:59:55Z"}, "event_time: not an Amplitude timestamp"),
        ({"processed_time": 1606211995}, "processed_time: not an Amplitude timestamp"),
        ({"user_creation_time": "2021-02-29 00:00:00"}, "user_creation_time: not an Amplitude timestamp"),
        ({"event_id": "abc"}, "event_id: expected an INT64 integer, got string"),
        ({"event_id": 1.5}, "event_id: expected an INT64 integer, got number"),
        ({"event_id": True}, "event_id: expected an INT64 integer, got boolean"),
        ({"amplitude_id": 2**63}, "amplitude_id: expected an INT64 integer"),
        ({"session_id": {"a": 1}}, "session_id: expected an INT64 integer, got object"),
        ({"location_lat": "north"}, "location_lat: expected a number, got string"),
        ({"location_lng": "nan"}, "location_lng: expected a number"),
        ({"location_lng": [1]}, "location_lng: expected a number, got array"),
        ({"paying": "yes"}, "paying: expected a boolean, got string"),
        ({"is_attribution_event": 2}, "is_attribution_event: expected a boolean, got integer"),
        ({"event_properties": ["a"]}, "event_properties: expected an object or null, got array"),
        ({"user_properties": "x"}, "user_properties: expected an object or null, got string"),
        ({"groups": 1}, "groups: expected an object or null, got integer"),
    ],
)
def test_values_no_column_can_hold_make_a_bad_line_naming_the_field(
    fields: dict[str, Any], error: str
) -> None:
    result = run_lines([line(full_event(uuid="good")), line(full_event(**fields))])
    assert [r["uuid"] for r in result.events] == ["good"]
    (bad,) = result.bad
    assert bad["error"].startswith(error)
    assert bad["line_number"] == 2
    assert result.stats.property_rows == len(result.properties)
    assert {r["uuid"] for r in result.properties} == {"good"}  # nothing of the bad line leaked


def test_keys_without_a_column_go_to_extra_and_never_overwrite_computed_columns() -> None:
    event = {
        "uuid": "u",
        "insert_id": "not the $insert_id",
        "export_day": "1999-01-01",
        "event_date": "x",
        "resolved_user_id": "nobody",
        "extra": 1,
        "new_field": {"nested": True},
    }
    (row,) = run_lines([line(event)]).events
    assert row["insert_id"] is None
    assert row["export_day"] == "2020-11-24"
    assert row["event_date"] is None
    assert row["resolved_user_id"] is None
    assert row["extra"] == {k: v for k, v in event.items() if k != "uuid"}
    assert list(row["extra"]) == sorted(row["extra"])  # deterministic output


def test_export_day_is_on_every_row_and_late_events_keep_their_event_date() -> None:
    late = full_event(
        uuid="late",
        event_time="2020-11-23 23:59:59.999",
        client_event_time="2020-11-23 23:59:58",
        server_upload_time="2020-11-24 00:00:01",
    )
    very_late = full_event(
        uuid="very late", event_time="2019-01-01 00:00:00", server_upload_time="2020-11-24 23:59:59"
    )
    result = run_lines([line(full_event()), line(late), line(very_late)], day=DAY)
    assert {row["export_day"] for row in result.events} == {"2020-11-24"}
    assert {row["export_day"] for row in result.properties} == {"2020-11-24"}
    assert [row["event_date"] for row in result.events] == ["2020-11-24", "2020-11-23", "2019-01-01"]
    assert result.stats.late_events == 2
    assert result.stats.events_by_event_date == {"2020-11-24": 1, "2020-11-23": 1, "2019-01-01": 1}
    assert result.stats.events_by_upload_hour == {"2020-11-24 09": 1, "2020-11-24 00": 1, "2020-11-24 23": 1}
    # the same lines exported for another day belong to that day
    other = run_lines([line(late)], day=date(2020, 11, 25))
    assert other.events[0]["export_day"] == "2020-11-25"
    assert other.stats.late_events == 1


# ------------------------------------------------------------------------------------------ members


def test_members_are_read_in_archive_order_whatever_their_names() -> None:
    members = [
        ("zzz/last-name-first.json.gz", gz([line({"uuid": "1"})])),
        ("a.bin", gz([line({"uuid": "2"}), line({"uuid": "3"})])),
        ("no-extension", gz([line({"uuid": "4"})])),
        ("187520/187520_2020-11-24_9#0.json.gz", gz([])),
        ("empty-file", b""),
    ]
    result = run(make_zip(members, directories=("187520/",)))
    assert [row["uuid"] for row in result.events] == ["1", "2", "3", "4"]
    assert [m.name for m in result.stats.member_stats] == [name for name, _ in members]
    assert [m.events for m in result.stats.member_stats] == [1, 2, 1, 0, 0]
    assert result.stats.members == 5


def test_several_members_per_hour_and_per_member_counts() -> None:
    members = [
        (
            f"187520/187520_2020-11-24_{hour}#{part}.json.gz",
            gz([line({"uuid": f"{hour}-{part}-{n}"}) for n in range(part + 1)]),
        )
        for hour in (0, 9, 23)
        for part in range(3)
    ]
    result = run(make_zip(members))
    assert result.stats.members == 9
    assert result.stats.events == 18
    assert [m.events for m in result.stats.member_stats] == [1, 2, 3] * 3
    assert all(m.lines == m.events for m in result.stats.member_stats)
    assert result.stats.bytes_in == sum(len(data) for _, data in members)
    assert result.stats.bytes_uncompressed == sum(len(gzip.decompress(data)) for _, data in members)


def test_a_member_made_of_concatenated_gzip_streams_is_read_whole() -> None:
    data = gz([line({"uuid": "a"})]) + gz([line({"uuid": "b"})])
    assert [r["uuid"] for r in run(make_zip([("m", data)])).events] == ["a", "b"]


def test_line_endings_blank_lines_and_a_missing_final_newline() -> None:
    text = b'{"uuid":"a"}\r\n\n   \n{"uuid":"b"}\n\t\r\n{"uuid":"c"}'
    result = run(make_zip([("m", gzip.compress(text))]))
    assert [r["uuid"] for r in result.events] == ["a", "b", "c"]
    assert result.stats.blank_lines == 3
    assert result.stats.lines == 6
    assert result.bad == []


@pytest.mark.parametrize("read_size", [1, 7, 64, 1 << 16])
def test_batches_do_not_change_the_output(read_size: int) -> None:
    lines = [
        line(full_event(uuid=f"u{n}", event_properties={"n": n, "pad": "x" * (n * 37 % 200)}))
        for n in range(40)
    ]
    lines[5] = b"not json"
    reference = run_lines(lines)
    result = run_lines(lines, read_size=read_size)
    assert result.events == reference.events
    assert result.properties == reference.properties
    assert result.bad == reference.bad
    assert result.raw == reference.raw


@pytest.mark.parametrize("read_size", [3, 50, 1 << 16])
def test_over_long_lines_are_dead_lettered_without_being_held(read_size: int) -> None:
    long_line = line({"uuid": "long", "pad": "y" * 500})
    lines = [line({"uuid": "a"}), long_line, line({"uuid": "b"}), long_line]
    text = b"\n".join(lines)  # the last line has no newline
    result = run(
        make_zip([("m", gzip.compress(text))]), max_line_bytes=100, read_size=read_size, max_bad_fraction=1.0
    )
    assert [r["uuid"] for r in result.events] == ["a", "b"]
    assert [(b["line_number"], b["raw_bytes"]) for b in result.bad] == [
        (2, len(long_line)),
        (4, len(long_line)),
    ]
    assert all(b["error"] == f"line longer than 100 bytes ({len(long_line)} bytes)" for b in result.bad)
    assert long_line.decode().startswith(result.bad[0]["raw"][:50])


# ---------------------------------------------------------------------------------------- bad lines


BAD_LINES = [
    (b"{not json", "not valid JSON"),
    (b'{"uuid": "cut', "not valid JSON"),
    (b'{"uuid": "\xff\xfe"}', "not valid JSON"),
    (b"[1, 2]", "not a JSON object but array"),
    (b'"just a string"', "not a JSON object but string"),
    (b"42", "not a JSON object but integer"),
    (b"null", "not a JSON object but null"),
    (b'{"event_type": "no ids"}', "no event id"),
    (b'{"$insert_id": null, "uuid": null}', "no event id"),
    (b'{"$insert_id": "", "uuid": ""}', "no event id"),
    (b"[" * 300 + b"]" * 300, "not a JSON object but array"),
    (b'{"uuid":"deep","plan":' + b"[" * 300 + b"]" * 300 + b"}", "cannot be re-encoded as JSON"),
]


def test_bad_lines_are_counted_and_dead_lettered_with_member_and_line_number() -> None:
    good = [line({"uuid": f"u{n}", "event_properties": {"n": n}}) for n in range(2000 * len(BAD_LINES))]
    lines = list(good)
    for index, (bad, _) in enumerate(BAD_LINES):
        lines.insert(index * 2000 + 1000, bad)
    result = run(export(lines))  # 12 bad of 24012 lines: under the default 0.1 %
    assert result.stats.bad_lines == len(BAD_LINES)
    assert result.stats.events == len(good)
    member = "187520/187520_2020-11-24_0#0.json.gz"
    for index, ((raw, error), dead) in enumerate(zip(BAD_LINES, result.bad, strict=True)):
        assert dead["member"] == member
        assert dead["line_number"] == index * 2000 + 1001
        assert dead["error"].startswith(error), dead["error"]
        assert dead["raw"] == raw.decode("utf-8", "backslashreplace")
        assert dead["raw_bytes"] == len(raw)
        assert dead["raw_truncated"] is False
        assert dead["export_day"] == "2020-11-24"


def test_a_huge_bad_line_is_kept_truncated_in_its_dead_letter() -> None:
    raw = b"{" + b"x" * (amplitude.RAW_LINE_LIMIT * 2)
    (dead,) = run_lines([raw]).bad
    assert dead["raw_truncated"] is True
    assert dead["raw_bytes"] == len(raw)
    assert len(dead["raw"]) == amplitude.RAW_LINE_LIMIT


def test_too_many_bad_lines_fail_the_day_but_every_line_is_accounted_for() -> None:
    lines = [line({"uuid": f"u{n}"}) for n in range(998)] + [b"oops", b"again"]  # 0.2 %
    outs = io.BytesIO(), io.BytesIO(), io.BytesIO()
    with pytest.raises(TooManyBadLines, match=r"2 of 1000 lines .* 2020-11-24 .* over the limit") as caught:
        transform_export(io.BytesIO(export(lines)), *outs, DAY)
    stats = caught.value.stats
    assert (stats.events, stats.bad_lines, stats.lines) == (998, 2, 1000)
    assert caught.value.max_bad_fraction == amplitude.DEFAULT_MAX_BAD_FRACTION
    # every member was read: the dead letters are complete, for diagnosis
    assert [d["line_number"] for d in ndjson(outs[2].getvalue())] == [999, 1000]


@pytest.mark.parametrize(
    ("bad", "limit", "fails"), [(1, 0.5, False), (1, 0.49, True), (0, 0.0, False), (1, 0.0, True)]
)
def test_the_bad_line_limit_is_a_fraction_of_the_lines(bad: int, limit: float, fails: bool) -> None:
    lines = [line({"uuid": "a"}), *[b"bad"] * bad]
    if fails:
        with pytest.raises(TooManyBadLines):
            run(export(lines), max_bad_fraction=limit)
    else:
        assert run(export(lines), max_bad_fraction=limit).stats.bad_lines == bad


# ---------------------------------------------------------------------------------- corrupt inputs


def corrupt_member_zip(data: bytes) -> bytes:
    return make_zip([("good.json.gz", gz([line({"uuid": "ok"})])), ("187520/broken#0.json.gz", data)])


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        pytest.param(gz([line({"uuid": n}) for n in range(500)])[:-20], "truncated", id="cut-trailer"),
        pytest.param(gz([line({"uuid": n}) for n in range(500)])[:40], "truncated", id="cut-early"),
        pytest.param(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"\xff" * 64, "(?i)invalid|error", id="bad-deflate"),
        pytest.param(b"\x1f\x8b\x01\x00garbage", "(?i)compression method|error|truncated", id="bad-method"),
        pytest.param(b'{"uuid":"plain json, not gzip"}\n', "not gzip data", id="not-gzip"),
    ],
)
def test_a_corrupt_or_truncated_gzip_member_is_a_clear_error_naming_it(member: bytes, reason: str) -> None:
    with pytest.raises(CorruptExport, match=reason) as caught:
        run(corrupt_member_zip(member))
    assert caught.value.member == "187520/broken#0.json.gz"
    assert "187520/broken#0.json.gz" in str(caught.value)


def test_a_flipped_byte_inside_a_gzip_member_is_caught() -> None:
    data = bytearray(gz([line(full_event(uuid=str(n))) for n in range(200)]))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(CorruptExport) as caught:
        run(corrupt_member_zip(bytes(data)))
    assert caught.value.member == "187520/broken#0.json.gz"


def test_a_bad_crc_in_the_zip_is_caught() -> None:
    archive = bytearray(corrupt_member_zip(gz([line({"uuid": "x"})])))
    gzip_start = archive.index(b"\x1f\x8b", archive.index(b"broken#0"))
    archive[gzip_start + 4] ^= 0xFF  # the gzip header's mtime: gzip does not care, the zip's CRC does
    with pytest.raises(CorruptExport, match="CRC") as caught:
        run(bytes(archive))
    assert caught.value.member == "187520/broken#0.json.gz"


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_a_truncated_zip_is_a_clear_error(keep: float) -> None:
    archive = export([line(full_event(uuid=str(n))) for n in range(300)], [line({"uuid": "x"})])
    with pytest.raises(CorruptExport, match="export zip is unreadable") as caught:
        run(archive[: int(len(archive) * keep)])
    assert caught.value.member is None


def test_not_a_zip_at_all() -> None:
    with pytest.raises(CorruptExport, match="not a zip"):
        run(b"<html>504 Gateway Timeout</html>")


def test_on_failure_no_output_passes_for_a_complete_file() -> None:
    good = gz([line(full_event(uuid=str(n))) for n in range(3000)])
    archive = make_zip([("a", good), ("b", good[:-100])])
    outs = io.BytesIO(), io.BytesIO(), io.BytesIO()
    with pytest.raises(CorruptExport):
        transform_export(io.BytesIO(archive), *outs, DAY, chunk_bytes=1 << 12)
    written = outs[0].getvalue()
    assert written  # a chunk was written before the failure...
    with pytest.raises(EOFError):  # ...but the stream has no end
        gzip.decompress(written)


# ------------------------------------------------------------------------------------ API, streams


def test_output_is_deterministic_gzip() -> None:
    archive = export([line(full_event(uuid=str(n))) for n in range(500)], [b"junk"])
    first = run(archive, max_bad_fraction=1.0)
    second = run(archive, chunk_bytes=1000, max_bad_fraction=1.0)
    assert first.events == second.events and first.properties == second.properties
    assert first.raw == run(archive, max_bad_fraction=1.0).raw
    for data in first.raw:
        assert data[:2] == b"\x1f\x8b"
        assert data[4:8] == b"\x00\x00\x00\x00"  # mtime 0


def test_outputs_are_only_written_never_closed_and_a_path_works(tmp_path: Any) -> None:
    path = tmp_path / "export.zip"
    path.write_bytes(export([line(full_event())]))
    seen: list[int] = []

    class WriteOnly:
        def __init__(self) -> None:
            self.data = bytearray()

        def write(self, data: bytes) -> int:
            self.data += data
            return len(data)

    outs = WriteOnly(), WriteOnly(), WriteOnly()
    stats = transform_export(path, *outs, DAY, progress=lambda s: seen.append(s.events))
    assert stats.events == 1
    assert seen == [1]
    assert len(ndjson(bytes(outs[0].data))) == 1
    assert ndjson(bytes(outs[2].data)) == []


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"export_day": datetime(2020, 11, 24)}, TypeError),
        ({"export_day": "2020-11-24"}, TypeError),
        ({"max_bad_fraction": 1.5}, ValueError),
        ({"max_bad_fraction": -0.1}, ValueError),
        ({"compresslevel": 10}, ValueError),
        ({"workers": 0}, ValueError),
    ],
)
def test_bad_arguments_are_refused(options: dict[str, Any], error: type[Exception]) -> None:
    arguments: dict[str, Any] = {"export_day": DAY, **options}
    day = arguments.pop("export_day")
    with pytest.raises(error):
        transform_export(io.BytesIO(export([])), io.BytesIO(), io.BytesIO(), io.BytesIO(), day, **arguments)


def test_an_empty_export_gives_empty_gzip_files() -> None:
    result = run(make_zip([]))
    assert (result.stats.members, result.stats.lines, result.stats.events) == (0, 0, 0)
    assert result.events == result.properties == result.bad == []


# ------------------------------------------------------------------------------------------ property


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
KNOWN_KEYS = sorted({*full_event(), "insert_id", "export_day", "extra"})
EVENT_LIKE = st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=6), JSON_VALUES, max_size=12).map(
    orjson.dumps
)
TIMESTAMP_LIKE = st.builds(
    lambda d, frac: f"{d:%Y-%m-%d %H:%M:%S}{frac}",
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 1, 1)),
    st.sampled_from(["", ".1", ".123456", ".1234567", "Z"]),
)
TYPED_EVENT = st.fixed_dictionaries(
    {"uuid": st.text(max_size=4) | st.none()},
    optional={
        **dict.fromkeys(TIMESTAMP_FIELDS, TIMESTAMP_LIKE | JSON_SCALARS),
        **dict.fromkeys(INTEGER_FIELDS, st.integers(-(2**63), 2**64 - 1) | JSON_SCALARS),
        **dict.fromkeys(FLOAT_FIELDS, st.floats(allow_nan=False) | JSON_SCALARS),
        **dict.fromkeys(BOOLEAN_FIELDS, JSON_SCALARS),
        **dict.fromkeys(JSON_FIELDS, JSON_VALUES),
        "user_id": JSON_SCALARS,
        "$insert_id": JSON_SCALARS,
    },
).map(orjson.dumps)
LINE = st.binary(max_size=60) | EVENT_LIKE | TYPED_EVENT


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(LINE, max_size=8), read_size=st.sampled_from([5, 1 << 16]))
@example(lines=[b"\x1f\x8b", b"\x00", b"\r", b'{"uuid":"\\ud800"}', b'{"uuid":1}'], read_size=5)
def test_arbitrary_lines_never_crash_they_become_events_or_bad_lines(
    lines: list[bytes], read_size: int
) -> None:
    result = run_lines(lines, read_size=read_size)
    stats = result.stats
    assert stats.lines == (len(b"\n".join(lines).split(b"\n")) if lines else 0)
    assert stats.lines == stats.events + stats.bad_lines + stats.blank_lines
    assert [b["line_number"] for b in result.bad] == sorted({b["line_number"] for b in result.bad})


def test_loaded_timestamps_read_back_as_the_same_instants() -> None:
    moment = datetime(2020, 11, 24, 9, 59, 55, 977000, tzinfo=UTC)
    event = full_event(event_time=f"{moment:%Y-%m-%d %H:%M:%S.%f}")
    (row,) = run_lines([line(event)]).events
    assert instant(row["event_time"]) == moment
    assert instant(row["server_upload_time"]) - moment == timedelta(seconds=1, microseconds=23000)


# ---------------------------------------------------------------------------------- worker processes


def single_gzip_member(data: bytes) -> bytes:
    """The content of ``data``, which must be exactly one gzip member (what every loader reads)."""
    decompressor = zlib.decompressobj(31)
    content = decompressor.decompress(data)
    assert decompressor.eof
    assert decompressor.unused_data == b""
    return content


def test_stitched_chunks_make_one_valid_gzip_member() -> None:
    out = io.BytesIO()
    sink = gzip_streams.StitchedGzipSink(out)
    pieces = [b"first line\n" * 1000, b"", b"second \xe2\x9c\x89\n" * 77, bytes(range(256)) * 50]
    for piece in pieces:
        sink.write_chunk(gzip_streams.deflate_chunk(piece, 1), gzip_streams.crc32(piece), len(piece))
    sink.finish()
    assert single_gzip_member(out.getvalue()) == b"".join(pieces)
    assert sink.bytes_out == len(out.getvalue())
    empty = io.BytesIO()
    gzip_streams.StitchedGzipSink(empty).finish()
    assert single_gzip_member(empty.getvalue()) == b""


def big_export(members: int = 6, events: int = 300) -> bytes:
    lines = [
        [
            line(
                full_event(
                    uuid=f"{m}-{n}",
                    event_time="2020-11-23 23:00:00" if n % 10 == 0 else "2020-11-24 09:00:00",
                )
            )
            for n in range(events)
        ]
        for m in range(members)
    ]
    lines[2][7] = b"not json"
    return export(*lines)


def test_worker_processes_give_the_same_rows_and_stats_as_one_process(tmp_path: Any) -> None:
    path = tmp_path / "export.zip"
    path.write_bytes(big_export())
    one = run(path.read_bytes(), max_bad_fraction=0.01, workers=1)
    outs = io.BytesIO(), io.BytesIO(), io.BytesIO()
    progress: list[int] = []
    stats = transform_export(
        path,
        *outs,
        DAY,
        max_bad_fraction=0.01,
        workers=2,
        chunk_bytes=50_000,
        progress=lambda s: progress.append(s.members),
    )
    raw = tuple(out.getvalue() for out in outs)
    texts = [single_gzip_member(data) for data in raw]
    many = Result(stats, *([orjson.loads(r) for r in text.splitlines()] for text in texts), raw=raw)  # type: ignore[arg-type]
    check_result(many)
    key = json.dumps
    for mine, theirs in ((many.events, one.events), (many.properties, one.properties), (many.bad, one.bad)):
        assert sorted(map(key, mine)) == sorted(map(key, theirs))
    assert [m.name for m in stats.member_stats] == [m.name for m in one.stats.member_stats]
    assert stats.member_stats == one.stats.member_stats
    for field in (
        "members",
        "lines",
        "events",
        "property_rows",
        "bad_lines",
        "late_events",
        "bytes_in",
        "bytes_uncompressed",
    ):
        assert getattr(stats, field) == getattr(one.stats, field), field
    assert stats.events_by_upload_hour == one.stats.events_by_upload_hour
    assert stats.events_by_event_date == one.stats.events_by_event_date
    assert progress == [1, 2, 3, 4, 5, 6]
    assert multiprocessing.active_children() == []


def test_worker_processes_report_a_corrupt_member_and_stop(tmp_path: Any) -> None:
    good = gz([line(full_event(uuid=str(n))) for n in range(200)])
    path = tmp_path / "export.zip"
    path.write_bytes(make_zip([("a", good), ("b", good), ("broken", good[:-30]), ("c", good)]))
    with pytest.raises(CorruptExport, match="truncated") as caught:
        transform_export(path, io.BytesIO(), io.BytesIO(), io.BytesIO(), DAY, workers=2)
    assert caught.value.member == "broken"
    assert multiprocessing.active_children() == []


def test_worker_processes_and_too_many_bad_lines(tmp_path: Any) -> None:
    path = tmp_path / "export.zip"
    path.write_bytes(export([b"bad"] * 3, [line({"uuid": "u"})]))
    with pytest.raises(TooManyBadLines) as caught:
        transform_export(path, io.BytesIO(), io.BytesIO(), io.BytesIO(), DAY, workers=2)
    assert (caught.value.stats.bad_lines, caught.value.stats.events) == (3, 1)


def test_a_worker_reports_what_it_met() -> None:
    options = workers.Options("2020-11-24", 1, 1 << 16, 1 << 20, 1 << 20)
    tasks: queue.Queue[int | None] = queue.Queue()
    results: queue.Queue[tuple[Any, ...]] = queue.Queue()
    workers.worker("/nonexistent/export.zip", options, tasks, results)
    kind, reason = results.get_nowait()
    assert kind == "failed"
    assert "FileNotFoundError" in reason


def test_parallel_work_needs_a_path_and_small_exports_stay_in_process() -> None:
    with pytest.raises(ValueError, match="needs zip_file as a path"):
        transform_export(io.BytesIO(big_export()), io.BytesIO(), io.BytesIO(), io.BytesIO(), DAY, workers=2)
    with pytest.raises(ValueError, match="at least 1"):
        transform_export(io.BytesIO(big_export()), io.BytesIO(), io.BytesIO(), io.BytesIO(), DAY, workers=0)
    members = zipfile.ZipFile(io.BytesIO(big_export())).infolist()
    assert workers.worker_count(None, "export.zip", members) == 1  # under PARALLEL_MIN_BYTES
    assert workers.worker_count(None, io.BytesIO(), members) == 1
    assert workers.worker_count(64, "export.zip", members) == len(members)
    assert workers.worker_count(1, io.BytesIO(), members) == 1
