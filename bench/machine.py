"""The machine line every benchmark prints beside its figures."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"machine: {os.cpu_count()} cpus ({affinity} usable), Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.release()}, "
        f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
