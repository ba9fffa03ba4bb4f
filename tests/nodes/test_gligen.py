"""GLIGEN on the tiny SD1 model: the file's fusers and position net load, closed gates change nothing (bit-exact),
open gates change the picture only through the boxed conditioning, and the fusers are gone afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nodes.base.errors import ModelLoadError
from nodes.base.handles import ClipHandle
from nodes.models.gligen import build_gligen, grounding_tokens
from nodes.sampling.ksampler import SamplingRequest, sample
from nodes.sd.gligen_nodes import GLIGENTextBoxApply

from .tiny_vision import gligen_state

LATENT = {"samples": torch.zeros(1, 4, 8, 8)}
REQ = SamplingRequest(seed=2, steps=2, cfg=5.0, sampler_name="euler", scheduler="normal")


@pytest.fixture(scope="module")
def clip(sd1) -> ClipHandle:
    return ClipHandle(encoders=tuple(sd1.text_encoders), specs=tuple(sd1.info.text_encoders), kind="sd1")


def _gligen(sd1, gates: float):
    width = sd1.text_encoders[0].config.hidden_size
    return build_gligen(gligen_state(sd1.unet, width, gates=gates), Path("gligen.safetensors"))


def _boxed(conds, clip, gligen):
    (out,) = GLIGENTextBoxApply().execute(None, conditioning_to=conds[0], clip=clip, gligen_textbox_model=gligen,
                                          text="a red ball", width=32, height=24, x=8, y=16)
    return out


def test_loader_reads_every_fuser_and_the_position_net(sd1):
    width = sd1.text_encoders[0].config.hidden_size
    raw = gligen_state(sd1.unet, width)
    gligen = build_gligen(raw, Path("g.safetensors"))
    blocks = [n for n in sd1.unet.attn_processors if n.endswith("attn1.processor")]
    assert len(gligen.fusers) == len(blocks)
    first = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.fuser."
    assert torch.equal(gligen.fusers[0].attn.to_q.weight, raw[first + "attn.to_q.weight"])
    assert torch.equal(gligen.position_net.linears[4].bias, raw["position_net.linears.4.bias"])
    with pytest.raises(ModelLoadError, match="not a GLIGEN model"):
        build_gligen({"x.weight": torch.zeros(1)}, Path("x.safetensors"))


def test_boxes_become_normalised_corners(sd1):
    gligen = _gligen(sd1, 0.5)
    seen = []
    hook = gligen.position_net.register_forward_pre_hook(lambda m, a, kw: seen.append(kw), with_kwargs=True)
    try:
        grounding_tokens(gligen, ((torch.ones(1, gligen.key_dim), 3, 4, 2, 1),), 8, 8, batch=2)
    finally:
        hook.remove()
    boxes, masks = seen[0]["boxes"], seen[0]["masks"]
    assert torch.equal(boxes[0, 0], torch.tensor([1 / 8, 2 / 8, 5 / 8, 5 / 8]))
    assert masks[0].tolist() == [1.0] + [0.0] * 29


def test_closed_gates_change_nothing_and_open_gates_act(model, clip, conds, sd1):
    processors = dict(sd1.unet.attn_processors)
    single = SamplingRequest(**{**REQ.__dict__, "cfg": 1.0})  # one U-Net call per step either way: bit-exact
    closed = _boxed(conds, clip, _gligen(sd1, 0.0))
    assert torch.equal(sample(model, closed, conds[1], LATENT, single)["samples"],
                       sample(model, conds[0], conds[1], LATENT, single)["samples"])
    base = sample(model, conds[0], conds[1], LATENT, REQ)["samples"]
    opened = sample(model, _boxed(conds, clip, _gligen(sd1, 0.5)), conds[1], LATENT, REQ)["samples"]
    assert not torch.equal(opened, base)
    assert dict(sd1.unet.attn_processors) == processors
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in sd1.unet.modules())
    assert torch.equal(sample(model, conds[0], conds[1], LATENT, REQ)["samples"], base)


def test_only_the_boxed_side_is_fused(model, clip, conds, sd1):
    gligen = _gligen(sd1, 0.5)
    calls = []
    hook = gligen.fusers[0].register_forward_hook(lambda m, a, out: calls.append(a[0].shape[0]))
    try:
        sample(model, _boxed(conds, clip, gligen), conds[1], LATENT, SamplingRequest(**{**REQ.__dict__, "steps": 1}))
    finally:
        hook.remove()
    assert calls == [1]  # the positive call only; the negative side (no boxes) runs without the fuser


def test_box_boxes_accumulate_and_wrong_clip_is_refused(clip, conds, sd1):
    gligen = _gligen(sd1, 0.5)
    once = _boxed(conds, clip, gligen)
    (twice,) = GLIGENTextBoxApply().execute(None, conditioning_to=once, clip=clip, gligen_textbox_model=gligen,
                                            text="a cube", width=16, height=16, x=0, y=0)
    assert len(twice[0][1]["gligen"].boxes) == 2 and twice[0][1]["gligen"].boxes[1][1:] == (2, 2, 0, 0)
    two = ClipHandle(encoders=clip.encoders * 2, specs=clip.specs * 2, kind="sdxl")
    with pytest.raises(ValueError, match="'clip'"):
        GLIGENTextBoxApply().execute(None, conditioning_to=conds[0], clip=two, gligen_textbox_model=gligen,
                                     text="x", width=8, height=8, x=0, y=0)
