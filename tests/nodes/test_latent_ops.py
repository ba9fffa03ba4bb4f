"""Latent arithmetic, blending, masked compositing, cropping and rebatching, each against its formula."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from graph.builder import GraphBuilder
from nodes.sd import latent as L
from nodes.sd import latent_ops as O
from tests.support.keep import kept_values
from tests.support.sd_engine import SdEngine


def latent(b: int = 1, h: int = 8, w: int = 8, c: int = 4, seed: int = 0, **extra: Any) -> dict[str, Any]:
    return {"samples": torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed)), **extra}


def run(cls: type, **inputs: Any) -> Any:
    return cls().execute(None, **inputs)[0]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> SdEngine:
    return SdEngine(tmp_path_factory.mktemp("latent_ops"))


# ----------------------------------------------------------------------------------------- arithmetic

def test_add_subtract_multiply_follow_their_formulas():
    a, b = latent(2, seed=1, batch_index=[4, 5]), latent(2, seed=2)
    assert torch.equal(run(O.LatentAdd, samples1=a, samples2=b)["samples"], a["samples"] + b["samples"])
    diff = run(O.LatentSubtract, samples1=a, samples2=b)
    assert torch.equal(diff["samples"], a["samples"] - b["samples"]) and diff["batch_index"] == [4, 5]
    assert torch.equal(run(O.LatentMultiply, samples=a, multiplier=-2.5)["samples"], a["samples"] * -2.5)
    assert "batch_index" not in b  # inputs are never modified


def test_second_latent_is_resized_bilinearly_and_batched_to_the_first():
    a, small = latent(3, 8, 8, seed=1), latent(1, 4, 4, seed=2)
    expected = a["samples"] + F.interpolate(small["samples"], size=(8, 8), mode="bilinear",
                                            align_corners=False).repeat(3, 1, 1, 1)
    assert torch.allclose(run(O.LatentAdd, samples1=a, samples2=small)["samples"], expected, atol=1e-6)
    wide = latent(4, 4, 8, seed=3)  # twice as wide: center-cropped to 4x4, then scaled up; batch 4 cut to 3
    cropped = wide["samples"][:3, :, :, 2:6]
    expected = a["samples"] - F.interpolate(cropped, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(run(O.LatentSubtract, samples1=a, samples2=wide)["samples"], expected, atol=1e-6)


def test_other_channel_counts_are_refused_with_the_input_named():
    with pytest.raises(ValueError, match=r"LatentAdd: input 'samples2' has shape \[1, 16, 8, 8\]"):
        run(O.LatentAdd, samples1=latent(), samples2=latent(c=16))


def _interpolate_reference(s1: torch.Tensor, s2: torch.Tensor, r: float) -> torch.Tensor:
    """Per latent pixel: direction of r*v1/|v1| + (1-r)*v2/|v2|, length r*|v1| + (1-r)*|v2| (0/0 -> 0)."""
    out = torch.zeros_like(s1)
    for b in range(s1.shape[0]):
        for i in range(s1.shape[2]):
            for j in range(s1.shape[3]):
                v1, v2 = s1[b, :, i, j], s2[b, :, i, j]
                n1, n2 = float(v1.norm()), float(v2.norm())
                u = (v1 / n1 if n1 else torch.zeros_like(v1)) * r + (v2 / n2 if n2 else torch.zeros_like(v2)) * (1 - r)
                nu = float(u.norm())
                out[b, :, i, j] = (u / nu if nu else torch.zeros_like(u)) * (r * n1 + (1 - r) * n2)
    return out


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_interpolate_mixes_directions_and_lengths(ratio: float):
    a, b = latent(2, 3, 5, seed=4), latent(2, 3, 5, seed=5)
    a["samples"][0, :, 0, 0] = 0  # a zero vector takes the other's direction
    out = run(O.LatentInterpolate, samples1=a, samples2=b, ratio=ratio)["samples"]
    assert torch.allclose(out, _interpolate_reference(a["samples"], b["samples"], ratio), atol=1e-5)
    if ratio == 1.0:
        assert torch.allclose(out, a["samples"], atol=1e-5)


def test_blend_formula_and_bicubic_center_resize():
    a, b = latent(1, seed=6), latent(1, seed=7)
    out = run(L.LatentBlend, samples1=a, samples2=b, blend_factor=0.3)["samples"]
    assert torch.allclose(out, a["samples"] * 0.3 + b["samples"] * 0.7)
    tall = latent(1, 8, 4, seed=8)  # half as wide: center-cropped to 4x4 rows 2..6, then bicubic to 8x8
    resized = F.interpolate(tall["samples"][:, :, 2:6, :], size=(8, 8), mode="bicubic", align_corners=False)
    out = run(L.LatentBlend, samples1=a, samples2=tall, blend_factor=0.75)["samples"]
    assert torch.allclose(out, a["samples"] * 0.75 + resized * 0.25, atol=1e-6)


# ------------------------------------------------------------------------------------------ composite

def test_composite_masked_pastes_through_the_mask_at_pixel_offsets():
    dest = {"samples": torch.zeros(1, 4, 8, 8), "noise_mask": torch.ones(1, 1, 64, 64), "batch_index": [3]}
    src = {"samples": torch.ones(1, 4, 4, 4)}
    mask = torch.zeros(1, 32, 32)
    mask[:, :, :16] = 1.0  # left half of the source: bilinear sampling at 4 columns gives 1, 1, 0, 0
    out = run(O.LatentCompositeMasked, destination=dest, source=src, x=16, y=8, resize_source=False, mask=mask)
    expected = torch.zeros(1, 4, 8, 8)
    expected[:, :, 1:5, 2:4] = 1.0  # x=16 px -> column 2, y=8 px -> row 1
    assert torch.equal(out["samples"], expected)
    assert out["batch_index"] == [3] and out["noise_mask"] is dest["noise_mask"] and dest["samples"].sum() == 0


def test_composite_masked_soft_mask_blends_and_clips_at_the_edges():
    dest = {"samples": torch.full((2, 4, 8, 8), 2.0)}
    src = {"samples": torch.full((1, 4, 4, 4), 10.0)}
    soft = torch.full((4, 4), 0.25)
    out = run(O.LatentCompositeMasked, destination=dest, source=src, x=48, y=56, resize_source=False,
              mask=soft)["samples"]
    inside = 0.25 * 10.0 + 0.75 * 2.0  # mask * source + (1 - mask) * destination
    assert out.shape == (2, 4, 8, 8)  # the source is repeated to the destination's batch
    assert torch.allclose(out[:, :, 7, 6:8], torch.full((2, 4, 2), inside))  # only 1 row x 2 columns fit
    assert out.sum() == pytest.approx(2.0 * (2 * 4 * 64 - 2 * 4 * 2) + inside * 2 * 4 * 2)
    plain = run(O.LatentCompositeMasked, destination=dest, source=src, x=0, y=0, resize_source=True)["samples"]
    assert torch.equal(plain, torch.full((2, 4, 8, 8), 10.0))  # no mask: replaced; resized to cover all


def test_crop_keeps_a_region_and_clamps_its_start():
    s = latent(1, 16, 16, seed=9)
    out = run(O.LatentCrop, samples=s, width=64, height=32, x=16, y=8)["samples"]
    assert torch.equal(out, s["samples"][:, :, 1:5, 2:10])
    far = run(O.LatentCrop, samples=s, width=512, height=512, x=120, y=120)["samples"]
    assert torch.equal(far, s["samples"][:, :, 8:16, 8:16])  # the start is clamped to 16 - 8 latents


# ---------------------------------------------------------------------------------------- rebatching

def test_rebatch_latents_regroups_with_indices_and_masks():
    masked = latent(2, 4, 4, seed=10, noise_mask=torch.zeros(1, 1, 16, 16))  # a mask at half the pixel size
    plain = latent(1, 4, 4, seed=11)
    bigger = latent(3, 8, 8, seed=12, batch_index=[7, 8, 9])
    out = O.RebatchLatents().execute(None, latents=[masked, plain, bigger], batch_size=[2])[0]
    assert [o["samples"].shape[0] for o in out] == [2, 1, 2, 1]  # a size change starts a new batch
    assert torch.equal(out[0]["samples"], masked["samples"])
    assert torch.equal(out[1]["samples"], plain["samples"])
    assert [o["batch_index"] for o in out] == [[0, 1], [2], [7, 8], [9]]
    assert out[0]["noise_mask"].shape == (2, 1, 32, 32) and out[0]["noise_mask"].max() == 0
    assert all("noise_mask" not in o for o in out[1:])  # all-ones masks are dropped


def test_rebatch_latents_joins_consecutive_items_and_keeps_their_masks_aligned():
    a = latent(1, 4, 4, seed=13, noise_mask=torch.zeros(1, 1, 32, 32))
    b = latent(2, 4, 4, seed=14)
    out = O.RebatchLatents().execute(None, latents=[a, b], batch_size=[2])[0]
    assert len(out) == 2 and torch.equal(out[0]["samples"], torch.cat([a["samples"], b["samples"][:1]]))
    assert out[0]["noise_mask"][:, 0, 0, 0].tolist() == [0.0, 1.0] and out[0]["batch_index"] == [0, 1]
    assert out[1]["batch_index"] == [2] and "noise_mask" not in out[1]


def test_rebatch_images_flattens_and_regroups():
    first, second = torch.rand(3, 4, 4, 3), torch.rand(2, 4, 4, 3)
    out = O.RebatchImages().execute(None, images=[first, second], batch_size=[2])[0]
    assert [o.shape[0] for o in out] == [2, 2, 1]
    assert torch.equal(torch.cat(out), torch.cat([first, second]))
    assert torch.equal(out[1][1], second[0])


def test_rebatch_through_the_engine_feeds_each_batch_downstream(engine: SdEngine):
    g = GraphBuilder()
    empty = g.node("EmptyLatentImage", width=64, height=64, batch_size=5)
    rebatched = g.node("RebatchLatents", latents=empty, batch_size=2)
    scaled = g.node("LatentMultiply", samples=rebatched, multiplier=2.0)
    kept = kept_values(engine, g, scaled)
    assert [k["samples"].shape[0] for k in kept] == [2, 2, 1]
    assert [k["batch_index"] for k in kept] == [[0, 1], [2, 3], [4]]


def test_object_info_specs(engine: SdEngine):
    info = engine.registry.object_info()
    comp = info["LatentCompositeMasked"]["input"]
    assert list(comp["required"]) == ["destination", "source", "x", "y", "resize_source"]
    assert comp["required"]["x"] == ["INT", {"default": 0, "min": 0, "max": 16384, "step": 8}]
    assert comp["required"]["resize_source"] == ["BOOLEAN", {"default": False}]
    assert comp["optional"] == {"mask": ["MASK"]}
    assert info["LatentMultiply"]["input"]["required"]["multiplier"] == [
        "FLOAT", {"default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01}]
    assert info["LatentInterpolate"]["input"]["required"]["ratio"] == [
        "FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]
    assert list(info["LatentCrop"]["input"]["required"]) == ["samples", "width", "height", "x", "y"]
    assert info["LatentCrop"]["input"]["required"]["width"][1]["min"] == 64
    rebatch = info["RebatchLatents"]
    assert rebatch["output_is_list"] == [True] and rebatch["input"]["required"]["batch_size"] == [
        "INT", {"default": 1, "min": 1, "max": 4096, "step": 1}]
    assert info["RebatchImages"]["output"] == ["IMAGE"] and info["RebatchImages"]["output_is_list"] == [True]
    tiled = info["VAEEncodeTiled"]["input"]
    assert list(tiled["required"]) == ["pixels", "vae", "tile_size", "overlap", "temporal_size", "temporal_overlap"]
    assert tiled["required"]["tile_size"] == ["INT", {"default": 512, "min": 64, "max": 4096, "step": 64}]
    assert tiled["required"]["overlap"] == ["INT", {"default": 64, "min": 0, "max": 4096, "step": 32}]
    assert tiled["required"]["temporal_size"][1] == {
        "default": 64, "min": 8, "max": 4096, "step": 4,
        "tooltip": "Only used for video VAEs: Amount of frames to encode at a time."}
    assert tiled["required"]["temporal_overlap"][1] == {
        "default": 8, "min": 4, "max": 4096, "step": 4, "tooltip": "Only used for video VAEs: Amount of frames to "
                                                                  "overlap."}
