"""LoRA: file layouts, key mapping onto our modules, patching while in use, and the loader nodes.

Tiny LoRA files are built here in the real key layouts (kohya with diffusers or LDM module names,
LoCon 3x3 and Tucker convolutions, diffusers/PEFT). References are independent of the code under
test: hand-merged weights, convolution chains for LoCon, and diffusers' own SGM->diffusers renamer.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from graph import Node, NodeSchema
from graph.builder import GraphBuilder
from nodes.base.errors import ModelLoadError
from nodes.models.lora import LowRank, WeightPatch, load_lora, map_lora, parse_lora
from nodes.models.patching import patched
from tests.support.sd_engine import SdEngine, sample_a_fox

from .tiny_models import tiny_models, unet_output


def low_rank(out_f: int, in_f: int, *, rank: int = 4, kernel: int | None = None, seed: int = 0,
             conv_up: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    down_shape = (rank, in_f) if kernel is None else (rank, in_f, kernel, kernel)
    up_shape = (out_f, rank) if kernel is None and not conv_up else (out_f, rank, 1, 1)
    return {"lora_down.weight": torch.randn(down_shape, generator=gen) * 0.3,
            "lora_up.weight": torch.randn(up_shape, generator=gen) * 0.3}


def kohya(entries: dict[str, dict[str, torch.Tensor]], alpha: float | None = 2.0) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    for name, parts in entries.items():
        for role, tensor in parts.items():
            sd[f"{name}.{role}"] = tensor
        if alpha is not None:
            sd[f"{name}.alpha"] = torch.tensor(alpha)
    return sd


def save(path: Path, sd: dict[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


SD1_Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
SD1_PROJ = "down_blocks.0.attentions.0.proj_in"  # a 1x1 conv in SD1
SD1_CONV = "down_blocks.0.resnets.0.conv1"  # 3x3: LoCon
TE_Q = "encoder.layers.0.self_attn.q_proj"


def sd1_lora(seed: int = 0) -> dict[str, torch.Tensor]:
    unet = tiny_models("sd1").unet
    q = unet.get_submodule(SD1_Q).weight
    proj = unet.get_submodule(SD1_PROJ).weight
    conv = unet.get_submodule(SD1_CONV).weight
    return kohya({
        "lora_unet_" + SD1_Q.replace(".", "_"): low_rank(q.shape[0], q.shape[1], seed=seed),
        "lora_unet_" + SD1_PROJ.replace(".", "_"): low_rank(proj.shape[0], proj.shape[1], seed=seed + 1,
                                                            kernel=1, conv_up=True),
        "lora_unet_" + SD1_CONV.replace(".", "_"): low_rank(conv.shape[0], conv.shape[1], seed=seed + 2, kernel=3),
        "lora_te_text_model_" + TE_Q.replace(".", "_"): low_rank(32, 32, seed=seed + 3),
    })


def merged_by_hand(module: torch.nn.Module, sd: dict[str, torch.Tensor], prefix: str, strength: float,
                   names: list[str]) -> torch.nn.Module:
    """A copy of `module` with scale * up @ down added to each named weight."""
    merged = copy.deepcopy(module)
    with torch.no_grad():
        for name in names:
            key = prefix + name.replace(".", "_")
            up, down = sd[key + ".lora_up.weight"], sd[key + ".lora_down.weight"]
            scale = float(sd[key + ".alpha"]) / down.shape[0]
            weight = merged.get_submodule(name).weight
            delta = (up.flatten(1) @ down.flatten(1)) * scale
            weight.copy_(weight + delta.reshape(weight.shape) * strength)
    return merged


def unet_patch(lora_sd: dict[str, torch.Tensor], kind: str = "sd1", strength: float = 1.0) -> WeightPatch:
    mapping = map_lora(parse_lora(lora_sd), unet=tiny_models(kind).unet)
    assert not mapping.unmatched
    return WeightPatch(name="t", strength=strength, component="unet", deltas=mapping.deltas["unet"])


# ----------------------------------------------------------------------------- patching semantics


def test_lora_equals_the_delta_merged_by_hand():
    unet = tiny_models("sd1").unet
    sd = sd1_lora()
    expected = unet_output(merged_by_hand(unet, sd, "lora_unet_", 0.8, [SD1_Q, SD1_PROJ, SD1_CONV]))
    with patched(unet, [unet_patch(sd, strength=0.8)], "unet") as count:
        assert count == 3
        got = unet_output(unet)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, unet_output(unet), atol=1e-4)


def test_strength_zero_is_the_base_exactly_and_the_base_is_restored_bit_for_bit():
    unet = tiny_models("sd1").unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    base = unet_output(unet)
    with patched(unet, [unet_patch(sd1_lora(), strength=0.0)], "unet") as count:
        assert count == 0 and torch.equal(unet_output(unet), base)
    with pytest.raises(RuntimeError, match="boom"), patched(unet, [unet_patch(sd1_lora(), strength=3.0)], "unet"):
        assert not torch.equal(unet_output(unet), base)
        raise RuntimeError("boom")  # an interrupt mid-sampling must restore too
    after = unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(unet_output(unet), base)


def test_stacked_loras_add_up():
    unet = tiny_models("sd1").unet
    a, b = sd1_lora(seed=0), sd1_lora(seed=10)
    names = [SD1_Q, SD1_PROJ, SD1_CONV]
    expected = merged_by_hand(merged_by_hand(unet, a, "lora_unet_", 0.7, names), b, "lora_unet_", -0.4, names)
    with patched(unet, [unet_patch(a, strength=0.7), unet_patch(b, strength=-0.4)], "unet"):
        got = unet_output(unet)
    assert torch.allclose(got, unet_output(expected), atol=1e-5, rtol=1e-5)


def test_locon_3x3_and_tucker_equal_their_convolution_chains():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 6, 9, 9, generator=gen)
    down3, up = torch.randn(2, 6, 3, 3, generator=gen), torch.randn(5, 2, 1, 1, generator=gen)
    chain = F.conv2d(F.conv2d(x, down3, padding=1), up)
    delta = LowRank(up=up, down=down3).delta(torch.Size((5, 6, 3, 3)), device=torch.device("cpu"))
    assert torch.allclose(F.conv2d(x, delta, padding=1), chain, atol=1e-4)
    down1, mid = torch.randn(2, 6, 1, 1, generator=gen), torch.randn(2, 2, 3, 3, generator=gen)
    chain = F.conv2d(F.conv2d(F.conv2d(x, down1), mid, padding=1), up)
    delta = LowRank(up=up, down=down1, mid=mid, alpha=4.0).delta(torch.Size((5, 6, 3, 3)), device=torch.device("cpu"))
    assert torch.allclose(F.conv2d(x, delta, padding=1), chain * 2.0, atol=1e-4)  # alpha / rank = 2


# ----------------------------------------------------------------------------- layouts and key mapping


def test_diffusers_peft_layout_equals_kohya():
    unet = tiny_models("sd1").unet
    sd = sd1_lora()
    peft: dict[str, torch.Tensor] = {}
    for name in (SD1_Q, SD1_PROJ, SD1_CONV):
        key = "lora_unet_" + name.replace(".", "_")
        peft[f"unet.{name}.lora_A.weight"] = sd[key + ".lora_down.weight"]
        peft[f"unet.{name}.lora_B.weight"] = sd[key + ".lora_up.weight"]
        peft[f"unet.{name}.alpha"] = sd[key + ".alpha"]
    te = "lora_te_text_model_" + TE_Q.replace(".", "_")
    peft[f"text_encoder.text_model.{TE_Q}.lora_A.weight"] = sd[te + ".lora_down.weight"]
    peft[f"text_encoder.text_model.{TE_Q}.lora_B.weight"] = sd[te + ".lora_up.weight"]
    peft[f"text_encoder.text_model.{TE_Q}.alpha"] = sd[te + ".alpha"]
    # An old diffusers attention-processor key for the same layer as to_q.
    kohya_q = "lora_unet_" + SD1_Q.replace(".", "_")
    old = {f"unet.{SD1_Q.replace('attn1', 'attn1.processor')}_lora.{r}.weight": sd[f"{kohya_q}.lora_{r}.weight"]
           for r in ("up", "down")}
    encoders = {"clip_l": tiny_models("sd1").text_encoders[0]}
    ours = map_lora(parse_lora(sd), unet=unet, text_encoders=encoders)
    theirs = map_lora(parse_lora(peft), unet=unet, text_encoders=encoders)
    assert not ours.unmatched and not theirs.unmatched
    for component in ("unet", "clip_l"):
        assert ours.deltas[component].keys() == theirs.deltas[component].keys()
    old_map = map_lora(parse_lora(old), unet=unet)
    assert list(old_map.deltas["unet"]) == [SD1_Q + ".weight"]


SDXL_LDM_CASES = {  # tiny SDXL: down [Down, CrossAttnDown], up [CrossAttnUp, Up], one layer per block
    "lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_k":
        "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k",
    "lora_unet_input_blocks_2_0_op": "down_blocks.0.downsamplers.0.conv",
    "lora_unet_input_blocks_1_0_in_layers_2": "down_blocks.0.resnets.0.conv1",
    "lora_unet_input_blocks_3_0_skip_connection": "down_blocks.1.resnets.0.conv_shortcut",
    "lora_unet_middle_block_1_proj_out": "mid_block.attentions.0.proj_out",
    "lora_unet_middle_block_2_emb_layers_1": "mid_block.resnets.1.time_emb_proj",
    "lora_unet_output_blocks_0_1_proj_in": "up_blocks.0.attentions.0.proj_in",
    "lora_unet_output_blocks_1_2_conv": "up_blocks.0.upsamplers.0.conv",
    "lora_unet_output_blocks_3_0_out_layers_3": "up_blocks.1.resnets.1.conv2",
    "lora_unet_label_emb_0_0": "add_embedding.linear_1",
    "lora_unet_time_embed_2": "time_embedding.linear_2",
    "lora_unet_input_blocks_0_0": "conv_in",
    "lora_unet_out_2": "conv_out",
}


def _lora_for(module: torch.nn.Module, names: dict[str, str]) -> dict[str, torch.Tensor]:
    entries = {}
    for i, (key, target) in enumerate(names.items()):
        w = module.get_submodule(target).weight
        kernel = w.shape[2] if w.ndim == 4 else None
        entries[key] = low_rank(w.shape[0], w.shape[1], rank=2, kernel=kernel, seed=i, conv_up=kernel is not None)
    return kohya(entries)


def test_sdxl_kohya_ldm_names_land_on_the_right_modules():
    unet = tiny_models("sdxl").unet
    mapping = map_lora(parse_lora(_lora_for(unet, SDXL_LDM_CASES)), unet=unet)
    assert not mapping.unmatched
    assert sorted(mapping.deltas["unet"]) == sorted(t + ".weight" for t in SDXL_LDM_CASES.values())


def test_ldm_names_agree_with_diffusers_own_renamer():
    """Every LDM module name we accept maps where diffusers' kohya-SGM conversion maps it."""
    import re

    from diffusers.loaders.lora_conversion_utils import _convert_unet_lora_key, _maybe_map_sgm_blocks_to_diffusers

    from nodes.models.lora import _ldm_names

    unet = tiny_models("sdxl").unet
    ours = {ldm: d for d, ldm in _ldm_names(unet).items()}
    assert len(ours) > 100
    keys = {"lora_unet_" + n.replace(".", "_") + ".lora_down.weight": n for n in ours}
    for key, ldm_name in _maybe_map_sgm_blocks_to_diffusers(dict(keys), unet.config).items():
        theirs = re.sub(r"[._]lora\.down\.weight$", "", _convert_unet_lora_key(key)).replace(".processor", "")
        theirs = theirs + ".0" if theirs.endswith(".to_out") else theirs
        assert theirs == ours[ldm_name], ldm_name


