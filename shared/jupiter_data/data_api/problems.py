"""The data API's one error type: an RFC 9457 problem, raised anywhere and answered by the routes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ApiProblem(Exception):
    """An RFC 9457 problem: the HTTP status, a short title, a detail for humans, per-field errors."""

    status: int
    title: str
    detail: str
    errors: tuple[dict[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = list(self.errors)
        return body


def invalid(errors: Sequence[tuple[str, str]]) -> ApiProblem:
    first = dict(reversed(errors))  # one message per parameter: the first found
    fields = tuple(
        {"parameter": name, "message": first[name]} for name in dict.fromkeys(n for n, _ in errors)
    )
    names = ", ".join(first_name["parameter"] for first_name in fields)
    return ApiProblem(400, "Invalid request", f"invalid parameter(s): {names}", fields)
