"""schemathesis against the running fetch_from_bigquery function and its committed OpenAPI document.

Generated requests (valid ones, and the coverage phase's boundary values) go to the real function on
the local platform; every response must be documented: no 5xx, a documented status and content type,
and a body that matches its schema.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig

from jupiter_data.data_api.routes import OPENAPI_PATH

# The platform is started by the first test that needs it; the URL and key are known only then.
schema = schemathesis.openapi.from_path(
    OPENAPI_PATH,
    config=SchemathesisConfig.from_dict(
        {
            "seed": 20261123,
            "generation": {
                "max-examples": int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25")),
                "deterministic": True,
                "mode": "all",  # valid and invalid input: invalid must be a documented 4xx, never a 5xx
                "database": "none",
            },
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
            },
        }
    ),
)


@pytest.fixture(scope="module")
def api_target(platform) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    return platform.function_urls()["fetch_from_bigquery"], platform.fetch_api_key


@schema.parametrize()
def test_every_response_matches_the_openapi_document(case, api_target) -> None:  # type: ignore[no-untyped-def]
    url, key = api_target
    case.call_and_validate(base_url=url, headers={"Authorization": f"Bearer {key}"})
