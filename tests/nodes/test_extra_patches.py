"""HyperTile, ToMe, hypernetworks and torch.compile as model patches, on tiny real U-Nets.

References: tiling is checked by locality (a token only sees its own tile), token merging by losslessness
on duplicated tokens, a hypernetwork by the equivalent hand-scaled projection weights, and compiling by
equality with the plain U-Net (with torch's "eager" backend: inductor's C++ build is too slow for a
shared CPU test run; the node offers ComfyUI's inductor/cudagraphs choices).
"""

from __future__ import annotations

import copy
import random
from collections import OrderedDict
from typing import Any

import pytest
import torch

from graph.builder import GraphBuilder
from nodes.base.handles import LatentFormat, ModelHandle
from nodes.base.model_sampling import ModelSampling
from nodes.models.model_patches import ActivePatches, PatchedAttention, applied
from nodes.sampling.ksampler import SamplingRequest, sample
from nodes.sd.model_extra_nodes import HypernetworkPatch, TorchCompilePatch, load_hypernetwork
from nodes.sd.token_patch_nodes import HyperTilePatch, TomePatch, bipartite_merge, random_divisor, tile, untile
from tests.support.sd_engine import SdEngine

from .tiny_models import unet_output


def run(model: ModelHandle, conds: tuple[list, list], size: int = 16) -> torch.Tensor:
    req = SamplingRequest(seed=3, steps=2, cfg=5.0, sampler_name="euler", scheduler="normal")
    return sample(model, conds[0], conds[1], {"samples": torch.zeros(1, 4, size, size)}, req)["samples"]


def first_self_attention(unet: Any, patch: Any, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The output of down block 0's first self-attention layer for tokens x, with `patch` installed."""
    attn = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    active = ActivePatches(unet)
    patch.install(active)
    processor = PatchedAttention(attn.processor, active, active.attention_patches,
                                 {"block": ("input", 1), "transformer": 0, "kind": "attn1", "name": "probe"})
    active.call = {"original_shape": shape}
    with torch.no_grad():
        return processor(attn, x)


# ------------------------------------------------------------------------------- HyperTile


def test_tiles_round_trip_and_divisors():
    x = torch.arange(2 * 16 * 3, dtype=torch.float32).reshape(2, 16, 3)
    tiles = tile(x, 2, 2, 4, 4)
    assert tiles.shape == (8, 4, 3)
    assert tiles[0, :, 0].tolist() == [x[0, i, 0].item() for i in (0, 1, 4, 5)]  # the top-left 2x2 tile
    assert torch.equal(untile(tiles, 2, 2, 4, 4), x)
    assert random_divisor(16, 4, 1, random.Random(0)) == 4  # tiles of at least 4 tokens: the most tiles
    assert random_divisor(8, 32, 3, random.Random(0)) == 1  # tiles larger than the side: no tiling


def test_hypertile_attends_within_tiles_only(sd1):
    width = sd1.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.in_features
    x = torch.randn(1, 64, width, generator=torch.Generator().manual_seed(3))
    patch = HyperTilePatch(tile_size=32, swap_size=1, max_depth=0, scale_depth=False)  # 4x4-token tiles of 8x8
    out = first_self_attention(sd1.unet, patch, x, (1, 4, 8, 8))
    changed = x.clone()
    changed[0, 63] += 5.0  # the last token lies in the bottom-right tile
    out2 = first_self_attention(sd1.unet, patch, changed, (1, 4, 8, 8))
    top_left = [r * 8 + c for r in range(4) for c in range(4)]
    assert torch.equal(out[0, top_left], out2[0, top_left])
    assert not torch.allclose(out[0, 63], out2[0, 63])
    plain = first_self_attention(sd1.unet, HyperTilePatch(256, 1, 0, False), x, (1, 4, 8, 8))  # one tile: base
    attn = sd1.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    with torch.no_grad():
        assert torch.equal(plain, attn.processor(attn, x))


def test_hypertile_changes_sampling_only_while_used(model, conds):
    base = run(model, conds)
    tiled = run(model.with_patches(HyperTilePatch(32, 2, 1, True)), conds)
    assert tiled.shape == base.shape and not torch.equal(tiled, base)
    assert torch.equal(run(model, conds), base)


# ------------------------------------------------------------------------------- ToMe


def test_merging_duplicate_tokens_is_lossless():
    # every 2x2 cell holds four copies of one token: whichever is the destination, sources merge into it
    cells = torch.randn(1, 4, 4, 6, generator=torch.Generator().manual_seed(1))
    grid = cells.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2).reshape(1, 64, 6)
    merge, unmerge = bipartite_merge(grid, 8, 8, r=48, generator=torch.Generator().manual_seed(0))
    merged = merge(grid)
    assert merged.shape == (1, 16, 6)
    assert torch.allclose(unmerge(merged), grid, atol=1e-6)
    keep, _ = bipartite_merge(grid, 8, 8, r=0)
    assert keep(grid) is grid


def test_tome_changes_sampling_and_zero_ratio_is_a_no_op(model, conds):
    from nodes.sd.token_patch_nodes import TomePatchModel

    base = run(model, conds)
    assert TomePatchModel().execute(None, model=model, ratio=0.0)[0] is model
    assert not torch.equal(run(model.with_patches(TomePatch(0.5)), conds), base)
    assert torch.equal(run(model, conds), base)


