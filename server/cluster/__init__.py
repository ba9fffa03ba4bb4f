"""Running jobs on several workers (GPUs, machines) through Ray Core, with the job store as the truth.

    cli.py          the `--workers` flags and the WorkerPlan they make (no Ray needed)
    routing.py      which idle worker takes which job: the model-affinity policy (pure)
    leases.py       job leases in the SQLite store, and the schema migration that adds them
    runtime.py      a worker's own executor, warm models and cache (the body of an actor; no Ray)
    pool.py         the server's dispatcher: claims under leases, relays streams, replaces dead workers
    ray_workers.py  the Ray backend: starting/attaching a cluster, one actor per GPU or N cores

Only ray_workers.py imports Ray; without the `ray` extra everything else still works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graph import Executor

from .cli import WorkerPlan


def make_cluster_worker(plan: WorkerPlan, factory: Callable[[], Executor], *, num_cpus: int | None = None,
                        **worker: Any) -> Any:
    """A ClusterWorker on Ray for `plan`; `worker` holds the in-process Worker's arguments (store, executor,
    hub, options). `factory` builds each worker's executor in its own process, so it must be picklable."""
    try:
        from .ray_workers import RayBackend
    except ImportError as exc:
        raise RuntimeError(f"--workers {plan.mode} needs Ray: pip install 'sumie[ray]' ({exc})") from None
    from .pool import ClusterWorker
    from .routing import make_router

    backend = RayBackend(plan, factory, num_cpus=num_cpus)
    return ClusterWorker(backend=backend, router=make_router(plan.routing), lease_s=plan.lease_s, **worker)
