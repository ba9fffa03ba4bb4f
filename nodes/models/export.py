"""Models back to files: the original single-file layouts, with every patch (LoRA, merge) applied.

The key names are the ones the checkpoints people download use, so our own loader and ComfyUI read
the result: `model.diffusion_model.*` (LDM U-Net names), `first_stage_model.*` (LDM VAE names),
`cond_stage_model.transformer.*` (SD1 CLIP-L), `cond_stage_model.model.*` (SD2 OpenCLIP-H), and
`conditioner.embedders.N.{transformer,model}.*` for SDXL. The diffusers -> LDM renaming is the one
the random test checkpoints are written with (nodes/models/random_checkpoint.py), the inverse of
what the loader undoes.

The state dicts are views of the live modules: they are valid only inside the `with` block and are
meant to be written out there (nodes/models/safetensors_out.py). A patched U-Net weight is a
`LazyTensor`, computed from the base (and, for a merge, the other model) only when it is written, so
saving a merged model needs one weight's worth of extra memory at a time, not a second model; the
text encoders (small) are patched for the duration of the block.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Any

import torch

from .patching import patched, patched_weight, steps_by_param
from .random_checkpoint import clip_to_ldm, open_clip_to_ldm, unet_to_ldm, vae_to_ldm
from .safetensors_out import LazyTensor

UNET_KEY_PREFIX = "model.diffusion_model."
VAE_KEY_PREFIX = "first_stage_model."


def _prefixed(prefix: str, sd: dict[str, Any]) -> dict[str, Any]:
    return {prefix + k: v for k, v in sd.items()}


def unet_state(model: Any) -> dict[str, torch.Tensor | LazyTensor]:
    """The U-Net's weights under their checkpoint names; patched ones are computed as they are written."""
    steps = steps_by_param(model.patches, "unet")
    params = dict(model.unet.named_parameters())
    sd: dict[str, Any] = {}
    for name, value in model.unet.state_dict().items():
        if name in steps:
            param = params[name]
            sd[name] = LazyTensor(shape=param.shape, dtype=param.dtype,
                                  produce=partial(_patched_value, param, tuple(steps[name])))
        else:
            sd[name] = value
    return _prefixed(UNET_KEY_PREFIX, unet_to_ldm(sd, dict(model.unet.config)))


def _patched_value(param: torch.nn.Parameter, steps: tuple[tuple[float, Any], ...]) -> torch.Tensor:
    with torch.no_grad():
        return patched_weight(param.data, steps)


def vae_state(vae: Any) -> dict[str, torch.Tensor]:
    """The VAE's weights in the original autoencoder layout, without a prefix (as VAE files hold them)."""
    return vae_to_ldm(vae.vae.state_dict(), dict(vae.vae.config))


def _open_clip_state(encoder: Any) -> dict[str, torch.Tensor]:
    sd = open_clip_to_ldm(encoder)
    if not hasattr(encoder, "text_projection"):
        # SD2 files carry a projection SD2 never uses (nor keeps when loading); write a neutral one.
        hidden = int(encoder.config.hidden_size)
        sd["text_projection"] = torch.eye(hidden, dtype=encoder.dtype)
    return sd


def text_encoder_states(clip: Any, *, sdxl_layout: bool) -> dict[str, torch.Tensor]:
    """The text encoders under checkpoint names: SD1/SD2 `cond_stage_model.*`, SDXL `conditioner.embedders.N.*`."""
    sd: dict[str, torch.Tensor] = {}
    for index, (spec, encoder) in enumerate(zip(clip.specs, clip.encoders, strict=True)):
        openclip = spec.name != "clip_l"
        inner = "model." if openclip else "transformer."
        base = f"conditioner.embedders.{index}." if sdxl_layout else "cond_stage_model."
        part = _open_clip_state(encoder) if openclip else clip_to_ldm(encoder)
        sd |= _prefixed(base + inner, part)
    return sd


def transformers_text_state(encoder: Any) -> dict[str, torch.Tensor]:
    """One text encoder in transformers' layout (`text_model.*`, `text_projection.weight`), as CLIP files hold it."""
    out: dict[str, torch.Tensor] = {}
    for key, value in encoder.state_dict().items():
        if key.endswith("position_ids"):
            continue
        named = key if key.startswith(("text_model.", "text_projection.")) else "text_model." + key
        out[named] = value
    return out


@contextmanager
def patched_text_encoders(clip: Any = None) -> Iterator[None]:
    """Within the block the text encoders compute with (and hold) their patched weights."""
    with ExitStack() as stack, torch.no_grad():
        if clip is not None:
            for spec, encoder in zip(clip.specs, clip.encoders, strict=True):
                stack.enter_context(patched(encoder, clip.patches, spec.name))
        yield


@contextmanager
def checkpoint_state(model: Any = None, clip: Any = None, vae: Any = None) -> Iterator[dict[str, Any]]:
    """The whole checkpoint (any of its parts) in the original layout, patches applied, inside the block."""
    sdxl = model.is_sdxl if model is not None else (clip is not None and clip.kind.startswith("sdxl"))
    with patched_text_encoders(clip):
        sd: dict[str, Any] = {}
        if model is not None:
            sd |= unet_state(model)
        if vae is not None:
            sd |= _prefixed(VAE_KEY_PREFIX, vae_state(vae))
        if clip is not None:
            sd |= text_encoder_states(clip, sdxl_layout=sdxl)
        if model is not None and model.sampling.prediction == "v_prediction":
            sd["v_pred"] = torch.tensor([])  # how ComfyUI marks v-prediction files
        yield sd


def checkpoint_metadata(model: Any, title: str) -> dict[str, str]:
    """The model-spec entries ComfyUI writes into a saved checkpoint's header (architecture, prediction)."""
    meta: dict[str, str] = {}
    architecture = {"sdxl": "stable-diffusion-xl-v1-base", "sdxl_inpaint": "stable-diffusion-xl-v1-base",
                    "sdxl_refiner": "stable-diffusion-xl-v1-refiner"}.get(model.kind)
    if architecture is not None:
        meta |= {"modelspec.architecture": architecture, "modelspec.sai_model_spec": "1.0.0",
                 "modelspec.implementation": "sgm", "modelspec.title": title}
    meta["modelspec.predict_key"] = "v" if model.sampling.prediction == "v_prediction" else "epsilon"
    return meta


__all__ = ["UNET_KEY_PREFIX", "VAE_KEY_PREFIX", "checkpoint_metadata", "checkpoint_state", "patched_text_encoders",
           "text_encoder_states", "transformers_text_state", "unet_state", "vae_state"]
