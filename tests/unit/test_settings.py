from __future__ import annotations

import pytest

from jupiter_data.settings import SETTING_NAMES, Settings, SettingsError, get_settings
from tests.support import RecordingEnv

VALID = {"GOOGLE_CLOUD_PROJECT": "jupiter-staging"}


def test_defaults_apply_when_only_the_project_is_set() -> None:
    settings = Settings.from_env(VALID)
    assert settings.project == "jupiter-staging"
    assert settings.environment == "local"
    assert settings.log_level == "INFO"
    assert not settings.uses_emulators


def test_missing_project_is_named() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({})
    assert err.value.problems == {"GOOGLE_CLOUD_PROJECT": "is required but not set"}
    assert "GOOGLE_CLOUD_PROJECT: is required but not set" in str(err.value)


def test_every_invalid_variable_is_reported_at_once() -> None:
    env = {
        "GOOGLE_CLOUD_PROJECT": "Not_A_Project",
        "JUPITER_ENV": "prod",
        "LOG_LEVEL": "loud",
        "PUBSUB_EMULATOR_HOST": "localhost",
    }
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert set(err.value.problems) == {
        "GOOGLE_CLOUD_PROJECT",
        "JUPITER_ENV",
        "LOG_LEVEL",
        "PUBSUB_EMULATOR_HOST",
    }
    assert "not one of local, staging, production" in err.value.problems["JUPITER_ENV"]


def test_log_level_is_case_insensitive_and_emulator_hosts_accept_a_scheme() -> None:
    settings = Settings.from_env(
        {**VALID, "LOG_LEVEL": "debug", "BIGQUERY_EMULATOR_HOST": "http://127.0.0.1:9050"}
    )
    assert settings.log_level == "DEBUG"
    assert settings.bigquery_emulator_host == "http://127.0.0.1:9050"
    assert settings.uses_emulators


def test_deployed_environments_refuse_emulator_hosts() -> None:
    with pytest.raises(SettingsError, match="production must not use emulator hosts"):
        Settings.from_env({**VALID, "JUPITER_ENV": "production", "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"})


def test_setting_names_lists_exactly_what_from_env_reads() -> None:
    env = RecordingEnv(dict(VALID))
    Settings.from_env(env)
    assert sorted(set(env.read)) == sorted(SETTING_NAMES)


def test_get_settings_reads_the_process_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "first-project")
    first = get_settings()
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "second-project")
    assert get_settings() is first
    assert first.project == "first-project"
