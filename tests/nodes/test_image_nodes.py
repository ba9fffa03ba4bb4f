"""Image nodes through the engine: saving (metadata, names, atomicity), loading (alpha, EXIF, bombs), transforms."""

from __future__ import annotations

import errno
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import nodes.primitives
from graph import Folders, Limits, image_meta
from graph.builder import GraphBuilder
from nodes.sd import image as I
from nodes.sd import image_files as F
from nodes.sd import image_transform as T
from nodes.sd import latent as L

from .test_latent_nodes import Engine

PROMPT_TEXT = "a cat 猫 🐱 café « naïve » — ünïcödé"


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(tmp_path, I, T, L, nodes.primitives)


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def save_graph(prefix: object = "ComfyUI", *, batch: int = 1, color: int = 0x336699) -> dict:
    g = GraphBuilder()
    img = g.node("EmptyImage", width=8, height=4, batch_size=batch, color=color)
    g.node("SaveImage", "9", images=img, filename_prefix=prefix)
    return g.build()


# ------------------------------------------------------------------------------------------- SaveImage

def test_save_image_writes_png_with_unicode_metadata(engine: Engine):
    prompt = save_graph()
    prompt["1"]["_meta"] = {"title": PROMPT_TEXT}
    workflow = {"nodes": [{"id": 1, "widgets_values": [PROMPT_TEXT]}], "version": 0.4}
    outcome = engine.run(prompt, {"extra_pnginfo": {"workflow": workflow, "other": {"k": "v"}}})
    assert outcome.status == "success", outcome.failure
    assert outcome.outputs["9"] == {"images": [{"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"}]}
    path = engine.folders.output / "ComfyUI_00001_.png"
    meta = image_meta.read_workflow_metadata(path)
    assert meta["prompt"] == prompt and meta["workflow"] == workflow
    texts = image_meta.read_png_text(path)
    assert json.loads(texts["other"]) == {"k": "v"} and PROMPT_TEXT in texts["prompt"]
    raw = path.read_bytes()
    assert b"iTXt" in raw and PROMPT_TEXT.encode("utf-8") in raw
    with Image.open(path) as im:
        assert im.size == (8, 4) and im.mode == "RGB" and im.getpixel((0, 0)) == (0x33, 0x66, 0x99)
        assert json.loads(im.text["prompt"]) == prompt
    assert files(engine.folders.output) == ["ComfyUI_00001_.png"]


def test_save_image_counts_on_and_numbers_a_batch(engine: Engine):
    engine.run(save_graph(batch=2))
    outcome = engine.run(save_graph(batch=1, color=0xFFFFFF))  # a changed graph runs again
    assert [i["filename"] for i in outcome.outputs["9"]["images"]] == ["ComfyUI_00003_.png"]
    assert files(engine.folders.output) == ["ComfyUI_00001_.png", "ComfyUI_00002_.png", "ComfyUI_00003_.png"]


def test_save_image_prefix_with_subfolders(engine: Engine):
    outcome = engine.run(save_graph("portraits/day 1/cat"))
    assert outcome.outputs["9"]["images"] == [{"filename": "cat_00001_.png", "subfolder": "portraits/day 1",
                                               "type": "output"}]
    assert files(engine.folders.output) == ["portraits/day 1/cat_00001_.png"]


def test_save_image_prefix_through_a_file_is_a_clear_error(engine: Engine):
    (engine.folders.output / "taken").write_text("a file, not a folder")
    outcome = engine.run(save_graph("taken/cat"))
    assert outcome.status == "error" and "cannot use prefix 'taken/cat'" in outcome.failure.exception_message


@pytest.mark.parametrize("prefix", ["../x", "a/../../x", "/tmp/x", "..\\x", "C:/x"])
def test_save_image_refuses_traversal_at_validation(engine: Engine, prefix: str):
    result = engine.validate(save_graph(prefix))
    assert not result.ok
    issue = result.node_errors["9"].errors[0]
    assert issue.type == "unsafe_path" and issue.input_name == "filename_prefix"
    assert files(engine.folders.output) == []


def test_save_image_refuses_a_linked_traversal_at_run_time(engine: Engine, tmp_path: Path):
    prompt = save_graph()
    prompt["5"] = {"class_type": "PrimitiveString", "inputs": {"value": "../escaped"}}
    prompt["9"]["inputs"]["filename_prefix"] = ["5", 0]
    outcome = engine.run(prompt)
    assert outcome.status == "error" and outcome.failure.node_id == "9"
    assert "filename_prefix" in outcome.failure.exception_message
    assert "UnsafePathError" in outcome.failure.exception_type
    assert not list(tmp_path.glob("escaped*"))


