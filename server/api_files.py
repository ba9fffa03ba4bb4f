"""File routes: /view, /upload/image, /upload/mask, /userdata, /extensions and the editor's files."""

from __future__ import annotations

import asyncio
import mimetypes
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from graph.errors import Issue, RequestError
from graph.jsonio import loads_strict

from .api_settings import user_folder, user_folder_root
from .files import (
    PathError,
    contained,
    list_files,
    prepare_dir,
    resolve_file,
    split_relative,
    write_atomic,
)
from .images import apply_mask, open_checked, reencode, view_variant, with_extension
from .security import TooLarge, read_body
from .state import ServerState, state_of
from .users import BOOKMARKS

# Served inline with their own type; anything else is a download, so no HTML or script runs from /view.
INLINE_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif",
    ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff", ".mp4": "video/mp4", ".webm": "video/webm",
    ".mov": "video/quicktime", ".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac",
    ".ogg": "audio/ogg", ".json": "application/json", ".txt": "text/plain; charset=utf-8",
}
SAFE_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; sandbox"}
FIELD_LIMIT = 64 * 1024  # text fields of a multipart upload


def _disposition(kind: str, name: str) -> str:
    return f"{kind}; filename*=UTF-8''{quote(name)}"


def _file_response(path: Path, *, download: bool = False) -> web.FileResponse:
    ext = path.suffix.lower()
    ctype = INLINE_TYPES.get(ext)
    inline = ctype is not None and not download
    headers = {**SAFE_HEADERS, "Content-Type": ctype or "application/octet-stream",
               "Content-Disposition": _disposition("inline" if inline else "attachment", path.name)}
    return web.FileResponse(path, headers=headers)


