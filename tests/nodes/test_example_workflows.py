"""The hires-fix and inpainting examples run from `main.py run` on tiny models written here.

The examples name the demo checkpoint, so a fresh install runs them; the tests put a tiny model under
that name (and an inpainting one under another) plus a tiny upscale model under the name the hires-fix
example uses, and shrink sizes and steps with --set so they run in seconds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from graph.builder import GraphBuilder
from tests.support.sd_engine import SdEngine

from .tiny_models import tiny_models
from .tiny_upscalers import rrdbnet_state, write

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO = "sumie-demo-random-sd1.safetensors"


def vae_downscale() -> int:
    """Pixels per latent pixel of the tiny test VAE (8 in real SD models)."""
    return 2 ** (len(tiny_models("sd1").vae.config.block_out_channels) - 1)


def folders(tmp_path: Path) -> list[str]:
    args = []
    for name in ("models", "input", "output", "user", "temp"):
        (tmp_path / name).mkdir(exist_ok=True)
        args += [f"--{name}-dir", str(tmp_path / name)]
    return [*args, "--cpu"]


def install(tmp_path: Path, source: Path, kind: str, name: str) -> None:
    target = tmp_path / "models" / kind / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)


def saved(tmp_path: Path, prefix: str) -> Image.Image:
    (path,) = sorted((tmp_path / "output").glob(f"{prefix}_*.png"))
    return Image.open(path)


def test_hires_fix_example_with_an_upscale_model(tmp_path, tiny_file, capsys):
    args = folders(tmp_path)
    install(tmp_path, tiny_file("sd1"), "checkpoints", DEMO)
    write(tmp_path / "models" / "upscale_models" / "RealESRGAN_x4plus.pth", rrdbnet_state(), wrap="params_ema")
    sets = ["5.width=64", "5.height=48", "3.steps=2", "14.steps=2"]
    code = main.main(["run", str(EXAMPLES / "hires_fix.json"), *args, *sum((["--set", s] for s in sets), [])])
    assert code == 0, capsys.readouterr().err
    # a 64x48 latent image decodes to (64/8 * ds) x (48/8 * ds) pixels; x4 by the model, x0.5 by ImageScaleBy
    low_w, low_h = 64 // 8 * vae_downscale(), 48 // 8 * vae_downscale()
    assert saved(tmp_path, "Sumie_hires").size == (low_w * 2, low_h * 2)


def test_hires_fix_through_a_latent_upscale(tmp_path, tiny_file):
    engine = SdEngine(tmp_path)
    ckpt = engine.add("checkpoints", tiny_file("sd1"), "sd15.safetensors")
    g = GraphBuilder()
    loader = g.node("CheckpointLoaderSimple", ckpt_name=ckpt)
    pos = g.node("CLIPTextEncode", text="a fox", clip=loader[1])
    neg = g.node("CLIPTextEncode", text="blurry", clip=loader[1])
    low = g.node("KSampler", seed=1, steps=2, cfg=7.0, sampler_name="euler", scheduler="normal", denoise=1.0,
                 model=loader[0], positive=pos, negative=neg,
                 latent_image=g.node("EmptyLatentImage", width=64, height=64, batch_size=1))
    up = g.node("LatentUpscaleBy", samples=low, upscale_method="nearest-exact", scale_by=1.5)
    high = g.node("KSampler", seed=1, steps=2, cfg=7.0, sampler_name="euler", scheduler="normal", denoise=0.5,
                  model=loader[0], positive=pos, negative=neg, latent_image=up)
    g.node("Keep", value=low)
    g.node("Keep", value=high)
    g.node("Keep", value=g.node("VAEDecode", samples=high, vae=loader[2]))
    outcome = engine.run(g.build())
    assert outcome.status == "success", outcome.failure and outcome.failure.describe()
    low_latent, high_latent, image = engine.kept
    assert low_latent["samples"].shape == (1, 4, 8, 8) and high_latent["samples"].shape == (1, 4, 12, 12)
    assert image.shape == (1, 12 * vae_downscale(), 12 * vae_downscale(), 3)


def source_image(tmp_path: Path) -> None:
    """A 64x64 picture whose right half is transparent: LoadImage's mask (1 - alpha) covers it."""
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 40, 140, 200, 255
    rgba[:, 32:, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "input" / "inpaint_source.png")


@pytest.mark.parametrize("kind", ["sd1", "sd1_inpaint"])
def test_inpaint_example_runs_on_plain_and_inpainting_models(tmp_path, tiny_file, capsys, kind):
    args = folders(tmp_path)
    source_image(tmp_path)
    install(tmp_path, tiny_file("sd1"), "checkpoints", DEMO)
    sets = ["3.steps=3", "3.seed=5"]
    if kind == "sd1_inpaint":
        install(tmp_path, tiny_file("sd1_inpaint"), "checkpoints", "sd-v1-5-inpainting.safetensors")
        sets.append("4.ckpt_name=sd-v1-5-inpainting.safetensors")
    code = main.main(["run", str(EXAMPLES / "inpaint_model_conditioning.json"), *args,
                      *sum((["--set", s] for s in sets), [])])
    assert code == 0, capsys.readouterr().err
    out = np.asarray(saved(tmp_path, "Sumie_inpaint").convert("RGB"), dtype=np.float32)
    assert out.shape == (64, 64, 3)
    # The kept (left) half is the source through the VAE; the repainted half is whatever the model made.
    assert not np.allclose(out[:, :24], out[:, 40:], atol=2.0)


def test_examples_name_only_registered_nodes():
    import json

    registry = main.build_registry(folders=None)
    for name in ("hires_fix.json", "inpaint_model_conditioning.json"):
        prompt = json.loads((EXAMPLES / name).read_text())
        missing = {n["class_type"] for n in prompt.values()} - set(registry.names())
        assert not missing, (name, missing)
