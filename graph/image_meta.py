"""Workflow metadata read back from images: the PNG text chunks and WebP EXIF tags SaveImage (ours or
ComfyUI's) writes, so a saved image reruns the prompt that made it.

PNG: `prompt` holds the API-format JSON and `workflow` the editor's, as tEXt, zTXt or iTXt chunks.
The chunk list is parsed directly, without decoding any pixels, so a metadata lookup on an untrusted
upload cannot be turned into a decompression bomb. WebP files written by ComfyUI's animated-WebP node
keep the same JSON in EXIF tags as "workflow:{...}" and "prompt:{...}". Torch-free; the writing side
is nodes/sd/png_meta.py.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import zlib
from pathlib import Path
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_BYTES = 64 * 1024 * 1024  # per chunk, after decompression
_EXIF_MAKE, _EXIF_MODEL = 0x010F, 0x0110

log = logging.getLogger("sumie.image_meta")


def is_image(data: bytes) -> bool:
    """Whether `data` starts like a PNG or a WebP file (the image formats that carry workflows)."""
    return data.startswith(PNG_SIGNATURE) or data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def _inflate(data: bytes, what: str) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, MAX_TEXT_BYTES)
    if d.unconsumed_tail:
        raise ValueError(f"{what}: compressed text chunk expands beyond {MAX_TEXT_BYTES} bytes")
    return out


def _parse_text_chunk(kind: bytes, body: bytes) -> tuple[str, str] | None:
    key_raw, sep, rest = body.partition(b"\x00")
    if not sep:
        return None
    key = key_raw.decode("latin-1")
    if kind in (b"tEXt", b"comf"):  # ComfyUI's animated PNGs keep the JSON in private `comf` chunks
        return key, rest.decode("latin-1")
    if kind == b"zTXt":
        if not rest or rest[0] != 0:
            return None
        return key, _inflate(rest[1:], key).decode("latin-1")
    # iTXt: compression flag, method, language\0, translated keyword\0, UTF-8 text
    if len(rest) < 2:
        return None
    flag, method, rest = rest[0], rest[1], rest[2:]
    _lang, _, rest = rest.partition(b"\x00")
    _translated, _, text = rest.partition(b"\x00")
    if flag:
        if method != 0:
            return None
        text = _inflate(text, key)
    return key, text.decode("utf-8", "replace")


def read_png_text(source: str | Path | bytes) -> dict[str, str]:
    """Every tEXt/zTXt/iTXt (and ComfyUI `comf`) chunk of a PNG as {keyword: text}, first one winning;
    pixels untouched."""
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    out: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if len(body) < length:
            break  # truncated file: keep what was read
        if kind in (b"tEXt", b"zTXt", b"iTXt", b"comf"):
            parsed = _parse_text_chunk(kind, bytes(body))
            if parsed is not None and parsed[0] not in out:
                out[parsed[0]] = parsed[1]
        elif kind == b"IEND":
            break
    return out


def _read_webp_exif(stream: io.BytesIO) -> dict[str, str]:
    from PIL import Image  # only WebP needs Pillow; PNG chunks are read directly

    out: dict[str, str] = {}
    with Image.open(stream) as im:
        exif = im.getexif()
    for tag in (_EXIF_MAKE, _EXIF_MODEL, *exif.keys()):
        value = exif.get(tag)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and ":" in value:
            key, _, text = value.partition(":")
            if key in ("prompt", "workflow") and key not in out:
                out[key] = text
    return out


def read_workflow_metadata(source: str | Path | bytes) -> dict[str, Any]:
    """`{"prompt": ..., "workflow": ...}` parsed from a PNG's text chunks or a WebP's EXIF.

    Keys are present only when found and valid JSON. The editor prefers `workflow`, then `prompt`.
    """
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    if data.startswith(PNG_SIGNATURE):
        texts = read_png_text(data)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        texts = _read_webp_exif(io.BytesIO(data))
    else:
        texts = {}
    out: dict[str, Any] = {}
    for key in ("prompt", "workflow"):
        if key in texts:
            try:
                out[key] = json.loads(texts[key])
            except (ValueError, RecursionError):
                log.warning("the %r metadata of an image is not valid JSON; ignored", key)
    return out
