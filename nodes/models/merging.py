"""Model and CLIP merges as lazy weight patches: nothing is copied until the merged model is used or saved.

A merge step says, for one weight of the first model: `W = keep * W + add * W_other`, where `W` is the
weight as patched so far (so a LoRA applied before the merge is merged too) and `W_other` is the
second model's weight with the second model's own patches applied. Simple merge at ratio r: keep = r,
add = 1 - r; subtract with multiplier m: keep = m, add = -m; add: keep = add = 1 (the weights
ComfyUI's merge nodes give the same formula). A step holds the other module and a parameter name,
never a tensor, so a merged handle costs nothing at rest; the weight is read while the patched model
is being built (nodes/models/patching.py), one parameter at a time, on the device it is needed on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .lora import WeightPatch
from .patching import patched_weight, steps_by_param
from .random_checkpoint import unet_to_ldm

# Entries ComfyUI's CLIP merges leave alone (position ids, CLIP's logit scale).
CLIP_SKIPPED_SUFFIXES = (".position_ids", ".logit_scale")

# (keep, add) for one weight, given its LDM name (U-Net) or its parameter name (text encoders).
Weights = Callable[[str], tuple[float, float]]


@dataclass(frozen=True, kw_only=True, eq=False)
class MergeStep:
    """One weight of a merge: scale the weight so far by `keep`, add `add` times the other model's weight."""

    source: torch.nn.Module  # the other model's module (shared, never copied)
    name: str  # its parameter
    steps: tuple[tuple[float, Any], ...]  # the other model's own patches of that parameter
    keep: float
    add: float

    def other_weight(self, device: torch.device) -> torch.Tensor:
        """The other model's weight (its own patches applied) as float32 on `device`."""
        param = self.source.get_parameter(self.name)
        with torch.no_grad():
            value = patched_weight(param.data, self.steps) if self.steps else param.data
            return value.to(device, torch.float32)

    def merge_into(self, weight: torch.Tensor, strength: float) -> torch.Tensor:
        if self.keep != 1.0:
            weight = weight * self.keep
        add = self.add * strength
        if add != 0.0:
            weight = weight + self.other_weight(weight.device) * add
        return weight


@dataclass(kw_only=True)
class MergeReport:
    """What a merge covered: weights merged, and those skipped because the other model differs there."""

    merged: int = 0
    mismatched: list[str] = field(default_factory=list)  # same name, another shape (e.g. an inpainting conv_in)
    missing: list[str] = field(default_factory=list)  # weights the other model does not have

    def describe(self, limit: int = 3) -> str | None:
        """A one-line warning, or None when every weight was merged."""
        parts = []
        for what, names in (("differ in shape", self.mismatched), ("are missing from the other model", self.missing)):
            if names:
                more = f" and {len(names) - limit} more" if len(names) > limit else ""
                parts.append(f"{len(names)} weights {what} and were not merged: {', '.join(names[:limit])}{more}")
        return "; ".join(parts) or None


def merge_steps(target: torch.nn.Module, source: torch.nn.Module, source_patches: Sequence[Any],
                source_component: str, weights: Weights, *, names: dict[str, str] | None = None,
                skip: Iterable[str] = ()) -> tuple[dict[str, MergeStep], MergeReport]:
    """The merge steps for every parameter of `target` that `source` has with the same shape.

    `weights` gets each parameter's name as `names` spells it (default: its own name); steps that
    change nothing (keep 1, add 0) are left out, so a ratio of 1 leaves the first model untouched.
    """
    other = dict(source.named_parameters())
    other_steps = steps_by_param(source_patches, source_component)
    skipped = tuple(skip)
    report = MergeReport()
    steps: dict[str, MergeStep] = {}
    for name, param in target.named_parameters():
        if name.endswith(skipped):
            continue
        theirs = other.get(name)
        if theirs is None:
            report.missing.append(name)
            continue
        if theirs.shape != param.shape:
            report.mismatched.append(name)
            continue
        report.merged += 1
        keep, add = weights(names[name] if names is not None else name)
        if keep == 1.0 and add == 0.0:
            continue
        steps[name] = MergeStep(source=source, name=name, steps=tuple(other_steps.get(name, ())), keep=keep, add=add)
    return steps, report


