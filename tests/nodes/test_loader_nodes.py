"""Loader nodes through the real engine, and the model folders behind their combos."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from graph import (
    Folders,
)
from graph.builder import GraphBuilder
from graph.node import MODEL_KINDS
from nodes.base.folders import ModelPathError, files_of, list_files, resolve
from nodes.sd import loaders
from tests.support.sd_engine import SdEngine

from .tiny_models import add_component_files


@pytest.fixture
def engine(tmp_path) -> SdEngine:
    return SdEngine(tmp_path)


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl", "sdxl_refiner"])
def test_checkpoint_loader_gives_working_handles(engine, tiny_file, kind):
    engine.add("checkpoints", tiny_file(kind), f"sub/{kind}.safetensors")
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=f"sub/{kind}.safetensors")
    enc = g.node("CLIPTextEncode", text="a (red:1.2) fox", clip=ckpt[1])
    for ref in (ckpt[0], ckpt[2], enc):
        g.node("Keep", value=ref)
    outcome = engine.run(g.build())
    assert outcome.status == "success", outcome.failure and outcome.failure.describe()
    model, vae, cond = engine.kept
    assert model.kind == kind and model.manager is engine.models
    assert vae.scale_factor == model.latent_format.scale_factor
    ((tensor, opts),) = cond
    width = sum(spec.config["hidden_size"] for spec in model.manager.load_checkpoint(model.source)[1].specs)
    assert tensor.shape == (1, 77, width) and tensor.dtype == torch.float32 and tensor.device.type == "cpu"
    assert (opts["pooled_output"] is not None) == kind.startswith("sdxl")


def test_component_loaders(engine, tiny_file, tmp_path):
    add_component_files(engine, tiny_file, tmp_path)
    g = GraphBuilder()
    vae = g.node("VAELoader", vae_name="xl_vae.safetensors")
    single = g.node("CLIPLoader", clip_name="clip_l.safetensors", type="stable_diffusion")
    dual = g.node("DualCLIPLoader", clip_name1="clip_g.safetensors", clip_name2="clip_l.safetensors", type="sdxl")
    cpu_clip = g.node("CLIPLoader", clip_name="clip_g.safetensors", type="stable_diffusion", device="cpu")
    unet = g.node("UNETLoader", unet_name="sd1_unet.safetensors", weight_dtype="default")
    enc = g.node("CLIPTextEncode", text="hello", clip=dual)
    for ref_ in (vae, single, dual, cpu_clip, unet, enc):
        g.node("Keep", value=ref_)
    outcome = engine.run(g.build())
    assert outcome.status == "success", outcome.failure and outcome.failure.describe()
    vae_h, single_h, dual_h, cpu_h, unet_h, cond = engine.kept
    assert vae_h.vae.config.latent_channels == 4
    assert single_h.kind == "sd1" and dual_h.kind == "sdxl" and cpu_h.kind == "sdxl_refiner"
    assert engine.models.device_for(cpu_h.encoders[0]).type == "cpu"
    assert unet_h.kind == "sd1"
    assert cond[0][0].shape == (1, 77, 32 + 64) and cond[0][1]["pooled_output"].shape == (1, 48)


def test_a_broken_file_fails_on_its_loader_node(engine, tiny_file):
    path = engine.path("checkpoints", engine.add("checkpoints", tiny_file("sd1"), "broken.safetensors"))
    path.write_bytes(path.read_bytes()[:4096])
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", "7", ckpt_name="broken.safetensors")
    g.node("Keep", value=ckpt[0])
    outcome = engine.run(g.build())
    assert outcome.status == "error"
    assert outcome.failure.node_id == "7" and outcome.failure.node_type == "CheckpointLoaderSimple"
    message = outcome.failure.exception_message
    assert "broken.safetensors" in message and "ckpt_name" in message
    assert outcome.failure.exception_type.endswith("ModelLoadError")
    assert engine.models.loaded_count() == 0


def test_a_replaced_file_reloads(engine, tiny_file):
    path = engine.path("checkpoints", engine.add("checkpoints", tiny_file("sd1"), "m.safetensors"))
    node = loaders.CheckpointLoaderSimple()
    before = node.fingerprint(ckpt_name="m.safetensors", folders=engine.folders)
    g = GraphBuilder()
    g.node("Keep", value=g.node("CheckpointLoaderSimple", ckpt_name="m.safetensors")[0])
    engine.run(g.build())
    shutil.copy(tiny_file("sd2"), path)
    after = node.fingerprint(ckpt_name="m.safetensors", folders=engine.folders)
    assert before != after  # the engine's cache key changes with the file
    assert node.fingerprint(ckpt_name="m.safetensors") == "m.safetensors"  # no folders: the name alone
    engine.run(g.build())  # same workflow, same engine cache: the changed file still reloads
    assert [m.kind for m in engine.kept] == ["sd1", "sd2"]
    assert engine.models.loaded_count() == 1


@pytest.mark.parametrize("name", ["../x.safetensors", "/etc/passwd", "a\\..\\b.safetensors", "sd1.safetensors\0"])
def test_traversal_names_fail_validation(engine, tiny_file, name):
    engine.add("checkpoints", tiny_file("sd1"), "sd1.safetensors")
    g = GraphBuilder()
    g.node("Keep", value=g.node("CheckpointLoaderSimple", "1", ckpt_name=name)[0])
    result = engine.validate(g.build())
    assert not result.ok
    assert [e.type for e in result.node_errors["1"].errors] == ["value_not_in_list"]


def test_resolve_refuses_names_that_leave_the_folder(tmp_path):
    f = Folders.under(tmp_path)
    base = Path(f.models) / "checkpoints"
    base.mkdir(parents=True)
    (base / "ok.safetensors").write_bytes(b"x")
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(b"x")
    os.symlink(outside, base / "link.safetensors")
    os.symlink(tmp_path, base / "escape")
    assert resolve(f, "checkpoints", "ok.safetensors") == (base / "ok.safetensors").resolve()
    for bad, why in [("../secret.safetensors", "'..'"), (str(outside), "relative"), ("a\\b.safetensors", "backslash"),
                     ("ok.safetensors\0", "NUL"), ("C:/x.safetensors", "relative"), ("", "non-empty"),
                     ("link.safetensors", "outside"), ("escape/secret.safetensors", "outside"),
                     ("missing.safetensors", "no checkpoints file")]:
        with pytest.raises(ModelPathError, match=why):
            resolve(f, "checkpoints", bad)
    assert list_files(f, "checkpoints") == ["ok.safetensors"]  # escaping links are not even listed


def test_list_files(tmp_path):
    f = Folders.under(tmp_path)
    models = Path(f.models)
    for rel in ["checkpoints/b.safetensors", "checkpoints/A/a.ckpt", "checkpoints/notes.txt",
                "checkpoints/.hidden.safetensors", "checkpoints/pipe/model_index.json",
                "checkpoints/pipe/unet/diffusion_pytorch_model.safetensors", "unet/u.sft",
                "diffusion_models/d.safetensors", "clip/c.bin", "text_encoders/t.pt", "vae/deep/er/v.pth"]:
        (models / rel).parent.mkdir(parents=True, exist_ok=True)
        (models / rel).write_bytes(b"x")
    os.symlink(models / "checkpoints" / "A", models / "checkpoints" / "A" / "loop")
    assert list_files(f, "checkpoints") == ["A/a.ckpt", "b.safetensors", "pipe"]
    assert list_files(f, "unet") == list_files(f, "diffusion_models") == ["d.safetensors", "u.sft"]
    assert list_files(f, "clip") == ["c.bin", "t.pt"]
    assert list_files(f, "vae") == ["deep/er/v.pth"]
    assert list_files(f, "loras") == [] and list_files(None, "vae") == []
    assert files_of("vae")(f) == ["deep/er/v.pth"] and files_of("vae")(None) == []
    assert resolve(f, "checkpoints", "pipe").is_dir()
    with pytest.raises(ValueError, match="unknown model folder kind"):
        files_of("nope")
    assert set(MODEL_KINDS) >= {"checkpoints", "vae", "loras", "embeddings", "clip", "unet", "controlnet",
                                "upscale_models", "clip_vision", "diffusion_models"}


def test_object_info_lists_the_files(engine, tiny_file):
    engine.add("checkpoints", tiny_file("sd1"), "x/one.safetensors")
    info = engine.registry.object_info("CheckpointLoaderSimple")["CheckpointLoaderSimple"]
    assert info["input"]["required"]["ckpt_name"][0] == ["x/one.safetensors"]
    assert info["output"] == ["MODEL", "CLIP", "VAE"] and info["category"] == "loaders"
    dual = engine.registry.object_info("DualCLIPLoader")["DualCLIPLoader"]["input"]
    assert dual["required"]["type"][0] == ["sdxl"] and "device" in dual["optional"]
