"""The cluster dispatcher without Ray: worker runtimes in this process behind a fake backend. A worker
that falls silent mid-job loses its lease; the job runs again on another worker and completes once."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from graph.builder import GraphBuilder
from server.app import create_app
from server.cluster.pool import ClusterWorker
from server.cluster.routing import AffinityRouter
from server.cluster.runtime import TICK_S, WorkerRuntime
from server.options import ServerOptions
from tests.server import cluster_nodes
from tests.server import workflows as wf
from tests.server.conftest import Env, receive_json, until_done


class FakeBackend:
    """Runtimes in threads of this process; the first `silent` streams never say anything."""

    lost_errors = (ConnectionError,)

    def __init__(self, env: Env, *, silent: int) -> None:
        self.factory = functools.partial(cluster_nodes.build_executor, env.folders)
        self.silent = silent
        self.spawned: list[WorkerRuntime] = []
        self.killed: list[WorkerRuntime] = []

    def connect(self) -> int:
        return 2

    def spawn(self, worker_id: str) -> WorkerRuntime:
        runtime = WorkerRuntime(self.factory, worker_id)
        self.spawned.append(runtime)
        return runtime

    async def call(self, handle: WorkerRuntime, method: str, *args: Any) -> Any:
        return getattr(handle, method)(*args)

    async def stream(self, handle: WorkerRuntime, job: dict[str, Any], *, previews: bool, job_timeout: Any):
        if self.silent:
            self.silent -= 1
            await asyncio.sleep(3600)  # a machine that dropped off the network
        items = handle.run(job, previews=previews, job_timeout=job_timeout)
        while (item := await asyncio.to_thread(next, items, None)) is not None:
            yield item

    def kill(self, handle: WorkerRuntime) -> None:
        self.killed.append(handle)

    def shutdown(self) -> None:
        pass


async def test_a_silent_worker_loses_its_lease_and_the_job_completes_once_elsewhere(env: Env):
    backend = FakeBackend(env, silent=1)
    make_worker = functools.partial(ClusterWorker, backend=backend, router=AffinityRouter(), lease_s=0.5)
    executor = backend.factory()
    app = create_app(env.settings, executor.registry, executor, options=ServerOptions(), web_root=None,
                     make_worker=make_worker)
    async with TestClient(TestServer(app)) as client:
        ws = await client.ws_connect("/ws?clientId=c")
        await client.post("/prompt", json={"prompt": wf.show_sum(2, 3), "prompt_id": "p", "client_id": "c"})
        seen = await until_done(ws, "p", timeout=20)
        job = await (await client.get("/api/jobs/p")).json()
        assert (job["status"], job["attempts"]) == ("completed", 2)
        assert job["outputs"] == {"3": {"text": ["5"]}}
        kinds = [m["type"] for m in seen if isinstance(m, dict) and m["data"].get("prompt_id") == "p"]
        assert kinds.count("execution_success") == 1
        assert len(backend.killed) == 1  # the silent worker was given up on and replaced
        queue = await (await client.get("/queue")).json()
        assert sum(w["restarts"] for w in queue["workers"]) == 1
        await ws.close()


async def test_a_client_reconnecting_mid_run_catches_up_on_a_worker_run(env: Env):
    backend = FakeBackend(env, silent=0)
    make_worker = functools.partial(ClusterWorker, backend=backend, router=AffinityRouter(), lease_s=5.0)
    executor = backend.factory()
    app = create_app(env.settings, executor.registry, executor, options=ServerOptions(), web_root=None,
                     make_worker=make_worker)
    g = GraphBuilder()
    gate = g.node("FileGate", value=g.node("IntConst", value=1), tag="r")
    g.node("Show", value=gate)
    async with TestClient(TestServer(app)) as client:
        await client.post("/prompt", json={"prompt": g.build(), "prompt_id": "r", "client_id": "c"})
        temp = env.folders.temp
        for _ in range(500):
            if list(temp.glob("started_r_*")):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # a few progress reports
        ws = await client.ws_connect("/ws?clientId=c")
        caught_up = [await receive_json(ws) for _ in range(4)]
        assert [m["type"] for m in caught_up] == ["status", "execution_start", "execution_cached", "executing"]
        assert caught_up[3]["data"]["node"] == "2" and caught_up[3]["data"]["prompt_id"] == "r"
        (temp / "release_r").write_text("go")
        await until_done(ws, "r", timeout=20)
        await ws.close()


def test_a_worker_streams_every_item_in_order_in_few_batches(env: Env):
    """A worker's stream reaches the server in batches (at most one per tick, plus the first and the end),
    so a sampler's hundreds of progress messages and previews cost a few messages between processes, yet
    every item arrives, in order, and the result comes last with the worker's warm state."""
    runtime = WorkerRuntime(functools.partial(cluster_nodes.build_executor, env.folders), "w0")
    g = GraphBuilder()
    g.node("Show", value=g.node("PreviewSteps", value=g.node("IntConst", value=4), steps=60))
    job = {"prompt_id": "b", "client_id": "c", "prompt": g.build(), "extra_data": {}, "outputs_to_execute": ["3"]}
    started = time.monotonic()
    batches = list(runtime.run(job, previews=True))
    elapsed = time.monotonic() - started
    items = [item for batch in batches for item in batch]
    texts = [json.loads(i[1]) for i in items if i[0] == "text"]
    steps = [m["data"]["value"] for m in texts if m["type"] == "progress"]
    assert steps == list(range(1, 61))
    assert sum(i[0] == "preview" for i in items) == 60
    assert [m["type"] for m in texts][:2] == ["execution_start", "execution_cached"]
    assert items[-1][0] == "done" and items[-1][1] == "success" and items[-1][6]["jobs_run"] == 1
    assert len(batches) <= elapsed / TICK_S + 2 and len(batches) < len(items) / 2
