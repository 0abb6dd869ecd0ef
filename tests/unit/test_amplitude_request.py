from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from jupiter_data.domain.amplitude_request import (
    DayNotComplete,
    days_between,
    days_requested,
    latest_complete_day,
    parse_request,
    refuse_incomplete,
    yesterday,
)
from jupiter_data.services.amplitude_sync import AmplitudeSettings
from jupiter_data.settings import SettingsError
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


def test_a_hostile_request_is_refused_with_a_short_log_line(caplog: pytest.LogCaptureFixture) -> None:
    for data in (b"[" * 200_000, json.dumps({"day": "x" * 100_000}).encode()):
        with caplog.at_level(logging.ERROR):
            assert days_requested(data, NOW) is None
    assert [len(r.getMessage()) < 300 for r in caplog.records] == [True, True]


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
    assert sorted(set(env.read)) == sorted(AmplitudeSettings.names())


# ------------------------------------------------------------------------- days that are not over yet


@pytest.mark.parametrize(
    ("now", "latest"),
    [
        (datetime(2026, 11, 23, 2, 0, tzinfo=UTC), date(2026, 11, 22)),  # complete at 02:00 the next day
        (datetime(2026, 11, 23, 1, 59, 59, 999999, tzinfo=UTC), date(2026, 11, 21)),
        (datetime(2026, 11, 23, 3, 0, tzinfo=UTC), date(2026, 11, 22)),  # the scheduled run
        (datetime(2026, 11, 23, 0, 30, tzinfo=UTC), date(2026, 11, 21)),
        (datetime(2026, 11, 23, 23, 59, tzinfo=UTC), date(2026, 11, 22)),
        (datetime(2026, 3, 1, 1, 0, tzinfo=UTC), date(2026, 2, 27)),
        # 03:30 in UTC+2 is 01:30 UTC: the 22nd is not complete yet.
        (datetime(2026, 11, 23, 3, 30, tzinfo=timezone(timedelta(hours=2))), date(2026, 11, 21)),
    ],
)
def test_the_latest_complete_day_is_the_day_before_the_last_0200_utc(now: datetime, latest: date) -> None:
    assert latest_complete_day(now) == latest
    refuse_incomplete([latest], now)  # no error
    with pytest.raises(DayNotComplete):
        refuse_incomplete([latest + timedelta(days=1)], now)


@pytest.mark.parametrize(
    ("document", "now", "refused"),
    [
        ({}, datetime(2026, 11, 23, 1, 59, tzinfo=UTC), "2026-11-22"),  # yesterday before 02:00
        ({"day": "2026-11-23"}, NOW, "2026-11-23"),  # today
        ({"day": "2026-11-23", "force": True}, NOW, "2026-11-23"),  # force does not override it
        ({"day": "2027-01-01"}, NOW, "2027-01-01"),  # a future day
        ({"day": "9999-12-31"}, NOW, "9999-12-31"),  # the last date there is: no overflow
        ({"start": "2026-11-20", "end": "2026-11-25"}, NOW, "2026-11-23..2026-11-25 (3 days)"),
    ],
)
def test_a_request_reaching_a_day_that_is_not_complete_is_refused_whole(
    document: dict[str, object], now: datetime, refused: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(DayNotComplete) as error:
        parse_request(request(document), now)
    message = str(error.value)
    assert message.startswith(f"{refused} not complete yet")
    assert "02:00 UTC" in message and f"latest complete day is {latest_complete_day(now)}" in message

    caplog.clear()
    assert days_requested(request(document), now) is None, "acknowledged: no day of it is synced"
    (record,) = caplog.records
    assert (record.levelname, record.getMessage()) == ("ERROR", "Amplitude sync failed"), "the alert sees it"
    assert record.fields == {"error": message, "reason": "day not complete"}  # type: ignore[attr-defined]


def test_yesterday_is_served_from_0200_utc() -> None:
    at_two = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    assert parse_request(b"{}", at_two).days == [date(2026, 11, 22)]
    assert parse_request(request({"start": "2026-11-01", "end": "2026-11-22"}), at_two).days[-1] == date(
        2026, 11, 22
    )
