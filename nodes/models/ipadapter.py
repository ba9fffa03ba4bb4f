"""IP-Adapter files (IPADAPTER) and the image prompt they add to a U-Net's cross-attention.

A file holds `image_proj.*` (CLIP vision embeddings -> image tokens) and `ip_adapter.N.to_k_ip/to_v_ip`
(one key/value projection pair per cross-attention layer; N = 2 * i + 1 for the i-th cross-attention
in diffusers' layer order: down blocks, up blocks, middle). The projection is built with diffusers'
ImageProjection / IPAdapterPlusImageProjection / IPAdapterFullImageProjection, chosen from the keys.

The image prompt is a model patch (nodes/models/model_patches.py): in every cross-attention layer
    out = attention(q, k, v) + w * attention(q, k_ip, v_ip)
with k_ip/v_ip the layer's projections of the image tokens (the negative side sees the tokens of the
negative image, zeros by default), w from the node's weight and weight type, only between start_at and
end_at. Several IP-Adapters on one model share one attention replacement, so they stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nodes.base.errors import ModelLoadError
from nodes.base.handles import _Handle

from .model_patches import ActivePatches, ModelPatch, attention, block_of

WEIGHT_TYPES = ("linear", "ease in", "ease out", "ease in-out", "reverse in-out", "weak input", "weak output",
                "weak middle", "strong middle", "style transfer", "composition", "strong style transfer",
                "style and composition", "style transfer precise", "composition precise")
EMBEDS_SCALING = ("V only", "K+V", "K+V w/ C penalty", "K+mean(V) w/ C penalty")
COMBINE_METHODS = ("concat", "add", "subtract", "average", "norm average")


@dataclass(frozen=True, kw_only=True, eq=False)
class IPAdapterModel(_Handle):
    """IPADAPTER: the image projection and the per-layer key/value projections of one file."""

    projection: torch.nn.Module
    kv: dict[str, torch.Tensor]  # "N.to_k_ip.weight" -> [inner, context width]
    plus: bool  # plus / full-face models read the penultimate hidden states, the others image_embeds
    source: Path | None = None
    manager: Any = None

    @property
    def layers(self) -> int:
        return len([k for k in self.kv if k.endswith(".to_k_ip.weight")])

    @property
    def context_width(self) -> int:
        return int(next(iter(self.kv.values())).shape[1])


def split_ipadapter(sd: Mapping[str, Any], path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{"image_proj": ..., "ip_adapter": ...} from a .bin (nested dicts) or .safetensors (prefixed keys)."""
    if isinstance(sd.get("image_proj"), Mapping) and isinstance(sd.get("ip_adapter"), Mapping):
        return {"image_proj": dict(sd["image_proj"]), "ip_adapter": dict(sd["ip_adapter"])}
    parts: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in sd.items():
        for prefix, part in (("image_proj.", "image_proj"), ("ip_adapter.", "ip_adapter"),
                             ("adapter_modules.", "ip_adapter")):
            if key.startswith(prefix):
                parts[part][key[len(prefix):]] = value
    if not parts["ip_adapter"] or not parts["image_proj"]:
        raise ModelLoadError(path, "not an IP-Adapter file; expected image_proj.* and ip_adapter.* weights")
    return parts


def _unsupported(parts: dict[str, dict[str, torch.Tensor]], path: Path) -> str | None:
    proj, ip = parts["image_proj"], parts["ip_adapter"]
    if "0.to_q_lora.down.weight" in ip or "perceiver_resampler.proj_in.weight" in proj or (
            "proj.2.weight" in proj and "proj.3.weight" not in proj):
        return ("IP-Adapter FaceID models need insightface face embeddings, which Sumie does not provide; use a "
                "non-FaceID IP-Adapter (plus-face, full-face) instead")
    if "layers.0.0.to_out.weight" in proj and int(proj["layers.0.0.to_out.weight"].shape[0]) == 2048:
        return "Kolors IP-Adapters are for the Kolors model, which Sumie does not run"
    if "1.to_k_ip.weight" not in ip:
        return "IP-Adapter weights lack 1.to_k_ip.weight; expected to_k_ip/to_v_ip pairs per cross-attention layer"
    return None


