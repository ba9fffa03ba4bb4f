"""From a U-Net and CONDITIONING to a denoiser `x0 = D(x, sigma)` with classifier-free guidance.

CONDITIONING is a list of `[tensor, options]` entries. Every entry active at the current noise level
(`start_percent`/`end_percent`) is evaluated; entries with an `area` or `mask` apply only there, and
all are blended by `strength`, weighted per pixel. Entries may carry per-step U-Net additions
(ControlNets, T2I-Adapters: see `unet_additions`), prepared once per run and asked before each U-Net
call for extra U-Net arguments. Guidance then mixes the positive and negative
results: uncond + (cond - uncond) * cfg (the negative side is skipped at cfg = 1). The last
unconditional estimate stays readable as `last_uncond` for CFG++ samplers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nodes.base.handles import ModelHandle
from nodes.models.cuda_graphs import UNetGraphs, fingerprint, graphs_of
from nodes.models.model_patches import NO_PATCHES, ActivePatches
from nodes.models.speed import compiled
from nodes.sampling.conditioning import sdxl_time_ids

from .control import apply_to_uncond
from .unet_additions import UNetCall, additions_of, merge_kwargs


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
    additions: tuple[Any, ...] = ()  # per-step U-Net additions (the "control" option)


def _entries(conditioning: Sequence[Any], model: ModelHandle, x: torch.Tensor, device: torch.device,
             dtype: torch.dtype, *, negative: bool = False) -> list[_Entry]:
    out: list[_Entry] = []
    ms = model.sampling
    _, _, h, w = x.shape
    for item in conditioning or ():
        cond, opts = item[0], dict(item[1]) if len(item) > 1 else {}
        pooled = opts.get("pooled_output")
        area = _area(opts.get("area"), h, w)
        mask = opts.get("mask")
        if mask is not None:
            m = mask.float()
            if m.ndim == 2:
                m = m[None]
            m = F.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)
            if opts.get("set_area_to_bounds"):  # "mask bounds": evaluate only the mask's bounding box
                area = _bounds(m, h, w)
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
            negative=negative, additions=additions_of(opts),
        ))
    return out


def _area(area: Any, h: int, w: int) -> tuple[int, int, int, int] | None:
    """(height, width, y, x) in latent pixels, clipped to the latent; from latent units or percentages."""
    if area is None:
        return None
    if len(area) == 5 and area[0] == "percentage":
        _, fh, fw, fy, fx = area
        area = (max(1, round(fh * h)), max(1, round(fw * w)), round(fy * h), round(fx * w))
    elif len(area) != 4 or isinstance(area[0], str):
        raise ValueError(f"unsupported conditioning area {area!r}; expected (height, width, y, x) in latent "
                         "pixels or ('percentage', height, width, y, x)")
    ah, aw, ay, ax = (int(v) for v in area)
    ay, ax = min(ay, h - 1), min(ax, w - 1)
    return (max(1, min(ah, h - ay)), max(1, min(aw, w - ax)), ay, ax)


def _bounds(mask: torch.Tensor, h: int, w: int) -> tuple[int, int, int, int]:
    """The bounding box (height, width, y, x) of a mask's nonzero pixels; the whole latent if empty."""
    nonzero = (mask > 0).any(dim=0).any(dim=0)
    rows, cols = nonzero.any(dim=1).nonzero(), nonzero.any(dim=0).nonzero()
    if len(rows) == 0:
        return (h, w, 0, 0)
    y0, y1, x0, x1 = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
    return (y1 - y0 + 1, x1 - x0 + 1, y0, x0)


FEATHER = 8  # latent pixels over which an area's weight ramps up at edges inside the image


def _feather(mult: torch.Tensor, area: tuple[int, int, int, int], h: int, w: int) -> torch.Tensor:
    """Soften an area's inner edges: row/column t from such an edge is weighted (t + 1) / FEATHER."""
    ah, aw, ay, ax = area
    ramp = [(t + 1) / FEATHER for t in range(FEATHER)]
    mult = mult.clone()
    for t, r in enumerate(ramp):
        if ay != 0 and t < ah:
            mult[:, :, t] *= r
        if ay + ah < h and t < ah:
            mult[:, :, ah - 1 - t] *= r
        if ax != 0 and t < aw:
            mult[:, :, :, t] *= r
        if ax + aw < w and t < aw:
            mult[:, :, :, aw - 1 - t] *= r
    return mult


