"""Latent arithmetic, masked compositing, cropping and rebatching (ComfyUI's formulas, same specs).

Two latents combined by a node need not match: the second is resized to the first's size
(bilinear, center-cropped to its aspect ratio) and its batch repeated or cut to the first's, as
ComfyUI does, so its workflows give the same numbers. Only a different channel count (latents
of another model family) is refused. Outputs keep the first input's `noise_mask` and
`batch_index`, except where a node is about batches (RebatchLatents).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from graph import BooleanInput, FloatInput, InputSpec, IntInput, Node, NodeSchema, OutputSpec
from graph.limits import MAX_RESOLUTION
from nodes.base.resize import repeat_to_batch, resize_nchw
from nodes.sd.latent import LATENT_DOWNSCALE, Latent
from nodes.sd.mask_nodes import paste_masked


def _latent_in(name: str) -> InputSpec:
    return InputSpec(name=name, type="LATENT")


_LATENT_OUT = [OutputSpec(type="LATENT")]


def reshape_latent_to(node: str, target: torch.Tensor, latent: torch.Tensor, *, repeat_batch: bool = True,
                      name: str = "samples2") -> torch.Tensor:
    """`latent` resized to `target`'s spatial size (bilinear, center crop) and batch, on its device and dtype."""
    if latent.dim() != target.dim() or latent.shape[1] != target.shape[1]:
        raise ValueError(f"{node}: input '{name}' has shape {list(latent.shape)} but the first latent has "
                         f"{list(target.shape)}; both must come from the same model family (same channels)")
    latent = latent.to(device=target.device, dtype=target.dtype)
    if latent.shape[2:] != target.shape[2:]:
        latent = resize_nchw(latent, target.shape[-1], target.shape[-2], "bilinear", "center")
    return repeat_to_batch(latent, target.shape[0]) if repeat_batch else latent


# ---------------------------------------------------------------------------------------- arithmetic

class LatentAdd(Node):
    SCHEMA = NodeSchema(
        node_type="LatentAdd", category="latent/advanced",
        description="samples1 + samples2 (samples2 resized and batched to match samples1).",
        inputs=[_latent_in("samples1"), _latent_in("samples2")], outputs=_LATENT_OUT,
    )

    def execute(self, ctx, *, samples1: Latent, samples2: Latent) -> tuple[Latent]:
        s1 = samples1["samples"]
        out = dict(samples1)
        out["samples"] = s1 + reshape_latent_to("LatentAdd", s1, samples2["samples"])
        return (out,)


class LatentSubtract(Node):
    SCHEMA = NodeSchema(
        node_type="LatentSubtract", category="latent/advanced",
        description="samples1 - samples2 (samples2 resized and batched to match samples1).",
        inputs=[_latent_in("samples1"), _latent_in("samples2")], outputs=_LATENT_OUT,
    )

    def execute(self, ctx, *, samples1: Latent, samples2: Latent) -> tuple[Latent]:
        s1 = samples1["samples"]
        out = dict(samples1)
        out["samples"] = s1 - reshape_latent_to("LatentSubtract", s1, samples2["samples"])
        return (out,)


class LatentMultiply(Node):
    SCHEMA = NodeSchema(
        node_type="LatentMultiply", category="latent/advanced",
        inputs=[_latent_in("samples"), FloatInput(name="multiplier", default=1.0, min=-10.0, max=10.0, step=0.01)],
        outputs=_LATENT_OUT,
    )

    def execute(self, ctx, *, samples: Latent, multiplier: float) -> tuple[Latent]:
        out = dict(samples)
        out["samples"] = samples["samples"] * multiplier
        return (out,)


def interpolate_latents(s1: torch.Tensor, s2: torch.Tensor, ratio: float) -> torch.Tensor:
    """Blend channel-vector directions and lengths separately, so a mix does not lose magnitude.

    Each latent pixel's channel vector is split into its length m and direction u; the result has
    the direction of ratio*u1 + (1-ratio)*u2 and the length ratio*m1 + (1-ratio)*m2 (0/0 counts as 0).
    """
    m1 = torch.linalg.vector_norm(s1, dim=1, keepdim=True)
    m2 = torch.linalg.vector_norm(s2, dim=1, keepdim=True)
    mix = torch.nan_to_num(s1 / m1) * ratio + torch.nan_to_num(s2 / m2) * (1.0 - ratio)
    direction = torch.nan_to_num(mix / torch.linalg.vector_norm(mix, dim=1, keepdim=True))
    return direction * (m1 * ratio + m2 * (1.0 - ratio))


