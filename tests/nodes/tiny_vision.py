"""Tiny random CLIP vision towers, IP-Adapters and style adapters, in the key layouts of the real files.

CLIP vision: transformers' layout (`vision_model.*`, `visual_projection.weight`, as the IP-Adapter image
encoders ship) and OpenCLIP's (`visual.*` with fused `in_proj_weight` and `proj` = projection
transposed). IP-Adapters: `image_proj.*` (base: proj/norm; plus: the Resampler's latents/proj_in/
layers.N.0 attention/layers.N.1 feed-forward; full: proj.0/2/3) and `ip_adapter.N.to_k_ip/to_v_ip`,
numbered 2*i+1 over the U-Net's cross-attention layers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

VISION = {"hidden_size": 64, "intermediate_size": 128, "projection_dim": 48, "num_hidden_layers": 3,
          "num_attention_heads": 1, "image_size": 32, "patch_size": 8, "hidden_act": "gelu", "layer_norm_eps": 1e-5}


def tiny_vision(seed: int = 0) -> CLIPVisionModelWithProjection:
    """A deterministic random tower with the config the loader should infer from its shapes."""
    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**VISION)).eval()
    with torch.no_grad():  # random (not default-initialised) norms and embeddings, so every weight matters
        for name, p in model.named_parameters():
            if "norm" in name or "embedding" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def vision_to_open_clip(model: CLIPVisionModelWithProjection) -> dict[str, torch.Tensor]:
    """The same weights under OpenCLIP's `visual.*` names."""
    sd = model.state_dict()
    out = {"visual.class_embedding": sd["vision_model.embeddings.class_embedding"],
           "visual.conv1.weight": sd["vision_model.embeddings.patch_embedding.weight"],
           "visual.positional_embedding": sd["vision_model.embeddings.position_embedding.weight"],
           "visual.ln_pre.weight": sd["vision_model.pre_layrnorm.weight"],
           "visual.ln_pre.bias": sd["vision_model.pre_layrnorm.bias"],
           "visual.ln_post.weight": sd["vision_model.post_layernorm.weight"],
           "visual.ln_post.bias": sd["vision_model.post_layernorm.bias"],
           "visual.proj": sd["visual_projection.weight"].t()}
    for i in range(VISION["num_hidden_layers"]):
        src, dst = f"vision_model.encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat([sd[f"{src}self_attn.{x}_proj.{kind}"] for x in "qkv"])
            out[f"{dst}attn.out_proj.{kind}"] = sd[f"{src}self_attn.out_proj.{kind}"]
            out[f"{dst}ln_1.{kind}"] = sd[f"{src}layer_norm1.{kind}"]
            out[f"{dst}ln_2.{kind}"] = sd[f"{src}layer_norm2.{kind}"]
            out[f"{dst}mlp.c_fc.{kind}"] = sd[f"{src}mlp.fc1.{kind}"]
            out[f"{dst}mlp.c_proj.{kind}"] = sd[f"{src}mlp.fc2.{kind}"]
    return out


def save(path: Path, sd: dict[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in sd.items()}, str(path))
    return path


def write_vision(path: Path, layout: str = "transformers", seed: int = 0) -> Path:
    model = tiny_vision(seed)
    sd = model.state_dict() if layout == "transformers" else vision_to_open_clip(model)
    sd.pop("vision_model.embeddings.position_ids", None)
    return save(path, dict(sd))


def cross_layers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The U-Net's cross-attention modules in diffusers' processor order (what the file numbering follows)."""
    return [unet.get_submodule(n.removesuffix(".processor")) for n in unet.attn_processors
            if n.split(".")[-2] == "attn2"]


def ip_layers(unet: torch.nn.Module, gen: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for i, attn in enumerate(cross_layers(unet)):
        inner, width = attn.to_k.weight.shape
        out[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"] = torch.randn(inner, width, generator=gen) * 0.3
        out[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"] = torch.randn(inner, width, generator=gen) * 0.3
    return out


def ipadapter_state(unet: torch.nn.Module, kind: str = "base", seed: int = 1) -> dict[str, torch.Tensor]:
    """An IP-Adapter for `unet` ("base", "plus" or "full") reading the tiny tower's embeddings."""
    gen = torch.Generator().manual_seed(seed)
    cross = int(unet.config.cross_attention_dim)
    emb, hid = VISION["projection_dim"], VISION["hidden_size"]

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.2

    if kind == "base":
        proj = {"proj.weight": r(4 * cross, emb), "proj.bias": r(4 * cross), "norm.weight": 1 + r(cross),
                "norm.bias": r(cross)}
    elif kind == "full":
        proj = {"proj.0.weight": r(hid, hid), "proj.0.bias": r(hid), "proj.2.weight": r(cross, hid),
                "proj.2.bias": r(cross), "proj.3.weight": 1 + r(cross), "proj.3.bias": r(cross)}
    else:  # plus: a 4-layer Resampler with 16 queries, 64-wide (one 64-dim head)
        dim = 64
        proj = {"latents": r(1, 16, dim), "proj_in.weight": r(dim, hid), "proj_in.bias": r(dim),
                "proj_out.weight": r(cross, dim), "proj_out.bias": r(cross), "norm_out.weight": 1 + r(cross),
                "norm_out.bias": r(cross)}
        for n in range(4):
            p = f"layers.{n}."
            proj.update({f"{p}0.norm1.weight": 1 + r(dim), f"{p}0.norm1.bias": r(dim),
                         f"{p}0.norm2.weight": 1 + r(dim), f"{p}0.norm2.bias": r(dim),
                         f"{p}0.to_q.weight": r(dim, dim), f"{p}0.to_kv.weight": r(2 * dim, dim),
                         f"{p}0.to_out.weight": r(dim, dim), f"{p}1.0.weight": 1 + r(dim), f"{p}1.0.bias": r(dim),
                         f"{p}1.1.weight": r(4 * dim, dim), f"{p}1.3.weight": r(dim, 4 * dim)})
    return {**{f"image_proj.{k}": v for k, v in proj.items()}, **ip_layers(unet, gen)}