def build_ipadapter(sd: Mapping[str, Any], path: Path, *, dtype: torch.dtype | None = None) -> IPAdapterModel:
    """An IPADAPTER from a loaded file; FaceID and Kolors files are refused with the reason."""
    from diffusers.loaders.unet import UNet2DConditionLoadersMixin

    parts = split_ipadapter(sd, path)
    reason = _unsupported(parts, path)
    if reason is not None:
        raise ModelLoadError(path, reason)
    proj = parts["image_proj"]
    try:
        projection = UNet2DConditionLoadersMixin._convert_ip_adapter_image_proj_to_diffusers(
            None, dict(proj), low_cpu_mem_usage=False)
    except (KeyError, RuntimeError, ValueError, IndexError) as exc:
        raise ModelLoadError(path, f"IP-Adapter image projection does not match any known layout: {exc}") from None
    dtype = dtype or next(iter(parts["ip_adapter"].values())).dtype
    projection = projection.to(dtype).eval().requires_grad_(False)
    kv = {k: v.to(dtype) for k, v in parts["ip_adapter"].items() if k.endswith(("to_k_ip.weight", "to_v_ip.weight"))}
    plus = "latents" in proj or "proj.3.weight" in proj
    return IPAdapterModel(projection=projection, kv=kv, plus=plus, source=path)


