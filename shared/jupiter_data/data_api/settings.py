"""What ``fetch_from_bigquery`` reads on top of ``Settings``: its keys, date range, byte cap and timeout."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from jupiter_data.data_api.keys import ApiKeys, read_api_keys_file
from jupiter_data.settings import FromEnv, duration, int_between, setting


def _key_file(raw: str) -> tuple[Path, ApiKeys]:
    path = Path(raw)
    if not path.is_absolute():
        raise ValueError(f"{raw!r} is not an absolute path")
    return path, read_api_keys_file(path)


@dataclass(frozen=True)
class DataApiSettings(FromEnv):
    """What ``fetch_from_bigquery`` reads on top of ``Settings``.

    Deployed, the key digests are a Secret Manager secret that Cloud Run mounts as a file at its latest
    version (``FETCH_API_KEYS_FILE``), re-read while the function runs so that a key can be revoked
    without a redeploy; ``FETCH_API_KEYS``, the list inline, is for the local stack and tests only.
    """

    key_file: tuple[Path, ApiKeys] | None = setting(
        "FETCH_API_KEYS_FILE",
        _key_file,
        optional=True,
        secret=True,
        doc=(
            "deployed: `/secrets/fetch-api-keys/keys`, the `fetch-api-keys` secret mounted by Cloud "
            "Run at version `latest`; entries `name:sha256hex`, separated by commas or newlines, at "
            "most 64 KiB"
        ),
    )
    inline_keys: ApiKeys | None = setting(
        "FETCH_API_KEYS",
        ApiKeys.parse,
        local_only=True,
        secret=True,
        doc=(
            "the same list inline, accepted only with `JUPITER_ENV=local`; the local stack uses it. "
            "Exactly one of the two is set"
        ),
    )
    max_range_days: int = setting(
        "FETCH_MAX_RANGE_DAYS",
        int_between(1, 3660),
        default="92",
        doc="longest date range a call may ask for",
    )
    max_bytes_billed: int = setting(
        "FETCH_MAX_BYTES_BILLED",
        int_between(10 << 20, 10 << 40),
        default=str(10 << 30),
        doc="a query that would bill more is refused",
    )
    query_timeout: timedelta = setting(
        "FETCH_QUERY_TIMEOUT", duration, default="30s", doc="a query running longer is cancelled"
    )

    @property
    def api_keys(self) -> ApiKeys:
        """As read at cold start."""
        return self.key_file[1] if self.key_file else self.inline_keys or ApiKeys()

    @property
    def api_keys_file(self) -> Path | None:
        return self.key_file[0] if self.key_file else None

    @classmethod
    def check(cls, values: Mapping[str, Any], environment: Callable[[], str]) -> dict[str, str]:
        if values["key_file"] and values["inline_keys"]:
            return {"FETCH_API_KEYS": "set FETCH_API_KEYS_FILE or FETCH_API_KEYS, not both"}
        if not (values["key_file"] or values["inline_keys"]):
            return {"FETCH_API_KEYS_FILE": "is required (or FETCH_API_KEYS, locally)"}
        return {}
