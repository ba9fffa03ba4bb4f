"""The worker loads the next queued job's checkpoint while the current job is still running (tiny models,
CPU), hands the next job that very object, and nothing a prefetch does changes either job."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import main
from graph import Executor, Folders, RecentRunsCache
from nodes.models.manager import ModelManager
from nodes.models.random_checkpoint import write_random_checkpoint
from server.app import STATE
from server.jobs import DONE, RUNNING
from tests.server.conftest import Env, Settings, served, wait_for
from tests.server.nodes import Gate
from tests.support.keep import Keep


@pytest.fixture
def sd_env(tmp_path: Path) -> Env:
    folders = Folders.under(tmp_path)
    for name in ("input", "output", "temp", "user"):
        getattr(folders, name).mkdir(parents=True)
    (folders.models / "checkpoints").mkdir(parents=True)
    for seed, name in enumerate(("a.safetensors", "b.safetensors")):
        write_random_checkpoint(folders.models / "checkpoints" / name, "sd1", seed=seed, size="tiny")
    (folders.models / "checkpoints" / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    registry = main.build_registry(folders=folders)
    registry.register(Keep)
    registry.register(Gate)
    gate = threading.Event()
    services: dict[str, Any] = {"models": ModelManager(), "gate": gate, "kept": []}
    executor = Executor(registry, cache=RecentRunsCache(1), folders=folders, services=services)
    return Env(root=tmp_path, settings=Settings(folders=folders), registry=registry, executor=executor,
               calls=Counter(), gate=gate, services=services)


def job(ckpt: str, *, gated: bool) -> dict[str, Any]:
    """Load `ckpt`, sample one step, keep the MODEL and the latent; with `gated`, wait at the test's gate first."""
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "fox", "clip": ["1", 1]}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 1, "cfg": 1.0, "sampler_name": "euler",
              "scheduler": "normal", "denoise": 1.0, "model": ["1", 0], "positive": ["2", 0],
              "negative": ["2", 0], "latent_image": ["3", 0]}},
        "5": {"class_type": "Keep", "inputs": {"value": ["1", 0]}},
        "6": {"class_type": "Keep", "inputs": {"value": ["4", 0]}},
    }
    if gated:
        prompt["7"] = {"class_type": "Gate", "inputs": {"value": ["4", 0]}}
        prompt["6"]["inputs"]["value"] = ["7", 0]
    return prompt


def loads_of(env: Env, name: str) -> list[Any]:
    return [r for r in env.services["models"].loads if any(Path(p).name == name for p in r.paths)]


async def submit(client: Any, prompt: dict[str, Any], prompt_id: str) -> None:
    resp = await client.post("/prompt", json={"prompt": prompt, "prompt_id": prompt_id})
    assert resp.status == 200, await resp.text()


def store_of(client: Any) -> Any:
    return client.server.app[STATE].store


async def finished(client: Any, prompt_id: str) -> Any:
    async def done():
        job = store_of(client).get(prompt_id)
        return job if job is not None and job.state == DONE else None

    return await wait_for(done, timeout=60, what=f"job {prompt_id} to finish")


async def test_the_next_checkpoint_is_loaded_while_the_current_job_runs_and_the_next_job_uses_it(sd_env):
    async with served(sd_env) as client:
        await submit(client, job("a.safetensors", gated=True), "first")
        await submit(client, job("b.safetensors", gated=False), "second")

        async def prefetched():
            return loads_of(sd_env, "b.safetensors")

        records = await wait_for(prefetched, timeout=60, what="b.safetensors to be prefetched")
        assert records[0].prefetch  # loaded ahead of its job...
        assert store_of(client).state_of("first") == RUNNING  # ...while the first job still waits at its gate
        sd_env.gate.set()
        first, second = await finished(client, "first"), await finished(client, "second")
        assert (first.status, second.status) == ("success", "success")
        assert len(loads_of(sd_env, "b.safetensors")) == 1  # the second job did not load it again
        manager: ModelManager = sd_env.services["models"]
        kept_models = [v for v in sd_env.services["kept"] if getattr(v, "source", None) is not None]
        model_b, = [m for m in kept_models if m.source.name == "b.safetensors"]
        assert model_b is manager.load_checkpoint(sd_env.folders.models / "checkpoints" / "b.safetensors")[0]
        assert len(loads_of(sd_env, "a.safetensors")) == 1 and not loads_of(sd_env, "a.safetensors")[0].prefetch


async def test_a_broken_next_checkpoint_changes_neither_job(sd_env):
    async with served(sd_env) as client:
        await submit(client, job("a.safetensors", gated=True), "first")
        await submit(client, job("broken.safetensors", gated=False), "second")
        prefetcher = client.server.app[STATE].worker.prefetcher

        async def tried():
            return [item for pid, items in prefetcher.results if pid == "second" for item in items]

        tried_items = await wait_for(tried, timeout=60, what="the broken file's prefetch")
        assert tried_items[0].outcome.startswith("failed")
        sd_env.gate.set()
        first, second = await finished(client, "first"), await finished(client, "second")
        assert first.status == "success"
        error = second.error_message()
        assert second.status == "error" and error["node_id"] == "1" and error["node_type"] == "CheckpointLoaderSimple"
        assert "ckpt_name" in error["exception_message"] and "broken.safetensors" in error["exception_message"]


async def test_deleting_the_queued_job_breaks_nothing(sd_env):
    async with served(sd_env) as client:
        await submit(client, job("a.safetensors", gated=True), "first")
        await submit(client, job("b.safetensors", gated=False), "second")
        assert (await client.post("/queue", json={"delete": ["second"]})).status == 200
        sd_env.gate.set()
        assert (await finished(client, "first")).status == "success"
        assert store_of(client).get("second") is None
        await submit(client, job("b.safetensors", gated=False), "third")
        assert (await finished(client, "third")).status == "success"
        assert len(loads_of(sd_env, "b.safetensors")) <= 1  # loaded once, ahead or by the job, never twice


async def test_no_prefetch_leaves_every_load_to_its_job(sd_env):
    async with served(sd_env, prefetch=False) as client:
        await submit(client, job("a.safetensors", gated=True), "first")
        await submit(client, job("b.safetensors", gated=False), "second")

        async def first_at_gate():
            return store_of(client).state_of("first") == RUNNING and len(sd_env.services["kept"]) >= 1

        await wait_for(first_at_gate, timeout=60, what="the first job to load its model")
        sd_env.gate.set()
        assert (await finished(client, "second")).status == "success"
        assert [r.prefetch for r in loads_of(sd_env, "b.safetensors")] == [False]  # the job loaded it itself
        assert not client.server.app[STATE].worker.prefetcher.results
