"""``fetch_from_bigquery``, the analysts' data API, by responsibility.

``parsing`` (request values, strictly), ``cursors`` (pages and their tokens), ``keys`` (who may call),
``catalogue`` (the only SQL text), ``rendering`` (problem details, JSON, CSV, NDJSON), ``settings``
(``DataApiSettings``) and ``routes`` (the ``DataApi`` use case and its ``bootstrap``). Parsing, cursors
and the catalogue do no I/O.
"""
