"""One worker's side of a cluster: its own executor, warm models and cache, running one job at a time.

This is the body of a Ray actor (server/cluster/ray_workers.py) but knows nothing of Ray: it runs a
job and yields what the server must hear, in order, as batches (lists) of plain tuples:

    ("text", message, client_id)     a ComfyUI websocket message, serialised as the relay makes it
    ("preview", frame, client_id)    a binary preview frame
    ("beat",)                        nothing happened for a while; the worker is alive (renews the lease)
    ("done", status, outputs, history_messages, terminal, interrupted_for, info)   the last item

A batch holds what the run produced since the previous one: the first item after a quiet spell goes at
once, later ones at most every TICK_S, and the end goes at once. Every item still arrives, in order;
batching only saves a message (and its serialisation) between the worker and the server per item.
`info` is the worker's own state after the job (warm models, counters), so the server needs no extra
call to learn it.

The relay (server/relay.py) is reused unchanged: its "loop" here is a queue the generator drains.
"""

from __future__ import annotations

import os
import platform
import queue
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from graph import Executor, InterruptToken, RunRequest, parse_api_workflow
from graph.sizing import system_memory

from ..jobs import ERROR
from ..relay import Relay, RunState
from .routing import job_model

HEARTBEAT_S = 1.0
TICK_S = 0.1  # a running job's items reach the server in batches at most this often (progress_state's pace)
SHUTDOWN = "shutdown"


class _QueueLoop:
    """Stands in for the event loop the relay posts to: every call becomes an item of the run's stream."""

    def __init__(self, items: queue.Queue[tuple[Any, ...]]) -> None:
        self.items = items

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        kind = "preview" if isinstance(args[0], bytes) else "text"
        self.items.put((kind, args[0], args[1]))


