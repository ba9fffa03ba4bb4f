"""Image nodes: load from the input folder, save to the output folder, preview, resize, pad, invert.

Files are named by untrusted workflow values, so every path goes through `graph.paths` (no `..`,
no absolute paths, no symlink escapes) and saves are atomic (temporary file, fsync, rename): a full
disk fails the node without leaving a truncated PNG. Loading checks an image's declared size
before decoding anything, so a small file that declares a gigapixel canvas is refused cheaply.

PNG conversion truncates (uint8(clip(255 x, 0, 255))) as ComfyUI does, so saved pixels match.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from graph import (
    ComboInput,
    FloatInput,
    HiddenInput,
    InputSpec,
    IntInput,
    Node,
    NodeResult,
    NodeSchema,
    OutputSpec,
    StringInput,
)
from graph.errors import InputError
from graph.limits import Limits
from graph.names import PREVIEW_CHARS, check_prefix, shown
from graph.node import Folders
from graph.paths import UnsafePathError, atomic_write, check_name, safe_join, unique_output_path
from nodes.sd.latent import CROP_METHODS, MAX_RESOLUTION, check_pixels, resize_nchw
from nodes.sd.png_meta import build_png_info

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jfif", ".mpo",
                              ".apng", ".tga", ".ppm", ".pgm", ".pbm"})
IMAGE_UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CHANNELS = ("alpha", "red", "green", "blue")
# Decoding limit for LoadImage (width x height summed over frames); the engine's default max_pixels.
MAX_LOAD_PIXELS = Limits().max_pixels
# "name.png [output]": the editor's way of naming a file in another folder (ComfyUI's annotation).
_ANNOTATIONS = (" [input]", " [output]", " [temp]")

log = logging.getLogger("sumie.nodes.image")


# ------------------------------------------------------------------------------------------ input files

def list_input_images(folders: Folders | None) -> list[str]:
    """Image files directly in the input folder, sorted: the LoadImage combo (uploads land here)."""
    if folders is None:
        return []
    try:
        with os.scandir(folders.input) as entries:
            names = [e.name for e in entries
                     if not e.name.startswith(".") and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS
                     and e.is_file()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(names)


def split_annotation(name: str) -> tuple[str, str]:
    """`"x.png [output]"` -> `("x.png", "output")`; unannotated names are in the input folder."""
    for tag in _ANNOTATIONS:
        if name.endswith(tag):
            return name[: -len(tag)], tag.strip(" []")
    return name, "input"


def resolve_image(folders: Folders | None, name: str) -> Path:
    """The path of an input image name (subfolders and annotations allowed), never outside its folder."""
    if folders is None:
        raise ValueError("this engine was started without folders, so images cannot be loaded")
    rel, kind = split_annotation(name)
    root = {"input": folders.input, "output": folders.output, "temp": folders.temp}[kind]
    return safe_join(root, rel)



class ImageFileInput(ComboInput):
    """LoadImage's `image`: a combo listing the input folder that also accepts names not listed.

    Uploads into subfolders ("clipspace/x.png") and annotated names ("x.png [output]") are valid
    as in ComfyUI, so the value is checked for safety here and for existence when the node is
    validated or run ("Invalid image file: NAME").
    """

    def coerce(self, value: Any, limits: Limits, choices: Sequence[Any] | None = None) -> Any:
        if not isinstance(value, str):
            raise InputError("invalid_input_type", f"Input '{self.name}' expects a file name, got "
                             f"{type(value).__name__}")
        try:
            rel, _ = split_annotation(value)
            if not check_name(rel, what="image") or rel.endswith("/"):
                raise UnsafePathError(f"image name {value!r} is empty")
        except UnsafePathError as exc:
            raise InputError("unsafe_path", f"Invalid image file: {exc}") from None
        return value


def _image_input() -> ImageFileInput:
    return ImageFileInput(name="image", choices=list_input_images, extra={"image_upload": True})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _missing_image(name: str, folders: Folders | None) -> str | None:
    """None when `name` is a readable file, else the message ComfyUI users know (the name shown once, bounded)."""
    try:
        path = resolve_image(folders, name)
    except (UnsafePathError, ValueError) as exc:
        return f"Invalid image file: {exc}"
    if not path.is_file():
        return f"Invalid image file: {name if len(name) <= PREVIEW_CHARS else shown(name)}"
    return None


class _ImageFileNode(Node):
    """Shared hooks of the nodes that read a file named by `image`."""

    def fingerprint(self, *, image: str, folders: Folders | None = None, **_: Any) -> Any:
        # The file's hash, so replacing an image under the same name re-runs the node. Without the
        # folders the file cannot be found before the run: never cache rather than serve a stale image.
        if folders is None:
            return float("nan")
        return file_sha256(resolve_image(folders, image))

    def validate_inputs(self, *, limits: Limits, image: Any = None, folders: Folders | None = None,
                        **_: Any) -> str | bool:
        if not isinstance(image, str) or folders is None:
            return True
        return _missing_image(image, folders) or True

    @staticmethod
    def _open_path(ctx: Any, image: str) -> Path:
        problem = _missing_image(image, ctx.folders)
        if problem:
            raise FileNotFoundError(f"{ctx.class_type}: {problem}")
        return resolve_image(ctx.folders, image)


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


class LoadImage(_ImageFileNode):
    SCHEMA = NodeSchema(
        node_type="LoadImage", display_name="Load Image", category="image",
        description="Load an image from the input folder; the mask is 1 where the image is transparent.",
        inputs=[_image_input()],
        outputs=[OutputSpec(type="IMAGE"), OutputSpec(type="MASK")],
    )

    def execute(self, ctx, *, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        path = self._open_path(ctx, image)
        try:
            return load_image(path)
        except ValueError as exc:
            raise ValueError(f"LoadImage: {exc}") from None


class LoadImageMask(_ImageFileNode):
    SCHEMA = NodeSchema(
        node_type="LoadImageMask", display_name="Load Image (as Mask)", category="mask",
        inputs=[_image_input(), ComboInput(name="channel", choices=CHANNELS)],
        outputs=[OutputSpec(type="MASK")],
    )

    def execute(self, ctx, *, image: str, channel: str) -> tuple[torch.Tensor]:
        path = self._open_path(ctx, image)
        try:
            return (load_mask(path, channel),)
        except ValueError as exc:
            raise ValueError(f"LoadImageMask: {exc}") from None


# ---------------------------------------------------------------------------------------------- saving

class FilenamePrefixInput(StringInput):
    """A filename prefix that may name subfolders but never leave the output folder."""

    def coerce(self, value: Any, limits: Limits) -> str:
        value = super().coerce(value, limits)
        try:
            check_prefix(value)
        except UnsafePathError as exc:
            raise InputError("unsafe_path", f"Input '{self.name}': {exc}",
                             hint="use a name like 'ComfyUI' or 'folder/name'") from None
        return value


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[H, W, C] in 0..1 -> uint8 by truncation, as ComfyUI saves (NaN becomes 0)."""
    arr = np.nan_to_num(image.detach().float().cpu().numpy(), nan=0.0)
    return np.clip(255.0 * arr, 0, 255).astype(np.uint8)


