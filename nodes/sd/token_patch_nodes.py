"""HyperTile and TomePatchModel: cheaper self-attention at the full-resolution layers, ComfyUI's names/inputs.

Both act through attention patches (nodes/models/model_patches.py) on the self-attention ("attn1")
layers whose token count is the latent's (or, for HyperTile, a few levels deeper):
- HyperTile splits the tokens into tiles and attends within each tile (Fernandez, 2023);
- ToMe merges the most similar query tokens before attention and copies results back after (Bolya &
  Hoffman, 2023).
Their random choices come from a generator seeded per sampling run, so a run is reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from graph import BooleanInput, FloatInput, InputSpec, IntInput, Node, NodeSchema, OutputSpec
from nodes.base.handles import ModelHandle
from nodes.models.model_patches import ActivePatches, ModelPatch

from .unet_patch_nodes import check_model

_MODEL_OUT = [OutputSpec(type="MODEL", name="MODEL")]


# ------------------------------------------------------------------------------- HyperTile


def random_divisor(value: int, min_value: int, max_options: int, rng: random.Random) -> int:
    """A tile count for `value` tokens: one of the `max_options` largest counts whose tiles are >= min_value."""
    min_value = min(min_value, value)
    sizes = [i for i in range(min_value, value + 1) if value % i == 0]
    counts = [value // i for i in sizes[:max_options]]
    return counts[rng.randint(0, len(counts) - 1)]


def tile(x: torch.Tensor, nh: int, nw: int, h: int, w: int) -> torch.Tensor:
    """[B, h*w, C] row-major tokens -> [B*nh*nw, (h/nh)*(w/nw), C], one entry per tile."""
    b, _, c = x.shape
    x = x.reshape(b, nh, h // nh, nw, w // nw, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b * nh * nw, (h // nh) * (w // nw), c)


def untile(x: torch.Tensor, nh: int, nw: int, h: int, w: int) -> torch.Tensor:
    bt, _, c = x.shape
    x = x.reshape(bt // (nh * nw), nh, nw, h // nh, w // nw, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(bt // (nh * nw), h * w, c)


@dataclass(frozen=True)
class HyperTilePatch(ModelPatch):
    tile_size: int
    swap_size: int
    max_depth: int
    scale_depth: bool

    def install(self, active: ActivePatches) -> None:
        latent_tile = max(32, self.tile_size) // 8
        rng = random.Random(1)
        state: dict[str, Any] = {}

        def when(info: dict[str, Any]) -> bool:
            state.pop("tiles", None)
            _, _, oh, ow = info.get("original_shape", (0, 0, 0, 0))
            for depth in range(self.max_depth + 1):
                h, w = oh // 2**depth, ow // 2**depth
                if h * w == info["tokens"] and h * 2**depth == oh and w * 2**depth == ow:
                    factor = 2**depth if self.scale_depth else 1
                    nh = random_divisor(h, latent_tile * factor, self.swap_size, rng)
                    nw = random_divisor(w, latent_tile * factor, self.swap_size, rng)
                    if nh * nw > 1:
                        state["tiles"] = (nh, nw, h, w)
                        return True
            return False

        active.attention("attn1", when=when, input=lambda q, k, v, info: (tile(q, *state["tiles"]),) * 3,
                         output=lambda out, info: untile(out, *state["tiles"]))


class HyperTile(Node):
    SCHEMA = NodeSchema(node_type="HyperTile", display_name="HyperTile", category="model_patches/unet",
                        description="Self-attention within tiles at the highest resolutions: faster large images.",
                        inputs=[InputSpec(name="model", type="MODEL"),
                                IntInput(name="tile_size", default=256, min=1, max=2048),
                                IntInput(name="swap_size", default=2, min=1, max=128),
                                IntInput(name="max_depth", default=0, min=0, max=10),
                                BooleanInput(name="scale_depth", default=False)],
                        outputs=_MODEL_OUT)

    def execute(self, ctx, *, model: ModelHandle, tile_size: int, swap_size: int, max_depth: int,
                scale_depth: bool) -> tuple[ModelHandle]:
        model = check_model("HyperTile", model)
        return (model.with_patches(HyperTilePatch(int(tile_size), int(swap_size), int(max_depth), bool(scale_depth))),)


# ------------------------------------------------------------------------------- ToMe

Merge = Callable[[torch.Tensor], torch.Tensor]


def bipartite_merge(metric: torch.Tensor, h: int, w: int, r: int, generator: torch.Generator | None = None,
                    stride: int = 2) -> tuple[Merge, Merge]:
    """ToMe's bipartite soft matching on a [B, h*w, C] token grid: (merge, unmerge).

    One random token of every stride x stride cell is a destination; the r source tokens most similar
    (cosine) to some destination are averaged into it. `unmerge` copies each merged result back to
    every token it came from.
    """
    b, n, _ = metric.shape
    if r <= 0 or h == 1 or w == 1:
        return (lambda x: x), (lambda x: x)
    device = metric.device
    rows, cols = h // stride, w // stride
    pick = torch.randint(stride * stride, (rows, cols, 1), generator=generator).to(device)
    marks = torch.zeros(rows, cols, stride * stride, dtype=torch.int64, device=device)
    marks.scatter_(2, pick, -1)  # -1 marks a destination
    marks = marks.view(rows, cols, stride, stride).transpose(1, 2).reshape(rows * stride, cols * stride)
    grid = torch.zeros(h, w, dtype=torch.int64, device=device)
    grid[:rows * stride, :cols * stride] = marks
    order = grid.reshape(1, -1, 1).argsort(dim=1)  # destinations first, then sources
    n_dst = rows * cols
    src_pos, dst_pos = order[:, n_dst:], order[:, :n_dst]

    def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = x.shape[-1]
        return (torch.gather(x, 1, src_pos.expand(x.shape[0], n - n_dst, c)),
                torch.gather(x, 1, dst_pos.expand(x.shape[0], n_dst, c)))

    with torch.no_grad():
        a, bb = split(metric / metric.norm(dim=-1, keepdim=True))
        best, best_dst = (a @ bb.transpose(-1, -2)).max(dim=-1)
        r = min(a.shape[1], r)
        ranked = best.argsort(dim=-1, descending=True)[..., None]
        kept, merged = ranked[:, r:], ranked[:, :r]
        merged_dst = torch.gather(best_dst[..., None], 1, merged)

    def merge(x: torch.Tensor) -> torch.Tensor:
        src, dst = split(x)
        bx, ns, c = src.shape
        unmerged = torch.gather(src, 1, kept.expand(bx, ns - r, c))
        moving = torch.gather(src, 1, merged.expand(bx, r, c))
        dst = dst.scatter_reduce(1, merged_dst.expand(bx, r, c), moving, reduce="mean")
        return torch.cat([unmerged, dst], dim=1)

    def unmerge(x: torch.Tensor) -> torch.Tensor:
        n_kept = kept.shape[1]
        bx, _, c = x.shape
        unmerged, dst = x[:, :n_kept], x[:, n_kept:]
        out = torch.zeros(bx, n, c, device=x.device, dtype=x.dtype)
        out.scatter_(1, dst_pos.expand(bx, n_dst, c), dst)
        kept_pos = torch.gather(src_pos.expand(b, -1, 1), 1, kept)
        merged_pos = torch.gather(src_pos.expand(b, -1, 1), 1, merged)
        out.scatter_(1, kept_pos.expand(bx, n_kept, c), unmerged)
        out.scatter_(1, merged_pos.expand(bx, r, c), torch.gather(dst, 1, merged_dst.expand(bx, r, c)))
        return out

    return merge, unmerge


@dataclass(frozen=True)
class TomePatch(ModelPatch):
    ratio: float

    def install(self, active: ActivePatches) -> None:
        generator = torch.Generator().manual_seed(0)
        state: dict[str, Merge] = {}

        def when(info: dict[str, Any]) -> bool:
            _, _, oh, ow = info.get("original_shape", (0, 0, 0, 0))
            return info["tokens"] == oh * ow  # the full-resolution layers only

        def merge_queries(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, info: dict[str, Any]) -> tuple:
            _, _, oh, ow = info["original_shape"]
            merge, state["unmerge"] = bipartite_merge(q, oh, ow, int(q.shape[1] * self.ratio), generator)
            return merge(q), k, v

        active.attention("attn1", when=when, input=merge_queries, output=lambda out, info: state["unmerge"](out))


class TomePatchModel(Node):
    SCHEMA = NodeSchema(node_type="TomePatchModel", display_name="TomePatchModel", category="model_patches/unet",
                        description="Token merging: the most similar query tokens of the full-resolution "
                                    "self-attention are merged (faster, slightly softer).",
                        inputs=[InputSpec(name="model", type="MODEL"),
                                FloatInput(name="ratio", default=0.3, min=0.0, max=1.0, step=0.01)],
                        outputs=_MODEL_OUT)

    def execute(self, ctx, *, model: ModelHandle, ratio: float) -> tuple[ModelHandle]:
        model = check_model("TomePatchModel", model)
        return (model if ratio == 0 else model.with_patches(TomePatch(float(ratio))),)


__all__ = ["HyperTile", "TomePatchModel", "bipartite_merge", "random_divisor", "tile", "untile"]
NODES = [HyperTile, TomePatchModel]
