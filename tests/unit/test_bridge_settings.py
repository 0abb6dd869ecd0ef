"""``BridgeSettings``: what ``sns_to_pubsub`` reads from the environment on top of ``Settings``."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jupiter_data.services.bridge import BridgeSettings
from jupiter_data.settings import Settings, SettingsError, load_settings
from tests.sns_signing import TOPIC_ARN
from tests.support import RecordingEnv

VALID = {"SNS_ALLOWED_TOPIC_ARNS": TOPIC_ARN}
OTHER_ARN = "arn:aws:sns:eu-west-1:210987654321:savings-events"


def _problems(environ: dict[str, str]) -> dict[str, str]:
    with pytest.raises(SettingsError) as err:
        BridgeSettings.from_env(environ)
    for name in err.value.problems:
        assert name in str(err.value)
    return err.value.problems


def test_defaults_apply_when_only_the_allow_list_is_set() -> None:
    settings = BridgeSettings.from_env(VALID)
    assert settings.allowed_topic_arns == frozenset({TOPIC_ARN})
    # SNS retries a delivery for up to an hour and event ids are stable, so a late retry is safe.
    assert settings.max_message_age == timedelta(hours=2)
    assert settings.events_topic == "sns-events"
    assert settings.cert_base_url is None


@pytest.mark.parametrize("value", [None, "", "   ", ",", " , ,"])
def test_the_allow_list_is_required(value: str | None) -> None:
    environ = {} if value is None else {"SNS_ALLOWED_TOPIC_ARNS": value}
    problems = _problems(environ)
    assert set(problems) == {"SNS_ALLOWED_TOPIC_ARNS"}


def test_a_missing_allow_list_says_it_is_required() -> None:
    assert _problems({}) == {"SNS_ALLOWED_TOPIC_ARNS": "is required but not set"}


def test_the_allow_list_is_a_comma_list_with_spaces_tolerated() -> None:
    raw = f" {TOPIC_ARN} ,{OTHER_ARN},  ,{TOPIC_ARN} "
    settings = BridgeSettings.from_env({"SNS_ALLOWED_TOPIC_ARNS": raw})
    assert settings.allowed_topic_arns == frozenset({TOPIC_ARN, OTHER_ARN})


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws-cn:sns:cn-north-1:123456789012:events",
        "arn:aws-us-gov:sns:us-gov-west-1:123456789012:events",
        "arn:aws:sns:us-east-1:123456789012:orders.fifo",
        "arn:aws:sns:us-east-1:123456789012:a_b-C9",
    ],
)
def test_other_partitions_and_fifo_topics_are_valid_arns(arn: str) -> None:
    assert BridgeSettings.from_env({"SNS_ALLOWED_TOPIC_ARNS": arn}).allowed_topic_arns == {arn}


@pytest.mark.parametrize(
    "bad",
    [
        "arn:aws:sqs:us-east-1:123456789012:queue",
        "arn:aws:sns:us-east-1:12345:short-account",
        "arn:aws:sns:us-east-1:123456789012:",
        "arn:aws:sns:us-east-1:123456789012:has space",
        "arn:aws:sns:us-east-1:123456789012:*",
        "user-events",
        "*",
    ],
)
def test_an_invalid_arn_is_named_and_the_valid_ones_are_not(bad: str) -> None:
    problems = _problems({"SNS_ALLOWED_TOPIC_ARNS": f"{TOPIC_ARN},{bad}"})
    assert set(problems) == {"SNS_ALLOWED_TOPIC_ARNS"}
    assert bad.strip() in problems["SNS_ALLOWED_TOPIC_ARNS"]
    assert TOPIC_ARN not in problems["SNS_ALLOWED_TOPIC_ARNS"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("90m", timedelta(minutes=90)),
        ("7200", timedelta(hours=2)),
        ("1h", timedelta(hours=1)),
        ("45s", timedelta(seconds=45)),
        (" 2h ", timedelta(hours=2)),
        ("", timedelta(hours=2)),  # blank counts as unset: the default
    ],
)
def test_max_message_age_forms(raw: str, expected: timedelta) -> None:
    settings = BridgeSettings.from_env({**VALID, "SNS_MAX_MESSAGE_AGE": raw})
    assert settings.max_message_age == expected


@pytest.mark.parametrize("raw", ["0", "0h", "abc", "-5", "1.5h", "1d", "h", "10 m", "1h30m"])
def test_invalid_max_message_ages_are_named(raw: str) -> None:
    problems = _problems({**VALID, "SNS_MAX_MESSAGE_AGE": raw})
    assert set(problems) == {"SNS_MAX_MESSAGE_AGE"}
    assert repr(raw) in problems["SNS_MAX_MESSAGE_AGE"]


def test_the_events_topic_can_be_renamed() -> None:
    assert BridgeSettings.from_env({**VALID, "SNS_EVENTS_TOPIC": "ops-events"}).events_topic == "ops-events"


@pytest.mark.parametrize("raw", ["1events", "ab", "goog-x y", "projects/p/topics/t"])
def test_an_invalid_events_topic_is_named(raw: str) -> None:
    assert set(_problems({**VALID, "SNS_EVENTS_TOPIC": raw})) == {"SNS_EVENTS_TOPIC"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://127.0.0.1:5005", "http://127.0.0.1:5005"),
        ("http://localhost:5005/", "http://localhost:5005"),
    ],
)
@pytest.mark.parametrize("environment", [None, "local"])
def test_a_loopback_certificate_base_url_is_allowed_locally(
    raw: str, expected: str, environment: str | None
) -> None:
    environ = {**VALID, "SNS_CERT_BASE_URL": raw}
    if environment is not None:
        environ["JUPITER_ENV"] = environment
    assert BridgeSettings.from_env(environ).cert_base_url == expected


@pytest.mark.parametrize(
    "raw",
    [
        "https://127.0.0.1:5005",
        "http://10.0.0.5:5005",
        "http://localhost",
        "http://localhost:5005/certs",
        "http://sns.us-east-1.amazonaws.com:443",
        "http://127.0.0.1:5005@evil.com:80",
        "http://localhost.evil.com:5005",
        "127.0.0.1:5005",
    ],
)
def test_a_certificate_base_url_that_is_not_loopback_is_named(raw: str) -> None:
    problems = _problems({**VALID, "SNS_CERT_BASE_URL": raw})
    assert set(problems) == {"SNS_CERT_BASE_URL"}
    assert "127.0.0.1:PORT" in problems["SNS_CERT_BASE_URL"]


@pytest.mark.parametrize("environment", ["staging", "production"])
@pytest.mark.parametrize("raw", ["http://127.0.0.1:5005", "http://localhost:5005"])
def test_deployed_settings_cannot_carry_a_certificate_base_url(environment: str, raw: str) -> None:
    problems = _problems({**VALID, "JUPITER_ENV": environment, "SNS_CERT_BASE_URL": raw})
    assert set(problems) == {"SNS_CERT_BASE_URL"}
    assert problems["SNS_CERT_BASE_URL"] == "is for local use only: refused unless JUPITER_ENV=local"


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_deployed_settings_without_a_certificate_base_url_are_fine(environment: str) -> None:
    settings = BridgeSettings.from_env({**VALID, "JUPITER_ENV": environment, "SNS_CERT_BASE_URL": " "})
    assert settings.cert_base_url is None


def test_every_invalid_variable_is_reported_at_once() -> None:
    problems = _problems(
        {
            "SNS_ALLOWED_TOPIC_ARNS": "nope",
            "SNS_MAX_MESSAGE_AGE": "soon",
            "SNS_EVENTS_TOPIC": "x",
            "SNS_CERT_BASE_URL": "http://evil.com:80",
        }
    )
    assert set(problems) == set(BridgeSettings.names())


def test_bridge_setting_names_lists_exactly_what_from_env_reads() -> None:
    env = RecordingEnv(dict(VALID))
    BridgeSettings.from_env(env)
    assert sorted(set(env.read)) == sorted(BridgeSettings.names())


def test_with_a_certificate_base_url_it_also_reads_the_shared_environment_name() -> None:
    env = RecordingEnv({**VALID, "SNS_CERT_BASE_URL": "http://127.0.0.1:5005", "JUPITER_ENV": "local"})
    BridgeSettings.from_env(env)
    extra = set(env.read) - set(BridgeSettings.names())
    assert extra == {"JUPITER_ENV"}
    assert extra <= set(Settings.names())  # already declared (and set by Terraform) for every function


def test_bridge_setting_names_do_not_overlap_the_shared_ones() -> None:
    assert not set(BridgeSettings.names()) & set(Settings.names())
    assert len(set(BridgeSettings.names())) == len(BridgeSettings.names())


def test_load_settings_reads_the_bridge_settings_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNS_ALLOWED_TOPIC_ARNS", TOPIC_ARN)
    monkeypatch.delenv("SNS_MAX_MESSAGE_AGE", raising=False)
    first = load_settings(BridgeSettings)
    monkeypatch.setenv("SNS_ALLOWED_TOPIC_ARNS", OTHER_ARN)
    assert load_settings(BridgeSettings) is first
    assert first.allowed_topic_arns == {TOPIC_ARN}


def test_load_settings_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SNS_ALLOWED_TOPIC_ARNS", raising=False)
    with pytest.raises(SettingsError, match="SNS_ALLOWED_TOPIC_ARNS: is required but not set"):
        load_settings(BridgeSettings)
