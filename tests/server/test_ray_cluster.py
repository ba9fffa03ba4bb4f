"""Two worker actors on a private, loopback-only Ray instance: jobs stream through the server's websocket,
/queue and /system_stats list both workers, /interrupt reaches the worker running the job, and a worker
killed with SIGKILL mid-job loses its lease: the job runs again elsewhere and completes exactly once.
`--workers ray:auto` attaches to a cluster started with `ray start --head` on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from graph import Executor, RecentRunsCache
from graph.builder import GraphBuilder
from server.app import create_app
from server.options import ServerOptions
from tests.server import cluster_nodes
from tests.server.conftest import Env, receive_json

pytest.importorskip("ray", reason="the Ray tests need the `ray` extra (pip install 'sumie[ray]')")

from server.cluster import make_cluster_worker  # noqa: E402
from server.cluster.cli import WorkerPlan  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def gated(tag: str, prefix: str) -> dict:
    g = GraphBuilder()
    n = g.node("IntConst", value=len(tag))
    p = g.node("PreviewSteps", value=n, steps=2)
    gate = g.node("FileGate", value=p, tag=tag)
    g.node("SavePng", value=gate, filename_prefix=prefix)
    return g.build()


async def until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def started(temp: Path, tag: str) -> list[int]:
    return sorted(int(p.name.rsplit("_", 1)[1]) for p in temp.glob(f"started_{tag}_*"))


async def test_two_ray_workers_stream_interrupt_and_survive_a_killed_actor(env: Env):
    folders = env.folders
    plan = WorkerPlan(mode="local", count=2, cpus_per_worker=1, lease_s=10.0)
    factory = functools.partial(cluster_nodes.build_executor, folders)
    make_worker = functools.partial(make_cluster_worker, plan, factory, num_cpus=2)
    executor = Executor(cluster_nodes.registry(), cache=RecentRunsCache(1), folders=folders, services={})
    app = create_app(env.settings, executor.registry, executor, options=ServerOptions(max_attempts=2), web_root=None,
                     make_worker=make_worker)
    async with TestClient(TestServer(app)) as client:
        async def workers_ready():
            body = await (await client.get("/queue")).json()
            ready = [w for w in body.get("workers", []) if w.get("status") == "ready"]
            return body["workers"] if len(ready) == 2 else None

        workers = await until(workers_ready, 150, "two ready workers")
        assert len({w["pid"] for w in workers}) == 2 and all(w["pid"] != os.getpid() for w in workers)
        stats = await (await client.get("/system_stats")).json()
        assert sorted(d["worker"] for d in stats["devices"]) == ["w0", "w1"]
        assert [w["id"] for w in stats["system"]["workers"]] == ["w0", "w1"]

        ws = await client.ws_connect("/ws?clientId=c1")
        for tag in ("a", "b"):
            resp = await client.post("/prompt", json={"prompt": gated(tag, f"out_{tag}"), "prompt_id": tag,
                                                      "client_id": "c1", "extra_data": {"preview_method": "auto"}})
            assert resp.status == 200, await resp.text()
        temp = Path(folders.temp)
        await until(lambda: _async(len(started(temp, "a")) == 1 and len(started(temp, "b")) == 1), 60,
                    "both jobs running")
        pid_a, pid_b = started(temp, "a")[0], started(temp, "b")[0]
        assert pid_a != pid_b  # one job per worker, both at once
        queue = await (await client.get("/queue")).json()
        assert sorted(item[1] for item in queue["queue_running"]) == ["a", "b"]
        assert sorted(w["current_job"] for w in queue["workers"]) == ["a", "b"]

        # /interrupt with a prompt_id stops that job on its worker; the other keeps running.
        await client.post("/interrupt", json={"prompt_id": "b"})
        await until(lambda: _status(client, "b"), 30, "b interrupted")
        assert await _status(client, "b") == "cancelled"
        assert started(temp, "a") == [pid_a]

        # kill -9 the process running "a": its lease is released, it runs again on a live worker.
        os.kill(pid_a, signal.SIGKILL)
        await until(lambda: _async(len(started(temp, "a")) == 2), 90, "a re-run on another worker")
        (temp / "release_a").write_text("go")
        await until(lambda: _status(client, "a"), 60, "a done")
        job = await (await client.get("/api/jobs/a")).json()
        assert (job["status"], job["attempts"]) == ("completed", 2)
        assert len(list(Path(folders.output).glob("out_a_*.png"))) == 1  # one output, whole
        history = await (await client.get("/history")).json()
        assert sorted(history) == ["a", "b"]

        # Everything the worker said reached the websocket: progress, previews, the result, once.
        kinds: list[str] = []
        frames = 0
        while "a" not in [k.split(":")[1] for k in kinds if k.startswith("execution_success:")]:
            msg = await receive_json(ws, 30)
            if isinstance(msg, bytes):
                frames += 1
                continue
            kinds.append(f"{msg['type']}:{msg['data'].get('prompt_id')}")
        assert kinds.count("execution_success:a") == 1 and "execution_interrupted:b" in kinds
        assert "progress:a" in kinds and "executed:a" in kinds and frames >= 2
        await ws.close()

        restarted = await until(workers_ready, 90, "the killed worker replaced")
        assert sum(w["restarts"] for w in restarted) == 1


async def _async(value):
    return value


async def _status(client: TestClient, prompt_id: str) -> str | None:
    job = await (await client.get(f"/api/jobs/{prompt_id}")).json()
    return job["status"] if job["status"] in ("completed", "failed", "cancelled") else None


@contextlib.contextmanager
def ray_head(cpus: int):
    """A Ray head started with `ray start` (as an operator would), asked for loopback, in its own process
    group and temporary folder; stopped by killing that group only (never `ray stop`, which stops every
    Ray on the machine). Yields the address to attach to."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live under it
    head = None
    try:
        head = subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--node-ip-address=127.0.0.1",
             f"--port={port}", f"--num-cpus={cpus}", "--num-gpus=0", "--include-dashboard=false",
             "--disable-usage-stats", f"--temp-dir={temp}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        yield f"127.0.0.1:{port}"
    finally:
        if head is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGKILL)  # `ray start --block` and everything it started (one group)
            head.wait(30)
        shutil.rmtree(temp, ignore_errors=True)


