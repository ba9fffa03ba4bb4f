"""CLIP vision loading (both file layouts), encoding, the style adapter, and the IP-Adapter image helpers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from graph import Folders, InterruptToken, NodeContext
from nodes.base.errors import ModelLoadError
from nodes.models.clip_vision import CLIP_MEAN, CLIP_STD, ClipVisionHandle, build_clip_vision, preprocess
from nodes.models.manager import ModelManager
from nodes.models.style_model import build_style_model
from nodes.models.weights_file import read_state_dict
from nodes.sd.clip_vision_nodes import CLIPVisionEncode, CLIPVisionLoader, StyleModelApply, StyleModelLoader
from nodes.sd.ipadapter_image_nodes import IPAdapterNoise, PrepImageForClipVision

from .tiny_vision import VISION, save, style_state, tiny_vision, write_vision


def node_ctx(root, manager: ModelManager | None = None) -> NodeContext:
    """A context with the models folder under `root` and a CPU model manager."""
    return NodeContext(node_id="1", class_type="test", run_id="t", interrupt=InterruptToken(),
                       folders=Folders.under(root), services={"models": manager or ModelManager(force_cpu=True)})


@pytest.mark.parametrize("layout", ["transformers", "open_clip"])
def test_loader_infers_the_config_and_round_trips_the_weights(tmp_path, layout):
    path = write_vision(tmp_path / f"{layout}.safetensors", layout)
    model = build_clip_vision(read_state_dict(path), path)
    reference = tiny_vision()
    for key in ("hidden_size", "intermediate_size", "projection_dim", "num_hidden_layers", "image_size", "patch_size",
                "hidden_act"):
        assert getattr(model.config, key) == VISION[key], key
    ref = reference.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, ref[key]), key


def test_encode_equals_transformers_on_the_same_pixels(tmp_path):
    write_vision(tmp_path / "models" / "clip_vision" / "vit.safetensors", "open_clip")
    (handle,) = CLIPVisionLoader().execute(node_ctx(tmp_path), clip_name="vit.safetensors")
    image = torch.rand(2, 40, 56, 3, generator=torch.Generator().manual_seed(0))
    (out,) = CLIPVisionEncode().execute(None, clip_vision=handle, image=image, crop="center")
    with torch.no_grad():
        ref = tiny_vision()(pixel_values=preprocess(image, 32), output_hidden_states=True)
    torch.testing.assert_close(out.image_embeds, ref.image_embeds, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["last_hidden_state"], ref.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.penultimate_hidden_states, ref.hidden_states[-2], rtol=1e-5, atol=1e-5)


def test_preprocess_crops_the_centre_or_squashes_the_whole_image():
    image = torch.zeros(1, 32, 96, 3)
    image[:, :, :32, 0] = 1.0  # red left third
    image[:, :, 32:64, 2] = 1.0  # blue middle third
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    centre = preprocess(image, 32, crop=True) * std + mean
    assert torch.allclose(centre[:, 2, :, 4:-4], torch.ones(1), atol=0.02)  # only the blue third is kept
    assert centre[:, 0].max() < 0.05
    squashed = preprocess(image, 32, crop=False) * std + mean
    assert squashed[0, 0, :, :8].mean() > 0.95 and squashed[0, 2, :, 13:19].mean() > 0.95
    quantised = preprocess(torch.full((1, 32, 32, 3), 0.3), 32) * std + mean
    assert torch.allclose(quantised, torch.full_like(quantised, round(0.3 * 255) / 255), atol=1e-6)


def test_a_file_without_vision_weights_is_refused_by_name(tmp_path):
    path = save(tmp_path / "not_vision.safetensors", {"something.weight": torch.zeros(2)})
    with pytest.raises(ModelLoadError, match="no CLIP vision weights"):
        build_clip_vision(read_state_dict(path), path)


def _style_reference(sd: dict[str, torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
    """The style adapter written out: learned tokens appended, CLIP blocks (QuickGELU), last tokens projected."""
    tokens = sd["style_embedding"].shape[1]
    x = F.layer_norm(torch.cat([hidden, sd["style_embedding"].expand(hidden.shape[0], -1, -1)], 1),
                     (hidden.shape[-1],), sd["ln_pre.weight"], sd["ln_pre.bias"])
    layers = len({k.split(".")[1] for k in sd if k.startswith("transformer_layes.")})
    heads = 8
    for n in range(layers):
        p = f"transformer_layes.{n}."
        h = F.layer_norm(x, (x.shape[-1],), sd[f"{p}ln_1.weight"], sd[f"{p}ln_1.bias"])
        q, k, v = F.linear(h, sd[f"{p}attn.in_proj_weight"], sd[f"{p}attn.in_proj_bias"]).chunk(3, dim=-1)
        b, t, w = q.shape
        q, k, v = (z.view(b, t, heads, w // heads).transpose(1, 2) for z in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / (w // heads) ** 0.5, dim=-1) @ v
        a = a.transpose(1, 2).reshape(b, t, w)
        x = x + F.linear(a, sd[f"{p}attn.out_proj.weight"], sd[f"{p}attn.out_proj.bias"])
        h = F.layer_norm(x, (w,), sd[f"{p}ln_2.weight"], sd[f"{p}ln_2.bias"])
        h = F.linear(h, sd[f"{p}mlp.c_fc.weight"], sd[f"{p}mlp.c_fc.bias"])
        x = x + F.linear(h * torch.sigmoid(1.702 * h), sd[f"{p}mlp.c_proj.weight"], sd[f"{p}mlp.c_proj.bias"])
    x = F.layer_norm(x[:, -tokens:], (x.shape[-1],), sd["ln_post.weight"], sd["ln_post.bias"])
    return x @ sd["proj"]


def test_style_model_appends_its_tokens_to_every_conditioning(tmp_path):
    sd = style_state()
    save(tmp_path / "models" / "style_models" / "t2iadapter_style.safetensors", sd)
    (style,) = StyleModelLoader().execute(node_ctx(tmp_path), style_model_name="t2iadapter_style.safetensors")
    hidden = torch.randn(2, 17, VISION["hidden_size"], generator=torch.Generator().manual_seed(3))
    vision_out = {"last_hidden_state": hidden}
    cond = [[torch.randn(1, 7, 32), {"strength": 0.5}]]
    (out,) = StyleModelApply().execute(None, conditioning=cond, style_model=style, clip_vision_output=vision_out,
                                       strength=0.5, strength_type="multiply")
    expected = _style_reference(sd, hidden).flatten(0, 1)[None] * 0.5
    assert out[0][1] == {"strength": 0.5}
    assert torch.equal(out[0][0][:, :7], cond[0][0])
    torch.testing.assert_close(out[0][0][:, 7:], expected, rtol=1e-4, atol=1e-5)
    assert out[0][0].shape[1] == 7 + 2 * 8  # two images' eight tokens each


def test_style_model_errors_name_the_input(tmp_path):
    style = build_style_model(style_state(), tmp_path / "s.safetensors")
    wide = [[torch.randn(1, 7, 48), {}]]
    with pytest.raises(ValueError, match="'conditioning'"):
        StyleModelApply().execute(None, conditioning=wide, style_model=style,
                                  clip_vision_output={"last_hidden_state": torch.randn(1, 17, 64)})
    with pytest.raises(ValueError, match="'strength_type'"):
        StyleModelApply().execute(None, conditioning=wide, style_model=style, strength=2.0, strength_type="attn_bias",
                                  clip_vision_output={"last_hidden_state": torch.randn(1, 17, 64)})


def test_clip_vision_is_cached_by_the_manager(tmp_path):
    path = write_vision(tmp_path / "v.safetensors")
    manager = ModelManager(force_cpu=True)
    from nodes.sd.clip_vision_nodes import load_clip_vision

    first = load_clip_vision(manager, path)
    assert isinstance(first, ClipVisionHandle) and load_clip_vision(manager, path) is first


def test_prep_image_crops_at_the_chosen_side_and_resizes_to_224():
    image = torch.zeros(1, 64, 128, 3)
    image[:, :, :64, 0] = 1.0  # left half red, right half green
    image[:, :, 64:, 1] = 1.0
    (left,) = PrepImageForClipVision().execute(None, image=image, interpolation="BICUBIC", crop_position="left")
    (right,) = PrepImageForClipVision().execute(None, image=image, interpolation="NEAREST", crop_position="right")
    (pad,) = PrepImageForClipVision().execute(None, image=image, interpolation="NEAREST", crop_position="pad")
    assert left.shape == right.shape == pad.shape == (1, 224, 224, 3)
    assert left[..., 0].min() > 0.99 and right[..., 1].min() > 0.99
    assert pad[0, :40].max() == 0 and pad[0, 112, :, 0].max() == 1.0  # black bars above and below


def test_noise_is_seeded_by_the_image_and_follows_the_fade_formula():
    image = torch.rand(1, 224, 224, 3, generator=torch.Generator().manual_seed(1))
    (none,) = IPAdapterNoise().execute(None, type="fade", strength=0.0, blur=0, image_optional=image)
    assert torch.allclose(none, image.clamp(0, 1), atol=1e-6)  # already 224: no resize, no noise
    (a,) = IPAdapterNoise().execute(None, type="fade", strength=0.4, blur=0, image_optional=image)
    (b,) = IPAdapterNoise().execute(None, type="fade", strength=0.4, blur=0, image_optional=image)
    assert torch.equal(a, b)
    gen = torch.Generator().manual_seed(int(image.movedim(-1, 1).sum().item()) % 1000000007)
    rand = torch.rand(1, 3, 224, 224, generator=gen).movedim(1, -1)
    torch.testing.assert_close(a, (image * 0.6 + rand * 0.4).clamp(0, 1))
    for kind in ("dissolve", "gaussian", "shuffle"):
        (out,) = IPAdapterNoise().execute(None, type=kind, strength=0.5, blur=3)
        assert out.shape == (1, 224, 224, 3) and 0 <= out.min() and out.max() <= 1