class Guider:
    """The CFG denoiser: call it with (x, sigma) in sampling space, get the x0 estimate."""

    _graph_fingerprint: tuple | None | bool = False  # see _fingerprint (False: not read yet)

    def __init__(self, model: ModelHandle, positive: Sequence[Any], negative: Sequence[Any] | None, cfg: float,
                 *, x: torch.Tensor, device: torch.device, dtype: torch.dtype,
                 concat: torch.Tensor | None = None, patches: ActivePatches | None = None) -> None:
        self.model = model
        self.patches = NO_PATCHES if patches is None else patches  # the model's patches while in use
        self._extra: dict[int, tuple[Any, list[_Entry]]] = {}  # other CONDITIONINGs that patches evaluate
        self.cfg = float(cfg)
        self.device = device
        self.dtype = dtype
        self.concat = concat  # inpainting models: extra input channels (mask + masked image latent)
        self.positive = _entries(positive, model, x, device, dtype)
        if negative is not None:
            negative = apply_to_uncond(positive, negative)
        self.negative = _entries(negative, model, x, device, dtype, negative=True) if negative is not None else []
        self.prepared = {id(a): a.prepare(model, device=device, dtype=dtype)
                         for e in self.positive + self.negative for a in e.additions}
        if not self.positive:
            raise ValueError("the positive conditioning is empty")
        self.pixel_size = (x.shape[2] * 8, x.shape[3] * 8)
        # The unconditional (negative) x0 estimate of the last call, for samplers that need it (CFG++).
        self.last_uncond: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if (math.isclose(self.cfg, 1.0) and not self.patches.disable_cfg1_optimization) or not self.negative:
            cond = self._side(self.positive, x, sigma)
            self.last_uncond = cond  # no separate unconditional prediction: guidance is the identity
            return self.patches.combine(self, x, sigma, cond, None)
        pos, neg = self._active(self.positive, sigma), self._active(self.negative, sigma)
        if len(pos) == 1 and len(neg) == 1 and _plain(pos[0]) and _plain(neg[0]) \
                and pos[0].cond.shape[1:] == neg[0].cond.shape[1:] and pos[0].additions == neg[0].additions:
            cond, uncond = self._denoise(x, sigma, [pos[0], neg[0]]).chunk(2)  # one batched U-Net call
        else:
            cond, uncond = self._side(self.positive, x, sigma), self._side(self.negative, x, sigma)
        self.last_uncond = uncond
        return self.patches.combine(self, x, sigma, cond, uncond)

    def predict(self, conditioning: str | Sequence[Any], x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The x0 estimate under "positive", "negative" or another CONDITIONING (for guidance patches)."""
        if conditioning == "positive" or (conditioning == "negative" and not self.negative):
            return self._side(self.positive, x, sigma)
        if conditioning == "negative":
            return self._side(self.negative, x, sigma)
        if id(conditioning) not in self._extra:  # the CONDITIONING is kept alongside, so its id stays unique
            entries = _entries(conditioning, self.model, x, self.device, self.dtype, negative=True)
            self._extra[id(conditioning)] = (conditioning, entries)
        return self._side(self._extra[id(conditioning)][1], x, sigma)

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
                else:
                    mult = _feather(mult, e.area, x.shape[2], x.shape[3])
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
        scaled = ms.calculate_input(sig, x)
        model_in = scaled
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
        if entries[0].additions:  # batched entries share their additions (see __call__)
            call = UNetCall(x=(scaled.repeat(n, 1, 1, 1) if n > 1 else scaled).to(self.dtype), sigma=sig,
                            timestep=timestep, context=cond, added_cond_kwargs=kwargs.get("added_cond_kwargs"),
                            batched=n)
            kwargs.update(merge_kwargs(self.prepared[id(a)].unet_kwargs(call) for a in entries[0].additions))
        base = self._unet()
        unet = self.patches.unet_caller(base, sigma=sig, cond_or_uncond=[int(e.negative) for e in entries],
                                        original_shape=tuple(model_in.shape), model=self.model)
        graphs = self._graphs() if unet is base and not entries[0].additions else None
        if graphs is not None and self._fingerprint() is not None:  # replayed from a CUDA graph after step 1
            out = graphs.run(base, self._fingerprint(), model_in.to(self.dtype), timestep, cond,
                             kwargs.get("added_cond_kwargs"))
        else:
            with self._autocast():
                out = unet(model_in.to(self.dtype), timestep, encoder_hidden_states=cond, **kwargs).sample
        out = out.float()
        xs = x.repeat(n, 1, 1, 1) if n > 1 else x
        return ms.calculate_denoised(sig, out, xs)

    def _graphs(self) -> UNetGraphs | None:
        speed = getattr(self.model.manager, "speed", None)
        if self.device.type != "cuda" or speed is None or not speed.cuda_graphs:
            return None
        return graphs_of(self.model.unet)

    def _fingerprint(self) -> tuple | None:
        """What a CUDA graph of this U-Net depends on, read once per run (nothing moves while sampling)."""
        if self._graph_fingerprint is False:
            self._graph_fingerprint = fingerprint(self.model.unet)
        return self._graph_fingerprint

    def _autocast(self) -> Any:
        speed = getattr(self.model.manager, "speed", None)
        return speed.autocast(self.device) if speed is not None else nullcontext()

    def _unet(self) -> Any:
        """The U-Net, compiled when the model manager runs with `--compile` (TorchCompileModel's
        patch then finds it already compiled and leaves it as is)."""
        manager = self.model.manager
        if manager is not None and getattr(manager, "speed", None) is not None and manager.speed.compile:
            return compiled(self.model.unet, manager.speed.compile_backend)
        return self.model.unet

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
