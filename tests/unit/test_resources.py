from __future__ import annotations

import pytest

from jupiter_data.resources import load_resources
from tests.conftest import REPO_ROOT

FUNCTION_ORDER = ["sns_to_pubsub", "pubsub_to_bigquery", "sync_amplitude", "fetch_from_bigquery"]


def test_functions_are_listed_in_product_order_on_ports_8081_to_8084() -> None:
    functions = load_resources().functions
    assert [f.name for f in functions] == FUNCTION_ORDER
    assert [f.local_port for f in functions] == [8081, 8082, 8083, 8084]


def test_every_trigger_topic_and_dead_letter_topic_is_defined() -> None:
    resources = load_resources()
    for function in resources.functions:
        if not function.is_http:
            assert function.trigger in resources.topics
            dead_letter = resources.topics[function.trigger]["dead_letter_topic"]
            assert resources.topics[dead_letter]["hold_subscription"], "dead letters need a subscription"


def test_bucket_names_are_prefixed_by_project_and_roles_are_checked() -> None:
    resources = load_resources()
    assert resources.bucket_name("jupiter-staging", "amplitude-raw") == "jupiter-staging-amplitude-raw"
    with pytest.raises(KeyError, match="unknown bucket role"):
        resources.bucket_name("jupiter-staging", "nope")


def test_function_folders_only_exist_for_listed_functions() -> None:
    folders = {p.name for p in (REPO_ROOT / "functions").iterdir() if p.is_dir()}
    assert folders <= set(FUNCTION_ORDER)
