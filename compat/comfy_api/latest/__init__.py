"""`comfy_api.latest` for V3 packs: `io`, `ui`, `ComfyExtension` and `ComfyAPI` (progress reporting).

A V3 pack's module defines `async def comfy_entrypoint() -> ComfyExtension`; the extension's
`get_node_list()` returns its `io.ComfyNode` classes (plugins.manager loads them through plugins.comfy_v3).
"""

from __future__ import annotations

from typing import Any

from ... import _runtime
from . import io, ui

IO = io
UI = ui


class ComfyExtension:
    """A V3 pack's entry point object; `comfy_entrypoint()` returns one."""

    async def on_load(self) -> None:
        """Called once when the pack loads, before `get_node_list()`."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        raise NotImplementedError(f"{type(self).__name__} does not define get_node_list()")


def _preview(image: Any) -> Any:
    """A PIL image or an IMAGE tensor as the (format, image) pair the engine's preview relay takes."""
    if image is None:
        return None
    if hasattr(image, "shape"):
        import numpy as np
        from PIL import Image

        tensor = image[0] if len(image.shape) == 4 else image
        image = Image.fromarray((tensor.detach().cpu().float().clamp(0, 1).numpy() * 255).astype(np.uint8))
    return (image.format or "JPEG", image)


def _set_progress(value: float, max_value: float, preview_image: Any) -> None:
    ctx = _runtime.context()
    if ctx is None:
        raise ValueError("set_progress() is only available while a node runs")
    ctx.progress(value, max_value, _preview(preview_image))


class ComfyAPI:
    """`ComfyAPI().execution.set_progress(value, max_value)`: the running node's progress bar."""

    class Execution:
        async def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                               preview_image: Any = None, ignore_size_limit: bool = False) -> None:
            _set_progress(value, max_value, preview_image)

    def __init__(self) -> None:
        self.execution = ComfyAPI.Execution()


class ComfyAPISync:
    """The same calls, for code that is not `async`."""

    class Execution:
        def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                         preview_image: Any = None, ignore_size_limit: bool = False) -> None:
            _set_progress(value, max_value, preview_image)

    def __init__(self) -> None:
        self.execution = ComfyAPISync.Execution()


class Input:
    """Type hints packs use for annotations (the values are torch tensors and dicts)."""

    Image = Any
    Audio = Any
    Mask = Any
    Latent = Any
    Video = Any


class Types:
    """Video helper types are not provided; a pack that uses them fails on that attribute."""


ComfyAPI_latest = ComfyAPI

__all__ = ["IO", "UI", "ComfyAPI", "ComfyAPISync", "ComfyAPI_latest", "ComfyExtension", "Input", "Types", "io", "ui"]