# ------------------------------------------------------------------------------- hypernetworks


def hypernetwork_file(path, widths: list[int], gain: float, activation: str = "linear") -> None:
    """An A1111 hypernetwork: per width, key and value MLPs `linear.0` (w -> 2w) and `linear.1` (2w -> w)."""
    sd: dict[Any, Any] = {"activation_func": activation, "is_layer_norm": False, "use_dropout": False,
                          "layer_structure": [1, 2, 1], "name": "tiny", "step": 10}
    for w in widths:
        pair = []
        for _ in range(2):
            # x -> [x, x] -> gain * (x + x) / 2: the MLP is x -> gain * x, written as two layers
            up = torch.cat([torch.eye(w), torch.eye(w)])
            pair.append(OrderedDict([("linear.0.weight", up), ("linear.0.bias", torch.zeros(2 * w)),
                                     ("linear.1.weight", up.T * (gain / 2)), ("linear.1.bias", torch.zeros(w))]))
        sd[w] = pair
    torch.save(sd, path)


def test_hypernetwork_scales_keys_and_values_like_scaled_projections(sd1, tmp_path):
    path = tmp_path / "hn.pt"
    widths = sorted({m.to_k.in_features for n, m in sd1.unet.named_modules() if n.endswith(("attn1", "attn2"))})
    hypernetwork_file(path, widths, gain=0.5)
    patch = HypernetworkPatch("hn.pt", 0.8, load_hypernetwork(path))
    reference = copy.deepcopy(sd1.unet)
    with torch.no_grad():  # k + 0.8 * 0.5 * k: the key and value projections see 1.4 times their input
        for name, param in reference.named_parameters():
            if ".to_k." in name or ".to_v." in name:
                param.mul_(1.4)
    model = ModelHandle(unet=sd1.unet, kind="sd1", sampling=ModelSampling.discrete(),
                        latent_format=LatentFormat(scale_factor=1.0)).with_patches(patch)
    probe = unet_output(sd1.unet)
    with applied(model) as active:
        active.call = {}
        assert torch.allclose(unet_output(sd1.unet), unet_output(reference), atol=1e-4)
    assert torch.equal(unet_output(sd1.unet), probe)


def test_hypernetwork_loader_node(tmp_path, tiny_file):
    engine = SdEngine(tmp_path)
    ckpt = engine.add("checkpoints", tiny_file("sd1"), "sd1.safetensors")
    folder = engine.folders.models / "hypernetworks"
    folder.mkdir(parents=True)
    hypernetwork_file(folder / "style.pt", [32, 64], gain=0.3, activation="relu")
    (folder / "broken.pt").write_bytes(b"not a torch file")

    def workflow(name: str, strength: float) -> dict[str, Any]:
        g = GraphBuilder()
        loader = g.node("CheckpointLoaderSimple", ckpt_name=ckpt)
        model = g.node("HypernetworkLoader", model=loader[0], hypernetwork_name=name, strength=strength)[0]
        pos = g.node("CLIPTextEncode", text="a fox", clip=loader[1])
        latent = g.node("EmptyLatentImage", width=64, height=64, batch_size=1)
        g.node("Keep", value=g.node("KSampler", seed=3, steps=2, cfg=5.0, sampler_name="euler", scheduler="normal",
                                    denoise=1.0, model=model, positive=pos, negative=pos, latent_image=latent))
        return g.build()

    results = []
    for strength in (0.0, 1.0):
        engine.kept.clear()
        outcome = engine.run(workflow("style.pt", strength))
        assert outcome.status == "success", outcome.failure and outcome.failure.describe()
        results.append(engine.kept[0]["samples"])
    assert not torch.equal(results[0], results[1])
    outcome = engine.run(workflow("broken.pt", 1.0))
    assert outcome.status == "error"
    assert "hypernetwork_name" in outcome.failure.describe() and "broken.pt" in outcome.failure.describe()


# ------------------------------------------------------------------------------- torch.compile


def test_compiled_unet_samples_like_the_plain_one(model, conds, sd1):
    base = run(model, conds, size=8)
    compiled = model.with_patches(TorchCompilePatch("eager"))
    assert torch.equal(run(compiled, conds, size=8), base)
    assert torch.equal(run(compiled, conds, size=8), base)  # the compiled module is reused
    assert len(sd1.unet.__dict__["_compiled_by_backend"]) == 1
    assert not any("_orig_mod" in k for k in sd1.unet.state_dict())  # not registered as a submodule


def test_torch_compile_node_offers_comfyuis_backends(model):
    from nodes.sd.model_extra_nodes import TorchCompileModel

    backends = next(i for i in TorchCompileModel.SCHEMA.inputs if i.name == "backend").choices
    assert list(backends) == ["inductor", "cudagraphs"]
    (out,) = TorchCompileModel().execute(None, model=model, backend="inductor")
    assert out.unet is model.unet and out.patches[-1] == TorchCompilePatch("inductor")
    with pytest.raises(ValueError, match="TorchCompileModel: input 'backend'"):
        TorchCompileModel().execute(None, model=model, backend="tvm")
