"""Which idle worker runs which pending job: the routing policy, pure (no Ray, no store, no clock).

Loading a checkpoint costs seconds to minutes; running a job on a worker that already holds it costs
nothing extra. The affinity policy therefore, each time workers are idle:

1. **Starvation guard.** A job that has waited longer than `max_wait` seconds is served first, in
   queue order, on the idle worker that can take its model at least cost (step 3's cost).
2. **Affinity.** An idle worker that holds a waiting job's checkpoint takes the oldest such job; when
   it holds several wanted checkpoints it takes the one with the most demand. A worker keeps its model
   as long as jobs for it wait, so batches of one model stay together on one worker.
3. **Loading.** Jobs whose checkpoint no idle worker holds are grouped by checkpoint; the group with
   the most demand goes first, where demand = number of jobs + total seconds waited / `wait_weight`.
   It goes to the idle worker where loading it costs least: a free model slot costs 0; otherwise the
   worker evicts its least recently used model, and the cost is the demand still waiting for that
   model (evicting what nobody waits for is free). Ties go to the worker with the most free memory.
4. Jobs that load no checkpoint run on any idle worker, preferring the one whose models are wanted least.

Queue order (ComfyUI's `number`, front-of-queue included) is the order within a checkpoint and the
order of the starvation guard; across checkpoints the policy may reorder jobs to save loads.
`RoundRobinRouter` is the baseline: the oldest job to the next idle worker in turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# Inputs that name the checkpoint (or diffusion model) a workflow runs on.
MODEL_INPUTS = ("ckpt_name", "unet_name")


@dataclass(frozen=True, kw_only=True)
class WorkerView:
    """What the router knows of one idle worker."""

    worker_id: str
    models: tuple[str, ...] = ()  # checkpoints held warm, least recently used first
    capacity: int = 1  # checkpoints it can hold at once
    free_memory: int = 0  # bytes, for tie-breaking


@dataclass(frozen=True, kw_only=True)
class QueuedJob:
    """What the router knows of one pending job."""

    prompt_id: str
    model: str | None  # its checkpoint (None: it loads none)
    waited: float = 0.0  # seconds since it was queued


@dataclass(frozen=True)
class Assignment:
    prompt_id: str
    worker_id: str


class Router(Protocol):
    """A routing policy: pairs of (job, idle worker) to start now; each job and worker at most once."""

    def assign(self, idle: Sequence[WorkerView], pending: Sequence[QueuedJob]) -> list[Assignment]: ...


def job_model(prompt: Mapping[str, Any]) -> str | None:
    """The checkpoint an API-format prompt loads (the first loader's, by numeric node id), or None."""
    found: list[tuple[tuple[int, str], str]] = []
    for node_id, node in prompt.items():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            continue
        for name in MODEL_INPUTS:
            value = inputs.get(name)
            if isinstance(value, str) and value:
                key = str(node_id)
                found.append(((int(key) if key.isdigit() else 1 << 62, key), value))
    return min(found)[1] if found else None


@dataclass
class _Demand:
    count: int = 0
    waited: float = 0.0
    jobs: list[QueuedJob] = field(default_factory=list)

    def score(self, wait_weight: float) -> float:
        return self.count + self.waited / wait_weight


class AffinityRouter:
    """Model-affinity routing (the module docstring has the policy)."""

    def __init__(self, *, max_wait: float = 120.0, wait_weight: float = 30.0) -> None:
        self.max_wait = max_wait
        self.wait_weight = wait_weight

    def assign(self, idle: Sequence[WorkerView], pending: Sequence[QueuedJob]) -> list[Assignment]:
        free = {w.worker_id: w for w in idle}
        waiting = list(pending)
        out: list[Assignment] = []

        def take(job: QueuedJob, worker: WorkerView) -> None:
            out.append(Assignment(job.prompt_id, worker.worker_id))
            waiting.remove(job)
            del free[worker.worker_id]

        # 1. starvation guard
        for job in [j for j in waiting if j.waited > self.max_wait]:
            if not free:
                return out
            take(job, self._cheapest(free.values(), job.model, self._demand(waiting)))
        # 2. affinity: idle workers holding a wanted checkpoint
        for worker in list(free.values()):
            demand = self._demand(waiting)
            held = [m for m in worker.models if m in demand]
            if held:
                best = max(held, key=lambda m: demand[m].score(self.wait_weight))
                take(demand[best].jobs[0], worker)
        # 3. loading: the most wanted checkpoint nobody idle holds, to the cheapest worker
        while free:
            demand = self._demand(waiting)
            models = [m for m in demand if m is not None]
            if not models:
                break
            best = max(models, key=lambda m: (demand[m].score(self.wait_weight), -_first_index(waiting, m)))
            take(demand[best].jobs[0], self._cheapest(free.values(), best, demand))
        # 4. jobs that load no checkpoint
        for job in [j for j in waiting if j.model is None]:
            if not free:
                break
            take(job, self._cheapest(free.values(), None, self._demand(waiting)))
        return out

    def _demand(self, waiting: Sequence[QueuedJob]) -> dict[str | None, _Demand]:
        demand: dict[str | None, _Demand] = {}
        for job in waiting:
            entry = demand.setdefault(job.model, _Demand())
            entry.count += 1
            entry.waited += job.waited
            entry.jobs.append(job)
        return demand

    def _cost(self, worker: WorkerView, model: str | None, demand: Mapping[str | None, _Demand]) -> float:
        if model is None:  # loads nothing: prefer the worker whose models are wanted least
            return sum(demand[m].score(self.wait_weight) for m in worker.models if m in demand)
        if model in worker.models:
            return -1.0
        if len(worker.models) < worker.capacity:
            return 0.0
        evicted = worker.models[0]
        return 1.0 + (demand[evicted].score(self.wait_weight) if evicted in demand else 0.0)

    def _cheapest(self, workers: Any, model: str | None, demand: Mapping[str | None, _Demand]) -> WorkerView:
        return min(workers, key=lambda w: (self._cost(w, model, demand), -w.free_memory, w.worker_id))


def _first_index(waiting: Sequence[QueuedJob], model: str) -> int:
    return next(i for i, j in enumerate(waiting) if j.model == model)


class RoundRobinRouter:
    """The baseline: jobs in queue order, each to the next idle worker in a fixed rotation."""

    def __init__(self) -> None:
        self._turn = 0

    def assign(self, idle: Sequence[WorkerView], pending: Sequence[QueuedJob]) -> list[Assignment]:
        workers = sorted(idle, key=lambda w: w.worker_id)
        out: list[Assignment] = []
        if not workers:
            return out
        start = self._turn % len(workers)
        rotation = workers[start:] + workers[:start]
        for job, worker in zip(pending, rotation, strict=False):
            out.append(Assignment(job.prompt_id, worker.worker_id))
        self._turn += len(out)
        return out


ROUTERS = {"affinity": AffinityRouter, "round-robin": RoundRobinRouter}


def make_router(name: str) -> Router:
    try:
        return ROUTERS[name]()
    except KeyError:
        raise ValueError(f"unknown routing policy {name!r}; known: {', '.join(ROUTERS)}") from None


@dataclass
class SimulatedWorker:
    """One worker of `simulate`: its warm checkpoints (LRU first) and the loads it did."""

    worker_id: str
    capacity: int = 1
    models: list[str] = field(default_factory=list)
    loads: int = 0
    busy_until: float = 0.0

    def run(self, model: str | None) -> bool:
        """Make `model` warm (evicting the least recently used); True when that meant a load."""
        if model is None:
            return False
        if model in self.models:
            self.models.remove(model)
            self.models.append(model)
            return False
        if len(self.models) >= self.capacity:
            self.models.pop(0)
        self.models.append(model)
        self.loads += 1
        return True


def simulate(router: Router, models: Sequence[str | None], *, workers: int = 2, capacity: int = 1,
             run_s: float = 1.0, load_s: float = 5.0) -> tuple[int, float]:
    """Run a queue of jobs (their checkpoints, all queued at t=0) on a simulated cluster.

    Each job takes `run_s`, plus `load_s` when its worker must load the checkpoint. Returns
    (checkpoint loads, time until the last job finished).
    """
    cluster = [SimulatedWorker(f"w{i}", capacity=capacity) for i in range(workers)]
    queue = [QueuedJob(prompt_id=f"j{i}", model=m) for i, m in enumerate(models)]
    now = 0.0
    while queue:
        idle = [w for w in cluster if w.busy_until <= now]
        views = [WorkerView(worker_id=w.worker_id, models=tuple(w.models), capacity=w.capacity) for w in idle]
        waiting = [QueuedJob(prompt_id=j.prompt_id, model=j.model, waited=now) for j in queue]
        by_id = {w.worker_id: w for w in cluster}
        for a in router.assign(views, waiting):
            job = next(j for j in queue if j.prompt_id == a.prompt_id)
            queue.remove(job)
            worker = by_id[a.worker_id]
            worker.busy_until = now + run_s + (load_s if worker.run(job.model) else 0.0)
        now = min((w.busy_until for w in cluster if w.busy_until > now), default=now + run_s)
    return sum(w.loads for w in cluster), max(w.busy_until for w in cluster)
