"""Image files: decode what LoadImage reads (size-checked first) and write what SaveImage saves.

Loading checks an image's declared size before decoding anything, so a small file that declares a
gigapixel canvas is refused cheaply. Saves are atomic (temporary file, fsync, rename) under the next
free numbered name: a full disk fails the node without leaving a truncated PNG. PNG conversion
truncates (uint8(clip(255 x, 0, 255))) as ComfyUI does, so saved pixels match.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from graph.limits import Limits
from nodes.sd.output_files import checked_prefix, write_numbered
from nodes.sd.png_meta import build_png_info

CHANNELS = ("alpha", "red", "green", "blue")
# Decoding limit for LoadImage (width x height summed over frames); the engine's default max_pixels.
MAX_LOAD_PIXELS = Limits().max_pixels

log = logging.getLogger("sumie.nodes.image")


# --------------------------------------------------------------------------------------------- decoding

def open_image(path: Path, *, max_pixels: int = MAX_LOAD_PIXELS) -> Image.Image:
    """Open (header only) and refuse images whose declared canvas is larger than `max_pixels`."""
    # Pillow itself refuses only beyond twice its own limit (and merely warns above it); our limit
    # is lower, so the check below is the one that normally applies.
    try:
        im = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"Image {path.name} is too large to load: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"Invalid image file: {path.name} is not an image Pillow can read ({exc})") from None
    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise ValueError(f"Image {path.name} declares {width}x{height} = {width * height:,} pixels, more than the "
                         f"limit of {max_pixels:,}; refused before decoding (a decompression bomb?)")
    return im


def _frame_arrays(frame: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """One frame -> (RGB float32 [H, W, 3] in 0..1, alpha float32 [H, W] in 0..1 or None)."""
    mode = frame.mode
    if mode.startswith("I") or mode == "F":
        raw = np.asarray(frame)
        if mode == "F":
            grey = np.clip(raw.astype(np.float32), 0.0, 1.0)
        else:  # 16-bit greyscale PNG/TIFF: keep the precision instead of squeezing through 8 bits
            grey = np.clip(raw.astype(np.float32) / 65535.0, 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=2), None
    has_alpha = "A" in frame.getbands() or (mode == "P" and "transparency" in frame.info)
    if has_alpha or mode in ("LA", "PA", "RGBa", "La"):
        rgba = np.asarray(frame.convert("RGBA"), dtype=np.float32) / 255.0
        return np.ascontiguousarray(rgba[..., :3]), rgba[..., 3]
    if mode != "RGB":
        frame = frame.convert("RGB")
    return np.asarray(frame, dtype=np.float32) / 255.0, None


def load_image(path: Path, *, max_pixels: int = MAX_LOAD_PIXELS) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE [N, H, W, 3] and MASK (1 - alpha) of every frame the size of the first, EXIF-rotated.

    Without any alpha the mask is zeros [N, 64, 64], as ComfyUI returns (nodes resize masks anyway).
    """
    with open_image(path, max_pixels=max_pixels) as im:
        frames = [im] if im.format == "MPO" else ImageSequence.Iterator(im)  # MPO: stereo pair, keep one
        images: list[np.ndarray] = []
        alphas: list[np.ndarray | None] = []
        size: tuple[int, int] | None = None
        total = 0
        try:
            for frame in frames:
                total += frame.size[0] * frame.size[1]
                if total > max_pixels:
                    raise ValueError(f"Image {path.name}: its frames add up to more than {max_pixels:,} pixels; "
                                     "refused (a decompression bomb?)")
                frame = ImageOps.exif_transpose(frame)
                if size is None:
                    size = frame.size
                elif frame.size != size:
                    log.warning("%s: frame %d is %s, not %s like the first; skipped", path.name, len(images),
                                frame.size, size)
                    continue
                rgb, alpha = _frame_arrays(frame)
                images.append(rgb)
                alphas.append(alpha)
        except (OSError, SyntaxError, EOFError) as exc:
            raise ValueError(f"Invalid image file: {path.name} could not be decoded ({exc})") from None
    if not images:
        raise ValueError(f"Invalid image file: {path.name} has no frames")
    image = torch.from_numpy(np.stack(images))
    if all(a is None for a in alphas):
        mask = torch.zeros(len(images), 64, 64)
    else:
        h, w = images[0].shape[:2]
        mask = torch.stack([torch.zeros(h, w) if a is None else 1.0 - torch.from_numpy(a) for a in alphas])
    return image, mask


