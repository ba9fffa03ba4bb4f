"""IP-Adapter on a tiny real SD1 U-Net: file layouts, the IP attention against its formula, weight 0 and removal
bit-exact, start/end, weight types, embeds nodes, and the example workflow through `main.py run`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import main
from nodes.base.errors import ModelLoadError
from nodes.base.handles import LatentFormat, ModelHandle
from nodes.base.model_sampling import ModelSampling
from nodes.models import load_checkpoint
from nodes.models.clip_vision import ClipVisionHandle, build_clip_vision, preprocess
from nodes.models.ipadapter import build_ipadapter, layer_weights, scaled_weight
from nodes.models.weights_file import read_state_dict
from nodes.sampling.ksampler import SamplingRequest, sample
from nodes.sd.ipadapter_nodes import IPAdapterAdvanced, IPAdapterCombineEmbeds, IPAdapterEmbeds, IPAdapterEncoder

from .tiny_models import SDXL_TIME_ID_WIDTH
from .tiny_vision import cross_layers, ipadapter_state, save, tiny_vision, write_ipadapter, write_vision

REQ = SamplingRequest(seed=3, steps=2, cfg=7.5, sampler_name="euler", scheduler="normal")
LATENT = {"samples": torch.zeros(1, 4, 8, 8)}
IMAGE = torch.rand(1, 40, 48, 3, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def vision(tmp_path_factory) -> ClipVisionHandle:
    path = write_vision(tmp_path_factory.mktemp("vision") / "v.safetensors")
    return ClipVisionHandle(model=build_clip_vision(read_state_dict(path), path))


@pytest.fixture(scope="module")
def adapters(sd1, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ipadapters")
    out = {}
    for kind in ("base", "plus", "full"):
        path = write_ipadapter(folder / f"{kind}.safetensors", sd1.unet, kind)
        out[kind] = build_ipadapter(read_state_dict(path), path)
    return out


def run(model, conds, **kw) -> torch.Tensor:
    return sample(model, conds[0], conds[1], LATENT, SamplingRequest(**{**REQ.__dict__, **kw}))["samples"]


def advanced(model, adapter, vision, **kw):
    inputs = {"weight": 1.0, "weight_type": "linear", "combine_embeds": "concat", "start_at": 0.0, "end_at": 1.0,
              "embeds_scaling": "V only", **kw}
    return IPAdapterAdvanced().execute(None, model=model, ipadapter=adapter, image=IMAGE, clip_vision=vision,
                                       **inputs)[0]


# ------------------------------------------------------------------------------- files

def test_safetensors_and_bin_files_load_the_same_weights(sd1, tmp_path, adapters):
    bin_path = write_ipadapter(tmp_path / "ip-adapter_sd15.bin", sd1.unet, "base")
    loaded = build_ipadapter(read_state_dict(bin_path, nested=True), bin_path)
    raw = ipadapter_state(sd1.unet, "base")
    assert loaded.layers == len(cross_layers(sd1.unet)) and not loaded.plus
    for key, value in loaded.kv.items():
        assert torch.equal(value, raw[f"ip_adapter.{key}"])
    proj = dict(loaded.projection.state_dict())
    assert torch.equal(proj["image_embeds.weight"], raw["image_proj.proj.weight"])
    assert torch.equal(proj["norm.bias"], raw["image_proj.norm.bias"])
    assert adapters["plus"].plus and adapters["full"].plus


def test_plus_projection_reads_the_resampler_weights(sd1):
    raw = ipadapter_state(sd1.unet, "plus")
    path = Path("plus.safetensors")
    proj = build_ipadapter(raw, path).projection.state_dict()
    k, v = raw["image_proj.layers.2.0.to_kv.weight"].chunk(2)
    assert torch.equal(proj["layers.2.attn.to_k.weight"], k) and torch.equal(proj["layers.2.attn.to_v.weight"], v)
    assert torch.equal(proj["latents"], raw["image_proj.latents"])
    tokens = build_ipadapter(raw, path).projection(torch.randn(2, 17, 64))
    assert tokens.shape == (2, 16, sd1.unet.config.cross_attention_dim)


def test_faceid_files_are_refused_with_the_reason(sd1, tmp_path):
    raw = ipadapter_state(sd1.unet, "base")
    raw["ip_adapter.0.to_q_lora.down.weight"] = torch.zeros(4, 4)
    path = save(tmp_path / "ip-adapter-faceid_sd15.safetensors", raw)
    with pytest.raises(ModelLoadError, match="insightface"):
        build_ipadapter(read_state_dict(path), path)
    with pytest.raises(ModelLoadError, match="not an IP-Adapter"):
        build_ipadapter({"foo": torch.zeros(1)}, path)


# ------------------------------------------------------------------------------- the attention

def _mha(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, w = q.shape
    d = w // heads
    q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    probs = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
    return (probs @ v).transpose(1, 2).reshape(b, n, w)


@pytest.mark.parametrize("scaling", ["V only", "K+V"])
def test_ip_attention_adds_the_weighted_image_attention(model, conds, vision, adapters, sd1, scaling):
    weight = 0.7
    patched = advanced(model, adapters["base"], vision, weight=weight, embeds_scaling=scaling)
    attn = cross_layers(sd1.unet)[0]
    seen = []
    hook = attn.register_forward_hook(lambda m, a, kw, out: seen.append((a[0].clone(), kw["encoder_hidden_states"]
                                                                         .clone(), out.clone())), with_kwargs=True)
    try:
        run(patched, conds, steps=1)
    finally:
        hook.remove()
    x, context, out = seen[0]
    assert x.shape[0] == 2  # positive and negative batched: the negative side reads the negative tokens
    raw = ipadapter_state(sd1.unet, "base")
    with torch.no_grad():
        embeds = tiny_vision()(pixel_values=preprocess(IMAGE, 32)).image_embeds
        cross = sd1.unet.config.cross_attention_dim

        def tokens(e: torch.Tensor) -> torch.Tensor:
            t = F.linear(e, raw["image_proj.proj.weight"], raw["image_proj.proj.bias"]).reshape(-1, 4, cross)
            return F.layer_norm(t, (cross,), raw["image_proj.norm.weight"], raw["image_proj.norm.bias"])

        ip = torch.cat([tokens(embeds), tokens(torch.zeros_like(embeds))])
        k_ip = F.linear(ip, raw["ip_adapter.1.to_k_ip.weight"])
        v_ip = F.linear(ip, raw["ip_adapter.1.to_v_ip.weight"])
        q, k, v = attn.to_q(x), attn.to_k(context), attn.to_v(context)
        if scaling == "V only":
            mixed = _mha(q, k, v, attn.heads) + weight * _mha(q, k_ip, v_ip, attn.heads)
        else:
            mixed = _mha(q, k, v, attn.heads) + _mha(q, weight * k_ip, weight * v_ip, attn.heads)
        expected = attn.to_out[0](mixed)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_weight_zero_is_the_model_itself_and_removal_restores_the_base(model, conds, vision, adapters, sd1):
    assert advanced(model, adapters["plus"], vision, weight=0.0) is model
    processors = dict(sd1.unet.attn_processors)
    base = run(model, conds)
    for kind in ("base", "plus", "full"):
        assert not torch.equal(run(advanced(model, adapters[kind], vision), conds), base), kind
    assert dict(sd1.unet.attn_processors) == processors
    assert torch.equal(run(model, conds), base)


def test_start_and_end_bound_where_it_acts(model, conds, vision, adapters):
    base = run(model, conds, steps=1)  # one U-Net call, at the highest noise level (0 %)
    late = advanced(model, adapters["base"], vision, start_at=0.5, end_at=1.0)
    assert torch.equal(run(late, conds, steps=1), base)
    early = advanced(model, adapters["base"], vision, start_at=0.0, end_at=0.5)
    assert not torch.equal(run(early, conds, steps=1), base)


def test_attention_mask_limits_where_it_acts(model, conds, vision, adapters):
    base = run(model, conds)
    hidden = advanced(model, adapters["plus"], vision, attn_mask=torch.zeros(1, 64, 64))
    assert torch.equal(run(hidden, conds), base)  # masked out everywhere: exactly the base
    half = torch.cat([torch.ones(1, 64, 32), torch.zeros(1, 64, 32)], dim=2)
    everywhere = run(advanced(model, adapters["plus"], vision), conds)
    left = run(advanced(model, adapters["plus"], vision, attn_mask=half), conds)
    assert not torch.equal(left, base) and not torch.equal(left, everywhere)


def test_stacked_adapters_both_act_and_keys_differ(model, conds, vision, adapters):
    from nodes.models.model_patches import fingerprint

    one = advanced(model, adapters["base"], vision)
    two = advanced(one, adapters["full"], vision, weight=0.5)
    assert not torch.equal(run(one, conds), run(two, conds))
    assert fingerprint(one) != fingerprint(two) != fingerprint(model)


def test_sdxl_adapter_acts_and_leaves_the_base(tiny_file, vision, tmp_path):
    xl = load_checkpoint(tiny_file("sdxl"))
    model = ModelHandle(unet=xl.unet, kind="sdxl", sampling=ModelSampling.discrete(),
                        latent_format=LatentFormat(scale_factor=xl.info.vae_scaling_factor))
    gen = torch.Generator().manual_seed(0)
    width = xl.unet.config.cross_attention_dim
    pooled = xl.unet.config.projection_class_embeddings_input_dim - 6 * SDXL_TIME_ID_WIDTH
    conds = tuple([[torch.randn(1, 7, width, generator=gen), {"pooled_output": torch.randn(1, pooled, generator=gen)}]]
                  for _ in range(2))
    path = write_ipadapter(tmp_path / "ip-adapter-plus_sdxl_vit-h.safetensors", xl.unet, "plus")
    base = run(model, conds)
    assert not torch.equal(run(advanced(model, build_ipadapter(read_state_dict(path), path), vision), conds), base)
    assert torch.equal(run(model, conds), base)


def test_weight_types_follow_the_pack_tables():
    assert layer_weights(1.0, "style transfer", True) == {6: 1.0}
    assert layer_weights(2.0, "composition", False) == {4: 0.5, 5: 2.0}
    assert layer_weights(1.0, "style and composition", True, weight_composition=0.3) == {3: 0.3, 6: 1.0}
    assert layer_weights(1.0, "linear", True) is None
    assert scaled_weight(1.0, "ease in", 0, 16, "input") == pytest.approx(1.0)
    assert scaled_weight(1.0, "ease out", 0, 16, "input") == pytest.approx(0.05)
    assert scaled_weight(1.0, "ease in-out", 8, 16, "middle") == pytest.approx(1.0)
    assert scaled_weight(1.0, "weak input", 2, 16, "input") == pytest.approx(0.2)
    assert scaled_weight(1.0, "weak input", 9, 16, "output") == 1.0


def test_encoder_and_embeds_nodes_match_the_image_node(model, conds, vision, adapters):
    pos, neg = IPAdapterEncoder().execute(None, ipadapter=adapters["plus"], image=IMAGE, weight=1.0,
                                          clip_vision=vision)
    assert pos.shape == (1, 17, 64) and neg.shape == pos.shape
    via_embeds = IPAdapterEmbeds().execute(None, model=model, ipadapter=adapters["plus"], pos_embed=pos,
                                           neg_embed=neg, weight=1.0, weight_type="linear", start_at=0.0, end_at=1.0,
                                           embeds_scaling="V only")[0]
    via_image = advanced(model, adapters["plus"], vision)
    torch.testing.assert_close(run(via_embeds, conds), run(via_image, conds))
    (avg,) = IPAdapterCombineEmbeds().execute(None, embed1=pos, method="average", embed2=pos * 3)
    torch.testing.assert_close(avg, pos * 2)
    (sub,) = IPAdapterCombineEmbeds().execute(None, embed1=pos, method="subtract", embed2=pos)
    assert torch.equal(sub, torch.zeros_like(pos))


def test_an_adapter_for_another_unet_is_refused(model, conds, vision, adapters):
    wrong = adapters["base"]
    short = type(wrong)(projection=wrong.projection, kv={k: v for k, v in wrong.kv.items() if k.startswith("1.")},
                        plus=False)
    with pytest.raises(ValueError, match="cross-attention layers"):
        run(advanced(model, short, vision), conds, steps=1)


# ------------------------------------------------------------------------------- the example workflow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ipadapter.json"


def _run_example(tmp_path: Path, tiny_file, sd1, capsys, prefix: str, *sets: str) -> np.ndarray:
    args = []
    for name in ("models", "input", "output", "user", "temp"):
        (tmp_path / name).mkdir(exist_ok=True)
        args += [f"--{name}-dir", str(tmp_path / name)]
    models = tmp_path / "models"
    if not (models / "checkpoints").exists():
        (models / "checkpoints").mkdir(parents=True)
        shutil.copy(tiny_file("sd1"), models / "checkpoints" / "sumie-demo-random-sd1.safetensors")
        write_vision(models / "clip_vision" / "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "open_clip")
        write_ipadapter(models / "ipadapter" / "ip-adapter_sd15.safetensors", sd1.unet, "base")
        pixels = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / "input" / "ipadapter_reference.png")
    sets = ("5.width=64", "5.height=64", "3.steps=3", f"9.filename_prefix={prefix}", *sets)
    code = main.main(["run", str(EXAMPLE), *args, "--cpu", *sum((["--set", s] for s in sets), [])])
    assert code == 0, capsys.readouterr().err
    (path,) = sorted((tmp_path / "output").glob(f"{prefix}_*.png"))
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def test_the_ipadapter_example_runs_and_the_adapter_acts(tmp_path, tiny_file, sd1, capsys):
    with_ip = _run_example(tmp_path, tiny_file, sd1, capsys, "ip")
    without = _run_example(tmp_path, tiny_file, sd1, capsys, "plain", "11.weight=0")
    assert with_ip.shape == without.shape and not np.array_equal(with_ip, without)
    registry = main.build_registry(folders=None)
    assert {n["class_type"] for n in json.loads(EXAMPLE.read_text()).values()} <= set(registry.names())


def _resampler(raw: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The plus models' Resampler written out from its published definition (perceiver attention + FF)."""
    p = {k.removeprefix("image_proj."): v for k, v in raw.items() if k.startswith("image_proj.")}
    dim = p["latents"].shape[-1]
    x = F.linear(x, p["proj_in.weight"], p["proj_in.bias"])
    latents = p["latents"].expand(x.shape[0], -1, -1)
    for n in range(4):
        a = f"layers.{n}.0."
        xs = F.layer_norm(x, (dim,), p[a + "norm1.weight"], p[a + "norm1.bias"])
        ls = F.layer_norm(latents, (dim,), p[a + "norm2.weight"], p[a + "norm2.bias"])
        q = F.linear(ls, p[a + "to_q.weight"])
        k, v = F.linear(torch.cat([xs, ls], dim=1), p[a + "to_kv.weight"]).chunk(2, dim=-1)
        heads = q.shape[-1] // 64
        out = _mha(q, k, v, heads)
        latents = F.linear(out, p[a + "to_out.weight"]) + latents
        f = f"layers.{n}.1."
        h = F.layer_norm(latents, (dim,), p[f + "0.weight"], p[f + "0.bias"])
        latents = F.linear(F.gelu(F.linear(h, p[f + "1.weight"])), p[f + "3.weight"]) + latents
    out = F.linear(latents, p["proj_out.weight"], p["proj_out.bias"])
    return F.layer_norm(out, (out.shape[-1],), p["norm_out.weight"], p["norm_out.bias"])


def test_plus_projection_equals_the_resampler_formula(sd1, adapters):
    raw = ipadapter_state(sd1.unet, "plus")
    x = torch.randn(2, 17, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(adapters["plus"].projection(x), _resampler(raw, x), rtol=1e-4, atol=1e-5)


def test_full_face_projection_equals_its_mlp(sd1, adapters):
    p = {k.removeprefix("image_proj."): v for k, v in ipadapter_state(sd1.unet, "full").items()}
    x = torch.randn(2, 17, 64, generator=torch.Generator().manual_seed(6))
    h = F.linear(F.gelu(F.linear(x, p["proj.0.weight"], p["proj.0.bias"])), p["proj.2.weight"], p["proj.2.bias"])
    expected = F.layer_norm(h, (h.shape[-1],), p["proj.3.weight"], p["proj.3.bias"])
    with torch.no_grad():
        torch.testing.assert_close(adapters["full"].projection(x), expected, rtol=1e-5, atol=1e-6)
