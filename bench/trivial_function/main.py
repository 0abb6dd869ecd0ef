"""Baseline for bench/bridge.py: the cheapest functions-framework HTTP function (no I/O, no JSON)."""

from __future__ import annotations

import flask
import functions_framework


@functions_framework.http
def trivial(request: flask.Request) -> str:
    request.get_data()  # read the body, as the bridge does, so both pay for the same bytes
    return "ok"