@torch.no_grad()
def project(adapter: IPAdapterModel, embeds: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Image tokens [n, tokens, context width] of CLIP vision embeddings, on the CPU in float32."""
    param = next(adapter.projection.parameters())
    manager = adapter.manager
    if manager is None:
        return adapter.projection(embeds.to(param.device, param.dtype)).float().cpu()
    with manager.use(adapter.projection) as dev:
        return adapter.projection(embeds.to(dev, param.dtype)).float().cpu()


# ---------------------------------------------------------------------------------- layer weights

def layer_weights(weight: float, weight_type: str, sdxl: bool, weight_composition: float = 1.0
                  ) -> dict[int, float] | None:
    """Per spatial-transformer weights ({index: weight}) of the block-selecting weight types, else None.

    Indices count the U-Net's transformer blocks in execution order (SD1.5: 16, SDXL: 11); style sits
    in SDXL's output block 1 (index 6), composition in its input block 8 (index 3), SD1.5's in input
    blocks 7/8 (indices 4/5). `weight_composition` weighs the composition blocks of the style-and-
    composition types (for "composition precise": the composition weight, `weight` the boost elsewhere).
    """
    w, wc = weight, weight_composition
    sd1_style = (0, 1, 2, 3, 9, 10, 11, 12, 13, 14, 15)
    if weight_type == "style transfer":
        return {6: w} if sdxl else dict.fromkeys(sd1_style, w)
    if weight_type == "composition":
        return {3: w} if sdxl else {4: w * 0.25, 5: w}
    if weight_type == "strong style transfer":
        return (dict.fromkeys((0, 1, 2, 4, 5, 6, 7, 8, 9, 10), w) if sdxl
                else dict.fromkeys((0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), w))
    if weight_type in ("style and composition", "style transfer precise"):
        return {3: wc, 6: w} if sdxl else {**dict.fromkeys(sd1_style, w), 4: wc * 0.25, 5: wc}
    if weight_type == "strong style and composition":
        return {**dict.fromkeys(range(11), w), 3: wc} if sdxl else {**dict.fromkeys(range(16), w), 4: wc, 5: wc}
    if weight_type == "composition precise":
        if sdxl:
            return {**dict.fromkeys(range(11), w * 0.1), 3: wc, 6: w}
        return {**dict.fromkeys(sd1_style, w), 4: wc * 0.25, 5: wc, 6: w * 0.1, 7: w * 0.1, 8: w * 0.1}
    return None


def scaled_weight(weight: float, weight_type: str, t_idx: int, layers: int, block_type: str) -> float:
    """The weight of the ramped / block-damped weight types at transformer index `t_idx` of `layers`."""
    half = layers / 2
    if weight_type == "ease in":
        return weight * (0.05 + 0.95 * (1 - t_idx / layers))
    if weight_type == "ease out":
        return weight * (0.05 + 0.95 * (t_idx / layers))
    if weight_type == "ease in-out":
        return weight * (0.05 + 0.95 * (1 - abs(t_idx - half) / half))
    if weight_type == "reverse in-out":
        return weight * (0.05 + 0.95 * (abs(t_idx - half) / half))
    damped = {"weak input": ("input",), "weak middle": ("middle",), "weak output": ("output",),
              "strong middle": ("input", "output")}
    if block_type in damped.get(weight_type, ()):
        return weight * 0.2
    return weight


# ---------------------------------------------------------------------------------- the patch

@dataclass(frozen=True, kw_only=True, eq=False)
class IPAdapterPatch(ModelPatch):
    """One IP-Adapter applied to a MODEL: image tokens, weights and the noise range where it acts."""

    adapter: IPAdapterModel
    cond: torch.Tensor  # [1, tokens, context width] (several images concatenated along the tokens)
    uncond: torch.Tensor
    weight: float
    weight_type: str
    sdxl: bool
    sigma_start: float
    sigma_end: float
    embeds_scaling: str = "V only"
    weight_composition: float = 1.0
    mask: torch.Tensor | None = None
    cond_alt: torch.Tensor | None = None  # composition tokens (style and composition)
    _kv_cache: dict = field(default_factory=dict, repr=False)

    def active_at(self, sigma: float) -> bool:
        return self.sigma_end <= sigma <= self.sigma_start

    def install(self, active: ActivePatches) -> None:
        for p in active.attention_patches:
            if isinstance(p.replace, IPAttention):
                p.replace.add(self)
                return
        shared = IPAttention(active)
        shared.add(self)
        active.attention("attn2", replace=shared, when=shared.acts)

    def contribution(self, q: torch.Tensor, info: dict[str, Any], layer: tuple[str, int, int, int]
                     ) -> torch.Tensor | None:
        """w * attention(q, k_ip, v_ip) for one layer call, or None where this adapter adds nothing."""
        _, key, t_idx, layers = layer
        block_type = info["block"][0]
        cond, uncond = self.cond, self.uncond
        per_layer = layer_weights(self.weight, self.weight_type, self.sdxl, self.weight_composition)
        if per_layer is not None:
            if t_idx not in per_layer:
                return None
            composition = {3} if self.sdxl else {4, 5}
            if (self.weight_type == "style transfer precise" and t_idx in composition) or (
                    self.weight_type == "composition precise" and t_idx not in composition):
                cond, uncond = cond * 0, cond
            if self.cond_alt is not None and t_idx == 3:
                cond = self.cond_alt
            weight = per_layer[t_idx]
        else:
            weight = scaled_weight(self.weight, self.weight_type, t_idx, layers, block_type)
        if weight == 0:
            return None
        cond_or_uncond = list(info.get("cond_or_uncond") or [0])
        per_prompt = q.shape[0] // len(cond_or_uncond)
        k_c, v_c = self._kv(key, cond, q)
        k_u, v_u = self._kv(key, uncond, q)
        ip_k = torch.cat([(k_c, k_u)[i].expand(per_prompt, -1, -1) for i in cond_or_uncond])
        ip_v = torch.cat([(v_c, v_u)[i].expand(per_prompt, -1, -1) for i in cond_or_uncond])
        heads = info["heads"]
        if self.embeds_scaling == "V only":
            out = attention(q, ip_k, ip_v, heads) * weight
        else:
            if self.embeds_scaling != "K+V":
                weight = weight * ip_k.shape[2] / 1280.0
            ip_k = ip_k * weight
            if self.embeds_scaling == "K+mean(V) w/ C penalty":
                mean = ip_v.mean(dim=1, keepdim=True)
                ip_v = (ip_v - mean) + mean * weight
            else:
                ip_v = ip_v * weight
            out = attention(q, ip_k, ip_v, heads)
        if self.mask is not None:
            out = out * self._mask(info, q.shape[1], per_prompt, len(cond_or_uncond)).to(out)
        return out

    def _kv(self, key: int, tokens: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cache_key = (key, id(tokens), q.device, q.dtype)
        hit = self._kv_cache.get(cache_key)
        if hit is None or hit[0] is not tokens:
            t = tokens.to(q.device, q.dtype)
            k = F.linear(t, self.adapter.kv[f"{key}.to_k_ip.weight"].to(q.device, q.dtype))
            v = F.linear(t, self.adapter.kv[f"{key}.to_v_ip.weight"].to(q.device, q.dtype))
            hit = self._kv_cache[cache_key] = (tokens, k, v)
        return hit[1], hit[2]

    def _mask(self, info: dict[str, Any], seq_len: int, per_prompt: int, sides: int) -> torch.Tensor:
        """The attention mask at this layer's resolution, [B, tokens, 1] (the pack's sizing rule)."""
        _, _, oh, ow = info.get("original_shape") or (1, 1, 1, 1)
        mask_h = oh / (oh * ow / seq_len) ** 0.5
        mask_h = int(mask_h) + int((seq_len % int(mask_h)) != 0)
        mask_w = seq_len // mask_h
        mask = F.interpolate(self.mask[:, None].float(), size=(mask_h, mask_w), mode="bilinear")[:, 0]
        mask = _to_size(mask, per_prompt).repeat(sides, 1, 1).reshape(per_prompt * sides, -1, 1)
        length = mask_h * mask_w
        if length < seq_len:
            pad = seq_len - length
            mask = F.pad(mask, (0, 0, pad // 2, pad - pad // 2))
        elif length > seq_len:
            start = (length - seq_len) // 2
            mask = mask[:, start:start + seq_len]
        return mask


def _to_size(t: torch.Tensor, size: int) -> torch.Tensor:
    """Repeat the last item (or cut) so the batch has `size` items."""
    if t.shape[0] < size:
        return torch.cat([t, t[-1:].repeat(size - t.shape[0], *[1] * (t.ndim - 1))])
    return t[:size]


class IPAttention:
    """The shared attention replacement: the plain cross-attention plus every acting IP-Adapter's share."""

    def __init__(self, active: ActivePatches) -> None:
        self.active = active
        self.patches: list[IPAdapterPatch] = []
        self._layers: dict[str, tuple[str, int, int, int]] | None = None

    def add(self, patch: IPAdapterPatch) -> None:
        if self.patches and patch.adapter.layers != self.patches[0].adapter.layers:
            raise ValueError("IP-Adapters made for different U-Nets cannot be stacked on one model")
        self.patches.append(patch)

    def layers(self) -> dict[str, tuple[str, int, int, int]]:
        """attn2 processor name -> (name, key number, transformer index, transformer count)."""
        if self._layers is None:
            unet = self.active.unet
            names = [n for n in unet.attn_processors if n.split(".")[-2] == "attn2"]
            expected = self.patches[0].adapter.layers
            if len(names) != expected:
                raise ValueError(f"this IP-Adapter is made for a U-Net with {expected} cross-attention layers; the "
                                 f"model has {len(names)} (an SD1.5 adapter on SDXL, or the reverse?)")
            order = {"input": 0, "middle": 1, "output": 2}

            def place(transformer: str) -> tuple[int, int]:
                (kind, number), _ = block_of(unet, f"{transformer}.transformer_blocks.0.attn2.processor")
                return order[kind], number

            transformers = sorted({n.split(".transformer_blocks")[0] for n in names}, key=place)
            index = {t: i for i, t in enumerate(transformers)}
            self._layers = {n: (n, 2 * i + 1, index[n.split(".transformer_blocks")[0]], len(transformers))
                            for i, n in enumerate(names)}
        return self._layers

    def acts(self, info: dict[str, Any]) -> bool:
        sigma = info.get("sigma")
        s = float(sigma.reshape(-1)[0]) if sigma is not None else 999999999.0
        return any(p.active_at(s) for p in self.patches)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, info: dict[str, Any]) -> torch.Tensor:
        out = attention(q, k, v, info["heads"])
        layer = self.layers()[info["name"]]
        sigma = info.get("sigma")
        s = float(sigma.reshape(-1)[0]) if sigma is not None else 999999999.0
        for patch in self.patches:
            if patch.active_at(s):
                extra = patch.contribution(q, info, layer)
                if extra is not None:
                    out = out + extra.to(out.dtype)
        return out


__all__ = ["COMBINE_METHODS", "EMBEDS_SCALING", "WEIGHT_TYPES", "IPAdapterModel", "IPAdapterPatch", "IPAttention",
           "build_ipadapter", "layer_weights", "project", "scaled_weight", "split_ipadapter"]
