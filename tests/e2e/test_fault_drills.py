"""Fault drills on the whole local platform: a component fails while events flow, then recovers.

The SNS drills mix in 5 % poison messages. After each: every valid event is in ``ops.user_events``
exactly once, and every invalid one is in the dead-letter table with its reason, even if the fault hit
while it was being dead-lettered (``traffic.assert_exactly_once``). Push retries back off 1 s to 5 s here
(``conftest.py``), so each drill takes well under a minute beyond its outage.
"""

from __future__ import annotations

import time
import uuid
from datetime import date

from jupiter_data.adapters.clients import storage_client
from jupiter_data.local.stack import LocalStack
from jupiter_data.resources import load_resources
from tests.e2e.test_amplitude_daily_run import expected_events
from tests.e2e.traffic import SteadyTraffic, assert_exactly_once, count, query

SPAN = 60  # messages SNS accepts in each phase of a drill (before, during, after the fault)


def run_id(drill: str) -> str:
    return f"{drill}-{uuid.uuid4().hex[:8]}"


def test_loader_killed_mid_stream_and_restarted(platform: LocalStack) -> None:
    # Traffic flows before, during and after the outage by construction: each phase waits until
    # SNS accepted SPAN more messages (about 3 s at 20/s; longer on a loaded machine, never fewer).
    with SteadyTraffic(platform, run_id("loader-killed"), poison_every=20) as traffic:
        traffic.wait_for_more(SPAN)
        platform.supervisor.stop_service("pubsub_to_bigquery", kill=True)  # SIGKILL: no clean shutdown
        traffic.wait_for_more(SPAN)
        platform.supervisor.resume_service("pubsub_to_bigquery")
        traffic.wait_for_more(SPAN)
    assert_exactly_once(platform, traffic.run, traffic.valid, traffic.poison)


def test_bigquery_emulator_stopped_for_30_seconds(platform: LocalStack) -> None:
    with SteadyTraffic(platform, run_id("bigquery-down"), poison_every=20) as traffic:
        traffic.wait_for_more(SPAN)
        platform.supervisor.stop_service("bigquery")
        stopped_at = traffic.published
        time.sleep(30)  # the outage itself, not a synchronisation
        traffic.wait_for(stopped_at + SPAN)  # published while BigQuery was down
        platform.supervisor.resume_service("bigquery")
        traffic.wait_for_more(SPAN)
    assert_exactly_once(platform, traffic.run, traffic.valid, traffic.poison, timeout=180)


def test_pubsub_emulator_restarted(platform: LocalStack) -> None:
    # The emulator saves its state on SIGTERM and loads it on start; what the bridge could not publish
    # while it was down, SNS delivers again (5xx are retried 20 s apart).
    with SteadyTraffic(platform, run_id("pubsub-restarted"), poison_every=20) as traffic:
        traffic.wait_for_more(SPAN)
        platform.supervisor.stop_service("pubsub")  # SIGTERM: it saves its state
        traffic.wait_for_more(SPAN // 3)  # published while it was down
        platform.supervisor.resume_service("pubsub")
        traffic.wait_for_more(SPAN)
    assert (platform.state_dir / "pubsub" / "state.json").is_file(), "the restart went through a saved state"
    assert_exactly_once(platform, traffic.run, traffic.valid, traffic.poison, timeout=120)


def test_five_percent_poison_messages(platform: LocalStack) -> None:
    with SteadyTraffic(platform, run_id("poison"), poison_every=20) as traffic:
        traffic.wait_for(200)
    total = len(traffic.valid) + len(traffic.poison)
    assert total >= 200
    assert len(traffic.poison) == total // 20  # 5 %
    assert {*traffic.poison.values()} == {"invalid_json", "schema_violation", "invalid_shape"}
    assert_exactly_once(platform, traffic.run, traffic.valid, traffic.poison)


def test_amplitude_sync_killed_between_staging_and_loading_then_rerun(platform: LocalStack) -> None:
    day = date(2026, 8, 15)
    settings = platform.settings()
    staged = load_resources().bucket_name(settings.project, "amplitude-staged")
    gcs = storage_client(settings)

    def staged_files() -> dict[str, set[str]]:  # run id → files, from staged/<day>/<run id>/<window>/<file>
        runs: dict[str, set[str]] = {}
        for blob in gcs.list_blobs(staged, prefix=f"staged/{day}/"):
            _, _, run, _, name = blob.name.split("/")
            runs.setdefault(run, set()).add(name)
        return runs

    events_of_day = "SELECT COUNT(*) AS n FROM `amplitude.events` WHERE export_day = @day"
    # With BigQuery down the sync can download and stage but not load: the moment to kill it.
    platform.supervisor.stop_service("bigquery")
    try:
        platform.trigger_amplitude_sync({"day": day.isoformat(), "force": True})
        deadline = time.monotonic() + 180  # generous: a loaded machine is only slower
        while not any({"events.json.gz", "properties.json.gz"} <= files for files in staged_files().values()):
            assert time.monotonic() < deadline, "the sync staged no window within 180 s"
            time.sleep(0.2)
        platform.supervisor.stop_service("sync_amplitude", kill=True)  # staged, and cannot load
        killed = staged_files()  # what the killed run left, read once it can no longer change
    finally:
        platform.supervisor.resume_service("bigquery")
    assert count(platform, events_of_day, day=day) == 0, "the killed run loaded nothing"

    # The re-run: Pub/Sub redelivers the daily-runs message the killed instance never acknowledged.
    platform.supervisor.resume_service("sync_amplitude")
    deadline = time.monotonic() + 180
    while not (
        runs := query(platform, "SELECT status FROM `ops.sync_runs` WHERE export_day = @day", day=day)
    ):
        assert time.monotonic() < deadline, "the re-run recorded nothing within 180 s"
        time.sleep(0.5)
    assert [run["status"] for run in runs] == ["succeeded"]
    expected = expected_events(day)
    assert count(platform, events_of_day, day=day) == expected
    distinct = (
        "SELECT COUNT(DISTINCT CONCAT(IFNULL(insert_id, ''), '/', IFNULL(uuid, ''))) AS n "
        "FROM `amplitude.events` WHERE export_day = @day"
    )
    assert count(platform, distinct, day=day) == expected, "every event exactly once"
    after = staged_files()
    assert set(killed) < set(after), "the re-run staged under its own prefix"
    assert all(after[run] == files for run, files in killed.items()), (
        "the killed run's files stay as they were"
    )
