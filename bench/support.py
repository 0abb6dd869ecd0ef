"""Scaffolding the bench scripts share: how a bench that could not run ends, and a private local stack.

Scripts run with bench/ on sys.path: ``from support import BenchError, exit_status, private_stack``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jupiter_data.local.stack import LocalStack


class BenchError(Exception):
    """The benchmark could not run (a server, a child or the stack did not start, a phase hung): exit 2.

    Exit 1 stays for a wrong product (a message lost, an import error); a slow machine is a MISSED row."""


def exit_status(run: Callable[[], int]) -> int:
    """``run()``'s exit status; a ``BenchError`` is printed and becomes exit 2."""
    try:
        return run()
    except BenchError as exc:
        print(f"benchmark could not run: {exc}", file=sys.stderr)
        return 2


def private_stack(state_dir: Path, *, functions: bool = True) -> LocalStack:
    """A local stack on free ports with its own state directory, so a bench never collides with a
    running ``make run``; ``functions=False``: the emulators only."""
    # Imported here: the Amplitude bench's measured child processes import this module too.
    from jupiter_data.local.stack import REPO_ROOT, LocalStack, StackPorts

    functions_dir = REPO_ROOT / "functions" if functions else None
    return LocalStack(state_dir, StackPorts.free(), functions_dir=functions_dir, free_function_ports=True)
