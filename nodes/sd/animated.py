"""SaveAnimatedWEBP and SaveAnimatedPNG: a batch of images as one animation, with its workflow inside.

Each frame lasts int(1000 / fps) milliseconds, as in ComfyUI. The workflow goes where ComfyUI puts
it, so its editor (and ours) reopens the file: an animated WebP keeps `prompt:{json}` in the EXIF
Model tag (0x0110) and each `extra_pnginfo` entry as `key:{json}` from the Make tag (0x010F)
downwards; an animated PNG keeps `key\\0{json}` in private `comf` chunks after the image data
(JSON escapes non-ASCII characters, so the Latin-1 chunk text round-trips any prompt).

Files go through the shared numbered, atomic output files, like SaveImage's.
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from graph import (
    BooleanInput,
    ComboInput,
    FloatInput,
    HiddenInput,
    InputSpec,
    IntInput,
    Node,
    NodeResult,
    NodeSchema,
    OutputSpec,
)
from nodes.sd.image import FilenamePrefixInput
from nodes.sd.image_files import to_pil
from nodes.sd.output_files import checked_prefix, write_numbered

WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}
EXIF_MODEL, EXIF_MAKE = 0x0110, 0x010F
PNG_WORKFLOW_CHUNK = b"comf"


def frame_duration_ms(fps: float) -> int:
    """How long each frame shows: ComfyUI truncates 1000 / fps to whole milliseconds."""
    return int(1000.0 / fps)


def webp_exif(prompt: Any = None, extra_pnginfo: Any = None) -> Image.Exif:
    """EXIF holding the workflow the way ComfyUI's animated WebP does."""
    exif = Image.Exif()
    if prompt is not None:
        exif[EXIF_MODEL] = f"prompt:{json.dumps(prompt)}"
    if isinstance(extra_pnginfo, dict):
        tag = EXIF_MAKE
        for key, value in extra_pnginfo.items():
            exif[tag] = f"{key}:{json.dumps(value)}"
            tag -= 1
    return exif


def apng_info(prompt: Any = None, extra_pnginfo: Any = None) -> PngInfo:
    """`comf` chunks (after the image data) holding the workflow the way ComfyUI's animated PNG does."""
    info = PngInfo()
    entries = [] if prompt is None else [("prompt", prompt)]
    if isinstance(extra_pnginfo, dict):
        entries.extend(extra_pnginfo.items())
    for key, value in entries:
        try:
            data = str(key).encode("latin-1") + b"\0" + json.dumps(value).encode("latin-1")
        except UnicodeEncodeError:
            continue  # a key outside Latin-1 cannot name a chunk entry (the JSON itself is ASCII)
        info.add(PNG_WORKFLOW_CHUNK, data, after_idat=True)
    return info


def _frames(images: torch.Tensor, node: str) -> list[Image.Image]:
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"{node}, input 'images': expected a batch [frames, height, width, 3], got shape "
                         f"{list(images.shape)}")
    return [to_pil(image, node) for image in images]


def _save_animation(ctx: Any, node: str, images: torch.Tensor, filename_prefix: str, ext: str,
                    encode: Any) -> NodeResult:
    if ctx.folders is None:
        raise ValueError(f"{node}: this engine was started without an output folder")
    frames = _frames(images, node)
    prefix = checked_prefix(filename_prefix, frames[0].width, frames[0].height, node=node)

    def writer(f: BinaryIO) -> None:
        try:
            encode(f, frames)
        except ValueError as exc:  # Pillow's refusals (sizes, parameters); OSError is a write failure
            raise ValueError(f"{node}: could not encode {len(frames)} frame(s) of {frames[0].width}x"
                             f"{frames[0].height}: {exc}") from exc

    ref, _ = write_numbered(ctx.folders.output, prefix, ext, writer, kind="output", node=node)
    ui: dict[str, Any] = {"images": [ref]}
    if len(frames) > 1:
        ui["animated"] = [True]
    return NodeResult(result=(images,), ui=ui)


_HIDDEN = [HiddenInput(name="prompt", kind="PROMPT"), HiddenInput(name="extra_pnginfo", kind="EXTRA_PNGINFO")]


def _common_inputs() -> list[InputSpec]:
    return [InputSpec(name="images", type="IMAGE"), FilenamePrefixInput(name="filename_prefix", default="ComfyUI"),
            FloatInput(name="fps", default=6.0, min=0.01, max=1000.0, step=0.01)]


class SaveAnimatedWEBP(Node):
    SCHEMA = NodeSchema(
        node_type="SaveAnimatedWEBP", display_name="Save Animated WEBP", category="image/animation",
        description="Save the batch as one animated WebP in the output folder, with the workflow in its EXIF.",
        inputs=[*_common_inputs(), BooleanInput(name="lossless", default=True),
                IntInput(name="quality", default=80, min=0, max=100),
                ComboInput(name="method", choices=tuple(WEBP_METHODS))],
        hidden=_HIDDEN, outputs=[OutputSpec(type="IMAGE", name="images")], output_node=True,
    )

    def execute(self, ctx, *, images: torch.Tensor, filename_prefix: str, fps: float, lossless: bool, quality: int,
                method: str, prompt: Any = None, extra_pnginfo: Any = None) -> NodeResult:
        exif = webp_exif(prompt, extra_pnginfo)

        def encode(f: BinaryIO, frames: list[Image.Image]) -> None:
            frames[0].save(f, format="WEBP", save_all=True, append_images=frames[1:],
                           duration=frame_duration_ms(fps), exif=exif, lossless=lossless, quality=quality,
                           method=WEBP_METHODS[method])

        return _save_animation(ctx, "SaveAnimatedWEBP", images, filename_prefix, "webp", encode)


class SaveAnimatedPNG(Node):
    SCHEMA = NodeSchema(
        node_type="SaveAnimatedPNG", display_name="Save Animated PNG", category="image/animation",
        description="Save the batch as one animated PNG (APNG) in the output folder, with the workflow inside.",
        inputs=[*_common_inputs(), IntInput(name="compress_level", default=4, min=0, max=9)],
        hidden=_HIDDEN, outputs=[OutputSpec(type="IMAGE", name="images")], output_node=True,
    )

    def execute(self, ctx, *, images: torch.Tensor, filename_prefix: str, fps: float, compress_level: int,
                prompt: Any = None, extra_pnginfo: Any = None) -> NodeResult:
        info = apng_info(prompt, extra_pnginfo)

        def encode(f: BinaryIO, frames: list[Image.Image]) -> None:
            frames[0].save(f, format="PNG", save_all=True, append_images=frames[1:],
                           duration=frame_duration_ms(fps), pnginfo=info, compress_level=compress_level)

        return _save_animation(ctx, "SaveAnimatedPNG", images, filename_prefix, "png", encode)


NODES = [SaveAnimatedWEBP, SaveAnimatedPNG]
