"""Mask nodes against their definitions: compositing = source x mask + destination x (1 - mask) at an
offset, feathering as a linear ramp, growing as max/min over the kernel, thresholds, mask algebra."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import main
from graph import Folders
from graph.builder import GraphBuilder
from nodes.sd import image as I
from nodes.sd import image_transform as T
from nodes.sd import mask_nodes as M

from .test_latent_nodes import Engine


def run(cls: type, **inputs: Any) -> Any:
    return cls().execute(None, **inputs)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ compositing

def test_composite_is_source_times_mask_plus_destination_times_inverse_at_the_offset():
    dest, src, mask = rand(2, 6, 8, 3, seed=1), rand(2, 3, 4, 3, seed=2), rand(2, 3, 4, seed=3)
    (out,) = run(M.ImageCompositeMasked, destination=dest, source=src, x=2, y=1, resize_source=False, mask=mask)
    expected = dest.clone()
    for b in range(2):
        for i in range(3):
            for j in range(4):
                m = mask[b, i, j]
                expected[b, 1 + i, 2 + j] = src[b, i, j] * m + dest[b, 1 + i, 2 + j] * (1 - m)
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.equal(out, dest) and dest.shape == out.shape  # the input itself is untouched


def test_composite_cuts_at_the_edge_and_without_a_mask_pastes():
    dest, src = torch.zeros(1, 4, 4, 3), rand(1, 3, 3, 3)
    (out,) = run(M.ImageCompositeMasked, destination=dest, source=src, x=2, y=3, resize_source=False)
    assert torch.equal(out[0, 3:, 2:], src[0, :1, :2]) and not out[0, :3].any() and not out[0, :, :2].any()
    (far,) = run(M.ImageCompositeMasked, destination=dest, source=src, x=40, y=0, resize_source=False)
    assert torch.equal(far, dest)


def test_composite_resizes_source_and_mask_and_repeats_the_batch():
    dest = torch.zeros(3, 4, 4, 3)
    src = torch.ones(1, 2, 2, 3)
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # [H, W], resized (bilinear) to the source
    (out,) = run(M.ImageCompositeMasked, destination=dest, source=src, x=0, y=0, resize_source=True, mask=mask)
    assert out.shape == (3, 4, 4, 3)
    expected = F.interpolate(mask[None, None], size=(4, 4), mode="bilinear", align_corners=False)[0, 0]
    for b in range(3):
        assert torch.allclose(out[b, ..., 0], expected, atol=1e-6)


def test_composite_rgb_onto_rgba_is_opaque():
    dest = torch.zeros(1, 2, 2, 4)
    (out,) = run(M.ImageCompositeMasked, destination=dest, source=torch.full((1, 1, 1, 3), 0.5), x=1, y=1,
                 resize_source=False)
    assert out[0, 1, 1].tolist() == [0.5, 0.5, 0.5, 1.0] and out[0, 0, 0].tolist() == [0.0] * 4


def test_join_and_split_alpha_are_inverse_masks():
    image, mask = rand(2, 3, 4, 3), rand(2, 3, 4, seed=5)
    (rgba,) = run(M.JoinImageWithAlpha, image=image, alpha=mask)
    assert rgba.shape == (2, 3, 4, 4)
    assert torch.equal(rgba[..., :3], image) and torch.allclose(rgba[..., 3], 1 - mask)
    rgb, back = run(M.SplitImageWithAlpha, image=rgba)
    assert torch.equal(rgb, image) and torch.allclose(back, mask, atol=1e-6)
    _, none = run(M.SplitImageWithAlpha, image=image)
    assert none.shape == (2, 3, 4) and not none.any()  # no alpha: fully opaque, nothing masked


def test_join_resizes_the_mask_and_repeats_batches():
    (rgba,) = run(M.JoinImageWithAlpha, image=rand(3, 4, 4, 3), alpha=torch.ones(1, 2, 2))
    assert rgba.shape == (3, 4, 4, 4) and not rgba[..., 3].any()


# ------------------------------------------------------------------------------------------ conversions

def test_mask_image_conversions():
    mask = rand(2, 3, 4)
    (image,) = run(M.MaskToImage, mask=mask)
    assert image.shape == (2, 3, 4, 3) and all(torch.equal(image[..., c], mask) for c in range(3))
    (single,) = run(M.MaskToImage, mask=mask[0])
    assert single.shape == (1, 3, 4, 3)
    rgba = rand(2, 3, 4, 4, seed=9)
    for index, channel in enumerate(M.MASK_CHANNELS):
        assert torch.equal(run(M.ImageToMask, image=rgba, channel=channel)[0], rgba[..., index])
    with pytest.raises(ValueError, match=r"ImageToMask, input 'channel'.*no alpha channel"):
        run(M.ImageToMask, image=rgba[..., :3], channel="alpha")


def test_solid_invert_threshold():
    (solid,) = run(M.SolidMask, value=0.25, width=5, height=3)
    assert solid.shape == (1, 3, 5) and solid.dtype == torch.float32 and torch.all(solid == 0.25)
    mask = torch.tensor([[0.0, 0.3, 0.5], [0.51, 0.9, 1.0]])
    assert torch.allclose(run(M.InvertMask, mask=mask)[0], 1 - mask[None])
    (binary,) = run(M.ThresholdMask, mask=mask, value=0.5)
    assert binary.tolist() == [[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]]  # strictly above the value


def test_crop_mask():
    mask = rand(2, 6, 8)
    assert torch.equal(run(M.CropMask, mask=mask, x=3, y=2, width=4, height=10)[0], mask[:, 2:, 3:7])
    with pytest.raises(ValueError, match=r"CropMask, input 'x': 8 is outside the 8x6 mask"):
        run(M.CropMask, mask=mask, x=8, y=0, width=4, height=4)


# ---------------------------------------------------------------------------------------------- combine

FORMULAS = {
    "multiply": lambda d, s: d * s,
    "add": lambda d, s: d + s,
    "subtract": lambda d, s: d - s,
    "and": lambda d, s: float(round(d) == 1 and round(s) == 1),
    "or": lambda d, s: float(round(d) == 1 or round(s) == 1),
    "xor": lambda d, s: float((round(d) == 1) != (round(s) == 1)),
}


@pytest.mark.parametrize("operation", M.MASK_OPERATIONS)
def test_mask_composite_per_pixel_at_an_offset(operation: str):
    dest, src = rand(2, 5, 6, seed=1), rand(2, 3, 4, seed=2) * 1.4
    x, y = 3, 1
    (out,) = run(M.MaskComposite, destination=dest, source=src, x=x, y=y, operation=operation)
    assert out.shape == dest.shape
    for b in range(2):
        for i in range(5):
            for j in range(6):
                d = dest[b, i, j].item()
                inside = y <= i < y + 3 and x <= j < x + 4
                value = FORMULAS[operation](d, src[b, i - y, j - x].item()) if inside else d
                assert out[b, i, j].item() == pytest.approx(min(1.0, max(0.0, value)), abs=1e-6)


def test_mask_composite_batches():
    dest, one = torch.full((3, 2, 2), 0.5), torch.full((1, 2, 2), 0.5)
    assert torch.allclose(run(M.MaskComposite, destination=dest, source=one, x=0, y=0, operation="add")[0],
                          torch.ones(3, 2, 2))
    grown = run(M.MaskComposite, destination=one, source=torch.rand(3, 2, 2), x=0, y=0, operation="multiply")[0]
    assert grown.shape == (3, 2, 2)
    with pytest.raises(ValueError, match=r"MaskComposite, input 'source'.*batch of 2 masks.*batch of 3"):
        run(M.MaskComposite, destination=dest, source=torch.ones(2, 2, 2), x=0, y=0, operation="add")
    same = run(M.MaskComposite, destination=dest, source=one, x=5, y=0, operation="add")[0]
    assert torch.equal(same, dest)  # entirely outside: nothing changes


# ---------------------------------------------------------------------------------------- feather / grow

def test_feather_is_a_linear_ramp_to_each_edge():
    mask = torch.ones(1, 6, 8)
    (out,) = run(M.FeatherMask, mask=mask, left=4, top=0, right=2, bottom=3)
    cols = [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 0.5]
    rows = [1.0, 1.0, 1.0, 1.0, 2 / 3, 1 / 3]
    expected = torch.tensor([[r * c for c in cols] for r in rows])
    assert torch.allclose(out[0], expected, atol=1e-6)
    (overlap,) = run(M.FeatherMask, mask=torch.ones(4, 3), left=3, top=0, right=3, bottom=0)
    assert torch.allclose(overlap[0, 0], torch.tensor([1 / 3 * 1, 2 / 3 * 2 / 3, 1 * 1 / 3]))  # ramps multiply
    (wide,) = run(M.FeatherMask, mask=torch.ones(1, 2, 2), left=100, top=0, right=0, bottom=0)
    assert torch.allclose(wide[0, 0], torch.tensor([0.5, 1.0]))  # ramps are cut to the mask's size


def diamond(mask: torch.Tensor, radius: int, pick: Any) -> torch.Tensor:
    """max (or min) over all pixels within L1 distance `radius`, by brute force."""
    b, h, w = mask.shape
    out = torch.empty_like(mask)
    for i in range(h):
        for j in range(w):
            near = [mask[:, p, q] for p in range(h) for q in range(w) if abs(p - i) + abs(q - j) <= radius]
            out[:, i, j] = pick(torch.stack(near), dim=0).values
    return out


@pytest.mark.parametrize("expand", [1, 2, 3, -1, -2])
def test_grow_mask_is_max_or_min_pooling_by_the_kernel(expand: int):
    mask = (rand(2, 7, 9, seed=4) > 0.7).float() * rand(2, 7, 9, seed=6)
    if expand < 0:
        mask = 1 - mask
    (square,) = run(M.GrowMask, mask=mask, expand=expand, tapered_corners=False)
    k = abs(expand)
    if expand > 0:
        expected = F.max_pool2d(mask[:, None], 2 * k + 1, stride=1, padding=k)[:, 0]
    else:
        expected = -F.max_pool2d(-mask[:, None], 2 * k + 1, stride=1, padding=k)[:, 0]
    assert torch.equal(square, expected)
    (tapered,) = run(M.GrowMask, mask=mask, expand=expand, tapered_corners=True)
    assert torch.equal(tapered, diamond(mask, k, torch.max if expand > 0 else torch.min))


def test_grow_mask_zero_and_large_expands():
    mask = torch.zeros(1, 5, 5)
    mask[0, 2, 2] = 0.8
    assert torch.equal(run(M.GrowMask, mask=mask, expand=0, tapered_corners=True)[0], mask)
    assert torch.all(run(M.GrowMask, mask=mask, expand=16384, tapered_corners=True)[0] == 0.8)
    assert not run(M.GrowMask, mask=mask, expand=-16384, tapered_corners=False)[0].any()


# ---------------------------------------------------------------------------------------- engine, schema

def test_masks_through_the_engine(tmp_path: Path):
    engine = Engine(tmp_path, I, T, M)
    g = GraphBuilder()
    solid = g.node("SolidMask", value=0.0, width=8, height=8)
    dot = g.node("SolidMask", value=1.0, width=2, height=2)
    placed = g.node("MaskComposite", destination=solid, source=dot, x=3, y=3, operation="add")
    grown = g.node("GrowMask", mask=placed, expand=1, tapered_corners=False)
    image = g.node("EmptyImage", width=8, height=8, batch_size=1, color=0xFFFFFF)
    joined = g.node("JoinImageWithAlpha", image=image, alpha=grown)
    (out,) = engine.values(g, joined)
    assert out.shape == (1, 8, 8, 4)
    assert torch.all(out[0, 2:6, 2:6, 3] == 0.0) and out[0, ..., 3].sum() == 64 - 16

    huge = GraphBuilder()
    huge.node("Keep", value=huge.node("SolidMask", value=1.0, width=16384, height=16384))
    result = engine.validate(huge.build())
    assert not result.ok and "16384x16384" in result.node_errors["1"].errors[0].message


def test_object_info_matches_comfyui(tmp_path: Path):
    info = main.build_registry(folders=Folders.under(tmp_path)).object_info()
    composite = info["ImageCompositeMasked"]
    assert composite["input"] == {
        "required": {"destination": ["IMAGE"], "source": ["IMAGE"],
                     "x": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 1}],
                     "y": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 1}],
                     "resize_source": ["BOOLEAN", {"default": False}]},
        "optional": {"mask": ["MASK"]}}
    grow = info["GrowMask"]["input"]["required"]
    assert grow["expand"] == ["INT", {"default": 0, "min": -16384, "max": 16384, "step": 1}]
    assert grow["tapered_corners"] == ["BOOLEAN", {"default": True}]
    assert info["MaskComposite"]["input_order"]["required"] == ["destination", "source", "x", "y", "operation"]
    assert info["MaskComposite"]["input"]["required"]["operation"] == [["multiply", "add", "subtract", "and", "or",
                                                                       "xor"]]
    assert info["FeatherMask"]["input_order"]["required"] == ["mask", "left", "top", "right", "bottom"]
    assert info["ImageToMask"]["input"]["required"]["channel"] == [["red", "green", "blue", "alpha"]]
    assert info["SolidMask"]["input"]["required"]["value"] == ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0,
                                                                        "step": 0.01}]
    assert info["ThresholdMask"]["input"]["required"]["value"][1]["default"] == 0.5
    assert info["SplitImageWithAlpha"]["output"] == ["IMAGE", "MASK"]
    assert info["JoinImageWithAlpha"]["input_order"]["required"] == ["image", "alpha"]
    assert info["CropMask"]["input_order"]["required"] == ["mask", "x", "y", "width", "height"]
