"""CheckpointSave, ModelSave, CLIPSave, VAESave: the layouts written, the workflow in the header, and
round trips through our loaders (a merged model saved and loaded again samples the same latent).
"""

from __future__ import annotations

import io
import json
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load

from graph.builder import GraphBuilder
from nodes.models import export
from nodes.models.manager import ModelManager
from nodes.models.merging import merge_models, simple_weights
from nodes.models.patching import patched
from nodes.models.random_checkpoint import write_random_checkpoint
from nodes.models.safetensors_out import write_safetensors
from tests.support.keep import kept_values
from tests.support.sd_engine import SdEngine, sample_a_fox

from .tiny_models import text_outputs, unet_output, vae_outputs

WORKFLOW = {"nodes": [], "links": [], "version": 0.4}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("save_checkpoints")
    return {f"{kind}_{seed}": write_random_checkpoint(folder / f"{kind}_{seed}.safetensors", kind, seed=seed)
            for kind in ("sd1", "sd2_v", "sdxl") for seed in (0, 1)}


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def run(engine: SdEngine, g: GraphBuilder) -> list[Any]:
    return kept_values(engine, g, extra_data={"extra_pnginfo": {"workflow": WORKFLOW}})


def sample(g: GraphBuilder, model: Any, clip: Any) -> None:
    pos, sampled = sample_a_fox(g, model, clip, seed=7)
    g.node("Keep", value=sampled)
    g.node("Keep", value=pos)


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_an_unchanged_checkpoint_is_saved_as_the_file_it_came_from(tmp_path, files, kind):
    engine = SdEngine(tmp_path)
    engine.add("checkpoints", files[f"{kind}_0"], "m.safetensors")
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="m.safetensors")
    g.node("CheckpointSave", model=ckpt[0], clip=ckpt[1], vae=ckpt[2], filename_prefix="checkpoints/copy")
    run(engine, g)
    saved, meta = read(engine.folders.output / "checkpoints" / "copy_00001_.safetensors")
    source, _ = read(files[f"{kind}_0"])
    source.pop("alphas_cumprod")  # the noise schedule is not part of the model
    assert sorted(saved) == sorted(source)
    assert all(torch.equal(saved[k], source[k]) for k in source)
    assert json.loads(meta["workflow"]) == WORKFLOW
    prompt = json.loads(meta["prompt"])
    assert prompt["2"]["class_type"] == "CheckpointSave"
    assert meta["modelspec.predict_key"] == "epsilon"
    assert meta.get("modelspec.architecture") == ("stable-diffusion-xl-v1-base" if kind == "sdxl" else None)


