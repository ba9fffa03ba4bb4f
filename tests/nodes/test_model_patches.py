"""Model patches on tiny real U-Nets: applied only while sampling, removed exactly, stackable, keyed.

References are independent of the code under test: hand-multiplied weights for the attention
multipliers, frequency-domain facts for FreeU's filter (a constant is pure DC, a checkerboard pure
Nyquist), tensors captured at the up path's joins for FreeU's and Deep Shrink's placement.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from graph.builder import GraphBuilder
from nodes.base.handles import ModelHandle
from nodes.models.model_patches import ActivePatches, ModelPatch, block_of, fingerprint
from nodes.models.patching import patched
from nodes.sampling.ksampler import SamplingRequest, sample
from nodes.sd.model_sampling_nodes import ModelSamplingDiscrete
from nodes.sd.unet_patch_nodes import (
    FreeU,
    FreeU_V2,
    FreeUPatch,
    PatchModelAddDownscale,
    UNetCrossAttentionMultiply,
    UNetSelfAttentionMultiply,
    fourier_filter,
)
from tests.support.sd_engine import SdEngine, sample_a_fox

from .tiny_models import unet_output

REQ = SamplingRequest(seed=3, steps=3, cfg=7.5, sampler_name="euler", scheduler="normal")
LATENT = {"samples": torch.zeros(1, 4, 8, 8)}


def run(model: ModelHandle, conds: tuple[list, list], **kw: Any) -> torch.Tensor:
    req = SamplingRequest(**{**REQ.__dict__, **kw})
    return sample(model, conds[0], conds[1], LATENT, req)["samples"]


def node(cls: type, **inputs: Any) -> Any:
    return cls().execute(None, **inputs)[0]


def join_inputs(unet: Any, model: ModelHandle, conds: tuple[list, list], block: int = 0) -> list[torch.Tensor]:
    """What the first resnet of up block `block` receives (h and skip, concatenated), per U-Net call."""
    seen: list[torch.Tensor] = []
    hook = unet.up_blocks[block].resnets[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        run(model, conds, steps=1)
    finally:
        hook.remove()
    return seen


# ------------------------------------------------------------------------------- the mechanism


def test_patches_apply_only_while_in_use_and_leave_the_base_bit_exact(model, conds, sd1):
    base = run(model, conds)
    probe = unet_output(sd1.unet)
    processors = dict(sd1.unet.attn_processors)
    stacked = model.with_patches(FreeUPatch(1.1, 1.2, 0.9, 0.2))
    stacked = node(UNetSelfAttentionMultiply, model=stacked, q=1.5, k=1.0, v=0.5, out=1.0)
    from nodes.sd.guidance_patch_nodes import PerturbedAttentionPatch, RescaleCFGPatch

    stacked = stacked.with_patches(PerturbedAttentionPatch(2.0), RescaleCFGPatch(0.7))
    assert not torch.equal(run(stacked, conds), base)
    assert torch.equal(run(model, conds), base)  # the patches went with the handle, not into the U-Net
    assert torch.equal(unet_output(sd1.unet), probe)
    assert dict(sd1.unet.attn_processors) == processors  # the very same processor objects
    assert all("s1" not in b.__dict__ for b in sd1.unet.up_blocks)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in sd1.unet.modules())


def test_an_error_while_sampling_still_removes_the_patches(model, conds, sd1):
    class Boom(ModelPatch):
        def install(self, active: ActivePatches) -> None:
            active.output_block(self.explode)

        @staticmethod
        def explode(h, skip, info):
            raise RuntimeError("boom")

    patched_model = model.with_patches(FreeUPatch(1.5, 1.5, 0.5, 0.5), Boom())
    with pytest.raises(RuntimeError, match="boom"):
        run(patched_model, conds)
    assert all("s1" not in b.__dict__ for b in sd1.unet.up_blocks)
    assert torch.equal(run(model, conds), run(model, conds))


def test_block_numbering_follows_the_original_unet(sd1):
    # tiny SD1: input blocks 0 conv_in, 1 down0 resnet+attention, 2 down0 downsampler, 3 down1 resnet;
    # output blocks: up0 has two resnets (0, 1), up1 with attention has 2 and 3.
    assert block_of(sd1.unet, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor") == (("input", 1), 0)
    assert block_of(sd1.unet, "up_blocks.1.attentions.1.transformer_blocks.0.attn2.processor") == (("output", 3), 0)
    assert block_of(sd1.unet, "mid_block.attentions.0.transformer_blocks.0.attn1.processor") == (("middle", 0), 0)


def test_fingerprint_changes_with_every_setting(model):
    a = fingerprint(model.with_patches(FreeUPatch(1.1, 1.2, 0.9, 0.2)))
    assert a == fingerprint(model.with_patches(FreeUPatch(1.1, 1.2, 0.9, 0.2)))
    assert a != fingerprint(model.with_patches(FreeUPatch(1.1, 1.2, 0.9, 0.3)))
    assert a != fingerprint(model.with_patches(FreeUPatch(1.1, 1.2, 0.9, 0.2, 2)))
    assert a != fingerprint(model)
    from nodes.sd.inpaint_nodes import DifferentialDiffusion

    soft = fingerprint(node(DifferentialDiffusion, model=model, strength=0.5))
    assert soft == fingerprint(node(DifferentialDiffusion, model=model, strength=0.5))
    assert soft != fingerprint(node(DifferentialDiffusion, model=model, strength=1.0)) != fingerprint(model)
    assert fingerprint(node(ModelSamplingDiscrete, model=model, sampling="lcm", zsnr=False)) != fingerprint(model)


# ------------------------------------------------------------------------------- FreeU


def test_fourier_filter_scales_only_the_lowest_frequencies():
    constant = torch.full((1, 2, 8, 8), 3.0)  # all energy at DC, inside the scaled square
    assert torch.allclose(fourier_filter(constant, 1, 0.25), constant * 0.25, atol=1e-6)
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1.0  # only the Nyquist frequency
    checker = checker.expand(1, 2, 8, 8)
    assert torch.allclose(fourier_filter(checker, 1, 0.25), checker, atol=1e-6)


def test_freeu_scales_half_the_backbone_channels_at_the_join(model, conds, sd1):
    # The tiny U-Net's base width is 32: up block 0 joins a 64-channel (2x) hidden state, so b2/s2 apply.
    base = join_inputs(sd1.unet, model, conds)
    scaled = join_inputs(sd1.unet, node(FreeU, model=model, b1=1.0, b2=2.0, s1=1.0, s2=1.0), conds)
    h, skip = base[0][:, :64], base[0][:, 64:]
    assert torch.allclose(scaled[0][:, :32], h[:, :32] * 2.0, atol=1e-5)
    assert torch.equal(scaled[0][:, 32:64], h[:, 32:]) and torch.equal(scaled[0][:, 64:], skip)
    filtered = join_inputs(sd1.unet, node(FreeU, model=model, b1=1.0, b2=1.0, s1=1.0, s2=0.5), conds)
    assert torch.equal(filtered[0][:, :64], h)
    # the skip's mean (its DC term) halves; a skip without DC would pass unchanged
    assert torch.allclose(filtered[0][:, 64:].mean(dim=(2, 3)), skip.mean(dim=(2, 3)) * 0.5, atol=1e-5)


def test_freeu_v2_scales_by_the_normalised_channel_mean():
    h = torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(1))
    out, _ = FreeUPatch(1.0, 1.0, 1.0, 1.0, 2).join(h, torch.zeros(2, 8, 4, 4), (1.5, 1.0))
    mean = h.mean(1, keepdim=True)
    for i in range(2):
        norm = (mean[i] - mean[i].min()) / (mean[i].max() - mean[i].min())
        assert torch.allclose(out[i, :4], h[i, :4] * (1 + 0.5 * norm), atol=1e-6)
    assert torch.equal(out[:, 4:], h[:, 4:])


def test_freeu_identity_settings_are_bit_exact(model, conds):
    base = run(model, conds)
    assert torch.equal(run(model.with_patches(FreeUPatch(1.0, 1.0, 1.0, 1.0)), conds), base)  # hook installed
    assert node(FreeU_V2, model=model, b1=1.0, b2=1.0, s1=1.0, s2=1.0) is model
    stacked = model.with_patches(FreeUPatch(1.0, 2.0, 1.0, 1.0), FreeUPatch(1.0, 3.0, 1.0, 1.0))
    single = model.with_patches(FreeUPatch(1.0, 6.0, 1.0, 1.0))
    assert torch.allclose(run(stacked, conds), run(single, conds), rtol=1e-4, atol=1e-3)


# ------------------------------------------------------------------------------- Deep Shrink


def test_deep_shrink_runs_the_deep_blocks_smaller_in_its_window(model, conds, sd1):
    shapes: list[tuple[int, ...]] = []
    hook = sd1.unet.mid_block.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape[-2:])))
    try:
        shrunk = node(PatchModelAddDownscale, model=model, block_number=1, downscale_factor=2.0, start_percent=0.0,
                      end_percent=0.5, downscale_after_skip=True, downscale_method="bicubic", upscale_method="bicubic")
        out = run(shrunk, conds, steps=4)
    finally:
        hook.remove()
    # 8x8 latent: the mid block normally sees 4x4; halved after input block 1 it sees 2x2 in the early steps
    assert (2, 2) in shapes and (4, 4) in shapes and out.shape == (1, 4, 8, 8)
    assert not torch.equal(out, run(model, conds, steps=4))


def test_deep_shrink_outside_its_window_is_bit_exact(model, conds):
    idle = node(PatchModelAddDownscale, model=model, block_number=2, downscale_factor=2.0, start_percent=0.98,
                end_percent=0.99, downscale_after_skip=False, downscale_method="bislerp", upscale_method="area")
    assert torch.equal(run(idle, conds), run(model, conds))


def test_deep_shrink_reports_a_block_the_unet_lacks(model):
    with pytest.raises(ValueError, match="PatchModelAddDownscale: input 'block_number'.*0..3"):
        node(PatchModelAddDownscale, model=model, block_number=9, downscale_factor=2.0, start_percent=0.0,
             end_percent=0.35, downscale_after_skip=True, downscale_method="bicubic", upscale_method="bicubic")


# ------------------------------------------------------------------------------- attention multipliers


@pytest.mark.parametrize(("cls", "attn"), [(UNetSelfAttentionMultiply, "attn1"), (UNetCrossAttentionMultiply, "attn2")])
def test_attention_multipliers_scale_the_projections(model, sd1, cls, attn):
    factors = {"to_q": 1.5, "to_k": 0.5, "to_v": 2.0, "to_out.0": 0.75}
    reference = copy.deepcopy(sd1.unet)
    with torch.no_grad():
        for name, param in reference.named_parameters():
            for proj, factor in factors.items():
                if f"{attn}.{proj}." in name:
                    param.mul_(factor)
    out = node(cls, model=model, q=1.5, k=0.5, v=2.0, out=0.75)
    probe = unet_output(sd1.unet)
    with patched(sd1.unet, out.patches, "unet"):
        assert torch.allclose(unet_output(sd1.unet), unet_output(reference), atol=1e-5)
    assert torch.equal(unet_output(sd1.unet), probe)
    assert node(cls, model=model, q=1.0, k=1.0, v=1.0, out=1.0) is model


def test_clip_attention_multiply_scales_the_text_encoder(tmp_path, tiny_file):
    engine = SdEngine(tmp_path)
    ckpt = engine.add("checkpoints", tiny_file("sd1"), "sd1.safetensors")

    def encode(q: float) -> torch.Tensor:
        g = GraphBuilder()
        clip = g.node("CheckpointLoaderSimple", ckpt_name=ckpt)[1]
        clip = g.node("CLIPAttentionMultiply", clip=clip, q=q, k=1.0, v=1.0, out=1.0)[0]
        g.node("Keep", value=g.node("CLIPTextEncode", text="a fox", clip=clip)[0])
        engine.kept.clear()
        assert engine.run(g.build()).status == "success"
        return engine.kept[0][0][0]

    base, zero_q = encode(1.0), encode(0.0)
    # q = 0 makes every attention score 0: uniform attention over the visible tokens, a different result
    assert not torch.allclose(base, zero_q)
    assert torch.equal(encode(1.0), base)


# ------------------------------------------------------------------------------- in a workflow


def freeu_workflow(ckpt: str, b2: float | None) -> dict[str, Any]:
    g = GraphBuilder()
    loader = g.node("CheckpointLoaderSimple", ckpt_name=ckpt)
    model = loader[0]
    if b2 is not None:  # (b1 acts on 4x-wide stages, which the tiny U-Net does not have)
        model = g.node("FreeU_V2", model=model, b1=1.3, b2=b2, s1=0.9, s2=0.2)[0]
    g.node("Keep", value=sample_a_fox(g, model, loader[1])[1])
    return g.build()


def test_patch_settings_are_part_of_the_cache_key(tmp_path, tiny_file):
    engine = SdEngine(tmp_path)
    ckpt = engine.add("checkpoints", tiny_file("sd1"), "sd1.safetensors")

    def result(b2: float | None) -> tuple[torch.Tensor, bool]:
        engine.kept.clear()
        prompt = freeu_workflow(ckpt, b2)
        (sampler,) = [k for k, v in prompt.items() if v["class_type"] == "KSampler"]
        outcome = engine.run(prompt)
        assert outcome.status == "success", outcome.failure and outcome.failure.describe()
        return engine.kept[0]["samples"], sampler in outcome.cached

    base, _ = result(None)
    first, cached = result(1.3)
    assert not cached
    same, cached = result(1.3)
    assert torch.equal(same, first) and cached
    changed, cached = result(1.5)
    assert not torch.equal(changed, first) and not cached
    assert not torch.equal(first, base)
    again, _ = result(None)
    assert torch.equal(again, base)


STACK = [("FreeU_V2", {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}),
         ("PerturbedAttentionGuidance", {"scale": 3.0}),
         ("SelfAttentionGuidance", {"scale": 0.5, "blur_sigma": 2.0}),
         ("RescaleCFG", {"multiplier": 0.7}),
         ("PatchModelAddDownscale", {"block_number": 3, "downscale_factor": 2.0, "start_percent": 0.0,
                                     "end_percent": 0.35, "downscale_after_skip": False,
                                     "downscale_method": "bicubic", "upscale_method": "bislerp"}),
         ("HyperTile", {"tile_size": 32, "swap_size": 2, "max_depth": 1, "scale_depth": False}),
         ("UNetCrossAttentionMultiply", {"q": 1.0, "k": 1.2, "v": 0.8, "out": 1.0}),
         ("ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": True})]


@pytest.mark.parametrize("kind", ["sd2", "sdxl"])
def test_every_patch_stacked_on_other_layouts_then_the_base_again(tmp_path, tiny_file, kind):
    engine = SdEngine(tmp_path)
    ckpt = engine.add("checkpoints", tiny_file(kind), f"{kind}.safetensors")

    def result(stack: list[tuple[str, dict[str, Any]]]) -> torch.Tensor:
        g = GraphBuilder()
        loader = g.node("CheckpointLoaderSimple", ckpt_name=ckpt)
        model = loader[0]
        for cls, inputs in stack:
            model = g.node(cls, model=model, **inputs)[0]
        g.node("Keep", value=sample_a_fox(g, model, loader[1], cfg=5.0, size=128)[1])
        engine.kept.clear()
        outcome = engine.run(g.build())
        assert outcome.status == "success", outcome.failure and outcome.failure.describe()
        return engine.kept[0]["samples"]

    base = result([])
    stacked = result(STACK)
    assert stacked.shape == base.shape and torch.isfinite(stacked).all() and not torch.equal(stacked, base)
    assert torch.equal(result([]), base)
