"""Public loaders: whole checkpoints, single components, and diffusers-format folders.

Nothing here touches the network: models are built from configs inferred from the weights
(``detect``) and filled by ``convert``; diffusers folders are read with ``local_files_only=True``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from nodes.base.errors import ModelLoadError

from .convert import TextEncoder, build_diffusers_vae, build_text_encoder, build_unet, build_vae
from .detect import (
    SD_VAE_SCALE,
    SDXL_VAE_SCALE,
    UNET_PREFIX,
    VAE_PREFIX,
    CheckpointInfo,
    TextEncoderSpec,
    _check_prediction_type,
    _strip,
    detect_checkpoint,
    detect_text_encoders,
    detect_unet,
    is_diffusers_vae,
    normalize_diffusers_vae,
    open_clip_spec,
    transformers_clip_spec,
    vae_config_from_diffusers,
    vae_config_from_ldm,
)
from .weights_file import read_state_dict

_VAE_PREFIXES = (VAE_PREFIX, "vae.")


@dataclass(kw_only=True)
class LoadedCheckpoint:
    """The modules of one model file, ready to run; parts absent from a component file are ``None``/empty."""

    path: Path
    info: CheckpointInfo
    unet: UNet2DConditionModel | None = None
    vae: AutoencoderKL | None = None
    text_encoders: list[TextEncoder] = field(default_factory=list)


@dataclass(kw_only=True)
class LoadedTextEncoder:
    """One text encoder from a component file, with what its tokenizer and conditioning need."""

    path: Path
    model: TextEncoder
    spec: TextEncoderSpec


def load_checkpoint(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    prediction_type: str | None = None,
    vae_dtype: torch.dtype | None = None,
) -> LoadedCheckpoint:
    """Load a single-file SD1/SD2/SDXL checkpoint (or a diffusers folder) into diffusers modules.

    ``dtype=None`` keeps each part in the dtype it was saved in; ``vae_dtype`` (default ``dtype``)
    casts the VAE straight from the file's values, never through the U-Net's precision.
    ``prediction_type`` overrides the detected one ("epsilon" or "v_prediction"), since SD2 768-v
    files carry no flag.
    """
    path = Path(path)
    if path.is_dir():
        ckpt = load_diffusers_folder(path, device=device, dtype=dtype, prediction_type=prediction_type)
        if vae_dtype is not None and ckpt.vae is not None:
            ckpt.vae = ckpt.vae.to(vae_dtype)
        return ckpt
    return checkpoint_from_state_dict(read_state_dict(path), path=path, device=device, dtype=dtype,
                                      prediction_type=prediction_type, vae_dtype=vae_dtype)


def _take(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove and return one component's weights, so the source dict stops holding them."""
    keys = [k for k in sd if k.startswith(prefix)]
    return {k[len(prefix) :]: sd.pop(k) for k in keys}


def checkpoint_from_state_dict(
    sd: Mapping[str, torch.Tensor],
    *,
    path: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    prediction_type: str | None = None,
    vae_dtype: torch.dtype | None = None,
) -> LoadedCheckpoint:
    """Build the modules of a full checkpoint already in memory (original key layout).

    ``path`` is only used in error messages and the result.
    """
    path = Path(path) if path is not None else Path("<state dict>")
    info = detect_checkpoint(sd, prediction_type=prediction_type, path=path)
    assert info.unet_config is not None and info.vae_config is not None
    remaining = dict(sd)
    unet = build_unet(_take(remaining, UNET_PREFIX), info.unet_config, path=path, dtype=dtype, device=device)
    vae = build_vae(_take(remaining, VAE_PREFIX), info.vae_config, path=path, dtype=vae_dtype or dtype,
                    device=device)
    encoders = [build_text_encoder(_take(remaining, spec.prefix), spec, path=path, dtype=dtype, device=device)
                for spec in info.text_encoders]
    return LoadedCheckpoint(path=path, info=info, unet=unet, vae=vae, text_encoders=encoders)


