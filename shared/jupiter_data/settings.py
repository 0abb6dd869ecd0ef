"""The one place that reads the environment: settings are declared fields, read once per process.

Each function's settings class declares its fields with ``setting(env name, parser, default)``; the names
each function reads (``names()``), the parity check with Terraform and the docs' settings tables
(``markdown_table``) derive from these declarations, so each default is written once.

A missing or invalid variable fails fast with a ``SettingsError`` that names every offending variable at once,
so a bad deploy is diagnosed from one log line instead of a chain of redeploys.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Self, TypeVar, cast

from jupiter_data.resources import load_resources

T = TypeVar("T")

ENVIRONMENTS = ("local", "staging", "production")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# GCP project ids: 6-30 chars, lowercase letters, digits, hyphens; start with a letter.
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_HOST_PORT = re.compile(r"^(?:https?://)?[A-Za-z0-9.\-]+:\d{1,5}$")
_SETTING = "jupiter_setting"


class SettingsError(ValueError):
    """One or more environment variables are missing or invalid."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        details = "; ".join(f"{name}: {why}" for name, why in sorted(self.problems.items()))
        super().__init__(f"invalid settings: {details}")


@dataclass(frozen=True)
class Setting:
    """One environment variable: its parser, its default (as the variable holds it), who sets it."""

    env: str
    parse: Callable[[str], Any]
    default: str | None
    doc: str
    optional: bool  # unset is None, not an error
    secret: bool  # from Secret Manager when deployed; never in repr or logs
    local_only: bool  # refused unless JUPITER_ENV=local: emulator hosts, local switches
    platform: bool  # set by Cloud Run itself (K_SERVICE, K_REVISION), never by Terraform

    @property
    def required(self) -> bool:
        return self.default is None and not self.optional


def setting(
    env: str,
    parse: Callable[[str], T],
    *,
    doc: str,
    default: str | None = None,
    optional: bool = False,
    secret: bool = False,
    local_only: bool = False,
    platform: bool = False,
) -> Any:
    """A settings field read from ``env``; a ``default`` is parsed like a value, so docs show it as set."""
    declared = Setting(env, parse, default, doc, optional or local_only, secret, local_only, platform)
    return field(repr=not secret, metadata={_SETTING: declared})


class FromEnv:
    """Base of every settings class: ``from_env`` reads the declared fields, collecting every problem."""

    @classmethod
    def declared(cls) -> tuple[Setting, ...]:
        return tuple(f.metadata[_SETTING] for f in dataclasses.fields(cls) if _SETTING in f.metadata)  # type: ignore[arg-type]

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(s.env for s in cls.declared())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        reader = _Reader(os.environ if environ is None else environ)
        values = {
            f.name: reader.read(f.metadata[_SETTING])
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if _SETTING in f.metadata
        }
        if not reader.problems:
            reader.problems.update(cls.check(values, reader.environment))
        reader.raise_if_invalid()
        return cls(**values)

    @classmethod
    def check(cls, values: Mapping[str, Any], environment: Callable[[], str]) -> dict[str, str]:
        """Rules across fields, once each field parsed: problems by variable name (none by default)."""
        return {}


def markdown_table(*classes: type[FromEnv]) -> str:
    """The settings of ``classes`` as the docs show them (a test holds each function's README to this)."""
    lines = ["| Variable | Default | What it is |", "|---|---|---|"]
    for declared in (s for cls in classes for s in cls.declared()):
        if declared.platform:
            default = "set by Cloud Run"
        elif declared.local_only:
            default = "local only"
        elif declared.secret:
            default = "secret (Secret Manager)"
        else:
            default = (
                f"`{declared.default}`"
                if declared.default is not None
                else ("unset" if declared.optional else "**required**")
            )
        lines.append(f"| `{declared.env}` | {default} | {declared.doc} |")
    return "\n".join(lines) + "\n"


def project_id(raw: str) -> str:
    if not _PROJECT_ID.match(raw):
        raise ValueError(f"{raw!r} is not a valid GCP project id")
    return raw


def host_port(raw: str) -> str:
    if not _HOST_PORT.match(raw):
        raise ValueError(f"{raw!r} is not host:port")
    return raw


_TOPIC_ARN = re.compile(r"^arn:aws(?:-[a-z]+)*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(?:\.fifo)?$")
_TOPIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$")
_LOOPBACK_URL = re.compile(r"^http://(?:127\.0\.0\.1|localhost):\d{1,5}/?$")


def topic_arns(raw: str) -> frozenset[str]:
    arns = frozenset(part.strip() for part in raw.split(",") if part.strip())
    if not arns:
        raise ValueError("must list at least one SNS topic ARN")
    if bad := sorted(arn for arn in arns if not _TOPIC_ARN.match(arn)):
        raise ValueError(f"not SNS topic ARNs: {', '.join(bad)}")
    return arns


def base_url(raw: str) -> str:
    if not raw.startswith(("https://", "http://")) or any(ch in raw for ch in "?#@ "):
        raise ValueError(f"{raw!r} must be an https or http base URL")
    return raw.rstrip("/")