def ldm_parameter_names(unet: torch.nn.Module) -> dict[str, str]:
    """diffusers parameter name -> the original LDM name (`input_blocks.1.0.in_layers.0.weight`, ...)."""
    names = [name for name, _ in unet.named_parameters()]
    mapped = unet_to_ldm({name: torch.empty(0) for name in names}, dict(unet.config))
    return dict(zip(names, mapped, strict=True))


def block_weights(ratios: Sequence[tuple[str, float]]) -> Weights:
    """ComfyUI's per-block ratios: the longest matching LDM-name prefix wins; the first ratio is the default."""
    if not ratios:
        raise ValueError("block ratios need at least one (prefix, ratio)")

    def weights(ldm_name: str) -> tuple[float, float]:
        ratio, best = ratios[0][1], 0
        for prefix, value in ratios:
            if ldm_name.startswith(prefix) and len(prefix) > best:
                ratio, best = value, len(prefix)
        return ratio, 1.0 - ratio

    return weights


def simple_weights(ratio: float) -> Weights:
    return lambda _name: (ratio, 1.0 - ratio)


def subtract_weights(multiplier: float) -> Weights:
    return lambda _name: (multiplier, -multiplier)


def add_weights() -> Weights:
    return lambda _name: (1.0, 1.0)


def merge_models(model1: Any, model2: Any, weights: Weights, *, name: str,
                 by_block: bool = False) -> tuple[Any, MergeReport]:
    """MODEL handles: a new handle of model1 carrying the merge with model2 as a patch (no weights copied).

    `by_block`: `weights` receives the original LDM names, as ComfyUI's block ratios are spelt.
    """
    if model1.kind.removesuffix("_inpaint") != model2.kind.removesuffix("_inpaint"):
        raise ValueError(f"{name}: model2 is {model2.kind} and model1 is {model1.kind}; only models of one family "
                         "merge (an inpainting model with its base is fine)")
    names = ldm_parameter_names(model1.unet) if by_block else None
    steps, report = merge_steps(model1.unet, model2.unet, model2.patches, "unet", weights, names=names)
    if report.merged == 0:
        raise ValueError(f"{name}: model2 ({model2.kind}) shares no weights with model1 ({model1.kind}); "
                         "merge models of one family")
    if not steps:
        return model1, report
    return model1.with_patches(WeightPatch(name=name, strength=1.0, component="unet", deltas=steps)), report


def merge_clips(clip1: Any, clip2: Any, weights: Weights, *, name: str) -> tuple[Any, MergeReport]:
    """CLIP handles: each text encoder of clip1 merged with the encoder of the same name in clip2."""
    theirs = {spec.name: encoder for spec, encoder in zip(clip2.specs, clip2.encoders, strict=True)}
    total = MergeReport()
    patches = []
    for spec, encoder in zip(clip1.specs, clip1.encoders, strict=True):
        other = theirs.get(spec.name)
        if other is None:
            total.missing.append(spec.name)
            continue
        steps, report = merge_steps(encoder, other, clip2.patches, spec.name, weights, skip=CLIP_SKIPPED_SUFFIXES)
        total.merged += report.merged
        total.mismatched += [f"{spec.name}.{n}" for n in report.mismatched]
        total.missing += [f"{spec.name}.{n}" for n in report.missing]
        if steps:
            patches.append(WeightPatch(name=name, strength=1.0, component=spec.name, deltas=steps))
    if total.merged == 0:
        mine = ", ".join(s.name for s in clip1.specs)
        other_names = ", ".join(theirs)
        raise ValueError(f"{name}: clip2 ({other_names}) shares no weights with clip1 ({mine}); "
                         "merge text encoders of one family")
    return (clip1.with_patches(*patches) if patches else clip1), total


__all__ = ["CLIP_SKIPPED_SUFFIXES", "MergeReport", "MergeStep", "add_weights", "block_weights", "ldm_parameter_names",
           "merge_clips", "merge_models", "merge_steps", "simple_weights", "subtract_weights"]