def load_unet(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    prediction_type: str | None = None,
) -> LoadedCheckpoint:
    """Load only the UNet of a file: a bare LDM UNet (``input_blocks.*``) or a full checkpoint."""
    path = Path(path)
    _check_prediction_type(prediction_type)
    sd = read_state_dict(path)
    if any(k.startswith(UNET_PREFIX) for k in sd):
        unet_sd = _strip(sd, UNET_PREFIX)
    elif "input_blocks.0.0.weight" in sd:
        unet_sd = dict(sd)
    else:
        raise ModelLoadError(path, "no UNet weights; expected original-layout keys (input_blocks.*, optionally "
                                   f"under {UNET_PREFIX})")
    te_family, encoders = detect_text_encoders(sd, path=path)
    pooled = encoders[-1].config["projection_dim"] if te_family and te_family.startswith("sdxl") else None
    if "v_pred" in sd and prediction_type is None:
        prediction_type = "v_prediction"
    kind, pred, config = detect_unet(unet_sd, te_family=te_family, pooled_dim=pooled,
                                     prediction_type=prediction_type, path=path)
    scale = SDXL_VAE_SCALE if kind.startswith("sdxl") else SD_VAE_SCALE
    info = CheckpointInfo(kind=kind, prediction_type=pred, vae_scaling_factor=scale, unet_config=config)
    unet = build_unet(unet_sd, config, path=path, dtype=dtype, device=device)
    return LoadedCheckpoint(path=path, info=info, unet=unet)


def load_vae(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    scaling_factor: float | None = None,
) -> AutoencoderKL:
    """Load a VAE from a bare VAE file (original or diffusers key layout) or from a full checkpoint.

    A VAE's shapes do not reveal its latent scale: a full checkpoint implies it (SDXL 0.13025,
    else 0.18215); for a bare file pass ``scaling_factor`` or get 0.18215.
    """
    path = Path(path)
    sd = read_state_dict(path)
    prefix = next((p for p in _VAE_PREFIXES if any(k.startswith(p) for k in sd)), "")
    vae_sd = _strip(sd, prefix) if prefix else dict(sd)
    if "encoder.conv_in.weight" not in vae_sd:
        raise ModelLoadError(path, "no VAE weights; expected encoder.*/decoder.* keys, optionally under "
                                   f"{VAE_PREFIX}")
    if scaling_factor is None:
        sdxl = any(k.startswith("conditioner.embedders.") for k in sd)
        scaling_factor = SDXL_VAE_SCALE if sdxl else SD_VAE_SCALE
    if is_diffusers_vae(vae_sd):  # e.g. a diffusion_pytorch_model.safetensors taken out of its folder
        vae_sd = normalize_diffusers_vae(vae_sd)
        config = vae_config_from_diffusers(vae_sd, scaling_factor=scaling_factor, path=path)
        return build_diffusers_vae(vae_sd, config, path=path, dtype=dtype, device=device)
    config = vae_config_from_ldm(vae_sd, scaling_factor=scaling_factor, path=path)
    return build_vae(vae_sd, config, path=path, dtype=dtype, device=device)


def _bare_text_encoder_spec(sd: Mapping[str, torch.Tensor], path: Path) -> TextEncoderSpec:
    """A text-encoder file without checkpoint prefixes, in transformers' or OpenCLIP's layout.

    Shapes cannot give the activation: by convention 1024/1280-wide towers are OpenCLIP-H/G (gelu),
    anything else OpenAI CLIP (quick_gelu).
    """
    if "token_embedding.weight" in sd:
        hidden = int(sd["token_embedding.weight"].shape[1])
        return open_clip_spec(sd, prefix="", name="clip_h" if hidden == 1024 else "clip_g",
                              with_projection="text_projection" in sd, path=path)
    keys = {k.removeprefix("text_model.") for k in sd}
    if "embeddings.token_embedding.weight" not in keys:
        raise ModelLoadError(path, "no text-encoder weights; expected CLIP keys (text_model.* or OpenCLIP "
                                   "token_embedding/transformer.resblocks.*), optionally under a checkpoint prefix")
    spec = transformers_clip_spec(sd, prefix="", path=path)
    hidden = spec.config["hidden_size"]
    if hidden in (1024, 1280):
        config = {**spec.config, "hidden_act": "gelu", "pad_token_id": 0}
        with_proj = "text_projection.weight" in sd
        if with_proj:
            config["projection_dim"] = int(sd["text_projection.weight"].shape[0])
        return TextEncoderSpec(name="clip_h" if hidden == 1024 else "clip_g", prefix="", layout="transformers",
                               config=config, with_projection=with_proj, pad="open_clip", default_layer=-2)
    return spec


