"""ControlNet and T2I-Adapter nodes, and Canny, with ComfyUI's names, inputs and behaviour.

The apply nodes never run a network: they attach an `AppliedControl` to every conditioning entry
(ComfyUI's `"control"` option, chained onto any control already there) and the sampler runs it
per step (nodes/sampling/control.py). ControlNetApply (the old node) sees only one conditioning and
marks its control `control_apply_to_uncond`, so the sampler applies it to the negative side too.
"""

from __future__ import annotations

from typing import Any

import torch

from graph import ComboInput, FloatInput, InputSpec, Node, NodeSchema, OutputSpec
from nodes.base.errors import ModelLoadError
from nodes.base.folders import files_of, resolve
from nodes.models.controlnet import UNION_TYPES, ControlNetHandle
from nodes.sampling.control import AppliedControl

from .canny import canny
from .loaders import file_fingerprint

CATEGORY = "conditioning/controlnet"


def _load(ctx: Any, control_net_name: str, model: Any = None) -> ControlNetHandle:
    try:
        path = resolve(ctx.folders, "controlnet", control_net_name)
        return ctx.service("models").load_controlnet(path, model=model)
    except ModelLoadError as exc:
        raise ModelLoadError(exc.path, f"{exc.reason} (input 'control_net_name' = {control_net_name!r})") from None


