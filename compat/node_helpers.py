"""`node_helpers` for ComfyUI packs: conditioning updates, tolerant image opening, hashing, dtypes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any


def conditioning_set_values(conditioning: list[Any], values: Mapping[str, Any] | None = None,
                            append: bool = False) -> list[list[Any]]:
    """A copy of a CONDITIONING with `values` set on every entry's options (appended to, with append=True)."""
    out = []
    for cond, opts in conditioning:
        new = dict(opts)
        for key, value in (values or {}).items():
            if append and new.get(key) is not None:
                value = new[key] + value
            new[key] = value
        out.append([cond, new])
    return out


def pillow(fn: Callable[[Any], Any], arg: Any) -> Any:
    """Call a PIL function; on a truncated file, retry once allowing truncated images."""
    from PIL import Image, ImageFile

    try:
        return fn(arg)
    except (OSError, Image.UnidentifiedImageError, ValueError):
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            return fn(arg)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def hasher() -> Callable[..., Any]:
    """The hash packs use for file fingerprints (IS_CHANGED)."""
    return hashlib.sha256


def string_to_torch_dtype(string: str) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(string)


def image_alpha_fix(destination: Any, source: Any) -> tuple[Any, Any]:
    """Give two IMAGE batches the same channel count: drop source alpha, or add opaque alpha to destination."""
    import torch

    if destination.shape[-1] < source.shape[-1]:
        source = source[..., :destination.shape[-1]]
    elif destination.shape[-1] > source.shape[-1]:
        destination = torch.nn.functional.pad(destination, (0, 1))
        destination[..., -1] = 1.0
    return destination, source


def is_link(obj: Any) -> bool:
    """Whether an API-format input value is a link ([node_id, output_index])."""
    return isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], int)


__all__ = ["conditioning_set_values", "hasher", "image_alpha_fix", "is_link", "pillow", "string_to_torch_dtype"]
