"""Shared fixtures: tiny original-layout checkpoints written once per session; the tiny SD1 model loaded
once per module, with the MODEL handle and conditionings the sampling and model-patch tests share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from nodes.base.handles import LatentFormat, ModelHandle
from nodes.base.model_sampling import ModelSampling
from nodes.models import LoadedCheckpoint, load_checkpoint

from .tiny_models import write_tiny_checkpoint

TinyFile = Callable[..., Path]


@pytest.fixture(scope="session")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> TinyFile:
    """``tiny_file(kind, dtype=torch.float32, suffix=".safetensors")`` → path of that tiny checkpoint."""
    folder = tmp_path_factory.mktemp("tiny_checkpoints")
    written: dict[tuple[str, torch.dtype, str], Path] = {}

    def make(kind: str, dtype: torch.dtype = torch.float32, suffix: str = ".safetensors") -> Path:
        key = (kind, dtype, suffix)
        if key not in written:
            name = f"{kind}_{str(dtype).removeprefix('torch.')}{suffix}"
            written[key] = write_tiny_checkpoint(folder / name, kind, dtype)
        return written[key]

    return make


@pytest.fixture(scope="module")
def sd1(tiny_file: TinyFile) -> LoadedCheckpoint:
    """The tiny SD1 checkpoint, loaded once per test module (modules patch its U-Net in place)."""
    return load_checkpoint(tiny_file("sd1"))


@pytest.fixture(scope="module")
def model(sd1: LoadedCheckpoint) -> ModelHandle:
    """The tiny SD1 U-Net as a MODEL handle (discrete eps schedule), for the model-patch tests."""
    return ModelHandle(unet=sd1.unet, kind="sd1", sampling=ModelSampling.discrete(),
                       latent_format=LatentFormat(scale_factor=sd1.info.vae_scaling_factor))


@pytest.fixture(scope="module")
def conds(sd1: LoadedCheckpoint) -> tuple[list, list]:
    """Positive and negative conditioning: one fixed random 7-token embedding each, as wide as the U-Net wants."""
    gen = torch.Generator().manual_seed(0)
    width = sd1.unet.config.cross_attention_dim
    return [[torch.randn(1, 7, width, generator=gen), {}]], [[torch.randn(1, 7, width, generator=gen), {}]]
