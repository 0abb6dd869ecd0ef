"""Amplitude export → BigQuery rows: the streaming, parallel transform of a whole export zip.

The rules and the row builder are pure and live in ``domain/amplitude.py`` and
``domain/amplitude_rows.py``; this package reads the zip, feeds them, compresses and parallelises.
It sits outside ``domain/`` because it opens zips, writes gzip and starts processes.

``transform_export`` reads an Export API zip (a path or a seekable binary file) and writes three gzip
NDJSON streams to file-like objects the caller owns (a temporary file, a GCS blob writer...):

* ``amplitude.events`` rows: one per event, every column of ``schemas/bigquery/amplitude.events.json``
  present (null when the export lacks the key), typed the way BigQuery's NDJSON load wants them;
* ``amplitude.events_properties`` rows: one per (event, property_type, key);
* dead letters: one per line that cannot become an event (fields: ``BAD_LINE_FIELDS``).

Streaming, bounded memory (``members.py``): members are read in archive order (their names are never
parsed) through a streaming gunzip in ``read_size`` pieces and split into lines; rows are compressed
and written every ``chunk_bytes``. Memory is flat in the size of the export: a few pieces and chunks
plus the longest line (a line over ``max_line_bytes`` is dead-lettered without being held whole).
Measured peak RSS: about 25 MB per process for 100k and for 500k events alike.

Speed (``workers.py``, ``gzip_streams.py``): members are shared out to worker processes (``workers``;
by default one per CPU for exports of at least ``PARALLEL_MIN_BYTES``), compressed with ISA-L.

Failures: an unreadable zip (truncated, not a zip) or member (corrupt or truncated gzip, CRC mismatch,
not gzip, encrypted) raises ``CorruptExport`` naming the member. The outputs are then left without
their gzip trailer, so they cannot pass for complete files, and must be discarded. On
``TooManyBadLines`` every member has been read and all three outputs are complete: the dead letters
are worth keeping for diagnosis, the table outputs must not be loaded.

In one process, rows keep archive order and one export always stages the same bytes; with several
workers, rows come in the order members finish: the same rows, in another order.
"""

from jupiter_data.amplitude_transform.stats import (
    AmplitudeTransformError,
    CorruptExport,
    MemberStats,
    TooManyBadLines,
    TransformStats,
)
from jupiter_data.amplitude_transform.transform import transform_export

__all__ = [
    "AmplitudeTransformError",
    "CorruptExport",
    "MemberStats",
    "TooManyBadLines",
    "TransformStats",
    "transform_export",
]
