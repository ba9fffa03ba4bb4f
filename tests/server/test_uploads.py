"""Uploads: decoded and re-encoded, safe names, auto-rename, bombs, disguised files, masks."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from aiohttp import FormData
from PIL import Image

from tests.server.conftest import served


def png_bytes(size=(4, 3), colour=(10, 20, 30, 255), mode="RGBA") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGBA" else colour[:3]).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="JPEG")
    return buf.getvalue()


def bomb_png(width: int = 12_000, height: int = 12_000) -> bytes:
    """A tiny PNG whose header declares 144 megapixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + width // 8) * 64, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def noisy_png() -> bytes:
    img = Image.effect_noise((64, 64), 64).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def raw_multipart(data: bytes, filename: bytes) -> tuple[bytes, dict[str, str]]:
    """A multipart body with the file name written verbatim (aiohttp's client would percent-encode it)."""
    boundary = b"sumieboundary"
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="' + filename +
            b'"\r\nContent-Type: image/png\r\n\r\n' + data + b"\r\n--" + boundary + b"--\r\n")
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}


def form(data: bytes, filename: str, **fields: str) -> FormData:
    f = FormData()
    f.add_field("image", data, filename=filename, content_type="application/octet-stream")
    for k, v in fields.items():
        f.add_field(k, v)
    return f


async def test_upload_reencodes_and_auto_renames(env):
    async with served(env) as client:
        resp = await client.post("/upload/image", data=form(png_bytes(), "cat.png"))
        assert resp.status == 200 and await resp.json() == {"name": "cat.png", "subfolder": "", "type": "input"}
        stored = env.folders.input / "cat.png"
        with Image.open(stored) as img:
            assert img.size == (4, 3) and img.format == "PNG" and img.getpixel((0, 0)) == (10, 20, 30, 255)
        # Same content again: the existing file is reused.
        again = await (await client.post("/upload/image", data=form(png_bytes(), "cat.png"))).json()
        assert again["name"] == "cat.png"
        # Different content under the same name: a new name, the old file untouched.
        other = await (await client.post("/upload/image", data=form(png_bytes(colour=(1, 2, 3, 255)), "cat.png"))
                       ).json()
        assert other["name"] == "cat (1).png"
        with Image.open(stored) as img:
            assert img.getpixel((0, 0)) == (10, 20, 30, 255)
        # overwrite=true replaces.
        over = await client.post("/api/upload/image", data=form(png_bytes(colour=(9, 9, 9, 255)), "cat.png",
                                                                overwrite="true"))
        assert (await over.json())["name"] == "cat.png"
        with Image.open(stored) as img:
            assert img.getpixel((0, 0)) == (9, 9, 9, 255)
        view = await client.get("/view", params={"filename": "cat (1).png", "type": "input"})
        assert view.status == 200 and view.headers["X-Content-Type-Options"] == "nosniff"
        assert not [p for p in env.folders.input.iterdir() if p.name.startswith(".")]


async def test_upload_into_subfolder_and_other_types(env):
    async with served(env) as client:
        resp = await client.post("/upload/image", data=form(jpeg_bytes(), "photo.jpeg", subfolder="a/b",
                                                            type="output"))
        assert await resp.json() == {"name": "photo.jpeg", "subfolder": "a/b", "type": "output"}
        with Image.open(env.folders.output / "a" / "b" / "photo.jpeg") as img:
            assert img.format == "JPEG"
        resp = await client.post("/upload/image", data=form(png_bytes(), "x.png", type="models"))
        assert resp.status == 400


async def test_view_channel_and_preview_variants(env):
    async with served(env) as client:
        await client.post("/upload/image", data=form(png_bytes(colour=(10, 20, 30, 128)), "alpha.png"))
        rgb = await client.get("/view", params={"filename": "alpha.png", "type": "input", "channel": "rgb"})
        with Image.open(io.BytesIO(await rgb.read())) as img:
            assert img.mode == "RGB"
        a = await client.get("/view", params={"filename": "alpha.png", "type": "input", "channel": "a"})
        with Image.open(io.BytesIO(await a.read())) as img:
            assert img.mode == "L" and img.getpixel((0, 0)) == 128
        webp = await client.get("/view", params={"filename": "alpha.png", "type": "input", "preview": "webp;50"})
        assert webp.headers["Content-Type"] == "image/webp"
        bad = await client.get("/view", params={"filename": "alpha.png", "type": "input", "preview": "exe;5"})
        assert bad.status == 400


@pytest.mark.parametrize("name", [b"../evil.png", b"a/../../evil.png", b"/etc/evil.png", b"C:evil.png",
                                  b"..\\evil.png", b".hidden.png", b"CON.png", b"nul", b"x\x01.png", b"",
                                  b"\xed\xa0\x80.png", b"sub/evil.png"])
