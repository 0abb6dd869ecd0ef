"""HTTPS data API for analysts: routes, authentication and queries live in jupiter_data.data_api."""

from __future__ import annotations

import functools

import flask
import functions_framework
from werkzeug.exceptions import HTTPException

from jupiter_data.bootstrap import cold_start
from jupiter_data.data_api.problems import ApiProblem
from jupiter_data.data_api.rendering import ApiResponse, problem_response
from jupiter_data.data_api.routes import MAX_BODY_BYTES, Call, DataApi, bootstrap
from jupiter_data.data_api.settings import DataApiSettings
from jupiter_data.logs import request_trace
from jupiter_data.settings import load_settings

settings = cold_start()
api_settings = load_settings(DataApiSettings)  # fail at cold start, naming the variable


@functools.cache
def data_api() -> DataApi:
    # Built on the first request, which creates the BigQuery client: a cold start only reads settings.
    return bootstrap(settings, api_settings=api_settings)


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
        reply = data_api().handle(call)
    return _as_flask(reply)
