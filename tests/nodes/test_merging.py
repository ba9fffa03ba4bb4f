"""Model and CLIP merges: the weights they give (against the formulas, computed by hand), per-block
ratios on the right U-Net blocks, stacking with LoRAs, no copies at rest, bit-exact removal, and the
merge nodes in real workflows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from graph.builder import GraphBuilder
from nodes.models.lora import FullDiff, WeightPatch
from nodes.models.manager import ModelManager
from nodes.models.merging import (
    MergeStep,
    add_weights,
    block_weights,
    merge_clips,
    merge_models,
    simple_weights,
    subtract_weights,
)
from nodes.models.patching import patched
from nodes.models.random_checkpoint import write_random_checkpoint
from tests.support.keep import kept_values
from tests.support.sd_engine import SdEngine, sample_a_fox


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two different tiny checkpoints per family (seeds 0 and 1)."""
    folder = tmp_path_factory.mktemp("merge_checkpoints")
    return {f"{kind}_{seed}": write_random_checkpoint(folder / f"{kind}_{seed}.safetensors", kind, seed=seed)
            for kind in ("sd1", "sdxl") for seed in (0, 1)}


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    return ModelManager(device="cpu")


def handles(manager: ModelManager, files: dict[str, Path], name: str) -> Any:
    return manager.load_checkpoint(files[name])


def params_while_patched(module: torch.nn.Module, patches: tuple[Any, ...], component: str) -> dict[str, torch.Tensor]:
    with patched(module, patches, component):
        return {n: p.detach().clone() for n, p in module.named_parameters()}


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


SOME = ("conv_in.weight", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        "mid_block.resnets.0.norm1.bias", "up_blocks.1.resnets.0.conv2.weight")


def test_simple_merge_is_the_weighted_sum_and_its_ends_are_the_two_models(manager, files):
    model1, _, _ = handles(manager, files, "sd1_0")
    model2, _, _ = handles(manager, files, "sd1_1")
    w1, w2 = snapshot(model1.unet), snapshot(model2.unet)
    same, _ = merge_models(model1, model2, simple_weights(1.0), name="t")
    assert same is model1  # ratio 1 changes nothing: no patch at all
    zero, _ = merge_models(model1, model2, simple_weights(0.0), name="t")
    got = params_while_patched(model1.unet, zero.patches, "unet")
    assert all(torch.equal(got[n], w2[n]) for n in w2)
    mixed, _ = merge_models(model1, model2, simple_weights(0.3), name="t")
    got = params_while_patched(model1.unet, mixed.patches, "unet")
    for name in SOME:
        torch.testing.assert_close(got[name], 0.3 * w1[name] + 0.7 * w2[name], rtol=0, atol=1e-6)
    assert all(torch.equal(p, w1[n]) for n, p in model1.unet.named_parameters())  # removed: base bit-exact


def test_subtract_and_add_follow_their_formulas(manager, files):
    model1, _, _ = handles(manager, files, "sd1_0")
    model2, _, _ = handles(manager, files, "sd1_1")
    w1, w2 = snapshot(model1.unet), snapshot(model2.unet)
    sub, _ = merge_models(model1, model2, subtract_weights(2.5), name="t")
    added, _ = merge_models(model1, model2, add_weights(), name="t")
    got_sub = params_while_patched(model1.unet, sub.patches, "unet")
    got_add = params_while_patched(model1.unet, added.patches, "unet")
    for name in SOME:
        torch.testing.assert_close(got_sub[name], 2.5 * (w1[name] - w2[name]), rtol=0, atol=1e-5)
        torch.testing.assert_close(got_add[name], w1[name] + w2[name], rtol=0, atol=1e-6)


