"""Every ControlNet / T2I-Adapter file layout loads to the exact weights it was written from; bad files fail
with an error naming the file."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest
import torch
from diffusers import ControlNetModel, ControlNetUnionModel, T2IAdapter
from safetensors.torch import save_file

from nodes.base.errors import ModelLoadError
from nodes.models.controlnet import load_controlnet
from nodes.sampling.control import AppliedControl

from .test_ksampler import handle
from .tiny_controlnets import (
    tiny_adapter,
    tiny_controlnet,
    write_adapter,
    write_control_lora,
    write_controlnet,
)
from .tiny_models import tiny_models


def same_weights(loaded: torch.nn.Module, source: torch.nn.Module) -> bool:
    a, b = loaded.state_dict(), source.state_dict()
    return set(a) == set(b) and all(torch.equal(a[k], b[k].to(a[k].dtype)) for k in a)


@pytest.mark.parametrize(("layout", "suffix"), [("ldm", ".safetensors"), ("ldm_bare", ".safetensors"),
                                                ("ldm", ".pth"), ("ldm_bare", ".pth"), ("diffusers", ".safetensors")])
def test_controlnet_layouts_load(tmp_path, layout, suffix):
    source = tiny_controlnet(seed=1)
    handle_ = load_controlnet(write_controlnet(tmp_path / f"control{suffix}", source, layout))
    assert handle_.kind == "controlnet" and isinstance(handle_.model, ControlNetModel)
    assert same_weights(handle_.model, source)
    assert handle_.model.config.conditioning_embedding_out_channels == [8, 8, 16, 16]


def _sdxl_config(**extra) -> dict:
    unet = tiny_models("sdxl").unet.config
    config = {"in_channels": 4, "block_out_channels": [32, 64], "layers_per_block": 1,
              "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "attention_head_dim": [1, 1],
              "transformer_layers_per_block": [1, 2], "cross_attention_dim": unet.cross_attention_dim,
              "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
              "projection_class_embeddings_input_dim": unet.projection_class_embeddings_input_dim,
              "conditioning_embedding_out_channels": [8, 8, 16, 16]}
    config.update(extra)
    return config


@pytest.mark.parametrize("variant", ["full", "mid", "small"])
def test_sdxl_diffusers_controlnets_including_small_and_mid(tmp_path, variant):
    extra = {"full": {}, "mid": {"down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                                 "transformer_layers_per_block": [0, 1]},
             "small": {"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
                       "transformer_layers_per_block": [1, 0]}}[variant]
    source = ControlNetModel(**_sdxl_config(**extra)).eval()
    path = tmp_path / "xl.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = load_controlnet(path).model
    assert same_weights(loaded, source)
    assert loaded.config.transformer_layers_per_block == source.config.transformer_layers_per_block


def test_union_controlnet_loads_and_its_type_is_chosen_per_apply(tmp_path):
    config = _sdxl_config(num_control_type=8, num_trans_channel=32, num_trans_head=8, num_proj_channel=32)
    config.pop("conditioning_embedding_out_channels")
    config["conditioning_embedding_out_channels"] = [8, 8, 16, 32]
    source = ControlNetUnionModel(**config).eval()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    path = tmp_path / "union_promax.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    net = load_controlnet(path)
    assert isinstance(net.model, ControlNetUnionModel) and same_weights(net.model, source)
    from nodes.sd.controlnet_nodes import SetUnionControlNetType

    depth = SetUnionControlNetType().execute(None, control_net=net, type="depth")[0]
    auto = SetUnionControlNetType().execute(None, control_net=depth, type="auto")[0]
    assert depth.union_type == 1 and auto.union_type is None and net.union_type is None
    model = handle(_checkpoint_like("sdxl", 0.13025))
    hint = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    call = _sdxl_call()
    outs = []
    for choice in (depth, auto):
        prepared = AppliedControl(net=choice, hint=hint).prepare(model, device=torch.device("cpu"),
                                                               dtype=torch.float32)
        outs.append(prepared.unet_kwargs(call)["mid_block_additional_residual"])
    with torch.no_grad():
        types = torch.zeros(1, 8)
        types[:, 1] = 1
        _, mid = source(call.x, call.timestep, encoder_hidden_states=call.context, controlnet_cond=[hint],
                        control_type=types, control_type_idx=[1], added_cond_kwargs=call.added_cond_kwargs,
                        return_dict=False)
    assert torch.allclose(outs[0], mid, atol=1e-5)
    assert not torch.allclose(outs[0], outs[1], atol=1e-4)


def _checkpoint_like(kind: str, vae_scaling_factor: float) -> SimpleNamespace:
    """What `handle()` needs from a loaded checkpoint: the tiny `kind` U-Net, without loading a file."""
    info = SimpleNamespace(kind=kind, prediction_type="epsilon", vae_scaling_factor=vae_scaling_factor)
    return SimpleNamespace(unet=tiny_models(kind).unet, info=info)


def _sdxl_call():
    from nodes.base.model_sampling import ModelSampling
    from nodes.sampling.unet_additions import UNetCall

    gen = torch.Generator().manual_seed(2)
    unet = tiny_models("sdxl").unet.config
    pooled = unet.projection_class_embeddings_input_dim - 6 * 256
    sig = torch.tensor([2.0])
    return UNetCall(x=torch.randn(1, 4, 8, 8, generator=gen), sigma=sig,
                    timestep=ModelSampling.discrete().timestep(sig),
                    context=torch.randn(1, 7, unet.cross_attention_dim, generator=gen),
                    added_cond_kwargs={"text_embeds": torch.randn(1, pooled, generator=gen),
                                       "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}, batched=1)


def test_diff_controlnet_needs_its_model_and_adds_the_unet_weights(tmp_path):
    source = tiny_controlnet(seed=2)
    path = write_controlnet(tmp_path / "diff_control.safetensors", source, "diff")
    with pytest.raises(ModelLoadError, match="DiffControlNetLoader") as err:
        load_controlnet(path)
    assert "diff_control.safetensors" in str(err.value)
    loaded = load_controlnet(path, base_unet=tiny_models("sd1").unet).model
    a, b = loaded.state_dict(), source.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in b)


def test_control_lora_is_built_from_the_sampling_unet(tmp_path):
    from nodes.models.controlnet_layouts import ldm_to_diffusers

    path, expected = write_control_lora(tmp_path / "control-lora-canny-rank2.safetensors", tiny_controlnet(seed=3))
    net = load_controlnet(path)
    assert net.kind == "control_lora" and net.model is None
    model = handle(_checkpoint_like("sd1", 0.18215))
    prepared = AppliedControl(net=net, hint=torch.rand(1, 3, 64, 64)).prepare(model, device=torch.device("cpu"),
                                                                             dtype=torch.float32)
    built = prepared.links[0].module.state_dict()
    want = ldm_to_diffusers(expected)
    assert set(built) == set(want)
    assert all(torch.allclose(built[k], want[k], atol=1e-6) for k in want)


@pytest.mark.parametrize("kind", ["full", "light"])
@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_t2i_adapter_layouts_load(tmp_path, kind, layout):
    source = tiny_adapter(kind, in_channels=1 if kind == "full" else 3)
    net = load_controlnet(write_adapter(tmp_path / f"t2iadapter_{kind}.safetensors", source, layout))
    assert net.kind == "t2i_adapter" and isinstance(net.model, T2IAdapter)
    assert net.model.config.adapter_type == source.config.adapter_type
    assert same_weights(net.model, source)


def test_sdxl_t2i_adapter_is_told_apart_by_its_unshuffle(tmp_path):
    source = T2IAdapter(in_channels=3, channels=[32, 64, 64, 64], num_res_blocks=2, downscale_factor=16,
                        adapter_type="full_adapter_xl").eval()
    net = load_controlnet(write_adapter(tmp_path / "t2i-adapter-sdxl.safetensors", source, "original"))
    assert net.model.config.adapter_type == "full_adapter_xl" and net.model.config.downscale_factor == 16
    assert same_weights(net.model, source)


def test_garbage_and_foreign_files_fail_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ModelLoadError, match="garbage.safetensors"):
        load_controlnet(garbage)
    foreign = tmp_path / "not_a_controlnet.safetensors"
    save_file({"some.weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(ModelLoadError, match="not_a_controlnet.safetensors.*not a ControlNet"):
        load_controlnet(foreign)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"control_model.zero_convs.0.0.weight": Evil()}))
    with pytest.raises(ModelLoadError, match="evil.pth"):
        load_controlnet(evil)
