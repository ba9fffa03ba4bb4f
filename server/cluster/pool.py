"""The server's side of a cluster: routes pending jobs to worker actors under leases, relays their streams.

`ClusterWorker` stands where the in-process `Worker` stands (same methods for the API), but runs jobs
on workers a backend provides (server/cluster/ray_workers.py). The job store stays the source of
truth: a job is claimed for a worker with a lease, renewed while the worker streams (its messages
arrive in batches, with a heartbeat when it has nothing to say; the store is written at most once a
RENEW_S per job, not per message); a worker that dies is released at once and one that falls silent
loses the job when its lease expires; either way the job is re-queued and only the lease holder can record a result.
Each worker's websocket messages reach the hub unchanged; /interrupt goes to the worker running the job.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from graph import InterruptToken

from ..jobs import INTERRUPTED, Job
from ..relay import RunState
from ..worker import Current, Worker
from .routing import QueuedJob, Router, WorkerView, job_model
from .runtime import SHUTDOWN

log = logging.getLogger("sumie.cluster")

REFRESH_S = 5.0  # how often workers' descriptions (device memory) are refreshed; warm models come with each result
RENEW_S = 1.0  # a running job's lease is renewed at most this often (and at least every lease_s / 4)
MAX_BACKOFF_S = 30.0


class Backend(Protocol):
    """Starts and reaches worker processes (Ray actors)."""

    lost_errors: tuple[type[BaseException], ...]  # raised by a call to a worker that is gone

    def connect(self) -> int: ...  # blocking: attach/start the cluster; how many workers to run

    def spawn(self, worker_id: str) -> Any: ...  # a handle to a new worker (starting)

    async def call(self, handle: Any, method: str, *args: Any) -> Any: ...

    def stream(self, handle: Any, job: dict[str, Any], *, previews: bool, job_timeout: float | None) -> Any: ...

    def kill(self, handle: Any) -> None: ...

    def shutdown(self) -> None: ...


@dataclass(kw_only=True)
class Slot:
    """One worker position: its current actor (replaced when it dies) and what it last said of itself."""

    worker_id: str
    handle: Any = None
    status: str = "starting"  # starting | ready | restarting
    info: dict[str, Any] = field(default_factory=dict)
    run: asyncio.Task[None] | None = None
    prompt_id: str | None = None
    failures: int = 0
    restarts: int = 0
    refreshed: float = 0.0


class ClusterWorker(Worker):
    def __init__(self, *, backend: Backend, router: Router, lease_s: float = 30.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backend = backend
        self.router = router
        self.lease_s = lease_s
        self.slots: list[Slot] = []
        self.runs: dict[str, Current] = {}
        self._models: dict[str, str | None] = {}  # prompt_id -> its checkpoint (parsed once)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connect_error: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._main(), name="sumie-cluster")

    async def _main(self) -> None:
        try:
            count = await asyncio.to_thread(self.backend.connect)
        except Exception as exc:
            self.connect_error = f"{type(exc).__name__}: {exc}"
            log.error("cannot start the cluster's workers: %s; jobs stay queued", self.connect_error)
            return
        self.slots = [Slot(worker_id=f"w{i}") for i in range(count)]
        log.info("cluster: %d worker(s), routing %s, leases of %.0f s", count, type(self.router).__name__,
                 self.lease_s)
        for slot in self.slots:
            self._spawn(slot)
        await self._dispatch()

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn(self, slot: Slot, delay: float = 0.0) -> None:
        async def start() -> None:
            if delay:
                await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                slot.handle = await asyncio.to_thread(self.backend.spawn, slot.worker_id)
                slot.info = await self.backend.call(slot.handle, "describe")
            except Exception as exc:
                slot.failures += 1
                wait = min(MAX_BACKOFF_S, 0.5 * 2 ** slot.failures)
                log.error("worker %s did not start (%s); trying again in %.1f s", slot.worker_id, exc, wait)
                self._spawn(slot, wait)
                return
            slot.status, slot.refreshed = "ready", time.monotonic()
            log.info("worker %s ready (pid %s on %s)", slot.worker_id, slot.info.get("pid"), slot.info.get("host"))
            self._wake.set()

        self._background(start())

    async def stop(self) -> None:
        """Interrupt the running jobs for a restart: they go back to the queue, no attempt used."""
        self._stopping = True
        self._wake.set()
        for prompt_id in list(self.runs):
            self._interrupt_run(prompt_id, SHUTDOWN)
        running = [s.run for s in self.slots if s.run is not None]
        if running:
            await asyncio.wait(running, timeout=self.options.shutdown_grace)
        for prompt_id in list(self.runs):
            self.store.requeue(prompt_id, uncount_attempt=True)
        tasks = [t for t in (self._task, *self._tasks, *running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for slot in self.slots:
            if slot.handle is not None:
                self.backend.kill(slot.handle)
        await asyncio.to_thread(self.backend.shutdown)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- routing --------------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        while not self._stopping:
            self._wake.clear()
            for item in self.store.expire_leases(max_attempts=self.options.max_attempts):
                log.error("job %s: its worker stopped answering; %s", item.prompt_id, item.action)
                self._stop_lost_run(item.prompt_id)
            self._assign()
            self._refresh()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except TimeoutError:
                pass

    def _assign(self) -> None:
        idle = {s.worker_id: s for s in self.slots if s.status == "ready" and s.run is None}
        if not idle:
            return
        pending = self.store.pending_brief()  # no prompt parsed but a new job's, once
        if not pending:
            return
        now = time.time()
        views = [WorkerView(worker_id=s.worker_id, models=tuple(s.info.get("models", ())),
                            capacity=int(s.info.get("model_capacity", 1)), free_memory=_free_memory(s.info))
                 for s in idle.values()]
        queued = [QueuedJob(prompt_id=prompt_id, model=self._model_of(prompt_id), waited=max(0.0, now - created))
                  for prompt_id, created in pending]
        for assignment in self.router.assign(views, queued):
            slot = idle[assignment.worker_id]
            claimed = self.store.claim_leased(assignment.prompt_id, worker=slot.worker_id, lease_s=self.lease_s)
            if claimed is None:
                continue
            job, lease = claimed
            slot.prompt_id = job.prompt_id
            slot.run = asyncio.get_running_loop().create_task(self._run(slot, job, lease))
        live = {prompt_id for prompt_id, _ in pending} | set(self.runs)
        self._models = {k: v for k, v in self._models.items() if k in live}

    def _model_of(self, prompt_id: str) -> str | None:
        if prompt_id not in self._models:
            job = self.store.get(prompt_id)
            self._models[prompt_id] = job_model(job.prompt) if job is not None else None
        return self._models[prompt_id]

    def _refresh(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.status == "ready" and now - slot.refreshed > REFRESH_S:
                slot.refreshed = now
                self._background(self._describe(slot))

    async def _describe(self, slot: Slot) -> None:
        handle = slot.handle
        try:
            info = await self.backend.call(handle, "describe")
        except self.backend.lost_errors:
            if slot.handle is handle and slot.run is None:
                self._lost(slot, "it died while idle")
            return
        if slot.handle is handle and info.get("time", 0) >= slot.info.get("time", 0):  # not older than a result's
            slot.info = info

    # -- one job on one worker ------------------------------------------------------------------
    async def _run(self, slot: Slot, job: Job, lease: str) -> None:
        state = RunState(prompt_id=job.prompt_id, client_id=job.client_id)
        current = Current(job=job, token=InterruptToken(), state=state)
        self.runs[job.prompt_id] = self.current = current
        self.hub.runs[job.prompt_id] = state
        wants = job.extra_data.get("preview_method")
        previews = (wants not in (None, "none", "default")) or (self.options.preview_method != "none" and
                                                                 wants != "none")
        payload = {"prompt_id": job.prompt_id, "client_id": job.client_id, "prompt": job.prompt,
                   "extra_data": job.extra_data, "outputs_to_execute": job.outputs_to_execute}
        started = renewed = time.monotonic()
        renew_every = min(RENEW_S, self.lease_s / 4)
        handle = slot.handle
        try:
            stream = self.backend.stream(handle, payload, previews=previews, job_timeout=self.options.job_timeout)
            while True:
                try:
                    batch = await asyncio.wait_for(anext(stream), timeout=self.lease_s)
                except StopAsyncIteration:
                    break
                now = time.monotonic()
                if now - renewed >= renew_every:
                    renewed = now
                    if not self.store.renew(job.prompt_id, lease, lease_s=self.lease_s):
                        log.warning("job %s: lease lost while %s ran it; its result is ignored", job.prompt_id,
                                    slot.worker_id)
                        self._lost(slot, "its lease expired")
                        return
                for item in batch:
                    if item[0] == "done":
                        slot.info.update(item[6])
                        self._record(job, lease, item)
                        slot.failures = 0
                        self.durations.append(time.monotonic() - started)
                        return
                    self._relay(state, item)
        except (TimeoutError, *self.backend.lost_errors) as exc:
            reason = f"no word for {self.lease_s:.0f} s" if isinstance(exc, TimeoutError) else \
                f"{type(exc).__name__}"
            for item in self.store.release(job.prompt_id, lease, max_attempts=self.options.max_attempts,
                                           reason=reason):
                log.error("job %s: worker %s was lost (%s); %s", item.prompt_id, slot.worker_id, reason, item.action)
                if item.action == "worker_lost":
                    self._finished(job, None)
            self._lost(slot, reason)
        except Exception:  # the call itself failed (a bug, a result that cannot be sent): not the job's fault
            log.exception("job %s: running it on %s failed", job.prompt_id, slot.worker_id)
            for item in self.store.release(job.prompt_id, lease, max_attempts=self.options.max_attempts,
                                           reason="the call to the worker failed"):
                if item.action == "worker_lost":
                    self._finished(job, None)
        finally:
            self.runs.pop(job.prompt_id, None)
            self.hub.runs.pop(job.prompt_id, None)
            if self.current is current:
                self.current = next(iter(self.runs.values()), None)
            if slot.handle is handle:
                slot.run, slot.prompt_id = None, None
            self._wake.set()

    def _relay(self, state: RunState, item: tuple[Any, ...]) -> None:
        if item[0] == "text":
            _mirror(state, item[1])
            self.hub.send_text(item[1], item[2])
        elif item[0] == "preview":
            self.hub.send_preview(item[1], item[2])

    def _record(self, job: Job, lease: str, item: tuple[Any, ...]) -> None:
        _, status, outputs, messages, terminal, interrupted_for, _info = item
        if status == INTERRUPTED and interrupted_for == SHUTDOWN:
            self.store.requeue(job.prompt_id, uncount_attempt=True)
            return
        if self.store.finish(job.prompt_id, status=status, outputs=outputs, messages=messages,
                             max_history=self.options.max_history, lease=lease):
            self._finished(job, tuple(terminal) if terminal is not None else None)
        else:
            log.warning("job %s finished after its lease was given up; the result is ignored", job.prompt_id)

    def _lost(self, slot: Slot, reason: str) -> None:
        """The slot's actor is gone or untrusted: kill what is left of it and start a new one."""
        if slot.status == "restarting":
            return
        log.warning("worker %s lost (%s); starting a new one", slot.worker_id, reason)
        if slot.handle is not None:
            self.backend.kill(slot.handle)
        slot.status, slot.handle, slot.restarts = "restarting", None, slot.restarts + 1
        slot.run, slot.prompt_id = None, None
        self._spawn(slot, min(MAX_BACKOFF_S, 0.2 * 2 ** slot.failures))
        slot.failures += 1

    def _stop_lost_run(self, prompt_id: str) -> None:
        for slot in self.slots:
            if slot.prompt_id == prompt_id and slot.run is not None:
                slot.run.cancel()
                self._lost(slot, "its lease expired")

    # -- requests from the API ------------------------------------------------------------------
    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Stop that job on the worker running it; without a prompt_id, every running job."""
        targets = [p for p in self.runs if prompt_id is None or p == prompt_id]
        for target in targets:
            self._interrupt_run(target, "interrupted")
        return bool(targets)

    def _interrupt_run(self, prompt_id: str, reason: str) -> None:
        for slot in self.slots:
            if slot.prompt_id == prompt_id and slot.handle is not None:
                self._background(self._call_quietly(slot, "interrupt", prompt_id, reason))

    async def _call_quietly(self, slot: Slot, method: str, *args: Any) -> Any:
        try:
            return await self.backend.call(slot.handle, method, *args)
        except self.backend.lost_errors as exc:
            log.warning("worker %s: %s failed: %s", slot.worker_id, method, exc)
            return None

    async def free(self, *, unload_models: bool, free_memory: bool) -> None:
        ready = [s for s in self.slots if s.status == "ready"]
        await asyncio.gather(*(self._call_quietly(s, "free", unload_models, free_memory) for s in ready))
        for slot in ready:
            self._background(self._describe(slot))

    def describe(self) -> list[dict[str, Any]] | None:
        """Every worker for /queue and /system_stats: its state, device, memory, warm models, current job."""
        out = []
        for slot in self.slots:
            info = dict(slot.info)
            info.update({"id": slot.worker_id, "status": slot.status, "current_job": slot.prompt_id,
                         "restarts": slot.restarts})
            out.append(info)
        if not out and self.connect_error:
            out.append({"id": "cluster", "status": "failed", "error": self.connect_error})
        return out


def _free_memory(info: dict[str, Any]) -> int:
    return sum(int(d.get("vram_free") or 0) for d in info.get("devices", ()) if isinstance(d, dict))


_MIRRORED = frozenset({"execution_start", "execution_cached", "executing", "progress", "executed"})


def _mirror(state: RunState, text: str) -> None:
    """Keep the server's copy of a remote run's state, for clients that reconnect mid-run. Only the
    messages it needs are parsed (not progress_state, which carries every node of the graph)."""
    if text.startswith('{"type":"'):
        end = text.find('"', 9)
        if end > 0 and text[9:end] not in _MIRRORED:
            return
    try:
        message = json.loads(text)
    except ValueError:
        return
    kind, data = message.get("type"), message.get("data")
    if kind == "execution_start":
        state.start = data
    elif kind == "execution_cached":
        state.cached = data
    elif kind == "executing":
        state.current, state.progress = data, None
    elif kind == "progress":
        state.progress = data
    elif kind == "executed":
        state.executed.append(data)