def _to_pil(image: torch.Tensor, node: str) -> Image.Image:
    if image.dim() != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{node}: images must be [batch, height, width, 3], got an item of shape "
                         f"{list(image.shape)}")
    arr = to_uint8(image)
    if arr.shape[-1] == 1:
        return Image.fromarray(arr[..., 0], mode="L")
    return Image.fromarray(arr, mode="RGB" if arr.shape[-1] == 3 else "RGBA")


def _write_png(f: BinaryIO, image: Image.Image, info: PngInfo, compress_level: int) -> None:
    image.save(f, format="PNG", pnginfo=info, compress_level=compress_level)


def expand_prefix(prefix: str, width: int, height: int) -> str:
    """ComfyUI's server-side prefix variables: %width%, %height%, %year% ... %second%."""
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    values = {"width": str(width), "height": str(height), "year": str(now.tm_year),
              "month": f"{now.tm_mon:02}", "day": f"{now.tm_mday:02}", "hour": f"{now.tm_hour:02}",
              "minute": f"{now.tm_min:02}", "second": f"{now.tm_sec:02}"}
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", value)
    return prefix


def save_images(root: Path, images: torch.Tensor, filename_prefix: str, *, kind: str, compress_level: int,
                prompt: Any = None, extra_pnginfo: Any = None, node: str = "SaveImage",
                logger: logging.Logger | None = None) -> list[dict[str, str]]:
    """Write each image as `{prefix}_{counter:05}_.png` under `root`; returns the editor's image refs."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"{node}: images must be [batch, height, width, 3], got shape {list(images.shape)}")
    try:
        prefix = expand_prefix(filename_prefix, images.shape[2], images.shape[1])
        check_prefix(prefix)
    except UnsafePathError as exc:
        raise UnsafePathError(f"{node}, input 'filename_prefix': {exc}") from None
    extra = extra_pnginfo if isinstance(extra_pnginfo, dict) else None
    info = build_png_info(prompt, extra, logger=logger)
    results: list[dict[str, str]] = []
    counter: int | None = None
    for batch_number, image in enumerate(images):
        pil = _to_pil(image, node)
        this_prefix = prefix.replace("%batch_num%", str(batch_number))
        for _attempt in range(1000):
            try:
                target = unique_output_path(root, this_prefix, "png", counter=counter)
            except OSError as exc:  # e.g. a file where a subfolder of the prefix should be
                raise OSError(exc.errno, f"{node}: cannot use prefix {this_prefix!r} in the {kind} folder: "
                                         f"{exc.strerror or exc}") from exc
            try:
                atomic_write(target.path, lambda f, pil=pil: _write_png(f, pil, info, compress_level),
                             overwrite=False)
            except FileExistsError:
                counter = None  # another writer took this number: rescan the folder
                continue
            except OSError as exc:
                where = f"{target.subfolder}/{target.filename}" if target.subfolder else target.filename
                raise OSError(exc.errno, f"{node}: could not write {where} in the {kind} folder: "
                                         f"{exc.strerror or exc}") from exc
            break
        else:
            raise FileExistsError(errno.EEXIST, f"{node}: no free file name for prefix {this_prefix!r}")
        counter = target.counter + 1
        results.append({"filename": target.filename, "subfolder": target.subfolder, "type": kind})
    return results


_HIDDEN = [HiddenInput(name="prompt", kind="PROMPT"), HiddenInput(name="extra_pnginfo", kind="EXTRA_PNGINFO")]


class SaveImage(Node):
    SCHEMA = NodeSchema(
        node_type="SaveImage", display_name="Save Image", category="image",
        description="Saves the input images to your output directory.",
        inputs=[InputSpec(name="images", type="IMAGE", tooltip="The images to save."),
                FilenamePrefixInput(name="filename_prefix", default="ComfyUI",
                                    tooltip="The prefix for the file to save. This may include formatting "
                                            "information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% "
                                            "to include values from nodes.")],
        hidden=_HIDDEN, outputs=[], output_node=True,
    )

    def execute(self, ctx, *, images: torch.Tensor, filename_prefix: str, prompt: Any = None,
                extra_pnginfo: Any = None) -> NodeResult:
        if ctx.folders is None:
            raise ValueError("SaveImage: this engine was started without an output folder")
        refs = save_images(ctx.folders.output, images, filename_prefix, kind="output", compress_level=4,
                           prompt=prompt, extra_pnginfo=extra_pnginfo, logger=ctx.logger)
        return NodeResult(result=(), ui={"images": refs})


class PreviewImage(Node):
    SCHEMA = NodeSchema(
        node_type="PreviewImage", display_name="Preview Image", category="image",
        description="Saves the input images to the temporary folder, for viewing in the editor.",
        inputs=[InputSpec(name="images", type="IMAGE")],
        hidden=_HIDDEN, outputs=[], output_node=True,
    )

    def execute(self, ctx, *, images: torch.Tensor, prompt: Any = None, extra_pnginfo: Any = None) -> NodeResult:
        if ctx.folders is None:
            raise ValueError("PreviewImage: this engine was started without a temp folder")
        suffix = "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5))
        refs = save_images(ctx.folders.temp, images, f"ComfyUI_temp_{suffix}", kind="temp", compress_level=1,
                           prompt=prompt, extra_pnginfo=extra_pnginfo, node="PreviewImage", logger=ctx.logger)
        return NodeResult(result=(), ui={"images": refs})


# ----------------------------------------------------------------------------------------- transforms

def _check_images(node: str, image: torch.Tensor) -> None:
    if image.dim() != 4:
        raise ValueError(f"{node}: image must be [batch, height, width, channels], got shape {list(image.shape)}")


def scale_image(image: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """Resize IMAGE [B, H, W, C] to width x height (channels-last in and out)."""
    return resize_nchw(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1).contiguous()


class ImageScale(Node):
    SCHEMA = NodeSchema(
        node_type="ImageScale", display_name="Upscale Image", category="image/upscaling",
        description="Resize to width x height; 0 for one side keeps the aspect ratio, 0 for both does nothing.",
        inputs=[InputSpec(name="image", type="IMAGE"), ComboInput(name="upscale_method", choices=IMAGE_UPSCALE_METHODS),
                IntInput(name="width", default=512, min=0, max=MAX_RESOLUTION, step=1),
                IntInput(name="height", default=512, min=0, max=MAX_RESOLUTION, step=1),
                ComboInput(name="crop", choices=CROP_METHODS)],
        outputs=[OutputSpec(type="IMAGE")],
    )

    def execute(self, ctx, *, image: torch.Tensor, upscale_method: str, width: int, height: int,
                crop: str) -> tuple[torch.Tensor]:
        _check_images("ImageScale", image)
        if width == 0 and height == 0:
            return (image,)
        h, w = image.shape[1], image.shape[2]
        if width == 0:
            width = max(1, round(w * height / h))
        elif height == 0:
            height = max(1, round(h * width / w))
        return (scale_image(image, width, height, upscale_method, crop),)


class ImageScaleBy(Node):
    SCHEMA = NodeSchema(
        node_type="ImageScaleBy", display_name="Upscale Image By", category="image/upscaling",
        inputs=[InputSpec(name="image", type="IMAGE"), ComboInput(name="upscale_method", choices=IMAGE_UPSCALE_METHODS),
                FloatInput(name="scale_by", default=1.0, min=0.01, max=8.0, step=0.01)],
        outputs=[OutputSpec(type="IMAGE")],
    )

    def execute(self, ctx, *, image: torch.Tensor, upscale_method: str, scale_by: float) -> tuple[torch.Tensor]:
        _check_images("ImageScaleBy", image)
        width, height = max(1, round(image.shape[2] * scale_by)), max(1, round(image.shape[1] * scale_by))
        return (scale_image(image, width, height, upscale_method),)


class ImageInvert(Node):
    SCHEMA = NodeSchema(
        node_type="ImageInvert", display_name="Invert Image", category="image",
        inputs=[InputSpec(name="image", type="IMAGE")], outputs=[OutputSpec(type="IMAGE")],
    )

    def execute(self, ctx, *, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - image,)


def outpaint_mask(h: int, w: int, *, top: int, bottom: int, left: int, right: int, feathering: int) -> torch.Tensor:
    """[H+top+bottom, W+left+right]: 1 on the new border, a squared ramp fading into the image edges."""
    mask = torch.ones(h + top + bottom, w + left + right)
    inner = torch.zeros(h, w)
    if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
        i = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
        j = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
        far_h, far_w = torch.full((h, w), float(h)), torch.full((h, w), float(w))
        d = torch.minimum(torch.minimum(i if top else far_h, h - i if bottom else far_h),
                          torch.minimum(j if left else far_w, w - j if right else far_w))
        v = (feathering - d) / feathering
        inner = torch.where(d < feathering, v * v, inner)
    mask[top:top + h, left:left + w] = inner
    return mask


class ImagePadForOutpaint(Node):
    SCHEMA = NodeSchema(
        node_type="ImagePadForOutpaint", display_name="Pad Image for Outpainting", category="image",
        description="Add grey borders and a mask covering them (feathered into the image) for outpainting.",
        inputs=[InputSpec(name="image", type="IMAGE"),
                *[IntInput(name=side, default=0, min=0, max=MAX_RESOLUTION, step=8)
                  for side in ("left", "top", "right", "bottom")],
                IntInput(name="feathering", default=40, min=0, max=MAX_RESOLUTION, step=1)],
        outputs=[OutputSpec(type="IMAGE"), OutputSpec(type="MASK")],
    )

    def execute(self, ctx, *, image: torch.Tensor, left: int, top: int, right: int, bottom: int,
                feathering: int) -> tuple[torch.Tensor, torch.Tensor]:
        _check_images("ImagePadForOutpaint", image)
        b, h, w, c = image.shape
        pixels = (h + top + bottom) * (w + left + right) * b
        if pixels > MAX_LOAD_PIXELS:
            raise ValueError(f"ImagePadForOutpaint: the padded image would be {pixels:,} pixels, more than the limit "
                             f"of {MAX_LOAD_PIXELS:,}")
        out = torch.full((b, h + top + bottom, w + left + right, c), 0.5, dtype=image.dtype)
        out[:, top:top + h, left:left + w, :] = image
        mask = outpaint_mask(h, w, top=top, bottom=bottom, left=left, right=right, feathering=feathering)
        return out, mask.unsqueeze(0)


class EmptyImage(Node):
    SCHEMA = NodeSchema(
        node_type="EmptyImage", display_name="EmptyImage", category="image",
        inputs=[IntInput(name="width", default=512, min=1, max=MAX_RESOLUTION, step=1),
                IntInput(name="height", default=512, min=1, max=MAX_RESOLUTION, step=1),
                IntInput(name="batch_size", default=1, min=1, max=4096),
                IntInput(name="color", default=0, min=0, max=0xFFFFFF, step=1, display="color")],
        outputs=[OutputSpec(type="IMAGE")],
    )

    def validate_inputs(self, *, limits: Limits, width: Any = None, height: Any = None, batch_size: Any = None,
                        **_: Any) -> str | bool:
        return check_pixels("EmptyImage", width, height, batch_size, limits)

    def execute(self, ctx, *, width: int, height: int, batch_size: int, color: int) -> tuple[torch.Tensor]:
        rgb = torch.tensor([((color >> 16) & 0xFF) / 0xFF, ((color >> 8) & 0xFF) / 0xFF, (color & 0xFF) / 0xFF])
        return (rgb.expand(batch_size, height, width, 3).clone(),)


NODES = [LoadImage, LoadImageMask, SaveImage, PreviewImage, ImageScale, ImageScaleBy, ImageInvert,
         ImagePadForOutpaint, EmptyImage]
