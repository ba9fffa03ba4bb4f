"""Conditioning nodes that combine or annotate CONDITIONING lists; the samplers read the annotations.

CONDITIONING is a list of `[cond [1, T, D], {"pooled_output": ..., ...}]` pairs. Every node here
returns new lists and dicts and never modifies its inputs, which may be cached results.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from graph import ComboInput, FloatInput, InputSpec, IntInput, Node, NodeSchema, OutputSpec
from graph.limits import MAX_RESOLUTION

log = logging.getLogger("sumie.conditioning")

Conditioning = list[list[Any]]
def _annotated(conditioning: Conditioning, **values: Any) -> Conditioning:
    return [[cond, {**opts, **values}] for cond, opts in conditioning]


def _schema(node_id: str, display: str, inputs: list[InputSpec], category: str = "conditioning") -> NodeSchema:
    return NodeSchema(node_type=node_id, display_name=display, category=category, inputs=inputs,
                      outputs=[OutputSpec(type="CONDITIONING", name="CONDITIONING")],
                      python_module="nodes.sd.conditioning")


def _cond(name: str) -> InputSpec:
    return InputSpec(name=name, type="CONDITIONING")


class ConditioningCombine(Node):
    SCHEMA = _schema("ConditioningCombine", "Conditioning (Combine)",
                     [_cond("conditioning_1"), _cond("conditioning_2")])

    def execute(self, ctx, *, conditioning_1: Conditioning, conditioning_2: Conditioning) -> tuple[Conditioning]:
        return (list(conditioning_1) + list(conditioning_2),)


def _first_from(conditioning_from: Conditioning, node: str, logger: logging.Logger) -> tuple[torch.Tensor, dict]:
    if not conditioning_from:
        raise ValueError(f"{node}: input 'conditioning_from' is empty; expected at least one conditioning")
    if len(conditioning_from) > 1:
        logger.warning("%s: conditioning_from holds %d conditionings; only the first is used", node,
                       len(conditioning_from))
    return conditioning_from[0][0], conditioning_from[0][1]


class ConditioningAverage(Node):
    SCHEMA = _schema("ConditioningAverage", "Conditioning (Average)",
                     [_cond("conditioning_to"), _cond("conditioning_from"),
                      FloatInput(name="conditioning_to_strength", default=1.0, min=0.0, max=1.0, step=0.01)])

    def execute(self, ctx, *, conditioning_to: Conditioning, conditioning_from: Conditioning,
                conditioning_to_strength: float) -> tuple[Conditioning]:
        src, src_opts = _first_from(conditioning_from, "ConditioningAverage", ctx.logger)
        pooled_from = src_opts.get("pooled_output")
        s = conditioning_to_strength
        out: Conditioning = []
        for cond, opts in conditioning_to:
            other = src[:, : cond.shape[1]].to(cond)
            if other.shape[1] < cond.shape[1]:  # shorter source: zero-padded, as ComfyUI does
                other = torch.cat([other, other.new_zeros(other.shape[0], cond.shape[1] - other.shape[1],
                                                          other.shape[2])], dim=1)
            pooled = opts.get("pooled_output")
            if pooled is not None and pooled_from is not None:
                pooled = pooled * s + pooled_from.to(pooled) * (1.0 - s)
            elif pooled_from is not None:
                pooled = pooled_from
            out.append([cond * s + other * (1.0 - s), {**opts, "pooled_output": pooled}])
        return (out,)


class ConditioningConcat(Node):
    SCHEMA = _schema("ConditioningConcat", "Conditioning (Concat)", [_cond("conditioning_to"),
                                                                     _cond("conditioning_from")])

    def execute(self, ctx, *, conditioning_to: Conditioning, conditioning_from: Conditioning) -> tuple[Conditioning]:
        src, _ = _first_from(conditioning_from, "ConditioningConcat", ctx.logger)
        return ([[torch.cat([cond, src.to(cond)], dim=1), dict(opts)] for cond, opts in conditioning_to],)


class ConditioningSetArea(Node):
    SCHEMA = _schema("ConditioningSetArea", "Conditioning (Set Area)",
                     [_cond("conditioning"),
                      IntInput(name="width", default=64, min=64, max=MAX_RESOLUTION, step=8),
                      IntInput(name="height", default=64, min=64, max=MAX_RESOLUTION, step=8),
                      IntInput(name="x", default=0, min=0, max=MAX_RESOLUTION, step=8),
                      IntInput(name="y", default=0, min=0, max=MAX_RESOLUTION, step=8),
                      FloatInput(name="strength", default=1.0, min=0.0, max=10.0, step=0.01)])

    def execute(self, ctx, *, conditioning: Conditioning, width: int, height: int, x: int, y: int,
                strength: float) -> tuple[Conditioning]:
        # In latent units (÷8): (height, width, y, x), as ComfyUI's samplers read it.
        area = (height // 8, width // 8, y // 8, x // 8)
        return (_annotated(conditioning, area=area, strength=strength, set_area_to_bounds=False),)


def _fraction(name: str, default: float) -> FloatInput:
    return FloatInput(name=name, default=default, min=0.0, max=1.0, step=0.01)


class ConditioningSetAreaPercentage(Node):
    SCHEMA = _schema("ConditioningSetAreaPercentage", "Conditioning (Set Area with Percentage)",
                     [_cond("conditioning"), _fraction("width", 1.0), _fraction("height", 1.0), _fraction("x", 0.0),
                      _fraction("y", 0.0), FloatInput(name="strength", default=1.0, min=0.0, max=10.0, step=0.01)])

    def execute(self, ctx, *, conditioning: Conditioning, width: float, height: float, x: float, y: float,
                strength: float) -> tuple[Conditioning]:
        # Fractions of the image, resolved against the latent size by the sampler.
        area = ("percentage", height, width, y, x)
        return (_annotated(conditioning, area=area, strength=strength, set_area_to_bounds=False),)


class ConditioningSetAreaStrength(Node):
    SCHEMA = _schema("ConditioningSetAreaStrength", "ConditioningSetAreaStrength",
                     [_cond("conditioning"), FloatInput(name="strength", default=1.0, min=0.0, max=10.0, step=0.01)])

    def execute(self, ctx, *, conditioning: Conditioning, strength: float) -> tuple[Conditioning]:
        return (_annotated(conditioning, strength=strength),)


class ConditioningSetMask(Node):
    SCHEMA = _schema("ConditioningSetMask", "Conditioning (Set Mask)",
                     [_cond("conditioning"), InputSpec(name="mask", type="MASK"),
                      FloatInput(name="strength", default=1.0, min=0.0, max=10.0, step=0.01),
                      ComboInput(name="set_cond_area", choices=("default", "mask bounds"), default="default")])

    def execute(self, ctx, *, conditioning: Conditioning, mask: torch.Tensor, strength: float,
                set_cond_area: str) -> tuple[Conditioning]:
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.ndim != 3:
            raise ValueError(f"ConditioningSetMask: input 'mask' has shape {list(mask.shape)}; expected [B, H, W]")
        return (_annotated(conditioning, mask=mask, set_area_to_bounds=set_cond_area != "default",
                           mask_strength=strength),)


class ConditioningZeroOut(Node):
    SCHEMA = _schema("ConditioningZeroOut", "ConditioningZeroOut", [_cond("conditioning")], "advanced/conditioning")

    def execute(self, ctx, *, conditioning: Conditioning) -> tuple[Conditioning]:
        out: Conditioning = []
        for cond, opts in conditioning:
            new = dict(opts)
            if new.get("pooled_output") is not None:
                new["pooled_output"] = torch.zeros_like(new["pooled_output"])
            out.append([torch.zeros_like(cond), new])
        return (out,)


class ConditioningSetTimestepRange(Node):
    SCHEMA = _schema("ConditioningSetTimestepRange", "ConditioningSetTimestepRange",
                     [_cond("conditioning"),
                      FloatInput(name="start", default=0.0, min=0.0, max=1.0, step=0.001),
                      FloatInput(name="end", default=1.0, min=0.0, max=1.0, step=0.001)], "advanced/conditioning")

    def execute(self, ctx, *, conditioning: Conditioning, start: float, end: float) -> tuple[Conditioning]:
        return (_annotated(conditioning, start_percent=start, end_percent=end),)


NODES = [ConditioningCombine, ConditioningAverage, ConditioningConcat, ConditioningSetArea,
         ConditioningSetAreaPercentage, ConditioningSetAreaStrength, ConditioningSetMask, ConditioningZeroOut,
         ConditioningSetTimestepRange]
