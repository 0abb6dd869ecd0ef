from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import functions_framework
import pytest

from jupiter_data.local.stack import LocalStack, StackPorts
from jupiter_data.resources import load_functions
from jupiter_data.services.amplitude_sync import AmplitudeSettings
from jupiter_data.services.bridge import BridgeSettings
from jupiter_data.settings import ENVIRONMENTS, Settings, SettingsError, clear_settings_cache, load_settings
from tests.conftest import REPO_ROOT
from tests.support import RecordingEnv

FUNCTIONS = REPO_ROOT / "functions"

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
    assert sorted(set(env.read)) == sorted(Settings.names())


def test_load_settings_reads_the_process_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "first-project")
    first = load_settings(Settings)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "second-project")
    assert load_settings(Settings) is first
    assert first.project == "first-project"
    clear_settings_cache()  # a new instance reads it again
    assert load_settings(Settings).project == "second-project"


# ------------------------------------------------------------------------ fail closed on Cloud Run

CLOUD_RUN = {**VALID, "K_SERVICE": "fetch-from-bigquery"}  # Cloud Run sets K_SERVICE on every instance
BRIDGE = {"SNS_ALLOWED_TOPIC_ARNS": "arn:aws:sns:us-east-1:123456789012:user-events"}
AMPLITUDE = {"AMPLITUDE_API_KEY": "k", "AMPLITUDE_SECRET_KEY": "s"}


def test_on_cloud_run_a_missing_environment_name_is_a_startup_error_not_local() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**CLOUD_RUN, "LOG_LEVEL": "loud"})
    assert set(err.value.problems) == {"JUPITER_ENV", "LOG_LEVEL"}  # one error naming every bad variable
    assert "K_SERVICE" in err.value.problems["JUPITER_ENV"]
    with pytest.raises(SettingsError, match="JUPITER_ENV"):
        Settings.from_env({**CLOUD_RUN, "JUPITER_ENV": " "})


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_on_cloud_run_a_named_environment_starts(environment: str) -> None:
    assert Settings.from_env({**CLOUD_RUN, "JUPITER_ENV": environment}).environment == environment


def test_off_cloud_run_a_missing_environment_name_still_means_local() -> None:
    assert Settings.from_env(VALID).environment == "local"


def test_local_only_switches_are_refused_on_cloud_run_without_an_environment_name() -> None:
    """They used to read a missing JUPITER_ENV as local, so they were allowed on such an instance."""
    with pytest.raises(SettingsError) as err:
        BridgeSettings.from_env({**CLOUD_RUN, **BRIDGE, "SNS_CERT_BASE_URL": "http://127.0.0.1:5005"})
    assert set(err.value.problems) == {"JUPITER_ENV", "SNS_CERT_BASE_URL"}
    with pytest.raises(SettingsError) as err:
        AmplitudeSettings.from_env(
            {**CLOUD_RUN, **AMPLITUDE, "AMPLITUDE_API_BASE_URL": "http://127.0.0.1:8090"}
        )
    assert set(err.value.problems) == {"JUPITER_ENV", "AMPLITUDE_API_BASE_URL"}


@pytest.fixture
def cold_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """A Cloud Run instance's environment without JUPITER_ENV; what a cold start changes is put back."""
    for name in {*Settings.names(), *(n for f in load_functions() for n in f.settings_class().names())}:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "keys").write_text(KEY_LINE)
    for name, value in {
        **CLOUD_RUN,
        **BRIDGE,
        **AMPLITUDE,
        "FETCH_API_KEYS_FILE": str(tmp_path / "keys"),
        "THREADS": "8",  # the function module sets it on every function
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "path", list(sys.path))  # create_app appends the function's folder
    monkeypatch.delitem(sys.modules, "main", raising=False)  # ... and registers the module as 'main'
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield monkeypatch
    root.handlers, root.level = handlers, level
    clear_settings_cache()  # read by a successful cold start from this test's environment


@pytest.mark.parametrize("function", sorted(path.parent.name for path in FUNCTIONS.glob("*/main.py")))
def test_every_function_refuses_to_start_on_cloud_run_without_an_environment_name(
    cold_start: pytest.MonkeyPatch, function: str
) -> None:
    source = FUNCTIONS / function / "main.py"
    signature = "http" if "functions_framework.http" in source.read_text() else "cloudevent"
    with pytest.raises(SettingsError) as err:
        functions_framework.create_app(target=function, source=str(source), signature_type=signature)
    assert "JUPITER_ENV" in err.value.problems
    cold_start.setenv("JUPITER_ENV", "staging")  # the same instance with it set starts
    clear_settings_cache()
    cold_start.delitem(sys.modules, "main", raising=False)
    assert functions_framework.create_app(target=function, source=str(source), signature_type=signature)


def test_the_data_api_refuses_to_start_without_a_readable_key_file(
    cold_start: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cold_start.setenv("JUPITER_ENV", "production")
    cold_start.setenv("FETCH_API_KEYS_FILE", str(tmp_path / "absent"))
    source = FUNCTIONS / "fetch_from_bigquery" / "main.py"
    with pytest.raises(SettingsError) as err:
        functions_framework.create_app(target="fetch_from_bigquery", source=str(source))
    assert set(err.value.problems) == {"FETCH_API_KEYS_FILE"}


def test_the_local_stack_never_looks_like_cloud_run(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, StackPorts(), free_function_ports=True)
    assert stack.function_services()
    for service in stack.function_services():
        assert service.env["JUPITER_ENV"] == "local" and "K_SERVICE" not in service.env


KEY_LINE = f"analysts:{'0' * 64}\n"  # a valid key file for fetch_from_bigquery's cold start
