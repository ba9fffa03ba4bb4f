"""The GPU path (marked `gpu`: runs where CUDA is present, skipped with the reason elsewhere).

The same code runs on the CPU in test_speed.py and test_manager.py; these check what only a GPU
shows: default precisions and layout, weights loaded straight onto the device, pinned offload,
the VRAM budget with real transfers, and images close to the CPU's.
"""

from __future__ import annotations

import pytest
import torch

from nodes.models.cuda_graphs import graphs_of
from nodes.models.manager import ModelManager, module_bytes
from nodes.models.speed import SpeedSettings
from nodes.sampling.ksampler import SamplingRequest, sample

pytestmark = pytest.mark.gpu


def _sample(model) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    width = model.unet.config.cross_attention_dim
    pos, neg = [[torch.randn(1, 7, width, generator=gen), {}]], [[torch.randn(1, 7, width, generator=gen), {}]]
    req = SamplingRequest(seed=3, steps=3, cfg=5.0, sampler_name="euler", scheduler="normal")
    return sample(model, pos, neg, {"samples": torch.zeros(1, 4, 16, 16)}, req)["samples"]


def _assert_fp16_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Within fp16's rounding of the whole sample: the tiny random U-Net's latents reach hundreds, so
    the check is relative to their norm (fp16 on the CPU lands at 4e-3 of it, bf16 at 3e-2)."""
    error = ((actual.float().cpu() - expected.float().cpu()).norm() / expected.float().norm()).item()
    assert error < 1e-2, f"relative error {error:.2e}"


def test_defaults_on_a_gpu(tiny_file):
    manager = ModelManager()
    model, clip, vae = manager.load_checkpoint(tiny_file("sd1"))
    assert manager.device.type == "cuda" and torch.backends.cudnn.benchmark
    assert model.unet.dtype == torch.float16 and clip.encoders[0].dtype == torch.float16
    assert vae.vae.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)
    assert model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.unet.conv_in.weight.is_cuda  # loaded straight onto the device
    assert manager.resident_bytes() >= module_bytes(model.unet)


def test_gpu_images_are_close_to_the_cpus(tiny_file):
    gpu, _, _ = ModelManager().load_checkpoint(tiny_file("sd1"))
    cpu, _, _ = ModelManager(force_cpu=True).load_checkpoint(tiny_file("sd1"))
    _assert_fp16_close(_sample(gpu), _sample(cpu))


def test_offloaded_weights_land_in_pinned_memory_and_come_back(tiny_file):
    manager = ModelManager()
    model, _, _ = manager.load_checkpoint(tiny_file("sd1"))
    before = _sample(model)
    manager.free_memory()
    weight = model.unet.conv_in.weight
    assert weight.device.type == "cpu" and weight.is_pinned() and manager.resident_bytes() == 0
    torch.testing.assert_close(_sample(model), before)  # moved back for the run, same result
    assert model.unet.conv_in.weight.is_cuda


def test_the_vram_budget_offloads_the_least_recently_used_model(tiny_file):
    probe = ModelManager()
    first, _, _ = probe.load_checkpoint(tiny_file("sd1"))
    budget = int(module_bytes(first.unet) * 1.5)
    manager = ModelManager(vram_budget_bytes=budget, speed=SpeedSettings(load_to_device=False))
    a, _, _ = manager.load_checkpoint(tiny_file("sd1"))
    b, _, _ = manager.load_checkpoint(tiny_file("sd1", torch.float16))
    _sample(a)
    assert a.unet.conv_in.weight.is_cuda
    _sample(b)
    assert b.unet.conv_in.weight.is_cuda and not a.unet.conv_in.weight.is_cuda
    assert manager.resident_bytes() <= budget


def test_compile_on_the_gpu_matches_eager(tiny_file):
    plain, _, _ = ModelManager().load_checkpoint(tiny_file("sd1"))
    fast, _, _ = ModelManager(speed=SpeedSettings(compile=True)).load_checkpoint(tiny_file("sd1"))
    _assert_fp16_close(_sample(fast), _sample(plain))


def test_cuda_graphs_replay_the_steps_with_eager_results(tiny_file):
    graphed, _, _ = ModelManager().load_checkpoint(tiny_file("sd1"))
    eager, _, _ = ModelManager(speed=SpeedSettings(cuda_graphs=False)).load_checkpoint(tiny_file("sd1"))
    _assert_fp16_close(_sample(graphed), _sample(eager))
    graphs = graphs_of(graphed.unet)
    assert graphs.disabled is None and graphs.replays == 2  # step 1 eager, steps 2 and 3 replayed
    assert graphs_of(eager.unet).replays == 0


def test_a_graph_never_replays_over_weights_that_moved(tiny_file):
    """A LoRA swaps weight storage in (patching.patched): the graph recorded before must not run."""
    graphed, _, _ = ModelManager().load_checkpoint(tiny_file("sd1"))
    eager, _, _ = ModelManager(speed=SpeedSettings(cuda_graphs=False)).load_checkpoint(tiny_file("sd1"))
    before = _sample(graphed)
    for model in (graphed, eager):
        weight = model.unet.conv_out.weight
        weight.data = weight.data * 3  # new storage, as a patched weight gets
    after = _sample(graphed)
    _assert_fp16_close(after, _sample(eager))
    assert (after - before).abs().max() > 1.0
