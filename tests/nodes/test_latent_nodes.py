"""Latent nodes, through the real engine where it matters: sizes, limits, batches, composites, masks."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from graph import (
    Executor,
    Folders,
    NodeRegistry,
    RecentRunsCache,
    RunOutcome,
    RunRequest,
    ValidationResult,
    parse_api_workflow,
)
from graph.builder import GraphBuilder
from nodes.base import resize as R
from nodes.sd import latent as L
from tests.support.keep import Keep, kept_values


class Engine:
    """A registry + executor over `tmp_path` folders, as main.py wires them."""

    def __init__(self, tmp_path: Path, *modules: ModuleType, extra: tuple[type, ...] = (),
                 services: dict[str, Any] | None = None) -> None:
        self.folders = Folders.under(tmp_path)
        for folder in (self.folders.input, self.folders.output, self.folders.temp):
            folder.mkdir(parents=True, exist_ok=True)
        self.registry = NodeRegistry(folders=self.folders)
        for module in modules:
            self.registry.register_module(module)
        self.registry.register_all([Keep, *extra])
        self.kept: list[Any] = []
        self.executor = Executor(self.registry, cache=RecentRunsCache(1), folders=self.folders,
                                 services={"kept": self.kept, **(services or {})})

    def validate(self, prompt: dict[str, Any]) -> ValidationResult:
        return self.executor.validate(parse_api_workflow(prompt))

    def run(self, prompt: dict[str, Any], extra_data: dict[str, Any] | None = None) -> RunOutcome:
        validation = self.validate(prompt)
        assert validation.ok, validation.messages()
        return self.executor.run(RunRequest(validation=validation, run_id="t", extra_data=extra_data or {}))

    def values(self, g: GraphBuilder, *refs: Any) -> list[Any]:
        """Run a graph keeping the given outputs; returns their values in order."""
        return kept_values(self, g, *refs)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(tmp_path, L)


def latent(b: int = 1, h: int = 8, w: int = 8, c: int = 4, seed: int = 0) -> dict[str, Any]:
    return {"samples": torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))}


def run_node(cls: type, **inputs: Any) -> Any:
    return cls().execute(None, **inputs)


# ------------------------------------------------------------------------------------ EmptyLatentImage

def test_empty_latent_through_the_engine(engine: Engine):
    g = GraphBuilder()
    a = g.node("EmptyLatentImage", width=512, height=256, batch_size=3)
    b = g.node("EmptyLatentImage", width=520, height=516, batch_size=1)
    first, second = engine.values(g, a, b)
    assert first["samples"].shape == (3, 4, 32, 64) and first["samples"].dtype == torch.float32
    assert not first["samples"].any() and set(first) == {"samples"}
    assert second["samples"].shape == (1, 4, 64, 65)  # sizes floor to whole latents, as ComfyUI does


def test_empty_latent_schema_matches_comfyui(engine: Engine):
    info = engine.registry.object_info("EmptyLatentImage")["EmptyLatentImage"]["input"]["required"]
    assert info["width"] == ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}]
    assert info["height"][1]["default"] == 512 and info["height"][1]["step"] == 8
    assert info["batch_size"][1]["min"] == 1 and info["batch_size"][1]["max"] == 4096


def test_empty_latent_too_large_is_a_validation_error_with_a_memory_estimate(engine: Engine):
    g = GraphBuilder()
    g.node("Keep", value=g.node("EmptyLatentImage", width=16384, height=16384, batch_size=64))
    result = engine.validate(g.build())
    assert not result.ok
    issue = result.node_errors["1"].errors[0]
    assert issue.type == "custom_validation_failed"
    assert "would need ~" in issue.message and "GB" in issue.message and "16384x16384" in issue.message


# --------------------------------------------------------------------------------------------- upscale

def test_latent_upscale_sizes(engine: Engine):
    src = latent(2, 8, 16)
    up = L.LatentUpscale()
    same = up.execute(None, samples=src, upscale_method="bilinear", width=0, height=0, crop="disabled")[0]
    assert same is src
    keep_aspect = up.execute(None, samples=src, upscale_method="bilinear", width=0, height=128, crop="disabled")[0]
    assert keep_aspect["samples"].shape == (2, 4, 16, 32)
    by_width = up.execute(None, samples=src, upscale_method="area", width=384, height=0, crop="disabled")[0]
    assert by_width["samples"].shape == (2, 4, 24, 48)
    tiny = up.execute(None, samples=src, upscale_method="nearest-exact", width=16, height=16, crop="disabled")[0]
    assert tiny["samples"].shape == (2, 4, 8, 8)  # at least 64 pixels a side, as ComfyUI clamps
    for method in R.UPSCALE_METHODS:
        out = up.execute(None, samples=src, upscale_method=method, width=200, height=96, crop="center")[0]
        assert out["samples"].shape == (2, 4, 12, 25) and torch.isfinite(out["samples"]).all(), method


def test_center_crop_keeps_the_middle():
    x = torch.arange(16.0).reshape(1, 1, 1, 16).expand(1, 1, 8, 16)
    out = R.resize_nchw(x, 8, 8, "nearest-exact", "center")
    assert out[0, 0, 0].tolist() == [4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]


def test_bislerp_keeps_vector_lengths_and_endpoints():
    x = latent(1, 4, 4)["samples"]
    out = R.bislerp(x, 8, 8)
    assert out.shape == (1, 4, 8, 8)
    norms_in, norms_out = x.norm(dim=1), out.norm(dim=1)
    assert norms_out.min() >= norms_in.min() - 1e-4 and norms_out.max() <= norms_in.max() + 1e-4
    same = R.bislerp(x, 4, 4)
    assert torch.allclose(same, x, atol=1e-5)


def test_latent_upscale_by():
    out = run_node(L.LatentUpscaleBy, samples=latent(1, 8, 12), upscale_method="bicubic", scale_by=1.5)[0]
    assert out["samples"].shape == (1, 4, 12, 18)


# ----------------------------------------------------------------------------------------------- batches

def test_latent_from_batch_records_batch_index_and_slices_masks():
    src = latent(4)
    src["noise_mask"] = torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 1, 64, 64)
    out = run_node(L.LatentFromBatch, samples=src, batch_index=1, length=2)[0]
    assert torch.equal(out["samples"], src["samples"][1:3]) and out["batch_index"] == [1, 2]
    assert out["noise_mask"][:, 0, 0, 0].tolist() == [1.0, 2.0]
    again = run_node(L.LatentFromBatch, samples=out, batch_index=1, length=5)[0]
    assert again["batch_index"] == [2] and torch.equal(again["samples"], src["samples"][2:3])
    clamped = run_node(L.LatentFromBatch, samples=src, batch_index=40, length=3)[0]
    assert clamped["batch_index"] == [3] and clamped["samples"].shape[0] == 1
    assert "batch_index" not in src  # inputs are never modified


def test_repeat_latent_batch_continues_batch_index():
    src = run_node(L.LatentFromBatch, samples=latent(4), batch_index=1, length=2)[0]
    out = run_node(L.RepeatLatentBatch, samples=src, amount=3)[0]
    assert out["samples"].shape[0] == 6 and out["batch_index"] == [1, 2, 3, 4, 5, 6]
    assert torch.equal(out["samples"][4:6], src["samples"])
    plain = run_node(L.RepeatLatentBatch, samples=latent(2), amount=2)[0]
    assert plain["samples"].shape[0] == 4 and "batch_index" not in plain
    masked = latent(2)
    masked["noise_mask"] = torch.rand(2, 1, 64, 64)
    out = run_node(L.RepeatLatentBatch, samples=masked, amount=2)[0]
    assert out["noise_mask"].shape[0] == 4 and torch.equal(out["noise_mask"][2:], masked["noise_mask"])


def test_latent_batch_joins_and_resizes():
    a, b = latent(2, 8, 8), latent(1, 4, 4, seed=1)
    b["batch_index"] = [5]
    out = run_node(L.LatentBatch, samples1=a, samples2=b)[0]
    assert out["samples"].shape == (3, 4, 8, 8) and out["batch_index"] == [0, 1, 5]


def test_latent_blend():
    a, b = latent(1), latent(1, seed=1)
    out = run_node(L.LatentBlend, samples1=a, samples2=b, blend_factor=0.25)[0]
    assert torch.allclose(out["samples"], a["samples"] * 0.25 + b["samples"] * 0.75)


# --------------------------------------------------------------------------------------------- composite

def test_latent_composite_places_in_latent_units_and_clips():
    to = {"samples": torch.zeros(1, 4, 8, 8)}
    src = {"samples": torch.ones(1, 4, 4, 4)}
    out = run_node(L.LatentComposite, samples_to=to, samples_from=src, x=16, y=8, feather=0)[0]["samples"]
    assert out[0, 0].sum() == 16 and out[0, 0, 1:5, 2:6].min() == 1 and out[0, 0, 0].sum() == 0
    edge = run_node(L.LatentComposite, samples_to=to, samples_from=src, x=48, y=56, feather=0)[0]["samples"]
    assert edge[0, 0].sum() == 2 * 1 and edge[0, 0, 7, 6:8].tolist() == [1.0, 1.0]
    assert to["samples"].sum() == 0


def test_latent_composite_feathers_only_inner_edges():
    to = {"samples": torch.zeros(1, 4, 8, 8)}
    src = {"samples": torch.ones(1, 4, 4, 8)}
    out = run_node(L.LatentComposite, samples_to=to, samples_from=src, x=0, y=16, feather=16)[0]["samples"]
    rows = out[0, 0, 2:6, 0].tolist()
    assert rows == pytest.approx([0.5, 1.0, 1.0, 0.5])  # top and bottom border samples_to: ramp 1/2, 2/2
    assert torch.equal(out[0, 0, 3], torch.ones(8))  # left/right lie on samples_to's edges: no feather


def test_set_latent_noise_mask_accepts_bare_masks():
    out = run_node(L.SetLatentNoiseMask, samples=latent(2), mask=torch.ones(64, 64))[0]
    assert out["noise_mask"].shape == (1, 1, 64, 64)
    out = run_node(L.SetLatentNoiseMask, samples=latent(2), mask=torch.ones(2, 32, 48))[0]
    assert out["noise_mask"].shape == (2, 1, 32, 48)


def test_latent_pipeline_through_the_engine(engine: Engine):
    g = GraphBuilder()
    empty = g.node("EmptyLatentImage", width=64, height=64, batch_size=4)
    pick = g.node("LatentFromBatch", samples=empty, batch_index=2, length=1)
    rep = g.node("RepeatLatentBatch", samples=pick, amount=2)
    up = g.node("LatentUpscaleBy", samples=rep, upscale_method="bislerp", scale_by=2.0)
    (out,) = engine.values(g, up)
    assert out["samples"].shape == (2, 4, 16, 16) and out["batch_index"] == [2, 3]
