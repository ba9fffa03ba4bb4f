"""VAE nodes: latents to images and back, whole or in tiles, and the inpainting encode.

Conventions (ComfyUI's, so workflows give the same pixels):
- IMAGE is [B, H, W, 3] float32 in 0..1 on the CPU; the VAE sees [B, 3, H, W] in -1..1.
- LATENT samples are the VAE's raw latents (unscaled); the sampler applies the model's scale factor.
- Encoding returns the posterior's mode (its mean), not a random sample: encoding the same image
  twice gives the same latent, so img2img results depend only on the seed.
- Pixels are centre-cropped to a multiple of the VAE's downscale factor before encoding (8 for SD).
- The VAE runs on the device the model manager places it on (or where it already is), in its own
  dtype; results come back to the CPU as float32.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from graph import InputSpec, IntInput, Node, NodeSchema, OutputSpec
from nodes.base.handles import VaeHandle
from nodes.base.resize import repeat_to_batch

Latent = dict[str, Any]
log = logging.getLogger("sumie.nodes")
# Pixels decoded or encoded per chunk of a batch: bounds the VAE's activation memory.
CHUNK_PIXELS = 2 * 1024 * 1024


@contextmanager
def placed(handle: VaeHandle) -> Iterator[tuple[torch.device, torch.dtype]]:
    """The VAE on its compute device for the duration (via the model manager when there is one)."""
    if handle.manager is not None:
        with handle.manager.use(handle.vae) as device:
            yield torch.device(device), next(handle.vae.parameters()).dtype
    else:
        param = next(handle.vae.parameters())
        yield param.device, param.dtype


def _check_latent(node: str, handle: VaeHandle, samples: torch.Tensor) -> None:
    if samples.dim() != 4:
        raise ValueError(f"{node}: samples must be [batch, channels, height, width], got shape {list(samples.shape)}")
    if samples.shape[1] != handle.latent_channels:
        raise ValueError(f"{node}: the latent has {samples.shape[1]} channels but this VAE expects "
                         f"{handle.latent_channels}; the latent comes from a different model family")


def _check_image(node: str, pixels: torch.Tensor) -> None:
    if pixels.dim() != 4 or pixels.shape[-1] < 3:
        raise ValueError(f"{node}: pixels must be an IMAGE [batch, height, width, 3], got shape {list(pixels.shape)}")


def _chunks(batch: int, pixels_per_item: int) -> list[tuple[int, int]]:
    step = max(1, CHUNK_PIXELS // max(1, pixels_per_item))
    return [(i, min(batch, i + step)) for i in range(0, batch, step)]


def decode(handle: VaeHandle, samples: torch.Tensor, progress: Callable[[int, int], None] | None = None
           ) -> torch.Tensor:
    """Raw latents [B, C, h, w] -> IMAGE [B, h*f, w*f, 3] (f = the VAE's downscale factor)."""
    out = []
    ds = handle.downscale
    parts = _chunks(samples.shape[0], samples.shape[2] * samples.shape[3] * ds * ds)
    with placed(handle) as (device, dtype), torch.inference_mode(), _activations_in_place(handle.vae.decoder):
        for n, (a, b) in enumerate(parts):
            decoded = handle.vae.decode(samples[a:b].to(device=device, dtype=dtype)).sample
            out.append(_to_image(decoded))
            if progress is not None:
                progress(n + 1, len(parts))
    return torch.cat(out)


@contextmanager
def _activations_in_place(decoder: torch.nn.Module) -> Iterator[None]:
    """The decoder's SiLUs overwrite their input instead of allocating another activation: at 512x512
    that is one 128-256 MB tensor less at the decode's peak, with the same values (the same kernel).
    Safe in an image VAE's decoder: each SiLU there reads a fresh GroupNorm output that nothing else
    reads (its resnets get no time embedding)."""
    acts = [m for m in decoder.modules() if isinstance(m, torch.nn.SiLU) and not m.inplace]
    for m in acts:
        m.inplace = True
    try:
        yield
    finally:
        for m in acts:
            m.inplace = False


def _to_image(decoded: torch.Tensor) -> torch.Tensor:
    return ((decoded.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu().contiguous()


def crop_to_multiple(pixels: torch.Tensor, multiple: int) -> torch.Tensor:
    """Centre-crop [B, H, W, C] so H and W divide by `multiple`, as ComfyUI does before encoding."""
    h, w = pixels.shape[1], pixels.shape[2]
    nh, nw = (h // multiple) * multiple, (w // multiple) * multiple
    if (nh, nw) == (h, w):
        return pixels
    if nh == 0 or nw == 0:
        raise ValueError(f"the image is {w}x{h} pixels; the VAE needs at least {multiple}x{multiple}")
    top, left = (h % multiple) // 2, (w % multiple) // 2
    return pixels[:, top:top + nh, left:left + nw]


def encode(handle: VaeHandle, pixels: torch.Tensor, progress: Callable[[int, int], None] | None = None
           ) -> torch.Tensor:
    """IMAGE [B, H, W, 3+] (already a multiple of the downscale) -> raw latents, the posterior's mode."""
    x = pixels[..., :3].movedim(-1, 1)
    out = []
    parts = _chunks(x.shape[0], x.shape[2] * x.shape[3])
    with placed(handle) as (device, dtype), torch.inference_mode():
        for n, (a, b) in enumerate(parts):
            chunk = x[a:b].to(device=device, dtype=dtype) * 2.0 - 1.0
            out.append(handle.vae.encode(chunk).latent_dist.mode().float().cpu())
            if progress is not None:
                progress(n + 1, len(parts))
    return torch.cat(out)


# --------------------------------------------------------------------------------------------- tiling

def _starts(size: int, tile: int, stride: int, align: int = 1) -> list[int]:
    """Tile origins covering [0, size): every `stride`, the last one flush with the end."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return sorted({s - s % align for s in starts})


def _ramp(length: int, feather: int, start_edge: bool, end_edge: bool) -> torch.Tensor:
    """1-D blend weights: rising over `feather` samples at sides that overlap a neighbour tile."""
    w = torch.ones(length)
    n = min(feather, length // 2)
    if n > 0:
        rise = torch.arange(1, n + 1, dtype=torch.float32) / (n + 1)
        if not start_edge:
            w[:n] = rise
        if not end_edge:
            w[length - n:] = rise.flip(0)
    return w


def tiled(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], *, tile: int, overlap: int,
          num: int, den: int, align: int = 1, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Apply a spatial map `fn` ([B, C, h, w] -> [B, C', h*num/den, w*num/den]) tile by tile.

    Overlapping tiles are blended with linear ramps over the overlap, so seams fade instead of
    showing; the result is close to, not equal to, the untiled map (the VAE sees less context).
    """
    h, w = x.shape[-2:]
    tile_h, tile_w = min(tile, h), min(tile, w)
    stride = max(align, tile - overlap)
    ys, xs = _starts(h, tile_h, stride, align), _starts(w, tile_w, stride, align)
    out: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    feather = overlap * num // den
    total, done = len(ys) * len(xs), 0
    for y in ys:
        for x0 in xs:
            piece = fn(x[..., y:y + tile_h, x0:x0 + tile_w]).float()
            if out is None:
                out = torch.zeros(piece.shape[0], piece.shape[1], h * num // den, w * num // den)
                weight = torch.zeros(1, 1, out.shape[2], out.shape[3])
            oy, ox = y * num // den, x0 * num // den
            ph, pw = piece.shape[-2:]
            wy = _ramp(ph, feather, y == 0, y + tile_h >= h)
            wx = _ramp(pw, feather, x0 == 0, x0 + tile_w >= w)
            mask = (wy[:, None] * wx[None, :])[None, None]
            out[..., oy:oy + ph, ox:ox + pw] += piece.cpu() * mask
            weight[..., oy:oy + ph, ox:ox + pw] += mask
            done += 1
            if progress is not None:
                progress(done, total)
    assert out is not None and weight is not None
    return out / weight.clamp_min(1e-8)


def decode_tiled(handle: VaeHandle, samples: torch.Tensor, *, tile_size: int, overlap: int,
                 progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Decode in tiles of `tile_size` pixels overlapping by `overlap` pixels (ComfyUI's units)."""
    ds = handle.downscale
    if tile_size < overlap * 4:
        overlap = tile_size // 4
    tile, lap = max(1, tile_size // ds), overlap // ds
    with placed(handle) as (device, dtype), torch.inference_mode():
        def run(piece: torch.Tensor) -> torch.Tensor:
            return handle.vae.decode(piece.to(device=device, dtype=dtype)).sample.float().cpu()

        decoded = tiled(samples, run, tile=tile, overlap=lap, num=ds, den=1, progress=progress)
    return ((decoded + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1).contiguous()


def encode_tiled(handle: VaeHandle, pixels: torch.Tensor, *, tile_size: int, overlap: int,
                 progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Encode [B, H, W, 3] (a multiple of the downscale) in overlapping tiles of pixels."""
    ds = handle.downscale
    if tile_size < overlap * 4:
        overlap = tile_size // 4
    tile = max(ds, tile_size - tile_size % ds)
    lap = overlap - overlap % ds
    x = pixels[..., :3].movedim(-1, 1)
    with placed(handle) as (device, dtype), torch.inference_mode():
        def run(piece: torch.Tensor) -> torch.Tensor:
            chunk = piece.to(device=device, dtype=dtype) * 2.0 - 1.0
            return handle.vae.encode(chunk).latent_dist.mode().float().cpu()

        return tiled(x, run, tile=tile, overlap=lap, num=1, den=ds, align=ds, progress=progress)


# ------------------------------------------------------------------- out-of-memory: retry in tiles

FALLBACK_TILE, FALLBACK_OVERLAP = 512, 64  # pixels; VAEDecodeTiled's defaults


def _free_device_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def decode_fitting(handle: VaeHandle, samples: torch.Tensor,
                   progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """`decode`, retried in 512-pixel tiles when the device runs out of memory (a large image on a
    small GPU), so the prompt still finishes; the tiles are blended, so seams do not show."""
    try:
        return decode(handle, samples, progress)
    except torch.OutOfMemoryError:
        _free_device_memory()
        log.warning("VAEDecode ran out of device memory for %s; decoding in %d-pixel tiles instead",
                    list(samples.shape), FALLBACK_TILE)
        return decode_tiled(handle, samples, tile_size=FALLBACK_TILE, overlap=FALLBACK_OVERLAP, progress=progress)


def encode_fitting(handle: VaeHandle, pixels: torch.Tensor,
                   progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """`encode`, retried in 512-pixel tiles when the device runs out of memory."""
    try:
        return encode(handle, pixels, progress)
    except torch.OutOfMemoryError:
        _free_device_memory()
        log.warning("VAEEncode ran out of device memory for %s; encoding in %d-pixel tiles instead",
                    list(pixels.shape), FALLBACK_TILE)
        return encode_tiled(handle, pixels, tile_size=FALLBACK_TILE, overlap=FALLBACK_OVERLAP, progress=progress)


# ------------------------------------------------------------------------------------------------ nodes

def _vae_in() -> InputSpec:
    return InputSpec(name="vae", type="VAE")


def _temporal_inputs(verb: str) -> list[IntInput]:
    """ComfyUI's video-VAE inputs, required as there; image VAEs have no time axis, so they are unused."""
    return [IntInput(name="temporal_size", default=64, min=8, max=4096, step=4,
                     tooltip=f"Only used for video VAEs: Amount of frames to {verb} at a time."),
            IntInput(name="temporal_overlap", default=8, min=4, max=4096, step=4,
                     tooltip="Only used for video VAEs: Amount of frames to overlap.")]


class VAEDecode(Node):
    SCHEMA = NodeSchema(
        node_type="VAEDecode", display_name="VAE Decode", category="latent",
        description="Decodes latent images back into pixel space images.",
        inputs=[InputSpec(name="samples", type="LATENT", tooltip="The latent to be decoded."),
                InputSpec(name="vae", type="VAE", tooltip="The VAE model used for decoding the latent.")],
        outputs=[OutputSpec(type="IMAGE", tooltip="The decoded image.")],
    )

    def execute(self, ctx, *, samples: Latent, vae: VaeHandle) -> tuple[torch.Tensor]:
        latent = samples["samples"]
        _check_latent("VAEDecode", vae, latent)
        return (decode_fitting(vae, latent, ctx.progress),)


class VAEEncode(Node):
    SCHEMA = NodeSchema(
        node_type="VAEEncode", display_name="VAE Encode", category="latent",
        inputs=[InputSpec(name="pixels", type="IMAGE"), _vae_in()],
        outputs=[OutputSpec(type="LATENT")],
    )

    def execute(self, ctx, *, pixels: torch.Tensor, vae: VaeHandle) -> tuple[Latent]:
        _check_image("VAEEncode", pixels)
        pixels = crop_to_multiple(pixels, vae.downscale)
        return ({"samples": encode_fitting(vae, pixels, ctx.progress)},)


class VAEDecodeTiled(Node):
    SCHEMA = NodeSchema(
        node_type="VAEDecodeTiled", display_name="VAE Decode (Tiled)", category="_for_testing",
        description="Decode in overlapping tiles to bound memory; seams are blended.",
        inputs=[InputSpec(name="samples", type="LATENT"), _vae_in(),
                IntInput(name="tile_size", default=512, min=64, max=4096, step=32),
                IntInput(name="overlap", default=64, min=0, max=4096, step=32),
                *_temporal_inputs("decode")],
        outputs=[OutputSpec(type="IMAGE")],
    )

    def execute(self, ctx, *, samples: Latent, vae: VaeHandle, tile_size: int, overlap: int,
                temporal_size: int = 64, temporal_overlap: int = 8) -> tuple[torch.Tensor]:
        latent = samples["samples"]
        _check_latent("VAEDecodeTiled", vae, latent)
        return (decode_tiled(vae, latent, tile_size=tile_size, overlap=overlap, progress=ctx.progress),)


class VAEEncodeTiled(Node):
    SCHEMA = NodeSchema(
        node_type="VAEEncodeTiled", display_name="VAE Encode (Tiled)", category="_for_testing",
        description="Encode in overlapping tiles to bound memory; seams are blended.",
        inputs=[InputSpec(name="pixels", type="IMAGE"), _vae_in(),
                IntInput(name="tile_size", default=512, min=64, max=4096, step=64),
                IntInput(name="overlap", default=64, min=0, max=4096, step=32),
                *_temporal_inputs("encode")],
        outputs=[OutputSpec(type="LATENT")],
    )

    def execute(self, ctx, *, pixels: torch.Tensor, vae: VaeHandle, tile_size: int, overlap: int,
                temporal_size: int = 64, temporal_overlap: int = 8) -> tuple[Latent]:
        _check_image("VAEEncodeTiled", pixels)
        pixels = crop_to_multiple(pixels, vae.downscale)
        return ({"samples": encode_tiled(vae, pixels, tile_size=tile_size, overlap=overlap,
                                         progress=ctx.progress)},)


def grow_mask(mask: torch.Tensor, by: int) -> torch.Tensor:
    """Dilate a rounded [B, 1, H, W] mask by a `by` x `by` box (ComfyUI's grow_mask_by), same size out."""
    mask = mask.round()
    if by <= 0:
        return mask
    pad = math.ceil((by - 1) / 2)
    grown = F.conv2d(mask, torch.ones(1, 1, by, by), padding=pad).clamp(0, 1)
    return grown[..., :mask.shape[-2], :mask.shape[-1]]


class VAEEncodeForInpaint(Node):
    SCHEMA = NodeSchema(
        node_type="VAEEncodeForInpaint", display_name="VAE Encode (for Inpainting)", category="latent/inpaint",
        description="Encode with the masked area set to grey and attach the grown mask as the noise mask.",
        inputs=[InputSpec(name="pixels", type="IMAGE"), _vae_in(), InputSpec(name="mask", type="MASK"),
                IntInput(name="grow_mask_by", default=6, min=0, max=64, step=1)],
        outputs=[OutputSpec(type="LATENT")],
    )

    def execute(self, ctx, *, pixels: torch.Tensor, vae: VaeHandle, mask: torch.Tensor,
                grow_mask_by: int) -> tuple[Latent]:
        _check_image("VAEEncodeForInpaint", pixels)
        h, w = pixels.shape[1], pixels.shape[2]
        m = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
        if m.shape[-2:] != (h, w):
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
        ds = vae.downscale
        pixels = crop_to_multiple(pixels[..., :3], ds).clone()
        m = crop_to_multiple(m.movedim(1, -1), ds).movedim(-1, 1)
        keep = (1.0 - m.round()).movedim(1, -1)  # [B, H, W, 1]; masked pixels become 0.5 grey
        if keep.shape[0] not in (1, pixels.shape[0]):
            keep = repeat_to_batch(keep, pixels.shape[0])
        pixels = (pixels - 0.5) * keep + 0.5
        latent = encode(vae, pixels, ctx.progress)
        return ({"samples": latent, "noise_mask": grow_mask(m, grow_mask_by)},)


NODES = [VAEDecode, VAEEncode, VAEDecodeTiled, VAEEncodeTiled, VAEEncodeForInpaint]
