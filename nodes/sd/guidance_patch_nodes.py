"""MODEL -> MODEL nodes that change how guidance combines the U-Net's predictions, and PerpNegGuider.

RescaleCFG and PerpNeg replace the CFG formula; PerturbedAttentionGuidance and SelfAttentionGuidance add
a term after it, computed from one more U-Net call with the middle block's self-attention perturbed
(PAG) or with the blurred unconditional estimate (SAG). Names, inputs and defaults are ComfyUI's. A
scale of 0 (or a RescaleCFG multiplier of 0) returns the model unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from graph import FloatInput, InputSpec, Node, NodeSchema, OutputSpec
from nodes.base.handles import ModelHandle
from nodes.models.model_patches import ActivePatches, ModelPatch, attention_with_probs
from nodes.sampling.guidance import Guider
from nodes.sampling.ksampler import GuiderSpec

from .unet_patch_nodes import check_model

_MODEL_OUT = [OutputSpec(type="MODEL", name="MODEL")]


def _sigma4(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.reshape(-1, 1, 1, 1)


# ------------------------------------------------------------------------------- RescaleCFG


@dataclass(frozen=True)
class RescaleCFGPatch(ModelPatch):
    """Lin et al. 2023 (section 3.4): rescale the guided v-prediction to the conditional one's std."""

    multiplier: float

    def install(self, active: ActivePatches) -> None:
        active.cfg_function(self.rescale)

    def rescale(self, args: dict[str, Any]) -> torch.Tensor:
        sigma, x_orig = _sigma4(args["sigma"]), args["input"]
        x = x_orig / (sigma * sigma + 1.0)
        # "cond"/"uncond" are x minus the x0 estimates; in v-space: v = (x_scaled - x0) * sqrt(s^2 + 1) / s
        cond = (x - (x_orig - args["cond"])) * (sigma**2 + 1.0) ** 0.5 / sigma
        uncond = (x - (x_orig - args["uncond"])) * (sigma**2 + 1.0) ** 0.5 / sigma
        x_cfg = uncond + args["cond_scale"] * (cond - uncond)
        ro_pos = torch.std(cond, dim=(1, 2, 3), keepdim=True)
        ro_cfg = torch.std(x_cfg, dim=(1, 2, 3), keepdim=True)
        x_final = self.multiplier * (x_cfg * (ro_pos / ro_cfg)) + (1.0 - self.multiplier) * x_cfg
        return x_orig - (x - x_final * sigma / (sigma * sigma + 1.0) ** 0.5)


class RescaleCFG(Node):
    SCHEMA = NodeSchema(node_type="RescaleCFG", display_name="RescaleCFG", category="advanced/model",
                        description="Rescales the guided prediction towards the conditional one's spread, which "
                                    "avoids over-exposure at high CFG (most useful with v-prediction models).",
                        inputs=[InputSpec(name="model", type="MODEL"),
                                FloatInput(name="multiplier", default=0.7, min=0.0, max=1.0, step=0.01)],
                        outputs=_MODEL_OUT)

    def execute(self, ctx, *, model: ModelHandle, multiplier: float) -> tuple[ModelHandle]:
        model = check_model("RescaleCFG", model)
        return (model if multiplier == 0 else model.with_patches(RescaleCFGPatch(float(multiplier))),)


# ------------------------------------------------------------------------------- PAG


@dataclass(frozen=True)
class PerturbedAttentionPatch(ModelPatch):
    """PAG (Ahn et al. 2024): guide away from a prediction whose middle-block self-attention is the identity."""

    scale: float

    def install(self, active: ActivePatches) -> None:
        flag = f"pag-{id(self):x}"
        active.attention("attn1", block=("middle", 0), replace=lambda q, k, v, info: v,
                         when=lambda info: flag in active.flags)

        def post(args: dict[str, Any]) -> torch.Tensor:
            with active.flag(flag):
                perturbed = args["guider"].predict("positive", args["input"], args["sigma"])
            return args["denoised"] + (args["cond_denoised"] - perturbed) * self.scale

        active.post_cfg(post, disable_cfg1_optimization=True)


class PerturbedAttentionGuidance(Node):
    SCHEMA = NodeSchema(node_type="PerturbedAttentionGuidance", display_name="PerturbedAttentionGuidance",
                        category="model_patches/unet",
                        description="Perturbed-Attention Guidance: one more U-Net call per step with the middle "
                                    "block's self-attention replaced by its values; sharpens structure.",
                        inputs=[InputSpec(name="model", type="MODEL"),
                                FloatInput(name="scale", default=3.0, min=0.0, max=100.0, step=0.1, round=0.01)],
                        outputs=_MODEL_OUT)

    def execute(self, ctx, *, model: ModelHandle, scale: float) -> tuple[ModelHandle]:
        model = check_model("PerturbedAttentionGuidance", model)
        return (model if scale == 0 else model.with_patches(PerturbedAttentionPatch(float(scale))),)