def load_text_encoder(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    which: int | None = None,
) -> LoadedTextEncoder:
    """Load one text encoder from a bare CLIP/OpenCLIP file or from a full checkpoint.

    A file with several encoders (SDXL: 0 = CLIP-L, 1 = OpenCLIP-G) needs ``which``.
    """
    path = Path(path)
    sd = read_state_dict(path)
    _, specs = detect_text_encoders(sd, path=path)
    if not specs:
        specs = (_bare_text_encoder_spec(sd, path),)
    if which is None:
        if len(specs) != 1:
            names = ", ".join(f"{i}={s.name}" for i, s in enumerate(specs))
            raise ModelLoadError(path, f"holds {len(specs)} text encoders ({names}); pass which= to pick one")
        which = 0
    if not 0 <= which < len(specs):
        raise ModelLoadError(path, f"has {len(specs)} text encoder(s); which={which} is out of range")
    spec = specs[which]
    te_sd = _strip(sd, spec.prefix) if spec.prefix else dict(sd)
    model = build_text_encoder(te_sd, spec, path=path, dtype=dtype, device=device)
    return LoadedTextEncoder(path=path, model=model, spec=spec)


# --------------------------------------------------------------------------- diffusers folders


def _folder_text_spec(model: TextEncoder, *, default_layer: int) -> TextEncoderSpec:
    config = model.config.to_dict()
    hidden = int(config["hidden_size"])
    openclip = config.get("hidden_act") == "gelu"
    name = "clip_l" if not openclip else ("clip_h" if hidden == 1024 else "clip_g")
    return TextEncoderSpec(name=name, prefix="", layout="transformers", config=config,
                           with_projection=isinstance(model, CLIPTextModelWithProjection),
                           pad="open_clip" if openclip else "sd1", default_layer=default_layer)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(path, f"cannot read JSON config: {exc}") from None


def load_diffusers_folder(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    prediction_type: str | None = None,
) -> LoadedCheckpoint:
    """Load a diffusers-format folder (``model_index.json`` + subfolders) from local files only."""
    path = Path(path)
    _check_prediction_type(prediction_type)
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise ModelLoadError(path, "folder has no model_index.json; expected a diffusers pipeline folder")
    index = _read_json(index_file)
    parts = {name for name, value in index.items() if isinstance(value, list) and value[0] is not None}
    for needed in ("unet", "vae"):
        if needed not in parts:
            raise ModelLoadError(path, f"model_index.json lists no {needed}; expected unet, vae and text encoder(s)")
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    try:
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **kwargs)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **kwargs)
        encoders: list[TextEncoder] = []
        if "text_encoder" in parts:
            encoders.append(CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **kwargs))
        if "text_encoder_2" in parts:
            encoders.append(CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder_2", **kwargs))
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(path, f"cannot load diffusers folder: {exc}") from None
    if not encoders:
        raise ModelLoadError(path, "model_index.json lists no text encoder; expected text_encoder(_2)")

    sdxl = unet.config.addition_embed_type == "text_time"
    if sdxl:
        kind = "sdxl" if "text_encoder" in parts else "sdxl_refiner"
    else:
        kind = "sd2" if unet.config.use_linear_projection else "sd1"
    if unet.config.in_channels == 9 and kind != "sdxl_refiner":
        kind += "_inpaint"
    if prediction_type is None:
        scheduler = path / "scheduler" / "scheduler_config.json"
        prediction_type = _read_json(scheduler).get("prediction_type", "epsilon") if scheduler.is_file() else "epsilon"
    # diffusers stores SD2 with its last text layer already removed, so its last layer is the one used.
    default_layer = -2 if sdxl else -1
    specs = tuple(_folder_text_spec(m, default_layer=default_layer) for m in encoders)
    info = CheckpointInfo(kind=kind, prediction_type=prediction_type,  # type: ignore[arg-type]
                          vae_scaling_factor=float(vae.config.scaling_factor),
                          unet_config=dict(unet.config), vae_config=dict(vae.config), text_encoders=specs)
    return LoadedCheckpoint(path=path, info=info, unet=unet.to(device).eval(), vae=vae.to(device).eval(),
                            text_encoders=[m.to(device).eval() for m in encoders])


__all__ = [
    "LoadedCheckpoint",
    "checkpoint_from_state_dict",
    "LoadedTextEncoder",
    "load_checkpoint",
    "load_diffusers_folder",
    "load_text_encoder",
    "load_unet",
    "load_vae",
]