async def test_workers_ray_auto_attach_to_a_running_cluster_and_run_a_job(env: Env, monkeypatch):
    """`--workers ray:auto` on a machine whose Ray cluster was started with `ray start --head`: the server
    attaches to it (it starts no Ray of its own), sizes its workers from the cluster's cores (2, fewer
    than the default 4 per worker) and runs a job there, its result streamed back and recorded."""
    from server.cluster.cli import parse_workers

    plan = parse_workers("ray:auto")
    assert plan is not None and plan.address == "auto"
    folders = env.folders
    with ray_head(cpus=2) as address:
        monkeypatch.setenv("RAY_ADDRESS", address)  # how `ray:auto` finds the cluster, as `ray start` says
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # the server must find the cluster's token itself
        factory = functools.partial(cluster_nodes.build_executor, folders)
        executor = Executor(cluster_nodes.registry(), cache=RecentRunsCache(1), folders=folders, services={})
        app = create_app(env.settings, executor.registry, executor, options=ServerOptions(), web_root=None,
                         make_worker=functools.partial(make_cluster_worker, plan, factory))
        async with TestClient(TestServer(app)) as client:
            async def ready():
                workers = (await (await client.get("/queue")).json()).get("workers", [])
                return workers if workers and all(w.get("status") == "ready" for w in workers) else None

            workers = await until(ready, 120, "the cluster's worker")
            assert len(workers) == 1 and workers[0]["pid"] != os.getpid() and workers[0]["threads"] == 2
            ws = await client.ws_connect("/ws?clientId=c1")
            g = GraphBuilder()
            g.node("SavePng", value=g.node("PreviewSteps", value=g.node("IntConst", value=7), steps=3),
                   filename_prefix="auto")
            resp = await client.post("/prompt", json={"prompt": g.build(), "prompt_id": "auto", "client_id": "c1"})
            assert resp.status == 200, await resp.text()
            await until(lambda: _status(client, "auto"), 60, "the job done")
            job = await (await client.get("/api/jobs/auto")).json()
            assert (job["status"], job["attempts"]) == ("completed", 1)
            assert len(list(Path(folders.output).glob("auto_*.png"))) == 1
            kinds = []
            while "execution_success" not in kinds:
                msg = await receive_json(ws, 30)
                if isinstance(msg, dict) and msg["data"].get("prompt_id") == "auto":
                    kinds.append(msg["type"])
            assert kinds[0] == "execution_start" and "progress" in kinds and "executed" in kinds
            await ws.close()
