"""The one place that reads the environment.

Settings are read once per process (``get_settings``) at cold start. A missing or invalid variable
fails fast with a ``SettingsError`` that names every offending variable at once, so a bad deploy is
diagnosed from one log line instead of a chain of redeploys.

``SETTING_NAMES`` lists every variable the code reads; Terraform must set exactly these (minus the
emulator hosts, which only exist locally) and a test holds the two together.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from jupiter_data.domain.data_api import ApiKeys
from jupiter_data.resources import load_resources

T = TypeVar("T")

ENVIRONMENTS = ("local", "staging", "production")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# GCP project ids: 6-30 chars, lowercase letters, digits, hyphens; start with a letter.
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_HOST_PORT = re.compile(r"^(?:https?://)?[A-Za-z0-9.\-]+:\d{1,5}$")


class SettingsError(ValueError):
    """One or more environment variables are missing or invalid."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        details = "; ".join(f"{name}: {why}" for name, why in sorted(self.problems.items()))
        super().__init__(f"invalid settings: {details}")


@dataclass(frozen=True)
class Settings:
    project: str
    environment: str
    log_level: str
    pubsub_emulator_host: str | None
    storage_emulator_host: str | None
    bigquery_emulator_host: str | None
    bigquery_storage_emulator_host: str | None = None  # the emulator's gRPC port (Storage Read API)

    @property
    def uses_emulators(self) -> bool:
        return any(
            (
                self.pubsub_emulator_host,
                self.storage_emulator_host,
                self.bigquery_emulator_host,
                self.bigquery_storage_emulator_host,
            )
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        reader = _Reader(os.environ if environ is None else environ)
        settings = cls(
            project=reader.get("GOOGLE_CLOUD_PROJECT", _project_id),
            environment=reader.environment(),
            log_level=reader.get("LOG_LEVEL", _one_of(LOG_LEVELS, upper=True), default="INFO"),
            pubsub_emulator_host=reader.optional("PUBSUB_EMULATOR_HOST", _host_port),
            storage_emulator_host=reader.optional("STORAGE_EMULATOR_HOST", _host_port),
            bigquery_emulator_host=reader.optional("BIGQUERY_EMULATOR_HOST", _host_port),
            bigquery_storage_emulator_host=reader.optional("BIGQUERY_STORAGE_EMULATOR_HOST", _host_port),
        )
        reader.raise_if_invalid()
        if settings.environment != "local" and settings.uses_emulators:
            raise SettingsError({"JUPITER_ENV": f"{settings.environment} must not use emulator hosts"})
        return settings


@dataclass(frozen=True)
class BridgeSettings:
    """What ``sns_to_pubsub`` reads on top of ``Settings``."""

    allowed_topic_arns: frozenset[str]
    max_message_age: timedelta
    events_topic: str
    # Local emulation only: fetch SNS certificates (and confirm subscriptions) from this base URL
    # instead of the SNS host the message names. Refused outside JUPITER_ENV=local.
    cert_base_url: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BridgeSettings:
        environ = os.environ if environ is None else environ
        reader = _Reader(environ)
        settings = cls(
            allowed_topic_arns=reader.get("SNS_ALLOWED_TOPIC_ARNS", _topic_arns),
            # SNS retries for up to an hour and event ids are stable: a late retry is safe to accept.
            max_message_age=reader.get("SNS_MAX_MESSAGE_AGE", _duration, default="2h"),
            events_topic=reader.get("SNS_EVENTS_TOPIC", _topic_name, default="sns-events"),
            cert_base_url=reader.optional("SNS_CERT_BASE_URL", _loopback_url),
        )
        if settings.cert_base_url and reader.environment() != "local":
            reader.problems["SNS_CERT_BASE_URL"] = (
                "is for local emulation only: refused unless JUPITER_ENV=local"
            )
        reader.raise_if_invalid()
        return settings


@dataclass(frozen=True)
class LoaderSettings:
    """What ``pubsub_to_bigquery`` reads on top of ``Settings``."""

    max_retry_age: timedelta
    batch_max_rows: int
    batch_max_wait_ms: int
    function_version: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LoaderSettings:
        reader = _Reader(os.environ if environ is None else environ)
        settings = cls(
            # Past it a failing message is dead-lettered as too_old, with its reason; it must come before
            # Pub/Sub's last delivery attempt (_reachable_retry_age), after which Pub/Sub forwards the
            # message to the dead-letter topic without one.
            max_retry_age=reader.get("LOADER_MAX_RETRY_AGE", _reachable_retry_age, default="90m"),
            batch_max_rows=reader.get("LOADER_BATCH_MAX_ROWS", _int_between(1, 10_000), default="500"),
            batch_max_wait_ms=reader.get("LOADER_BATCH_MAX_WAIT_MS", _int_between(0, 1_000), default="50"),
            # Cloud Run (under Cloud Functions 2nd gen) sets K_REVISION itself; Terraform does not.
            function_version=reader.get("K_REVISION", str, default="local"),
        )
        reader.raise_if_invalid()
        return settings


@dataclass(frozen=True)
class AmplitudeSettings:
    """What ``sync_amplitude`` reads on top of ``Settings``. The keys come from Secret Manager."""

    api_base_url: str
    api_key: str = field(repr=False)
    secret_key: str = field(repr=False)  # never in repr, logs or argv
    max_bad_fraction: float
    # A window whose zip grows past this is fetched again as two halves, so /tmp (memory on Cloud
    # Functions) holds at most about 3.5x this at a time (the zip and its staged outputs).
    max_window_bytes: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AmplitudeSettings:
        environ = os.environ if environ is None else environ
        reader = _Reader(environ)
        local = reader.environment() == "local"
        settings = cls(
            api_base_url=reader.get(
                "AMPLITUDE_API_BASE_URL", _base_url(allow_http=local), default="https://amplitude.com"
            ),
            api_key=reader.get("AMPLITUDE_API_KEY", str),
            secret_key=reader.get("AMPLITUDE_SECRET_KEY", str),
            max_bad_fraction=reader.get("AMPLITUDE_MAX_BAD_LINES", _fraction, default="0.001"),
            max_window_bytes=reader.get(
                "AMPLITUDE_MAX_WINDOW_BYTES", _int_between(1 << 20, 4 << 30), default=str(256 << 20)
            ),
        )
        reader.raise_if_invalid()
        return settings


@dataclass(frozen=True)
class DataApiSettings:
    """What ``fetch_from_bigquery`` reads on top of ``Settings``.

    Deployed, the key digests are a Secret Manager secret that Cloud Run mounts as a file at its latest
    version (``FETCH_API_KEYS_FILE``), re-read while the function runs so that a key can be revoked
    without a redeploy; ``FETCH_API_KEYS``, the list inline, is for the local stack and tests only.
    """

    api_keys: ApiKeys = field(repr=False)  # as read at cold start
    api_keys_file: Path | None
    max_range_days: int
    max_bytes_billed: int
    query_timeout: timedelta

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DataApiSettings:
        reader = _Reader(os.environ if environ is None else environ)
        key_file = reader.optional("FETCH_API_KEYS_FILE", _key_file)
        inline_keys = reader.optional("FETCH_API_KEYS", ApiKeys.parse)
        if key_file and inline_keys:
            reader.problems["FETCH_API_KEYS"] = "set FETCH_API_KEYS_FILE or FETCH_API_KEYS, not both"
        elif inline_keys and reader.environment() != "local":
            reader.problems["FETCH_API_KEYS"] = (
                "is for local use only: deployed, keys come from FETCH_API_KEYS_FILE, so that they can "
                "be revoked without a redeploy"
            )
        elif not (key_file or inline_keys or reader.problems):
            reader.problems["FETCH_API_KEYS_FILE"] = "is required (or FETCH_API_KEYS, locally)"
        path, file_keys = key_file or (None, None)
        settings = cls(
            api_keys=file_keys or inline_keys or ApiKeys(),
            api_keys_file=path,
            max_range_days=reader.get("FETCH_MAX_RANGE_DAYS", _int_between(1, 3660), default="92"),
            max_bytes_billed=reader.get(
                "FETCH_MAX_BYTES_BILLED", _int_between(10 << 20, 10 << 40), default=str(10 << 30)
            ),
            query_timeout=reader.get("FETCH_QUERY_TIMEOUT", _duration, default="30s"),
        )
        reader.raise_if_invalid()
        return settings


# Every variable each function reads, for docs, Terraform checks and the local stack.
SETTING_NAMES = (
    "GOOGLE_CLOUD_PROJECT",
    "JUPITER_ENV",
    "LOG_LEVEL",
    "PUBSUB_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
    "BIGQUERY_STORAGE_EMULATOR_HOST",
    "K_SERVICE",  # set by Cloud Run itself, not by Terraform: JUPITER_ENV is then required
)
LOADER_SETTING_NAMES = (
    "LOADER_MAX_RETRY_AGE",
    "LOADER_BATCH_MAX_ROWS",
    "LOADER_BATCH_MAX_WAIT_MS",
    "K_REVISION",
)
AMPLITUDE_SETTING_NAMES = (
    "AMPLITUDE_API_BASE_URL",
    "AMPLITUDE_API_KEY",
    "AMPLITUDE_SECRET_KEY",
    "AMPLITUDE_MAX_BAD_LINES",
    "AMPLITUDE_MAX_WINDOW_BYTES",
    "JUPITER_ENV",
    "K_SERVICE",
)
DATA_API_SETTING_NAMES = (
    "FETCH_API_KEYS_FILE",
    "FETCH_API_KEYS",
    "JUPITER_ENV",
    "K_SERVICE",
    "FETCH_MAX_RANGE_DAYS",
    "FETCH_MAX_BYTES_BILLED",
    "FETCH_QUERY_TIMEOUT",
)
BRIDGE_SETTING_NAMES = (
    "SNS_ALLOWED_TOPIC_ARNS",
    "SNS_MAX_MESSAGE_AGE",
    "SNS_EVENTS_TOPIC",
    "SNS_CERT_BASE_URL",
)


@functools.cache
def get_settings() -> Settings:
    """Settings of this process, read on first use and then cached for the life of the instance."""
    return Settings.from_env()


@functools.cache
def get_bridge_settings() -> BridgeSettings:
    return BridgeSettings.from_env()


@functools.cache
def get_loader_settings() -> LoaderSettings:
    return LoaderSettings.from_env()


@functools.cache
def get_amplitude_settings() -> AmplitudeSettings:
    return AmplitudeSettings.from_env()


@functools.cache
def get_data_api_settings() -> DataApiSettings:
    return DataApiSettings.from_env()


class _Reader:
    """Collects every problem before failing, so one error names all bad variables."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.problems: dict[str, str] = {}

    def get(self, name: str, parse: Callable[[str], T], default: str | None = None) -> T:
        raw = self._environ.get(name, "").strip() or default
        if raw is None:
            self.problems[name] = "is required but not set"
            return None  # type: ignore[return-value]  # never returned: raise_if_invalid() raises
        try:
            return parse(raw)
        except (ValueError, OverflowError) as exc:
            self.problems[name] = str(exc)
            return None  # type: ignore[return-value]

    def environment(self) -> str:
        """``JUPITER_ENV``, ``local`` when unset, except on Cloud Run (it sets ``K_SERVICE``): a
        deployed instance missing it must not start with local-only switches allowed."""
        if self._environ.get("JUPITER_ENV", "").strip() or not self._environ.get("K_SERVICE", "").strip():
            return self.get("JUPITER_ENV", _one_of(ENVIRONMENTS), default="local")
        self.problems["JUPITER_ENV"] = "is required on Cloud Run (K_SERVICE is set): staging or production"
        return ""  # never used: raise_if_invalid() raises

    def optional(self, name: str, parse: Callable[[str], T]) -> T | None:
        if not self._environ.get(name, "").strip():
            return None
        return self.get(name, parse)

    def raise_if_invalid(self) -> None:
        if self.problems:
            raise SettingsError(self.problems)


MAX_KEY_FILE_BYTES = 64 * 1024  # about 480 keys


def read_api_keys_file(path: Path) -> ApiKeys:
    """The ``name:sha256hex`` entries of a key file (separated by commas or white space), or ``ValueError``
    saying what is wrong without quoting the file."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ValueError(f"{path} is over {MAX_KEY_FILE_BYTES} bytes")
    try:
        return ApiKeys.parse(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        reason = "not ASCII" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise ValueError(f"{path}: {reason}") from None


def _key_file(raw: str) -> tuple[Path, ApiKeys]:
    path = Path(raw)
    if not path.is_absolute():
        raise ValueError(f"{raw!r} is not an absolute path")
    return path, read_api_keys_file(path)


def _project_id(raw: str) -> str:
    if not _PROJECT_ID.match(raw):
        raise ValueError(f"{raw!r} is not a valid GCP project id")
    return raw


def _host_port(raw: str) -> str:
    if not _HOST_PORT.match(raw):
        raise ValueError(f"{raw!r} is not host:port")
    return raw


_TOPIC_ARN = re.compile(r"^arn:aws(?:-[a-z]+)*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(?:\.fifo)?$")
_TOPIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$")
_LOOPBACK_URL = re.compile(r"^http://(?:127\.0\.0\.1|localhost):\d{1,5}/?$")


def _topic_arns(raw: str) -> frozenset[str]:
    arns = frozenset(part.strip() for part in raw.split(",") if part.strip())
    if not arns:
        raise ValueError("must list at least one SNS topic ARN")
    if bad := sorted(arn for arn in arns if not _TOPIC_ARN.match(arn)):
        raise ValueError(f"not SNS topic ARNs: {', '.join(bad)}")
    return arns


def _base_url(allow_http: bool) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        schemes = ("https://", "http://") if allow_http else ("https://",)
        if not raw.startswith(schemes) or any(ch in raw for ch in "?#@ "):
            raise ValueError(f"{raw!r} must be an {' or '.join(s[:-3] for s in schemes)} base URL")
        return raw.rstrip("/")

    return parse


def _fraction(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{raw!r} is not a fraction from 0 to 1 (0.001 = 0.1 %)")
    return value


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise ValueError(f"{raw!r} is not a whole number from {low} to {high}")
        return int(raw)

    return parse


def _duration(raw: str) -> timedelta:
    """Seconds, or a number with an s/m/h suffix (``3600``, ``90m``, ``1h``)."""
    match = re.fullmatch(r"(\d+)([smh]?)", raw)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{raw!r} is not a positive duration like 3600, 90m or 1h")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    return timedelta(seconds=int(match.group(1)) * unit)


# Between Pub/Sub's publish_time and the function's clock.
CLOCK_SKEW_ALLOWANCE = timedelta(minutes=1)


def _reachable_retry_age(raw: str) -> timedelta:
    """A duration that a message's age surely passes before Pub/Sub's last delivery attempt. Pub/Sub
    documents only the bounds of its backoff, so assume the fastest schedule: every retry after just
    ``minimum_backoff``."""
    age = _duration(raw)
    retry = load_resources().trigger_retry
    last_attempt = timedelta(seconds=(retry["max_delivery_attempts"] - 1) * retry["minimum_backoff_seconds"])
    limit = last_attempt - CLOCK_SKEW_ALLOWANCE
    if age >= limit:
        raise ValueError(
            f"{raw!r} may never be reached: Pub/Sub may make its last delivery attempt {last_attempt}"
            f" after publishing (trigger_retry in resources.json); use less than {limit}"
        )
    return age


def _topic_name(raw: str) -> str:
    if not _TOPIC_NAME.match(raw):
        raise ValueError(f"{raw!r} is not a Pub/Sub topic name")
    return raw


def _loopback_url(raw: str) -> str:
    if not _LOOPBACK_URL.match(raw):
        raise ValueError(f"{raw!r} must be http://127.0.0.1:PORT or http://localhost:PORT")
    return raw.rstrip("/")


def _one_of(choices: tuple[str, ...], upper: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.upper() if upper else raw
        if value not in choices:
            raise ValueError(f"{raw!r} is not one of {', '.join(choices)}")
        return value

    return parse