def test_sdxl_text_encoder_prefixes_pick_clip_l_and_clip_g():
    models = tiny_models("sdxl")
    encoders = {"clip_l": models.text_encoders[0], "clip_g": models.text_encoders[1]}
    sd = kohya({"lora_te1_text_model_encoder_layers_1_mlp_fc1": low_rank(48, 32),
                "lora_te2_text_model_encoder_layers_0_self_attn_out_proj": low_rank(64, 64)})
    mapping = map_lora(parse_lora(sd), unet=models.unet, text_encoders=encoders)
    assert list(mapping.deltas["clip_l"]) == ["encoder.layers.1.mlp.fc1.weight"]  # flat CLIPTextModel
    assert list(mapping.deltas["clip_g"]) == ["text_model.encoder.layers.0.self_attn.out_proj.weight"]


def test_unknown_and_unsupported_keys_are_reported_not_dropped():
    sd = sd1_lora()
    sd |= kohya({"lora_unet_no_such_block_proj": low_rank(8, 8)})
    sd["lora_unet_down_blocks_0_resnets_0_conv2.hada_w1_a"] = torch.zeros(2, 2)
    sd["stray_tensor"] = torch.zeros(1)
    mapping = map_lora(parse_lora(sd), unet=tiny_models("sd1").unet)
    assert set(mapping.unmatched) == {"lora_unet_no_such_block_proj", "stray_tensor",
                                      "lora_unet_down_blocks_0_resnets_0_conv2.hada_w1_a"}
    assert mapping.skipped == {"text": 1}  # text-encoder layers when only the model is patched: not unknown


