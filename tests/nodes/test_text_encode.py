"""Prompt encoding: tokens and chunks, weights, clip skip, SDXL's two encoders, and the conditioning nodes."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

from graph import Node, NodeContext
from graph.node import InterruptToken
from nodes.models.manager import ModelManager
from nodes.sampling.conditioning import sdxl_time_ids
from nodes.sd import conditioning as C
from nodes.sd import text_encode as T
from nodes.sd.text_encode import encode_clip, tokenize_prompt

ASTRONAUT = "a photo of an astronaut riding a horse"
ASTRONAUT_IDS = [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407]


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    return ModelManager()


@pytest.fixture(scope="module")
def clips(manager, tiny_file) -> dict[str, Any]:
    return {kind: manager.load_checkpoint(tiny_file(kind))[1] for kind in ("sd1", "sd2", "sdxl", "sdxl_refiner")}


def _ctx(manager: ModelManager | None = None) -> NodeContext:
    return NodeContext(node_id="1", class_type="test", run_id="r", interrupt=InterruptToken(),
                       services={"models": manager} if manager else {})


def _run(node: type[Node], **inputs: Any) -> Any:
    return node().execute(_ctx(), **inputs)[0]


def _reference(encoder, ids: list[list[int]]) -> Any:
    with torch.no_grad():
        return encoder(input_ids=torch.tensor(ids), output_hidden_states=True)


# -- tokens --------------------------------------------------------------------------------------
def test_tokenizer_gives_the_documented_ids(manager):
    sd1 = tokenize_prompt(manager.tokenizer("sd1"), ASTRONAUT, pad_id=49407)
    assert sd1.ids == [ASTRONAUT_IDS + [49407] * 67] and sd1.weights == [[1.0] * 77]
    g = tokenize_prompt(manager.tokenizer("open_clip"), ASTRONAUT, pad_id=0)
    assert g.ids == [ASTRONAUT_IDS + [0] * 67]
    assert tokenize_prompt(manager.tokenizer("sd1"), "", pad_id=49407).ids == [[49406] + [49407] * 76]


def test_weights_follow_the_tokens(manager):
    chunks = tokenize_prompt(manager.tokenizer("sd1"), "a photo of an (astronaut:1.5) riding [a horse]", pad_id=49407)
    assert chunks.ids[0][:10] == ASTRONAUT_IDS
    assert chunks.weights[0][:10] == pytest.approx([1, 1, 1, 1, 1, 1.5, 1, 1 / 1.1, 1 / 1.1, 1])


def test_long_prompts_are_chunked(manager):
    tok = manager.tokenizer("sd1")
    chunks = tokenize_prompt(tok, "cat " * 100, pad_id=49407)
    assert len(chunks) == 2 and all(len(row) == 77 for row in chunks.ids)
    assert chunks.ids[0][0] == chunks.ids[1][0] == 49406 and chunks.ids[0][76] == 49407
    assert chunks.ids[0][1:76] == [2368] * 75 and chunks.ids[1][1:26] == [2368] * 25
    assert tokenize_prompt(tok, "cat " * 75, pad_id=49407).ids[0][76] == 49407  # 75 tokens fit one chunk
    # A short weighted run that does not fit moves whole to the next chunk.
    moved = tokenize_prompt(tok, "cat " * 72 + "(dog dog dog dog:1.2)", pad_id=49407)
    assert moved.ids[0][72:] == [2368, 49407, 49407, 49407, 49407] and moved.ids[1][1:6] == [1929] * 4 + [49407]
    assert moved.weights[1][1:5] == [1.2] * 4


def test_without_an_embedding_lookup_references_stay_text(manager, caplog):
    with caplog.at_level(logging.WARNING):
        chunks = tokenize_prompt(manager.tokenizer("sd1"), "embedding:easynegative, cat", pad_id=49407)
    assert "not supported yet" in caplog.text and chunks.ids[0][1] != 49407


# -- SD1 / SD2 -----------------------------------------------------------------------------------
def test_sd1_plain_prompt_is_the_last_hidden_state(clips):
    clip = clips["sd1"]
    ((cond, opts),) = _run(T.CLIPTextEncode, text=ASTRONAUT, clip=clip)
    want = _reference(clip.encoders[0], [ASTRONAUT_IDS + [49407] * 67]).last_hidden_state
    torch.testing.assert_close(cond, want)
    assert opts == {"pooled_output": None}


def test_long_prompt_gives_154_tokens(clips):
    ((cond, _),) = _run(T.CLIPTextEncode, text="a photo of a cat, " * 20, clip=clips["sd1"])
    assert cond.shape == (1, 154, 32)


def test_weight_one_equals_plain_and_zero_equals_the_empty_prompt(clips):
    clip = clips["sd1"]
    plain, _ = encode_clip(clip, {"clip_l": ASTRONAUT})
    one, _ = encode_clip(clip, {"clip_l": "(a photo:1.0) of an astronaut riding a horse"})
    zero, _ = encode_clip(clip, {"clip_l": "(a photo:0) of an astronaut riding a horse"})
    double, _ = encode_clip(clip, {"clip_l": "(a photo:2) of an astronaut riding a horse"})
    empty, _ = encode_clip(clip, {"clip_l": ""})
    assert torch.equal(one, plain)
    torch.testing.assert_close(zero[:, 1:3], empty[:, 1:3])
    assert torch.equal(zero[:, 3:], plain[:, 3:]) and torch.equal(zero[:, :1], plain[:, :1])
    torch.testing.assert_close(double[:, 1:3], empty[:, 1:3] + 2 * (plain[:, 1:3] - empty[:, 1:3]))
    assert not torch.allclose(double, plain)


def test_clip_skip(clips):
    clip = clips["sd1"]
    ref = _reference(clip.encoders[0], [ASTRONAUT_IDS + [49407] * 67])
    last = _run(T.CLIPTextEncode, text=ASTRONAUT, clip=_run(T.CLIPSetLastLayer, clip=clip, stop_at_clip_layer=-1))
    skip = _run(T.CLIPTextEncode, text=ASTRONAUT, clip=_run(T.CLIPSetLastLayer, clip=clip, stop_at_clip_layer=-2))
    norm = clip.encoders[0].final_layer_norm
    with torch.no_grad():
        torch.testing.assert_close(skip[0][0], norm(ref.hidden_states[-2]))
    torch.testing.assert_close(last[0][0], ref.last_hidden_state)
    assert not torch.allclose(skip[0][0], last[0][0])
    deeper = _run(T.CLIPTextEncode, text=ASTRONAUT, clip=clip.with_layer(-24))  # beyond the 2 layers: the last
    torch.testing.assert_close(deeper[0][0], ref.last_hidden_state)
    assert clip.layer is None  # CLIPSetLastLayer returns a new handle sharing the weights
    assert _run(T.CLIPSetLastLayer, clip=clip, stop_at_clip_layer=-2).encoders[0] is clip.encoders[0]


def test_sd2_defaults_to_the_normed_penultimate_layer(clips):
    clip = clips["sd2"]
    ids = [ASTRONAUT_IDS + [0] * 67]
    ref = _reference(clip.encoders[0], ids)
    cond, pooled = encode_clip(clip, {"clip_h": ASTRONAUT})
    with torch.no_grad():
        torch.testing.assert_close(cond, clip.encoders[0].final_layer_norm(ref.hidden_states[-2]))
    last, _ = encode_clip(clip.with_layer(-1), {"clip_h": ASTRONAUT})  # an explicit -1 is the last layer
    torch.testing.assert_close(last, ref.last_hidden_state)
    assert pooled is None


# -- SDXL ----------------------------------------------------------------------------------------
def test_sdxl_concatenates_both_encoders_and_pools_from_g(clips):
    clip = clips["sdxl"]
    ((cond, opts),) = _run(T.CLIPTextEncode, text=ASTRONAUT, clip=clip)
    assert cond.shape == (1, 77, 32 + 64) and opts["pooled_output"].shape == (1, 48)
    ref_l = _reference(clip.encoders[0], [ASTRONAUT_IDS + [49407] * 67])
    ref_g = _reference(clip.encoders[1], [ASTRONAUT_IDS + [0] * 67])
    torch.testing.assert_close(cond[..., :32], ref_l.hidden_states[-2])  # no final norm for SDXL
    torch.testing.assert_close(cond[..., 32:], ref_g.hidden_states[-2])
    torch.testing.assert_close(opts["pooled_output"], ref_g.text_embeds)
    assert set(opts) == {"pooled_output"}  # the sampler conditions on the image size it makes


def test_sdxl_node_puts_sizes_in_the_dict_and_pads_the_shorter_text(clips):
    clip = clips["sdxl"]
    ((cond, opts),) = _run(T.CLIPTextEncodeSDXL, width=1024, height=768, crop_w=8, crop_h=16, target_width=2048,
                           target_height=1536, text_g="cat " * 100, clip=clip, text_l="a dog")
    assert cond.shape == (1, 154, 96)
    assert {k: v for k, v in opts.items() if k != "pooled_output"} == {
        "width": 1024, "height": 768, "crop_w": 8, "crop_h": 16, "target_width": 2048, "target_height": 1536}
    dog, _ = encode_clip(clip, {"clip_l": "a dog", "clip_g": "a dog"})
    empty, _ = encode_clip(clip, {"clip_l": "", "clip_g": ""})
    torch.testing.assert_close(cond[:, :77, :32], dog[..., :32])
    torch.testing.assert_close(cond[:, 77:, :32], empty[..., :32])  # clip_l padded with an empty chunk


def test_refiner(clips):
    ((cond, opts),) = _run(T.CLIPTextEncodeSDXLRefiner, ascore=2.5, width=1024, height=1024, text=ASTRONAUT,
                           clip=clips["sdxl_refiner"])
    assert cond.shape == (1, 77, 64) and opts["pooled_output"].shape == (1, 64)
    assert opts["aesthetic_score"] == 2.5 and opts["width"] == opts["height"] == 1024


def test_sdxl_time_ids():
    assert sdxl_time_ids({}, refiner=False, width=832, height=1216) == [1216, 832, 0, 0, 1216, 832]
    opts = {"width": 1024, "height": 768, "crop_w": 8, "crop_h": 16, "target_width": 2048, "target_height": 1536}
    assert sdxl_time_ids(opts, refiner=False, width=1, height=1) == [768, 1024, 16, 8, 1536, 2048]
    assert sdxl_time_ids({}, refiner=True, width=1024, height=1024) == [1024, 1024, 0, 0, 6.0]
    assert sdxl_time_ids({}, refiner=True, width=1024, height=1024, negative=True)[-1] == 2.5


# -- conditioning nodes --------------------------------------------------------------------------
def _cond(value: float, tokens: int = 77, pooled: float | None = 1.0) -> list[list[Any]]:
    p = None if pooled is None else torch.full((1, 4), pooled)
    return [[torch.full((1, tokens, 8), value), {"pooled_output": p}]]


def test_combine_and_concat():
    a, b = _cond(1.0), _cond(2.0)
    assert _run(C.ConditioningCombine, conditioning_1=a, conditioning_2=b) == a + b
    ((cat, opts),) = _run(C.ConditioningConcat, conditioning_to=a, conditioning_from=b)
    assert cat.shape == (1, 154, 8) and cat[0, 100, 0] == 2.0 and opts is not a[0][1]


def test_average():
    to, src = _cond(1.0), _cond(3.0, tokens=154, pooled=5.0)
    ((avg, opts),) = _run(C.ConditioningAverage, conditioning_to=to, conditioning_from=src,
                          conditioning_to_strength=0.25)
    assert avg.shape == (1, 77, 8) and torch.allclose(avg, torch.full_like(avg, 2.5))
    assert torch.allclose(opts["pooled_output"], torch.full((1, 4), 4.0))
    ((short, _),) = _run(C.ConditioningAverage, conditioning_to=_cond(1.0, 154), conditioning_from=_cond(3.0),
                         conditioning_to_strength=0.5)
    assert short[0, 0, 0] == 2.0 and short[0, 100, 0] == 0.5  # a shorter source is zero-padded


def test_annotations_never_change_their_input():
    base = _cond(1.0)
    area = _run(C.ConditioningSetArea, conditioning=base, width=256, height=128, x=64, y=32, strength=0.7)
    assert area[0][1]["area"] == (16, 32, 4, 8) and area[0][1]["strength"] == 0.7
    mask = _run(C.ConditioningSetMask, conditioning=base, mask=torch.ones(8, 8), strength=0.5,
                set_cond_area="mask bounds")
    assert mask[0][1]["mask"].shape == (1, 8, 8) and mask[0][1]["set_area_to_bounds"] is True
    assert mask[0][1]["mask_strength"] == 0.5
    ranged = _run(C.ConditioningSetTimestepRange, conditioning=base, start=0.2, end=0.8)
    assert (ranged[0][1]["start_percent"], ranged[0][1]["end_percent"]) == (0.2, 0.8)
    zero = _run(C.ConditioningZeroOut, conditioning=base)
    assert not zero[0][0].any() and not zero[0][1]["pooled_output"].any()
    assert base[0][1] == {"pooled_output": base[0][1]["pooled_output"]} and base[0][0].all()
