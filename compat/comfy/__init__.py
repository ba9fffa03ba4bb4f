"""`comfy` for ComfyUI packs: only `comfy.utils` and `comfy.model_management` are provided."""

from __future__ import annotations

from . import model_management, utils

__all__ = ["model_management", "utils"]