# The tiny SD1 U-Net (blocks [CrossAttnDown, Down], one layer each): LDM block -> diffusers modules,
# written out by hand from the LDM numbering (input_blocks.0 = conv_in, then per level its layers and
# a downsampler; output_blocks count up the decoder levels).
SD1_BLOCKS = {
    "time_embed.": ("time_embedding.",),
    "input_blocks.0.": ("conv_in.",),
    "input_blocks.1.": ("down_blocks.0.resnets.0.", "down_blocks.0.attentions.0."),
    "input_blocks.2.": ("down_blocks.0.downsamplers.0.",),
    "input_blocks.3.": ("down_blocks.1.resnets.0.",),
    "middle_block.0.": ("mid_block.resnets.0.",),
    "middle_block.1.": ("mid_block.attentions.0.",),
    "middle_block.2.": ("mid_block.resnets.1.",),
    "output_blocks.0.": ("up_blocks.0.resnets.0.",),
    "output_blocks.1.": ("up_blocks.0.resnets.1.", "up_blocks.0.upsamplers.0."),
    "output_blocks.2.": ("up_blocks.1.resnets.0.", "up_blocks.1.attentions.0."),
    "output_blocks.3.": ("up_blocks.1.resnets.1.", "up_blocks.1.attentions.1."),
    "out.": ("conv_norm_out.", "conv_out."),
}


@pytest.mark.parametrize("block", sorted(SD1_BLOCKS))
def test_a_block_ratio_changes_exactly_that_block(manager, files, block):
    model1, _, _ = handles(manager, files, "sd1_0")
    model2, _, _ = handles(manager, files, "sd1_1")
    w1, w2 = snapshot(model1.unet), snapshot(model2.unet)
    ratios = [(name, 0.0 if name == block else 1.0) for name in ("time_embed.", *sorted(SD1_BLOCKS))]
    merged, _ = merge_models(model1, model2, block_weights(ratios), name="t", by_block=True)
    got = params_while_patched(model1.unet, merged.patches, "unet")
    inside = [n for n in w1 if n.startswith(SD1_BLOCKS[block])]
    assert inside
    for name, value in got.items():
        expected = w2[name] if name.startswith(SD1_BLOCKS[block]) else w1[name]
        assert torch.equal(value, expected), name


def test_blocks_node_defaults_to_its_first_ratio_and_longest_prefix_wins():
    weights = block_weights([("input", 0.25), ("middle", 0.5), ("out", 0.75), ("output_blocks.1", 0.1)])
    assert weights("time_embed.0.weight") == (0.25, 0.75)  # no prefix matches: the first ratio
    assert weights("middle_block.1.proj_in.weight") == (0.5, 0.5)
    assert weights("out.2.bias") == (0.75, 0.25)
    assert weights("output_blocks.1.0.skip_connection.weight") == (0.1, 0.9)


def test_merge_holds_no_weights_at_rest(manager, files):
    model1, _, _ = handles(manager, files, "sd1_0")
    model2, _, _ = handles(manager, files, "sd1_1")
    pointers = {n: p.data_ptr() for n, p in model1.unet.named_parameters()}
    merged, report = merge_models(model1, model2, simple_weights(0.5), name="t")
    assert merged.unet is model1.unet and report.merged == len(pointers)
    (patch,) = merged.patches
    assert len(patch.deltas) == len(pointers)
    for step in patch.deltas.values():
        assert isinstance(step, MergeStep) and step.source is model2.unet
        assert not any(isinstance(v, torch.Tensor) for v in vars(step).values())
    with patched(model1.unet, merged.patches, "unet"):
        assert {n: p.data_ptr() for n, p in model1.unet.named_parameters()} != pointers
    assert {n: p.data_ptr() for n, p in model1.unet.named_parameters()} == pointers


