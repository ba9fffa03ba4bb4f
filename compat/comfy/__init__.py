"""`comfy` for ComfyUI packs: `comfy.utils`, `comfy.model_management`, `comfy.samplers`, `comfy.sample` and
`comfy.cli_args` (the last three load on first use: they import torch and the engine's sampling)."""

from __future__ import annotations

import importlib
from typing import Any

from . import model_management, utils

_LAZY = ("samplers", "sample", "cli_args")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'comfy' has no attribute {name!r}: Sumie's compatibility layer provides "
                         "comfy.utils, comfy.model_management, comfy.samplers, comfy.sample and comfy.cli_args")


__all__ = ["model_management", "utils"]