def test_disk_full_fails_the_node_and_leaves_no_file(engine: Engine, monkeypatch: pytest.MonkeyPatch):
    def full_disk(f, image, info, compress_level):
        f.write(b"\x89PNG partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(F, "_write_png", full_disk)
    outcome = engine.run(save_graph())
    assert outcome.status == "error" and outcome.failure.node_id == "9"
    assert "ComfyUI_00001_.png" in outcome.failure.exception_message
    assert "No space left" in outcome.failure.exception_message
    assert files(engine.folders.output) == []
    monkeypatch.undo()
    outcome = engine.run(save_graph())  # the disk has room again: the queue goes on
    assert outcome.status == "success" and files(engine.folders.output) == ["ComfyUI_00001_.png"]


def test_png_conversion_truncates_like_comfyui():
    values = torch.tensor([0.0, 0.999, 1.0, 1.5, -0.2, 0.5, float("nan")]).reshape(1, 7, 1).expand(1, 7, 3)
    assert F.to_uint8(values)[0, :, 0].tolist() == [0, 254, 255, 255, 0, 127, 0]


def test_preview_image_goes_to_temp(engine: Engine):
    g = GraphBuilder()
    g.node("PreviewImage", "3", images=g.node("EmptyImage", width=4, height=4, batch_size=2, color=0))
    outcome = engine.run(g.build())
    refs = outcome.outputs["3"]["images"]
    assert [r["type"] for r in refs] == ["temp", "temp"] and refs[0]["subfolder"] == ""
    assert refs[0]["filename"].startswith("ComfyUI_temp_") and refs[0]["filename"].endswith("_00001_.png")
    assert len(files(engine.folders.temp)) == 2 and files(engine.folders.output) == []


# ------------------------------------------------------------------------------------------- LoadImage

def load_graph(name: str) -> dict:
    g = GraphBuilder()
    load = g.node("LoadImage", "1", image=name)
    g.node("Keep", value=load.out(0))
    g.node("Keep", value=load.out(1))
    return g.build()


def test_load_image_alpha_becomes_the_mask(engine: Engine):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 255
    rgba[1, 2, 3] = 0
    rgba[2, 3, 3] = 51
    Image.fromarray(rgba, "RGBA").save(engine.folders.input / "cut.png")
    engine.kept.clear()
    assert engine.run(load_graph("cut.png")).status == "success"
    img, mask = engine.kept
    assert img.shape == (1, 4, 6, 3) and img.dtype == torch.float32 and img[..., 0].min() == 1
    assert mask.shape == (1, 4, 6) and mask[0, 1, 2] == 1 and mask[0, 2, 3] == pytest.approx(0.8)
    assert mask.sum() == pytest.approx(1.8)


def test_load_image_without_alpha_gives_a_64px_empty_mask(tmp_path: Path):
    Image.new("RGB", (10, 7), (255, 128, 0)).save(tmp_path / "x.jpg", quality=100)
    img, mask = F.load_image(tmp_path / "x.jpg")
    assert img.shape == (1, 7, 10, 3) and mask.shape == (1, 64, 64) and not mask.any()
    assert img[0, 0, 0, 0] > 0.95 and abs(img[0, 0, 0, 1] - 0.5) < 0.03


def test_load_image_applies_exif_orientation(tmp_path: Path):
    arr = np.zeros((2, 4, 3), dtype=np.uint8)
    arr[0, 0] = (255, 0, 0)  # red in the top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.fromarray(arr).save(tmp_path / "rot.png", exif=exif)
    img, _ = F.load_image(tmp_path / "rot.png")
    assert img.shape == (1, 4, 2, 3)
    assert img[0, 0, 1].tolist() == [1.0, 0.0, 0.0]  # the top-left pixel ends up top-right


def test_load_image_frames_16bit_and_palette(tmp_path: Path):
    frames = [Image.new("RGB", (5, 3), (i * 60, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    img, mask = F.load_image(tmp_path / "anim.gif")
    assert img.shape == (3, 3, 5, 3) and mask.shape == (3, 64, 64)
    assert img[:, 0, 0, 0].tolist() == pytest.approx([0, 60 / 255, 120 / 255], abs=0.01)

    deep = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    img, _ = F.load_image(tmp_path / "deep.png")
    assert img.shape == (1, 2, 2, 3) and img[0, :, :, 0].flatten().tolist() == pytest.approx(
        [0.0, 1.0, 32768 / 65535, 1000 / 65535], abs=1e-6)

    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.info["transparency"] = 1
    pal.save(tmp_path / "pal.png", transparency=1)
    img, mask = F.load_image(tmp_path / "pal.png")
    assert img.shape == (1, 4, 4, 3) and mask.shape == (1, 4, 4) and mask[0, 1, 1] == 1 and mask.sum() == 1


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return image_meta.PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(
        b"IEND", b"")


@pytest.mark.parametrize("side", [9000, 30000])
def test_decompression_bombs_are_refused_before_decoding(engine: Engine, side: int):
    (engine.folders.input / "bomb.png").write_bytes(_png_header_only(side, side))
    outcome = engine.run(load_graph("bomb.png"))
    assert outcome.status == "error" and outcome.failure.node_id == "1"
    assert "bomb" in outcome.failure.exception_message or "too large" in outcome.failure.exception_message


def test_missing_or_unsafe_image_names(engine: Engine):
    node = I.LoadImage()
    limits = Limits()
    verdict = node.validate_inputs(limits=limits, image="nope.png", folders=engine.folders)
    assert verdict == "Invalid image file: nope.png"
    result = engine.validate(load_graph("nope.png"))  # caught before anything runs
    assert not result.ok and "Invalid image file: nope.png" in result.node_errors["1"].errors[0].message
    for bad in ("../secret.png", "/etc/passwd", "a\\b.png", ""):
        result = engine.validate(load_graph(bad))
        assert not result.ok and result.node_errors["1"].errors[0].input_name == "image", bad
    (engine.folders.input / "junk.png").write_bytes(b"not an image")
    outcome = engine.run(load_graph("junk.png"))
    assert outcome.status == "error" and "Invalid image file: junk.png" in outcome.failure.exception_message


def test_subfolders_annotations_and_the_combo_listing(engine: Engine):
    (engine.folders.input / "clipspace").mkdir()
    Image.new("RGB", (3, 2)).save(engine.folders.input / "clipspace" / "m.png")
    Image.new("RGB", (2, 2)).save(engine.folders.output / "out.png")
    Image.new("RGB", (2, 2)).save(engine.folders.input / "b.png")
    (engine.folders.input / "notes.txt").write_text("x")
    info = engine.registry.object_info("LoadImage")["LoadImage"]["input"]["required"]["image"]
    assert info == [["b.png"], {"image_upload": True}]
    engine.kept.clear()
    assert engine.run(load_graph("clipspace/m.png")).status == "success" and engine.kept[0].shape == (1, 2, 3, 3)
    engine.kept.clear()
    assert engine.run(load_graph("out.png [output]")).status == "success" and engine.kept[0].shape == (1, 2, 2, 3)


def test_a_changed_file_changes_the_fingerprint_and_reruns(engine: Engine):
    path = engine.folders.input / "x.png"
    Image.new("RGB", (2, 2), (0, 0, 0)).save(path)
    node = I.LoadImage()
    before = node.fingerprint(image="x.png", folders=engine.folders)
    assert before == node.fingerprint(image="x.png", folders=engine.folders)
    engine.kept.clear()
    engine.run(load_graph("x.png"))
    Image.new("RGB", (2, 2), (255, 255, 255)).save(path)
    assert node.fingerprint(image="x.png", folders=engine.folders) != before
    engine.run(load_graph("x.png"))
    assert engine.kept[0].max() == 0 and engine.kept[2].min() == 1  # the new pixels, not a cached result


def test_load_image_mask_channels(tmp_path: Path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 2] = 102
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    assert F.load_mask(tmp_path / "m.png", "red").shape == (1, 2, 3)
    assert F.load_mask(tmp_path / "m.png", "red").min() == 1
    assert F.load_mask(tmp_path / "m.png", "blue")[0, 0, 0] == pytest.approx(0.4)
    alpha = F.load_mask(tmp_path / "m.png", "alpha")
    assert alpha[0, 0, 0] == 1 and alpha.sum() == 1
    Image.new("RGB", (3, 2)).save(tmp_path / "rgb.png")
    assert not F.load_mask(tmp_path / "rgb.png", "alpha").any()


# ------------------------------------------------------------------------------------------ transforms

def test_image_scale_keeps_aspect_and_crops():
    img = torch.rand(2, 10, 20, 3)
    scale = T.ImageScale()
    assert scale.execute(None, image=img, upscale_method="bilinear", width=0, height=0, crop="disabled")[0] is img
    assert scale.execute(None, image=img, upscale_method="area", width=0, height=5, crop="disabled")[0].shape == (
        2, 5, 10, 3)
    assert scale.execute(None, image=img, upscale_method="bicubic", width=40, height=0, crop="disabled")[0].shape == (
        2, 20, 40, 3)
    for method in I.IMAGE_UPSCALE_METHODS:
        out = scale.execute(None, image=img, upscale_method=method, width=7, height=7, crop="center")[0]
        assert out.shape == (2, 7, 7, 3) and out.dtype == torch.float32, method
    flat = torch.full((1, 8, 8, 3), 0.3)
    lanczos = T.ImageScaleBy().execute(None, image=flat, upscale_method="lanczos", scale_by=1.5)[0]
    assert lanczos.shape == (1, 12, 12, 3) and torch.allclose(lanczos, torch.full_like(lanczos, 0.3), atol=1e-5)


def test_invert_and_empty_image():
    img = torch.rand(1, 2, 2, 3)
    assert torch.allclose(T.ImageInvert().execute(None, image=img)[0], 1 - img)
    (empty,) = T.EmptyImage().execute(None, width=3, height=2, batch_size=2, color=0xFF8000)
    assert empty.shape == (2, 2, 3, 3) and empty[1, 1, 2].tolist() == pytest.approx([1.0, 128 / 255, 0.0])
    assert "would need" in T.EmptyImage().validate_inputs(limits=Limits(), width=16384, height=16384, batch_size=4)


def test_pad_for_outpaint():
    img = torch.rand(2, 20, 30, 3)
    out, mask = T.ImagePadForOutpaint().execute(None, image=img, left=8, top=0, right=16, bottom=8, feathering=4)
    assert out.shape == (2, 28, 54, 3) and mask.shape == (1, 28, 54)
    assert torch.equal(out[:, 0:20, 8:38], img) and out[0, 25, 0, 0] == 0.5
    assert mask[0, 25].min() == 1 and mask[0, :, :8].min() == 1
    inner = mask[0, 0:20, 8:38]
    assert inner[0, 0] == pytest.approx(1.0)  # left edge borders new pixels: d = 0 -> full mask
    assert inner[10, 3] == pytest.approx(((4 - 3) / 4) ** 2) and inner[10, 4] == 0
    assert inner[0, 15] == 0  # the top was not padded: no feathering there
    assert inner[19, 15] == pytest.approx(((4 - 1) / 4) ** 2)
    _, flat = T.ImagePadForOutpaint().execute(None, image=img, left=8, top=0, right=0, bottom=0, feathering=0)
    assert flat[0, :, 8:].sum() == 0 and flat[0, :, :8].min() == 1


# ------------------------------------------------------------------------------------------ png_meta

def test_png_meta_reads_text_ztxt_and_itxt_chunks_without_decoding():
    info = PngInfo()
    info.add_text("prompt", json.dumps({"1": {"class_type": "X", "inputs": {}}}), zip=True)
    info.add_text("plain", "latin é")
    info.add_itxt("workflow", json.dumps({"t": "日本"}), zip=True)
    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, format="PNG", pnginfo=info)
    data = buf.getvalue()
    assert image_meta.read_png_text(data)["plain"] == "latin é"
    assert image_meta.read_workflow_metadata(data) == {"prompt": {"1": {"class_type": "X", "inputs": {}}},
                                                     "workflow": {"t": "日本"}}
    assert image_meta.read_workflow_metadata(_png_header_only(30000, 30000)) == {}
    with pytest.raises(ValueError, match="not a PNG"):
        image_meta.read_png_text(b"GIF89a")


def test_png_meta_reads_comfyui_webp_exif(tmp_path: Path):
    exif = Image.Exif()
    exif[0x010F] = "workflow:" + json.dumps({"nodes": []})
    exif[0x0110] = "prompt:" + json.dumps({"3": {"class_type": "KSampler"}})
    Image.new("RGB", (4, 4)).save(tmp_path / "a.webp", exif=exif)
    meta = image_meta.read_workflow_metadata(tmp_path / "a.webp")
    assert meta == {"workflow": {"nodes": []}, "prompt": {"3": {"class_type": "KSampler"}}}


def test_folders_helper_is_the_engines():
    assert I.resolve_image(Folders.under(Path("/r")), "a/b.png [temp]") == Path("/r/temp/a/b.png")