def test_merge_stacks_with_loras_in_node_order(manager, files):
    model1, _, _ = handles(manager, files, "sd1_0")
    model2, _, _ = handles(manager, files, "sd1_1")
    w1, w2 = snapshot(model1.unet), snapshot(model2.unet)
    name = SOME[1]
    diff = torch.randn(w1[name].shape, generator=torch.Generator().manual_seed(5))
    lora = WeightPatch(name="l", strength=0.5, component="unet", deltas={name: FullDiff(diff=diff)})
    before, _ = merge_models(model1.with_patches(lora), model2, simple_weights(0.25), name="t")
    after, _ = merge_models(model1, model2, simple_weights(0.25), name="t")
    after = after.with_patches(lora)
    got_before = params_while_patched(model1.unet, before.patches, "unet")[name]
    got_after = params_while_patched(model1.unet, after.patches, "unet")[name]
    torch.testing.assert_close(got_before, 0.25 * (w1[name] + 0.5 * diff) + 0.75 * w2[name], rtol=0, atol=1e-6)
    torch.testing.assert_close(got_after, 0.25 * w1[name] + 0.75 * w2[name] + 0.5 * diff, rtol=0, atol=1e-6)
    # model2's own LoRA is merged in too; and a model merged with a LoRA'd view of itself reads the base
    with_lora, _ = merge_models(model1, model1.with_patches(lora), simple_weights(0.5), name="t")
    got_self = params_while_patched(model1.unet, with_lora.patches, "unet")
    torch.testing.assert_close(got_self[name], w1[name] + 0.25 * diff, rtol=0, atol=1e-6)
    assert torch.equal(got_self[SOME[0]], w1[SOME[0]])


def test_chained_merges_read_the_other_models_merged_weights(manager, files):
    model_a, _, _ = handles(manager, files, "sd1_0")
    model_b, _, _ = handles(manager, files, "sd1_1")
    a, b = snapshot(model_a.unet), snapshot(model_b.unet)
    inner, _ = merge_models(model_b, model_a, simple_weights(0.5), name="inner")  # 0.5 B + 0.5 A
    outer, _ = merge_models(model_a, inner, simple_weights(0.5), name="outer")  # 0.5 A + 0.5 inner
    got = params_while_patched(model_a.unet, outer.patches, "unet")
    for name in SOME:
        torch.testing.assert_close(got[name], 0.75 * a[name] + 0.25 * b[name], rtol=0, atol=1e-6)
    assert all(torch.equal(p, b[n]) for n, p in model_b.unet.named_parameters())


def test_clip_merge_covers_both_sdxl_encoders(manager, files):
    _, clip1, _ = handles(manager, files, "sdxl_0")
    _, clip2, _ = handles(manager, files, "sdxl_1")
    merged, report = merge_clips(clip1, clip2, simple_weights(0.0), name="t")
    assert {p.component for p in merged.patches} == {"clip_l", "clip_g"} and not report.describe()
    for spec, mine, theirs in zip(clip1.specs, clip1.encoders, clip2.encoders, strict=True):
        got = params_while_patched(mine, merged.patches, spec.name)
        assert all(torch.equal(got[n], p) for n, p in theirs.named_parameters())
    sub, _ = merge_clips(clip1, clip2, subtract_weights(1.0), name="t")
    got = params_while_patched(clip1.encoders[1], sub.patches, "clip_g")
    name = "text_model.encoder.layers.0.mlp.fc1.weight"
    expected = clip1.encoders[1].get_parameter(name) - clip2.encoders[1].get_parameter(name)
    torch.testing.assert_close(got[name], expected.detach(), rtol=0, atol=1e-6)


def test_models_of_different_families_do_not_merge(manager, files):
    model1, _, _ = handles(manager, files, "sd1_0")
    sdxl, clip_xl, _ = handles(manager, files, "sdxl_0")
    with pytest.raises(ValueError, match="ModelMergeSimple: model2 is sdxl and model1 is sd1"):
        merge_models(model1, sdxl, simple_weights(0.5), name="ModelMergeSimple")
    _, clip1, _ = handles(manager, files, "sd1_0")
    merged, report = merge_clips(clip_xl, clip1, simple_weights(0.0), name="t")  # clip_l merges, clip_g is reported
    assert "clip_g" in report.describe()


