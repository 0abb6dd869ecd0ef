"""The zips the server sends: generated once per (spec, window) into a temporary directory."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any

from jupiter_data.local.amplitude_data import ExportSpec, ExportStats, format_export_hour

log = logging.getLogger(__name__)


class ExportCache:
    """Keeps the zips of the ``windows`` most recently asked windows; ``open()`` before, ``close()`` after.

    Keyed by the spec as well as the window, so a configuration change never serves stale content.
    """

    def __init__(self, windows: int) -> None:
        self.windows = windows
        self._lock = threading.Lock()
        self._files: OrderedDict[tuple[Any, ...], tuple[Path, ExportStats]] = OrderedDict()
        self._building: dict[tuple[Any, ...], threading.Lock] = {}
        self._dir: Path | None = None

    def open(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="amplitude-export-"))

    def close(self) -> None:
        with self._lock:
            self._files.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def get(self, spec: ExportSpec, first: datetime, last: datetime) -> tuple[Path, ExportStats]:
        """The zip of a window with its counts, generated now unless it is cached."""
        key = (spec, first, last)
        with self._lock:
            cached = self._files.get(key)
            if cached is not None and cached[0].exists():
                self._files.move_to_end(key)
                return cached
            building = self._building.setdefault(key, threading.Lock())
        with building:  # one generation per window, however many clients ask at once
            with self._lock:
                cached = self._files.get(key)
            if cached is not None and cached[0].exists():
                return cached
            if self._dir is None:
                raise RuntimeError("the server is not running")
            fd, name = tempfile.mkstemp(dir=self._dir, prefix=f"{format_export_hour(first)}-", suffix=".zip")
            path = Path(name)
            try:
                with os.fdopen(fd, "wb") as handle:
                    stats = spec.write_zip(handle, first, last)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            finally:
                with self._lock:
                    self._building.pop(key, None)
            with self._lock:
                self._files[key] = (path, stats)
                while len(self._files) > max(self.windows, 1):
                    # An open file survives unlinking, so a download in progress is unaffected.
                    _, (old, _) = self._files.popitem(last=False)
                    old.unlink(missing_ok=True)
            log.info(
                "generated %s: %d events, %d members, %d bytes",
                path.name,
                stats.events,
                stats.members,
                stats.bytes,
            )
            return path, stats