async def test_upload_refuses_unsafe_names(env, name):
    async with served(env) as client:
        body, headers = raw_multipart(png_bytes(), name)
        resp = await client.post("/upload/image", data=body, headers=headers)
        assert resp.status == 400, await resp.text()
        assert not list(env.folders.input.iterdir())
        assert not list(env.root.glob("evil*"))


@pytest.mark.parametrize("subfolder", ["..", "../x", "/abs", "a\\b", "a/./../.."])
async def test_upload_refuses_unsafe_subfolders(env, subfolder):
    async with served(env) as client:
        resp = await client.post("/upload/image", data=form(png_bytes(), "ok.png", subfolder=subfolder))
        assert resp.status == 400


async def test_upload_through_a_symlinked_subfolder_is_refused(env, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (env.folders.input / "link").symlink_to(outside)
    async with served(env) as client:
        resp = await client.post("/upload/image", data=form(png_bytes(), "ok.png", subfolder="link"))
        assert resp.status == 403
        assert not list(outside.iterdir())


async def test_overwrite_replaces_a_symlink_not_its_target(env, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside2") / "victim.png"
    outside.write_bytes(b"precious")
    (env.folders.input / "cat.png").symlink_to(outside)
    async with served(env) as client:
        resp = await client.post("/upload/image", data=form(png_bytes(), "cat.png", overwrite="true"))
        assert resp.status == 200
        assert outside.read_bytes() == b"precious"
        assert not (env.folders.input / "cat.png").is_symlink()


@pytest.mark.parametrize(("data", "name", "status"), [
    (b"<html><script>alert(1)</script></html>", "page.png", 415),
    (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "pic.svg", 415),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "x.eps", 415),
    (noisy_png()[:4000], "cut.png", 400),
    (bomb_png(), "bomb.png", 413),
])
async def test_upload_refuses_non_images_truncated_files_and_bombs(env, data, name, status):
    async with served(env) as client:
        resp = await client.post("/upload/image", data=form(data, name))
        assert resp.status == status, await resp.text()
        assert not list(env.folders.input.iterdir())


async def test_polyglot_loses_its_payload_and_its_extension(env):
    payload = png_bytes() + b"<html><script>alert(1)</script></html>"
    async with served(env) as client:
        body = await (await client.post("/upload/image", data=form(payload, "evil.html"))).json()
        assert body["name"] == "evil.png"
        stored = (env.folders.input / "evil.png").read_bytes()
        assert b"<script>" not in stored
        view = await client.get("/view", params={"filename": "evil.png", "type": "input"})
        assert view.headers["Content-Type"] == "image/png"


async def test_oversized_upload_is_413_and_leaves_nothing(env):
    async with served(env, max_upload_mb=0.01) as client:
        big = png_bytes(size=(300, 300), mode="RGB") + b"\0" * 20_000
        resp = await client.post("/upload/image", data=form(big, "big.png"))
        assert resp.status == 413
        assert not list(env.folders.input.iterdir())


async def test_upload_needs_multipart_with_an_image(env):
    async with served(env) as client:
        assert (await client.post("/upload/image", json={"image": "x"})).status == 400
        f = FormData()
        f.add_field("subfolder", "x")
        assert (await client.post("/upload/image", data=f)).status == 400


async def test_mask_upload_writes_alpha_into_the_original(env):
    async with served(env) as client:
        await client.post("/upload/image", data=form(png_bytes(size=(4, 4), mode="RGB"), "orig.png"))
        mask = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
        mask.putpixel((0, 0), (0, 0, 0, 255))
        buf = io.BytesIO()
        mask.save(buf, format="PNG")
        resp = await client.post("/upload/mask", data=form(
            buf.getvalue(), "orig.png", original_ref='{"filename": "orig.png", "type": "input"}', overwrite="true"))
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["name"] == "orig.png"
        with Image.open(env.folders.input / "orig.png") as img:
            assert img.mode == "RGBA" and img.size == (4, 4)
            assert img.getpixel((0, 0))[:3] == (10, 20, 30) and img.getpixel((3, 3))[3] == 0
        missing = await client.post("/upload/mask", data=form(buf.getvalue(), "m.png",
                                                              original_ref='{"filename": "nope.png"}'))
        assert missing.status == 404
        sneaky = await client.post("/upload/mask", data=form(buf.getvalue(), "m.png",
                                                             original_ref='{"filename": "../../etc/passwd"}'))
        assert sneaky.status == 400
        assert (await client.post("/upload/mask", data=form(buf.getvalue(), "m.png"))).status == 400
