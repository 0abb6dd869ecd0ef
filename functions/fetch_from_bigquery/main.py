"""HTTPS data API for analysts: routes, authentication and queries live in jupiter_data.services.data_api."""

from __future__ import annotations

import flask
import functions_framework

from jupiter_data import bootstrap
from jupiter_data.logs import request_trace
from jupiter_data.services.data_api import MAX_BODY_BYTES, Call
from jupiter_data.settings import get_data_api_settings

settings = bootstrap.cold_start()
get_data_api_settings()  # fail at cold start, naming the variable


@functions_framework.http
def fetch_from_bigquery(request: flask.Request) -> flask.Response:
    # One byte over the cap is enough for the API to answer 413, also without a Content-Length.
    body = request.stream.read(MAX_BODY_BYTES + 1) if request.method == "POST" else b""
    call = Call(
        request.method,
        request.path,
        request.args.to_dict(flat=False),
        request.headers,  # case-insensitive
        body,
    )
    with request_trace(request.headers, settings.project):
        reply = bootstrap.data_api().handle(call)
    return flask.Response(reply.body, status=reply.status, mimetype=reply.content_type, headers=reply.headers)
