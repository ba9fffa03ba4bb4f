"""The `serve` flags that choose where jobs run: in-process (the default), or worker actors on Ray."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass

from .routing import ROUTERS

_LOCAL = re.compile(r"local:(\d{1,3})")
_CLIENT = re.compile(r"ray://[^\s/]+:\d{1,5}")


@dataclass(frozen=True, kw_only=True)
class WorkerPlan:
    """Where the workers come from: `local` starts a private Ray instance on this machine with `count`
    workers; `ray` attaches to a running cluster (`address` "auto" or "ray://HOST:PORT") with one worker
    per GPU there, or per `cpus_per_worker` cores when it has no GPU."""

    mode: str  # "local" | "ray"
    count: int | None = None
    address: str | None = None
    cpus_per_worker: int | None = None
    model_capacity: int = 1  # checkpoints a worker keeps warm (the routing policy plans with it)
    routing: str = "affinity"
    lease_s: float = 30.0


def parse_workers(text: str) -> WorkerPlan | None:
    """`--workers`: "inprocess" (None), "local:N", "ray:auto" or "ray://HOST:PORT"."""
    text = text.strip()
    if text in ("", "inprocess"):
        return None
    match = _LOCAL.fullmatch(text)
    if match:
        count = int(match.group(1))
        if not 1 <= count <= 256:
            raise ValueError(f"--workers local:N needs 1 <= N <= 256, got {count}")
        return WorkerPlan(mode="local", count=count)
    if text == "ray:auto":
        return WorkerPlan(mode="ray", address="auto")
    if _CLIENT.fullmatch(text):
        return WorkerPlan(mode="ray", address=text)
    raise ValueError(f"--workers must be inprocess, local:N, ray:auto or ray://HOST:PORT, got {text[:80]!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workers (docs: README, 'Running on several GPUs or machines')")
    group.add_argument("--workers", default=os.environ.get("SUMIE_WORKERS", "inprocess"), metavar="WHERE",
                       help="inprocess (default: one worker inside the server), local:N (N worker processes on "
                            "this machine, one per GPU when there are GPUs), ray:auto or ray://HOST:PORT (a Ray "
                            "cluster); needs the `ray` extra except for inprocess; env SUMIE_WORKERS")
    group.add_argument("--worker-cpus", type=int, default=None, metavar="N",
                       help="CPU cores per worker (default: this machine's cores shared among local workers; "
                            "4 on a cluster without GPUs)")
    group.add_argument("--worker-models", type=int, default=1, metavar="N",
                       help="checkpoints one worker keeps warm, for routing (default 1)")
    group.add_argument("--routing", choices=sorted(ROUTERS), default="affinity",
                       help="which idle worker takes which job (default affinity: the one holding its checkpoint)")
    group.add_argument("--worker-lease", type=float, default=30.0, metavar="SECONDS",
                       help="a worker silent this long loses its job, which is re-queued (default 30)")


def plan_from(args: argparse.Namespace) -> WorkerPlan | None:
    """The plan the flags ask for (None: the in-process worker); bad values exit with a message."""
    try:
        plan = parse_workers(getattr(args, "workers", "inprocess") or "inprocess")
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if plan is None:
        return None
    cpus = getattr(args, "worker_cpus", None)
    if cpus is not None and cpus < 1:
        raise SystemExit("--worker-cpus must be at least 1")
    models = getattr(args, "worker_models", 1)
    if models < 1:
        raise SystemExit("--worker-models must be at least 1")
    lease = float(getattr(args, "worker_lease", 30.0))
    if not lease >= 2.0:
        raise SystemExit("--worker-lease must be at least 2 seconds")
    return WorkerPlan(mode=plan.mode, count=plan.count, address=plan.address, cpus_per_worker=cpus,
                      model_capacity=models, routing=getattr(args, "routing", "affinity"), lease_s=lease)
