"""VAE nodes on a tiny real AutoencoderKL: shapes, ranges, determinism, cropping, tiling, inpainting."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import AutoencoderKL

from graph import Node, NodeSchema, OutputSpec, StringInput
from graph.builder import GraphBuilder
from nodes.base.handles import VaeHandle
from nodes.models import load_vae
from nodes.sd import latent as L
from nodes.sd import vae as V

from .conftest import TinyFile
from .test_latent_nodes import Engine
from .tiny_models import vae_config

# Narrower than the tiny checkpoints' VAE (same layout, downscale 2) so these tests stay fast on 2 cores.
SMALL_VAE = {**vae_config("sd1"), "block_out_channels": [8, 16], "norm_num_groups": 8}


@pytest.fixture(scope="module")
def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    vae = AutoencoderKL(**SMALL_VAE).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return vae


@pytest.fixture
def handle(tiny_vae: AutoencoderKL) -> VaeHandle:
    return VaeHandle(vae=tiny_vae, scale_factor=0.18215)


def image(b: int = 1, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """A smooth test picture (gradients plus a blob) in 0..1."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    gen = torch.Generator().manual_seed(seed)
    base = torch.stack([ys, xs, (ys + xs) / 2], dim=-1)
    return (base[None].expand(b, h, w, 3) * 0.8 + torch.rand(b, 1, 1, 3, generator=gen) * 0.2).contiguous()


