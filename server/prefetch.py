"""Loading the next queued job's models while the current job runs.

When a job starts, the worker asks the `Prefetcher` to watch it. Once that job's own model loads are
behind it (its loaders finished or came from the cache, or it started reporting progress), the
next pending job is validated the way the worker will validate it when claimed, and its model-loading
nodes with constant inputs get their `prefetch` hook called (graph/prefetch.py) on one background
thread at a lowered OS priority. So a queue over different checkpoints reads the next file while the
current one samples instead of after it.

It stops asking for loads once the running job ends (the next job then loads for itself) or the
queued job is deleted or claimed; a load already under way finishes and stays cached like any other.
Nothing it does can change a job: failures are logged, and the job's own load reports them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from graph import Executor, parse_api_workflow
from graph.events import Event, NodeFailed, NodeFinished, NodesCached, Progress, RunFinished, RunInterrupted
from graph.prefetch import Prefetched, prefetch_loads, prefetchable
from graph.validate import ValidationResult

from .jobs import PENDING, Job, JobStore

log = logging.getLogger("sumie.prefetch")

NICENESS = 10  # the prefetch thread's priority below the run thread's (Linux: per thread)


class LoadsDone:
    """A run's event listener: `opened` once the run's own loads are behind it; `ended` when the run ends."""

    def __init__(self, loaders: Iterable[str]) -> None:
        self._left = set(loaders)
        self._cond = threading.Condition()
        self.opened = not self._left
        self.ended = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, NodeFinished):
            self._left.discard(event.node_id)
        elif isinstance(event, NodesCached):
            self._left.difference_update(event.node_ids)
        elif isinstance(event, Progress):
            self._left.clear()  # computing now: whatever it still loads is not its first model
        elif isinstance(event, (RunFinished, RunInterrupted, NodeFailed)):
            self.end()
            return
        if not self._left and not self.opened:
            with self._cond:
                self.opened = True
                self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def wait(self) -> bool:
        """Block until the run's loads are done (True) or the run ended first (False)."""
        with self._cond:
            self._cond.wait_for(lambda: self.opened or self.ended)
            return not self.ended


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
    except (AttributeError, OSError):  # not Linux, or not permitted: it still runs, at normal priority
        pass


class Prefetcher:
    """Owns the background thread; `depth` is how many queued jobs ahead it prepares."""

    def __init__(self, *, store: JobStore, executor: Executor, scope: Any, enabled: bool = True,
                 depth: int = 1) -> None:
        self.store = store
        self.executor = executor
        self.scope = scope
        self.depth = depth
        self.enabled = enabled
        self.results: deque[tuple[str, list[Prefetched]]] = deque(maxlen=64)  # (prompt id, what each node did)
        self._pool = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="sumie-prefetch",
                                         initializer=_lower_priority) if enabled else None)
        self._stopping = False
        self._gate: LoadsDone | None = None

    def watch(self, job: Job, validation: ValidationResult) -> LoadsDone | None:
        """On the run thread as `job` starts: the listener to add to its run (None when prefetching is off).
        The caller ends it when the run is over, however it ended."""
        if self._pool is None or self._stopping:
            return None
        gate = self._gate = LoadsDone(prefetchable(self.executor, validation))
        try:
            self._pool.submit(self._after, gate, job.prompt_id)
        except RuntimeError:  # shut down meanwhile
            return None
        return gate

    def stop(self) -> None:
        self._stopping = True
        if self._gate is not None:
            self._gate.end()  # a thread waiting on it returns now
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _after(self, gate: LoadsDone, running_id: str) -> None:
        try:
            if not gate.wait():
                return
            for job in self.store.pending(limit=self.depth):
                if gate.ended or self._stopping:
                    return
                self._prepare(job, gate)
        except Exception:  # a prefetch is an optimisation: log it, never let it reach a job
            log.exception("prefetching after job %s failed", running_id)

    def _prepare(self, job: Job, gate: LoadsDone) -> None:
        validation = self.executor.validate(parse_api_workflow(job.prompt), job.outputs_to_execute)
        if not validation.ok:
            return  # it fails when claimed, with the usual report

        def wanted() -> bool:
            return not gate.ended and not self._stopping and self.store.state_of(job.prompt_id) == PENDING

        done = prefetch_loads(self.executor, validation, run_id=job.prompt_id, folders=self.scope.folders_for(job),
                              wanted=wanted)
        self.results.append((job.prompt_id, done))
        for item in done:
            log.debug("job %s node %s (%s): prefetch %s", job.prompt_id, item.node_id, item.class_type, item.outcome)
