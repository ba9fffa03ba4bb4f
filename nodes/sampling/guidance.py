"""From a U-Net and CONDITIONING to a denoiser `x0 = D(x, sigma)` with classifier-free guidance.

CONDITIONING is a list of `[tensor, options]` entries. Every entry active at the current noise level
(`start_percent`/`end_percent`) is evaluated; entries with an `area` or `mask` apply only there, and
all are blended by `strength`, weighted per pixel. Guidance then mixes the positive and negative
results: uncond + (cond - uncond) * cfg (the negative side is skipped at cfg = 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nodes.sd.conditioning import sdxl_time_ids
from nodes.sd.handles import ModelHandle


@dataclass
class _Entry:
    cond: torch.Tensor  # [1 or B, tokens, width]
    pooled: torch.Tensor | None
    strength: float
    area: tuple[int, int, int, int] | None  # (h, w, y, x) in latent pixels
    mask: torch.Tensor | None  # [B, 1, h, w] on the device
    sigma_hi: float
    sigma_lo: float
    size: dict[str, Any]
    negative: bool


def _entries(conditioning: Sequence[Any], model: ModelHandle, x: torch.Tensor, device: torch.device,
             dtype: torch.dtype, *, negative: bool = False) -> list[_Entry]:
    out: list[_Entry] = []
    ms = model.sampling
    _, _, h, w = x.shape
    for item in conditioning or ():
        cond, opts = item[0], dict(item[1]) if len(item) > 1 else {}
        pooled = opts.get("pooled_output")
        area = opts.get("area")
        if area is not None:
            if len(area) != 4 or isinstance(area[0], str):
                raise ValueError(f"unsupported conditioning area {area!r}")
            ah, aw, ay, ax = (int(v) for v in area)
            ay, ax = min(ay, h - 1), min(ax, w - 1)
            area = (max(1, min(ah, h - ay)), max(1, min(aw, w - ax)), ay, ax)
        mask = opts.get("mask")
        if mask is not None:
            m = mask.float()
            if m.ndim == 2:
                m = m[None]
            m = F.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)
            m = m * float(opts.get("mask_strength", 1.0))
            mask = m.to(device, torch.float32)
        start = float(opts.get("start_percent", 0.0))
        end = float(opts.get("end_percent", 1.0))
        out.append(_Entry(
            cond=cond.to(device, dtype), pooled=None if pooled is None else pooled.to(device, dtype),
            strength=float(opts.get("strength", 1.0)), area=area, mask=mask,
            sigma_hi=ms.percent_to_sigma(start), sigma_lo=ms.percent_to_sigma(end),
            size={k: opts[k] for k in ("width", "height", "crop_w", "crop_h", "target_width", "target_height",
                                        "aesthetic_score") if k in opts},
            negative=negative,
        ))
    return out


class Guider:
    """The CFG denoiser: call it with (x, sigma) in sampling space, get the x0 estimate."""

    def __init__(self, model: ModelHandle, positive: Sequence[Any], negative: Sequence[Any] | None, cfg: float,
                 *, x: torch.Tensor, device: torch.device, dtype: torch.dtype,
                 concat: torch.Tensor | None = None) -> None:
        self.model = model
        self.cfg = float(cfg)
        self.device = device
        self.dtype = dtype
        self.concat = concat  # inpainting models: extra input channels (mask + masked image latent)
        self.positive = _entries(positive, model, x, device, dtype)
        self.negative = _entries(negative, model, x, device, dtype, negative=True) if negative is not None else []
        if not self.positive:
            raise ValueError("the positive conditioning is empty")
        self.pixel_size = (x.shape[2] * 8, x.shape[3] * 8)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if math.isclose(self.cfg, 1.0) or not self.negative:
            return self._side(self.positive, x, sigma)
        pos, neg = self._active(self.positive, sigma), self._active(self.negative, sigma)
        if len(pos) == 1 and len(neg) == 1 and _plain(pos[0]) and _plain(neg[0]) \
                and pos[0].cond.shape[1:] == neg[0].cond.shape[1:]:
            cond, uncond = self._denoise(x, sigma, [pos[0], neg[0]]).chunk(2)  # one batched U-Net call
        else:
            cond, uncond = self._side(self.positive, x, sigma), self._side(self.negative, x, sigma)
        return uncond + (cond - uncond) * self.cfg

    @staticmethod
    def _active(entries: list[_Entry], sigma: torch.Tensor) -> list[_Entry]:
        s = float(sigma)
        return [e for e in entries if e.sigma_lo <= s <= e.sigma_hi + 1e-6] or entries[:1]

    # -- one side (positive or negative): blend its active entries ---------------------------------
    def _side(self, entries: list[_Entry], x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        active = self._active(entries, sigma)
        if len(active) == 1 and _plain(active[0]):
            return self._denoise(x, sigma, active)
        total = torch.zeros_like(x)
        weight = torch.full_like(x[:, :1], 1e-37)
        for e in active:
            if e.area is not None:
                ah, aw, ay, ax = e.area
                region = (slice(None), slice(None), slice(ay, ay + ah), slice(ax, ax + aw))
                pred = self._denoise(x[region], sigma, [e], region=region)
                mult = torch.full_like(pred[:, :1], e.strength)
                if e.mask is not None:
                    mult = mult * e.mask[region]
                total[region] += pred * mult
                weight[region] += mult
            else:
                pred = self._denoise(x, sigma, [e])
                mult = torch.full_like(pred[:, :1], e.strength)
                if e.mask is not None:
                    mult = mult * e.mask
                total += pred * mult
                weight += mult
        return total / weight

    # -- the model call --------------------------------------------------------------------------
    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor, entries: list[_Entry],
                 region: tuple | None = None) -> torch.Tensor:
        """x0 estimates of `x` under each entry, stacked on the batch axis (one U-Net call)."""
        ms = self.model.sampling
        batch = x.shape[0]
        n = len(entries)
        sig = sigma.reshape(1).to(x.device, torch.float32)
        c_in = 1.0 / (sig**2 + 1.0) ** 0.5
        model_in = x * c_in
        if self.concat is not None:
            extra = self.concat if region is None else self.concat[region]
            model_in = torch.cat([model_in, extra.to(model_in)], dim=1)
        if n > 1:
            model_in = model_in.repeat(n, 1, 1, 1)
        timestep = ms.timestep(sig).expand(batch * n).to(self.device)
        cond = torch.cat([e.cond if e.cond.shape[0] == batch else e.cond.expand(batch, -1, -1) for e in entries])
        kwargs: dict[str, Any] = {}
        if self.model.is_sdxl:
            added = [self._sdxl_added(e, batch) for e in entries]
            kwargs["added_cond_kwargs"] = {k: torch.cat([a[k] for a in added]) for k in added[0]}
        out = self.model.unet(model_in.to(self.dtype), timestep, encoder_hidden_states=cond, **kwargs).sample
        out = out.float()
        xs = x.repeat(n, 1, 1, 1) if n > 1 else x
        if ms.prediction == "v_prediction":
            return xs * (1.0 / (sig**2 + 1.0)) + out * (-sig / (sig**2 + 1.0) ** 0.5)
        return xs - out * sig

    def _sdxl_added(self, e: _Entry, batch: int) -> dict[str, torch.Tensor]:
        if e.pooled is None:
            raise ValueError("SDXL needs a pooled text embedding: encode the prompt with this model's CLIP")
        h, w = self.pixel_size
        ids = sdxl_time_ids(e.size, refiner=self.model.kind == "sdxl_refiner", width=w, height=h, negative=e.negative)
        time_ids = torch.tensor([ids], dtype=self.dtype, device=self.device).expand(batch, -1)
        pooled = e.pooled if e.pooled.shape[0] == batch else e.pooled.expand(batch, -1)
        return {"text_embeds": pooled, "time_ids": time_ids}


def _plain(entry: _Entry) -> bool:
    return entry.area is None and entry.mask is None