# ------------------------------------------------------------------------------- SAG


def gaussian_blur(img: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur per channel with reflected borders (sigma 0: unchanged)."""
    if sigma <= 0:
        return img
    half = (kernel_size - 1) * 0.5
    pdf = torch.exp(-0.5 * (torch.linspace(-half, half, steps=kernel_size) / sigma).pow(2))
    kernel1d = (pdf / pdf.sum()).to(device=img.device, dtype=img.dtype)
    kernel = torch.mm(kernel1d[:, None], kernel1d[None, :]).expand(img.shape[-3], 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    return F.conv2d(F.pad(img, [pad, pad, pad, pad], mode="reflect"), kernel, groups=img.shape[-3])


def blur_where_attended(x0: torch.Tensor, attn: torch.Tensor, sigma: float, threshold: float = 1.0) -> torch.Tensor:
    """SAG's degraded image: x0 blurred where the middle block's self-attention concentrates."""
    _, q_tokens, k_tokens = attn.shape
    b, _, lh, lw = x0.shape
    received = attn.reshape(b, -1, q_tokens, k_tokens).mean(1).sum(1)  # attention each position receives
    ratio = 2 ** (math.ceil(math.sqrt(lh * lw / q_tokens)) - 1).bit_length()
    mask = (received > threshold).reshape(b, 1, math.ceil(lh / ratio), math.ceil(lw / ratio)).to(attn.dtype)
    mask = F.interpolate(mask, (lh, lw)).to(x0.dtype)
    return gaussian_blur(x0, 9, sigma) * mask + x0 * (1 - mask)


@dataclass(frozen=True)
class SelfAttentionGuidancePatch(ModelPatch):
    """SAG (Hong et al. 2023): guide away from the estimate of a blurred version of the unconditional x0."""

    scale: float
    blur_sigma: float

    def install(self, active: ActivePatches) -> None:
        state: dict[str, torch.Tensor] = {}

        def record(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, info: dict[str, Any]) -> torch.Tensor | None:
            sides = info["cond_or_uncond"]
            if q.shape[0] != info.get("original_shape", q.shape)[0]:  # tokens regrouped (HyperTile): no map
                return None
            out, probs = attention_with_probs(q, k, v, info["heads"])
            n = info["heads"] * (q.shape[0] // len(sides))
            i = sides.index(1)
            state["attn"] = probs[n * i:n * (i + 1)]
            return out

        active.attention("attn1", block=("middle", 0), transformer=0, replace=record,
                         when=lambda info: 1 in (info.get("cond_or_uncond") or ()))  # calls with a negative side

        def post(args: dict[str, Any]) -> torch.Tensor:
            result, uncond, x = args["denoised"], args["uncond_denoised"], args["input"]
            attn = state.pop("attn", None)
            if attn is None or min(result.shape[2:]) <= 4:  # no unconditional pass, or too small to pad
                return result
            degraded = blur_where_attended(uncond, attn, self.blur_sigma)
            sag = args["guider"].predict("negative", degraded + x - uncond, args["sigma"])
            return result + (degraded - sag) * self.scale

        active.post_cfg(post, disable_cfg1_optimization=True)


class SelfAttentionGuidance(Node):
    SCHEMA = NodeSchema(node_type="SelfAttentionGuidance", display_name="Self-Attention Guidance",
                        category="_for_testing",
                        description="Self-Attention Guidance: blurs the unconditional estimate where the model "
                                    "attends and guides away from the result (one more U-Net call per step).",
                        inputs=[InputSpec(name="model", type="MODEL"),
                                FloatInput(name="scale", default=0.5, min=-2.0, max=5.0, step=0.01),
                                FloatInput(name="blur_sigma", default=2.0, min=0.0, max=10.0, step=0.1)],
                        outputs=_MODEL_OUT)

    def execute(self, ctx, *, model: ModelHandle, scale: float, blur_sigma: float) -> tuple[ModelHandle]:
        model = check_model("SelfAttentionGuidance", model)
        if scale == 0:
            return (model,)
        return (model.with_patches(SelfAttentionGuidancePatch(float(scale), float(blur_sigma))),)


# ------------------------------------------------------------------------------- Perp-Neg


def perp_neg(pos: torch.Tensor, neg: torch.Tensor, nocond: torch.Tensor, neg_scale: float,
             cond_scale: float) -> torch.Tensor:
    """Perp-Neg (Armandpour et al. 2023): subtract only the part of the negative orthogonal to the positive."""
    pos, neg = pos - nocond, neg - nocond
    perp = neg - (torch.mul(neg, pos).sum() / torch.norm(pos) ** 2) * pos
    return nocond + cond_scale * (pos - perp * neg_scale)


@dataclass(frozen=True, eq=False)
class PerpNegPatch(ModelPatch):
    empty: Sequence[Any]
    neg_scale: float

    def install(self, active: ActivePatches) -> None:
        def cfg(args: dict[str, Any]) -> torch.Tensor:
            x = args["input"]
            nocond = args["guider"].predict(self.empty, x, args["sigma"])
            return x - perp_neg(args["cond_denoised"], args["uncond_denoised"], nocond, self.neg_scale,
                                args["cond_scale"])

        active.cfg_function(cfg)


def _check_conditioning(node: str, name: str, value: Any) -> list:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{node}: input '{name}' must be a non-empty CONDITIONING (encode an empty prompt)")
    return list(value)


class PerpNeg(Node):
    SCHEMA = NodeSchema(node_type="PerpNeg", display_name="Perp-Neg (DEPRECATED by PerpNegGuider)",
                        category="_for_testing", experimental=True, deprecated=True,
                        description="Perp-Neg guidance as a model patch; PerpNegGuider does the same as a GUIDER.",
                        inputs=[InputSpec(name="model", type="MODEL"),
                                InputSpec(name="empty_conditioning", type="CONDITIONING"),
                                FloatInput(name="neg_scale", default=1.0, min=0.0, max=100.0, step=0.01)],
                        outputs=_MODEL_OUT)

    def execute(self, ctx, *, model: ModelHandle, empty_conditioning: list, neg_scale: float) -> tuple[ModelHandle]:
        model = check_model("PerpNeg", model)
        empty = _check_conditioning("PerpNeg", "empty_conditioning", empty_conditioning)
        return (model.with_patches(PerpNegPatch(empty, float(neg_scale))),)


class PerpNegCFG(Guider):
    """The Perp-Neg denoiser: positive, negative and empty-prompt estimates in one guidance formula."""

    def __init__(self, *args: Any, empty: Sequence[Any], neg_scale: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.empty, self.neg_scale = empty, neg_scale

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        skip_neg = not self.patches.disable_cfg1_optimization and math.isclose(self.neg_scale, 0.0)
        pos = self.predict("positive", x, sigma)
        neg = torch.zeros_like(pos) if skip_neg else self.predict("negative", x, sigma)
        if skip_neg and math.isclose(self.cfg, 1.0):
            empty = torch.zeros_like(pos)
        else:
            empty = self.predict(self.empty, x, sigma)
        self.last_uncond = neg
        result = perp_neg(pos, neg, empty, self.neg_scale, self.cfg)
        return self.patches.after_cfg(self, x, sigma, result, pos, neg, empty_cond_denoised=empty)


@dataclass(frozen=True, kw_only=True, eq=False)
class PerpNegGuiderSpec(GuiderSpec):
    empty: Sequence[Any]
    neg_scale: float

    def build(self, *, x: torch.Tensor, device: torch.device, dtype: torch.dtype, concat: torch.Tensor | None,
              patches: ActivePatches | None = None) -> Guider:
        return PerpNegCFG(self.model, self.positive, self.negative, self.cfg, x=x, device=device, dtype=dtype,
                          concat=concat, patches=patches, empty=self.empty, neg_scale=self.neg_scale)


class PerpNegGuider(Node):
    SCHEMA = NodeSchema(node_type="PerpNegGuider", display_name="PerpNegGuider", category="_for_testing",
                        experimental=True,
                        description="A GUIDER with Perp-Neg: the negative prompt only removes what is not "
                                    "already part of the positive one.",
                        inputs=[InputSpec(name="model", type="MODEL"), InputSpec(name="positive", type="CONDITIONING"),
                                InputSpec(name="negative", type="CONDITIONING"),
                                InputSpec(name="empty_conditioning", type="CONDITIONING"),
                                FloatInput(name="cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01),
                                FloatInput(name="neg_scale", default=1.0, min=0.0, max=100.0, step=0.01)],
                        outputs=[OutputSpec(type="GUIDER", name="GUIDER")])

    def execute(self, ctx, *, model: ModelHandle, positive: list, negative: list, empty_conditioning: list,
                cfg: float, neg_scale: float) -> tuple[GuiderSpec]:
        model = check_model("PerpNegGuider", model)
        empty = _check_conditioning("PerpNegGuider", "empty_conditioning", empty_conditioning)
        return (PerpNegGuiderSpec(model=model, positive=positive, negative=negative, cfg=float(cfg), empty=empty,
                                  neg_scale=float(neg_scale)),)


NODES = [RescaleCFG, PerturbedAttentionGuidance, SelfAttentionGuidance, PerpNeg, PerpNegGuider]
