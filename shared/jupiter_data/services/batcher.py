"""Coalesces the streaming inserts of concurrent invocations on one instance into one insert call.

The first invocation to submit rows for a table leads a batch: it waits up to ``max_wait`` seconds (or
until ``max_rows`` rows are waiting), then inserts everything the batch collected and tells each
follower how its own rows fared. Every caller returns only once its rows are committed, so a Pub/Sub
message is still acknowledged only after its rows are in BigQuery. No background thread: nothing to
start, stop or leak between invocations.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jupiter_data.ports import Warehouse

RowWithId = tuple[str, dict[str, Any]]


@dataclass
class _Submission:
    rows: Sequence[RowWithId]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass
class _Batch:
    submissions: list[_Submission] = field(default_factory=list)
    row_count: int = 0
    full: threading.Event = field(default_factory=threading.Event)


class InsertBatcher:
    def __init__(
        self,
        warehouse: Warehouse,
        max_rows: int,
        max_wait: float,
        wait: Callable[[threading.Event, float], bool] = threading.Event.wait,
    ) -> None:
        """``wait(full, max_wait)`` is how a leader waits for its batch to fill; tests replace it to
        expire the wait on cue instead of sleeping."""
        self._warehouse = warehouse
        self.max_rows = max_rows
        self.max_wait = max_wait
        self._wait = wait
        self._lock = threading.Lock()
        self._open: dict[str, _Batch] = {}
        self.insert_calls = 0  # for benchmarks: streaming insert requests actually made

    def insert(self, table: str, rows: Sequence[RowWithId]) -> None:
        """Insert ``rows`` (insert id, row) into ``table`` together with concurrent callers' rows."""
        if not rows:
            return
        submission = _Submission(rows)
        with self._lock:
            batch = self._open.get(table)
            leader = batch is None
            if batch is None:
                batch = self._open[table] = _Batch()
            batch.submissions.append(submission)
            batch.row_count += len(rows)
            if batch.row_count >= self.max_rows:
                del self._open[table]  # later callers start a new batch
                batch.full.set()
        if leader:
            if not batch.full.is_set():
                self._wait(batch.full, self.max_wait)
            with self._lock:
                if self._open.get(table) is batch:
                    del self._open[table]
            self._flush(table, batch.submissions)
        submission.done.wait()
        if submission.error is not None:
            raise submission.error

    def _flush(self, table: str, submissions: list[_Submission]) -> None:
        try:
            self._insert(table, [row for s in submissions for row in s.rows])
        except ValueError as exc:
            if len(submissions) == 1:
                submissions[0].error = exc
            else:
                # Some row was rejected: insert each caller's rows on their own, so one bad message
                # cannot hold back the others, and each caller hears about its own rows only.
                for submission in submissions:
                    try:
                        self._insert(table, submission.rows)
                    except Exception as own_exc:  # handed to its caller, who decides
                        submission.error = own_exc
        except BaseException as exc:
            # Transient (or unexpected, even an interrupt): every caller fails and its message is
            # redelivered, never acknowledged unstored; the view absorbs a partially applied insert.
            for submission in submissions:
                submission.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for submission in submissions:
                submission.done.set()

    def _insert(self, table: str, rows: Sequence[RowWithId]) -> None:
        with self._lock:
            self.insert_calls += 1
        self._warehouse.insert_rows(table, [row for _, row in rows], [row_id for row_id, _ in rows])
