""".latent files: SaveLatent writes ComfyUI's layout and metadata, LoadLatent reads both of its versions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from graph.builder import GraphBuilder
from nodes.sd import latent_files as LF
from tests.support.sd_engine import SdEngine


@pytest.fixture
def engine(tmp_path: Path) -> SdEngine:
    return SdEngine(tmp_path)


def values(engine: SdEngine, g: GraphBuilder, *refs: Any, extra_data: dict[str, Any] | None = None) -> Any:
    for ref in refs:
        g.node("Keep", value=ref)
    engine.kept.clear()
    outcome = engine.run(g.build(), extra_data=extra_data)
    assert outcome.status == "success", outcome.failure
    return outcome


def load(engine: SdEngine, name: str) -> torch.Tensor:
    g = GraphBuilder()
    node = g.node("LoadLatent", latent=name)
    values(engine, g, node)
    return engine.kept[0]["samples"]


def test_save_then_load_round_trips_with_the_workflow_inside(engine: SdEngine):
    g = GraphBuilder()
    empty = g.node("EmptyLatentImage", width=64, height=32, batch_size=2)
    shifted = g.node("LatentMultiply", samples=empty, multiplier=1.0)
    saved = g.node("SaveLatent", samples=shifted, filename_prefix="latents/run")
    workflow = {"nodes": [], "links": [], "note": "été ✓"}
    outcome = values(engine, g, saved, extra_data={"extra_pnginfo": {"workflow": workflow}})
    ref = outcome.outputs[saved.id]["latents"][0]
    assert ref == {"filename": "run_00001_.latent", "subfolder": "latents", "type": "output"}
    path = engine.folders.output / "latents" / "run_00001_.latent"
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == {"latent_tensor", "latent_format_version_0"}
        assert f.get_tensor("latent_format_version_0").numel() == 0
        meta = f.metadata()
    assert json.loads(meta["workflow"]) == workflow
    assert json.loads(meta["prompt"])[saved.id]["class_type"] == "SaveLatent"
    assert engine.kept[0]["samples"].shape == (2, 4, 4, 8)  # SaveLatent passes its latent on

    shutil.copy(path, engine.folders.input / "run.latent")
    assert torch.equal(load(engine, "run.latent"), torch.zeros(2, 4, 4, 8))


def test_a_changed_input_file_reruns_and_saves_under_the_next_number(engine: SdEngine):
    samples = torch.randn(1, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    (engine.folders.input / "a.latent").write_bytes(LF.latent_file_bytes(samples))
    for _ in range(2):
        g = GraphBuilder()
        loaded = g.node("LoadLatent", latent="a.latent")
        g.node("SaveLatent", samples=loaded, filename_prefix="latents/ComfyUI")
        values(engine, g)
        (engine.folders.input / "a.latent").write_bytes(LF.latent_file_bytes(samples * 2))  # changed file: reruns
    names = sorted(p.name for p in (engine.folders.output / "latents").iterdir())
    assert names == ["ComfyUI_00001_.latent", "ComfyUI_00002_.latent"]
    with safe_open(str(engine.folders.output / "latents" / names[1]), framework="pt") as f:
        assert torch.equal(f.get_tensor("latent_tensor"), samples * 2)
        assert f.metadata()["prompt"].startswith("{")


def test_reads_files_written_in_comfyuis_layout(engine: SdEngine):
    samples = torch.randn(2, 4, 6, 7, generator=torch.Generator().manual_seed(1))
    save_file({"latent_tensor": samples, "latent_format_version_0": torch.tensor([])},
              str(engine.folders.input / "current.latent"), metadata={"prompt": "{}"})
    assert torch.equal(load(engine, "current.latent"), samples)
    # The first ComfyUI versions saved latents scaled by 0.18215 and without the version marker.
    save_file({"latent_tensor": samples * 0.18215}, str(engine.folders.input / "legacy.latent"))
    assert torch.allclose(load(engine, "legacy.latent"), samples, atol=1e-6)
    save_file({"latent_tensor": samples.half(), "latent_format_version_0": torch.tensor([])},
              str(engine.folders.input / "half.latent"))
    loaded = load(engine, "half.latent")
    assert loaded.dtype == torch.float32 and torch.equal(loaded, samples.half().float())


def test_the_combo_lists_latent_files_of_the_input_folder(engine: SdEngine):
    for name in ("b.latent", "a.latent", ".hidden.latent", "c.png"):
        (engine.folders.input / name).write_bytes(LF.latent_file_bytes(torch.zeros(1, 4, 1, 1)))
    (engine.folders.input / "sub").mkdir()
    (engine.folders.input / "sub" / "d.latent").write_bytes(b"")
    info = engine.registry.object_info("LoadLatent")["LoadLatent"]
    assert info["input"]["required"]["latent"] == [["a.latent", "b.latent"]]
    assert info["category"] == "_for_testing" and info["output"] == ["LATENT"]
    save = engine.registry.object_info("SaveLatent")["SaveLatent"]
    assert save["input"]["required"]["filename_prefix"] == ["STRING", {"default": "latents/ComfyUI"}]
    assert save["input"]["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert save["output_node"] is True


def test_missing_unsafe_and_broken_files_are_clear_errors(engine: SdEngine):
    for name, problem in (("nope.latent", "Invalid latent file: nope.latent"),
                          ("../outside.latent", "Invalid latent file: latent '../outside.latent' contains '..'")):
        g = GraphBuilder()
        g.node("Keep", value=g.node("LoadLatent", latent=name))
        assert problem in "\n".join(engine.validate(g.build()).messages())
    (engine.folders.input / "broken.latent").write_bytes(b"not a safetensors file at all")
    g = GraphBuilder()
    node = g.node("LoadLatent", latent="broken.latent")
    g.node("Keep", value=node)
    outcome = engine.run(g.build())
    assert outcome.status == "error"
    assert "LoadLatent, input 'latent': broken.latent is not a readable .latent" in outcome.failure.exception_message
    save_file({"other": torch.zeros(1)}, str(engine.folders.input / "other.latent"))
    with pytest.raises(ValueError, match="holds no 'latent_tensor'"):
        LF.read_latent_file(engine.folders.input / "other.latent", max_elements=100)


def test_oversized_latents_are_refused_before_loading(tmp_path: Path):
    path = tmp_path / "big.latent"
    path.write_bytes(LF.latent_file_bytes(torch.zeros(1, 4, 8, 8)))
    with pytest.raises(ValueError, match=r"declares a latent of shape \[1, 4, 8, 8\] \(256 values\)"):
        LF.read_latent_file(path, max_elements=255)


def test_save_latent_refuses_prefixes_leaving_the_output_folder(engine: SdEngine):
    g = GraphBuilder()
    empty = g.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    g.node("SaveLatent", samples=empty, filename_prefix="../escape")
    assert "filename_prefix" in "\n".join(engine.validate(g.build()).messages())
