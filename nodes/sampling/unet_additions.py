"""Per-step additions to the U-Net call, carried by conditioning entries (ControlNets, T2I-Adapters, ...).

The hook: a conditioning entry's options may hold, under one of `ADDITION_KEYS` (ComfyUI's "control"),
an object with `prepare(model, device=..., dtype=...) -> PreparedAddition`. The guider calls `prepare`
once per sampling run (load-time work: resizing hints, running an adapter, building a control-LoRA
net) and then, before every U-Net evaluation of that entry, `prepared.unet_kwargs(call)`, which
returns extra keyword arguments for diffusers' `UNet2DConditionModel.forward`
(`down_block_additional_residuals`, `mid_block_additional_residual`,
`down_intrablock_additional_residuals`, ...) or `{}` to leave this step alone, so an inactive
addition costs nothing and changes nothing. `modules()` names the torch modules that must be on the
compute device while sampling. Entries whose additions differ are never batched into one U-Net call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

ADDITION_KEYS = ("control", "unclip", "gligen")  # ControlNets / T2I-Adapters, unCLIP embeddings, GLIGEN boxes


@dataclass(frozen=True, kw_only=True)
class UNetCall:
    """One U-Net evaluation about to happen: what an addition may read to compute its contribution."""

    x: torch.Tensor  # the scaled model input c_in * x ([n * B, C, h, w]; without inpainting channels)
    sigma: torch.Tensor  # the noise level (1 element)
    timestep: torch.Tensor  # [n * B] what the U-Net is given
    context: torch.Tensor  # encoder_hidden_states [n * B, tokens, width]
    added_cond_kwargs: dict[str, torch.Tensor] | None  # SDXL: text_embeds, time_ids
    batched: int  # n: how many conditionings are stacked on the batch axis


class PreparedAddition(Protocol):
    def unet_kwargs(self, call: UNetCall) -> dict[str, Any]: ...


class UNetAddition(Protocol):
    def prepare(self, model: Any, *, device: torch.device, dtype: torch.dtype) -> PreparedAddition: ...

    def modules(self) -> list[torch.nn.Module]: ...


def additions_of(options: dict[str, Any]) -> tuple[Any, ...]:
    """The additions a conditioning entry's options carry."""
    return tuple(options[k] for k in ADDITION_KEYS if options.get(k) is not None)


def addition_modules(*conditionings: Sequence[Any] | None) -> list[torch.nn.Module]:
    """Every module the additions of these CONDITIONING lists need on the device (deduplicated)."""
    seen: dict[int, torch.nn.Module] = {}
    for conditioning in conditionings:
        for item in conditioning or ():
            options = item[1] if len(item) > 1 else {}
            for addition in additions_of(options):
                for module in addition.modules():
                    seen.setdefault(id(module), module)
    return list(seen.values())


def conditioning_patches(*conditionings: Sequence[Any] | None) -> list[Any]:
    """Model patches the additions of these CONDITIONING lists need while sampling (an addition's optional
    `model_patch()`; GLIGEN's fusers), one per distinct patch."""
    seen: dict[Any, Any] = {}
    for conditioning in conditionings:
        for item in conditioning or ():
            options = item[1] if len(item) > 1 else {}
            for addition in additions_of(options):
                make = getattr(addition, "model_patch", None)
                patch = make() if make is not None else None
                if patch is not None:
                    seen.setdefault(patch.key, patch)
    return list(seen.values())


def add_residuals(a: Any, b: Any) -> Any:
    """Sum two contributions of the same kind: tensors add, lists/tuples add elementwise."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            raise ValueError(f"cannot add {len(a)} residuals to {len(b)}: the control models do not match the U-Net")
        return [add_residuals(x, y) for x, y in zip(a, b, strict=True)]
    return a + b


def merge_kwargs(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One kwargs dict from several additions' contributions (same keys add up)."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = add_residuals(out.get(key), value)
    return out


__all__ = ["ADDITION_KEYS", "PreparedAddition", "UNetAddition", "UNetCall", "add_residuals", "addition_modules",
           "additions_of", "conditioning_patches", "merge_kwargs"]
