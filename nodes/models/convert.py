"""Turn original-layout (LDM) weights into diffusers / transformers modules, offline.

Key renaming is diffusers' own (``diffusers.loaders.single_file_utils``); this module adds only the
glue: prefixes, strict key and shape checks (a wrong file must fail loudly, not load half random),
and building each module on the meta device so no time is spent initialising weights that the
checkpoint overwrites.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from nodes.base.errors import ModelLoadError

from .detect import SD1_CLIP_PREFIX, UNET_PREFIX, TextEncoderSpec
from .weights_file import release_file_pages

TextEncoder = CLIPTextModel | CLIPTextModelWithProjection
M = TypeVar("M", bound=torch.nn.Module)

_OPEN_CLIP_PREFIX = "open_clip."  # neutral prefix: diffusers drops SD2's last layer only under its real one
_IGNORED_CLIP_KEYS = ("embeddings.position_ids",)  # a buffer older transformers saved; rebuilt here


def storage_dtype(sd: Mapping[str, torch.Tensor]) -> torch.dtype:
    """The floating dtype most of the tensors use (what the file was saved in)."""
    counts = Counter(v.dtype for v in sd.values() if v.is_floating_point())
    return counts.most_common(1)[0][0] if counts else torch.float32


def _materialise(
    factory: Callable[[], M],
    weights: Mapping[str, torch.Tensor],
    *,
    what: str,
    path: Path | None,
    dtype: torch.dtype | None,
    device: str | torch.device,
) -> M:
    """Build ``factory()`` without initialising it, then load ``weights`` strictly into it."""
    with torch.device("meta"):
        model = factory()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise ModelLoadError(path, f"{what} weights do not fit the detected architecture: {'; '.join(parts)}")
    for key, tensor in expected.items():
        if tuple(weights[key].shape) != tuple(tensor.shape):
            raise ModelLoadError(path, f"{what} weight {key!r} has shape {tuple(weights[key].shape)}; "
                                       f"expected {tuple(tensor.shape)}")
    target = dtype or storage_dtype(weights)
    model.load_state_dict(_cast(weights, target), strict=True, assign=True)
    for module in model.modules():  # non-persistent buffers are not in any file: rebuild them
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.is_meta:
                if name != "position_ids":
                    raise ModelLoadError(path, f"{what}: cannot rebuild buffer {name!r}")
                module._buffers[name] = torch.arange(buffer.shape[-1]).expand(buffer.shape)
    return model.to(device).eval()


def _cast(weights: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating weights in `dtype`, one tensor at a time: the file's copy of each cast tensor leaves
    memory as soon as it is cast, so casting never holds two copies of the model."""
    out = {}
    for key, value in weights.items():
        if value.is_floating_point() and value.dtype != dtype:
            out[key] = value.to(dtype)
            release_file_pages(value)
        else:
            out[key] = value
    return out


def _check_all_used(source: Mapping[str, Any], converted: Mapping[str, Any], what: str, path: Path | None) -> None:
    """diffusers' converters skip keys they do not know; a skipped weight means a wrong architecture."""
    if len(converted) < len(source) or any(v is None for v in converted.values()):
        raise ModelLoadError(path, f"{what}: {len(source)} weights in the file but only "
                                   f"{sum(v is not None for v in converted.values())} map onto the detected "
                                   "architecture; expected every weight to be used")


def build_unet(
    ldm_unet: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    *,
    path: Path | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> UNet2DConditionModel:
    """A diffusers UNet from LDM UNet weights (keys without ``model.diffusion_model.``)."""
    prefixed = {UNET_PREFIX + k: v for k, v in ldm_unet.items()}
    try:
        weights = convert_ldm_unet_checkpoint(prefixed, dict(config))
    except (KeyError, IndexError, AttributeError) as exc:
        raise ModelLoadError(path, f"UNet weights do not follow the expected LDM layout (missing {exc})") from None
    _check_all_used(ldm_unet, weights, "UNet", path)
    return _materialise(lambda: UNet2DConditionModel(**config), weights, what="UNet", path=path,
                        dtype=dtype, device=device)


def build_vae(
    ldm_vae: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    *,
    path: Path | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> AutoencoderKL:
    """A diffusers ``AutoencoderKL`` from LDM VAE weights (keys without ``first_stage_model.``)."""
    # Training leftovers (the discriminator/loss, EMA copies) are not part of the model.
    source = {k: v for k, v in ldm_vae.items() if not k.startswith(("loss.", "model_ema."))}
    try:
        weights = convert_ldm_vae_checkpoint(source, dict(config))
    except (KeyError, IndexError, AttributeError) as exc:
        raise ModelLoadError(path, f"VAE weights do not follow the expected LDM layout (missing {exc})") from None
    _check_all_used(source, weights, "VAE", path)
    return _materialise(lambda: AutoencoderKL(**config), weights, what="VAE", path=path, dtype=dtype, device=device)


def build_diffusers_vae(
    vae: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    *,
    path: Path | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> AutoencoderKL:
    """A diffusers ``AutoencoderKL`` from weights already in diffusers' layout (normalised names)."""
    return _materialise(lambda: AutoencoderKL(**config), vae, what="VAE", path=path, dtype=dtype, device=device)


def text_encoder_weights(te: Mapping[str, torch.Tensor], spec: TextEncoderSpec, model: torch.nn.Module,
                         path: Path | None = None) -> dict[str, torch.Tensor]:
    """transformers-layout weights (``text_model.*`` + ``text_projection.weight``) for one encoder."""
    if spec.layout == "open_clip":
        prefixed = {_OPEN_CLIP_PREFIX + k: v for k, v in te.items()}
        weights = convert_open_clip_checkpoint(model, prefixed, prefix=_OPEN_CLIP_PREFIX)
        known = {k for k in te if k.startswith("transformer.resblocks.")}
        known |= {"token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias",
                  "text_projection"} & set(te)
        if len(weights) < len(known):
            raise ModelLoadError(path, f"OpenCLIP weights do not map onto a {spec.config['num_hidden_layers']}-layer "
                                       "text encoder; expected the OpenCLIP text-tower layout")
    else:
        tower = {k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v
                 for k, v in te.items()}
        weights = convert_ldm_clip_checkpoint({SD1_CLIP_PREFIX + k: v for k, v in tower.items()})
    weights = {k: v for k, v in weights.items() if not k.endswith(_IGNORED_CLIP_KEYS)}
    if not spec.with_projection:  # CLIPTextModel is flat in transformers 5 and has no projection
        weights = {k.removeprefix("text_model."): v for k, v in weights.items() if not k.startswith("text_projection")}
    return weights


def build_text_encoder(
    te: Mapping[str, torch.Tensor],
    spec: TextEncoderSpec,
    *,
    path: Path | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> TextEncoder:
    """A transformers CLIP text model from one encoder's weights (keys without the spec's prefix)."""
    config = CLIPTextConfig(**spec.config)
    cls = CLIPTextModelWithProjection if spec.with_projection else CLIPTextModel
    with torch.device("meta"):
        probe = cls(config)
    weights = text_encoder_weights(te, spec, probe, path)
    return _materialise(lambda: cls(config), weights, what=f"text encoder {spec.name}", path=path,
                        dtype=dtype, device=device)
