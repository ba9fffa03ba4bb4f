"""Nodes for cluster tests, whose workers are other processes: a gate made of files, and the executor
factory each worker calls in its own process."""

from __future__ import annotations

import os
import time
from pathlib import Path

from graph import Executor, Folders, InputSpec, Node, NodeRegistry, NodeSchema, OutputSpec, RecentRunsCache, StringInput
from tests.server.nodes import make_registry

ANY = "*"


class FileGate(Node):
    """Writes `started_<tag>_<pid>` in the temp folder, then waits (honouring interrupts, reporting
    progress) until `release_<tag>` exists there: a test sees which process runs the job and decides when
    it may finish."""

    SCHEMA = NodeSchema(node_type="FileGate", category="test", outputs=[OutputSpec(type=ANY)],
                        inputs=[InputSpec(name="value", type=ANY), StringInput(name="tag", default="g")])

    def fingerprint(self, **_):
        return float("nan")

    def execute(self, ctx, *, value, tag):
        folder = Path(ctx.folders.temp)
        (folder / f"started_{tag}_{os.getpid()}").write_text(str(time.time()))
        ticks = 0
        while not (folder / f"release_{tag}").exists():
            ctx.check_interrupt()
            ticks += 1
            ctx.progress(ticks % 100, 100)
            time.sleep(0.02)
        return (value,)


def registry() -> NodeRegistry:
    reg = make_registry()
    reg.register_all([FileGate], source=__name__)
    return reg


def build_executor(folders: Folders) -> Executor:
    """What each worker process runs: the test nodes, its own cache."""
    return Executor(registry(), cache=RecentRunsCache(1), folders=folders, services={})
