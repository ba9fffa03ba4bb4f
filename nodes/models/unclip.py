"""SD2.1 unCLIP checkpoints: a U-Net conditioned on a (noise-augmented) CLIP image embedding.

The file is an SD2 checkpoint plus `model.diffusion_model.label_emb.0.{0,2}` (the image embedding's
projection into the time embedding: diffusers' `class_embedding` with class_embed_type "projection"),
the image encoder under `embedder.model.visual.` and the noise augmentor's schedule.

What the U-Net receives as `class_labels` (diffusers' StableUnCLIP pipeline does the same): the image
embedding noised to `noise_augmentation` of a squared-cosine 1000-step schedule, concatenated with the
sinusoidal embedding of that noise level, times `strength`; several are summed and noised again at 5 %.
Conditioning without an image embedding gets zeros (a model patch supplies them), as ComfyUI does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DDPMScheduler
from diffusers.models.embeddings import TimestepEmbedding, get_timestep_embedding

from nodes.base.errors import ModelLoadError

from .model_patches import ActivePatches, ModelPatch

LABEL_PREFIX = "model.diffusion_model.label_emb.0."
VISION_PREFIX = "embedder.model.visual."
AUGMENTOR_PREFIX = "noise_augmentor."
MAX_NOISE_LEVEL = 1000
AUGMENTOR_OPTION = "unclip_noise_augmentor"  # ModelHandle.options key of the checkpoint's NoiseAugmentor
MERGE_NOISE = 0.05  # ComfyUI's unclip_noise_augment_merge: several embeddings are summed, then noised this much


def split_unclip(sd: Mapping[str, torch.Tensor], path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(the plain SD2 checkpoint's weights, {"label": ..., "vision": ..., "augmentor": ...})."""
    if f"{LABEL_PREFIX}0.weight" not in sd:
        raise ModelLoadError(path, f"not an unCLIP checkpoint: no {LABEL_PREFIX}0.weight (the image-embedding "
                                   "projection); load ordinary checkpoints with CheckpointLoaderSimple")
    rest: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[str, torch.Tensor]] = {"label": {}, "vision": {}, "augmentor": {}}
    for key, value in sd.items():
        for prefix, part in ((LABEL_PREFIX, "label"), ("embedder.", "vision"), (AUGMENTOR_PREFIX, "augmentor")):
            if key.startswith(prefix):
                parts[part][key[len(prefix):] if part != "vision" else key] = value
                break
        else:
            rest[key] = value
    return rest, parts


def attach_class_embedding(unet: Any, label: Mapping[str, torch.Tensor], path: Path) -> int:
    """Give the U-Net its image-embedding projection (diffusers' "projection" class embedding); returns its width."""
    try:
        w1, b1, w2, b2 = label["0.weight"], label["0.bias"], label["2.weight"], label["2.bias"]
    except KeyError as exc:
        raise ModelLoadError(path, f"unCLIP projection lacks label_emb.0.{exc.args[0]}") from None
    adm, time_dim = int(w1.shape[1]), int(w1.shape[0])
    if time_dim != unet.time_embedding.linear_2.out_features:
        raise ModelLoadError(path, f"unCLIP projection is {time_dim} wide; the U-Net's time embedding is "
                                   f"{unet.time_embedding.linear_2.out_features}")
    embedding = TimestepEmbedding(adm, time_dim)
    embedding.load_state_dict({"linear_1.weight": w1, "linear_1.bias": b1, "linear_2.weight": w2,
                               "linear_2.bias": b2})
    unet.class_embedding = embedding.to(device=unet.device, dtype=unet.dtype).requires_grad_(False)
    unet.register_to_config(class_embed_type="projection", projection_class_embeddings_input_dim=adm)
    return adm


