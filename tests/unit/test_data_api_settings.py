"""fetch_from_bigquery's settings: the key file deployed, inline keys locally, and what they read."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupiter_data.data_api.settings import DataApiSettings
from jupiter_data.settings import Settings, SettingsError
from tests.support import RecordingEnv

KEY_LINE = f"analysts:{'0' * 64}\n"


def data_api_env(tmp_path: Path, content: str | bytes = KEY_LINE, **extra: str) -> dict[str, str]:
    path = tmp_path / "keys"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return {"FETCH_API_KEYS_FILE": str(path), **extra}


def test_deployed_the_keys_come_from_the_mounted_file(tmp_path: Path) -> None:
    settings = DataApiSettings.from_env(data_api_env(tmp_path, JUPITER_ENV="production", K_SERVICE="f"))
    assert settings.api_keys_file == tmp_path / "keys"
    assert [name for name, _ in settings.api_keys.digests] == ["analysts"]
    assert "0" * 64 not in repr(settings)


@pytest.mark.parametrize(
    ("content", "expected"),
    [("", "no keys given"), ("analysts:xyz", "name:sha256hex"), (b"\xfe\xff", "not ASCII"),
     (KEY_LINE * 1_000, "over 65536 bytes")],
)  # fmt: skip
def test_an_unusable_key_file_stops_the_cold_start_naming_it(
    tmp_path: Path, content: str | bytes, expected: str
) -> None:
    with pytest.raises(SettingsError) as err:
        DataApiSettings.from_env(data_api_env(tmp_path, content))
    assert set(err.value.problems) == {"FETCH_API_KEYS_FILE"}
    assert expected in err.value.problems["FETCH_API_KEYS_FILE"]


@pytest.mark.parametrize(
    ("path", "expected"), [("relative/keys", "absolute path"), ("/nonexistent/keys", "cannot read")]
)
def test_a_key_file_path_must_be_absolute_and_readable(path: str, expected: str) -> None:
    with pytest.raises(SettingsError, match=expected):
        DataApiSettings.from_env({"FETCH_API_KEYS_FILE": path})


def test_inline_keys_are_for_local_use_only(tmp_path: Path) -> None:
    inline = {"FETCH_API_KEYS": KEY_LINE.strip()}
    assert DataApiSettings.from_env(inline).api_keys_file is None  # the local stack and tests
    for deployed in ({"JUPITER_ENV": "staging"}, {"K_SERVICE": "fetch-from-bigquery"}):
        with pytest.raises(SettingsError) as err:
            DataApiSettings.from_env({**inline, **deployed})
        assert "FETCH_API_KEYS" in err.value.problems
    with pytest.raises(SettingsError, match="not both"):
        DataApiSettings.from_env(data_api_env(tmp_path, **inline))
    with pytest.raises(SettingsError, match="FETCH_API_KEYS_FILE: is required"):
        DataApiSettings.from_env({})


def test_data_api_settings_read_what_they_declare_and_the_shared_environment_name() -> None:
    env = RecordingEnv({"FETCH_API_KEYS": KEY_LINE.strip()})
    DataApiSettings.from_env(env)
    extra = set(env.read) - set(DataApiSettings.names())
    assert extra == {"JUPITER_ENV", "K_SERVICE"}  # to refuse the local-only inline keys when deployed
    assert extra <= set(Settings.names())  # already declared (and set by Terraform) for every function
    assert set(DataApiSettings.names()) <= set(env.read)
