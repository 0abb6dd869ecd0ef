from __future__ import annotations

from datetime import timedelta

import pytest

from jupiter_data.resources import load_resources
from jupiter_data.services.loader import LoaderSettings
from jupiter_data.settings import SettingsError, load_settings
from tests.support import RecordingEnv

# functions-framework's THREADS: Terraform and the local stack set it to function.json's concurrency.
THREADS = {"THREADS": "16"}


def test_defaults_and_a_batch_of_threads_rows() -> None:
    settings = LoaderSettings.from_env(THREADS)
    assert settings == LoaderSettings(
        max_retry_age=timedelta(minutes=90),
        threads=16,
        batch_max_rows=None,
        batch_max_wait_ms=50,
        function_version="local",
    )
    # A batch fills from the requests one instance serves together: THREADS of them.
    assert settings.rows_per_batch == 16


def test_rows_per_batch_can_be_set_apart_from_threads() -> None:
    assert LoaderSettings.from_env({**THREADS, "LOADER_BATCH_MAX_ROWS": "500"}).rows_per_batch == 500
    assert LoaderSettings.from_env({"LOADER_BATCH_MAX_ROWS": "7"}).rows_per_batch == 7


def test_without_threads_or_a_batch_size_it_refuses_to_start() -> None:
    with pytest.raises(SettingsError) as err:
        LoaderSettings.from_env({})
    assert err.value.problems == {"LOADER_BATCH_MAX_ROWS": "is required when THREADS is not set"}


@pytest.mark.parametrize("raw", ["0", "1001", "four", "-1"])
def test_an_invalid_thread_count_is_named(raw: str) -> None:
    with pytest.raises(SettingsError) as err:
        LoaderSettings.from_env({"THREADS": raw})
    assert set(err.value.problems) == {"THREADS"}


def test_blank_values_fall_back_to_the_defaults() -> None:
    blank = {**dict.fromkeys(LoaderSettings.names(), "  "), **THREADS}
    assert LoaderSettings.from_env(blank) == LoaderSettings.from_env(THREADS)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("3600", timedelta(hours=1)),
        ("45s", timedelta(seconds=45)),
        ("90m", timedelta(minutes=90)),
        ("1h", timedelta(hours=1)),
        (" 97m ", timedelta(minutes=97)),
    ],
)
def test_max_retry_age_accepts_seconds_or_a_unit(raw: str, expected: timedelta) -> None:
    assert LoaderSettings.from_env({**THREADS, "LOADER_MAX_RETRY_AGE": raw}).max_retry_age == expected


def test_valid_overrides() -> None:
    settings = LoaderSettings.from_env(
        {
            "LOADER_MAX_RETRY_AGE": "1h",
            "LOADER_BATCH_MAX_ROWS": "10000",
            "LOADER_BATCH_MAX_WAIT_MS": "0",
            "K_REVISION": "pubsub-to-bigquery-00042-xyz",
        }
    )
    assert settings == LoaderSettings(
        max_retry_age=timedelta(hours=1),
        threads=None,
        batch_max_rows=10_000,
        batch_max_wait_ms=0,
        function_version="pubsub-to-bigquery-00042-xyz",
    )
    assert LoaderSettings.from_env({"LOADER_BATCH_MAX_ROWS": "1"}).batch_max_rows == 1
    assert LoaderSettings.from_env({**THREADS, "LOADER_BATCH_MAX_WAIT_MS": "1000"}).batch_max_wait_ms == 1000


@pytest.mark.parametrize(
    ("name", "raw", "why"),
    [
        ("LOADER_BATCH_MAX_ROWS", "0", "'0' is not a whole number from 1 to 10000"),
        ("LOADER_BATCH_MAX_ROWS", "abc", "'abc' is not a whole number from 1 to 10000"),
        ("LOADER_BATCH_MAX_ROWS", "-5", "'-5' is not a whole number"),
        ("LOADER_BATCH_MAX_ROWS", "10001", "'10001' is not a whole number from 1 to 10000"),
        ("LOADER_BATCH_MAX_ROWS", "1.5", "'1.5' is not a whole number"),
        ("LOADER_BATCH_MAX_WAIT_MS", "1001", "'1001' is not a whole number from 0 to 1000"),
        ("LOADER_BATCH_MAX_WAIT_MS", "50ms", "'50ms' is not a whole number"),
        ("LOADER_MAX_RETRY_AGE", "-1", "'-1' is not a positive duration"),
        ("LOADER_MAX_RETRY_AGE", "0", "'0' is not a positive duration"),
        ("LOADER_MAX_RETRY_AGE", "0h", "'0h' is not a positive duration"),
        ("LOADER_MAX_RETRY_AGE", "1d", "'1d' is not a positive duration"),
        ("LOADER_MAX_RETRY_AGE", "24 h", "'24 h' is not a positive duration"),
        ("LOADER_MAX_RETRY_AGE", "abc", "'abc' is not a positive duration"),
        ("LOADER_MAX_RETRY_AGE", "24h", "'24h' may never be reached: Pub/Sub may make its last delivery"),
        ("LOADER_MAX_RETRY_AGE", "98m", "'98m' may never be reached"),
    ],
)
def test_an_invalid_value_is_named(name: str, raw: str, why: str) -> None:
    with pytest.raises(SettingsError) as err:
        LoaderSettings.from_env({name: raw})
    assert set(err.value.problems) == {name}
    assert why in err.value.problems[name]
    assert f"{name}: {why}" in str(err.value)