@dataclass(frozen=True, kw_only=True, eq=False)
class NoiseAugmentor:
    """The embedding's noise augmentation: optional data statistics and a squared-cosine schedule."""

    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    @classmethod
    def from_weights(cls, weights: Mapping[str, torch.Tensor]) -> NoiseAugmentor:
        return cls(mean=weights.get("data_mean"), std=weights.get("data_std"))

    def __call__(self, embeds: torch.Tensor, level: int, gen: torch.Generator) -> torch.Tensor:
        """[B, dim] embedding -> [B, 2 * dim]: the noised embedding and its noise level's embedding."""
        x = embeds.float()
        if self.mean is not None and self.std is not None:
            x = (x - self.mean.to(x)) / self.std.to(x)
        scheduler = DDPMScheduler(num_train_timesteps=MAX_NOISE_LEVEL, beta_schedule="squaredcos_cap_v2")
        t = torch.full((x.shape[0],), level, dtype=torch.long)
        noise = torch.randn(x.shape, generator=gen)
        x = scheduler.add_noise(x, noise, t)
        if self.mean is not None and self.std is not None:
            x = x * self.std.to(x) + self.mean.to(x)
        level_emb = get_timestep_embedding(t, x.shape[-1], flip_sin_to_cos=True, downscale_freq_shift=0)
        return torch.cat([x, level_emb.to(x)], dim=1)


def noise_level(augmentation: float) -> int:
    return round((MAX_NOISE_LEVEL - 1) * augmentation)


def unclip_labels(items: Sequence[tuple[torch.Tensor, float, float]], augmentor: NoiseAugmentor,
                  seed: int = 0) -> torch.Tensor:
    """The U-Net's class_labels [1, adm] of (image_embeds, strength, noise_augmentation) items (ComfyUI's rule)."""
    gen = torch.Generator().manual_seed(seed)
    outs = [augmentor(e[None], noise_level(aug), gen) * strength
            for embeds, strength, aug in items for e in embeds.float()]
    if len(outs) == 1:
        return outs[0]
    summed = torch.stack(outs).sum(0)
    return augmentor(summed[:, : summed.shape[1] // 2], noise_level(MERGE_NOISE), gen)


class UnclipAddition:
    """A conditioning entry's image embeddings, handed to the U-Net as class_labels (nodes/sampling/unet_additions)."""

    def __init__(self, items: tuple[tuple[torch.Tensor, float, float], ...]) -> None:
        self.items = items

    def chained(self, embeds: torch.Tensor, strength: float, augmentation: float) -> UnclipAddition:
        return UnclipAddition((*self.items, (embeds, strength, augmentation)))

    def modules(self) -> list[torch.nn.Module]:
        return []

    def prepare(self, model: Any, *, device: torch.device, dtype: torch.dtype) -> _Prepared:
        labels = unclip_labels(self.items, model.options.get(AUGMENTOR_OPTION) or NoiseAugmentor())
        width = model.unet.config.projection_class_embeddings_input_dim
        if getattr(model.unet, "class_embedding", None) is None or labels.shape[1] != width:
            raise ValueError("unCLIPConditioning needs an unCLIP model whose image embedding is "
                             f"{(width or 0) // 2} wide; got {labels.shape[1] // 2}")
        return _Prepared(labels.to(device, dtype))


class _Prepared:
    def __init__(self, labels: torch.Tensor) -> None:
        self.labels = labels

    def unet_kwargs(self, call: Any) -> dict[str, Any]:
        return {"class_labels": self.labels.expand(call.x.shape[0], -1)}


@dataclass(frozen=True)
class ZeroImageEmbedding(ModelPatch):
    """unCLIP models: U-Net calls of conditioning without an image embedding get zero class labels."""

    width: int

    def install(self, active: ActivePatches) -> None:
        def wrapper(forward: Any, args: tuple, kwargs: dict, info: dict) -> Any:
            if kwargs.get("class_labels") is None:
                x = args[0] if args else kwargs["sample"]
                kwargs = {**kwargs, "class_labels": torch.zeros(x.shape[0], self.width, device=x.device,
                                                                dtype=x.dtype)}
            return forward(*args, **kwargs)

        active.unet_wrapper(wrapper)


__all__ = ["AUGMENTOR_OPTION", "NoiseAugmentor", "UnclipAddition", "ZeroImageEmbedding", "attach_class_embedding",
           "noise_level", "split_unclip", "unclip_labels"]
