"""``python -m jupiter_data.local.amplitude_server``: serve the fake Export API until SIGTERM or SIGINT.

    python -m jupiter_data.local.amplitude_server --port 8090 [--events-per-hour N] [--empty-day D]

The secret key is read from the variable that ``--secret-key-env`` names (default AMPLITUDE_SECRET_KEY).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from datetime import date
from types import FrameType

from jupiter_data.local.amplitude_data import parse_export_hour
from jupiter_data.local.amplitude_server.server import (
    DEFAULT_API_KEY,
    DEFAULT_SECRET_KEY,
    AmplitudeExportServer,
)
from jupiter_data.logs import configure_logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m jupiter_data.local.amplitude_server",
        description="Serve a local Amplitude Export API from deterministic generated data.",
    )
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=8090)
    parser.add_argument("--api-key", default=os.environ.get("AMPLITUDE_API_KEY", DEFAULT_API_KEY))
    parser.add_argument(
        "--secret-key-env", default="AMPLITUDE_SECRET_KEY", help="variable holding the secret key"
    )
    parser.add_argument("--events-per-hour", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--malformed-rate", type=float, default=0.0)
    parser.add_argument(
        "--empty-day", action="append", default=[], type=date.fromisoformat, help="YYYY-MM-DD"
    )
    parser.add_argument(
        "--empty-hour", action="append", default=[], type=parse_export_hour, help="YYYYMMDDTHH"
    )
    parser.add_argument("--max-window-hours", type=int, default=24)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    server = AmplitudeExportServer(
        args.host,
        args.port,
        api_key=args.api_key,
        # The secret comes from the environment, never argv (argv is visible to every local user).
        secret_key=os.environ.get(args.secret_key_env, DEFAULT_SECRET_KEY),
        events_per_hour=args.events_per_hour,
        seed=args.seed,
        malformed_rate=args.malformed_rate,
        empty_days=args.empty_day,
        empty_hours=args.empty_hour,
        max_window_hours=args.max_window_hours,
    )
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    server.start()
    try:
        while not done.wait(0.5):
            pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
