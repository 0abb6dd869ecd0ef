"""deploy: the Terraform steps, their order, the production guard and the plan summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from jupiter_data import deploy
from jupiter_data.deploy import DeployError, PlanSummary, summarise
from tests.support import write_manifest

REPO = Path(__file__).resolve().parents[2]
PLAN = {
    "resource_changes": [
        {"address": "a", "change": {"actions": ["create"]}},
        {"address": "b", "change": {"actions": ["create"]}},
        {"address": "c", "change": {"actions": ["update"]}},
        {"address": "d", "change": {"actions": ["delete", "create"]}},
        {"address": "e", "change": {"actions": ["delete"]}},
        {"address": "f", "change": {"actions": ["no-op"]}},
    ]
}


class RecordingTerraform:
    """Answers like python_terraform.Terraform: (return code, stdout, stderr), and records the calls."""

    def __init__(self, plan_code: int = 2, fail: str | None = None) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.plan_code, self.fail = plan_code, fail

    def _answer(
        self, step: str, args: tuple[Any, ...], kwargs: dict[str, Any], out: str = ""
    ) -> tuple[int, str, str]:
        self.calls.append((step, args, kwargs))
        return (1, "", f"{step} broke") if step == self.fail else (0, out, "")

    def init(self, **kwargs: Any) -> tuple[int, str, str]:
        return self._answer("init", (), kwargs)

    def plan(self, **kwargs: Any) -> tuple[int, str, str]:
        code, out, err = self._answer("plan", (), kwargs)
        return (code, out, err) if code else (self.plan_code, "", "")

    def show(self, *args: Any, **kwargs: Any) -> tuple[int, str, str]:
        return self._answer("show", args, kwargs, json.dumps(PLAN))

    def apply(self, dir_or_plan: str | None = None, **kwargs: Any) -> tuple[int, str, str]:
        return self._answer("apply", (dir_or_plan,), kwargs)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A throwaway repository with the real Pipfile.lock and one function, for the build step."""
    (tmp_path / "functions" / "hello").mkdir(parents=True)
    for env in deploy.ENVIRONMENTS:
        deploy.environment_dir(tmp_path, env).mkdir(parents=True)
    (tmp_path / "functions" / "hello" / "main.py").write_text("def hello(request):\n    return 'hi'\n")
    write_manifest(tmp_path / "functions" / "hello", requirements=["functions-framework"])
    shutil.copy(REPO / "Pipfile.lock", tmp_path / "Pipfile.lock")
    shutil.copy(REPO / "Pipfile", tmp_path / "Pipfile")
    shutil.copytree(REPO / "shared" / "jupiter_data", tmp_path / "shared" / "jupiter_data",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return tmp_path


def run(
    repo: Path,
    action: str,
    env: str,
    terraform: RecordingTerraform,
    approve: bool = False,
    saved_plan: bool = False,
) -> PlanSummary:
    return deploy.deploy(
        action,
        env,
        repo_root=repo,
        state_bucket="state-bucket",
        approve_production=approve,
        terraform=terraform,
        saved_plan=saved_plan,
    )


def leave_a_plan(repo: Path, env: str) -> bytes:
    """What a plan job leaves for the apply job: the plan file and the archives it uploads."""
    plan = deploy.environment_dir(repo, env) / deploy.PLAN_FILE
    plan.write_bytes(b"the reviewed plan")
    (repo / "dist").mkdir()
    manifest = b'{"hello": {"archive": "hello-reviewed.zip"}}'
    (repo / "dist" / "manifest.json").write_bytes(manifest)
    return manifest


def test_the_summary_counts_each_kind_of_change() -> None:
    assert summarise(PLAN) == PlanSummary(create=2, update=1, delete=1, replace=1)
    assert str(summarise(PLAN)) == "2 to create, 1 to change, 1 to replace, 1 to destroy"


def test_plan_builds_inits_with_the_state_bucket_plans_into_a_file_and_applies_nothing(repo: Path) -> None:
    terraform = RecordingTerraform()
    assert run(repo, "plan", "staging", terraform) == summarise(PLAN)
    assert [step for step, _, _ in terraform.calls] == ["init", "plan", "show"]
    assert terraform.calls[0][2]["backend_config"] == {"bucket": "state-bucket"}
    assert terraform.calls[1][2]["out"] == deploy.PLAN_FILE
    assert (repo / "dist" / "manifest.json").is_file(), "the archives Terraform uploads are built first"


def test_apply_applies_exactly_the_saved_plan(repo: Path) -> None:
    terraform = RecordingTerraform()
    run(repo, "apply", "staging", terraform)
    assert [step for step, _, _ in terraform.calls] == ["init", "plan", "show", "apply"]
    assert terraform.calls[-1][1] == (deploy.PLAN_FILE,)


def test_production_is_applied_only_with_approval(repo: Path) -> None:
    terraform = RecordingTerraform()
    with pytest.raises(DeployError, match="--approve-production"):
        run(repo, "apply", "production", terraform, saved_plan=True)
    assert terraform.calls == [], "nothing runs before the guard"
    run(repo, "plan", "production", terraform)  # planning needs no approval
    (deploy.environment_dir(repo, "production") / deploy.PLAN_FILE).write_bytes(b"plan")  # terraform's
    run(repo, "apply", "production", RecordingTerraform(), approve=True, saved_plan=True)


def test_production_applies_only_a_saved_plan_never_a_fresh_one(repo: Path) -> None:
    terraform = RecordingTerraform()
    with pytest.raises(DeployError, match="--saved-plan"):
        run(repo, "apply", "production", terraform, approve=True)
    assert terraform.calls == [], "no plan made after the approval"


def test_a_saved_plan_is_applied_as_left_without_building_or_planning_again(repo: Path) -> None:
    manifest = leave_a_plan(repo, "production")
    terraform = RecordingTerraform()
    assert run(repo, "apply", "production", terraform, approve=True, saved_plan=True) == summarise(PLAN)
    assert [step for step, _, _ in terraform.calls] == ["init", "show", "apply"]
    assert terraform.calls[1][1] == terraform.calls[2][1] == (deploy.PLAN_FILE,)
    assert (repo / "dist" / "manifest.json").read_bytes() == manifest, "the archives the plan uploads"
    assert (
        deploy.environment_dir(repo, "production") / deploy.PLAN_FILE
    ).read_bytes() == b"the reviewed plan"


def test_without_the_saved_plan_nothing_runs(repo: Path) -> None:
    terraform = RecordingTerraform()
    with pytest.raises(DeployError, match=r"no saved plan to apply: .*jupiter\.tfplan"):
        run(repo, "apply", "staging", terraform, saved_plan=True)
    assert terraform.calls == []
    with pytest.raises(DeployError, match="--saved-plan is for apply"):
        run(repo, "plan", "staging", terraform, saved_plan=True)


@pytest.mark.parametrize("step", ["init", "plan", "show", "apply"])
def test_a_failing_step_stops_the_deploy_with_terraforms_message(repo: Path, step: str) -> None:
    terraform = RecordingTerraform(fail=step)
    with pytest.raises(DeployError, match=f"{step} broke"):
        run(repo, "apply", "staging", terraform)
    assert terraform.calls[-1][0] == step


def test_unknown_environments_and_a_missing_state_bucket_are_refused(repo: Path) -> None:
    with pytest.raises(DeployError, match="unknown environment"):
        run(repo, "plan", "dev", RecordingTerraform())
    with pytest.raises(DeployError, match="TF_STATE_BUCKET"):
        deploy.deploy("plan", "staging", repo_root=repo, state_bucket="", approve_production=False,
                      terraform=RecordingTerraform())  # fmt: skip
