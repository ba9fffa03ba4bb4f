"""unCLIPCheckpointLoader and unCLIPConditioning (SD2.1 unCLIP: image variations from a CLIP image embedding).

The loader returns MODEL, CLIP, VAE and the checkpoint's own CLIP_VISION; its MODEL carries a patch that
gives image-less conditioning zero image embeddings. unCLIPConditioning annotates conditioning entries
with the embedding, its strength and noise augmentation (nodes/models/unclip.py turns them into the
U-Net's class labels while sampling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from graph import ComboInput, FloatInput, InputSpec, Node, NodeSchema, OutputSpec
from nodes.base.errors import ModelLoadError
from nodes.base.folders import files_of
from nodes.base.handles import SD_LATENT_RGB, ClipHandle, LatentFormat, ModelHandle, VaeHandle
from nodes.base.model_sampling import ModelSampling
from nodes.models import checkpoint_from_state_dict, read_state_dict
from nodes.models.clip_vision import ClipVisionHandle, build_clip_vision
from nodes.models.unclip import (
    AUGMENTOR_OPTION,
    NoiseAugmentor,
    UnclipAddition,
    ZeroImageEmbedding,
    attach_class_embedding,
    split_unclip,
)

from .clip_vision_nodes import _resolve
from .loaders import file_fingerprint


def load_unclip_checkpoint(manager: Any, path: Path) -> tuple[ModelHandle, ClipHandle, VaeHandle, ClipVisionHandle]:
    """The four handles of an unCLIP checkpoint, cached by the model manager."""
    def load(p: Path) -> tuple[Any, list[torch.nn.Module]]:
        rest, parts = split_unclip(read_state_dict(p), p)
        ckpt = checkpoint_from_state_dict(rest, path=p, device=manager.offload_device, dtype=manager.dtype)
        assert ckpt.unet is not None and ckpt.vae is not None
        width = attach_class_embedding(ckpt.unet, parts["label"], p)
        vision = build_clip_vision(parts["vision"], p, dtype=manager.dtype, device=manager.offload_device)
        info = ckpt.info
        model = ModelHandle(unet=ckpt.unet, kind=info.kind, sampling=ModelSampling.discrete(
            prediction=info.prediction_type), latent_format=LatentFormat(scale_factor=info.vae_scaling_factor,
                                                                         rgb_factors=SD_LATENT_RGB),
            source=p, manager=manager, patches=(ZeroImageEmbedding(width),),
            options={AUGMENTOR_OPTION: NoiseAugmentor.from_weights(parts["augmentor"])})
        clip = ClipHandle(encoders=tuple(ckpt.text_encoders), specs=tuple(info.text_encoders), kind=info.kind,
                          source=p, manager=manager)
        vae = ckpt.vae.to(manager.vae_dtype)
        vae_handle = VaeHandle(vae=vae, scale_factor=info.vae_scaling_factor, source=p, manager=manager)
        handles = (model, clip, vae_handle, ClipVisionHandle(model=vision, source=p, manager=manager))
        return handles, [ckpt.unet, vae, *ckpt.text_encoders, vision]

    return manager.load_file("unclip_checkpoint", path, load)


class unCLIPCheckpointLoader(Node):  # noqa: N801 (ComfyUI's class name)
    SCHEMA = NodeSchema(node_type="unCLIPCheckpointLoader", display_name="unCLIPCheckpointLoader", category="loaders",
                        inputs=[ComboInput(name="ckpt_name", choices=files_of("checkpoints"))],
                        outputs=[OutputSpec(type="MODEL", name="MODEL"), OutputSpec(type="CLIP", name="CLIP"),
                                 OutputSpec(type="VAE", name="VAE"),
                                 OutputSpec(type="CLIP_VISION", name="CLIP_VISION")],
                        python_module="nodes.sd.unclip_nodes")

    def fingerprint(self, *, ckpt_name: str, folders: Any = None, **_: Any) -> Any:
        return file_fingerprint(folders, "checkpoints", ckpt_name)

    def execute(self, ctx, *, ckpt_name: str) -> tuple[Any, Any, Any, Any]:
        path = _resolve(ctx, "checkpoints", ckpt_name, "ckpt_name")
        try:
            return load_unclip_checkpoint(ctx.service("models"), path)
        except ModelLoadError as exc:
            raise ModelLoadError(exc.path, f"{exc.reason} (input 'ckpt_name' = {ckpt_name!r})") from None

    def prefetch(self, ctx, *, ckpt_name: str) -> str:
        path = _resolve(ctx, "checkpoints", ckpt_name, "ckpt_name")
        manager = ctx.service("models")
        return manager.prefetch([path], lambda: load_unclip_checkpoint(manager, path))


class unCLIPConditioning(Node):  # noqa: N801 (ComfyUI's class name)
    SCHEMA = NodeSchema(node_type="unCLIPConditioning", display_name="unCLIPConditioning", category="conditioning",
                        inputs=[InputSpec(name="conditioning", type="CONDITIONING"),
                                InputSpec(name="clip_vision_output", type="CLIP_VISION_OUTPUT"),
                                FloatInput(name="strength", default=1.0, min=-10.0, max=10.0, step=0.01),
                                FloatInput(name="noise_augmentation", default=0.0, min=0.0, max=1.0, step=0.01)],
                        outputs=[OutputSpec(type="CONDITIONING", name="CONDITIONING")],
                        python_module="nodes.sd.unclip_nodes")

    def execute(self, ctx, *, conditioning: list[Any], clip_vision_output: Any, strength: float,
                noise_augmentation: float) -> tuple[list[Any]]:
        if strength == 0:
            return (conditioning,)
        embeds = clip_vision_output["image_embeds"]
        if not isinstance(embeds, torch.Tensor) or embeds.ndim != 2:
            raise ValueError("unCLIPConditioning: input 'clip_vision_output' has no image_embeds [batch, width]")
        out = []
        for item in conditioning:
            options = dict(item[1])
            previous = options.get("unclip")
            item_new = (embeds, float(strength), float(noise_augmentation))
            options["unclip"] = previous.chained(*item_new) if previous is not None else UnclipAddition((item_new,))
            out.append([item[0], options])
        return (out,)


NODES = [unCLIPCheckpointLoader, unCLIPConditioning]
