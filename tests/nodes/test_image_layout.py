"""Crop, batch, repeat, pick, stitch and size: shapes, where each pixel lands, batch and size mismatches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import main
from graph import Folders
from graph.builder import GraphBuilder
from nodes.sd import image as I
from nodes.sd import image_layout as L
from nodes.sd import image_transform as T

from .test_latent_nodes import Engine


def run(cls: type, **inputs: Any) -> Any:
    return cls().execute(None, **inputs)


def numbered(b: int = 1, h: int = 4, w: int = 6, c: int = 3) -> torch.Tensor:
    """Every value different, so a test can tell where each pixel went."""
    return torch.arange(b * h * w * c, dtype=torch.float32).reshape(b, h, w, c) / (b * h * w * c)


def flat(color: tuple[float, ...], b: int = 1, h: int = 2, w: int = 2) -> torch.Tensor:
    return torch.tensor(color).expand(b, h, w, len(color)).clone()


def test_crop_takes_the_region_and_clamps_at_the_edges():
    image = numbered(b=2, h=6, w=8)
    (out,) = run(L.ImageCrop, image=image, width=3, height=2, x=4, y=1)
    assert torch.equal(out, image[:, 1:3, 4:7])
    (edge,) = run(L.ImageCrop, image=image, width=512, height=512, x=100, y=100)
    assert torch.equal(edge, image[:, 5:, 7:])  # a start past the edge keeps the last pixel


def test_image_batch_resizes_the_second_and_adds_an_opaque_alpha():
    a = flat((0.1, 0.2, 0.3, 0.5), b=2, h=4, w=6)
    b = flat((0.9, 0.8, 0.7), b=1, h=8, w=8)
    (out,) = run(L.ImageBatch, image1=a, image2=b)
    assert out.shape == (3, 4, 6, 4)
    assert torch.equal(out[:2], a)
    assert torch.allclose(out[2], flat((0.9, 0.8, 0.7, 1.0), h=4, w=6)[0], atol=1e-6)
    (rgb_first,) = run(L.ImageBatch, image1=b, image2=a)
    assert rgb_first.shape == (3, 8, 8, 4) and torch.all(rgb_first[0, ..., 3] == 1.0)


def test_image_batch_centre_crops_a_different_aspect():
    wide = torch.zeros(1, 4, 12, 3)
    wide[:, :, 4:8] = 1.0  # only the middle third is white
    (out,) = run(L.ImageBatch, image1=torch.zeros(1, 4, 4, 3), image2=wide)
    assert torch.allclose(out[1], torch.ones(4, 4, 3))


def test_repeat_and_pick_from_a_batch():
    image = numbered(b=2)
    (repeated,) = run(L.RepeatImageBatch, image=image, amount=3)
    assert repeated.shape == (6, 4, 6, 3) and torch.equal(repeated[4:], image)
    batch = numbered(b=5)
    assert torch.equal(run(L.ImageFromBatch, image=batch, batch_index=1, length=2)[0], batch[1:3])
    assert torch.equal(run(L.ImageFromBatch, image=batch, batch_index=-2, length=10)[0], batch[3:])
    assert torch.equal(run(L.ImageFromBatch, image=batch, batch_index=99, length=3)[0], batch[4:])
    assert torch.equal(run(L.ImageFromBatch, image=batch, batch_index=-99, length=1)[0], batch[:1])


def test_repeat_respects_the_pixel_limit():
    class Ctx:
        limits = main.Limits(max_pixels=1000)

    with pytest.raises(ValueError, match="RepeatImageBatch: the result would be"):
        L.RepeatImageBatch().execute(Ctx(), image=numbered(h=10, w=10), amount=11)


@pytest.mark.parametrize(("direction", "first"), [("right", "a"), ("left", "b"), ("down", "a"), ("up", "b")])
def test_stitch_directions_with_spacing(direction: str, first: str):
    a, b = flat((1.0, 0.0, 0.0), h=4, w=4), flat((0.0, 0.0, 1.0), h=4, w=4)
    (out,) = run(L.ImageStitch, image1=a, image2=b, direction=direction, match_image_size=True, spacing_width=1,
                 spacing_color="green")
    horizontal = direction in ("left", "right")
    assert out.shape == ((1, 4, 10, 3) if horizontal else (1, 10, 4, 3))  # spacing rounds up to 2
    parts = (out[:, :, :4], out[:, :, 4:6], out[:, :, 6:]) if horizontal else (out[:, :4], out[:, 4:6], out[:, 6:])
    expected_first, expected_last = (a, b) if first == "a" else (b, a)
    assert torch.equal(parts[0], expected_first) and torch.equal(parts[2], expected_last)
    assert torch.all(parts[1] == torch.tensor([0.0, 1.0, 0.0]))


def test_stitch_matches_size_by_aspect():
    a = flat((0.2, 0.2, 0.2), b=2, h=4, w=6)
    b = flat((0.6, 0.6, 0.6), b=1, h=6, w=12)  # aspect 2: becomes 8 wide at height 4
    (out,) = run(L.ImageStitch, image1=a, image2=b, direction="right", match_image_size=True, spacing_width=0,
                 spacing_color="white")
    assert out.shape == (2, 4, 14, 3)  # image2's single image repeats to the batch of 2
    assert torch.allclose(out[:, :, 6:], torch.full((2, 4, 8, 3), 0.6), atol=1e-5)
    (down,) = run(L.ImageStitch, image1=a, image2=b, direction="down", match_image_size=True, spacing_width=0,
                  spacing_color="white")
    assert down.shape == (2, 7, 6, 3)  # width 6 -> height int(6 / 2) = 3


def test_stitch_without_matching_pads_the_smaller_one_centred():
    a = flat((0.0, 0.0, 0.0), h=2, w=2)
    b = flat((1.0, 1.0, 1.0, 1.0), h=5, w=3)
    (out,) = run(L.ImageStitch, image1=a, image2=b, direction="right", match_image_size=False, spacing_width=0,
                 spacing_color="white")
    assert out.shape == (1, 5, 5, 4)
    column = out[0, :, 0]
    # image1 gains an opaque alpha, then white padding rows (1 above, 2 below) around its two black rows
    assert column[:, 0].tolist() == [1.0, 0.0, 0.0, 1.0, 1.0] and torch.all(out[0, 1:3, :2, 3] == 1.0)
    (black,) = run(L.ImageStitch, image1=a, image2=b, direction="right", match_image_size=False, spacing_width=0,
                   spacing_color="red")
    assert black[0, 0, 0].tolist() == [0.0, 0.0, 0.0, 1.0]  # coloured spacing pads with black (then opaque)


def test_stitch_without_image2_returns_image1():
    a = numbered()
    assert run(L.ImageStitch, image1=a, direction="up", match_image_size=True, spacing_width=4,
               spacing_color="black")[0] is a


def test_bad_images_are_named_errors():
    with pytest.raises(ValueError, match=r"ImageCrop, input 'image'.*shape \[4, 6\]"):
        run(L.ImageCrop, image=torch.zeros(4, 6), width=1, height=1, x=0, y=0)
    with pytest.raises(TypeError, match=r"ImageBatch, input 'image2'.*IMAGE"):
        run(L.ImageBatch, image1=numbered(), image2="a picture")


def test_layout_through_the_engine(tmp_path: Path):
    engine = Engine(tmp_path, I, T, L)
    g = GraphBuilder()
    img = g.node("EmptyImage", width=16, height=8, batch_size=3, color=0x00FF00)
    stitched = g.node("ImageStitch", image1=img, image2=img, direction="down", match_image_size=True,
                      spacing_width=2, spacing_color="white")
    picked = g.node("ImageFromBatch", image=stitched, batch_index=-1, length=1)
    size = g.node("GetImageSize", image=picked)
    image, width, height, batch = engine.values(g, picked, size[0], size[1], size[2])
    assert (width, height, batch) == (16, 18, 1) and image.shape == (1, 18, 16, 3)
    assert torch.all(image[0, 8:10] == 1.0) and torch.all(image[0, :8, :, 1] == 1.0)


def test_object_info_matches_comfyui(tmp_path: Path):
    info = main.build_registry(folders=Folders.under(tmp_path)).object_info()
    crop = info["ImageCrop"]
    assert crop["input_order"]["required"] == ["image", "width", "height", "x", "y"]
    assert crop["input"]["required"]["width"] == ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}]
    assert crop["input"]["required"]["x"] == ["INT", {"default": 0, "min": 0, "max": 16384, "step": 1}]
    assert info["ImageBatch"]["input_order"]["required"] == ["image1", "image2"]
    amount = info["RepeatImageBatch"]["input"]["required"]["amount"]
    assert amount[0] == "INT" and (amount[1]["default"], amount[1]["min"], amount[1]["max"]) == (1, 1, 4096)
    from_batch = info["ImageFromBatch"]["input"]["required"]
    assert from_batch["batch_index"][1]["min"] == -16384 and from_batch["length"][1]["max"] == 4096
    stitch = info["ImageStitch"]
    assert stitch["input_order"] == {"required": ["image1", "direction", "match_image_size", "spacing_width",
                                                  "spacing_color"], "optional": ["image2"]}
    assert stitch["input"]["required"]["direction"] == [["right", "down", "left", "up"], {"default": "right"}]
    assert stitch["input"]["required"]["spacing_width"] == ["INT", {"default": 0, "min": 0, "max": 1024, "step": 2}]
    assert stitch["input"]["optional"] == {"image2": ["IMAGE"]}
    size = info["GetImageSize"]
    assert size["output"] == ["INT", "INT", "INT"] and size["output_name"] == ["width", "height", "batch_size"]
    assert all(not info[n]["deprecated"] for n in ("ImageCrop", "ImageBatch"))  # shown in the editor's palette
