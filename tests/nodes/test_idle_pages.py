"""Models a step does not use give their file pages back, and nothing a user sees changes.

A weight loaded from a safetensors file is a view of the file's pages; the model manager drops the
pages of models not in use (the U-Net while the VAE decodes) and they fault back in from the page
cache when next used. What must hold: the pages really leave the process, a second run gives the
same image bit for bit, and weights written in place (a LoRA merged into them) are never dropped.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import main
from graph import Executor, Folders, RunRequest, parse_api_workflow
from nodes.models.manager import ModelManager
from nodes.models.weights_file import read_state_dict, release_clean_pages

pytestmark = pytest.mark.skipif(not os.access("/proc/self/pagemap", os.R_OK), reason="needs Linux's page map")


def _pages(tensors) -> tuple[int, int]:
    """(resident, all): the pages under these tensors, and how many are mapped into this process now
    (bit 63 of each page's entry in the kernel's page map)."""
    pages = set()
    for t in tensors:
        start = t.data_ptr() // mmap.PAGESIZE
        end = -(-(t.data_ptr() + t.numel() * t.element_size()) // mmap.PAGESIZE)
        pages.update(range(start, end))
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        return sum(int.from_bytes(os.pread(fd, 8, p * 8), "little") >> 63 for p in pages), len(pages)
    finally:
        os.close(fd)


def _workflow(ckpt: str, seed: int) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
                                                   "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "run", "images": ["8", 0]}},
    }


@pytest.fixture()
def folders(tmp_path: Path, tiny_file) -> Folders:
    folders = Folders.under(tmp_path)
    for name in ("input", "output", "temp", "user"):
        getattr(folders, name).mkdir(parents=True, exist_ok=True)
    (folders.models / "checkpoints").mkdir(parents=True)
    os.link(tiny_file("sd1"), folders.models / "checkpoints" / "tiny.safetensors")
    return folders


def _run(executor: Executor, folders: Folders, seed: int, run_id: str) -> np.ndarray:
    validation = executor.validate(parse_api_workflow(_workflow("tiny.safetensors", seed)))
    outcome = executor.run(RunRequest(validation=validation, run_id=run_id))
    assert outcome.status == "success", outcome.failure and outcome.failure.describe()
    newest = max(folders.output.glob("run_*.png"), key=lambda p: p.stat().st_mtime_ns)
    image = np.asarray(Image.open(newest))
    newest.unlink()
    return image


def test_the_unet_leaves_memory_while_the_vae_decodes_and_a_second_run_gives_the_same_image(folders):
    registry = main.build_registry(folders=folders)
    releasing = ModelManager(force_cpu=True)
    keeping = ModelManager(force_cpu=True, release_idle_pages=False)
    ours = Executor(registry, folders=folders, services={"models": releasing})  # no cache: every node runs
    plain = Executor(registry, folders=folders, services={"models": keeping})

    first = _run(ours, folders, 7, "a")
    model, _clip, _vae = releasing.load_checkpoint(folders.models / "checkpoints" / "tiny.safetensors")
    weights = list(model.unet.parameters())
    # the decode was the last step: the U-Net's pages went back to the page cache (a page it shares
    # with the VAE's weights at the border may be back)
    resident, total = _pages(weights)
    assert resident <= 0.1 * total

    second = _run(ours, folders, 7, "b")  # the U-Net faults back in from the page cache
    reference = _run(plain, folders, 7, "c")
    assert first.shape == (16, 16, 3)  # 64 px of latent space; the tiny VAE upscales by 2
    assert np.array_equal(second, first)
    assert np.array_equal(first, reference)
    assert not np.array_equal(_run(ours, folders, 8, "d"), first)  # the image does depend on the run


def test_weights_written_in_place_are_never_released(tiny_file):
    manager = ModelManager(force_cpu=True)
    model, _clip, vae = manager.load_checkpoint(tiny_file("sd1"))
    params = dict(model.unet.named_parameters())
    name = max(params, key=lambda n: params[n].numel())
    with torch.no_grad():
        params[name].add_(0.5)  # what a LoRA merged into the weight in place does
    patched = params[name].detach().clone()
    others = {n: p.detach().clone() for n, p in params.items() if n != name}

    with manager.use(vae.vae):  # the U-Net is idle: its clean pages are given back
        pass
    resident, total = _pages([params[name]])
    assert resident == total  # the written pages stayed
    assert torch.equal(params[name], patched)  # and still hold the patch, not the file's values
    for n, p in params.items():
        if n != name:
            assert torch.equal(p, others[n]), n


def test_release_drops_clean_pages_and_keeps_written_ones(tmp_path):
    gen = torch.Generator().manual_seed(0)
    save_file({f"w{i}": torch.randn(256, 1024, generator=gen) for i in range(4)}, str(tmp_path / "w.safetensors"))
    sd = read_state_dict(tmp_path / "w.safetensors")
    expected = {k: v.clone() for k, v in sd.items()}
    sd["w1"][5, :10] = 3.0  # one page of w1 written, the rest of the file clean
    expected["w1"][5, :10] = 3.0
    resident, total = _pages(sd.values())
    assert resident > 0.9 * total  # the clones read every page

    released = release_clean_pages(sd.values())

    resident, total = _pages([sd["w1"][5, :10]])
    assert resident == total  # the written page stayed
    assert _pages([sd["w0"], sd["w2"], sd["w3"]])[0] <= 2  # clean: gone (but pages shared with w1's ends)
    assert released >= 3 * 256 * 1024 * 4
    for key, value in sd.items():  # clean pages come back from the file, the written one kept its values
        assert torch.equal(value, expected[key]), key
    assert release_clean_pages([torch.ones(1024)]) == 0  # not a file's tensor: left alone
