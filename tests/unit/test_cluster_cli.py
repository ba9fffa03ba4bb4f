"""The --workers flags: which plans they make, and clear refusals of what they cannot mean."""

from __future__ import annotations

import pytest

from cli.args import parse_args
from server.cluster.cli import WorkerPlan, parse_workers, plan_from


def test_worker_specs_parse_to_plans():
    assert parse_workers("inprocess") is None
    assert parse_workers("local:2") == WorkerPlan(mode="local", count=2)
    assert parse_workers("ray:auto") == WorkerPlan(mode="ray", address="auto")
    assert parse_workers("ray://10.0.0.5:10001") == WorkerPlan(mode="ray", address="ray://10.0.0.5:10001")


@pytest.mark.parametrize("text", ["local:0", "local:x", "ray://host", "ray:", "gpu:2", "local:2 extra"])
def test_bad_worker_specs_are_refused_with_the_forms_that_work(text):
    with pytest.raises(ValueError, match="--workers"):
        parse_workers(text)


def test_serve_flags_make_the_plan_and_default_to_the_in_process_worker():
    assert plan_from(parse_args(["serve"])) is None
    plan = plan_from(parse_args(["serve", "--workers", "local:3", "--worker-cpus", "2", "--routing", "round-robin",
                                 "--worker-models", "2", "--worker-lease", "5"]))
    assert plan == WorkerPlan(mode="local", count=3, cpus_per_worker=2, routing="round-robin", model_capacity=2,
                              lease_s=5.0)
    with pytest.raises(SystemExit, match="--worker-lease"):
        plan_from(parse_args(["serve", "--workers", "local:1", "--worker-lease", "0.5"]))
    with pytest.raises(SystemExit, match="local:N"):
        plan_from(parse_args(["serve", "--workers", "everywhere"]))
