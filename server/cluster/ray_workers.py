"""Worker actors on Ray Core: one actor per GPU (or per N CPU cores), each a `WorkerRuntime`.

Needs the optional `ray` extra. `local:N` starts a private Ray instance on this machine, bound to
loopback, without the dashboard; `ray:auto` and `ray://HOST:PORT` attach to a cluster started with
`ray start` (README: "Running on several GPUs or machines"). Actors get the repository on their
PYTHONPATH, so every machine needs the same checkout at the same path; outputs are written by the
actors themselves into the configured output folder, which must therefore be the same shared folder
on every machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, WorkerCrashedError

from graph import Executor

from .cli import WorkerPlan
from .runtime import WorkerRuntime

log = logging.getLogger("sumie.cluster.ray")

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CLUSTER_CPUS = 4


class RayBackend:
    """Ray's part of the cluster (server/cluster/pool.py's Backend)."""

    lost_errors = (RayActorError, ActorDiedError, ActorUnavailableError, WorkerCrashedError)

    def __init__(self, plan: WorkerPlan, factory: Callable[[], Executor], *, num_cpus: int | None = None) -> None:
        self.plan = plan
        self.factory = factory
        self.num_cpus = num_cpus  # local mode: cores Ray may use (default: all of this machine's)
        self.cpus = 1.0
        self.gpus = 0.0
        self._started = False
        self._actor = ray.remote(WorkerRuntime)
        self._incarnation = 0

    def connect(self) -> int:
        env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        if self.plan.mode == "local":
            ray.init(address="local", num_cpus=self.num_cpus or os.cpu_count() or 1, include_dashboard=False,
                     _node_ip_address="127.0.0.1", namespace="sumie", runtime_env={"env_vars": env},
                     configure_logging=False, log_to_driver=True)
        else:
            _token_auth_if_available()
            ray.init(address=self.plan.address, namespace="sumie", runtime_env={"env_vars": env},
                     configure_logging=False, log_to_driver=True)
        self._started = True
        resources = ray.cluster_resources()
        total_cpus = float(resources.get("CPU", 1.0))
        total_gpus = float(resources.get("GPU", 0.0))
        if self.plan.mode == "local":
            count = int(self.plan.count or 1)
            self.gpus = (1.0 if total_gpus >= count else total_gpus / count) if total_gpus else 0.0
            self.cpus = float(self.plan.cpus_per_worker or max(1, int(total_cpus // count)))
        elif total_gpus >= 1:
            count = int(total_gpus)
            self.gpus = 1.0
            self.cpus = float(self.plan.cpus_per_worker or max(1, int(total_cpus // count)))
        else:  # no GPU: workers of N cores (4 by default, or the whole cluster when it has fewer)
            self.cpus = float(self.plan.cpus_per_worker or min(DEFAULT_CLUSTER_CPUS, max(1, int(total_cpus))))
            count = max(1, int(total_cpus // self.cpus))
        log.info("Ray cluster: %.0f CPU, %.0f GPU; %d worker(s) of %.0f CPU and %.2g GPU", total_cpus, total_gpus,
                 count, self.cpus, self.gpus)
        return count

    def spawn(self, worker_id: str) -> Any:
        self._incarnation += 1
        return self._actor.options(
            name=f"sumie-{worker_id}-{os.getpid()}-{self._incarnation}", num_cpus=self.cpus, num_gpus=self.gpus,
            max_restarts=0, max_concurrency=4,
        ).remote(self.factory, worker_id, model_capacity=self.plan.model_capacity, threads=max(1, int(self.cpus)))

    async def call(self, handle: Any, method: str, *args: Any) -> Any:
        return await getattr(handle, method).remote(*args)

    async def stream(self, handle: Any, job: dict[str, Any], *, previews: bool,
                     job_timeout: float | None) -> AsyncIterator[tuple[Any, ...]]:
        generator = handle.run.options(num_returns="streaming").remote(job, previews=previews,
                                                                       job_timeout=job_timeout)
        async for ref in generator:
            yield await ref

    def kill(self, handle: Any) -> None:
        try:
            ray.kill(handle, no_restart=True)
        except Exception as exc:  # already gone, or the cluster is
            log.debug("killing a worker actor: %s", exc)

    def shutdown(self) -> None:
        if self._started:
            ray.shutdown()
            self._started = False


def _token_auth_if_available() -> None:
    """Attaching to a cluster started by `ray start`, which turns Ray's token authentication on by default:
    ray.init only looks for the token when it finds the cluster itself, not at an address given to it
    (RAY_ADDRESS, ray://), and is then refused with a bare "failed to connect". With RAY_AUTH_MODE unset
    and a token at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), send it: Ray's own
    switch for that, which also refreshes its cached configuration."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
