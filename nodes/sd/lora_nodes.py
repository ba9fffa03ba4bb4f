"""LoraLoader and LoraLoaderModelOnly: new MODEL/CLIP handles that carry a LoRA as weight patches.

The base weights are shared, never copied or reloaded: the handles only gain a `WeightPatch`, which
the sampler and the text encoder apply while they run (nodes/models/patching.py). Changing the
strength or removing the node therefore costs no checkpoint load. What a file holds that fits no
layer of the model is reported in the log and in the node's output, never dropped silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graph import ComboInput, FloatInput, InputSpec, Node, NodeResult, NodeSchema, OutputSpec
from nodes.base.errors import ModelLoadError
from nodes.base.folders import files_of, resolve
from nodes.models.lora import LoraFile, LoraMapping, WeightPatch, describe_unmatched, load_lora, map_lora

from .loaders import file_fingerprint


def _strength(name: str, tooltip: str) -> FloatInput:
    return FloatInput(name=name, default=1.0, min=-100.0, max=100.0, step=0.01, tooltip=tooltip)


def _read(ctx: Any, lora_name: str) -> LoraFile:
    try:
        path: Path = resolve(ctx.folders, "loras", lora_name)
        return load_lora(path)
    except ModelLoadError as exc:
        raise ModelLoadError(exc.path, f"{exc.reason} (input 'lora_name' = {lora_name!r})") from None


def _patches(name: str, mapping: LoraMapping, strength: float, components: list[str]) -> tuple[WeightPatch, ...]:
    return tuple(WeightPatch(name=name, strength=strength, component=c, deltas=mapping.deltas[c])
                 for c in components if c in mapping.deltas)


def _report(ctx: Any, lora: LoraFile, mapping: LoraMapping, lora_name: str) -> dict[str, Any] | None:
    messages = []
    unmatched = describe_unmatched(lora, mapping)
    if unmatched:
        messages.append(unmatched)
    if not mapping.deltas:
        messages.append(f"{lora_name}: no layer of this LoRA fits the model; it changes nothing "
                        "(is it for another model family?)")
    for message in messages:
        ctx.logger.warning("node %s (%s): %s", ctx.node_id, ctx.class_type, message)
    return {"text": messages} if messages else None


class LoraLoader(Node):
    SCHEMA = NodeSchema(
        node_type="LoraLoader", display_name="Load LoRA", category="loaders",
        description="Applies a LoRA to the diffusion model and the text encoder without copying either.",
        inputs=[InputSpec(name="model", type="MODEL", tooltip="The diffusion model the LoRA is applied to."),
                InputSpec(name="clip", type="CLIP", tooltip="The CLIP model the LoRA is applied to."),
                ComboInput(name="lora_name", choices=files_of("loras"), tooltip="The name of the LoRA."),
                _strength("strength_model", "How strongly to modify the diffusion model (negative inverts)."),
                _strength("strength_clip", "How strongly to modify the CLIP model (negative inverts).")],
        outputs=[OutputSpec(type="MODEL", name="MODEL", tooltip="The modified diffusion model."),
                 OutputSpec(type="CLIP", name="CLIP", tooltip="The modified CLIP model.")],
        python_module="nodes.sd.lora_nodes",
    )

    def fingerprint(self, *, lora_name: str, folders: Any = None, **_: Any) -> Any:
        return file_fingerprint(folders, "loras", lora_name)

    def execute(self, ctx, *, model: Any, clip: Any, lora_name: str, strength_model: float,
                strength_clip: float) -> NodeResult:
        if strength_model == 0 and strength_clip == 0:
            return NodeResult(result=(model, clip))
        lora = _read(ctx, lora_name)
        encoders = {} if clip is None else dict(zip((s.name for s in clip.specs), clip.encoders, strict=True))
        mapping = map_lora(lora, unet=model.unet, text_encoders=encoders)
        new_model = model.with_patches(*_patches(lora_name, mapping, strength_model, ["unet"]))
        new_clip = None if clip is None else clip.with_patches(
            *_patches(lora_name, mapping, strength_clip, list(encoders)))
        return NodeResult(result=(new_model, new_clip), ui=_report(ctx, lora, mapping, lora_name))


class LoraLoaderModelOnly(Node):
    SCHEMA = NodeSchema(
        node_type="LoraLoaderModelOnly", display_name="LoraLoaderModelOnly", category="loaders",
        description="Applies a LoRA to the diffusion model only.",
        inputs=[InputSpec(name="model", type="MODEL"),
                ComboInput(name="lora_name", choices=files_of("loras")),
                _strength("strength_model", "How strongly to modify the diffusion model (negative inverts).")],
        outputs=[OutputSpec(type="MODEL", name="MODEL")],
        python_module="nodes.sd.lora_nodes",
    )

    def fingerprint(self, *, lora_name: str, folders: Any = None, **_: Any) -> Any:
        return file_fingerprint(folders, "loras", lora_name)

    def execute(self, ctx, *, model: Any, lora_name: str, strength_model: float) -> NodeResult:
        if strength_model == 0:
            return NodeResult(result=(model,))
        lora = _read(ctx, lora_name)
        mapping = map_lora(lora, unet=model.unet)
        patched = model.with_patches(*_patches(lora_name, mapping, strength_model, ["unet"]))
        return NodeResult(result=(patched,), ui=_report(ctx, lora, mapping, lora_name))


NODES = [LoraLoader, LoraLoaderModelOnly]