def load_mask(path: Path, channel: str, *, max_pixels: int = MAX_LOAD_PIXELS) -> torch.Tensor:
    """One channel of the first frame as a MASK [1, H, W]; alpha is inverted (transparent = masked)."""
    with open_image(path, max_pixels=max_pixels) as im:
        try:
            frame = ImageOps.exif_transpose(im)
            if frame.mode.startswith("I") or frame.mode == "F":
                rgb, _ = _frame_arrays(frame)
                rgba = np.concatenate([rgb, np.ones_like(rgb[..., :1])], axis=2)
            else:
                rgba = np.asarray(frame.convert("RGBA"), dtype=np.float32) / 255.0
        except (OSError, SyntaxError, EOFError) as exc:
            raise ValueError(f"Invalid image file: {path.name} could not be decoded ({exc})") from None
    index = CHANNELS.index(channel)
    plane = rgba[..., 3] if index == 0 else rgba[..., index - 1]
    mask = torch.from_numpy(np.ascontiguousarray(plane))
    if index == 0:
        mask = 1.0 - mask
    return mask.unsqueeze(0)


# ---------------------------------------------------------------------------------------------- saving

def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[H, W, C] in 0..1 -> uint8 by truncation, as ComfyUI saves (NaN becomes 0)."""
    arr = np.nan_to_num(image.detach().float().cpu().numpy(), nan=0.0)
    return np.clip(255.0 * arr, 0, 255).astype(np.uint8)


def to_pil(image: torch.Tensor, node: str) -> Image.Image:
    """One IMAGE item [H, W, C] as a Pillow image (L, RGB or RGBA), truncated to 8 bits as ComfyUI saves."""
    if image.dim() != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{node}: images must be [batch, height, width, 3], got an item of shape "
                         f"{list(image.shape)}")
    arr = to_uint8(image)
    if arr.shape[-1] == 1:
        return Image.fromarray(arr[..., 0], mode="L")
    return Image.fromarray(arr, mode="RGB" if arr.shape[-1] == 3 else "RGBA")


def _write_png(f: BinaryIO, image: Image.Image, info: PngInfo, compress_level: int) -> None:
    image.save(f, format="PNG", pnginfo=info, compress_level=compress_level)


def save_images(root: Path, images: torch.Tensor, filename_prefix: str, *, kind: str, compress_level: int,
                prompt: Any = None, extra_pnginfo: Any = None, node: str = "SaveImage",
                logger: logging.Logger | None = None) -> list[dict[str, str]]:
    """Write each image as `{prefix}_{counter:05}_.png` under `root`; returns the editor's image refs."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"{node}: images must be [batch, height, width, 3], got shape {list(images.shape)}")
    prefix = checked_prefix(filename_prefix, images.shape[2], images.shape[1], node=node)
    extra = extra_pnginfo if isinstance(extra_pnginfo, dict) else None
    info = build_png_info(prompt, extra, logger=logger)
    results: list[dict[str, str]] = []
    counter: int | None = None
    for batch_number, image in enumerate(images):
        pil = to_pil(image, node)
        ref, counter = write_numbered(root, prefix.replace("%batch_num%", str(batch_number)), "png",
                                      lambda f, pil=pil: _write_png(f, pil, info, compress_level),
                                      kind=kind, node=node, counter=counter)
        results.append(ref)
    return results