# ------------------------------------------------------------------------------------ through the engine


def sample(g: GraphBuilder, model: Any, clip: Any) -> None:
    g.node("Keep", value=sample_a_fox(g, model, clip)[1])


def merged_latent(engine: SdEngine, node: str, **inputs: Any) -> torch.Tensor:
    g = GraphBuilder()
    one = g.node("CheckpointLoaderSimple", ckpt_name="one.safetensors")
    two = g.node("CheckpointLoaderSimple", ckpt_name="two.safetensors")
    model = g.node(node, model1=one[0], model2=two[0], **inputs)[0] if node else two[0]
    sample(g, model, one[1])
    return run_latent(engine, g)


def run_latent(engine: SdEngine, g: GraphBuilder) -> torch.Tensor:
    return kept_values(engine, g)[0]["samples"]


def test_merge_nodes_in_a_workflow(tmp_path, files):
    engine = SdEngine(tmp_path)
    engine.add("checkpoints", files["sd1_0"], "one.safetensors")
    engine.add("checkpoints", files["sd1_1"], "two.safetensors")
    g = GraphBuilder()
    one = g.node("CheckpointLoaderSimple", ckpt_name="one.safetensors")
    sample(g, one[0], one[1])
    base = run_latent(engine, g)
    model2_latent = merged_latent(engine, "")
    assert torch.equal(merged_latent(engine, "ModelMergeSimple", ratio=1.0), base)
    half = merged_latent(engine, "ModelMergeSimple", ratio=0.5)
    assert not torch.equal(half, base) and not torch.equal(half, model2_latent)
    sd1_blocks = {name: 0.0 for name in ("time_embed.", "label_emb.", "out.")} | \
        {f"{part}.{i}.": 0.0 for part, n in (("input_blocks", 12), ("middle_block", 3), ("output_blocks", 12))
         for i in range(n)}
    assert torch.equal(merged_latent(engine, "ModelMergeSD1", **sd1_blocks), model2_latent)
    assert torch.equal(merged_latent(engine, "ModelMergeBlocks", input=0.0, middle=0.0, out=0.0), model2_latent)
    assert not torch.equal(merged_latent(engine, "ModelMergeAdd"), base)
    # the merges were undone after each use: model1 alone samples as before
    g = GraphBuilder()
    one = g.node("CheckpointLoaderSimple", ckpt_name="one.safetensors")
    sample(g, one[0], one[1])
    assert torch.equal(run_latent(engine, g), base)
    assert engine.models.loaded_count() == 2


def test_merge_node_schemas_match_comfyui():
    from nodes.sd.merge_nodes import ModelMergeBlocks, ModelMergeSD1, ModelMergeSDXL, ModelMergeSubtract

    sd1 = ModelMergeSD1.SCHEMA.to_object_info()["input"]["required"]
    assert list(sd1)[:5] == ["model1", "model2", "time_embed.", "label_emb.", "input_blocks.0."]
    assert len(sd1) == 2 + 2 + 12 + 3 + 12 + 1 and list(sd1)[-1] == "out."
    assert sd1["output_blocks.11."] == ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]
    sdxl = ModelMergeSDXL.SCHEMA.to_object_info()["input"]["required"]
    assert "input_blocks.8" in sdxl and "input_blocks.9" not in sdxl and len(sdxl) == 2 + 2 + 9 + 3 + 9 + 1
    assert list(ModelMergeBlocks.SCHEMA.to_object_info()["input"]["required"]) == [
        "model1", "model2", "input", "middle", "out"]
    sub = ModelMergeSubtract.SCHEMA.to_object_info()["input"]["required"]["multiplier"][1]
    assert (sub["min"], sub["max"], sub["default"]) == (-10.0, 10.0, 1.0)
