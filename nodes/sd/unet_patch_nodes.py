"""MODEL -> MODEL nodes that change the U-Net's blocks or weights while it samples (FreeU, Deep Shrink,
attention multipliers), with ComfyUI's names, inputs and defaults.

Each returns a handle sharing the same U-Net with one more patch (nodes/models/model_patches.py); the
patch is installed only while a sampler runs. Settings that change nothing (FreeU with b = s = 1,
multipliers of 1) leave the model exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from graph import BooleanInput, ComboInput, FloatInput, InputSpec, IntInput, Node, NodeSchema, OutputSpec
from nodes.base.handles import ClipHandle, ModelHandle
from nodes.models.lora import WeightPatch
from nodes.models.model_patches import ActivePatches, Info, ModelPatch, input_block_modules
from nodes.models.patching import Multiply
from nodes.sd.latent import resize_nchw


def check_model(node: str, model: Any) -> ModelHandle:
    if not isinstance(model, ModelHandle):
        raise ValueError(f"{node}: input 'model' must be a MODEL, got {type(model).__name__}")
    return model


def fourier_filter(x: torch.Tensor, threshold: int, scale: float) -> torch.Tensor:
    """Scale the lowest spatial frequencies (a (2*threshold)^2 square around DC) of x by `scale`."""
    freq = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    h, w = freq.shape[-2:]
    mask = torch.ones(freq.shape[-2:], device=x.device)
    cy, cx = h // 2, w // 2
    mask[cy - threshold:cy + threshold, cx - threshold:cx + threshold] = scale
    freq = torch.fft.ifftshift(freq * mask, dim=(-2, -1))
    return torch.fft.ifftn(freq, dim=(-2, -1)).real.to(x.dtype)


def _filtered(skip: torch.Tensor, scale: float) -> torch.Tensor:
    try:
        return fourier_filter(skip, 1, scale)
    except (RuntimeError, TypeError):  # devices without torch.fft: filter on the CPU
        return fourier_filter(skip.cpu(), 1, scale).to(skip.device)


@dataclass(frozen=True)
class FreeUPatch(ModelPatch):
    """FreeU (Si et al. 2023): amplify backbone features, damp the skips' low frequencies.

    Applies where the up path's hidden state has 4x (b1, s1) or 2x (b2, s2) the U-Net's base channels:
    the first half of its channels is multiplied by b (v2: by 1 + (b - 1) * the normalised channel mean),
    the skip's lowest frequencies by s.
    """

    b1: float
    b2: float
    s1: float
    s2: float
    version: int = 1

    def install(self, active: ActivePatches) -> None:
        base = int(active.unet.config.block_out_channels[0])
        scales = {base * 4: (self.b1, self.s1), base * 2: (self.b2, self.s2)}
        active.output_block(lambda h, skip, info: self.join(h, skip, scales.get(int(h.shape[1]))))

    def join(self, h: torch.Tensor, skip: torch.Tensor, scale: tuple[float, float] | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        if scale is None:
            return h, skip
        b, s = scale
        half = h.shape[1] // 2
        if b != 1.0:
            if self.version == 2:
                mean = h.mean(1, keepdim=True)
                flat = mean.flatten(1)
                lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
                hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
                factor = (b - 1) * ((mean - lo) / (hi - lo)) + 1
            else:
                factor = b
            h = torch.cat([h[:, :half] * factor, h[:, half:]], dim=1)
        if s != 1.0:
            skip = _filtered(skip, s)
        return h, skip


def _freeu_inputs(b1: float, b2: float) -> list[InputSpec]:
    return [InputSpec(name="model", type="MODEL"),
            FloatInput(name="b1", default=b1, min=0.0, max=10.0, step=0.01),
            FloatInput(name="b2", default=b2, min=0.0, max=10.0, step=0.01),
            FloatInput(name="s1", default=0.9, min=0.0, max=10.0, step=0.01),
            FloatInput(name="s2", default=0.2, min=0.0, max=10.0, step=0.01)]


class FreeU(Node):
    SCHEMA = NodeSchema(node_type="FreeU", display_name="FreeU", category="model_patches/unet",
                        description="Amplifies the U-Net's backbone features and damps its skip connections' low "
                                    "frequencies while sampling (FreeU).",
                        inputs=_freeu_inputs(1.1, 1.2), outputs=[OutputSpec(type="MODEL", name="MODEL")])
    FREEU_VERSION = 1

    def execute(self, ctx, *, model: ModelHandle, b1: float, b2: float, s1: float, s2: float) -> tuple[ModelHandle]:
        model = check_model(self.SCHEMA.node_type, model)
        if b1 == b2 == s1 == s2 == 1.0:
            return (model,)
        return (model.with_patches(FreeUPatch(b1, b2, s1, s2, self.FREEU_VERSION)),)


class FreeU_V2(FreeU):  # noqa: N801  (ComfyUI's node name)
    SCHEMA = NodeSchema(node_type="FreeU_V2", display_name="FreeU_V2", category="model_patches/unet",
                        description="FreeU v2: the backbone scaling follows each position's mean activation.",
                        inputs=_freeu_inputs(1.3, 1.4), outputs=[OutputSpec(type="MODEL", name="MODEL")])
    FREEU_VERSION = 2


# ------------------------------------------------------------------------------- Deep Shrink


@dataclass(frozen=True)
class DownscalePatch(ModelPatch):
    """Kohya's Deep Shrink: run the deeper blocks on a smaller latent in the early (high-noise) steps."""

    block_number: int
    downscale_factor: float
    sigma_start: float
    sigma_end: float
    after_skip: bool
    downscale_method: str
    upscale_method: str

    def install(self, active: ActivePatches) -> None:
        active.input_block(self.block_number, self.shrink, after_skip=self.after_skip)
        active.output_block(self.grow)

    def shrink(self, h: torch.Tensor, info: Info) -> torch.Tensor:
        if info.get("sigma") is None:  # a U-Net call outside sampling: no noise level, no window
            return h
        sigma = float(info["sigma"].reshape(-1)[0])
        if not self.sigma_end <= sigma <= self.sigma_start:
            return h
        width = round(h.shape[-1] * (1.0 / self.downscale_factor))
        height = round(h.shape[-2] * (1.0 / self.downscale_factor))
        return resize_nchw(h, width, height, self.downscale_method)

    def grow(self, h: torch.Tensor, skip: torch.Tensor, info: Info) -> tuple[torch.Tensor, torch.Tensor]:
        if h.shape[2] != skip.shape[2]:
            h = resize_nchw(h, skip.shape[-1], skip.shape[-2], self.upscale_method)
        return h, skip