class WorkerRuntime:
    """Builds its executor with `factory` (a picklable callable) in the worker's own process. `threads`
    (the worker's share of CPU cores) bounds its math libraries' threads, so that workers sharing a
    machine do not oversubscribe its cores."""

    def __init__(self, factory: Callable[[], Executor], worker_id: str, *, model_capacity: int = 1,
                 threads: int | None = None) -> None:
        self.worker_id = worker_id
        self.threads = threads
        if threads:
            limit_threads(threads)  # before the nodes load torch: it reads the variables when imported
        self.executor = factory()
        if threads:
            limit_threads(threads)  # and again, in case the factory set its own
        self.model_capacity = max(1, model_capacity)
        self.recent_models: list[str] = []  # checkpoints of jobs run here, least recently used first
        self.loads = 0  # checkpoint loads (a job whose checkpoint was not warm)
        self.jobs_run = 0
        self.current: tuple[str, InterruptToken] | None = None
        self._lock = threading.Lock()
        self._busy = threading.Lock()  # held while a job runs: freeing memory waits for it, as in-process

    def run(self, job: dict[str, Any], *, previews: bool, job_timeout: float | None = None) -> Iterator[list[tuple]]:
        """Run one job (prompt_id, client_id, prompt, extra_data, outputs_to_execute), yielding its stream
        in batches; the last batch ends with the "done" item."""
        items: queue.Queue[tuple[Any, ...]] = queue.Queue()
        token = InterruptToken(timeout=job_timeout)
        state = RunState(prompt_id=job["prompt_id"], client_id=job["client_id"])
        relay = Relay(loop=_QueueLoop(items), send_text=_unused, send_preview=_unused, state=state,  # type: ignore[arg-type]
                      previews=previews)
        with self._lock:
            self.current = (job["prompt_id"], token)
        model = job_model(job["prompt"])
        if model is not None and model not in self.warm_models():
            self.loads += 1
            self._make_room()
        done: list[tuple[Any, ...]] = []
        thread = threading.Thread(target=self._execute, args=(job, token, relay, items, done),
                                  name=f"sumie-{self.worker_id}", daemon=True)
        thread.start()
        try:
            sent = -float("inf")
            while True:
                try:
                    first = items.get(timeout=HEARTBEAT_S)
                except queue.Empty:
                    yield [("beat",)]
                    continue
                batch, ended = _gather(items, first, until=sent + TICK_S)
                if ended:
                    break
                sent = time.monotonic()
                yield batch
            thread.join()
            self._remember(model)
            self.jobs_run += 1
            with self._lock:
                self.current = None
            batch.append(done[0] + (self.state(),))
            yield batch
        finally:
            with self._lock:
                self.current = None

    def _execute(self, job: dict[str, Any], token: InterruptToken, relay: Relay, items: queue.Queue,
                 done: list[tuple[Any, ...]]) -> None:
        outputs: dict[str, Any] = {}
        self._busy.acquire()
        try:
            validation = self.executor.validate(parse_api_workflow(job["prompt"]), job["outputs_to_execute"])
            if not validation.ok:
                relay.crashed(ValueError("the workflow does not validate on this worker: "
                                         + "; ".join(validation.messages()[:5])), [])
                status = ERROR
            else:
                request = RunRequest(validation=validation, run_id=job["prompt_id"], extra_data=job["extra_data"],
                                     interrupt=token, listeners=[relay])
                outcome = self.executor.run(request)
                status, outputs = outcome.status, outcome.outputs
        except Exception as exc:  # an engine bug fails this job, never the worker
            relay.crashed(exc, traceback.format_exception(exc))
            status = ERROR
        finally:
            self._busy.release()
        messages = list(relay.history_messages)
        if relay.terminal is not None:
            messages.append(list(relay.terminal))
        interrupted_for = token.reason if token.is_set else None
        done.append(("done", status, outputs, messages, relay.terminal, interrupted_for))
        items.put(("end",))

    def _make_room(self) -> None:
        """Before loading another checkpoint, unload the least recently used ones beyond capacity."""
        manager = self.executor.services.get("models")
        while len(self.recent_models) >= self.model_capacity:
            evicted = self.recent_models.pop(0)
            if manager is not None and hasattr(manager, "unload_file"):
                self.executor.cache.clear()  # cached node outputs hold the model's handles too
                manager.unload_file(evicted)

    def _remember(self, model: str | None) -> None:
        if model is None:
            return
        if model in self.recent_models:
            self.recent_models.remove(model)
        self.recent_models.append(model)
        del self.recent_models[:-self.model_capacity]

    def warm_models(self) -> list[str]:
        """Checkpoints held warm, least recently used first: those of recent jobs that the model manager
        still holds (all recent ones when there is no model manager to ask)."""
        manager = self.executor.services.get("models")
        loaded = getattr(manager, "loaded_files", None)
        if loaded is None:
            return list(self.recent_models)
        names = {os.path.basename(p) for p in loaded()}
        return [m for m in self.recent_models if os.path.basename(m) in names]

    def interrupt(self, prompt_id: str | None, reason: str = "interrupted") -> bool:
        """Stop the running job (only if it is `prompt_id`, when given)."""
        with self._lock:
            current = self.current
        if current is None or (prompt_id is not None and current[0] != prompt_id):
            return False
        current[1].set(reason)
        return True

    def free(self, unload_models: bool, free_memory: bool) -> None:
        """POST /free on this worker, after the job it is running (no model vanishes mid-run)."""
        with self._busy:
            self._free(unload_models, free_memory)

    def _free(self, unload_models: bool, free_memory: bool) -> None:
        if free_memory or unload_models:
            self.executor.cache.clear()
        if unload_models:
            self.recent_models.clear()
        system = self.executor.services.get("system")
        if system is not None and hasattr(system, "free"):
            system.free(unload_models=unload_models, free_memory=free_memory)

    def state(self) -> dict[str, Any]:
        """What routing and /queue need after each job, cheap to gather: warm models, counters, current job."""
        with self._lock:
            current = self.current[0] if self.current is not None else None
        return {"models": self.warm_models(), "current_job": current, "jobs_run": self.jobs_run,
                "model_loads": self.loads, "time": time.time()}

    def describe(self) -> dict[str, Any]:
        """For /queue and /system_stats: where it runs, its device and memory, warm models, current job."""
        system = self.executor.services.get("system")
        stats = dict(system.stats()) if system is not None and hasattr(system, "stats") else {}
        devices = list(stats.get("devices", [])) or [_cpu_device()]
        return {"id": self.worker_id, "host": socket.gethostname(), "pid": os.getpid(), "machine": platform.machine(),
                "devices": devices, "model_capacity": self.model_capacity, "threads": self.threads, **self.state()}

    def pid(self) -> int:
        return os.getpid()


def _gather(items: queue.Queue[tuple[Any, ...]], first: tuple[Any, ...], *,
            until: float) -> tuple[list[tuple[Any, ...]], bool]:
    """`first` and what follows it in the queue until the monotonic time `until` (at least what is there
    already), stopping early at the run's end; (the batch without the end marker, whether it ended)."""
    batch: list[tuple[Any, ...]] = []
    item = first
    while True:
        if item[0] == "end":
            return batch, True
        batch.append(item)
        left = until - time.monotonic()
        try:
            item = items.get(timeout=left) if left > 0 else items.get_nowait()
        except queue.Empty:
            return batch, False


def limit_threads(count: int) -> None:
    """Keep the math libraries (OpenMP, MKL, torch) at `count` threads in this process: a worker given N
    cores uses N, whatever the machine has. Touches torch only if the nodes have loaded it."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(count)
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    if torch.get_num_interop_threads() != count:
        try:
            torch.set_num_interop_threads(count)
        except RuntimeError:  # only possible before the first parallel work; it keeps its pool then
            pass


def _cpu_device() -> dict[str, Any]:
    """A worker without a model manager (no torch) still runs on this machine's CPU and memory."""
    total, free = (size or 0 for size in system_memory())
    return {"name": "cpu", "type": "cpu", "index": None, "vram_total": total, "vram_free": free,
            "torch_vram_total": 0, "torch_vram_free": 0}


def _unused(*_: Any) -> None:
    """The relay's send functions: never called, since the queue loop receives the calls instead."""
