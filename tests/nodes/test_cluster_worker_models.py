"""A cluster worker's runtime on real (tiny) checkpoints, without Ray: it keeps as many checkpoints warm
as its capacity, unloading the least recently used from the model manager, and reports them."""

from __future__ import annotations

import functools
from pathlib import Path

from graph import Folders
from main import Settings, build_executor, build_registry
from nodes.models.random_checkpoint import write_random_checkpoint
from server.cluster.runtime import WorkerRuntime


def txt2img(ckpt: str, seed: int) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "fox", "clip": ["1", 1]}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": 1, "cfg": 1.0, "sampler_name": "euler",
              "scheduler": "normal", "denoise": 1.0, "model": ["1", 0], "positive": ["2", 0],
              "negative": ["2", 0], "latent_image": ["3", 0]}},
        "5": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
        "6": {"class_type": "SaveImage", "inputs": {"filename_prefix": f"s{seed}", "images": ["5", 0]}},
    }


def _executor(folders: Folders):
    settings = Settings(folders=folders, cache="recent:1")
    return build_executor(settings, build_registry(folders=folders))


def test_a_worker_keeps_its_capacity_of_checkpoints_warm_and_counts_real_loads(tmp_path: Path):
    folders = Folders.under(tmp_path)
    for name in ("input", "output", "temp", "user"):
        getattr(folders, name).mkdir(parents=True)
    (folders.models / "checkpoints").mkdir(parents=True)
    for seed, name in enumerate(("a.safetensors", "b.safetensors")):
        write_random_checkpoint(folders.models / "checkpoints" / name, kind="sd1", seed=seed)
    runtime = WorkerRuntime(functools.partial(_executor, folders), "w0", model_capacity=1)
    manager = runtime.executor.services["models"]
    for seed, ckpt in enumerate(["a.safetensors", "a.safetensors", "b.safetensors", "a.safetensors"]):
        items = [item for batch in runtime.run({"prompt_id": f"p{seed}", "client_id": None,
                                                "prompt": txt2img(ckpt, seed), "extra_data": {},
                                                "outputs_to_execute": ["6"]}, previews=False) for item in batch]
        done = items[-1]
        assert done[0] == "done" and done[1] == "success", done
        assert done[6]["models"] == [ckpt] and done[6]["jobs_run"] == seed + 1  # the server learns it with the result
        assert [Path(p).name for p in manager.loaded_files()] == [ckpt]  # only the one in use stays loaded
        assert runtime.describe()["models"] == [ckpt]
    assert runtime.loads == 3  # a, b, a again: the second "a" job found it warm
    assert len(list(folders.output.glob("s*.png"))) == 4
    assert any(i[0] == "text" and '"type":"progress"' in i[1] for i in items)  # the stream carries the events


def test_a_worker_streams_progress_state_like_the_in_process_worker(tmp_path: Path, caplog):
    """ComfyUI's editor follows a run by its progress_state messages; a cluster worker's relay sends them
    too (it posts to the run's stream, not to an event loop)."""
    folders = Folders.under(tmp_path)
    for name in ("input", "output", "temp", "user"):
        getattr(folders, name).mkdir(parents=True)
    (folders.models / "checkpoints").mkdir(parents=True)
    write_random_checkpoint(folders.models / "checkpoints" / "a.safetensors", kind="sd1", seed=0)
    runtime = WorkerRuntime(functools.partial(_executor, folders), "w0")
    with caplog.at_level("ERROR"):
        batches = list(runtime.run({"prompt_id": "p", "client_id": None, "prompt": txt2img("a.safetensors", 0),
                                    "extra_data": {}, "outputs_to_execute": ["6"]}, previews=False))
    items = [item for batch in batches for item in batch]
    assert items[-1][0] == "done" and items[-1][1] == "success", items[-1]
    states = [i[1] for i in items if i[0] == "text" and '"type":"progress_state"' in i[1]]
    assert states and '"state":"finished"' in states[-1]  # the last one shows every node finished
    assert not [r for r in caplog.records if "event listener" in r.getMessage()]
