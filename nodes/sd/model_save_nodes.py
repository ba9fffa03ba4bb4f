"""CheckpointSave, CLIPSave, VAESave, ModelSave: models (merged, LoRA'd) written to the output folder.

Files are written in the layouts ComfyUI writes and the loaders read: a checkpoint in the original
single-file layout, a U-Net alone under `model.diffusion_model.`, a VAE in the original autoencoder
layout, each text encoder in transformers' layout in its own file (`{prefix}_clip_l_00001_.safetensors`,
...). Patches are applied while writing, one tensor at a time (nodes/models/export.py), and the header
carries the workflow as ComfyUI's files do: `prompt` (the API JSON, "" when none) and one JSON string
per `extra_pnginfo` key (usually `workflow`). Writing is atomic and numbered (nodes/sd/output_files.py).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from graph import HiddenInput, InputSpec, Node, NodeResult, NodeSchema
from nodes.models.export import checkpoint_metadata, checkpoint_state, transformers_text_state, vae_state
from nodes.models.patching import patched
from nodes.models.safetensors_out import write_safetensors
from nodes.sd.image import FilenamePrefixInput
from nodes.sd.latent_files import latent_metadata
from nodes.sd.output_files import checked_prefix, write_numbered

_CATEGORY = "advanced/model_merging"
_HIDDEN = [HiddenInput(name="prompt", kind="PROMPT"), HiddenInput(name="extra_pnginfo", kind="EXTRA_PNGINFO")]
_EXT = "safetensors"


def _schema(node: str, inputs: list[InputSpec], prefix: str, display_name: str | None = None) -> NodeSchema:
    return NodeSchema(node_type=node, display_name=display_name, category=_CATEGORY,
                      inputs=[*inputs, FilenamePrefixInput(name="filename_prefix", default=prefix)],
                      hidden=_HIDDEN, output_node=True, python_module="nodes.sd.model_save_nodes")


def _output_root(ctx: Any, node: str) -> Any:
    if ctx.folders is None:
        raise ValueError(f"{node}: this engine was started without an output folder")
    return ctx.folders.output


def _write(ctx: Any, node: str, prefix: str, tensors: dict[str, Any], metadata: dict[str, str]) -> dict[str, str]:
    ref, _ = write_numbered(_output_root(ctx, node), prefix, _EXT,
                            lambda handle: write_safetensors(handle, tensors, metadata=metadata),
                            kind="output", node=node)
    ctx.logger.info("node %s (%s): saved %s", ctx.node_id, node, "/".join(filter(None, (ref["subfolder"],
                                                                                     ref["filename"]))))
    return ref


def _save_checkpoint(ctx: Any, node: str, filename_prefix: str, *, model: Any, clip: Any = None, vae: Any = None,
                     prompt: Any = None, extra_pnginfo: Any = None) -> NodeResult:
    prefix = checked_prefix(filename_prefix, 0, 0, node=node)
    metadata = checkpoint_metadata(model, PurePosixPath(prefix).name) | latent_metadata(prompt, extra_pnginfo)
    with checkpoint_state(model, clip, vae) as tensors:
        _write(ctx, node, prefix, tensors, metadata)
    return NodeResult(result=())


class CheckpointSave(Node):
    SCHEMA = _schema("CheckpointSave", [InputSpec(name="model", type="MODEL"), InputSpec(name="clip", type="CLIP"),
                                        InputSpec(name="vae", type="VAE")], "checkpoints/ComfyUI", "Save Checkpoint")

    def execute(self, ctx, *, model: Any, clip: Any, vae: Any, filename_prefix: str, prompt: Any = None,
                extra_pnginfo: Any = None) -> NodeResult:
        return _save_checkpoint(ctx, "CheckpointSave", filename_prefix, model=model, clip=clip, vae=vae,
                                prompt=prompt, extra_pnginfo=extra_pnginfo)


class ModelSave(Node):
    SCHEMA = _schema("ModelSave", [InputSpec(name="model", type="MODEL")], "diffusion_models/ComfyUI")

    def execute(self, ctx, *, model: Any, filename_prefix: str, prompt: Any = None,
                extra_pnginfo: Any = None) -> NodeResult:
        return _save_checkpoint(ctx, "ModelSave", filename_prefix, model=model, prompt=prompt,
                                extra_pnginfo=extra_pnginfo)


class CLIPSave(Node):
    SCHEMA = _schema("CLIPSave", [InputSpec(name="clip", type="CLIP")], "clip/ComfyUI")

    def execute(self, ctx, *, clip: Any, filename_prefix: str, prompt: Any = None,
                extra_pnginfo: Any = None) -> NodeResult:
        prefix = checked_prefix(filename_prefix, 0, 0, node="CLIPSave")
        metadata = {"format": "pt"} | latent_metadata(prompt, extra_pnginfo)
        # One file per encoder, named after it as ComfyUI names them; each name must fit the folder too.
        prefixes = [checked_prefix(f"{prefix}_{spec.name}", 0, 0, node="CLIPSave") for spec in clip.specs]
        for spec, encoder, encoder_prefix in zip(clip.specs, clip.encoders, prefixes, strict=True):
            with patched(encoder, clip.patches, spec.name):
                _write(ctx, "CLIPSave", encoder_prefix, transformers_text_state(encoder), metadata)
        return NodeResult(result=())


class VAESave(Node):
    SCHEMA = _schema("VAESave", [InputSpec(name="vae", type="VAE")], "vae/ComfyUI_vae")

    def execute(self, ctx, *, vae: Any, filename_prefix: str, prompt: Any = None,
                extra_pnginfo: Any = None) -> NodeResult:
        prefix = checked_prefix(filename_prefix, 0, 0, node="VAESave")
        _write(ctx, "VAESave", prefix, vae_state(vae), latent_metadata(prompt, extra_pnginfo))
        return NodeResult(result=())


NODES = [CheckpointSave, CLIPSave, VAESave, ModelSave]