class LatentInterpolate(Node):
    SCHEMA = NodeSchema(
        node_type="LatentInterpolate", category="latent/advanced",
        description="Mix two latents, interpolating each pixel's channel direction and length separately; "
                    "ratio 1 gives samples1.",
        inputs=[_latent_in("samples1"), _latent_in("samples2"),
                FloatInput(name="ratio", default=1.0, min=0.0, max=1.0, step=0.01)],
        outputs=_LATENT_OUT,
    )

    def execute(self, ctx, *, samples1: Latent, samples2: Latent, ratio: float) -> tuple[Latent]:
        s1 = samples1["samples"]
        out = dict(samples1)
        out["samples"] = interpolate_latents(s1, reshape_latent_to("LatentInterpolate", s1, samples2["samples"]), ratio)
        return (out,)


# ------------------------------------------------------------------------------------------- placing

class LatentCompositeMasked(Node):
    SCHEMA = NodeSchema(
        node_type="LatentCompositeMasked", display_name="Latent Composite Masked", category="latent",
        description="Paste source onto destination at pixel position (x, y), through the mask where one is given.",
        inputs=[_latent_in("destination"), _latent_in("source"),
                IntInput(name="x", default=0, min=0, max=MAX_RESOLUTION, step=8),
                IntInput(name="y", default=0, min=0, max=MAX_RESOLUTION, step=8),
                BooleanInput(name="resize_source", default=False),
                InputSpec(name="mask", type="MASK", optional=True)],
        outputs=_LATENT_OUT,
    )

    def execute(self, ctx, *, destination: Latent, source: Latent, x: int, y: int, resize_source: bool,
                mask: torch.Tensor | None = None) -> tuple[Latent]:
        dest, src = destination["samples"], source["samples"]
        if src.dim() != dest.dim() or src.shape[1] != dest.shape[1]:
            raise ValueError(f"LatentCompositeMasked: input 'source' has shape {list(src.shape)} but 'destination' "
                             f"has {list(dest.shape)}; both must come from the same model family (same channels)")
        out = dict(destination)
        out["samples"] = paste_masked(dest, src, x, y, mask, multiplier=LATENT_DOWNSCALE, resize_source=resize_source)
        return (out,)


