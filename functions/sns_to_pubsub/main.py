"""HTTPS endpoint that AWS SNS pushes to: verified messages are republished to Pub/Sub."""

from __future__ import annotations

import functools
import json

import flask
import functions_framework

from jupiter_data.bootstrap import cold_start
from jupiter_data.logs import request_trace
from jupiter_data.services.bridge import Bridge, BridgeSettings, bootstrap
from jupiter_data.settings import load_settings

MAX_BODY_BYTES = 300 * 1024

settings = cold_start()
bridge_settings = load_settings(BridgeSettings)  # fail at cold start, naming the variable


@functools.cache
def bridge() -> Bridge:
    # Built on the first request, which creates the Pub/Sub client: a cold start only reads settings.
    return bootstrap(settings, bridge_settings=bridge_settings)


def _json(status: int, body: dict[str, object]) -> flask.Response:
    return flask.Response(json.dumps(body), status=status, mimetype="application/json")


@functions_framework.http
def sns_to_pubsub(request: flask.Request) -> flask.Response:
    if request.method != "POST":
        return _json(405, {"error": "method_not_allowed", "detail": "SNS delivers with POST"})
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return _json(413, {"error": "too_large", "detail": f"body over {MAX_BODY_BYTES} bytes"})
    body = request.stream.read(MAX_BODY_BYTES + 1)  # also caps bodies sent without Content-Length
    if len(body) > MAX_BODY_BYTES:
        return _json(413, {"error": "too_large", "detail": f"body over {MAX_BODY_BYTES} bytes"})
    with request_trace(request.headers, settings.project):
        reply = bridge().handle(body, request.headers)
    return _json(reply.status, reply.body)