SCALE_METHODS = ("bicubic", "nearest-exact", "bilinear", "area", "bislerp")  # ComfyUI's order


class PatchModelAddDownscale(Node):
    SCHEMA = NodeSchema(
        node_type="PatchModelAddDownscale", display_name="PatchModelAddDownscale (Kohya Deep Shrink)",
        category="model_patches/unet",
        description="Downscales the U-Net's features after one input block during the early steps, so large "
                    "images keep a coherent composition (Kohya Deep Shrink).",
        inputs=[InputSpec(name="model", type="MODEL"),
                IntInput(name="block_number", default=3, min=1, max=32, step=1),
                FloatInput(name="downscale_factor", default=2.0, min=0.1, max=9.0, step=0.001),
                FloatInput(name="start_percent", default=0.0, min=0.0, max=1.0, step=0.001),
                FloatInput(name="end_percent", default=0.35, min=0.0, max=1.0, step=0.001),
                BooleanInput(name="downscale_after_skip", default=True),
                ComboInput(name="downscale_method", choices=list(SCALE_METHODS)),
                ComboInput(name="upscale_method", choices=list(SCALE_METHODS))],
        outputs=[OutputSpec(type="MODEL", name="MODEL")],
    )

    def execute(self, ctx, *, model: ModelHandle, block_number: int, downscale_factor: float, start_percent: float,
                end_percent: float, downscale_after_skip: bool, downscale_method: str, upscale_method: str
                ) -> tuple[ModelHandle]:
        model = check_model("PatchModelAddDownscale", model)
        for name, method in (("downscale_method", downscale_method), ("upscale_method", upscale_method)):
            if method not in SCALE_METHODS:
                raise ValueError(f"PatchModelAddDownscale: input '{name}' must be one of {list(SCALE_METHODS)}")
        try:
            input_block_modules(model.unet, block_number)
        except ValueError as exc:
            raise ValueError(f"PatchModelAddDownscale: input 'block_number': {exc}") from None
        if downscale_factor == 1.0 or start_percent >= end_percent:
            return (model,)
        patch = DownscalePatch(block_number, float(downscale_factor), model.sampling.percent_to_sigma(start_percent),
                               model.sampling.percent_to_sigma(end_percent), bool(downscale_after_skip),
                               downscale_method, upscale_method)
        return (model.with_patches(patch),)


