"""``python -m jupiter_data.local.pubsub_emulator [--host H] [--port P] [--data-dir DIR]``: run in the
foreground until SIGTERM or SIGINT, which stop it (and save its state to DIR)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from jupiter_data.local.pubsub_emulator.server import PubSubEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jupiter_data.local.pubsub_emulator",
        description="Run the jupiter-data Pub/Sub emulator (gRPC).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="load the state saved here at start, save it here on SIGTERM/SIGINT (default: memory only)",
    )
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with PubSubEmulator(args.host, args.port, data_dir=args.data_dir):
        while not stop.wait(1.0):  # a timed wait lets the signal handler run promptly
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
