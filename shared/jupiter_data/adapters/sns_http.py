"""HTTP calls to SNS hosts: signing certificates and subscription confirmations.

Nothing is cached here: the bridge keeps the certificates it parsed and found valid, never the raw
bytes of a response (a garbage or failed fetch must be retried, not served again).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

from jupiter_data.ports import PermanentError, TransientError

TIMEOUT = (2.0, 3.0)  # connect, read: SNS waits 15 s for our answer, so a slow host must not eat it
MAX_CERT_BYTES = 16 * 1024  # SNS certificates are ~2 KiB


class SnsHttpGateway:
    def __init__(self, session: requests.Session | None = None, base_url: str | None = None) -> None:
        self._session = session or requests.Session()
        self._session.trust_env = False  # no proxies or netrc credentials from the environment
        self._base_url = base_url

    def _target(self, url: str) -> str:
        """Locally, the same path and query on the emulator (moto) instead of the SNS host."""
        if not self._base_url:
            return url
        parts = urlsplit(url)
        return f"{self._base_url}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    def fetch_certificate(self, url: str) -> bytes:
        return self._get(url, MAX_CERT_BYTES)

    def confirm_subscription(self, url: str) -> None:
        self._get(url, 64 * 1024)

    def _get(self, url: str, max_bytes: int) -> bytes:
        try:
            with self._session.get(
                self._target(url), timeout=TIMEOUT, stream=True, allow_redirects=False
            ) as reply:
                if reply.status_code >= 500 or reply.status_code == 429:
                    raise TransientError(f"SNS host answered {reply.status_code}")
                if reply.status_code != 200:
                    raise PermanentError(f"SNS host answered {reply.status_code}")
                body = b""
                for chunk in reply.iter_content(8192):
                    body += chunk
                    if len(body) > max_bytes:
                        raise PermanentError(f"SNS host sent more than {max_bytes} bytes")
                return body
        except requests.RequestException as exc:
            raise TransientError(f"SNS host unreachable: {type(exc).__name__}") from exc