# ------------------------------------------------------------------------------- attention multipliers


def _multipliers(first: InputSpec) -> list[InputSpec]:
    return [first, *(FloatInput(name=n, default=1.0, min=0.0, max=10.0, step=0.01) for n in ("q", "k", "v", "out"))]


def multiplier_deltas(module: torch.nn.Module, attn: str, factors: dict[str, float]) -> dict[str, Multiply]:
    """Multiply deltas for the weights and biases of every `<attn>.<proj>` of `module` whose factor is not 1."""
    out: dict[str, Multiply] = {}
    for name, _ in module.named_parameters():
        for proj, factor in factors.items():
            if factor != 1.0 and (name.endswith(f"{attn}.{proj}.weight") or name.endswith(f"{attn}.{proj}.bias")):
                out[name] = Multiply(float(factor))
    return out


class UNetSelfAttentionMultiply(Node):
    SCHEMA = NodeSchema(node_type="UNetSelfAttentionMultiply", display_name="UNetSelfAttentionMultiply",
                        category="_for_testing/attention_experiments", experimental=True,
                        description="Scales the U-Net's self-attention query, key, value and output projections.",
                        inputs=_multipliers(InputSpec(name="model", type="MODEL")),
                        outputs=[OutputSpec(type="MODEL", name="MODEL")])
    ATTN = "attn1"

    def execute(self, ctx, *, model: ModelHandle, q: float, k: float, v: float, out: float) -> tuple[ModelHandle]:
        model = check_model(self.SCHEMA.node_type, model)
        factors = {"to_q": q, "to_k": k, "to_v": v, "to_out.0": out}
        deltas = multiplier_deltas(model.unet, self.ATTN, factors)
        if not deltas:
            return (model,)
        name = f"{self.SCHEMA.node_type}(q={q}, k={k}, v={v}, out={out})"
        return (model.with_patches(WeightPatch(name=name, strength=1.0, component="unet", deltas=deltas)),)


class UNetCrossAttentionMultiply(UNetSelfAttentionMultiply):
    SCHEMA = NodeSchema(node_type="UNetCrossAttentionMultiply", display_name="UNetCrossAttentionMultiply",
                        category="_for_testing/attention_experiments", experimental=True,
                        description="Scales the U-Net's cross-attention query, key, value and output projections.",
                        inputs=_multipliers(InputSpec(name="model", type="MODEL")),
                        outputs=[OutputSpec(type="MODEL", name="MODEL")])
    ATTN = "attn2"


class CLIPAttentionMultiply(Node):
    SCHEMA = NodeSchema(node_type="CLIPAttentionMultiply", display_name="CLIPAttentionMultiply",
                        category="_for_testing/attention_experiments", experimental=True,
                        description="Scales the text encoders' self-attention projections.",
                        inputs=_multipliers(InputSpec(name="clip", type="CLIP")),
                        outputs=[OutputSpec(type="CLIP", name="CLIP")])

    def execute(self, ctx, *, clip: ClipHandle, q: float, k: float, v: float, out: float) -> tuple[ClipHandle]:
        if not isinstance(clip, ClipHandle):
            raise ValueError(f"CLIPAttentionMultiply: input 'clip' must be a CLIP, got {type(clip).__name__}")
        factors = {"q_proj": q, "k_proj": k, "v_proj": v, "out_proj": out}
        name = f"CLIPAttentionMultiply(q={q}, k={k}, v={v}, out={out})"
        patches = []
        for spec, encoder in zip(clip.specs, clip.encoders, strict=True):
            deltas = multiplier_deltas(encoder, "self_attn", factors)
            if deltas:
                patches.append(WeightPatch(name=name, strength=1.0, component=spec.name, deltas=deltas))
        return (clip.with_patches(*patches) if patches else clip,)


NODES = [FreeU, FreeU_V2, PatchModelAddDownscale, UNetSelfAttentionMultiply, UNetCrossAttentionMultiply,
         CLIPAttentionMultiply]