class LatentCrop(Node):
    SCHEMA = NodeSchema(
        node_type="LatentCrop", display_name="Crop Latent", category="latent/transform",
        description="Keep a width x height pixel region starting at (x, y); the start is kept at least 64 "
                    "pixels from the right and bottom edges.",
        inputs=[_latent_in("samples"),
                IntInput(name="width", default=512, min=64, max=MAX_RESOLUTION, step=8),
                IntInput(name="height", default=512, min=64, max=MAX_RESOLUTION, step=8),
                IntInput(name="x", default=0, min=0, max=MAX_RESOLUTION, step=8),
                IntInput(name="y", default=0, min=0, max=MAX_RESOLUTION, step=8)],
        outputs=_LATENT_OUT,
    )

    def execute(self, ctx, *, samples: Latent, width: int, height: int, x: int, y: int) -> tuple[Latent]:
        s = samples["samples"]
        h, w = s.shape[-2], s.shape[-1]
        left = max(0, min(x // LATENT_DOWNSCALE, w - 8))  # ComfyUI keeps at least 8 latents (64 px) to the edge
        top = max(0, min(y // LATENT_DOWNSCALE, h - 8))
        out = dict(samples)
        out["samples"] = s[..., top:top + height // LATENT_DOWNSCALE, left:left + width // LATENT_DOWNSCALE]
        return (out,)


# ---------------------------------------------------------------------------------------- rebatching

def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def rebatch_latents(latents: list[Latent], batch_size: int) -> list[Latent]:
    """Regroup a list of latent batches into batches of `batch_size`, in order.

    Consecutive items of the same spatial size are joined and cut into batches; a size change
    starts a new batch. Each output carries the `batch_index` of its items (their position in the
    whole list when they had none) and a pixel-sized `noise_mask` (all ones, so dropped, when no
    item had one).
    """
    runs: list[tuple[list[torch.Tensor], list[torch.Tensor], list[int]]] = []
    processed = 0
    for item in latents:
        samples = item["samples"]
        b, h, w = samples.shape[0], samples.shape[-2], samples.shape[-1]
        size = (h * LATENT_DOWNSCALE, w * LATENT_DOWNSCALE)
        mask = item.get("noise_mask")
        if mask is None:
            mask = torch.ones(b, 1, *size, device=samples.device)
        else:
            mask = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
            if tuple(mask.shape[-2:]) != size:
                mask = F.interpolate(mask, size=size, mode="bilinear")
            mask = repeat_to_batch(mask, b)
        indices = list(item["batch_index"]) if "batch_index" in item else [processed + i for i in range(b)]
        processed += len(indices)
        if runs and runs[-1][0][0].shape[-2:] == samples.shape[-2:]:
            runs[-1][0].append(samples)
            runs[-1][1].append(mask)
            runs[-1][2].extend(indices)
        else:
            runs.append(([samples], [mask], indices))
    out: list[Latent] = []
    for sample_parts, mask_parts, indices in runs:
        samples, masks = torch.cat(sample_parts), torch.cat([m.to(sample_parts[0].device) for m in mask_parts])
        for part in _chunks(samples.shape[0], batch_size):
            batch: Latent = {"samples": samples[part], "noise_mask": masks[part], "batch_index": indices[part]}
            if batch["noise_mask"].mean() == 1.0:
                del batch["noise_mask"]
            out.append(batch)
    return out


class RebatchLatents(Node):
    SCHEMA = NodeSchema(
        node_type="RebatchLatents", display_name="Rebatch Latents", category="latent/batch",
        description="Turn a list of latent batches into batches of batch_size (a new batch starts where the "
                    "size changes); each item keeps its batch_index, so its noise is the same.",
        inputs=[InputSpec(name="latents", type="LATENT"), IntInput(name="batch_size", default=1, min=1, max=4096)],
        outputs=[OutputSpec(type="LATENT", is_list=True)], input_is_list=True,
    )

    def execute(self, ctx, *, latents: list[Latent], batch_size: list[int]) -> tuple[list[Latent]]:
        return (rebatch_latents(list(latents), batch_size[0]),)


def rebatch_images(images: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    """Every image of every batch, in order, regrouped into batches of `batch_size` (a size change starts one)."""
    runs: list[list[torch.Tensor]] = []
    for batch in images:
        if batch.dim() == 3:
            batch = batch.unsqueeze(0)
        if runs and runs[-1][0].shape[1:] == batch.shape[1:]:
            runs[-1].append(batch)
        else:
            runs.append([batch])
    out: list[torch.Tensor] = []
    for run in runs:
        joined = torch.cat(run)
        out.extend(joined[part] for part in _chunks(joined.shape[0], batch_size))
    return out


class RebatchImages(Node):
    SCHEMA = NodeSchema(
        node_type="RebatchImages", display_name="Rebatch Images", category="image/batch",
        description="Turn a list of image batches into batches of batch_size (a new batch starts where the size "
                    "changes).",
        inputs=[InputSpec(name="images", type="IMAGE"), IntInput(name="batch_size", default=1, min=1, max=4096)],
        outputs=[OutputSpec(type="IMAGE", is_list=True)], input_is_list=True,
    )

    def execute(self, ctx, *, images: list[torch.Tensor], batch_size: list[int]) -> tuple[list[torch.Tensor]]:
        return (rebatch_images(list(images), batch_size[0]),)


NODES = [LatentAdd, LatentSubtract, LatentMultiply, LatentInterpolate, LatentCompositeMasked, LatentCrop,
         RebatchLatents, RebatchImages]