def fraction(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{raw!r} is not a fraction from 0 to 1 (0.001 = 0.1 %)")
    return value


def int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise ValueError(f"{raw!r} is not a whole number from {low} to {high}")
        return int(raw)

    return parse


def duration(raw: str) -> timedelta:
    """Seconds, or a number with an s/m/h suffix (``3600``, ``90m``, ``1h``)."""
    match = re.fullmatch(r"(\d+)([smh]?)", raw)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{raw!r} is not a positive duration like 3600, 90m or 1h")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    return timedelta(seconds=int(match.group(1)) * unit)


# Between Pub/Sub's publish_time and the function's clock.
CLOCK_SKEW_ALLOWANCE = timedelta(minutes=1)


def reachable_retry_age(raw: str) -> timedelta:
    """A duration that a message's age surely passes before Pub/Sub's last delivery attempt. Pub/Sub
    documents only the bounds of its backoff, so assume the fastest schedule: every retry after just
    ``minimum_backoff``."""
    age = duration(raw)
    retry = load_resources().trigger_retry
    last_attempt = timedelta(seconds=(retry["max_delivery_attempts"] - 1) * retry["minimum_backoff_seconds"])
    limit = last_attempt - CLOCK_SKEW_ALLOWANCE
    if age >= limit:
        raise ValueError(
            f"{raw!r} may never be reached: Pub/Sub may make its last delivery attempt {last_attempt}"
            f" after publishing (trigger_retry in resources.json); use less than {limit}"
        )
    return age


def topic_name(raw: str) -> str:
    if not _TOPIC_NAME.match(raw):
        raise ValueError(f"{raw!r} is not a Pub/Sub topic name")
    return raw


def loopback_url(raw: str) -> str:
    if not _LOOPBACK_URL.match(raw):
        raise ValueError(f"{raw!r} must be http://127.0.0.1:PORT or http://localhost:PORT")
    return raw.rstrip("/")


def one_of(choices: tuple[str, ...], upper: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.upper() if upper else raw
        if value not in choices:
            raise ValueError(f"{raw!r} is not one of {', '.join(choices)}")
        return value

    return parse


class _Reader:
    """Collects every problem before failing, so one error names all bad variables."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.problems: dict[str, str] = {}
        self._environment: str | None = None

    def read(self, declared: Setting) -> Any:
        if declared.env == "JUPITER_ENV":
            return self.environment()
        raw = self._environ.get(declared.env, "").strip()
        if raw and declared.local_only and self.environment() != "local":
            self.problems[declared.env] = "is for local use only: refused unless JUPITER_ENV=local"
            return None
        if not raw and declared.optional:
            return None
        return self.get(declared.env, declared.parse, declared.default)

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
        if self._environment is None:
            if self._environ.get("JUPITER_ENV", "").strip() or not self._environ.get("K_SERVICE", "").strip():
                self._environment = self.get("JUPITER_ENV", one_of(ENVIRONMENTS), default="local")
            else:
                self.problems["JUPITER_ENV"] = (
                    "is required on Cloud Run (K_SERVICE is set): staging or production"
                )
                self._environment = ""  # never used: raise_if_invalid() raises
        return self._environment

    def raise_if_invalid(self) -> None:
        if self.problems:
            raise SettingsError(self.problems)


F = TypeVar("F", bound="FromEnv")


def load_settings(cls: type[F]) -> F:
    """The settings of this process, read on first use and cached for the life of the instance (a bad
    variable fails the cold start, naming it)."""
    return cast(F, _read_once(cls))  # type: ignore[arg-type]  # classes are hashable


@functools.cache
def _read_once(cls: type[FromEnv]) -> FromEnv:
    return cls.from_env()


def clear_settings_cache() -> None:
    """Forget the settings read so far: the next ``load_settings`` reads the environment again (tests)."""
    _read_once.cache_clear()


@dataclass(frozen=True)
class Settings(FromEnv):
    """What every function reads."""

    project: str = setting("GOOGLE_CLOUD_PROJECT", project_id, doc="GCP project id")
    environment: str = setting(
        "JUPITER_ENV",
        one_of(ENVIRONMENTS),
        default="local",
        doc=(
            "`local`, `staging` or `production`; deployed environments refuse emulator hosts. When "
            "`K_SERVICE` is set (Cloud Run sets it), a missing `JUPITER_ENV` is a cold-start error: a"
            " deployed instance never runs as `local`"
        ),
    )
    log_level: str = setting(
        "LOG_LEVEL", one_of(LOG_LEVELS, upper=True), default="INFO", doc="`DEBUG` … `CRITICAL`"
    )
    pubsub_emulator_host: str | None = setting(
        "PUBSUB_EMULATOR_HOST", host_port, optional=True, doc="local Pub/Sub emulator"
    )
    storage_emulator_host: str | None = setting(
        "STORAGE_EMULATOR_HOST", host_port, optional=True, doc="local Cloud Storage emulator"
    )
    bigquery_emulator_host: str | None = setting(
        "BIGQUERY_EMULATOR_HOST", host_port, optional=True, doc="local BigQuery emulator (REST)"
    )
    bigquery_storage_emulator_host: str | None = setting(
        "BIGQUERY_STORAGE_EMULATOR_HOST",
        host_port,
        optional=True,
        doc="local BigQuery emulator (gRPC: the Storage Read API)",
    )
    service: str | None = setting(
        "K_SERVICE",
        str,
        optional=True,
        platform=True,
        doc="the Cloud Run service; `JUPITER_ENV` is then required",
    )

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
    def check(cls, values: Mapping[str, Any], environment: Callable[[], str]) -> dict[str, str]:
        if values["environment"] != "local" and any(values[f] for f in _EMULATOR_FIELDS):
            return {"JUPITER_ENV": f"{values['environment']} must not use emulator hosts"}
        return {}


_EMULATOR_FIELDS = (
    "pubsub_emulator_host",
    "storage_emulator_host",
    "bigquery_emulator_host",
    "bigquery_storage_emulator_host",
)
