"""`comfy.cli_args` for ComfyUI packs: `args` with ComfyUI's defaults, and `LatentPreviewMethod`.

Packs read a few flags (`args.disable_metadata`, `args.preview_method`, `args.preview_size`); Sumie's own
command line is not ComfyUI's, so every flag reads as ComfyUI's default (unknown flags read as None).
"""

from __future__ import annotations

import enum
from typing import Any


class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


class _Args:
    """ComfyUI's parsed command line, at its defaults."""

    def __init__(self) -> None:
        self.disable_metadata = False
        self.preview_method = LatentPreviewMethod.Auto
        self.preview_size = 512
        self.cpu = False
        self.lowvram = False
        self.highvram = False
        self.normalvram = False
        self.novram = False
        self.disable_smart_memory = False
        self.listen = "127.0.0.1"
        self.port = 8188
        self.enable_cors_header = None
        self.verbose = "INFO"

    def __getattr__(self, name: str) -> Any:
        return None


args = _Args()

__all__ = ["LatentPreviewMethod", "args"]
