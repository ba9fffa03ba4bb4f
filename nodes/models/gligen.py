"""GLIGEN (grounded generation): text boxes steer where things appear, through gated self-attention.

A GLIGEN file holds one "fuser" per transformer block of an SD1 U-Net (`...input_blocks.N.1.transformer_blocks.0
.fuser.*`, in input -> middle -> output order) and a `position_net` that turns (box, phrase embedding)
pairs into grounding tokens. They are diffusers' GatedSelfAttentionDense and GLIGENTextBoundingboxProjection.

While sampling, each transformer block's hidden state after its self-attention becomes
    x + tanh(alpha_attn) * attn(norm1([x, objs]))[:, :n] (then the gated feed-forward)
for the U-Net calls of conditioning that carries boxes (GLIGENTextBoxApply); other calls are untouched.
The fusers are installed as a model patch for the run (`model_patch()` of the conditioning's addition).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.models.attention import GatedSelfAttentionDense
from diffusers.models.embeddings import GLIGENTextBoundingboxProjection

from nodes.base.errors import ModelLoadError
from nodes.base.handles import _Handle

from .model_patches import ActivePatches, ModelPatch, block_of

MAX_OBJECTS = 30  # the published models' number of box slots
KWARG = "sumie_gligen"  # the cross_attention_kwargs entry that carries one call's grounding tokens
_ORDER = {"input_blocks": 0, "middle_block": 1, "output_blocks": 2}
_FUSER = re.compile(r"(input_blocks|middle_block|output_blocks)\.(?:(\d+)\.)?\d+\.transformer_blocks\.(\d+)$")


@dataclass(frozen=True, kw_only=True, eq=False)
class GligenModel(_Handle):
    """GLIGEN: the fusers (one per transformer block) and the box/phrase projection."""

    fusers: torch.nn.ModuleList
    position_net: GLIGENTextBoundingboxProjection
    key_dim: int
    source: Path | None = None


def build_gligen(sd: Mapping[str, torch.Tensor], path: Path, *, dtype: torch.dtype | None = None) -> GligenModel:
    """A GLIGEN from its file (any prefix before input_blocks / position_net)."""
    groups: dict[tuple[int, int, int], dict[str, torch.Tensor]] = {}
    net: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if ".fuser." in key:
            prefix, sub = key.split(".fuser.", 1)
            m = _FUSER.search(prefix)
            if m is None:
                raise ModelLoadError(path, f"GLIGEN fuser key {key!r} is not under input/middle/output blocks")
            groups.setdefault((_ORDER[m.group(1)], int(m.group(2) or 0), int(m.group(3))), {})[sub] = value
        elif "position_net." in key:
            net[key.split("position_net.", 1)[1]] = value
    if not groups or "null_positive_feature" not in net:
        raise ModelLoadError(path, "not a GLIGEN model; expected *.fuser.* and position_net.* weights")
    fusers = torch.nn.ModuleList()
    for place in sorted(groups):
        weights = groups[place]
        query_dim, key_dim = (int(n) for n in weights["linear.weight"].shape)
        heads, head_dim = (8, query_dim // 8) if key_dim == 768 else (max(1, query_dim // 64), min(64, query_dim))
        fuser = GatedSelfAttentionDense(query_dim, key_dim, heads, head_dim)
        try:
            fuser.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(path, f"GLIGEN fuser weights do not fit their layout: {exc}") from None
        fusers.append(fuser)
    in_dim, out_dim = int(net["null_positive_feature"].shape[0]), int(net["linears.4.weight"].shape[0])
    position_net = GLIGENTextBoundingboxProjection(positive_len=in_dim, out_dim=out_dim, feature_type="text-only",
                                                   fourier_freqs=int(net["null_position_feature"].shape[0]) // 8)
    try:
        position_net.load_state_dict(net, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(path, f"GLIGEN position_net weights do not fit their layout: {exc}") from None
    dtype = dtype or next(iter(sd.values())).dtype
    fusers = fusers.to(dtype).eval().requires_grad_(False)
    return GligenModel(fusers=fusers, position_net=position_net.to(dtype).eval().requires_grad_(False),
                       key_dim=in_dim, source=path)


def grounding_tokens(gligen: GligenModel, boxes: tuple[tuple[torch.Tensor, int, int, int, int], ...],
                     height: int, width: int, batch: int) -> torch.Tensor:
    """[batch, MAX_OBJECTS, dim] tokens of (phrase embedding, h, w, y, x) boxes on a height x width latent."""
    param = next(gligen.position_net.parameters())
    if len(boxes) > MAX_OBJECTS:
        raise ValueError(f"GLIGEN takes at most {MAX_OBJECTS} boxes per conditioning, got {len(boxes)}")
    coords = torch.zeros(MAX_OBJECTS, 4)
    masks = torch.zeros(MAX_OBJECTS)
    phrases = torch.zeros(MAX_OBJECTS, gligen.key_dim)
    for i, (embedding, h, w, y, x) in enumerate(boxes):
        coords[i] = torch.tensor((x / width, y / height, (x + w) / width, (y + h) / height))
        masks[i] = 1.0
        phrases[i] = embedding.reshape(-1).float()
    with torch.no_grad():
        objs = gligen.position_net(boxes=coords[None].to(param), masks=masks[None].to(param),
                                   positive_embeddings=phrases[None].to(param))
    return objs.expand(batch, -1, -1)


class GligenAddition:
    """The boxes of a conditioning entry (nodes/sampling/unet_additions); GLIGENTextBoxApply chains them."""

    def __init__(self, gligen: GligenModel, boxes: tuple[tuple[torch.Tensor, int, int, int, int], ...]) -> None:
        self.gligen, self.boxes = gligen, boxes

    def chained(self, box: tuple[torch.Tensor, int, int, int, int]) -> GligenAddition:
        return GligenAddition(self.gligen, (*self.boxes, box))

    def modules(self) -> list[torch.nn.Module]:
        return [self.gligen.fusers, self.gligen.position_net]

    def model_patch(self) -> GligenFusers:
        return GligenFusers(self.gligen)

    def prepare(self, model: Any, *, device: torch.device, dtype: torch.dtype) -> _Prepared:
        return _Prepared(self)


class _Prepared:
    def __init__(self, addition: GligenAddition) -> None:
        self.addition = addition
        self.cache: dict[tuple[int, ...], torch.Tensor] = {}

    def unet_kwargs(self, call: Any) -> dict[str, Any]:
        batch, _, h, w = call.x.shape
        key = (batch, h, w)
        if key not in self.cache:
            self.cache[key] = grounding_tokens(self.addition.gligen, self.addition.boxes, h, w, batch)
        return {"cross_attention_kwargs": {KWARG: self.cache[key]}}


@dataclass(frozen=True)
class GligenFusers(ModelPatch):
    """The fusers, each after its transformer block's self-attention, acting on calls that carry tokens."""

    gligen: GligenModel

    def install(self, active: ActivePatches) -> None:
        unet = active.unet
        blocks = [n.removesuffix(".attn1.processor") for n in unet.attn_processors if n.endswith(".attn1.processor")]
        order = {"input": 0, "middle": 1, "output": 2}

        def place(name: str) -> tuple[int, int, int]:
            (kind, number), transformer = block_of(unet, f"{name}.attn1.processor")
            return order[kind], number, transformer

        blocks.sort(key=place)
        if len(blocks) != len(self.gligen.fusers):
            raise ValueError(f"this GLIGEN model has {len(self.gligen.fusers)} fusers; the model has {len(blocks)} "
                             "transformer blocks (GLIGEN models are made for SD1 U-Nets)")
        for name, fuser in zip(blocks, self.gligen.fusers, strict=True):
            slot: dict[str, torch.Tensor] = {}
            active.module_hook(name, pre=_take_tokens(slot))
            active.module_hook(f"{name}.attn1", post=_fuse(slot, fuser))


def _take_tokens(slot: dict[str, torch.Tensor]) -> Any:
    def pre(module: Any, args: tuple, kwargs: dict) -> Any:
        slot.clear()
        extra = kwargs.get("cross_attention_kwargs")
        if not extra or KWARG not in extra:
            return None
        rest = {k: v for k, v in extra.items() if k != KWARG}
        slot["objs"] = extra[KWARG]
        slot["x"] = args[0] if args else kwargs["hidden_states"]
        return args, {**kwargs, "cross_attention_kwargs": rest or None}
    return pre


def _fuse(slot: dict[str, torch.Tensor], fuser: torch.nn.Module) -> Any:
    def post(module: Any, args: tuple, kwargs: dict, out: torch.Tensor) -> Any:
        if "objs" not in slot:
            return None
        x = slot["x"] + out  # the block's hidden state after its self-attention
        objs = slot["objs"].to(x.device, x.dtype)
        return out + (fuser(x, objs) - x)  # what the fuser adds; exactly 0 with closed gates
    return post


__all__ = ["KWARG", "MAX_OBJECTS", "GligenAddition", "GligenFusers", "GligenModel", "build_gligen",
           "grounding_tokens"]
