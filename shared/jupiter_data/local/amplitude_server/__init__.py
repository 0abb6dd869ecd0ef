"""A local Amplitude Export API: ``GET /api/2/export`` from deterministic generated data. Dev only.

Answers like the real API: HTTP basic auth (API key : secret key) else 401; ``start``/``end`` as
``YYYYMMDDTHH`` (both hours inclusive) else 400; a window longer than ``max_window_hours`` → 400 as the
real "over 4 GB" answer (the caller must split it); a window whose hours are all empty → 404; otherwise
200 with the zip (see :mod:`jupiter_data.local.amplitude_data`). An hour has data only once it is over
by the server's clock (injectable), so today's later hours and any future day answer 404, as Amplitude
does; a window reaching past now holds only the hours that are over. The zip is generated once per window
into a temporary file and sent in chunks with a Content-Length, so memory stays flat at any size.

Faults on demand, for the next N export requests (after authentication): any status (429 carries
``Retry-After``), a 200 whose body is cut short with a matching Content-Length (a bad zip), a dropped
connection part-way through the advertised body, or a delay before answering. From Python with
``server.inject(...)``, from other processes with the admin endpoints (no auth; 127.0.0.1 only):

    POST   /admin/faults    {"status": 429, "count": 2, "retry_after": 1} | {"truncate": 0.5}
                            | {"disconnect": true} | {"delay": 2.5}
    DELETE /admin/faults
    GET    /admin/requests  (DELETE to reset)  every export request: window, status, fault, bytes
    GET    /admin/expected?start=…&end=…     the counts an export of that window holds
    POST   /admin/config    {"events_per_hour": …, "seed": …, "malformed_rate": …, "empty_days": […],
                             "empty_hours": ["YYYYMMDDTHH", …], "max_window_hours": …, "property_bags": …}
    GET    /healthz

    python -m jupiter_data.local.amplitude_server --port 8090 [--events-per-hour N] [--empty-day D]

Where things are: :mod:`.server` (the server object: lifecycle, test controls, authentication),
:mod:`.export_cache` (the zips it generates), :mod:`.handler` (HTTP routes), :mod:`.faults`
(injected faults and request records), :mod:`.__main__` (the command line).
"""

from jupiter_data.local.amplitude_server.faults import Fault, RequestRecord
from jupiter_data.local.amplitude_server.server import AmplitudeExportServer

__all__ = ["AmplitudeExportServer", "Fault", "RequestRecord"]
