"""Every loader's `prefetch` asks the model manager for the very load its `execute` makes: after a prefetch
the workflow runs without reading any file again, and gets the prefetched objects."""

from __future__ import annotations

from pathlib import Path

from graph.builder import GraphBuilder
from graph.prefetch import prefetch_loads
from tests.support.sd_engine import SdEngine

from .test_unclip import unclip_state
from .tiny_controlnets import tiny_controlnet, write_controlnet
from .tiny_models import add_component_files
from .tiny_upscalers import rrdbnet_state, write
from .tiny_vision import save, write_vision


def test_a_prefetched_workflow_runs_on_the_prefetched_loads(tmp_path: Path, tiny_file):
    engine = SdEngine(tmp_path / "root")
    engine.add("checkpoints", tiny_file("sd1"), "sd1.safetensors")
    add_component_files(engine, tiny_file, tmp_path)
    write_controlnet(engine.folders.models / "controlnet" / "cn.safetensors", tiny_controlnet(seed=5))
    write(engine.folders.models / "upscale_models" / "up.pth", rrdbnet_state())
    write_vision(engine.folders.models / "clip_vision" / "vision.safetensors")
    save(engine.folders.models / "checkpoints" / "unclip.safetensors", unclip_state())

    g = GraphBuilder()
    loaders = [
        g.node("CheckpointLoaderSimple", ckpt_name="sd1.safetensors"),
        g.node("VAELoader", vae_name="xl_vae.safetensors"),
        g.node("CLIPLoader", clip_name="clip_l.safetensors", type="stable_diffusion"),
        g.node("DualCLIPLoader", clip_name1="clip_g.safetensors", clip_name2="clip_l.safetensors", type="sdxl"),
        g.node("UNETLoader", unet_name="sd1_unet.safetensors", weight_dtype="default"),
        g.node("ControlNetLoader", control_net_name="cn.safetensors"),
        g.node("UpscaleModelLoader", model_name="up.pth"),
        g.node("CLIPVisionLoader", clip_name="vision.safetensors"),
        g.node("unCLIPCheckpointLoader", ckpt_name="unclip.safetensors"),
    ]
    for loader in loaders:
        g.node("Keep", value=loader)
    validation = engine.validate(g.build())
    assert validation.ok, validation.messages()

    done = prefetch_loads(engine.executor, validation, run_id="queued", folders=engine.folders)
    assert sorted(d.class_type for d in done if d.outcome == "loaded") == sorted(
        ["CheckpointLoaderSimple", "VAELoader", "CLIPLoader", "DualCLIPLoader", "UNETLoader", "ControlNetLoader",
         "UpscaleModelLoader", "CLIPVisionLoader", "unCLIPCheckpointLoader"])
    ahead = list(engine.models.loads)
    assert len(ahead) == 9 and all(r.prefetch for r in ahead)

    outcome = engine.run(g.build())
    assert outcome.status == "success", outcome.failure and outcome.failure.describe()
    assert list(engine.models.loads) == ahead  # the run read no file: every load was the prefetched one
    assert len(engine.kept) == 9