def test_a_lora_for_another_family_fails_clearly():
    sd = kohya({"lora_unet_" + SD1_Q.replace(".", "_"): low_rank(7, 5)})
    with pytest.raises(ModelLoadError, match="does not fit.*another model family"):
        map_lora(parse_lora(sd), unet=tiny_models("sd1").unet)


def test_bad_lora_files(tmp_path):
    good = save(tmp_path / "good.safetensors", sd1_lora())
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + bytes(32))
    half = save(tmp_path / "half.safetensors", {"lora_unet_x.lora_up.weight": torch.zeros(2, 2)})
    empty = save(tmp_path / "empty.safetensors", {"something_else": torch.zeros(2)})
    for path, match in ((cut, "truncated"), (garbage, "not valid JSON"), (half, "only its up matrix"),
                        (empty, "no LoRA weights found")):
        with pytest.raises(ModelLoadError, match=match) as info:
            load_lora(path)
        assert info.value.path == path

    class Payload:
        def __reduce__(self):
            return (print, ("never",))

    evil = tmp_path / "evil.pt"
    torch.save({"lora_unet_x.lora_up.weight": torch.zeros(1), "x": Payload()}, evil)
    with pytest.raises(ModelLoadError, match="refused"):
        load_lora(evil)
    pt = tmp_path / "ok.pt"
    torch.save(sd1_lora(), pt)
    assert len(load_lora(pt).weights) == 4


