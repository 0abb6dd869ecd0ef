"""HTTPS data API for analysts: routes, authentication and queries live in jupiter_data.services.data_api."""

from __future__ import annotations

import flask
import functions_framework
from werkzeug.exceptions import HTTPException

from jupiter_data import bootstrap
from jupiter_data.domain.data_api import ApiProblem
from jupiter_data.logs import request_trace
from jupiter_data.services.data_api import MAX_BODY_BYTES, ApiResponse, Call, problem_response
from jupiter_data.settings import DataApiSettings, load_settings

settings = bootstrap.cold_start()
load_settings(DataApiSettings)  # fail at cold start, naming the variable


def _as_flask(reply: ApiResponse) -> flask.Response:
    return flask.Response(reply.body, status=reply.status, mimetype=reply.content_type, headers=reply.headers)


@functions_framework.errorhandler(HTTPException)
def _framework_error(error: HTTPException) -> flask.Response:
    # Requests the framework refuses before the function runs (a path its router cannot match, such
    # as one with a newline, or a method it does not route) get problem details too, not HTML.
    status = error.code or 500
    return _as_flask(problem_response(ApiProblem(status, error.name, "the request cannot be served")))


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
    return _as_flask(reply)