def test_every_invalid_variable_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as err:
        LoaderSettings.from_env(
            {"LOADER_MAX_RETRY_AGE": "-1", "LOADER_BATCH_MAX_ROWS": "0", "LOADER_BATCH_MAX_WAIT_MS": "x"}
        )
    assert set(err.value.problems) == {
        "LOADER_MAX_RETRY_AGE",
        "LOADER_BATCH_MAX_ROWS",
        "LOADER_BATCH_MAX_WAIT_MS",
    }


def test_an_absurdly_long_retry_age_is_named_not_an_overflow() -> None:
    with pytest.raises(SettingsError) as err:
        LoaderSettings.from_env({"LOADER_MAX_RETRY_AGE": "100000000000000h"})
    assert set(err.value.problems) == {"LOADER_MAX_RETRY_AGE"}


@pytest.mark.parametrize("values", [THREADS, {"LOADER_BATCH_MAX_ROWS": "7", "K_REVISION": "rev-1"}])
def test_loader_setting_names_lists_exactly_what_from_env_reads(values: dict[str, str]) -> None:
    env = RecordingEnv(values)
    LoaderSettings.from_env(env)
    assert sorted(set(env.read)) == sorted(LoaderSettings.names())
    assert len(LoaderSettings.names()) == len(set(LoaderSettings.names()))


def test_load_settings_reads_the_loader_settings_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOADER_BATCH_MAX_ROWS", "42")
    first = load_settings(LoaderSettings)
    monkeypatch.setenv("LOADER_BATCH_MAX_ROWS", "43")
    assert load_settings(LoaderSettings) is first
    assert first.batch_max_rows == 42


# Pub/Sub's own bounds for a subscription (the API refuses anything else).
PUBSUB_MAX_DELIVERY_ATTEMPTS = range(5, 101)
PUBSUB_BACKOFF_SECONDS = range(0, 601)
PUBSUB_ACK_DEADLINE_SECONDS = range(10, 601)
PUBSUB_RETENTION = timedelta(days=7)  # the trigger subscriptions keep unacked messages for the default week
CLOCK_SKEW = timedelta(minutes=1)  # publish_time is Pub/Sub's clock, the age check the function's


def test_the_default_max_retry_age_is_reached_before_pubsub_gives_up_on_a_failing_message() -> None:
    """The loader records a message that keeps failing as ``too_old`` once its age (since publish_time)
    passes LOADER_MAX_RETRY_AGE; Pub/Sub moves it to the dead-letter topic, with no recorded reason,
    after max_delivery_attempts. The age must be reached first even on the fastest retry schedule.

    Pub/Sub documents only the bounds of its exponential backoff, not its growth, so be conservative:
    fastest, every attempt fails at once and every retry waits just minimum_backoff; slowest, every
    attempt runs to the ack deadline (the function's timeout) and waits maximum_backoff.
    """
    retry = load_resources().trigger_retry
    attempts = retry["max_delivery_attempts"]
    min_backoff = timedelta(seconds=retry["minimum_backoff_seconds"])
    max_backoff = timedelta(seconds=retry["maximum_backoff_seconds"])
    ack_deadline = timedelta(seconds=retry["ack_deadline_seconds"])
    assert attempts in PUBSUB_MAX_DELIVERY_ATTEMPTS
    assert retry["minimum_backoff_seconds"] in PUBSUB_BACKOFF_SECONDS
    assert retry["maximum_backoff_seconds"] in PUBSUB_BACKOFF_SECONDS
    assert retry["ack_deadline_seconds"] in PUBSUB_ACK_DEADLINE_SECONDS
    assert min_backoff <= max_backoff
    max_retry_age = LoaderSettings.from_env(THREADS).max_retry_age

    earliest_last_attempt = (attempts - 1) * min_backoff
    assert max_retry_age + CLOCK_SKEW < earliest_last_attempt, (
        f"LOADER_MAX_RETRY_AGE {max_retry_age} cannot be reached: attempt {attempts} may come "
        f"{earliest_last_attempt} after publishing"
    )

    # Slowest: the loader gives up at the first attempt after the age has passed...
    loader_gives_up_by = max_retry_age + ack_deadline + max_backoff + ack_deadline
    # ...and even a message the loader never gets to judge (every attempt times out) is forwarded to the
    # dead-letter topic before its subscription drops it.
    latest_last_attempt = attempts * ack_deadline + (attempts - 1) * max_backoff
    assert loader_gives_up_by < latest_last_attempt < PUBSUB_RETENTION
    # Long enough to ride out a BigQuery incident before anything is dead-lettered as too_old.
    assert max_retry_age >= timedelta(hours=1)
