"""Replay dead letters: re-validate each dead-lettered payload with today's rules, load those that now
pass and record them as replayed, so a second replay loads nothing twice. Event ids are the ones the
original delivery would have had, so even a replay that overlaps a late redelivery stays one row per
event in the view."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jupiter_data.domain import events
from jupiter_data.domain.events import InvalidMessage
from jupiter_data.ports import Clock, SystemClock, Warehouse
from jupiter_data.settings import Settings, load_settings

log = logging.getLogger(__name__)

# Table names are constants of the code, never input; every value is a query parameter.
PENDING_SQL = f"""
SELECT d.dead_letter_id, d.pubsub_message_id, d.publish_time, d.attributes, d.payload, d.error_type
FROM `{events.DEAD_LETTER_TABLE}` AS d
LEFT JOIN `{events.REPLAYS_TABLE}` AS r ON r.dead_letter_id = d.dead_letter_id
WHERE r.dead_letter_id IS NULL AND d.received_at >= @since
ORDER BY d.received_at, d.dead_letter_id
"""  # noqa: S608


@dataclass
class ReplaySummary:
    pending: int = 0
    loaded: int = 0
    rows: int = 0
    still_invalid: dict[str, int] = field(default_factory=dict)


class Replay:
    def __init__(self, warehouse: Warehouse, clock: Clock) -> None:
        self._warehouse, self._clock = warehouse, clock

    def run(
        self,
        since: datetime | None = None,
        dry_run: bool = False,
        progress: Callable[[ReplaySummary], None] | None = None,
    ) -> ReplaySummary:
        summary = ReplaySummary()
        seen: set[str] = set()
        since = since or datetime(1970, 1, 1, tzinfo=UTC)
        for row in self._warehouse.query(PENDING_SQL, {"since": since}):
            dead_letter_id = row["dead_letter_id"]
            if dead_letter_id in seen:  # the same message dead-lettered on two deliveries
                continue
            seen.add(dead_letter_id)
            summary.pending += 1
            message = events.message_from_dead_letter(row)
            try:
                rows = events.message_rows(message, self._clock.now())
            except InvalidMessage as invalid:
                counts = summary.still_invalid
                counts[invalid.error_type] = counts.get(invalid.error_type, 0) + 1
                continue
            if not dry_run:
                self._load(dead_letter_id, rows)
            summary.loaded += 1
            summary.rows += len(rows)
            if progress:
                progress(summary)
        return summary

    def _load(self, dead_letter_id: str, rows: list[tuple[str, dict[str, Any]]]) -> None:
        self._warehouse.insert_rows(events.EVENTS_TABLE, [r for _, r in rows], [i for i, _ in rows])
        marker = {
            "dead_letter_id": dead_letter_id,
            "replayed_at": self._clock.now().isoformat(),
            "rows_loaded": len(rows),
        }
        self._warehouse.insert_rows(events.REPLAYS_TABLE, [marker], [dead_letter_id])
        fields = {"dead_letter_id": dead_letter_id, "rows": len(rows)}
        log.info("replayed dead letter", extra={"fields": fields})


def bootstrap(
    settings: Settings | None = None, *, warehouse: Warehouse | None = None, clock: Clock | None = None
) -> Replay:
    """The replay on BigQuery unless given a warehouse (imported here, as the loader's)."""
    if warehouse is None:
        from jupiter_data.adapters.bigquery import BigQueryWarehouse
        from jupiter_data.adapters.clients import bigquery_client

        warehouse = BigQueryWarehouse(bigquery_client(settings or load_settings(Settings)))
    return Replay(warehouse, clock or SystemClock())