@pytest.mark.parametrize("kind", ["sd1", "sd2_v", "sdxl"])
def test_a_merged_checkpoint_loads_back_and_samples_the_same_latent(tmp_path, files, kind):
    engine = SdEngine(tmp_path)
    engine.add("checkpoints", files[f"{kind}_0"], "one.safetensors")
    engine.add("checkpoints", files[f"{kind}_1"], "two.safetensors")
    g = GraphBuilder()
    one = g.node("CheckpointLoaderSimple", ckpt_name="one.safetensors")
    two = g.node("CheckpointLoaderSimple", ckpt_name="two.safetensors")
    model = g.node("ModelMergeSimple", model1=one[0], model2=two[0], ratio=0.4)
    clip = g.node("CLIPMergeSimple", clip1=one[1], clip2=two[1], ratio=0.7)
    g.node("CheckpointSave", model=model[0], clip=clip[0], vae=one[2], filename_prefix="checkpoints/merged")
    sample(g, model[0], clip[0])
    merged_latent, merged_cond = run(engine, g)
    saved = engine.folders.output / "checkpoints" / "merged_00001_.safetensors"
    tensors, meta = read(saved)
    v_prediction = kind == "sd2_v"
    assert ("v_pred" in tensors) == v_prediction  # how ComfyUI marks v-prediction files
    assert meta["modelspec.predict_key"] == ("v" if v_prediction else "epsilon")
    engine.add("checkpoints", saved, "merged.safetensors")
    g = GraphBuilder()
    back = g.node("CheckpointLoaderSimple", ckpt_name="merged.safetensors")
    sample(g, back[0], back[1])
    latent, cond = run(engine, g)
    torch.testing.assert_close(cond[0][0], merged_cond[0][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(latent["samples"], merged_latent["samples"], rtol=0, atol=1e-6)
    g = GraphBuilder()
    plain = g.node("CheckpointLoaderSimple", ckpt_name="one.safetensors")
    sample(g, plain[0], plain[1])
    base_latent, _ = run(engine, g)
    assert not torch.allclose(base_latent["samples"], latent["samples"])  # the merge is really in the file


def test_model_save_writes_the_unet_alone_and_unet_loader_reads_it(tmp_path, files):
    engine = SdEngine(tmp_path)
    engine.add("checkpoints", files["sdxl_0"], "one.safetensors")
    engine.add("checkpoints", files["sdxl_1"], "two.safetensors")
    g = GraphBuilder()
    one = g.node("CheckpointLoaderSimple", ckpt_name="one.safetensors")
    two = g.node("CheckpointLoaderSimple", ckpt_name="two.safetensors")
    from nodes.sd.merge_nodes import ModelMergeSDXL

    ratios = {spec.name: 1.0 for spec in ModelMergeSDXL.SCHEMA.inputs[2:]} | {"input_blocks.4": 0.0, "out.": 0.5}
    model = g.node("ModelMergeSDXL", model1=one[0], model2=two[0], **ratios)
    g.node("ModelSave", model=model[0], filename_prefix="diffusion_models/unet")
    g.node("Keep", value=model[0])
    (merged,) = run(engine, g)
    path = engine.folders.output / "diffusion_models" / "unet_00001_.safetensors"
    tensors, _ = read(path)
    assert tensors and all(k.startswith("model.diffusion_model.") for k in tensors)
    with patched(merged.unet, merged.patches, "unet"):
        expected = unet_output(merged.unet)
    loaded = engine.models.load_unet(path)
    assert loaded.kind == "sdxl"
    torch.testing.assert_close(unet_output(loaded.unet), expected, rtol=0, atol=1e-6)
    assert not torch.allclose(unet_output(merged.unet), expected)  # the patch is gone from model1 again


def transformers_names(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name if name.startswith(("text_model.", "text_projection.")) else "text_model." + name: p.detach().clone()
            for name, p in encoder.named_parameters()}


def test_clip_save_writes_one_file_per_encoder_that_the_clip_loaders_read(tmp_path, files):
    engine = SdEngine(tmp_path)
    engine.add("checkpoints", files["sdxl_0"], "one.safetensors")
    engine.add("checkpoints", files["sdxl_1"], "two.safetensors")
    g = GraphBuilder()
    one = g.node("CheckpointLoaderSimple", ckpt_name="one.safetensors")
    two = g.node("CheckpointLoaderSimple", ckpt_name="two.safetensors")
    clip = g.node("CLIPMergeAdd", clip1=one[1], clip2=two[1])
    g.node("CLIPSave", clip=clip[0], filename_prefix="clip/merged")
    g.node("Keep", value=clip[0])
    (merged,) = run(engine, g)
    folder = engine.folders.output / "clip"
    assert sorted(p.name for p in folder.iterdir()) == ["merged_clip_g_00001_.safetensors",
                                                       "merged_clip_l_00001_.safetensors"]
    tensors, meta = read(folder / "merged_clip_g_00001_.safetensors")
    assert "text_projection.weight" in tensors
    assert all(k.startswith(("text_model.", "text_projection.")) for k in tensors)
    assert meta["format"] == "pt" and json.loads(meta["workflow"]) == WORKFLOW
    # Each file holds the patched weights under transformers' names (what the encoder's parameters are called).
    for spec, encoder in zip(merged.specs, merged.encoders, strict=True):
        tensors, _ = read(folder / f"merged_{spec.name}_00001_.safetensors")
        with patched(encoder, merged.patches, spec.name):
            expected = transformers_names(encoder)
        assert sorted(tensors) == sorted(expected)
        assert all(torch.equal(tensors[k], v) for k, v in expected.items())
        assert not any(torch.equal(tensors[k], v) for k, v in transformers_names(encoder).items() if v.ndim == 2)
    # CLIP-L loads back as such; a bare OpenCLIP-G file is only recognised at its real width (1280).
    loaded = engine.models.load_clip([folder / "merged_clip_l_00001_.safetensors"])
    with patched(merged.encoders[0], merged.patches, "clip_l"):
        expected_out = text_outputs(merged.encoders[0])
    got = text_outputs(loaded.encoders[0])
    for key, value in expected_out.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-5)


def test_clip_save_of_sd1_and_vae_save_round_trip(tmp_path, files):
    engine = SdEngine(tmp_path)
    engine.add("checkpoints", files["sd1_0"], "one.safetensors")
    g = GraphBuilder()
    one = g.node("CheckpointLoaderSimple", ckpt_name="one.safetensors")
    g.node("CLIPSave", clip=one[1], filename_prefix="clip/sd1")
    g.node("VAESave", vae=one[2], filename_prefix="vae/ComfyUI_vae")
    g.node("Keep", value=one[1])
    g.node("Keep", value=one[2])
    clip, vae = run(engine, g)
    vae_file = engine.folders.output / "vae" / "ComfyUI_vae_00001_.safetensors"
    tensors, meta = read(vae_file)
    assert "decoder.mid.attn_1.q.weight" in tensors and "prompt" in meta and "format" not in meta
    loaded_vae = engine.models.load_vae(vae_file)
    for got, expected in zip(vae_outputs(loaded_vae.vae), vae_outputs(vae.vae), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    loaded_clip = engine.models.load_clip([engine.folders.output / "clip" / "sd1_clip_l_00001_.safetensors"])
    assert loaded_clip.kind == "sd1"
    got, expected = text_outputs(loaded_clip.encoders[0]), text_outputs(clip.encoders[0])
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6)


def test_save_nodes_refuse_prefixes_that_leave_the_output_folder(tmp_path, files):
    engine = SdEngine(tmp_path)
    engine.add("checkpoints", files["sd1_0"], "one.safetensors")
    g = GraphBuilder()
    one = g.node("CheckpointLoaderSimple", ckpt_name="one.safetensors")
    g.node("VAESave", vae=one[2], filename_prefix="../outside")
    validation = engine.validate(g.build())
    assert not validation.ok and "filename_prefix" in " ".join(validation.messages())


def test_save_node_schemas_match_comfyui():
    from nodes.sd.model_save_nodes import CheckpointSave, CLIPSave, ModelSave, VAESave

    expected = {CheckpointSave: (["model", "clip", "vae", "filename_prefix"], "checkpoints/ComfyUI"),
                CLIPSave: (["clip", "filename_prefix"], "clip/ComfyUI"),
                VAESave: (["vae", "filename_prefix"], "vae/ComfyUI_vae"),
                ModelSave: (["model", "filename_prefix"], "diffusion_models/ComfyUI")}
    for node, (inputs, prefix) in expected.items():
        info = node.SCHEMA.to_object_info()
        assert list(info["input"]["required"]) == inputs
        assert info["input"]["required"]["filename_prefix"][1]["default"] == prefix
        assert info["output"] == [] and info["output_node"] is True
        assert info["input"]["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


def test_saving_a_merge_computes_one_merged_weight_at_a_time(tmp_path, files, monkeypatch):
    manager = ModelManager(device="cpu")
    model1, _, _ = manager.load_checkpoint(files["sd1_0"])
    model2, _, _ = manager.load_checkpoint(files["sd1_1"])
    merged, _ = merge_models(model1, model2, simple_weights(0.5), name="t")
    made: list[weakref.ref] = []
    real = export._patched_value

    def tracked(param: Any, steps: Any) -> torch.Tensor:
        assert all(ref() is None for ref in made)  # the previous merged weight is gone already
        value = real(param, steps)
        made.append(weakref.ref(value))
        return value

    monkeypatch.setattr(export, "_patched_value", tracked)
    pointers = [p.data_ptr() for p in model1.unet.parameters()]
    buffer = io.BytesIO()
    with export.checkpoint_state(merged) as tensors:
        write_safetensors(buffer, tensors)
    assert len(made) == len(pointers)  # every weight merged, none of model1's weights swapped
    assert [p.data_ptr() for p in model1.unet.parameters()] == pointers
    saved = load(buffer.getvalue())
    with patched(model1.unet, merged.patches, "unet"):
        expected = export.unet_state(model1)
    assert sorted(saved) == sorted(expected)
    assert all(torch.equal(saved[k], expected[k]) for k in expected)
