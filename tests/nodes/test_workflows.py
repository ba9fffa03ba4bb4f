"""Whole Stable Diffusion workflows through the engine, with every built-in node as main.py registers it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from PIL import Image

from graph import InterruptToken, Progress
from graph.builder import GraphBuilder
from tests.support.sd_engine import SdEngine


@pytest.fixture
def engine(tmp_path) -> SdEngine:
    return SdEngine(tmp_path)


def txt2img(ckpt: str, *, seed: int = 1, steps: int = 3, size: int = 64, batch: int = 1, sampler: str = "euler",
            save: bool = True) -> tuple[GraphBuilder, Any]:
    g = GraphBuilder()
    loader = g.node("CheckpointLoaderSimple", ckpt_name=ckpt)
    pos = g.node("CLIPTextEncode", text="a (red:1.2) fox, watercolor", clip=loader[1])
    neg = g.node("CLIPTextEncode", text="blurry", clip=loader[1])
    latent = g.node("EmptyLatentImage", width=size, height=size, batch_size=batch)
    sampled = g.node("KSampler", seed=seed, steps=steps, cfg=7.0, sampler_name=sampler, scheduler="karras",
                     denoise=1.0, model=loader[0], positive=pos, negative=neg, latent_image=latent)
    image = g.node("VAEDecode", samples=sampled, vae=loader[2])
    if save:
        g.node("SaveImage", images=image, filename_prefix="wf/test")
    return g, sampled


def test_default_workflow_saves_a_png_with_its_workflow(engine, tiny_file):
    ckpt = engine.add("checkpoints", tiny_file("sd1"), "sd15.safetensors")
    g, _ = txt2img(ckpt)
    editor = {"nodes": [], "links": [], "extra": {"note": "café ☕"}}
    outcome = engine.run(g.build(), extra_data={"extra_pnginfo": {"workflow": editor}})
    assert outcome.status == "success", outcome.failure and outcome.failure.describe()
    (saved,) = outcome.outputs["7"]["images"]
    assert saved["subfolder"] == "wf" and saved["type"] == "output" and saved["filename"] == "test_00001_.png"
    image = Image.open(engine.folders.output / "wf" / saved["filename"])
    assert json.loads(image.info["workflow"]) == editor
    assert json.loads(image.info["prompt"])["5"]["inputs"]["seed"] == 1


def test_a_new_seed_reruns_only_the_sampler_and_what_follows(engine, tiny_file):
    ckpt = engine.add("checkpoints", tiny_file("sd1"), "sd15.safetensors")
    engine.run(txt2img(ckpt, seed=1)[0].build())
    outcome = engine.run(txt2img(ckpt, seed=2)[0].build())
    assert sorted(outcome.executed) == ["5", "6", "7"]  # KSampler, VAEDecode, SaveImage
    assert {"1", "2", "3", "4"} <= set(outcome.cached)


def test_image_k_of_a_batch_is_reproduced_alone(engine, tiny_file):
    ckpt = engine.add("checkpoints", tiny_file("sd1"), "sd15.safetensors")
    g, sampled = txt2img(ckpt, batch=3, save=False)
    g.node("Keep", value=sampled)
    engine.run(g.build())
    g2, _ = txt2img(ckpt, batch=3, save=False)
    prompt = g2.build()
    prompt["picked"] = {"class_type": "LatentFromBatch", "inputs": {"samples": ["4", 0], "batch_index": 2,
                                                                     "length": 1}}
    prompt["5"]["inputs"]["latent_image"] = ["picked", 0]
    prompt["keep"] = {"class_type": "Keep", "inputs": {"value": ["5", 0]}}
    engine.run(prompt)
    batch, alone = engine.kept[0]["samples"], engine.kept[1]["samples"]
    assert float((batch[2:3] - alone).abs().max()) < 1e-4 * float(alone.abs().max())


def test_img2img_from_an_uploaded_image(engine, tiny_file):
    ckpt = engine.add("checkpoints", tiny_file("sd1"), "sd15.safetensors")
    Image.new("RGB", (64, 64), (200, 40, 40)).save(engine.folders.input / "red.png")
    g = GraphBuilder()
    loader = g.node("CheckpointLoaderSimple", ckpt_name=ckpt)
    pixels = g.node("LoadImage", image="red.png")
    latent = g.node("VAEEncode", pixels=pixels[0], vae=loader[2])
    text = g.node("CLIPTextEncode", text="a fox", clip=loader[1])
    sampled = g.node("KSampler", seed=5, steps=4, cfg=5.0, sampler_name="dpmpp_2m", scheduler="normal",
                     denoise=0.5, model=loader[0], positive=text, negative=text, latent_image=latent)
    g.node("Keep", value=g.node("VAEDecode", samples=sampled, vae=loader[2]))
    outcome = engine.run(g.build())
    assert outcome.status == "success" and engine.kept[0].shape == (1, 64, 64, 3)


def test_inpainting_model_repaints_only_the_masked_area(engine, tiny_file):
    ckpt = engine.add("checkpoints", tiny_file("sd1_inpaint"), "inpaint.safetensors")
    rgba = Image.new("RGBA", (64, 64), (30, 120, 200, 255))
    for x in range(32, 64):
        for y in range(64):
            rgba.putpixel((x, y), (30, 120, 200, 0))  # transparent right half = the area to repaint
    rgba.save(engine.folders.input / "hole.png")
    g = GraphBuilder()
    loader = g.node("CheckpointLoaderSimple", ckpt_name=ckpt)
    image = g.node("LoadImage", image="hole.png")
    latent = g.node("VAEEncodeForInpaint", pixels=image[0], vae=loader[2], mask=image[1], grow_mask_by=0)
    text = g.node("CLIPTextEncode", text="a cat", clip=loader[1])
    sampled = g.node("KSampler", seed=5, steps=3, cfg=5.0, sampler_name="euler", scheduler="normal", denoise=1.0,
                     model=loader[0], positive=text, negative=text, latent_image=latent)
    g.node("Keep", value=latent)
    g.node("Keep", value=sampled)
    assert engine.run(g.build()).status == "success"
    before, after = engine.kept[0]["samples"], engine.kept[1]["samples"]
    half = before.shape[-1] // 2
    assert torch.allclose(after[..., : half - 1], before[..., : half - 1], atol=1e-4)
    assert not torch.allclose(after[..., half + 1:], before[..., half + 1:], atol=1e-2)


def test_sdxl_base_to_refiner_hand_off(engine, tiny_file):
    base = engine.add("checkpoints", tiny_file("sdxl"), "sdxl_base.safetensors")
    refiner = engine.add("checkpoints", tiny_file("sdxl_refiner"), "sdxl_refiner.safetensors")
    g = GraphBuilder()
    b = g.node("CheckpointLoaderSimple", ckpt_name=base)
    r = g.node("CheckpointLoaderSimple", ckpt_name=refiner)
    bpos = g.node("CLIPTextEncodeSDXL", clip=b[1], width=1024, height=1024, crop_w=0, crop_h=0, target_width=1024,
                  target_height=1024, text_g="a fox", text_l="a fox")
    bneg = g.node("CLIPTextEncode", text="blurry", clip=b[1])
    rpos = g.node("CLIPTextEncodeSDXLRefiner", ascore=6.0, width=1024, height=1024, text="a fox", clip=r[1])
    rneg = g.node("CLIPTextEncodeSDXLRefiner", ascore=2.5, width=1024, height=1024, text="blurry", clip=r[1])
    latent = g.node("EmptyLatentImage", width=64, height=64, batch_size=1)
    first = g.node("KSamplerAdvanced", model=b[0], add_noise="enable", noise_seed=7, steps=6, cfg=6.0,
                   sampler_name="euler", scheduler="normal", positive=bpos, negative=bneg, latent_image=latent,
                   start_at_step=0, end_at_step=4, return_with_leftover_noise="enable")
    second = g.node("KSamplerAdvanced", model=r[0], add_noise="disable", noise_seed=7, steps=6, cfg=6.0,
                    sampler_name="euler", scheduler="normal", positive=rpos, negative=rneg, latent_image=first,
                    start_at_step=4, end_at_step=10000, return_with_leftover_noise="disable")
    g.node("SaveImage", images=g.node("VAEDecode", samples=second, vae=r[2]), filename_prefix="xl")
    outcome = engine.run(g.build())
    assert outcome.status == "success", outcome.failure and outcome.failure.describe()
    assert (engine.folders.output / "xl_00001_.png").exists()


def test_interrupt_during_sampling_ends_within_a_step(engine, tiny_file):
    ckpt = engine.add("checkpoints", tiny_file("sd1"), "sd15.safetensors")
    token = InterruptToken()
    steps = []

    def listener(event):
        if isinstance(event, Progress):
            steps.append(event.value)
            if event.value == 2:
                token.set()

    outcome = engine.run(txt2img(ckpt, steps=10)[0].build(), listeners=[listener], interrupt=token)
    assert outcome.status == "interrupted" and outcome.interrupted_at == "5" and steps == [1, 2]
    assert not (engine.folders.output / "wf").exists()


def test_a_run_with_overrides_saves_the_prompt_that_ran_so_its_image_reruns_the_same(tmp_path, tiny_file, capsys):
    """`main.py run WF --set 5.seed=42` embeds seed 42 in the PNG: rerunning the PNG gives the same pixels."""
    import shutil

    import numpy as np

    import main

    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_file("sd1"), tmp_path / "models" / "checkpoints" / "sd15.safetensors")
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(txt2img("sd15.safetensors", seed=1)[0].build()))
    flags = [f"--{name}-dir={tmp_path / name}" for name in ("models", "input", "output", "temp", "user")]
    flags.append("--disable-plugins")
    assert main.main(["run", str(workflow), "--set", "5.seed=42", *flags]) == 0
    (first,) = capsys.readouterr().out.split()
    assert main.main(["run", first, *flags]) == 0
    (rerun,) = capsys.readouterr().out.split()
    assert main.main(["run", str(workflow), *flags]) == 0
    (unmodified,) = capsys.readouterr().out.split()
    assert len({first, rerun, unmodified}) == 3
    with Image.open(first) as a, Image.open(rerun) as b, Image.open(unmodified) as c:
        assert json.loads(a.info["prompt"])["5"]["inputs"]["seed"] == 42
        pixels, rerun_pixels, seed_1_pixels = np.asarray(a), np.asarray(b), np.asarray(c)
    assert np.array_equal(pixels, rerun_pixels)
    assert not np.array_equal(pixels, seed_1_pixels)  # the override changed the picture
