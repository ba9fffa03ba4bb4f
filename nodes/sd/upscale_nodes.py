"""UpscaleModelLoader and ImageUpscaleWithModel, with ComfyUI's names, inputs and tiling.

The image is upscaled in overlapping tiles (512 pixels, 32 overlapping, ComfyUI's values) blended
with linear ramps, one image of the batch at a time, so memory stays bounded for any image size; on
out-of-memory the tile is halved and the image started again, down to 128 pixels. The output is
clamped to 0..1 and the model goes back to the offload device afterwards (an upscaler runs once per
prompt, so keeping it on the GPU would only crowd the U-Net).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from graph import ComboInput, InputSpec, Node, NodeSchema, OutputSpec
from nodes.base.errors import ModelLoadError
from nodes.base.folders import files_of
from nodes.models.upscale import UpscaleModel, load_upscale_model
from nodes.sd.loaders import _failed, _path, file_fingerprint
from nodes.sd.vae import tiled

TILE, OVERLAP, MIN_TILE = 512, 32, 128
Progress = Callable[[int, int], None]


def _tiles_per_image(h: int, w: int, tile: int, overlap: int) -> int:
    def count(size: int) -> int:
        if size <= tile:
            return 1
        stride = tile - overlap
        return len(range(0, size - tile, stride)) + 1

    return count(h) * count(w)


def upscale_tiled(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, scale: int, tile: int = TILE,
                  overlap: int = OVERLAP, min_tile: int = MIN_TILE, progress: Progress | None = None,
                  on_oom: Callable[[], None] | None = None) -> torch.Tensor:
    """[B, C, H, W] -> [B, C', H*scale, W*scale] through `run`, tile by tile, halving the tile on OOM."""
    while True:
        try:
            per_image = _tiles_per_image(x.shape[2], x.shape[3], tile, overlap)
            total = per_image * x.shape[0]
            out = []
            for b in range(x.shape[0]):
                def step(done: int, _count: int, base: int = b * per_image, total: int = total) -> None:
                    if progress is not None:
                        progress(base + done, total)

                out.append(tiled(x[b:b + 1], run, tile=tile, overlap=overlap, num=scale, den=1, progress=step))
            return torch.cat(out)
        except torch.OutOfMemoryError:
            if on_oom is not None:
                on_oom()
            if tile // 2 < min_tile:
                raise
            tile //= 2


def upscale_image(model: UpscaleModel, image: torch.Tensor, *, tile: int = TILE, overlap: int = OVERLAP,
                  min_tile: int = MIN_TILE, progress: Progress | None = None) -> torch.Tensor:
    """IMAGE [B, H, W, 3] -> IMAGE [B, H*scale, W*scale, 3], clamped to 0..1, on the CPU."""
    module = model.module
    manager = model.manager
    placement = manager.use(module) if manager is not None else nullcontext(next(module.parameters()).device)
    x = image[..., :3].movedim(-1, 1).float()
    try:
        with placement as device, torch.inference_mode():
            dtype = next(module.parameters()).dtype

            def run(piece: torch.Tensor) -> torch.Tensor:
                return model(piece.to(device=device, dtype=dtype)).float().cpu()

            def free() -> None:
                if torch.device(device).type == "cuda":
                    torch.cuda.empty_cache()

            out = upscale_tiled(run, x, scale=model.scale, tile=tile, overlap=overlap, min_tile=min_tile,
                                progress=progress, on_oom=free)
    finally:
        if manager is not None:
            manager.offload(module)
    return out.clamp(0.0, 1.0).movedim(1, -1).contiguous()


class UpscaleModelLoader(Node):
    SCHEMA = NodeSchema(
        node_type="UpscaleModelLoader", display_name="Load Upscale Model", category="loaders",
        inputs=[ComboInput(name="model_name", choices=files_of("upscale_models"))],
        outputs=[OutputSpec(type="UPSCALE_MODEL", name="UPSCALE_MODEL")],
    )

    def fingerprint(self, *, model_name: str, folders: Any = None, **_: Any) -> Any:
        return file_fingerprint(folders, "upscale_models", model_name)

    def execute(self, ctx, *, model_name: str) -> tuple[UpscaleModel]:
        path = _path(ctx, "upscale_models", model_name, "model_name")
        manager = ctx.service("models")
        try:
            return (manager.load_file("upscale_model", path, lambda p: load_upscale_model(p, manager=manager)),)
        except ModelLoadError as exc:
            raise _failed(exc, "model_name", model_name) from None

    def prefetch(self, ctx, *, model_name: str) -> str:
        path = _path(ctx, "upscale_models", model_name, "model_name")
        manager = ctx.service("models")
        return manager.prefetch([path], lambda: manager.load_file(
            "upscale_model", path, lambda p: load_upscale_model(p, manager=manager)))


class ImageUpscaleWithModel(Node):
    SCHEMA = NodeSchema(
        node_type="ImageUpscaleWithModel", display_name="Upscale Image (using Model)", category="image/upscaling",
        inputs=[InputSpec(name="upscale_model", type="UPSCALE_MODEL"), InputSpec(name="image", type="IMAGE")],
        outputs=[OutputSpec(type="IMAGE", name="IMAGE")],
    )

    def execute(self, ctx, *, upscale_model: UpscaleModel, image: torch.Tensor) -> tuple[torch.Tensor]:
        if not isinstance(upscale_model, UpscaleModel):
            raise ValueError("ImageUpscaleWithModel: input 'upscale_model' must come from UpscaleModelLoader, got "
                             f"{type(upscale_model).__name__}")
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] < 3:
            shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"ImageUpscaleWithModel: input 'image' must be an IMAGE [batch, height, width, 3], "
                             f"got {shape}")
        return (upscale_image(upscale_model, image, progress=ctx.progress),)


NODES = [UpscaleModelLoader, ImageUpscaleWithModel]