# ----------------------------------------------------------------------------- the nodes, end to end


class CountLoads:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import nodes.models.manager as manager_module

        self.count = 0
        real = manager_module.load_checkpoint

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(manager_module, "load_checkpoint", counting)


def lora_workflow(ckpt: str, lora: str | None, strength_model: float = 1.0, strength_clip: float = 1.0,
                  model_only: bool = False) -> dict[str, Any]:
    g = GraphBuilder()
    loader = g.node("CheckpointLoaderSimple", ckpt_name=ckpt)
    model, clip = loader[0], loader[1]
    if lora is not None and model_only:
        model = g.node("LoraLoaderModelOnly", model=model, lora_name=lora, strength_model=strength_model)
    elif lora is not None:
        patched_ = g.node("LoraLoader", model=model, clip=clip, lora_name=lora, strength_model=strength_model,
                          strength_clip=strength_clip)
        model, clip = patched_[0], patched_[1]
    pos, sampled = sample_a_fox(g, model, clip)
    g.node("Keep", value=pos)
    g.node("Keep", value=sampled)
    return g.build()


def _results(engine: SdEngine, prompt: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, Any]:
    engine.kept.clear()
    outcome = engine.run(prompt)
    assert outcome.status == "success", outcome.failure and outcome.failure.describe()
    cond, latent = engine.kept
    return cond[0][0], latent["samples"], outcome


