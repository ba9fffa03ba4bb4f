"""`comfy_api.latest.ui`: what a V3 node shows in the editor (`NodeOutput(ui=...)`).

Images are written by the engine's own SaveImage/PreviewImage writer (nodes.sd.image.save_images), into
the running job's output or temp folder, with the prompt and workflow in the PNG when the node class
(`cls=`) carries them as hidden inputs.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from ... import _runtime
from ._io import FolderType
from ._io_node import _UIOutput


class SavedResult(dict):
    """One written file as the editor addresses it: filename, subfolder and folder type."""

    def __init__(self, filename: str, subfolder: str, type: FolderType | str) -> None:
        super().__init__(filename=filename, subfolder=subfolder, type=FolderType(type).value)

    @property
    def filename(self) -> str:
        return self["filename"]

    @property
    def subfolder(self) -> str:
        return self["subfolder"]

    @property
    def type(self) -> FolderType:
        return FolderType(self["type"])


class SavedImages(_UIOutput):
    def __init__(self, results: list[SavedResult], is_animated: bool = False) -> None:
        self.results = list(results)
        self.is_animated = is_animated

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"images": self.results}
        if self.is_animated:
            data["animated"] = (True,)
        return data


def _folder(folder_type: FolderType) -> Path:
    folders = _runtime.folders()
    return Path({FolderType.input: folders.input, FolderType.output: folders.output}.get(folder_type, folders.temp))


def _hidden(cls: Any, name: str) -> Any:
    holder = getattr(cls, "hidden", None) if cls is not None else None
    return getattr(holder, name, None) if holder is not None else None


class ImageSaveHelper:
    """Saving IMAGE batches as numbered PNG files, with the prompt and workflow of `cls.hidden`."""

    @staticmethod
    def save_images(images: Any, filename_prefix: str, folder_type: FolderType, cls: Any = None,
                    compress_level: int = 4) -> list[SavedResult]:
        from nodes.sd.image_files import save_images

        ctx = _runtime.context()
        kind = FolderType(folder_type)
        refs = save_images(_folder(kind), images, filename_prefix, kind=kind.value,
                           compress_level=compress_level, prompt=_hidden(cls, "prompt"),
                           extra_pnginfo=_hidden(cls, "extra_pnginfo"),
                           node=ctx.class_type if ctx is not None else "ui.ImageSaveHelper",
                           logger=ctx.logger if ctx is not None else None)
        return [SavedResult(r["filename"], r["subfolder"], r["type"]) for r in refs]

    @staticmethod
    def get_save_images_ui(images: Any, filename_prefix: str, cls: Any = None, compress_level: int = 4) -> SavedImages:
        return SavedImages(ImageSaveHelper.save_images(images, filename_prefix, FolderType.output, cls,
                                                       compress_level))


class PreviewImage(_UIOutput):
    """Shows an IMAGE batch in the editor (written to the temp folder)."""

    def __init__(self, image: Any, animated: bool = False, cls: Any = None, **kwargs: Any) -> None:
        suffix = "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5))
        self.values = ImageSaveHelper.save_images(image, f"ComfyUI_temp_{suffix}", FolderType.temp, cls,
                                                  compress_level=1)
        self.animated = animated

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.values, "animated": (self.animated,)}


class PreviewMask(PreviewImage):
    """Shows a MASK batch ([B, H, W] or [H, W]) as gray images."""

    def __init__(self, mask: Any, animated: bool = False, cls: Any = None, **kwargs: Any) -> None:
        gray = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3)
        super().__init__(gray, animated, cls, **kwargs)


class PreviewText(_UIOutput):
    """Shows text under the node."""

    def __init__(self, value: str, **kwargs: Any) -> None:
        self.value = value

    def as_dict(self) -> dict[str, Any]:
        return {"text": (self.value,)}


__all__ = ["ImageSaveHelper", "PreviewImage", "PreviewMask", "PreviewText", "SavedImages", "SavedResult"]
