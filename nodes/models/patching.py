"""Apply weight patches (LoRA, model merges) to a shared module for the duration of one use, then restore it.

Memory trade-off, chosen deliberately: the base weights are never written. For each patched
parameter a new tensor `W + sum(strength * delta)` is computed on the parameter's device and swapped
in; the original tensor is kept aside and swapped back afterwards. So:
- restoring is exact by construction (the same tensor object returns, untouched), even when an
  error or an interrupt ends the use half-way;
- the extra memory is one copy of the patched layers only (typically the attention projections),
  on the compute device, while the patched module is in use; unpatched layers cost nothing;
- patches are recomputed per use (a few low-rank matmuls per layer, negligible next to sampling).
A merge (nodes/models/merging.py) patches every weight it covers, so while the merged model is in
use it costs one more copy of those weights, built parameter by parameter from the other model's
weights; at rest it costs nothing.
The alternative (patch in place with a backup on the CPU) saves that device memory but costs two
transfers per use and leaves the base corrupted if a restore ever fails; not worth it here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .lora import WeightPatch


@dataclass(frozen=True)
class Multiply:
    """A weight delta that scales the weight: W + W * (factor - 1) (the attention multiplier nodes)."""

    factor: float

    def delta_of(self, param: torch.Tensor) -> torch.Tensor:
        return param.detach().float() * (self.factor - 1.0)


def patches_for(patches: Sequence[WeightPatch], component: str) -> list[WeightPatch]:
    """The patches of one component that change anything (strength 0 is exactly the base)."""
    return [p for p in patches if isinstance(p, WeightPatch) and p.component == component and p.strength != 0.0]


def patched_weight(original: torch.Tensor, steps: Sequence[tuple[float, object]]) -> torch.Tensor:
    """`original` with each (strength, delta) applied in order, in its own dtype and on its device.

    A LoRA-like delta (`delta(shape, device=...)`) adds `strength * delta`; a merge step (one with
    `merge_into(weight, strength)`, nodes/models/merging.py) rescales the weight so far and adds
    another model's weight, so a LoRA before a merge is merged, and one after it is added on top.
    """
    weight = original.float()
    total: torch.Tensor | None = None
    for strength, delta in steps:
        merge = getattr(delta, "merge_into", None)
        if merge is not None:
            if total is not None:
                weight, total = weight + total, None
            weight = merge(weight, strength)
            continue
        if isinstance(delta, Multiply):  # scales the base weight (the attention multiplier nodes)
            part = delta.delta_of(original) * strength
        else:
            part = delta.delta(original.shape, device=original.device) * strength  # type: ignore[attr-defined]
        total = part if total is None else total + part
    if total is not None:
        weight = weight + total
    return weight.to(original.dtype)


def steps_by_param(patches: Sequence[WeightPatch], component: str) -> dict[str, list[tuple[float, object]]]:
    """Per parameter name, the (strength, delta) pairs of the active patches of `component`, in order."""
    by_param: dict[str, list[tuple[float, object]]] = {}
    for patch in patches_for(patches, component):
        for name, delta in patch.deltas.items():
            by_param.setdefault(name, []).append((patch.strength, delta))
    return by_param


@contextmanager
def patched(module: torch.nn.Module, patches: Sequence[WeightPatch], component: str) -> Iterator[int]:
    """Within the block `module` computes with its weights plus every patch for `component`.

    Several patches on one weight apply in order (LoRAs add up). Yields the number of parameters patched.
    Every new weight is computed before any is swapped in, so a merge whose other model shares these
    very modules (a model merged with a LoRA'd copy of itself) reads the untouched base.
    """
    by_param = steps_by_param(patches, component)
    if not by_param:
        yield 0
        return
    params = dict(module.named_parameters())
    for name in by_param:
        if name not in params:
            owner = next(p.name for p in patches_for(patches, component) if name in p.deltas)
            raise KeyError(f"patch {owner!r}: {component} has no parameter {name!r}")
    with torch.no_grad():
        new = [(params[name], patched_weight(params[name].data, steps)) for name, steps in by_param.items()]
    saved: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    try:
        for param, value in new:
            saved.append((param, param.data))
            param.data = value
        del new
        yield len(saved)
    finally:
        for param, original in reversed(saved):
            param.data = original


__all__ = ["Multiply", "patched", "patched_weight", "patches_for", "steps_by_param"]
