"""The routing policy on simulated clusters (no Ray): affinity, demand-ranked loading, batching, aging."""

from __future__ import annotations

import random

import pytest

from server.cluster.routing import (
    AffinityRouter,
    Assignment,
    QueuedJob,
    RoundRobinRouter,
    WorkerView,
    job_model,
    make_router,
    simulate,
)


def jobs(*models: str | None, waited: float = 0.0) -> list[QueuedJob]:
    return [QueuedJob(prompt_id=f"j{i}", model=m, waited=waited) for i, m in enumerate(models)]


def test_an_idle_worker_holding_the_checkpoint_takes_its_job_even_when_it_is_not_first():
    idle = [WorkerView(worker_id="a", models=("sdxl",)), WorkerView(worker_id="b", models=("sd15",))]
    got = AffinityRouter().assign(idle, jobs("sd15", "sdxl"))
    assert sorted(got, key=lambda a: a.worker_id) == [Assignment("j1", "a"), Assignment("j0", "b")]


def test_the_model_with_most_demand_is_loaded_first_on_the_worker_losing_least():
    # Nobody holds "c" (3 jobs) or "d" (1 job). Worker "a" holds "x", which one job still wants;
    # worker "b" holds "y", which nobody wants: "b" loads "c" and "a" stays for "x".
    idle = [WorkerView(worker_id="a", models=("x",)), WorkerView(worker_id="b", models=("y",))]
    pending = jobs("d", "c", "c", "c", "x")
    got = {a.worker_id: a.prompt_id for a in AffinityRouter().assign(idle, pending)}
    assert got == {"a": "j4", "b": "j1"}


def test_waiting_time_counts_as_demand():
    idle = [WorkerView(worker_id="a")]
    pending = [QueuedJob(prompt_id="old", model="rare", waited=300.0),
               *[QueuedJob(prompt_id=f"n{i}", model="common", waited=1.0) for i in range(3)]]
    got = AffinityRouter(max_wait=1e9, wait_weight=30.0).assign(idle, pending)
    assert got == [Assignment("old", "a")]  # 1 + 300/30 = 11 beats 3 + 3/30


def test_a_job_past_max_wait_is_served_before_affinity():
    idle = [WorkerView(worker_id="a", models=("m",))]
    pending = [QueuedJob(prompt_id="starving", model="other", waited=121.0),
               QueuedJob(prompt_id="warm", model="m", waited=0.0)]
    assert AffinityRouter(max_wait=120.0).assign(idle, pending) == [Assignment("starving", "a")]


def test_jobs_without_a_checkpoint_go_to_the_worker_whose_models_are_wanted_least():
    idle = [WorkerView(worker_id="a", models=("m",)), WorkerView(worker_id="b", models=("n",))]
    pending = [QueuedJob(prompt_id="plain", model=None), QueuedJob(prompt_id="later", model="m", waited=0.0)]
    got = {a.prompt_id: a.worker_id for a in AffinityRouter().assign(idle, pending)}
    assert got == {"later": "a", "plain": "b"}


def test_each_job_and_worker_is_assigned_at_most_once():
    rng = random.Random(7)
    for _ in range(200):
        idle = [WorkerView(worker_id=f"w{i}", models=tuple(rng.sample("abcd", rng.randint(0, 2))), capacity=2)
                for i in range(rng.randint(1, 5))]
        pending = [QueuedJob(prompt_id=f"j{i}", model=rng.choice(["a", "b", "c", "d", None]),
                             waited=rng.uniform(0, 200)) for i in range(rng.randint(0, 12))]
        got = AffinityRouter().assign(idle, pending)
        assert len({a.prompt_id for a in got}) == len(got) == len({a.worker_id for a in got})
        assert len(got) == min(len(idle), len(pending))  # no idle worker is left idle while jobs wait


def test_batches_of_one_model_stay_on_one_worker_and_loads_drop_against_round_robin():
    rng = random.Random(3)
    queue = [rng.choice(["a", "b", "c"]) for _ in range(60)]
    affinity_loads, affinity_time = simulate(AffinityRouter(), queue, workers=2)
    rr_loads, rr_time = simulate(RoundRobinRouter(), queue, workers=2)
    assert affinity_loads <= 6  # each checkpoint loaded about once per worker at most
    assert rr_loads > 3 * affinity_loads
    assert affinity_time < rr_time


def test_round_robin_rotates_through_idle_workers():
    router = RoundRobinRouter()
    idle = [WorkerView(worker_id="a"), WorkerView(worker_id="b")]
    assert router.assign(idle, jobs("x")) == [Assignment("j0", "a")]
    assert router.assign(idle, jobs("x")) == [Assignment("j0", "b")]


def test_the_checkpoint_of_a_prompt_is_its_first_loaders():
    prompt = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "b.safetensors"}},
              "12": {"class_type": "UNETLoader", "inputs": {"unet_name": "z.safetensors"}},
              "3": {"class_type": "KSampler", "inputs": {"model": ["4", 0]}}}
    assert job_model(prompt) == "b.safetensors"  # node 4 before node 12
    assert job_model({"1": {"class_type": "Const", "inputs": {"value": 1}}}) is None
    assert job_model({"1": "not a node"}) is None


def test_an_unknown_policy_is_refused_by_name():
    with pytest.raises(ValueError, match="known: affinity, round-robin"):
        make_router("fastest")
