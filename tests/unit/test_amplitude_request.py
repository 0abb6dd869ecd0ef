from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from jupiter_data.domain.amplitude_request import days_between, days_requested, parse_request, yesterday
from jupiter_data.settings import AMPLITUDE_SETTING_NAMES, AmplitudeSettings, SettingsError
from tests.support import RecordingEnv

NOW = datetime(2026, 11, 23, 3, 0, 5, tzinfo=UTC)


def request(document: object) -> bytes:
    return json.dumps(document).encode()


def test_an_empty_message_means_yesterday_in_utc() -> None:
    assert parse_request(b"{}", NOW).days == [date(2026, 11, 22)]
    assert parse_request(b"", NOW).days == [date(2026, 11, 22)]
    # 01:00 on the 23rd in UTC+2 is still the 22nd in UTC: yesterday is the 21st.
    plus_two = datetime(2026, 11, 23, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert yesterday(plus_two) == date(2026, 11, 21)


def test_a_day_and_a_range_and_force() -> None:
    assert parse_request(request({"day": "2026-01-31"}), NOW).days == [date(2026, 1, 31)]
    backfill = parse_request(request({"start": "2026-02-27", "end": "2026-03-01", "force": True}), NOW)
    assert backfill.days == [date(2026, 2, 27), date(2026, 2, 28), date(2026, 3, 1)]
    assert backfill.force is True
    assert parse_request(request({"day": "2026-01-31", "force": "yes"}), NOW).force is False


@pytest.mark.parametrize(
    "document",
    [
        {"day": "2026-13-01"},
        {"day": "2026-01-01", "start": "2026-01-01"},
        {"start": "2026-01-02"},
        {"start": "2026-01-02", "end": "2026-01-01"},
        {"start": "2020-01-01", "end": "2026-01-01"},
        {"days": 3},
        ["2026-01-01"],
        {"day": 20260101},
    ],
)
def test_requests_that_can_never_be_served_are_refused(document: object) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        parse_request(request(document), NOW)
    assert days_requested(request(document), NOW) is None


def test_days_between_is_inclusive() -> None:
    assert days_between(date(2026, 1, 1), date(2026, 1, 1)) == [date(2026, 1, 1)]
    assert len(days_between(date(2025, 1, 1), date(2025, 12, 31))) == 365
    with pytest.raises(ValueError, match="before"):
        days_between(date(2026, 1, 2), date(2026, 1, 1))


KEYS = {"AMPLITUDE_API_KEY": "key", "AMPLITUDE_SECRET_KEY": "very-secret"}


def test_amplitude_settings_defaults_and_secret_stays_out_of_repr() -> None:
    settings = AmplitudeSettings.from_env(KEYS)
    assert settings.api_base_url == "https://amplitude.com"
    assert settings.max_bad_fraction == 0.001
    assert "very-secret" not in repr(settings)


def test_amplitude_settings_name_what_is_missing_or_wrong() -> None:
    with pytest.raises(SettingsError) as err:
        AmplitudeSettings.from_env({"AMPLITUDE_MAX_BAD_LINES": "5%"})
    assert set(err.value.problems) == {"AMPLITUDE_API_KEY", "AMPLITUDE_SECRET_KEY", "AMPLITUDE_MAX_BAD_LINES"}
    assert "very-secret" not in str(err.value)


def test_plain_http_base_urls_are_for_local_emulation_only() -> None:
    local = {**KEYS, "AMPLITUDE_API_BASE_URL": "http://127.0.0.1:8090/"}
    assert AmplitudeSettings.from_env(local).api_base_url == "http://127.0.0.1:8090"
    eu = {**KEYS, "JUPITER_ENV": "production", "AMPLITUDE_API_BASE_URL": "https://analytics.eu.amplitude.com"}
    assert AmplitudeSettings.from_env(eu).api_base_url == "https://analytics.eu.amplitude.com"
    with pytest.raises(SettingsError, match="AMPLITUDE_API_BASE_URL"):
        AmplitudeSettings.from_env({**local, "JUPITER_ENV": "production"})


def test_amplitude_setting_names_lists_exactly_what_from_env_reads() -> None:
    env = RecordingEnv(dict(KEYS))
    AmplitudeSettings.from_env(env)
    assert sorted(set(env.read)) == sorted(AMPLITUDE_SETTING_NAMES)
