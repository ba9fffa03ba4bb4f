"""Upload sanitising: every uploaded image is decoded with Pillow and re-encoded, never stored as sent.

The declared size is checked from the header before any pixel is decoded (a 17 KB PNG can declare
144 megapixels), only raster formats Pillow decodes natively are tried (no EPS/Ghostscript), and the
re-encoded bytes carry no trailing payload: HTML, SVG and polyglots do not survive.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG also opens MPO files
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"})


class ImageError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, kw_only=True)
class Encoded:
    data: bytes
    extension: str  # ".png" or ".jpg"
    width: int
    height: int


def open_checked(source: bytes | Path, *, max_pixels: int, what: str = "the upload") -> Image.Image:
    """Open and fully decode an image, refusing oversized declarations before decoding."""
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    Image.init()  # registers the WebP and TIFF decoders (once), so `formats` can name them
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp, formats=list(ACCEPTED_FORMATS))
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{what} declares too many pixels: {exc}", status=413) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageError(f"{what} is not an image in a supported format ({', '.join(ACCEPTED_FORMATS[:5])}, ...)",
                         status=415) from None
    width, height = img.size
    if width <= 0 or height <= 0 or width * height > max_pixels:
        img.close()
        raise ImageError(f"{what} declares {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
                         status=413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        img.close()
        raise ImageError(f"{what} is truncated or corrupt: {exc}") from None
    return img


def reencode(img: Image.Image) -> Encoded:
    """JPEG stays JPEG (quality 95); everything else becomes PNG. Metadata is not carried over."""
    if img.format in ("JPEG", "MPO"):
        rgb = img if img.mode in ("L", "RGB") else img.convert("RGB")
        buf = io.BytesIO()
        rgb.save(buf, format="JPEG", quality=95)
        return Encoded(data=buf.getvalue(), extension=".jpg", width=img.width, height=img.height)
    out = img
    if out.mode not in _PNG_MODES:
        has_alpha = "A" in out.getbands() or "transparency" in out.info
        out = out.convert("RGBA" if has_alpha else "RGB")
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=False)
    return Encoded(data=buf.getvalue(), extension=".png", width=img.width, height=img.height)


def with_extension(name: str, extension: str) -> str:
    """The upload's name with the extension of what it really is now ('evil.html' -> 'evil.png')."""
    stem, dot, ext = name.rpartition(".")
    if dot and stem:
        if ext.lower() in (("jpg", "jpeg") if extension == ".jpg" else ("png",)):
            return name
        return stem + extension
    return name + extension


def apply_mask(original: Image.Image, mask: Image.Image) -> Encoded:
    """The original image with the mask's alpha channel as its alpha (the editor's mask upload)."""
    alpha = mask.getchannel("A") if "A" in mask.getbands() else mask.convert("L")
    if alpha.size != original.size:
        alpha = alpha.resize(original.size, Image.Resampling.LANCZOS)
    out = original.convert("RGBA")
    out.putalpha(alpha)
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return Encoded(data=buf.getvalue(), extension=".png", width=out.width, height=out.height)


def view_variant(path: Path, *, channel: str | None, preview: str | None, max_pixels: int) -> tuple[bytes, str]:
    """/view's `channel=rgb|a` and `preview=webp;90` options: a converted copy of an image file."""
    img = open_checked(path, max_pixels=max_pixels, what="the file")
    if channel == "rgb":
        img = img.convert("RGB")
    elif channel == "a":
        rgba = img.convert("RGBA")
        img = rgba.getchannel("A")
    elif channel not in (None, "", "rgba"):
        raise ImageError("channel must be rgba, rgb or a")
    fmt, quality = "PNG", 90
    if preview:
        name, _, q = preview.partition(";")
        fmt = {"webp": "WEBP", "jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}.get(name.lower(), "")
        if not fmt:
            raise ImageError("preview must be webp, jpeg or png, optionally with ';quality'")
        if q:
            if not q.isdigit() or not 1 <= int(q) <= 100:
                raise ImageError("preview quality must be an integer from 1 to 100")
            quality = int(q)
    if fmt == "JPEG" and img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=quality)
    return buf.getvalue(), {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[fmt]
