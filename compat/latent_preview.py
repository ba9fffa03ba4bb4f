"""`latent_preview` for ComfyUI packs: sampling callbacks that report progress (and a preview) to the editor.

Previews use the model's latent -> RGB projection (nodes.base.handles.LatentFormat.preview_rgb), the
engine's own cheap preview; TAESD previews are not provided.
"""

from __future__ import annotations

from typing import Any

from .comfy.utils import ProgressBar

MAX_PREVIEW_RESOLUTION = 512
_method = {"value": "auto"}


def set_preview_method(override: Any) -> None:
    _method["value"] = getattr(override, "value", override)


class LatentPreviewer:
    """Base class packs subclass for their own previewers: `decode_latent_to_preview(x0)` makes a PIL image."""

    def decode_latent_to_preview(self, x0: Any) -> Any:
        raise NotImplementedError

    def decode_latent_to_preview_image(self, preview_format: str, x0: Any) -> tuple[str, Any, int]:
        return preview_format, self.decode_latent_to_preview(x0), MAX_PREVIEW_RESOLUTION


class Latent2RGBPreviewer(LatentPreviewer):
    """Turns an x0 latent ([B, C, h, w], sampling space) into a small PIL image."""

    def __init__(self, latent_format: Any) -> None:
        self.latent_format = latent_format

    def decode_latent_to_preview(self, x0: Any) -> Any:
        import numpy as np
        from PIL import Image

        rgb = self.latent_format.preview_rgb(x0[:1])[0]
        image = Image.fromarray((rgb.numpy() * 255).clip(0, 255).astype(np.uint8))
        image.thumbnail((MAX_PREVIEW_RESOLUTION, MAX_PREVIEW_RESOLUTION))
        return image


def get_previewer(device: Any, latent_format: Any) -> Latent2RGBPreviewer | None:
    """A previewer for a MODEL's latent format (None when previews are off or it has no RGB projection)."""
    if _method["value"] in ("none", "NoPreviews") or not callable(getattr(latent_format, "preview_rgb", None)):
        return None
    return Latent2RGBPreviewer(latent_format)


def prepare_callback(model: Any, steps: int, x0_output_dict: dict[str, Any] | None = None) -> Any:
    """A `callback(step, x0, x, total_steps)` that advances the running node's progress bar."""
    previewer = get_previewer(None, getattr(model, "latent_format", None))
    bar = ProgressBar(steps)

    def callback(step: int, x0: Any, x: Any, total_steps: int) -> None:
        if x0_output_dict is not None and x0 is not None:
            x0_output_dict["x0"] = x0
        preview = None
        if previewer is not None and x0 is not None:
            preview = previewer.decode_latent_to_preview_image("JPEG", x0)
        bar.update_absolute(step + 1, total_steps, preview)

    callback.sumie_progress = True  # type: ignore[attr-defined]
    return callback


__all__ = ["MAX_PREVIEW_RESOLUTION", "Latent2RGBPreviewer", "LatentPreviewer", "get_previewer", "prepare_callback",
           "set_preview_method"]
