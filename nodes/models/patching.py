"""Apply weight patches (LoRA) to a shared module for the duration of one use, then restore it.

Memory trade-off, chosen deliberately: the base weights are never written. For each patched
parameter a new tensor `W + sum(strength * delta)` is computed on the parameter's device and swapped
in; the original tensor is kept aside and swapped back afterwards. So:
- restoring is exact by construction (the same tensor object returns, untouched), even when an
  error or an interrupt ends the use half-way;
- the extra memory is one copy of the patched layers only (typically the attention projections),
  on the compute device, while the patched module is in use; unpatched layers cost nothing;
- patches are recomputed per use (a few low-rank matmuls per layer, negligible next to sampling).
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


@contextmanager
def patched(module: torch.nn.Module, patches: Sequence[WeightPatch], component: str) -> Iterator[int]:
    """Within the block `module` computes with its weights plus every patch for `component`.

    Several patches on one weight add up. Yields the number of parameters patched.
    """
    active = patches_for(patches, component)
    if not active:
        yield 0
        return
    params = dict(module.named_parameters())
    by_param: dict[str, list[tuple[float, object]]] = {}
    for patch in active:
        for name, delta in patch.deltas.items():
            if name not in params:
                raise KeyError(f"LoRA {patch.name!r}: {component} has no parameter {name!r}")
            by_param.setdefault(name, []).append((patch.strength, delta))
    saved: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for name, deltas in by_param.items():
                param = params[name]
                total: torch.Tensor | None = None
                for strength, delta in deltas:
                    if isinstance(delta, Multiply):
                        part = delta.delta_of(param) * strength
                    else:
                        part = delta.delta(param.shape, device=param.device) * strength  # type: ignore[attr-defined]
                    total = part if total is None else total + part
                assert total is not None
                original = param.data
                param.data = (original.float() + total).to(original.dtype)
                saved.append((param, original))
        yield len(saved)
    finally:
        for param, original in reversed(saved):
            param.data = original


__all__ = ["Multiply", "patched", "patches_for"]
