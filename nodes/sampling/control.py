"""ControlNets and T2I-Adapters while sampling: the `"control"` value of a conditioning entry.

`AppliedControl` is what ControlNetApply(Advanced) puts into a conditioning's options (ComfyUI's
`"control"` key): a CONTROL_NET, its hint image, strength, the [start, end] window and the control
it was applied on top of (`previous`), so several chain and their residuals add. It implements the
U-Net addition hook of `unet_additions`: once per sampling run `prepare` resolves the window to noise
levels and builds a control-LoRA net; at each U-Net call the hint is resized to the latent size × 8
(center crop), the net runs on the same scaled input, timestep, text context (and SDXL embeddings) as
the U-Net, and its residuals, times strength, are handed to the U-Net. Outside [start, end] a net
is not run at all. A T2I-Adapter runs once per sampling run (per latent size); its features are reused
by every step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nodes.base.resize import resize_nchw
from nodes.models.controlnet import ControlNetHandle, build_controlnet, control_lora_weights
from nodes.models.controlnet_layouts import ldm_to_diffusers

from .unet_additions import UNetCall, merge_kwargs

HINT_RESIZE = "nearest-exact"


def broadcast_batch(t: torch.Tensor, batch: int, batched: int) -> torch.Tensor:
    """Hints (or features) for a batch of `batched` stacked conditionings: image k of the latent batch gets
    hint k (cycling when fewer are given), and a single hint goes to everything."""
    if t.shape[0] == 1:
        return t
    per = batch // batched
    part = t[:per]
    if part.shape[0] < per:
        part = part.repeat(math.ceil(per / part.shape[0]), *([1] * (t.dim() - 1)))[:per]
    if per == batch:
        return part
    return part.repeat(batched, *([1] * (t.dim() - 1)))


@dataclass(frozen=True, kw_only=True, eq=False)
class AppliedControl:
    """One ControlNet/T2I-Adapter applied to a conditioning (and the ones applied before it)."""

    net: ControlNetHandle
    hint: torch.Tensor  # [B, C, H, W] in 0..1
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    previous: AppliedControl | None = None

    def chain(self) -> list[AppliedControl]:
        """This control and everything it was applied on top of, oldest first."""
        out: list[AppliedControl] = []
        link: AppliedControl | None = self
        while link is not None:
            out.append(link)
            link = link.previous
        return out[::-1]

    def modules(self) -> list[torch.nn.Module]:
        return [c.net.model for c in self.chain() if c.net.model is not None]

    def prepare(self, model: Any, *, device: torch.device, dtype: torch.dtype) -> PreparedControl:
        return PreparedControl([_PreparedLink(c, model, device, dtype) for c in self.chain()])


class PreparedControl:
    """A control chain for one sampling run: the sum of what each active link contributes."""

    def __init__(self, links: list[_PreparedLink]) -> None:
        self.links = links

    def unet_kwargs(self, call: UNetCall) -> dict[str, Any]:
        return merge_kwargs(link.unet_kwargs(call) for link in self.links)


class _PreparedLink:
    def __init__(self, applied: AppliedControl, model: Any, device: torch.device, dtype: torch.dtype) -> None:
        self.applied = applied
        self.net = applied.net
        self.sigma_hi = model.sampling.percent_to_sigma(applied.start_percent)
        self.sigma_lo = model.sampling.percent_to_sigma(applied.end_percent)
        self.device = device
        self.module = self.net.model
        if self.net.kind == "control_lora":  # built from the sampling U-Net as it is now (LoRAs included)
            weights = ldm_to_diffusers(control_lora_weights(self.net.lora_weights, model.unet), self.net.source)
            self.module = build_controlnet(weights, path=self.net.source, dtype=dtype, device=device)
        self._hints: dict[tuple[int, int], torch.Tensor] = {}
        self._features: dict[tuple[int, int], list[torch.Tensor]] = {}

    def active(self, sigma: torch.Tensor) -> bool:
        s = float(sigma)
        return self.sigma_lo <= s <= self.sigma_hi + 1e-6

    def _hint(self, h: int, w: int, dtype: torch.dtype, multiple: int = 1) -> torch.Tensor:
        """The hint resized to the latent size × 8 (rounded up to `multiple`), center-cropped, on the device."""
        if (h, w) not in self._hints:
            width = math.ceil(w * 8 / multiple) * multiple
            height = math.ceil(h * 8 / multiple) * multiple
            hint = resize_nchw(self.applied.hint.float(), width, height, HINT_RESIZE, "center")
            self._hints[(h, w)] = hint.to(self.device, dtype)
        return self._hints[(h, w)]

    def unet_kwargs(self, call: UNetCall) -> dict[str, Any]:
        if not self.active(call.sigma):
            return {}
        if self.net.kind == "t2i_adapter":
            return self._adapter(call)
        return self._controlnet(call)

    def _adapter(self, call: UNetCall) -> dict[str, Any]:
        adapter = self.module
        _, _, h, w = call.x.shape
        if (h, w) not in self._features:  # once per run and latent size, not per step
            dtype = next(adapter.parameters()).dtype
            hint = self._hint(h, w, dtype, multiple=adapter.config.downscale_factor)
            if adapter.config.in_channels == 1 and hint.shape[1] > 1:
                hint = hint.mean(dim=1, keepdim=True)
            with torch.no_grad():
                self._features[(h, w)] = list(adapter(hint))
        batch = call.x.shape[0]
        features = [broadcast_batch(f, batch, call.batched).to(call.x.dtype) * self.applied.strength
                    for f in self._features[(h, w)]]
        return {"down_intrablock_additional_residuals": features}

    def _controlnet(self, call: UNetCall) -> dict[str, Any]:
        net = self.module
        dtype = next(net.parameters()).dtype
        _, _, h, w = call.x.shape
        hint = broadcast_batch(self._hint(h, w, dtype), call.x.shape[0], call.batched)
        if hint.shape[0] == 1 and call.x.shape[0] > 1:
            hint = hint.expand(call.x.shape[0], -1, -1, -1)
        added = None if call.added_cond_kwargs is None else {k: v.to(dtype) for k, v in call.added_cond_kwargs.items()}
        x, context = call.x.to(dtype), call.context.to(dtype)
        with torch.no_grad():
            if self.net.is_union:
                down, mid = _union_forward(net, x, call.timestep, context, hint, added, self.net.union_type)
            else:
                down, mid = net(x, call.timestep, encoder_hidden_states=context, controlnet_cond=hint,
                                added_cond_kwargs=added, return_dict=False)
        if self.net.global_pool:
            down = [d.mean(dim=(2, 3), keepdim=True) for d in down]
            mid = mid.mean(dim=(2, 3), keepdim=True)
        scale = self.applied.strength
        return {"down_block_additional_residuals": [d.to(call.x.dtype) * scale for d in down],
                "mid_block_additional_residual": mid.to(call.x.dtype) * scale}


def apply_to_uncond(positive: Sequence[Any], negative: Sequence[Any]) -> list[Any]:
    """The negative conditioning with the controls ControlNetApply (the old node, which sees only the
    positive side) marks `control_apply_to_uncond`, as ComfyUI does: when no full-image negative entry
    has a control of its own, the k-th such control goes to the k-th full-image negative entry (cycling)."""
    controls = [opts["control"] for _, opts in (item[:2] for item in positive)
                if opts.get("control_apply_to_uncond") and "area" not in opts and opts.get("control") is not None]
    whole = [i for i, item in enumerate(negative) if "area" not in item[1]]
    out = list(negative)
    if not controls or not whole or any(negative[i][1].get("control") is not None for i in whole):
        return out
    for k, control in enumerate(controls):
        i = whole[k % len(whole)]
        out[i] = [negative[i][0], {**negative[i][1], "control": control}]
    return out


def _union_forward(net: Any, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, hint: torch.Tensor,
                   added: dict[str, torch.Tensor] | None, union_type: int | None) -> tuple[list, torch.Tensor]:
    """ControlNet-Union residuals: diffusers' own forward for a chosen type; for "auto" (no type) the
    hint enters the way a plain ControlNet's does, with an all-zero type embedding (as ComfyUI runs it)."""
    batch = x.shape[0]
    types = torch.zeros(batch, net.config.num_control_type, device=x.device, dtype=x.dtype)
    if union_type is not None:
        if union_type >= net.config.num_control_type:
            raise ValueError(f"union control type {union_type} is out of range for this model's "
                             f"{net.config.num_control_type} types; a ProMax model supports more")
        types[:, union_type] = 1
        return net(x, timestep, encoder_hidden_states=context, controlnet_cond=[hint], control_type=types,
                   control_type_idx=[union_type], added_cond_kwargs=added, return_dict=False)
    emb = net.time_embedding(net.time_proj(timestep.reshape(-1).expand(batch)).to(x.dtype))
    if net.config.addition_embed_type == "text_time" and added is not None:
        time_embeds = net.add_time_proj(added["time_ids"].flatten()).reshape(batch, -1)
        emb = emb + net.add_embedding(torch.cat([added["text_embeds"], time_embeds], dim=-1).to(emb.dtype))
    control = net.control_type_proj(types.flatten()).reshape(batch, -1).to(emb.dtype)
    emb = emb + net.control_add_embedding(control)
    sample = net.conv_in(x) + net.controlnet_cond_embedding(hint)
    residuals = [sample]
    for block in net.down_blocks:
        if getattr(block, "has_cross_attention", False):
            sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=context)
        else:
            sample, res = block(hidden_states=sample, temb=emb)
        residuals.extend(res)
    sample = net.mid_block(sample, emb, encoder_hidden_states=context)
    down = [block(r) for r, block in zip(residuals, net.controlnet_down_blocks, strict=True)]
    return down, net.controlnet_mid_block(sample)


__all__ = ["AppliedControl", "PreparedControl", "apply_to_uncond", "broadcast_batch"]
