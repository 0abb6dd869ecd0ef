"""The row builder: one Amplitude export line → its ``amplitude.events`` row and its
``amplitude.events_properties`` rows, as NDJSON bytes, by the rules of ``domain/amplitude.py``. Pure.

It runs once per event, millions of times a day, so it works on bytes and plain dicts: one
``orjson.loads`` per line, one dict per event, one ``orjson.dumps`` per row and the property rows'
fixed parts cached per key.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Any

import orjson

from jupiter_data.domain.amplitude import (
    PROPERTY_TYPES,
    RAW_LINE_LIMIT,
    SAFE_INT,
    TIMESTAMP,
    BadLine,
    Check,
    events_plan,
    json_kind,
    to_int,
    to_timestamp,
)

_KEY_CACHE_SIZE = 100_000  # distinct property keys remembered per property_type (memory stays bounded)
_PROPERTY_TYPE_PARTS = {name: f',"property_type":"{name}","key":'.encode() for name in PROPERTY_TYPES}
_VALUE = b',"value":'
_TRUE, _FALSE, _NULL, _EMPTY_OBJECT = b'"true"', b'"false"', b"null", b'"{}"'
_END_STRING, _END_NUMBER, _END_BOOLEAN, _END_NULL, _END_ARRAY, _END_OBJECT = (
    f',"value_type":"{name}"}}\n'.encode()
    for name in ("string", "number", "boolean", "null", "array", "object")
)
_BAGS = operator.itemgetter(*PROPERTY_TYPES)
_timestamp_ok = TIMESTAMP.fullmatch
# Keys that have no column, or are named like a computed one, send the event the slow way (see event()).
_NOT_COPIED = ("insert_id", "export_day", "event_date", "resolved_user_id", "extra")

#: What ``RowBuilder.event`` returns: the events row, how many property rows it appended, the event's
#: ``event_date`` and ``server_upload_time`` (for the day's counts).
Event = tuple[bytes, int, str | None, str | None]


class RowBuilder:
    """Rows of one export day. Remembers the property rows' fixed parts by key (up to a bound)."""

    def __init__(self, export_day: str) -> None:
        self.export_day = export_day
        self.plan = events_plan()
        # per property_type: key -> the row bytes between the event's columns and the value
        self.key_parts: dict[str, dict[str, bytes]] = {name: {} for name in PROPERTY_TYPES}

    def event(self, line: bytes, property_lines: list[bytes]) -> Event:
        """The rows of one line: its events row is returned, its property rows appended to
        ``property_lines``. Raises ``BadLine`` saying why the line cannot be an event; the rows it
        appended before finding out are then the caller's to drop."""
        try:
            plan, dumps = self.plan, orjson.dumps
            event = orjson.loads(line)
            if type(event) is not dict:
                raise BadLine(f"not a JSON object but {json_kind(event)}")
            insert_id = event.get("$insert_id")
            uuid = event.get("uuid")
            if (insert_id is None or insert_id == "") and (uuid is None or uuid == ""):
                raise BadLine("no event id: $insert_id and uuid are both missing, null or empty")
            row = plan.template.copy()
            row.update(event)
            if len(row) != len(plan.template) + ("$insert_id" in event) or not event.keys().isdisjoint(
                _NOT_COPIED
            ):  # keys without a column (or named like a computed one) go to "extra"
                row = plan.template.copy()
                row["extra"] = {key: event.pop(key) for key in sorted(event.keys() - plan.known_keys)}
                row.update(event)
            row["insert_id"] = row.pop("$insert_id", None)
            for column in plan.timestamps:
                value = row[column]
                if value is not None and (type(value) is not str or _timestamp_ok(value) is None):
                    row[column] = to_timestamp(column, value)
            for column in plan.integers:
                value = row[column]
                if value is not None and (type(value) is not int or not -SAFE_INT <= value <= SAFE_INT):
                    row[column] = to_int(column, value)
            for check in plan.checks:
                if not check.allowed.issuperset(map(type, check.values(row))):
                    _convert(row, check)
            user_id = row["user_id"]
            if user_id is None or user_id == "":
                amplitude_id = row["amplitude_id"]
                row["resolved_user_id"] = None if amplitude_id is None else str(amplitude_id)
            else:
                row["resolved_user_id"] = user_id
            event_time = row["event_time"]
            event_date = row["event_date"] = None if event_time is None else event_time[:10]
            row["export_day"] = self.export_day
            event_line = dumps(row, option=orjson.OPT_APPEND_NEWLINE)
            rows = 0
            head = None
            for property_type, bag in zip(PROPERTY_TYPES, _BAGS(row), strict=True):
                if bag:
                    if head is None:  # the columns every property row of this event repeats
                        head = dumps(
                            {
                                "insert_id": row["insert_id"],
                                "uuid": row["uuid"],
                                "export_day": self.export_day,
                                "event_type": row["event_type"],
                                "event_time": event_time,
                            }
                        )[:-1]
                    rows += self.property_rows(head, property_type, bag, property_lines)
            return event_line, rows, event_date, row["server_upload_time"]
        except orjson.JSONDecodeError as error:
            raise BadLine(f"not valid JSON: {error}") from None
        except orjson.JSONEncodeError as error:
            raise BadLine(f"cannot be re-encoded as JSON: {error}") from None

    def property_rows(self, head: bytes, property_type: str, bag: dict[str, Any], parts: list[bytes]) -> int:
        """Append the rows of one non-empty bag to ``parts`` (4 pieces per row); returns how many.

        A row is ``head`` (the event's columns, without the closing brace), the cached
        ``,"property_type":..,"key":..,"value":`` piece, the value and the ``value_type`` ending: one
        ``orjson.dumps`` of a short value per row. Depth first, in key order, without recursion (depth
        is not limited by Python's recursion limit).
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
                    middle = self._key_part(property_type, prefix + key)
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

    def _key_part(self, property_type: str, key: str) -> bytes:
        """``,"property_type":"..","key":"..","value":`` for a key, remembered (up to a bound)."""
        key_parts = self.key_parts[property_type]
        if len(key_parts) >= _KEY_CACHE_SIZE:
            key_parts.clear()
        part = key_parts[key] = b"%s%s%s" % (_PROPERTY_TYPE_PARTS[property_type], orjson.dumps(key), _VALUE)
        return part


def _convert(row: dict[str, Any], check: Check) -> None:
    for column in check.columns:
        value = row[column]
        if type(value) not in check.allowed:
            row[column] = check.convert(column, value)


def bad_line_row(export_day: str, member: str, line_number: int, error: str, raw: bytes, size: int) -> bytes:
    """The dead-letter row of a line that cannot be an event (``BAD_LINE_FIELDS``), its start kept."""
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