def write_ipadapter(path: Path, unet: torch.nn.Module, kind: str = "base", seed: int = 1) -> Path:
    sd = ipadapter_state(unet, kind, seed)
    if path.suffix == ".bin":  # the .bin files nest the two parts
        nested = {"image_proj": {k[11:]: v for k, v in sd.items() if k.startswith("image_proj.")},
                  "ip_adapter": {k[11:]: v for k, v in sd.items() if k.startswith("ip_adapter.")}}
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(nested, path)
        return path
    return save(path, sd)


def style_state(width: int = VISION["hidden_size"], context: int = 32, tokens: int = 8, layers: int = 3,
                seed: int = 2) -> dict[str, torch.Tensor]:
    """A T2I style adapter's keys (transformer_layes is the published file's spelling)."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.2

    sd = {"style_embedding": r(1, tokens, width), "ln_pre.weight": 1 + r(width), "ln_pre.bias": r(width),
          "ln_post.weight": 1 + r(width), "ln_post.bias": r(width), "proj": r(width, context)}
    for n in range(layers):
        p = f"transformer_layes.{n}."
        sd.update({f"{p}attn.in_proj_weight": r(3 * width, width), f"{p}attn.in_proj_bias": r(3 * width),
                   f"{p}attn.out_proj.weight": r(width, width), f"{p}attn.out_proj.bias": r(width),
                   f"{p}ln_1.weight": 1 + r(width), f"{p}ln_1.bias": r(width), f"{p}ln_2.weight": 1 + r(width),
                   f"{p}ln_2.bias": r(width), f"{p}mlp.c_fc.weight": r(4 * width, width),
                   f"{p}mlp.c_fc.bias": r(4 * width), f"{p}mlp.c_proj.weight": r(width, 4 * width),
                   f"{p}mlp.c_proj.bias": r(width)})
    return sd


def gligen_state(unet: torch.nn.Module, key_dim: int, *, gates: float = 0.5, seed: int = 3) -> dict[str, torch.Tensor]:
    """A GLIGEN file for `unet`: one fuser per transformer block under its LDM name, and the position net."""
    from nodes.models.model_patches import block_of

    gen = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.2

    sd: dict[str, torch.Tensor] = {}
    for name in unet.attn_processors:
        if not name.endswith(".attn1.processor"):
            continue
        (kind, number), transformer = block_of(unet, name)
        ldm = {"input": f"input_blocks.{number}.1", "middle": "middle_block.1", "output": f"output_blocks.{number}.1"}
        p = f"model.diffusion_model.{ldm[kind]}.transformer_blocks.{transformer}.fuser."
        dim = unet.get_submodule(name.removesuffix(".attn1.processor")).norm1.normalized_shape[0]
        sd.update({f"{p}alpha_attn": torch.tensor(gates), f"{p}alpha_dense": torch.tensor(gates),
                   f"{p}linear.weight": r(dim, key_dim), f"{p}linear.bias": r(dim),
                   f"{p}attn.to_q.weight": r(dim, dim), f"{p}attn.to_k.weight": r(dim, dim),
                   f"{p}attn.to_v.weight": r(dim, dim), f"{p}attn.to_out.0.weight": r(dim, dim),
                   f"{p}attn.to_out.0.bias": r(dim), f"{p}ff.net.0.proj.weight": r(8 * dim, dim),
                   f"{p}ff.net.0.proj.bias": r(8 * dim), f"{p}ff.net.2.weight": r(dim, 4 * dim),
                   f"{p}ff.net.2.bias": r(dim), f"{p}norm1.weight": 1 + r(dim), f"{p}norm1.bias": r(dim),
                   f"{p}norm2.weight": 1 + r(dim), f"{p}norm2.bias": r(dim)})
    sd.update({"position_net.null_positive_feature": r(key_dim), "position_net.null_position_feature": r(64),
               "position_net.linears.0.weight": r(512, key_dim + 64), "position_net.linears.0.bias": r(512),
               "position_net.linears.2.weight": r(512, 512), "position_net.linears.2.bias": r(512),
               "position_net.linears.4.weight": r(key_dim, 512), "position_net.linears.4.bias": r(key_dim)})
    return sd
