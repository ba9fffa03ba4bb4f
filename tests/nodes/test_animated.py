"""SaveAnimatedWEBP / SaveAnimatedPNG: frames, frame durations and the embedded workflow, read back with Pillow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from graph import Node, NodeSchema, OutputSpec
from graph.builder import GraphBuilder
from graph.image_meta import read_png_text, read_workflow_metadata
from nodes.sd import animated as A
from tests.support.sd_engine import SdEngine

WORKFLOW = {"nodes": [{"id": 1, "type": "LoadImage"}], "links": [], "note": "été ✓"}


def frames_tensor(n: int = 3, h: int = 12, w: int = 16) -> torch.Tensor:
    """n distinct frames whose 8-bit values are exact (multiples of 1/255)."""
    levels = torch.arange(n * h * w * 3).reshape(n, h, w, 3) % 256
    return levels.float() / 255.0


class Frames(Node):
    """Hands the test's IMAGE batch (the `frames` service) into the graph."""

    SCHEMA = NodeSchema(node_type="TestFrames", outputs=[OutputSpec(type="IMAGE")])

    def fingerprint(self, **_: Any) -> float:
        return float("nan")  # never cached: each test hands in its own frames

    def execute(self, ctx) -> tuple[torch.Tensor]:
        return (ctx.service("frames"),)


@pytest.fixture
def engine(tmp_path: Path) -> SdEngine:
    engine = SdEngine(tmp_path)
    engine.registry.register(Frames)
    return engine


def save(engine: SdEngine, node_type: str, images: torch.Tensor, **inputs: Any) -> tuple[Path, dict[str, Any]]:
    engine.executor.services["frames"] = images
    g = GraphBuilder()
    node = g.node(node_type, images=g.node("TestFrames"), **inputs)
    outcome = engine.run(g.build(), extra_data={"extra_pnginfo": {"workflow": WORKFLOW}})
    assert outcome.status == "success", outcome.failure
    ui = outcome.outputs[node.id]
    ref = ui["images"][0]
    return engine.folders.output / ref["subfolder"] / ref["filename"], ui


def durations(path: Path) -> list[int]:
    with Image.open(path) as im:
        out = []
        for frame in ImageSequence.Iterator(im):
            frame.load()
            out.append(int(frame.info["duration"]))
        return out


def test_animated_webp_frames_timing_and_workflow(engine: SdEngine):
    images = frames_tensor(3)
    path, ui = save(engine, "SaveAnimatedWEBP", images, filename_prefix="anim/clip", fps=4.0, lossless=True,
                    quality=80, method="default")
    assert path.name == "clip_00001_.webp" and path.parent.name == "anim"
    assert ui["animated"] == [True]
    assert durations(path) == [250, 250, 250]  # int(1000 / fps) ms per frame
    with Image.open(path) as im:
        assert im.format == "WEBP" and im.n_frames == 3 and im.size == (16, 12)
        for k, frame in enumerate(ImageSequence.Iterator(im)):  # lossless: the 8-bit frames come back exactly
            expected = (images[k].numpy() * 255).round().astype(np.uint8)
            assert np.array_equal(np.asarray(frame.convert("RGB")), expected)
        exif = im.getexif()
    assert exif[0x0110].startswith("prompt:") and exif[0x010F] == f"workflow:{json.dumps(WORKFLOW)}"
    meta = read_workflow_metadata(path)
    assert meta["workflow"] == WORKFLOW
    assert {n["class_type"] for n in meta["prompt"].values()} == {"TestFrames", "SaveAnimatedWEBP"}


