"""Prefetching a queued workflow's model loads before it runs.

A node that reads a model file may define `prefetch(ctx, **constants)`: the same load its `execute`
does, asked of the model manager ahead of time (nodes/models/prefetch.py says how that load differs).
Only nodes whose inputs are all constants qualify: a load that depends on another node's output
cannot be known before the run. Nothing here may affect any run: a hook that raises is logged and
forgotten, and the job's own load reports any problem with its file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .errors import Interrupted
from .executor import Executor
from .node import Folders, InterruptToken, NodeContext
from .validate import ValidationResult
from .workflow import Link

log = logging.getLogger("sumie.prefetch")


@dataclass(frozen=True, kw_only=True)
class Prefetched:
    node_id: str
    class_type: str
    outcome: str  # what the hook returned ("loaded", "cached", "skipped: ...", "failed: ...")


def prefetchable(executor: Executor, validation: ValidationResult) -> list[str]:
    """Ids of the nodes (in run order) whose loads can be done before the run: a prefetch hook, no links."""
    nodes = validation.workflow.nodes
    found = []
    for nid in validation.order:
        node = nodes[nid]
        node_def = executor.registry.get(node.class_type)
        if node_def is None or not callable(getattr(node_def.cls, "prefetch", None)):
            continue
        if any(type(v) is Link for name, v in node.inputs.items() if name in node_def.inputs):
            continue
        found.append(nid)
    return found


def prefetch_loads(executor: Executor, validation: ValidationResult, *, run_id: str, folders: Folders | None,
                   wanted: Callable[[], bool] = lambda: True) -> list[Prefetched]:
    """Run the prefetch hooks of a validated workflow, in run order, while `wanted()` stays true."""
    done: list[Prefetched] = []
    token = InterruptToken()
    for nid in prefetchable(executor, validation):
        if not wanted():
            token.set("no longer wanted")
            break
        node = validation.workflow.nodes[nid]
        node_def = executor.registry[node.class_type]
        constants = {k: v for k, v in node.inputs.items() if k in node_def.inputs}
        ctx = NodeContext(node_id=nid, class_type=node.class_type, run_id=run_id, interrupt=token,
                          folders=folders or executor.folders, services=executor.services, limits=executor.limits)
        try:
            outcome = node_def.cls().prefetch(ctx, **constants)
        except Interrupted:
            break
        except Exception as exc:  # never the run's business: its own load reports the problem
            log.info("node %s (%s): prefetch failed: %s: %s", nid, node.class_type, type(exc).__name__, exc)
            outcome = f"failed: {exc}"
        done.append(Prefetched(node_id=nid, class_type=node.class_type, outcome=str(outcome)))
    return done


__all__ = ["Prefetched", "prefetch_loads", "prefetchable"]
