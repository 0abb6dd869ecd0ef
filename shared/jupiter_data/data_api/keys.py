"""Who may call the data API: callers' key digests, the key file they come from, and its re-reading.

Deployed, the digests are a Secret Manager secret that Cloud Run mounts as a file at its latest version;
each instance re-reads it (``RefreshingKeys``) so that a key can be revoked without a redeploy.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from jupiter_data.data_api.problems import ApiProblem
from jupiter_data.ports import Clock

log = logging.getLogger(__name__)

MAX_KEY_FILE_BYTES = 64 * 1024  # about 480 keys


@dataclass(frozen=True)
class ApiKeys:
    """Callers' keys as ``name:sha256-hex`` pairs (the keys themselves are never stored or logged).

    Keys are random 256-bit tokens, so a plain SHA-256 is enough to make the stored form useless to a
    reader; every stored digest is compared in constant time, without stopping at the first match.
    """

    digests: tuple[tuple[str, bytes], ...] = field(default=())

    @classmethod
    def parse(cls, raw: str) -> ApiKeys:
        entries = []
        for item in filter(None, re.split(r"[,\s]+", raw)):  # one per line in a key file
            name, _, digest = item.partition(":")
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", name) or not re.fullmatch(
                r"[0-9a-f]{64}", digest
            ):
                raise ValueError("expected name:sha256hex entries (name: lowercase letters, digits, _ and -)")
            entries.append((name, bytes.fromhex(digest)))
        if not entries:
            raise ValueError("no keys given")
        return cls(tuple(entries))

    @staticmethod
    def digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def caller(self, authorization: str | None) -> str:
        """The caller's name for the ``Authorization: Bearer <key>`` header, or an ``ApiProblem``."""
        if not authorization:
            raise ApiProblem(
                401, "Unauthorized", "send an API key as 'Authorization: Bearer <key>'",
                headers=(("WWW-Authenticate", 'Bearer realm="jupiter-data"'),),
            )  # fmt: skip
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiProblem(
                401, "Unauthorized", "the Authorization header must be 'Bearer <key>'",
                headers=(("WWW-Authenticate", 'Bearer realm="jupiter-data", error="invalid_request"'),),
            )  # fmt: skip
        presented = hashlib.sha256(key.strip().encode("utf-8", "surrogateescape")).digest()
        found = None
        for name, digest in self.digests:
            if hmac.compare_digest(presented, digest) and found is None:
                found = name
        if found is None:
            raise ApiProblem(403, "Forbidden", "the API key is not valid")
        return found


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


class Authenticator(Protocol):
    def caller(self, authorization: str | None) -> str:
        """The caller's name for an ``Authorization`` header, or an ``ApiProblem`` (401/403)."""


# How long a revoked key keeps working at most: each instance re-reads the key file this often.
API_KEYS_TTL = timedelta(seconds=60)


class RefreshingKeys:
    """The key list of a file (Cloud Run's mount of a secret's latest version), re-read at most once per
    ``API_KEYS_TTL`` so that a revoked key stops working within it, and Secret Manager sees one read a
    minute per instance, not one per request.

    A re-read that fails (unreadable mount, invalid version) keeps the last good list and logs an ERROR
    each time: neither letting everyone in nor locking every caller out. The first list is read at
    cold start, where a bad file stops the instance instead (``DataApiSettings``).
    """

    def __init__(self, keys: ApiKeys, load: Callable[[], ApiKeys], clock: Clock) -> None:
        self._keys, self._load, self._clock = keys, load, clock
        self._read_at: datetime | None = None  # the cold-start list may be old: re-read on first use
        self._lock = threading.Lock()

    def caller(self, authorization: str | None) -> str:
        return self.current().caller(authorization)

    def current(self) -> ApiKeys:
        # One thread re-reads; the others go on with the current list meanwhile instead of queueing.
        if self._fresh(self._clock.now()) or not self._lock.acquire(blocking=False):
            return self._keys
        try:
            now = self._clock.now()
            if not self._fresh(now):
                self._read_at = now
                self._reload()
        finally:
            self._lock.release()
        return self._keys

    def _fresh(self, now: datetime) -> bool:
        return self._read_at is not None and self._read_at <= now < self._read_at + API_KEYS_TTL

    def _reload(self) -> None:
        try:
            keys = self._load()
        except ValueError as exc:
            log.error(
                "API key list not re-read: keeping the last good one",
                extra={"fields": {"error": str(exc)[:300], "keys": len(self._keys.digests)}},
            )
            return
        if keys != self._keys:
            log.info("API key list changed", extra={"fields": {"keys": len(keys.digests)}})
            self._keys = keys