def test_lora_nodes_patch_without_reloading_and_removal_restores_the_base(tmp_path, tiny_file, monkeypatch):
    loads = CountLoads(monkeypatch)
    engine = SdEngine(tmp_path)
    ckpt = engine.add("checkpoints", tiny_file("sd1"), "sd1.safetensors")
    lora = engine.add("loras", save(tmp_path / "l.safetensors", sd1_lora()), "style/l.safetensors")
    base_cond, base_latent, _ = _results(engine, lora_workflow(ckpt, None))
    zero_cond, zero_latent, _ = _results(engine, lora_workflow(ckpt, lora, 0.0, 0.0))
    assert torch.equal(zero_cond, base_cond) and torch.equal(zero_latent, base_latent)
    cond, latent, outcome = _results(engine, lora_workflow(ckpt, lora, 1.0, 1.0))
    assert not torch.equal(cond, base_cond) and not torch.equal(latent, base_latent)
    assert not outcome.outputs.get("2")  # every key matched: nothing to report
    model_only_cond, model_only_latent, _ = _results(engine, lora_workflow(ckpt, lora, 1.0, model_only=True))
    assert torch.equal(model_only_cond, base_cond) and not torch.equal(model_only_latent, base_latent)
    again_cond, again_latent, _ = _results(engine, lora_workflow(ckpt, None))
    assert torch.equal(again_cond, base_cond) and torch.equal(again_latent, base_latent)
    assert loads.count == 1 and engine.models.loaded_count() == 1


def test_unknown_keys_show_in_the_node_output(tmp_path, tiny_file, caplog):
    engine = SdEngine(tmp_path)
    ckpt = engine.add("checkpoints", tiny_file("sd1"), "sd1.safetensors")
    sd = sd1_lora() | kohya({"lora_unet_mystery_layer": low_rank(4, 4)})
    lora = engine.add("loras", save(tmp_path / "odd.safetensors", sd), "odd.safetensors")
    with caplog.at_level("WARNING"):
        _, _, outcome = _results(engine, lora_workflow(ckpt, lora))
    (text,) = outcome.outputs["2"]["text"]
    assert "odd.safetensors" in text and "lora_unet_mystery_layer" in text
    assert "lora_unet_mystery_layer" in caplog.text


def test_a_bad_lora_file_fails_on_its_node(tmp_path, tiny_file):
    engine = SdEngine(tmp_path)
    ckpt = engine.add("checkpoints", tiny_file("sd1"), "sd1.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 3)
    lora = engine.add("loras", broken, "broken.safetensors")
    outcome = engine.run(lora_workflow(ckpt, lora))
    assert outcome.status == "error" and outcome.failure.node_type == "LoraLoader"
    assert "broken.safetensors" in outcome.failure.exception_message
    assert "lora_name" in outcome.failure.exception_message


def test_lora_schema_matches_comfyui():
    from nodes.sd.lora_nodes import LoraLoader, LoraLoaderModelOnly

    info = LoraLoader.SCHEMA.to_object_info()
    assert list(info["input"]["required"]) == ["model", "clip", "lora_name", "strength_model", "strength_clip"]
    assert info["input"]["required"]["strength_clip"][1]["min"] == -100.0 and info["output"] == ["MODEL", "CLIP"]
    only = LoraLoaderModelOnly.SCHEMA.to_object_info()
    assert list(only["input"]["required"]) == ["model", "lora_name", "strength_model"]
    assert issubclass(LoraLoader, Node) and isinstance(LoraLoader.SCHEMA, NodeSchema)
