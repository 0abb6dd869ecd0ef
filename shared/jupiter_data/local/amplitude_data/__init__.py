"""Deterministic Amplitude Export API data, written as the real zip, one member at a time. Dev only.

The Export API answers ``GET /api/2/export?start=YYYYMMDDTHH&end=YYYYMMDDTHH`` (both hours inclusive,
selected by server upload time) with a zip whose members are
``<app>/<app>_<YYYY-MM-DD>_<H>#<n>.json.gz`` (hour not zero-padded, parts numbered from 0), each a
gzip of newline-delimited JSON, one event per line. This module produces that, streamed: an hour's
lines are generated lazily and gzipped straight into the zip, so a 500k-event export never sits in
memory.

Determinism: every hour draws from its own random generator seeded by ``(seed, app_id, hour)``, so an
hour's members are byte-identical whichever window they are exported in. Cheap plans (events,
malformed lines, late events and members per hour) are known without generating anything, which is
what :meth:`ExportSpec.expected` returns for reconciliation.

What the lines look like:

* every export field, with nulls and missing keys in any field except the five a good line always
  has (:data:`ALWAYS_PRESENT`); ``user_id`` null on about 10 % of lines (anonymous users);
* timestamps ``2020-11-24 09:59:55.977000`` and, on about 8 % of them, ``2020-11-24 09:59:55``;
* property bags nested 2-3 levels, with arrays, empty objects, nulls, non-Latin scripts, emoji,
  escapes, U+2028 inside strings (a ``str.splitlines`` trap), integers beyond 2**53; with
  ``property_bags=False`` every bag is null (events without property rows);
* late events: ``late_fraction`` (5 %) of an hour's events happened on the previous UTC day; every
  other event's ``event_time`` is on the upload day. ``server_upload_time`` is always inside the hour;
* optionally malformed lines at ``malformed_rate`` (per good event): text that is not JSON, cut-off
  JSON, invalid UTF-8, JSON that is not an object, and objects whose ``$insert_id``/``uuid`` are
  missing or null. They come in addition to the hour's events.

Where things are: :mod:`.spec` (:class:`ExportSpec`, what decides an export), :mod:`.plans` (counts
known in advance), :mod:`.events` (the generated lines), :mod:`.samples` (the values they draw from),
:mod:`.zip_writer` (the streamed zip), :mod:`.hours` (hour windows and member names). Write a zip from
the shell with ``python -m jupiter_data.local.amplitude_data`` (see :mod:`.__main__`).
"""

from jupiter_data.local.amplitude_data.hours import (
    HOUR,
    as_hour,
    format_export_hour,
    hours_between,
    parse_export_hour,
)
from jupiter_data.local.amplitude_data.plans import ExportStats
from jupiter_data.local.amplitude_data.samples import ALWAYS_PRESENT
from jupiter_data.local.amplitude_data.spec import ExportSpec

__all__ = [
    "ALWAYS_PRESENT",
    "HOUR",
    "ExportSpec",
    "ExportStats",
    "as_hour",
    "format_export_hour",
    "hours_between",
    "parse_export_hour",
]