# -- /view ---------------------------------------------------------------------------------------
async def get_view(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    q = request.query
    if "filename" not in q:
        raise PathError("the filename parameter is required")
    root = user_folder_root(request, q.get("type", "output") or "output")
    path = resolve_file(root, q.get("subfolder", ""), q["filename"])
    channel, preview = q.get("channel"), q.get("preview")
    if (channel and channel != "rgba") or preview:
        data, ctype = await asyncio.to_thread(view_variant, path, channel=channel, preview=preview,
                                              max_pixels=state.options.max_upload_pixels)
        return web.Response(body=data, headers={**SAFE_HEADERS, "Content-Type": ctype,
                                                "Content-Disposition": _disposition("inline", path.name)})
    return _file_response(path)


# -- uploads -------------------------------------------------------------------------------------
async def _read_upload(request: web.Request, state: ServerState) -> tuple[dict[str, str], bytes, str]:
    """The text fields, the image bytes and the uploaded file's name; 413 past the upload limit."""
    if not request.content_type.startswith("multipart/"):
        raise RequestError(Issue(type="invalid_request", message="An upload must be multipart/form-data",
                                 details="send the image as the 'image' field"))
    fields: dict[str, str] = {}
    image: bytes | None = None
    filename = ""
    limit = state.options.max_upload_bytes
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise RequestError(Issue(type="invalid_request", message="Nested multipart bodies are not accepted"))
            if part.name == "image":
                filename = part.filename or ""
                image = await _read_part(part, limit)
            elif part.name:
                fields[part.name] = (await _read_part(part, FIELD_LIMIT)).decode("utf-8", "replace")
    except (HttpProcessingError, ValueError) as exc:
        if isinstance(exc, RequestError):
            raise
        raise RequestError(Issue(type="invalid_request", message=f"Malformed multipart body: {exc}"[:300])) from None
    if image is None:
        raise RequestError(Issue(type="invalid_request", message="No 'image' file in the upload"))
    return fields, image, filename


async def _read_part(part: BodyPartReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await part.read_chunk(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise TooLarge(limit)
        chunks.append(chunk)


def _upload_target(request: web.Request, fields: dict[str, str], filename: str) -> tuple[str, str, Path, str, bool]:
    kind = fields.get("type") or "input"
    root = user_folder_root(request, kind)
    subfolder = "/".join(split_relative(fields.get("subfolder", ""), "subfolder", allow_empty=True))
    name = split_relative(filename, "the uploaded file's name", nested=False)[0]
    overwrite = fields.get("overwrite", "").lower() in ("true", "1", "yes")
    return kind, subfolder, root, name, overwrite


def _same_bytes(data: bytes):
    def same(existing: Path) -> bool:
        try:
            return existing.stat().st_size == len(data) and existing.read_bytes() == data
        except OSError:
            return False
    return same


async def post_upload_image(request: web.Request) -> web.Response:
    state = state_of(request)
    fields, data, filename = await _read_upload(request, state)
    kind, subfolder, root, name, overwrite = _upload_target(request, fields, filename)
    max_pixels = state.options.max_upload_pixels

    def work() -> str:
        img = open_checked(data, max_pixels=max_pixels)
        encoded = reencode(img)
        directory = prepare_dir(root, subfolder)
        return write_atomic(directory, with_extension(name, encoded.extension), encoded.data, overwrite=overwrite,
                            same=_same_bytes(encoded.data))

    final = await asyncio.to_thread(work)
    return web.json_response({"name": final, "subfolder": subfolder, "type": kind})


async def post_upload_mask(request: web.Request) -> web.Response:
    state = state_of(request)
    fields, data, filename = await _read_upload(request, state)
    kind, subfolder, root, name, overwrite = _upload_target(request, fields, filename)
    try:
        ref = loads_strict(fields.get("original_ref", ""))  # bounded nesting: a deep value is a 400, not a 500
    except RequestError:
        ref = None
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise RequestError(Issue(type="invalid_request", message="original_ref must be a JSON object with a "
                                 "filename (and optional subfolder and type) naming the image the mask is for"))
    original_path = resolve_file(user_folder_root(request, str(ref.get("type") or "input")),
                                 str(ref.get("subfolder") or ""), ref["filename"])
    max_pixels = state.options.max_upload_pixels

    def work() -> str:
        mask = open_checked(data, max_pixels=max_pixels, what="the mask")
        original = open_checked(original_path, max_pixels=max_pixels, what="the original image")
        encoded = apply_mask(original, mask)
        directory = prepare_dir(root, subfolder)
        return write_atomic(directory, with_extension(name, encoded.extension), encoded.data, overwrite=overwrite,
                            same=_same_bytes(encoded.data))

    final = await asyncio.to_thread(work)
    return web.json_response({"name": final, "subfolder": subfolder, "type": kind})


# -- userdata (the editor's saved workflows and settings) ----------------------------------------
def _user_root(request: web.Request) -> Path:
    return user_folder(request)


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    return default if value is None else value.lower() in ("true", "1", "yes")


def _file_info(root: Path, rel: Path) -> dict[str, Any]:
    st = (root / rel).stat()
    return {"path": rel.as_posix(), "size": st.st_size, "modified": int(st.st_mtime * 1000)}


async def list_userdata(request: web.Request) -> web.Response:
    base = _user_root(request)
    parts = split_relative(request.query.get("dir", ""), "dir", allow_empty=True)
    base.mkdir(parents=True, exist_ok=True)
    directory = contained(base, parts)
    if not directory.is_dir():
        raise PathError(f"no such folder: {'/'.join(parts)}", status=404)
    files = list_files(directory, recurse=_flag(request, "recurse", False))
    if _flag(request, "full_info", False):
        return web.json_response([_file_info(directory, f) for f in files])
    if _flag(request, "split", False):
        return web.json_response([[f.as_posix(), *f.parts] for f in files])
    return web.json_response([f.as_posix() for f in files])


def _userdata_path(request: web.Request, name: str) -> tuple[Path, list[str]]:
    # The one hidden file a client may name: where ComfyUI's editor keeps its workflow bookmarks.
    parts = BOOKMARKS.split("/") if name == BOOKMARKS else split_relative(name, "file")
    base = _user_root(request)
    base.mkdir(parents=True, exist_ok=True)
    return contained(base, parts), parts


async def get_userdata(request: web.Request) -> web.StreamResponse:
    path, parts = _userdata_path(request, request.match_info["file"])
    if not path.is_file():
        raise PathError(f"no such file: {'/'.join(parts)}", status=404)
    return _file_response(path)


async def post_userdata(request: web.Request) -> web.Response:
    state = state_of(request)
    path, parts = _userdata_path(request, request.match_info["file"])
    overwrite = _flag(request, "overwrite", True)
    if path.exists() and not overwrite:
        return web.json_response({"error": {"type": "exists", "message": f"{'/'.join(parts)} already exists",
                                            "details": "send ?overwrite=true to replace it", "extra_info": {}}},
                                 status=409)
    body = await read_body(request, state.options.max_json_bytes)
    base = _user_root(request)

    def work() -> None:
        directory = prepare_dir(base, "/".join(parts[:-1]))
        write_atomic(directory, parts[-1], body, overwrite=True)

    await asyncio.to_thread(work)
    rel = Path(*parts)
    if _flag(request, "full_info", False):
        return web.json_response(_file_info(base, rel))
    return web.json_response(rel.as_posix())


async def delete_userdata(request: web.Request) -> web.Response:
    path, parts = _userdata_path(request, request.match_info["file"])
    if not path.is_file():
        raise PathError(f"no such file: {'/'.join(parts)}", status=404)
    path.unlink()
    return web.Response(status=204)


async def move_userdata(request: web.Request) -> web.Response:
    source, src_parts = _userdata_path(request, request.match_info["file"])
    target, dest_parts = _userdata_path(request, request.match_info["dest"])
    if not source.is_file():
        raise PathError(f"no such file: {'/'.join(src_parts)}", status=404)
    if target.exists() and not _flag(request, "overwrite", False):
        return web.json_response({"error": {"type": "exists", "message": f"{'/'.join(dest_parts)} already exists",
                                            "details": "send ?overwrite=true to replace it", "extra_info": {}}},
                                 status=409)
    prepare_dir(_user_root(request), "/".join(dest_parts[:-1]))
    os.replace(source, target)
    rel = Path(*dest_parts)
    if _flag(request, "full_info", False):
        return web.json_response(_file_info(_user_root(request), rel))
    return web.json_response(rel.as_posix())


# -- the editor's files ---------------------------------------------------------------------------
def static_response(path: Path) -> web.FileResponse:
    ctype, _ = mimetypes.guess_type(path.name)
    if path.suffix in (".js", ".mjs"):
        ctype = "text/javascript"
    return web.FileResponse(path, headers={"X-Content-Type-Options": "nosniff",
                                           "Content-Type": ctype or "application/octet-stream"})


async def get_index(request: web.Request) -> web.StreamResponse:
    web_root = state_of(request).web_root
    if web_root is None or not (web_root / "index.html").is_file():
        return web.json_response({"name": "sumie", "editor": None,
                                  "api": "/openapi.json describes the routes"})
    return static_response(web_root / "index.html")


async def get_web_file(request: web.Request) -> web.StreamResponse:
    web_root = state_of(request).web_root
    if web_root is None:
        raise PathError("not found", status=404)
    return static_response(resolve_file(web_root, "", request.match_info["path"]))
