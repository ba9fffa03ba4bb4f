"""The queue runner: takes the next pending job, runs it on one dedicated thread, records the result.

One prompt at a time (one device); the executor is synchronous, so it runs off the event loop and
the API stays responsive. The job is validated again from what the store holds when it is claimed
(the submit-time check answered the client; the registry or the store may have changed since).
History is written before clients hear the job is done. While a job runs, the next one's model files
are loaded ahead (server/prefetch.py).

Calls go one way: the worker drives a relay per run, and both send through the hub; the hub calls
neither (it replays the run the worker tells it about to a client that reconnects).
"""

from __future__ import annotations

import asyncio
import logging
import math
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from graph import Executor, InterruptToken, RunRequest, parse_api_workflow

from .jobs import DONE, ERROR, INTERRUPTED, Job, JobStore
from .options import ServerOptions
from .prefetch import Prefetcher
from .relay import Relay, RunState
from .users import RunScope
from .ws import Hub

log = logging.getLogger("sumie.worker")

SHUTDOWN = "shutdown"


@dataclass(kw_only=True)
class Current:
    job: Job
    token: InterruptToken
    state: RunState


class Worker:
    def __init__(self, *, store: JobStore, executor: Executor, hub: Hub, options: ServerOptions) -> None:
        self.store = store
        self.executor = executor
        self.hub = hub
        self.options = options
        self.current: Current | None = None
        self.durations: deque[float] = deque(maxlen=20)
        self._wake = asyncio.Event()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sumie-run")
        self._task: asyncio.Task[None] | None = None
        self._running: asyncio.Future[Any] | None = None
        self._stopping = False
        self.scope = RunScope(executor, options)  # per-user folders with --multi-user
        self.prefetcher = Prefetcher(store=store, executor=executor, scope=self.scope, enabled=options.prefetch)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="sumie-worker")

    async def stop(self) -> None:
        """Interrupt the running job for a restart: it goes back to the queue and runs next time."""
        self._stopping = True
        self._wake.set()
        current = self.current
        if current is not None:
            current.token.set(SHUTDOWN)
        if self._running is not None:
            done, _ = await asyncio.wait({self._running}, timeout=self.options.shutdown_grace)
            if not done and current is not None:
                # A stop is not a crash: back to the queue now, without using an attempt.
                self.store.requeue(current.job.prompt_id, uncount_attempt=True)
                log.warning("job %s did not stop within %.0f s; re-queued, it runs again on the next start",
                            current.job.prompt_id, self.options.shutdown_grace)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.prefetcher.stop()

    def notify(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            job = self.store.claim_next()
            if job is None:
                await self._wake.wait()
                continue
            try:
                await self._run(job)
            except Exception:
                log.exception("job %s could not be recorded; it is re-queued on the next start", job.prompt_id)

    # -- one job --------------------------------------------------------------------------------
    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        token = InterruptToken(timeout=self.options.job_timeout)
        state = RunState(prompt_id=job.prompt_id, client_id=job.client_id)
        self.current = Current(job=job, token=token, state=state)
        wants = job.extra_data.get("preview_method")
        previews = (wants not in (None, "none", "default")) or (self.options.preview_method != "none" and
                                                                 wants != "none")
        relay = Relay(loop=loop, send_text=self.hub.send_text, send_preview=self.hub.send_preview, state=state,
                      previews=previews)
        self.hub.running = state
        started = loop.time()
        try:
            self._running = loop.run_in_executor(self._pool, self._execute, job, token, relay)
            await self._running
        finally:
            self.current = None
            self.hub.running = None
            self._running = None
            self.durations.append(loop.time() - started)

    def _execute(self, job: Job, token: InterruptToken, relay: Relay) -> None:
        """On the run thread: validate the stored prompt, run it, store the result, then tell the clients."""
        outputs: dict[str, Any] = {}
        validation = self.executor.validate(parse_api_workflow(job.prompt), job.outputs_to_execute)
        if not validation.ok:
            relay.crashed(ValueError("the workflow no longer validates: " + "; ".join(validation.messages()[:5])), [])
            status = ERROR
        else:
            gate = self.prefetcher.watch(job, validation)  # the next job's loads start once this one's are done
            request = RunRequest(validation=validation, run_id=job.prompt_id, extra_data=job.extra_data,
                                 interrupt=token, listeners=[relay] if gate is None else [relay, gate],
                                 folders=self.scope.folders_for(job))
            try:
                outcome = self.executor.run(request)
            except Exception as exc:  # an engine bug must fail this job, never the worker
                log.exception("job %s: the engine raised", job.prompt_id)
                relay.crashed(exc, traceback.format_exception(exc))
                status = ERROR
            else:
                status = outcome.status
                outputs = outcome.outputs
            finally:
                if gate is not None:
                    gate.end()
        if status == INTERRUPTED and token.reason == SHUTDOWN:
            self.store.requeue(job.prompt_id, uncount_attempt=True)
            return
        messages = list(relay.history_messages)
        if relay.terminal is not None:
            messages.append(list(relay.terminal))
        self.store.finish(job.prompt_id, status=status, outputs=outputs, messages=messages,
                          max_history=self.options.max_history)
        relay.loop.call_soon_threadsafe(self._finished, job, relay.terminal)

    def _finished(self, job: Job, terminal: tuple[str, dict[str, Any]] | None) -> None:
        if terminal is not None:
            self.hub.send(terminal[0], terminal[1], job.client_id)
        self.hub.send("executing", {"node": None, "display_node": None, "prompt_id": job.prompt_id}, job.client_id)
        self.hub.broadcast_status()
        for fut in self._waiters.pop(job.prompt_id, ()):
            if not fut.done():
                fut.set_result(None)

    # -- requests from the API ------------------------------------------------------------------
    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Stop the running job (only if it is `prompt_id`, when given); interrupting nothing is a no-op."""
        current = self.current
        if current is None or (prompt_id is not None and current.job.prompt_id != prompt_id):
            return False
        current.token.set("interrupted")
        return True

    async def wait_done(self, prompt_id: str, timeout: float) -> Job | None:
        """The finished job, or None if it is still pending or running after `timeout` seconds."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(prompt_id, []).append(fut)
        try:
            job = self.store.get(prompt_id)
            if job is None or job.state == DONE:
                return job
            try:
                await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                return None
            return self.store.get(prompt_id)
        finally:
            waiters = self._waiters.get(prompt_id)
            if waiters and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[prompt_id]

    async def free(self, *, unload_models: bool, free_memory: bool) -> None:
        """Queued behind the running job on the run thread, so no model vanishes mid-run."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self._free, unload_models, free_memory)

    def _free(self, unload_models: bool, free_memory: bool) -> None:
        if free_memory or unload_models:
            self.executor.cache.clear()
        system = self.executor.services.get("system")
        if system is not None and hasattr(system, "free"):
            system.free(unload_models=unload_models, free_memory=free_memory)

    def describe(self) -> list[dict[str, Any]] | None:
        """The workers, for /queue and /system_stats; None for this in-process one (the server is the worker)."""
        return None

    def retry_after(self) -> int:
        """Seconds a client turned away by a full queue should wait: about one job's run time."""
        if not self.durations:
            return 5
        return max(1, math.ceil(sum(self.durations) / len(self.durations)))
