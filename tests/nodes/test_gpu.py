"""The GPU path (marked `gpu`: runs where CUDA is present, skipped with the reason elsewhere).

The same code runs on the CPU in test_speed.py and test_manager.py; these check what only a GPU
shows: default precisions and layout, weights loaded straight onto the device, pinned offload,
the VRAM budget with real transfers, and images close to the CPU's.
"""

from __future__ import annotations

import pytest
import torch

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
    torch.testing.assert_close(_sample(gpu), _sample(cpu), atol=2e-2, rtol=2e-2)


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
    torch.testing.assert_close(_sample(fast), _sample(plain), atol=2e-2, rtol=2e-2)
