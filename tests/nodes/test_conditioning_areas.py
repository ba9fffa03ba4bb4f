"""Area, mask, strength and timestep-range conditionings as the guider evaluates them (tiny SD1 U-Net)."""

from __future__ import annotations

import pytest
import torch

from nodes.base.handles import LatentFormat, ModelHandle
from nodes.base.model_sampling import ModelSampling
from nodes.sampling.guidance import _feather
from nodes.sampling.ksampler import GuiderSpec
from nodes.sd import conditioning as nodes

from .tiny_models import tiny_models

H = W = 16


@pytest.fixture(scope="module")
def model() -> ModelHandle:
    return ModelHandle(unet=tiny_models("sd1").unet, kind="sd1", sampling=ModelSampling.discrete(),
                       latent_format=LatentFormat(scale_factor=0.18215))


def cond(seed: int) -> torch.Tensor:
    return torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(seed))


C0, C1 = cond(0), cond(1)
X = torch.randn(1, 4, H, W, generator=torch.Generator().manual_seed(7)) * 3


@torch.no_grad()
def predict(model: ModelHandle, positive: list, sigma: float = 3.0, negative: list | None = None,
            cfg: float = 1.0) -> torch.Tensor:
    guider = GuiderSpec(model=model, positive=positive, negative=negative, cfg=cfg).build(
        x=X, device=torch.device("cpu"), dtype=torch.float32, concat=None)
    return guider(X, torch.tensor(sigma))


def _run(node: type, **inputs) -> list:
    return node().execute(None, **inputs)[0]


def outside(t: torch.Tensor, area: tuple[int, int, int, int]) -> torch.Tensor:
    h, w, y, x = area
    keep = torch.ones(H, W, dtype=torch.bool)
    keep[y:y + h, x:x + w] = False
    return t[..., keep]


def test_an_area_changes_only_its_region(model):
    base = predict(model, [[C0, {}]])
    area = _run(nodes.ConditioningSetArea, conditioning=[[C1, {}]], width=64, height=64, x=32, y=24, strength=1.0)
    assert area[0][1]["area"] == (8, 8, 3, 4)
    composed = predict(model, [[C0, {}]] + area)
    assert torch.allclose(outside(composed, (8, 8, 3, 4)), outside(base, (8, 8, 3, 4)), atol=1e-6)
    assert not torch.allclose(composed[..., 3:11, 4:12], base[..., 3:11, 4:12], atol=1e-3)


def test_percentage_area_equals_the_same_area_in_latent_pixels(model):
    pct = _run(nodes.ConditioningSetAreaPercentage, conditioning=[[C1, {}]], width=0.5, height=0.25, x=0.25,
               y=0.5, strength=1.5)
    assert pct[0][1]["area"] == ("percentage", 0.25, 0.5, 0.5, 0.25) and pct[0][1]["strength"] == 1.5
    explicit = [[C1, {"area": (4, 8, 8, 4), "strength": 1.5}]]
    assert torch.equal(predict(model, [[C0, {}]] + pct), predict(model, [[C0, {}]] + explicit))


def test_strengths_weight_the_blend(model):
    p0, p1 = predict(model, [[C0, {}]]), predict(model, [[C1, {}]])
    strong = _run(nodes.ConditioningSetAreaStrength, conditioning=[[C1, {}]], strength=3.0)
    assert strong[0][1]["strength"] == 3.0
    assert torch.allclose(predict(model, [[C0, {}]] + strong), (p0 + 3 * p1) / 4, atol=1e-5)


def test_area_edges_inside_the_image_are_feathered():
    mult = _feather(torch.ones(1, 1, 16, 8), (16, 8, 0, 0), 16, 16)  # the left half: one inner edge
    assert torch.equal(mult[0, 0, :, 0], torch.ones(16))  # border edges are not softened
    assert torch.allclose(mult[0, 0, 0, :], torch.tensor([1.0, 1, 1, 1, 1, 1, 1, 1]) * torch.arange(8, 0, -1) / 8)


def test_timestep_ranges_switch_conditionings(model):
    early = _run(nodes.ConditioningSetTimestepRange, conditioning=[[C0, {}]], start=0.0, end=0.5)
    late = _run(nodes.ConditioningSetTimestepRange, conditioning=[[C1, {}]], start=0.5, end=1.0)
    switched = early + late
    high, low = model.sampling.sigma_max, 0.1
    assert torch.equal(predict(model, switched, high), predict(model, [[C0, {}]], high))
    assert torch.equal(predict(model, switched, low), predict(model, [[C1, {}]], low))


def test_mask_conditionings_apply_under_their_mask(model):
    mask = torch.zeros(1, H, W)
    mask[:, :, :6] = 1.0
    base = predict(model, [[C0, {}]])
    for set_cond_area in ("default", "mask bounds"):
        masked = _run(nodes.ConditioningSetMask, conditioning=[[C1, {}]], mask=mask, strength=1.0,
                      set_cond_area=set_cond_area)
        composed = predict(model, [[C0, {}]] + masked)
        assert torch.allclose(composed[..., 6:], base[..., 6:], atol=1e-6), set_cond_area
        assert not torch.allclose(composed[..., :6], base[..., :6], atol=1e-3), set_cond_area


def test_areas_on_the_negative_side_with_guidance(model):
    area = [[C1, {"area": (8, 8, 0, 0), "strength": 1.0}]]
    plain = predict(model, [[C0, {}]], negative=[[C1, {}]], cfg=4.0)
    mixed = predict(model, [[C0, {}]], negative=[[C1, {}]] + area, cfg=4.0)
    # (the plain case batches both sides in one U-Net call: equal up to float rounding)
    assert torch.allclose(outside(mixed, (8, 8, 0, 0)), outside(plain, (8, 8, 0, 0)), atol=1e-4)
    assert not torch.allclose(mixed[..., :8, :8], plain[..., :8, :8], atol=1e-2)


def test_inputs_are_never_modified():
    original = [[C0, {"pooled_output": None}]]
    _run(nodes.ConditioningSetAreaPercentage, conditioning=original, width=0.5, height=0.5, x=0.0, y=0.0,
         strength=1.0)
    _run(nodes.ConditioningSetAreaStrength, conditioning=original, strength=2.0)
    assert original == [[C0, {"pooled_output": None}]]