def test_lossy_webp_quality_changes_the_file(engine: SdEngine):
    noise = torch.rand(2, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    low, _ = save(engine, "SaveAnimatedWEBP", noise, filename_prefix="q", fps=6.0, lossless=False, quality=5,
                  method="fastest")
    high, _ = save(engine, "SaveAnimatedWEBP", noise, filename_prefix="q", fps=6.0, lossless=False, quality=100,
                   method="slowest")
    assert low.name == "q_00001_.webp" and high.name == "q_00002_.webp"
    assert low.stat().st_size < high.stat().st_size
    with Image.open(low) as im:
        assert im.n_frames == 2


def test_animated_png_frames_timing_and_workflow(engine: SdEngine):
    images = frames_tensor(4)
    path, ui = save(engine, "SaveAnimatedPNG", images, filename_prefix="apng", fps=3.0, compress_level=9)
    assert path.name == "apng_00001_.png" and ui["animated"] == [True]
    assert durations(path) == [333] * 4  # int(1000 / 3)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.n_frames == 4 and im.is_animated
        for k, frame in enumerate(ImageSequence.Iterator(im)):
            expected = (images[k].numpy() * 255).round().astype(np.uint8)
            assert np.array_equal(np.asarray(frame.convert("RGB")), expected)
    data = path.read_bytes()
    assert data.index(b"comf") > data.index(b"IDAT")  # ComfyUI's private chunks, after the image data
    assert json.loads(read_png_text(path)["workflow"]) == WORKFLOW
    assert read_workflow_metadata(path)["workflow"] == WORKFLOW


def test_png_compress_level_and_single_frames(engine: SdEngine):
    images = frames_tensor(2, 32, 32)
    loose, _ = save(engine, "SaveAnimatedPNG", images, filename_prefix="c", fps=6.0, compress_level=0)
    tight, _ = save(engine, "SaveAnimatedPNG", images, filename_prefix="c", fps=6.0, compress_level=9)
    assert loose.stat().st_size > tight.stat().st_size
    single, ui = save(engine, "SaveAnimatedPNG", images[:1], filename_prefix="one", fps=6.0, compress_level=4)
    assert "animated" not in ui and read_workflow_metadata(single)["workflow"] == WORKFLOW


def test_apng_chunks_carry_any_prompt_text():
    info = A.apng_info({"1": {"inputs": {"text": "été ✓ 漢字"}}}, {"workflow": {"a": 1}})
    texts = {chunk[1].split(b"\0")[0]: json.loads(chunk[1].split(b"\0", 1)[1]) for chunk in info.chunks}
    assert texts[b"prompt"]["1"]["inputs"]["text"] == "été ✓ 漢字" and texts[b"workflow"] == {"a": 1}
    assert all(chunk[0] == b"comf" for chunk in info.chunks)


def test_bad_inputs_name_node_and_input(engine: SdEngine):
    g = GraphBuilder()
    empty = g.node("EmptyImage", width=8, height=8, batch_size=1, color=0)
    g.node("SaveAnimatedWEBP", images=empty, filename_prefix="../out", fps=6.0, lossless=True, quality=80,
           method="best")
    messages = "\n".join(engine.validate(g.build()).messages())
    assert "filename_prefix" in messages and "method" in messages and "'best'" in messages
    g = GraphBuilder()
    empty = g.node("EmptyImage", width=8, height=8, batch_size=1, color=0)
    g.node("SaveAnimatedPNG", images=empty, filename_prefix="x", fps=0.0, compress_level=10)
    messages = "\n".join(engine.validate(g.build()).messages())
    assert "fps" in messages and "compress_level" in messages


def test_object_info_specs(engine: SdEngine):
    webp = engine.registry.object_info("SaveAnimatedWEBP")["SaveAnimatedWEBP"]
    required = webp["input"]["required"]
    assert list(required) == ["images", "filename_prefix", "fps", "lossless", "quality", "method"]
    assert required["fps"] == ["FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}]
    assert required["method"] == [["default", "fastest", "slowest"]]
    assert required["lossless"] == ["BOOLEAN", {"default": True}]
    assert webp["output_node"] is True and webp["input"]["hidden"] == {"prompt": "PROMPT",
                                                                        "extra_pnginfo": "EXTRA_PNGINFO"}
    png = engine.registry.object_info("SaveAnimatedPNG")["SaveAnimatedPNG"]
    assert list(png["input"]["required"]) == ["images", "filename_prefix", "fps", "compress_level"]
    assert png["input"]["required"]["compress_level"] == ["INT", {"default": 4, "min": 0, "max": 9, "step": 1}]
