"""What the test controls see: faults to inject into export requests, and the record of each request."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Fault:
    """What to do to one export request instead of (or on top of) the normal answer.

    ``status``: answer with this status (429 adds ``Retry-After: retry_after``, default 1 s).
    ``truncate``: on a 200, send only this fraction of the zip, with a Content-Length that matches
    the cut (HTTP is fine; the zip is not). ``disconnect``: on a 200, advertise the whole zip, send
    ``truncate`` (default half) of it and close the connection (the client sees a broken transfer).
    ``delay``: seconds to wait before answering (to exercise client read timeouts).
    """

    status: int | None = None
    retry_after: int | None = None
    truncate: float | None = None
    disconnect: bool = False
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"status {self.status} is not an HTTP status")
        if self.truncate is not None and not 0.0 <= self.truncate < 1.0:
            raise ValueError("truncate is the fraction of the body to send, within [0, 1)")
        if self.delay < 0:
            raise ValueError("delay must be >= 0")

    @property
    def on_body(self) -> bool:
        """Applies only to a request that would be answered 200 with a zip."""
        return self.status is None and (self.truncate is not None or self.disconnect)

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in asdict(self).items() if v not in (None, False, 0.0)]
        return ",".join(parts) or "none"


@dataclass(frozen=True)
class RequestRecord:
    """One request to the export endpoint, as the server answered it."""

    start: str | None
    end: str | None
    status: int
    fault: str | None
    bytes_sent: int  # the body the server sent (or began to send): the zip, or its cut
    at: float  # time.time()
