"""Starting and stopping: a graceful stop never uses up an attempt, and what a killed process left
half-written is removed when the server starts."""

from __future__ import annotations

import os
import time

from aiohttp.test_utils import TestClient, TestServer

from graph.builder import GraphBuilder
from graph.stale import remove_partial_writes
from server.app import create_app
from server.jobs import JobStore
from server.options import ServerOptions
from tests.server.conftest import served, wait_for


def _stubborn() -> dict:
    g = GraphBuilder()
    n = g.node("IntConst", value=1)
    s = g.node("Stubborn", value=n)
    g.node("Show", value=s)
    return g.build()


async def test_a_stop_requeues_without_an_attempt_even_when_the_node_ignores_the_interrupt(env):
    app = create_app(env.settings, env.registry, env.executor, options=ServerOptions(shutdown_grace=0.3),
                     web_root=None)
    async with TestClient(TestServer(app)) as client:
        assert (await client.post("/prompt", json={"prompt": _stubborn(), "prompt_id": "stub"})).status == 200

        async def running() -> bool:
            return (await (await client.get("/api/jobs/stub")).json())["status"] == "in_progress"

        await wait_for(running, what="the job to run")
    store = JobStore(env.folders.user / "jobs.sqlite3")  # the node is still running, ignoring the stop
    try:
        job = store.get("stub")
        assert job is not None and job.state == "pending" and job.attempts == 0
        assert store.recover(max_attempts=1) == []  # nothing counts as a crash
    finally:
        store.close()
        env.gate.set()


def _partial(folder, name: str, age_s: float) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"half")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return str(path)


async def test_half_written_files_left_by_a_kill_are_removed_at_start(env):
    old = [_partial(env.folders.output, ".ComfyUI_00001_.png.0123456789ab.tmp", 600),
           _partial(env.folders.output / "sub", ".x.png.a1b2c3d4e5f6.tmp", 600),
           _partial(env.folders.user / "default", ".wf.json.ffffffffffff.tmp", 600),
           _partial(env.folders.models / "checkpoints", ".demo.safetensors." + "a" * 32 + ".tmp.safetensors", 600)]
    young = _partial(env.folders.input, ".up.png.0123456789ab.tmp", 0)  # may belong to a live writer
    kept = [_partial(env.folders.output, "ComfyUI_00001_.png", 600), _partial(env.folders.output, ".hidden.tmp", 600)]
    async with served(env) as client:
        assert (await client.get("/queue")).status == 200
    assert not any(os.path.exists(p) for p in old)
    assert os.path.exists(young) and all(os.path.exists(p) for p in kept)
    assert remove_partial_writes([env.folders.input], min_age_s=0) == [env.folders.input / os.path.basename(young)]
