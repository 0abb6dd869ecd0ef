"""``python -m jupiter_data deploy plan|apply --env staging|production``: Terraform, wrapped.

Builds the function archives (``dist/``), then runs ``terraform init`` (state bucket from
``--state-bucket`` or ``TF_STATE_BUCKET``), ``plan`` into a plan file and, for ``apply``, applies
exactly that plan, in ``terraform/environments/<env>``, through ``python-terraform``. Prints what the
plan creates, changes and destroys. ``apply --saved-plan`` applies the plan file an earlier ``plan``
left (with its ``dist/``) without building or planning again: what was reviewed is what is applied.
Production is applied only that way, and only with ``--approve-production``. Credentials come from
the environment (CircleCI: workload identity federation), never from argv. Dev and CI only: not
shipped with the functions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from jupiter_data.build import build_all, find_repo_root

ENVIRONMENTS = ("staging", "production")
PLAN_FILE = "jupiter.tfplan"


class DeployError(Exception):
    pass


class TerraformRunner(Protocol):
    """The subset of ``python_terraform.Terraform`` used here: (return code, stdout, stderr)."""

    def init(self, **kwargs: Any) -> tuple[int, str, str]: ...
    def plan(self, **kwargs: Any) -> tuple[int, str, str]: ...
    def apply(self, dir_or_plan: str | None = None, **kwargs: Any) -> tuple[int, str, str]: ...
    def show(self, *args: Any, **kwargs: Any) -> tuple[int, str, str]: ...


@dataclass(frozen=True)
class PlanSummary:
    create: int
    update: int
    delete: int
    replace: int

    def __str__(self) -> str:
        return (
            f"{self.create} to create, {self.update} to change, {self.replace} to replace, "
            f"{self.delete} to destroy"
        )


def summarise(plan_json: dict[str, Any]) -> PlanSummary:
    counts: Counter[str] = Counter()
    for change in plan_json.get("resource_changes", []):
        actions = change.get("change", {}).get("actions", [])
        if actions in (["delete", "create"], ["create", "delete"]):
            counts["replace"] += 1
        elif actions in (["create"], ["update"], ["delete"]):
            counts[actions[0]] += 1
    return PlanSummary(counts["create"], counts["update"], counts["delete"], counts["replace"])


def environment_dir(repo_root: Path, environment: str) -> Path:
    return repo_root / "terraform" / "environments" / environment


def deploy(
    action: str,
    environment: str,
    *,
    repo_root: Path,
    state_bucket: str,
    approve_production: bool,
    terraform: TerraformRunner,
    saved_plan: bool = False,
) -> PlanSummary:
    if action not in ("plan", "apply"):
        raise DeployError(f"unknown action {action!r}: plan or apply")
    if environment not in ENVIRONMENTS:
        raise DeployError(f"unknown environment {environment!r}: {' or '.join(ENVIRONMENTS)}")
    if action == "apply" and environment == "production" and not approve_production:
        raise DeployError("refusing to apply production without --approve-production")
    if action == "apply" and environment == "production" and not saved_plan:
        raise DeployError("production applies only a reviewed plan: run plan, then apply --saved-plan")
    if saved_plan and action != "apply":
        raise DeployError("--saved-plan is for apply")
    if not state_bucket:
        raise DeployError("no state bucket: pass --state-bucket or set TF_STATE_BUCKET")
    if saved_plan:  # the plan and the archives it uploads, as the plan job left them
        saved = (environment_dir(repo_root, environment) / PLAN_FILE, repo_root / "dist" / "manifest.json")
        if missing := [str(path) for path in saved if not path.is_file()]:
            raise DeployError(f"no saved plan to apply: {', '.join(missing)} missing")
    else:
        build_all(repo_root, repo_root / "dist")
    _check(terraform.init(backend_config={"bucket": state_bucket}, input=False, reconfigure=True), "init")
    if not saved_plan:
        code, out, err = terraform.plan(out=PLAN_FILE, input=False, detailed_exitcode=True)
        if code not in (0, 2):  # 2: the plan has changes
            raise DeployError(f"terraform plan failed ({code}):\n{err or out}")
    _, shown, _ = _check(terraform.show(PLAN_FILE, json=True), "show")
    summary = summarise(json.loads(shown))
    print(f"{environment}: {summary}", flush=True)
    if action == "apply":
        _check(terraform.apply(PLAN_FILE, input=False, skip_plan=True), "apply")
        print(f"{environment}: applied", flush=True)
    return summary


def _check(result: tuple[int, str, str], step: str) -> tuple[int, str, str]:
    code, out, err = result
    if code != 0:
        raise DeployError(f"terraform {step} failed ({code}):\n{err or out}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jupiter_data deploy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("action", choices=("plan", "apply"))
    parser.add_argument("--env", required=True, choices=ENVIRONMENTS)
    parser.add_argument("--state-bucket", default=os.environ.get("TF_STATE_BUCKET", ""))
    parser.add_argument("--approve-production", action="store_true", help="required to apply production")
    parser.add_argument(
        "--saved-plan",
        action="store_true",
        help=f"apply the {PLAN_FILE} and dist/ an earlier plan left, unchanged (required for production)",
    )
    args = parser.parse_args(argv)
    from python_terraform import Terraform  # dev dependency: CI and operators only

    root = find_repo_root()
    terraform = Terraform(working_dir=str(environment_dir(root, args.env)))
    try:
        deploy(
            args.action, args.env, repo_root=root, state_bucket=args.state_bucket,
            approve_production=args.approve_production, terraform=terraform, saved_plan=args.saved_plan,
        )  # fmt: skip
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
