"""Acceptance: ComfyUI's official example workflows run unchanged through our API.

The templates come from the `comfyui-workflow-templates` wheel (MIT, version 0.1.30), fetched with
`pip download --no-deps`. Every model file a template names is written as a tiny random model of
the right architecture under that name (SD1.5, SD1.5 inpainting, SD2.1-768-v, SDXL base and
refiner, a VAE, LoRAs, an embedding), plus the input images. Each editor-format template is posted
to /api/run as it is and must produce its images, with the node types, graph and settings the
template specifies.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import zipfile
from collections import Counter
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import main
from graph import Executor, Folders, RecentRunsCache
from graph.ui_workflow import VIRTUAL, convert_ui_workflow
from nodes.models.manager import ModelManager
from nodes.models.random_checkpoint import ldm_state_dict, random_models, write_random_checkpoint

from .test_lora import kohya, low_rank, save

pytestmark = pytest.mark.slow

WHEEL = "comfyui-workflow-templates==0.1.30"
TEMPLATES = ["default", "image2image", "lora", "lora_multiple", "inpaint_example", "inpaint_model_outpainting",
             "hiresfix_latent_workflow", "embedding_example", "area_composition", "area_composition_reversed",
             "area_composition_square_area_for_subject", "latent_upscale_different_prompt_model",
             "sdxl_simple_example", "sdxl_refiner_prompt_example"]
CHECKPOINTS = {  # the files the templates name, and the architecture each really is
    "v1-5-pruned-emaonly-fp16.safetensors": "sd1", "dreamshaper_8.safetensors": "sd1",
    "Anything-V3.0.ckpt": "sd1", "AbyssOrangeMix2_hard.safetensors": "sd1", "wd-illusion-fp16.safetensors": "sd1",
    "cardosAnime_v10.safetensors": "sd1", "512-inpainting-ema.safetensors": "sd1_inpaint",
    "v2-1_768-ema-pruned.safetensors": "sd2_v", "sd_xl_base_1.0.safetensors": "sdxl",
    "sd_xl_refiner_1.0.safetensors": "sdxl_refiner",
}
OUTPUT_NODES = ("SaveImage", "PreviewImage")
SIZE = "small"  # attention only at the coarsest level and an 8x VAE: the templates' sizes stay cheap


def small_sd1_lora(seed: int) -> dict[str, torch.Tensor]:
    """A kohya-style LoRA for the small SD1 model: an attention projection and a text-encoder layer."""
    models = random_models("sd1", SIZE)
    q_name = "down_blocks.2.attentions.0.transformer_blocks.0.attn1.to_q"
    q = models.unet.get_submodule(q_name).weight
    width = models.text_encoders[0].config.hidden_size
    return kohya({"lora_unet_" + q_name.replace(".", "_"): low_rank(q.shape[0], q.shape[1], seed=seed),
                  "lora_te_text_model_encoder_layers_0_self_attn_q_proj": low_rank(width, width, seed=seed + 1)})


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
                    "-d", str(folder), WHEEL], check=True, timeout=600)
    (wheel,) = folder.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return {name: json.loads(zf.read(f"comfyui_workflow_templates/templates/{name}.json")) for name in TEMPLATES}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Folders:
    folders = Folders.under(tmp_path_factory.mktemp("sumie"))
    for name in ("models", "input", "output", "temp", "user"):
        getattr(folders, name).mkdir(parents=True, exist_ok=True)
    checkpoints = folders.models / "checkpoints"
    checkpoints.mkdir()
    for seed, (name, kind) in enumerate(CHECKPOINTS.items()):
        if name.endswith(".ckpt"):  # a pickle checkpoint: loaded with weights_only=True
            torch.save({"state_dict": ldm_state_dict(kind, random_models(kind, SIZE))}, checkpoints / name)
        else:
            write_random_checkpoint(checkpoints / name, kind, seed=seed, size=SIZE)
    (folders.models / "vae").mkdir()
    vae = {k.removeprefix("first_stage_model."): v.contiguous()
           for k, v in ldm_state_dict("sd1", random_models("sd1", SIZE)).items() if k.startswith("first_stage_model.")}
    save_file(vae, str(folders.models / "vae" / "vae-ft-mse-840000-ema-pruned.safetensors"))
    (folders.models / "loras").mkdir()
    save(folders.models / "loras" / "MoXinV1.safetensors", small_sd1_lora(seed=1))
    save(folders.models / "loras" / "blindbox_v1_mix.safetensors", small_sd1_lora(seed=3))
    (folders.models / "embeddings").mkdir()
    width = random_models("sd2_v", SIZE).text_encoders[0].config.hidden_size
    torch.save({"string_to_param": {"*": torch.randn(2, width, generator=torch.Generator().manual_seed(3))}},
               folders.models / "embeddings" / "SDA768.pt")
    Image.new("RGB", (64, 64), (180, 90, 40)).save(folders.input / "example.png")
    hole = Image.new("RGBA", (64, 64), (40, 90, 180, 255))
    hole.paste((0, 0, 0, 0), (16, 16, 48, 48))  # a transparent square: the area to inpaint
    hole.save(folders.input / "input.png")
    Image.new("RGB", (48, 64), (20, 160, 60)).save(folders.input / "input (1).png")
    return folders


def post_and_wait(folders: Folders, workflow: dict[str, Any]) -> dict[str, Any]:
    from aiohttp.test_utils import TestClient, TestServer

    from server.app import create_app
    from server.options import ServerOptions

    registry = main.build_registry(folders=folders)
    executor = Executor(registry, cache=RecentRunsCache(1), folders=folders,
                        services={"models": ModelManager(), "system": None})
    settings = main.Settings(folders=folders)

    async def go() -> dict[str, Any]:
        app = create_app(settings, registry, executor, options=ServerOptions(), web_root=None)
        async with TestClient(TestServer(app)) as client:
            resp = await client.post("/api/run?timeout=600", json={"prompt": workflow})
            body = await resp.json()
            assert resp.status == 200, body
            return body

    return asyncio.run(go())


def ran_types(prompt: dict[str, Any]) -> Counter[str]:
    return Counter(node["class_type"] for node in prompt.values())


@pytest.mark.parametrize("name", TEMPLATES)
def test_official_template_runs_unchanged(name, templates, installed):
    template = templates[name]
    expected = Counter(n["type"] for n in template["nodes"] if n["type"] not in VIRTUAL and n.get("mode", 0) == 0)
    conversion = convert_ui_workflow(template, main.build_registry(folders=installed))
    assert conversion.ok, conversion.messages()
    assert ran_types(conversion.prompt) == expected  # every node of the template, nothing else
    for node in template["nodes"]:  # the sampler settings the template specifies reach our nodes
        if node["type"] == "KSampler" and node.get("mode", 0) == 0:
            inputs = conversion.prompt[str(node["id"])]["inputs"]
            steps, cfg, sampler, scheduler, denoise = node["widgets_values"][2:7]
            assert (inputs["steps"], inputs["cfg"], inputs["sampler_name"], inputs["scheduler"],
                    inputs["denoise"]) == (steps, cfg, sampler, scheduler, denoise)

    body = post_and_wait(installed, template)
    assert body["status"] == "success", body.get("error")
    outputs = body["outputs"]
    for node in template["nodes"]:
        if node["type"] in OUTPUT_NODES and node.get("mode", 0) == 0:
            images = outputs[str(node["id"])]["images"]
            assert images, f"{name}: node {node['id']} produced no image"
            for image in images:
                root = installed.output if image["type"] == "output" else installed.temp
                path = root / image["subfolder"] / image["filename"]
                with Image.open(path) as saved:
                    assert saved.size[0] > 0 and saved.format == "PNG"
                    if image["type"] == "output":
                        assert json.loads(saved.info["workflow"])["nodes"] == template["nodes"]
