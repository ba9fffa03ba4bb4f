"""Shared fixtures: tiny original-layout checkpoints written once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

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
