"""Workflow metadata inside images, the writing side: the text chunks SaveImage puts into a PNG.

Written as PNG iTXt chunks (UTF-8, so prompts in any script round-trip exactly): `prompt` holds the
API-format JSON, and every key of `extra_pnginfo` (usually just `workflow`, the editor's JSON) gets
its own chunk. Reading them back (PNG and ComfyUI's WebP) is graph/image_meta.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from PIL.PngImagePlugin import PngInfo

log = logging.getLogger("sumie.png_meta")


def _valid_keyword(key: str) -> bool:
    """PNG keywords: 1-79 Latin-1 printable characters, no leading/trailing/double spaces."""
    if not (1 <= len(key) <= 79) or key != key.strip() or "  " in key:
        return False
    try:
        raw = key.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return all(32 <= b <= 126 or 161 <= b <= 255 for b in raw)


def build_png_info(prompt: Any = None, extra_pnginfo: Mapping[str, Any] | None = None, *,
                   logger: logging.Logger | None = None) -> PngInfo:
    """The text chunks SaveImage writes: `prompt`, then one per key of `extra_pnginfo`, as UTF-8 iTXt."""
    info = PngInfo()
    if prompt is not None:
        info.add_itxt("prompt", json.dumps(prompt, ensure_ascii=False))
    for key, value in (extra_pnginfo or {}).items():
        if not isinstance(key, str) or not _valid_keyword(key):
            (logger or log).warning("extra_pnginfo key %r is not a valid PNG keyword (1-79 Latin-1 characters); "
                                    "it is not written into the image", key)
            continue
        info.add_itxt(key, json.dumps(value, ensure_ascii=False))
    return info
