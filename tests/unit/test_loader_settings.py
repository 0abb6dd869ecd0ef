from __future__ import annotations

from datetime import timedelta

import pytest

from jupiter_data.settings import LOADER_SETTING_NAMES, LoaderSettings, SettingsError, get_loader_settings
from tests.support import RecordingEnv


def test_defaults() -> None:
    settings = LoaderSettings.from_env({})
    assert settings == LoaderSettings(
        max_retry_age=timedelta(hours=24), batch_max_rows=500, batch_max_wait_ms=50, function_version="local"
    )


def test_blank_values_fall_back_to_the_defaults() -> None:
    blank = dict.fromkeys(LOADER_SETTING_NAMES, "  ")
    assert LoaderSettings.from_env(blank) == LoaderSettings.from_env({})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("3600", timedelta(hours=1)),
        ("45s", timedelta(seconds=45)),
        ("90m", timedelta(minutes=90)),
        ("48h", timedelta(hours=48)),
        (" 2h ", timedelta(hours=2)),
    ],
)
def test_max_retry_age_accepts_seconds_or_a_unit(raw: str, expected: timedelta) -> None:
    assert LoaderSettings.from_env({"LOADER_MAX_RETRY_AGE": raw}).max_retry_age == expected


def test_valid_overrides() -> None:
    settings = LoaderSettings.from_env(
        {
            "LOADER_MAX_RETRY_AGE": "6h",
            "LOADER_BATCH_MAX_ROWS": "10000",
            "LOADER_BATCH_MAX_WAIT_MS": "0",
            "K_REVISION": "pubsub-to-bigquery-00042-xyz",
        }
    )
    assert settings == LoaderSettings(timedelta(hours=6), 10_000, 0, "pubsub-to-bigquery-00042-xyz")
    assert LoaderSettings.from_env({"LOADER_BATCH_MAX_ROWS": "1"}).batch_max_rows == 1
    assert LoaderSettings.from_env({"LOADER_BATCH_MAX_WAIT_MS": "1000"}).batch_max_wait_ms == 1000


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


@pytest.mark.parametrize("values", [{}, {"LOADER_BATCH_MAX_ROWS": "7", "K_REVISION": "rev-1"}])
def test_loader_setting_names_lists_exactly_what_from_env_reads(values: dict[str, str]) -> None:
    env = RecordingEnv(values)
    LoaderSettings.from_env(env)
    assert sorted(set(env.read)) == sorted(LOADER_SETTING_NAMES)
    assert len(LOADER_SETTING_NAMES) == len(set(LOADER_SETTING_NAMES))


def test_get_loader_settings_reads_the_process_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    get_loader_settings.cache_clear()
    try:
        monkeypatch.setenv("LOADER_BATCH_MAX_ROWS", "42")
        first = get_loader_settings()
        monkeypatch.setenv("LOADER_BATCH_MAX_ROWS", "43")
        assert get_loader_settings() is first
        assert first.batch_max_rows == 42
    finally:
        get_loader_settings.cache_clear()