def _hint(image: torch.Tensor, node: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{node}: input 'image' must be an IMAGE [batch, height, width, channels]")
    return image[..., :3].movedim(-1, 1).float()


def _apply(conditioning: list[Any], made: dict[int, AppliedControl], make: Any, **flags: Any) -> list[Any]:
    """New entries whose "control" is a new AppliedControl chained onto the entry's previous one (one new
    control per distinct previous control, so entries that shared a chain still share it)."""
    out = []
    for item in conditioning:
        options = dict(item[1])
        previous = options.get("control")
        key = id(previous)
        if key not in made:
            made[key] = make(previous)
        options["control"] = made[key]
        options.update(flags)
        out.append([item[0], options])
    return out


class ControlNetLoader(Node):
    SCHEMA = NodeSchema(node_type="ControlNetLoader", display_name="Load ControlNet Model", category="loaders",
                        inputs=[ComboInput(name="control_net_name", choices=files_of("controlnet"))],
                        outputs=[OutputSpec(type="CONTROL_NET", name="CONTROL_NET")],
                        python_module="nodes.sd.controlnet_nodes")

    def fingerprint(self, *, control_net_name: str, folders: Any = None, **_: Any) -> Any:
        return file_fingerprint(folders, "controlnet", control_net_name)

    def execute(self, ctx, *, control_net_name: str) -> tuple[ControlNetHandle]:
        return (_load(ctx, control_net_name),)

    def prefetch(self, ctx, *, control_net_name: str) -> str:
        path = resolve(ctx.folders, "controlnet", control_net_name)
        manager = ctx.service("models")
        return manager.prefetch([path], lambda: manager.load_controlnet(path, model=None))


class DiffControlNetLoader(Node):
    SCHEMA = NodeSchema(node_type="DiffControlNetLoader", display_name="Load ControlNet Model (diff)",
                        category="loaders",
                        inputs=[InputSpec(name="model", type="MODEL"),
                                ComboInput(name="control_net_name", choices=files_of("controlnet"))],
                        outputs=[OutputSpec(type="CONTROL_NET", name="CONTROL_NET")],
                        python_module="nodes.sd.controlnet_nodes")

    def fingerprint(self, *, control_net_name: str, folders: Any = None, **_: Any) -> Any:
        return file_fingerprint(folders, "controlnet", control_net_name)

    def execute(self, ctx, *, model: Any, control_net_name: str) -> tuple[ControlNetHandle]:
        return (_load(ctx, control_net_name, model),)


def _strength() -> FloatInput:
    return FloatInput(name="strength", default=1.0, min=0.0, max=10.0, step=0.01)


class ControlNetApply(Node):
    SCHEMA = NodeSchema(node_type="ControlNetApply", display_name="Apply ControlNet (OLD)", category=CATEGORY,
                        inputs=[InputSpec(name="conditioning", type="CONDITIONING"),
                                InputSpec(name="control_net", type="CONTROL_NET"),
                                InputSpec(name="image", type="IMAGE"), _strength()],
                        outputs=[OutputSpec(type="CONDITIONING", name="CONDITIONING")], deprecated=True,
                        python_module="nodes.sd.controlnet_nodes")

    def execute(self, ctx, *, conditioning: list[Any], control_net: ControlNetHandle, image: torch.Tensor,
                strength: float) -> tuple[list[Any]]:
        if strength == 0:
            return (conditioning,)
        hint = _hint(image, "ControlNetApply")

        def make(previous: AppliedControl | None) -> AppliedControl:
            return AppliedControl(net=control_net, hint=hint, strength=strength, previous=previous)

        return (_apply(conditioning, {}, make, control_apply_to_uncond=True),)


class ControlNetApplyAdvanced(Node):
    SCHEMA = NodeSchema(node_type="ControlNetApplyAdvanced", display_name="Apply ControlNet", category=CATEGORY,
                        inputs=[InputSpec(name="positive", type="CONDITIONING"),
                                InputSpec(name="negative", type="CONDITIONING"),
                                InputSpec(name="control_net", type="CONTROL_NET"),
                                InputSpec(name="image", type="IMAGE"), _strength(),
                                FloatInput(name="start_percent", default=0.0, min=0.0, max=1.0, step=0.001),
                                FloatInput(name="end_percent", default=1.0, min=0.0, max=1.0, step=0.001),
                                InputSpec(name="vae", type="VAE", optional=True,
                                          tooltip="Only for ControlNets working on latents (not SD1/SDXL ones)")],
                        outputs=[OutputSpec(type="CONDITIONING", name="positive"),
                                 OutputSpec(type="CONDITIONING", name="negative")],
                        python_module="nodes.sd.controlnet_nodes")

    def execute(self, ctx, *, positive: list[Any], negative: list[Any], control_net: ControlNetHandle,
                image: torch.Tensor, strength: float, start_percent: float, end_percent: float,
                vae: Any = None) -> tuple[list[Any], list[Any]]:
        if strength == 0:
            return (positive, negative)
        hint = _hint(image, "ControlNetApplyAdvanced")

        def make(previous: AppliedControl | None) -> AppliedControl:
            return AppliedControl(net=control_net, hint=hint, strength=strength, start_percent=start_percent,
                                  end_percent=end_percent, previous=previous)

        made: dict[int, AppliedControl] = {}  # positive and negative share one control per previous chain
        return (_apply(positive, made, make, control_apply_to_uncond=False),
                _apply(negative, made, make, control_apply_to_uncond=False))


class SetUnionControlNetType(Node):
    SCHEMA = NodeSchema(node_type="SetUnionControlNetType", display_name="SetUnionControlNetType",
                        category=CATEGORY,
                        inputs=[InputSpec(name="control_net", type="CONTROL_NET"),
                                ComboInput(name="type", choices=["auto", *UNION_TYPES])],
                        outputs=[OutputSpec(type="CONTROL_NET", name="CONTROL_NET")],
                        python_module="nodes.sd.controlnet_nodes")

    def execute(self, ctx, *, control_net: ControlNetHandle, type: str) -> tuple[ControlNetHandle]:
        return (control_net.with_union_type(UNION_TYPES.get(type)),)


class Canny(Node):
    SCHEMA = NodeSchema(node_type="Canny", display_name="Canny", category="image/preprocessors",
                        inputs=[InputSpec(name="image", type="IMAGE"),
                                FloatInput(name="low_threshold", default=0.4, min=0.01, max=0.99, step=0.01),
                                FloatInput(name="high_threshold", default=0.8, min=0.01, max=0.99, step=0.01)],
                        outputs=[OutputSpec(type="IMAGE", name="IMAGE")], python_module="nodes.sd.controlnet_nodes")

    def execute(self, ctx, *, image: torch.Tensor, low_threshold: float, high_threshold: float) -> tuple[torch.Tensor]:
        if low_threshold > high_threshold:
            raise ValueError(f"Canny: input 'low_threshold' ({low_threshold}) is above 'high_threshold' "
                             f"({high_threshold}); expected low <= high")
        edges = canny(_hint(image, "Canny").to(_compute_device(ctx)), low_threshold, high_threshold)
        return (edges.repeat(1, 3, 1, 1).movedim(1, -1).contiguous().cpu(),)


def _compute_device(ctx: Any) -> torch.device:
    """The model manager's device (a GPU when there is one); the CPU without a manager."""
    try:
        return ctx.service("models").device
    except (AttributeError, KeyError, LookupError):
        return torch.device("cpu")


NODES = [ControlNetLoader, DiffControlNetLoader, ControlNetApply, ControlNetApplyAdvanced, SetUnionControlNetType,
         Canny]
