"""InsertBatcher: concurrent callers share insert calls, and each hears only how its own rows fared.

Callers are real threads released together by a barrier. Nothing depends on timing: batches close by
``max_rows`` with a ``max_wait`` no test ever reaches (a batch that failed to close would hang its callers,
which ``JOIN_TIMEOUT`` turns into a failure), and ``max_wait`` expiring is played by an injected wait.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from jupiter_data.ports import Row, TransientError
from jupiter_data.services.batcher import InsertBatcher
from tests.fakes import FakeWarehouse

TABLE = "ops.all_user_events"
OTHER_TABLE = "ops.all_user_events_dead_letter"
JOIN_TIMEOUT = 10.0  # only a guard against a hang, never a measure of speed
NEVER = 3600.0  # a max_wait no test reaches: a batch must close by max_rows


def rejecting(*user_ids: str) -> FakeWarehouse:
    """A warehouse that refuses any call holding a row of these users, as BigQuery refuses bad rows."""
    return FakeWarehouse(reject=lambda row: row.get("user_id") in user_ids)


class GatedWarehouse(FakeWarehouse):
    """Holds its first insert until ``gate`` is set: an insert still in flight."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.first_call_started = threading.Event()

    def insert_rows(self, table: str, rows: Sequence[Row], row_ids: Sequence[str]) -> None:
        if not self.first_call_started.is_set():
            self.first_call_started.set()
            assert self.gate.wait(JOIN_TIMEOUT)
        super().insert_rows(table, rows, row_ids)


def rows_for(caller: int, count: int = 1, user_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"msg-{caller}:{i}", {"event_id": f"msg-{caller}:{i}", "user_id": user_id or f"user-{caller}"})
        for i in range(count)
    ]


@dataclass
class Result:
    returned: bool = False
    error: BaseException | None = None
    rows_present_on_return: bool | None = None


