from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from jupiter_data.local.stack import StackPorts
from jupiter_data.resources import SCHEMAS, ManifestError, load_functions, load_resources, read_manifest
from jupiter_data.settings import FromEnv
from tests.conftest import REPO_ROOT
from tests.support import write_manifest

FUNCTIONS = REPO_ROOT / "functions"
FUNCTION_ORDER = ["sns_to_pubsub", "pubsub_to_bigquery", "sync_amplitude", "fetch_from_bigquery"]


def test_functions_are_listed_in_product_order_by_port_the_pipeline_first_on_8081_to_8084() -> None:
    functions = load_functions()
    assert [f.local_port for f in functions] == sorted(f.local_port for f in functions)
    pipeline = [(f.name, f.local_port) for f in functions][:4]
    assert pipeline == list(zip(FUNCTION_ORDER, range(8081, 8085), strict=True))


def test_no_function_takes_an_emulators_port_in_make_run() -> None:
    emulators = set(dataclasses.astuple(StackPorts()))
    assert not [f.name for f in load_functions() if f.local_port in emulators]


def test_every_function_folder_has_a_manifest_and_every_manifest_its_code() -> None:
    code = {p.parent.name for p in FUNCTIONS.glob("*/main.py")}
    manifests = {p.parent.name for p in FUNCTIONS.glob("*/function.json")}
    assert code == manifests == {f.name for f in load_functions()}


def test_the_manifest_schema_is_a_valid_json_schema_and_every_manifest_follows_it() -> None:
    schema = json.loads((SCHEMAS / "function.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    for path in FUNCTIONS.glob("*/function.json"):
        Draft202012Validator(schema).validate(json.loads(path.read_text()))


def test_each_manifest_names_a_settings_class() -> None:
    for function in load_functions():
        assert issubclass(function.settings_class(), FromEnv), function.name


def test_every_trigger_topic_and_dead_letter_topic_is_defined() -> None:
    resources = load_resources()
    for function in load_functions():
        if not function.is_http:
            assert function.trigger in resources.topics
            dead_letter = resources.topics[function.trigger]["dead_letter_topic"]
            assert resources.topics[dead_letter]["hold_subscription"], "dead letters need a subscription"


def test_bucket_names_are_prefixed_by_project_and_roles_are_checked() -> None:
    resources = load_resources()
    assert resources.bucket_name("jupiter-staging", "amplitude-raw") == "jupiter-staging-amplitude-raw"
    with pytest.raises(KeyError, match="unknown bucket role"):
        resources.bucket_name("jupiter-staging", "nope")


# ------------------------------------------------------------------------------- a manifest's mistakes


def scratch_function(tmp_path: Path, name: str = "collector", **changes: Any) -> Path:
    """A copy of the bridge's manifest under a new folder, with ``changes``."""
    return write_manifest(tmp_path / name, **changes)


def test_a_new_function_folder_is_found_with_its_manifest(tmp_path: Path) -> None:
    scratch_function(tmp_path, "collector", local_port=8085)
    scratch_function(tmp_path, "another", local_port=8080)
    assert [f.name for f in load_functions(tmp_path)] == ["another", "collector"]  # by port


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"memory": "lots"}, "memory: 'lots' does not match"),
        ({"invokers": "pubsub-push"}, "invokers: 'pubsub-push' is not one of ['public', 'analysts']"),
        ({"trigger": "sns-events", "invokers": "public"}, "invokers: 'pubsub-push' was expected"),
        ({"requirements": []}, "requirements: [] should be non-empty"),
        ({"requirements": ["requests>=2"]}, "requirements/0: 'requests>=2' does not match"),
        ({"secrets": {"API_KEY": "Bad Secret"}}, "secrets/API_KEY: 'Bad Secret' does not match"),
        ({"comments": {"colour": "why"}}, "comments: 'colour' is not one of"),
        ({"defaults": {"X": "1"}}, "Additional properties are not allowed ('defaults' was unexpected)"),
    ],
)
def test_a_manifest_breaking_the_schema_is_refused_naming_the_field(
    tmp_path: Path, changes: dict[str, Any], expected: str
) -> None:
    folder = scratch_function(tmp_path, **changes)
    with pytest.raises(ManifestError, match=r"functions/collector/function\.json: ") as err:
        read_manifest(folder)
    assert expected in str(err.value)


def test_a_missing_field_is_named(tmp_path: Path) -> None:
    folder = scratch_function(tmp_path)
    raw = json.loads((folder / "function.json").read_text())
    del raw["concurrency"]
    (folder / "function.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="'concurrency' is a required property"):
        read_manifest(folder)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"trigger": "no-such-topic", "invokers": "pubsub-push"}, "no trigger topic 'no-such-topic'"),
        ({"dataset_access": {"nope": "READER"}}, "no dataset 'nope'"),
        ({"table_access": {"ops.nope": "roles/bigquery.dataViewer"}}, "no table 'ops.nope'"),
        ({"bucket_access": {"nope": "roles/storage.objectViewer"}}, "no bucket 'nope'"),
        ({"topic_access": {"nope": "roles/pubsub.publisher"}}, "no topic 'nope'"),
        ({"local_port": 8081}, "local_port 8081 is used twice"),
    ],
)
def test_a_manifest_naming_an_unknown_resource_or_a_taken_port_is_refused(
    tmp_path: Path, changes: dict[str, Any], expected: str
) -> None:
    scratch_function(tmp_path, "bridge")
    scratch_function(tmp_path, **changes)
    with pytest.raises(ManifestError, match=expected):
        load_functions(tmp_path)


def test_a_folder_name_that_cannot_be_an_entry_point_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="folder name"):
        read_manifest(scratch_function(tmp_path, "Collector-1"))


def test_a_settings_entry_that_is_not_a_settings_class_is_refused(tmp_path: Path) -> None:
    function = read_manifest(scratch_function(tmp_path, settings="jupiter_data.settings:Setting"))
    with pytest.raises(ManifestError, match="is not a settings class"):
        function.settings_class()


def test_each_settings_table_in_the_docs_is_the_one_the_declarations_render() -> None:
    """The docs' settings tables derive from the settings declarations: paste the rendered table when
    this fails (``jupiter_data.settings.markdown_table``)."""
    from jupiter_data.settings import Settings, markdown_table

    readmes = {REPO_ROOT / "functions" / "README.md": Settings}
    readmes.update(
        {REPO_ROOT / "functions" / f.name / "README.md": f.settings_class() for f in load_functions()}
    )
    for readme, declared in readmes.items():
        table = markdown_table(declared)
        assert table in readme.read_text(), f"{readme}: its settings table should be\n{table}"