def test_decode_gives_cpu_float_images_in_range(handle: VaeHandle):
    z = torch.randn(2, 4, 8, 12, generator=torch.Generator().manual_seed(0)) * 3
    (img,) = V.VAEDecode().execute(_Ctx(), samples={"samples": z}, vae=handle)
    assert img.shape == (2, 16, 24, 3) and img.dtype == torch.float32 and img.device.type == "cpu"
    assert img.min() >= 0 and img.max() <= 1
    with torch.no_grad():
        ref = ((handle.vae.decode(z).sample + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
    assert torch.allclose(img, ref, atol=1e-6)


def test_decoding_with_activations_in_place_gives_the_same_pixels_bit_for_bit(handle: VaeHandle):
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(4)) * 3
    with torch.no_grad():  # diffusers' own decode, every activation a new tensor
        ref = ((handle.vae.decode(z).sample + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1)
    assert torch.equal(V.decode(handle, z), ref)
    assert not any(getattr(m, "inplace", False) for m in handle.vae.modules())  # put back afterwards


def test_encode_is_deterministic_raw_mean_and_round_trips_in_shape(handle: VaeHandle):
    pixels = image(2, 32, 48)
    (lat,) = V.VAEEncode().execute(_Ctx(), pixels=pixels, vae=handle)
    (again,) = V.VAEEncode().execute(_Ctx(), pixels=pixels, vae=handle)
    assert set(lat) == {"samples"} and lat["samples"].shape == (2, 4, 16, 24)
    assert torch.equal(lat["samples"], again["samples"])
    with torch.no_grad():
        mean = handle.vae.encode(pixels.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mean
    assert torch.allclose(lat["samples"], mean, atol=1e-6)  # raw latents, not multiplied by the scale factor
    (back,) = V.VAEDecode().execute(_Ctx(), samples=lat, vae=handle)
    assert back.shape == pixels.shape


def test_encode_center_crops_to_the_downscale(handle: VaeHandle):
    pixels = image(1, 35, 33)
    (lat,) = V.VAEEncode().execute(_Ctx(), pixels=pixels, vae=handle)
    assert lat["samples"].shape == (1, 4, 17, 16)
    (ref,) = V.VAEEncode().execute(_Ctx(), pixels=pixels[:, 0:34, 0:32].contiguous(), vae=handle)
    assert torch.allclose(lat["samples"], ref["samples"], atol=1e-6)
    assert V.crop_to_multiple(torch.zeros(1, 21, 13, 3), 8).shape == (1, 16, 8, 3)
    assert torch.equal(V.crop_to_multiple(torch.arange(21.0).reshape(1, 21, 1, 1).expand(1, 21, 8, 1), 8)[0, :, 0, 0],
                       torch.arange(2.0, 18.0))


def test_wrong_channel_count_names_the_node(handle: VaeHandle):
    with pytest.raises(ValueError, match="VAEDecode: the latent has 16 channels but this VAE expects 4"):
        V.VAEDecode().execute(_Ctx(), samples={"samples": torch.zeros(1, 16, 8, 8)}, vae=handle)


def test_tiled_decode_is_close_to_untiled(handle: VaeHandle):
    z = torch.randn(1, 4, 48, 40, generator=torch.Generator().manual_seed(3))
    (full,) = V.VAEDecode().execute(_Ctx(), samples={"samples": z}, vae=handle)
    ctx = _Ctx()
    (tiled,) = V.VAEDecodeTiled().execute(ctx, samples={"samples": z}, vae=handle, tile_size=64, overlap=32)
    assert tiled.shape == full.shape == (1, 96, 80, 3) and tiled.min() >= 0 and tiled.max() <= 1
    # Tiles see less context (group norms, attention), so close rather than equal: ~0.012 here.
    assert (tiled - full).abs().mean() < 0.2 * (full - 0.5).abs().mean()
    assert len(ctx.steps) == 4 and ctx.steps[-1] == (4, 4)


def test_tiled_encode_is_close_to_untiled(handle: VaeHandle):
    pixels = torch.rand(1, 96, 80, 3, generator=torch.Generator().manual_seed(2))
    (full,) = V.VAEEncode().execute(_Ctx(), pixels=pixels, vae=handle)
    (tiled,) = V.VAEEncodeTiled().execute(_Ctx(), pixels=pixels, vae=handle, tile_size=64, overlap=32)
    assert tiled["samples"].shape == full["samples"].shape == (1, 4, 48, 40)
    assert (tiled["samples"] - full["samples"]).abs().mean() < 0.2 * full["samples"].abs().mean()


@pytest.mark.parametrize("overlap", [0, 2, 5])
def test_tile_blending_is_exact_for_local_maps(overlap: int):
    """With a map that needs no context, tiling and blending must reproduce the untiled result."""
    x = torch.randn(2, 3, 23, 17, generator=torch.Generator().manual_seed(0))
    up = V.tiled(x, lambda t: t.repeat_interleave(2, -1).repeat_interleave(2, -2) * 3, tile=8, overlap=overlap,
                 num=2, den=1)
    assert torch.allclose(up, x.repeat_interleave(2, -1).repeat_interleave(2, -2) * 3, atol=1e-6)
    y = x[..., :22, :16]
    down = V.tiled(y, lambda t: torch.nn.functional.avg_pool2d(t, 2), tile=8, overlap=overlap - overlap % 2,
                   num=1, den=2, align=2)
    assert torch.allclose(down, torch.nn.functional.avg_pool2d(y, 2), atol=1e-6)


def test_tile_starts_cover_everything():
    assert V._starts(10, 4, 3) == [0, 3, 6]
    assert V._starts(4, 8, 6) == [0]
    assert V._starts(20, 8, 6, align=2) == [0, 6, 12]


def test_encode_for_inpaint_greys_masked_pixels_and_grows_the_noise_mask(handle: VaeHandle):
    pixels = image(1, 32, 32)
    mask = torch.zeros(32, 32)
    mask[10, 10] = 1.0
    node = V.VAEEncodeForInpaint()
    (lat,) = node.execute(_Ctx(), pixels=pixels, vae=handle, mask=mask, grow_mask_by=6)
    noise = lat["noise_mask"]
    assert noise.shape == (1, 1, 32, 32)
    rows = noise[0, 0].sum(dim=1).nonzero().flatten().tolist()
    cols = noise[0, 0].sum(dim=0).nonzero().flatten().tolist()
    assert rows == list(range(8, 14)) and cols == list(range(8, 14)) and noise.sum() == 36
    grey = pixels.clone()
    grey[0, 10, 10] = 0.5
    (ref,) = V.VAEEncode().execute(_Ctx(), pixels=grey, vae=handle)
    assert torch.allclose(lat["samples"], ref["samples"], atol=1e-6)
    (none,) = node.execute(_Ctx(), pixels=pixels, vae=handle, mask=mask, grow_mask_by=0)
    assert none["noise_mask"].sum() == 1


def test_inpaint_mask_is_resized_and_cropped_with_the_pixels(handle: VaeHandle):
    pixels = image(1, 33, 35)
    mask = torch.zeros(1, 66, 70)
    mask[:, :, 35:] = 1.0
    (lat,) = V.VAEEncodeForInpaint().execute(_Ctx(), pixels=pixels, vae=handle, mask=mask, grow_mask_by=0)
    assert lat["samples"].shape == (1, 4, 16, 17) and lat["noise_mask"].shape == (1, 1, 32, 34)
    assert lat["noise_mask"][0, 0, 0, :17].sum() == 0 and lat["noise_mask"][0, 0, 0, 18:].min() == 1


def test_grow_mask_matches_a_box_dilation():
    m = torch.zeros(1, 1, 9, 9)
    m[0, 0, 4, 4] = 0.7  # rounded to 1 first
    assert V.grow_mask(m, 3)[0, 0, 3:6, 3:6].min() == 1 and V.grow_mask(m, 3).sum() == 9


class _Ctx:
    """Enough of a NodeContext for calling execute() directly."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, float]] = []

    def progress(self, value: float, total: float, preview: Any = None) -> None:
        self.steps.append((value, total))


class _Manager:
    def __init__(self) -> None:
        self.used: list[Any] = []

    @contextmanager
    def use(self, module: Any):
        self.used.append(module)
        yield torch.device("cpu")


def test_decode_and_encode_ask_the_model_manager(tiny_vae: AutoencoderKL):
    manager = _Manager()
    h = VaeHandle(vae=tiny_vae, scale_factor=0.18215, manager=manager)
    V.VAEDecode().execute(_Ctx(), samples={"samples": torch.zeros(1, 4, 4, 4)}, vae=h)
    V.VAEEncode().execute(_Ctx(), pixels=image(1, 8, 8), vae=h)
    assert manager.used == [tiny_vae, tiny_vae]


def test_half_precision_vae_returns_float32(tiny_vae: AutoencoderKL):
    import copy

    half = VaeHandle(vae=copy.deepcopy(tiny_vae).to(torch.bfloat16), scale_factor=0.18215)
    (lat,) = V.VAEEncode().execute(_Ctx(), pixels=image(1, 16, 16), vae=half)
    (img,) = V.VAEDecode().execute(_Ctx(), samples=lat, vae=half)
    assert lat["samples"].dtype == torch.float32 and img.dtype == torch.float32


class TinyVaeLoader(Node):
    """Test node: a VAE handle from a tiny checkpoint file, as VAELoader will provide."""

    SCHEMA = NodeSchema(node_type="TinyVaeLoader", inputs=[StringInput(name="path")], outputs=[OutputSpec(type="VAE")])

    def execute(self, ctx, *, path: str) -> tuple[VaeHandle]:
        return (VaeHandle(vae=load_vae(path), scale_factor=0.18215, source=Path(path)),)


def test_txt2img_tail_and_img2img_head_through_the_engine(tmp_path: Path, tiny_file: TinyFile):
    engine = Engine(tmp_path, L, V, extra=(TinyVaeLoader,))
    g = GraphBuilder()
    vae = g.node("TinyVaeLoader", path=str(tiny_file("sd1")))
    empty = g.node("EmptyLatentImage", width=64, height=64, batch_size=2)
    decoded = g.node("VAEDecode", samples=empty, vae=vae)
    encoded = g.node("VAEEncode", pixels=decoded, vae=vae)
    tiled = g.node("VAEDecodeTiled", samples=encoded, vae=vae, tile_size=64, overlap=0,
                   temporal_size=64, temporal_overlap=8)
    img, lat, img2 = engine.values(g, decoded, encoded, tiled)
    assert img.shape == (2, 16, 16, 3) and lat["samples"].shape == (2, 4, 8, 8) and img2.shape == (2, 16, 16, 3)