def run_callers(
    batcher: InsertBatcher,
    warehouse: FakeWarehouse,
    submissions: list[list[tuple[str, dict[str, Any]]]],
    table_of: Callable[[int], str] = lambda _: TABLE,
) -> list[Result]:
    """One thread per submission, all released at once; each checks its rows right after insert returns."""
    results = [Result() for _ in submissions]
    barrier = threading.Barrier(len(submissions))

    def call(index: int) -> None:
        barrier.wait()
        table = table_of(index)
        try:
            batcher.insert(table, submissions[index])
        except BaseException as exc:  # recorded for the test, including non-Exception failures
            results[index].error = exc
        else:
            results[index].returned = True
            present = Counter(warehouse.row_ids(table))
            results[index].rows_present_on_return = all(present[rid] >= 1 for rid, _ in submissions[index])

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(len(submissions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a caller never returned"
    return results


class ExpiringWait:
    """Stands in for ``Event.wait(max_wait)``: records each wait and plays it as expired at once."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []

    def __call__(self, full: threading.Event, timeout: float) -> bool:
        self.timeouts.append(timeout)
        return full.is_set()


def insert_in_thread(batcher: InsertBatcher, rows: list[tuple[str, dict[str, Any]]]) -> None:
    """``batcher.insert`` that fails the test instead of hanging it if the call never returns."""
    thread = threading.Thread(target=batcher.insert, args=(TABLE, rows), daemon=True)
    thread.start()
    thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive(), "the insert waited for a max_wait it should never reach"


def test_concurrent_callers_share_one_insert_call_and_every_row_lands_exactly_once() -> None:
    warehouse = FakeWarehouse()
    submissions = [rows_for(caller, count=2) for caller in range(50)]
    batcher = InsertBatcher(warehouse, max_rows=100, max_wait=NEVER)  # closes when all 50 are in

    results = run_callers(batcher, warehouse, submissions)

    assert all(r.returned and r.error is None for r in results)
    assert all(r.rows_present_on_return for r in results), "a caller returned before its rows were stored"
    expected = [rid for rows in submissions for rid, _ in rows]
    assert sorted(warehouse.row_ids(TABLE)) == sorted(expected)
    assert Counter(warehouse.row_ids(TABLE)).most_common(1)[0][1] == 1
    assert len(warehouse.calls) == 1
    assert batcher.insert_calls == 1


def test_rows_and_their_insert_ids_reach_the_warehouse_together() -> None:
    warehouse = FakeWarehouse()
    InsertBatcher(warehouse, max_rows=500, max_wait=0).insert(TABLE, rows_for(1, count=3))
    assert warehouse.tables[TABLE] == [(rid, row) for rid, row in rows_for(1, count=3)]
    assert all(rid == row["event_id"] for rid, row in warehouse.tables[TABLE])


def test_max_rows_closes_a_batch_and_later_callers_start_a_new_one() -> None:
    warehouse = FakeWarehouse()
    batcher = InsertBatcher(warehouse, max_rows=3, max_wait=NEVER)

    results = run_callers(batcher, warehouse, [rows_for(caller) for caller in range(9)])

    assert all(r.returned and r.rows_present_on_return for r in results)
    assert [len(ids) for _, ids in warehouse.calls] == [3, 3, 3]
    assert sorted(warehouse.row_ids(TABLE)) == sorted(f"msg-{c}:0" for c in range(9))


def test_one_caller_with_more_rows_than_max_rows_is_inserted_at_once_without_waiting() -> None:
    warehouse = FakeWarehouse()
    wait = ExpiringWait()
    batcher = InsertBatcher(warehouse, max_rows=5, max_wait=NEVER, wait=wait)
    insert_in_thread(batcher, rows_for(1, count=12))
    assert wait.timeouts == []
    assert [len(ids) for _, ids in warehouse.calls] == [12]


def test_a_lone_caller_waits_max_wait_once_and_then_inserts_its_rows() -> None:
    warehouse = FakeWarehouse()
    wait = ExpiringWait()
    batcher = InsertBatcher(warehouse, max_rows=500, max_wait=0.05, wait=wait)
    batcher.insert(TABLE, rows_for(1))
    assert wait.timeouts == [0.05]
    assert warehouse.row_ids(TABLE) == ["msg-1:0"]


def test_after_max_wait_expires_later_callers_start_a_new_batch() -> None:
    warehouse = FakeWarehouse()
    wait = ExpiringWait()
    batcher = InsertBatcher(warehouse, max_rows=500, max_wait=0.05, wait=wait)
    batcher.insert(TABLE, rows_for(1))
    batcher.insert(TABLE, rows_for(2))
    assert wait.timeouts == [0.05, 0.05]
    assert warehouse.calls == [(TABLE, ["msg-1:0"]), (TABLE, ["msg-2:0"])]


def test_empty_rows_make_no_call_and_do_not_wait() -> None:
    warehouse = FakeWarehouse()
    wait = ExpiringWait()
    batcher = InsertBatcher(warehouse, max_rows=500, max_wait=NEVER, wait=wait)
    insert_in_thread(batcher, [])
    assert wait.timeouts == []
    assert warehouse.calls == []
    assert batcher.insert_calls == 0


def test_tables_are_batched_separately() -> None:
    warehouse = FakeWarehouse()
    batcher = InsertBatcher(warehouse, max_rows=2, max_wait=NEVER)
    results = run_callers(
        batcher,
        warehouse,
        [rows_for(c) for c in range(4)],
        table_of=lambda i: TABLE if i % 2 == 0 else OTHER_TABLE,
    )
    assert all(r.returned and r.rows_present_on_return for r in results)
    assert sorted(warehouse.row_ids(TABLE)) == ["msg-0:0", "msg-2:0"]
    assert sorted(warehouse.row_ids(OTHER_TABLE)) == ["msg-1:0", "msg-3:0"]
    assert sorted(table for table, _ in warehouse.calls) == sorted([TABLE, OTHER_TABLE])


def test_a_slow_insert_does_not_hold_back_the_next_batch() -> None:
    gate = threading.Event()
    warehouse = GatedWarehouse(gate)
    batcher = InsertBatcher(warehouse, max_rows=500, max_wait=0.05, wait=ExpiringWait())
    first_done = threading.Event()

    def first() -> None:
        batcher.insert(TABLE, rows_for(1))
        first_done.set()

    thread = threading.Thread(target=first, daemon=True)
    thread.start()
    try:
        assert warehouse.first_call_started.wait(JOIN_TIMEOUT)
        batcher.insert(TABLE, rows_for(2))  # its own batch, while the first insert is still in flight
        assert warehouse.row_ids(TABLE) == ["msg-2:0"]
        assert not first_done.is_set()
    finally:
        gate.set()
        thread.join(JOIN_TIMEOUT)
    assert first_done.is_set()
    assert sorted(warehouse.row_ids(TABLE)) == ["msg-1:0", "msg-2:0"]


# --- failures -----------------------------------------------------------------------------------------


def test_a_transient_error_fails_every_caller_of_the_batch_and_the_batcher_recovers() -> None:
    warehouse = FakeWarehouse()
    warehouse.fail_next(TABLE, TransientError("503 backendError"))
    batcher = InsertBatcher(warehouse, max_rows=8, max_wait=NEVER)
    submissions = [rows_for(c) for c in range(8)]

    results = run_callers(batcher, warehouse, submissions)

    assert len(warehouse.calls) == 1
    assert all(isinstance(r.error, TransientError) and not r.returned for r in results)
    assert warehouse.row_ids(TABLE) == []

    # Pub/Sub redelivers every message: the retry goes through.
    again = run_callers(batcher, warehouse, submissions)
    assert all(r.returned and r.rows_present_on_return for r in again)
    assert sorted(warehouse.row_ids(TABLE)) == sorted(f"msg-{c}:0" for c in range(8))


def test_one_callers_rejected_row_fails_only_that_caller() -> None:
    warehouse = rejecting("poison")
    batcher = InsertBatcher(warehouse, max_rows=12, max_wait=NEVER)
    submissions = [rows_for(c, count=2, user_id="poison" if c == 3 else None) for c in range(6)]

    results = run_callers(batcher, warehouse, submissions)

    bad = results[3]
    assert isinstance(bad.error, ValueError) and "msg-3:0" in str(bad.error)
    good = [r for i, r in enumerate(results) if i != 3]
    assert all(r.returned and r.error is None and r.rows_present_on_return for r in good)
    expected = sorted(rid for c in range(6) if c != 3 for rid, _ in submissions[c])
    assert sorted(warehouse.row_ids(TABLE)) == expected  # each good row exactly once, no poison row
    # One batch insert, then each caller's rows on their own.
    assert len(warehouse.calls) == 1 + 6
    assert batcher.insert_calls == 7


def test_a_lone_callers_rejected_row_is_not_retried() -> None:
    warehouse = rejecting("poison")
    batcher = InsertBatcher(warehouse, max_rows=500, max_wait=0)
    with pytest.raises(ValueError, match="rejected"):
        batcher.insert(TABLE, rows_for(1, user_id="poison"))
    assert len(warehouse.calls) == 1
    assert warehouse.row_ids(TABLE) == []


def test_when_one_caller_is_rejected_a_transient_error_on_anothers_retry_reaches_that_caller() -> None:
    # Call 1 (the batch) is rejected because of caller 0; of the per-caller retries, the second fails.
    warehouse = rejecting("poison")
    warehouse.fail_next(TABLE, None, None, TransientError("timeout"), None)
    batcher = InsertBatcher(warehouse, max_rows=3, max_wait=NEVER)
    submissions = [rows_for(0, user_id="poison"), rows_for(1), rows_for(2)]

    results = run_callers(batcher, warehouse, submissions)

    assert len(warehouse.calls) == 4
    [unlucky_id] = warehouse.calls[2][1]  # the second per-caller retry is the one that timed out
    for caller, result in enumerate(results):
        if f"msg-{caller}:0" == unlucky_id:
            assert isinstance(result.error, TransientError)
        elif caller == 0:
            assert isinstance(result.error, ValueError)
        else:
            assert result.returned and result.rows_present_on_return
    assert sorted(warehouse.row_ids(TABLE)) == sorted({"msg-1:0", "msg-2:0"} - {unlucky_id})


@pytest.mark.parametrize("error", [TypeError("unexpected"), RuntimeError("boom"), KeyError("row")])
def test_an_unexpected_error_fails_every_caller_instead_of_silently_succeeding(error: Exception) -> None:
    warehouse = FakeWarehouse()
    warehouse.fail_next(TABLE, error)
    batcher = InsertBatcher(warehouse, max_rows=5, max_wait=NEVER)

    results = run_callers(batcher, warehouse, [rows_for(c) for c in range(5)])

    assert all(r.error is error and not r.returned for r in results)
    assert warehouse.row_ids(TABLE) == []


class Abort(BaseException):
    """Stands in for KeyboardInterrupt, SystemExit or a worker timeout raised inside the leader."""


def test_a_base_exception_in_the_leader_never_lets_followers_return_as_stored() -> None:
    warehouse = FakeWarehouse()
    warehouse.fail_next(TABLE, Abort())
    batcher = InsertBatcher(warehouse, max_rows=4, max_wait=NEVER)

    results = run_callers(batcher, warehouse, [rows_for(c) for c in range(4)])

    assert warehouse.row_ids(TABLE) == []
    assert [r for r in results if r.returned] == [], "a caller was told its unstored rows were stored"
