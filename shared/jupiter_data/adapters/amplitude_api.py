"""Amplitude Export API client, the ``ExportApi`` port: streams a window's zip to a file, never to memory.

``GET /api/2/export?start=YYYYMMDDTHH&end=YYYYMMDDTHH`` (both hours inclusive) with HTTP basic auth.
The secret travels only in the Authorization header built by ``requests`` — never in argv, a URL or a
log line. Statuses: 200 zip; 404 no data in the window (not an error); 400 export over 4 GB and 504
timeout (the caller splits the window); 401/403 bad keys (configuration, never retried); 429 and 5xx
retried with exponential backoff and jitter, honouring ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import BinaryIO

import requests

from jupiter_data.ports import Download, ExportTooLarge, TransientError

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
TIMEOUT = (10.0, 300.0)  # connect, and between bytes: exports start slowly


class AmplitudeAuthError(Exception):
    """401/403: the keys are wrong; retrying cannot help."""


def hour_param(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H")


class AmplitudeExportClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        secret_key: str,
        session: requests.Session | None = None,
        max_attempts: int = 6,
        base_delay: float = 2.0,
        max_delay: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._url = base_url.rstrip("/") + "/api/2/export"
        self._session = session or requests.Session()
        self._session.auth = (api_key, secret_key)
        self._session.trust_env = False  # no proxy or netrc credentials picked up from the environment
        self._max_attempts, self._base_delay, self._max_delay = max_attempts, base_delay, max_delay
        self._sleep = sleep

    def download(
        self, start: datetime, end: datetime, dest: BinaryIO, max_bytes: int | None = None
    ) -> Download:
        """Write the export of hours ``start``..``end`` (inclusive) to ``dest`` (truncated first).

        ``max_bytes``: stop and raise ``ExportTooLarge`` once the zip grows past it (the caller splits).
        """
        params = {"start": hour_param(start), "end": hour_param(end)}
        for attempt in range(1, self._max_attempts + 1):
            try:
                with self._session.get(self._url, params=params, stream=True, timeout=TIMEOUT) as reply:
                    status = reply.status_code
                    if status == 200:
                        return self._save(reply, dest, max_bytes)
                    if status == 404:
                        return Download(has_data=False, size=0, sha256=hashlib.sha256().hexdigest())
                    if status in (400, 504):
                        raise ExportTooLarge(
                            f"Amplitude answered {status} for {params['start']}..{params['end']}"
                        )
                    if status in (401, 403):
                        raise AmplitudeAuthError(
                            f"Amplitude refused the credentials ({status}): check AMPLITUDE_API_KEY and "
                            "AMPLITUDE_SECRET_KEY, and AMPLITUDE_API_BASE_URL for the project's region"
                        )
                    if status != 429 and status < 500:
                        raise RuntimeError(f"Amplitude answered {status} unexpectedly")
                    delay = self._delay(attempt, reply.headers.get("Retry-After"))
                    reason = f"HTTP {status}"
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                delay, reason = self._delay(attempt, None), type(exc).__name__
            if attempt == self._max_attempts:
                raise TransientError(f"Amplitude export {params} failed {attempt} times, last: {reason}")
            log.warning(
                "Amplitude export failed, retrying",
                extra={"fields": {"window": params, "attempt": attempt, "reason": reason, "delay_s": delay}},
            )
            self._sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), self._max_delay)
        backoff = min(self._max_delay, self._base_delay * 2 ** (attempt - 1))
        return float(backoff * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not security

    def _save(self, reply: requests.Response, dest: BinaryIO, max_bytes: int | None) -> Download:
        dest.seek(0)
        dest.truncate()
        digest, size = hashlib.sha256(), 0
        for chunk in reply.iter_content(CHUNK):
            if max_bytes is not None and size + len(chunk) > max_bytes:
                dest.truncate(0)
                raise ExportTooLarge(f"the export grew past {max_bytes:,} bytes (AMPLITUDE_MAX_WINDOW_BYTES)")
            dest.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        dest.flush()
        return Download(has_data=True, size=size, sha256=digest.hexdigest())
