"""Image nodes: load from the input folder, save to the output folder, preview (transforms: image_transform.py).

Files are named by untrusted workflow values, so every path goes through `graph.paths` (no `..`,
no absolute paths, no symlink escapes). Decoding (size-checked) and atomic numbered saves are
image_files.py's.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from graph import (
    ComboInput,
    HiddenInput,
    InputSpec,
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
from graph.paths import UnsafePathError, check_name, safe_join, split_annotation
from nodes.sd.image_files import CHANNELS, load_image, load_mask, save_images

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jfif", ".mpo",
                              ".apng", ".tga", ".ppm", ".pgm", ".pbm"})
IMAGE_UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")

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
    validated or run ("Invalid image file: NAME"). Other input-file combos (LoadLatent's) subclass
    it with their own `WHAT`, the word their messages use.
    """

    WHAT: ClassVar[str] = "image"

    def coerce(self, value: Any, limits: Limits, choices: Sequence[Any] | None = None) -> Any:
        if not isinstance(value, str):
            raise InputError("invalid_input_type", f"Input '{self.name}' expects a file name, got "
                             f"{type(value).__name__}")
        try:
            rel, _ = split_annotation(value)
            if not check_name(rel, what=self.WHAT) or rel.endswith("/"):
                raise UnsafePathError(f"{self.WHAT} name {value!r} is empty")
        except UnsafePathError as exc:
            raise InputError("unsafe_path", f"Invalid {self.WHAT} file: {exc}") from None
        return value


def _image_input() -> ImageFileInput:
    return ImageFileInput(name="image", choices=list_input_images, extra={"image_upload": True})


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_file_fingerprint(folders: Folders | None, name: str) -> Any:
    """A loader's cache key: the file's hash, so replacing a file under the same name re-runs the node.

    Without the folders the file cannot be found before the run: NaN (never equal) rather than a stale file.
    """
    if folders is None:
        return float("nan")
    return file_sha256(resolve_image(folders, name))


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
        return input_file_fingerprint(folders, image)

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


# ------------------------------------------------------------------------------------------ loading

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


NODES = [LoadImage, LoadImageMask, SaveImage, PreviewImage]
