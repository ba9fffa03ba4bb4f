"""Image filters against their defining formulas: blend modes per pixel, Gaussian blur and sharpening as
explicit sums over a mirrored border, quantizing to a palette, scaling to a pixel count."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import main
from graph import Folders
from graph.builder import GraphBuilder
from nodes.sd import image as I
from nodes.sd import image_ops as O
from nodes.sd import image_transform as T

from .test_latent_nodes import Engine


def run(cls: type, **inputs: Any) -> Any:
    return cls().execute(None, **inputs)


def ramp_image(b: int = 1, h: int = 4, w: int = 5, c: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, h, w, c, generator=torch.Generator().manual_seed(seed))


# -------------------------------------------------------------------------------------------- blend

def _soft_light(a: float, b: float) -> float:
    g = ((16 * a - 12) * a + 4) * a if a <= 0.25 else math.sqrt(a)
    return a - (1 - 2 * b) * a * (1 - a) if b <= 0.5 else a + (2 * b - 1) * (g - a)


MODE_FORMULAS = {
    "normal": lambda a, b: b,
    "multiply": lambda a, b: a * b,
    "screen": lambda a, b: 1 - (1 - a) * (1 - b),
    "overlay": lambda a, b: 2 * a * b if a <= 0.5 else 1 - 2 * (1 - a) * (1 - b),
    "soft_light": _soft_light,
    "difference": lambda a, b: a - b,
}


@pytest.mark.parametrize("mode", O.BLEND_MODES)
@pytest.mark.parametrize("factor", [0.0, 0.3, 1.0])
def test_blend_modes_per_pixel(mode: str, factor: float):
    a, b = ramp_image(seed=1), ramp_image(seed=2)
    a[0, 0, 0] = torch.tensor([0.0, 0.25, 0.5])  # the formulas' branch points
    b[0, 0, 0] = torch.tensor([0.5, 1.0, 0.0])
    (out,) = run(O.ImageBlend, image1=a, image2=b, blend_factor=factor, blend_mode=mode)
    assert out.shape == a.shape and out.dtype == torch.float32
    for idx in torch.cartesian_prod(*(torch.arange(n) for n in a.shape)).tolist():
        x, y = a[tuple(idx)].item(), b[tuple(idx)].item()
        expected = min(1.0, max(0.0, x * (1 - factor) + MODE_FORMULAS[mode](x, y) * factor))
        assert out[tuple(idx)].item() == pytest.approx(expected, abs=1e-6), (mode, idx)


def test_blend_resizes_image2_and_broadcasts_a_single_image():
    a = ramp_image(b=3, h=4, w=6)
    b = torch.full((1, 9, 5, 3), 0.25)  # another size: resized (a flat colour stays flat)
    (out,) = run(O.ImageBlend, image1=a, image2=b, blend_factor=0.5, blend_mode="multiply")
    assert out.shape == (3, 4, 6, 3)
    assert torch.allclose(out, a * 0.5 + a * 0.25 * 0.5, atol=1e-6)


def test_blend_keeps_image1_alpha_and_gives_rgb_an_opaque_alpha():
    a = torch.cat([torch.full((1, 2, 2, 3), 0.5), torch.full((1, 2, 2, 1), 0.2)], dim=-1)
    b = torch.full((1, 2, 2, 3), 1.0)
    (out,) = run(O.ImageBlend, image1=a, image2=b, blend_factor=1.0, blend_mode="normal")
    assert out.shape == (1, 2, 2, 4)
    assert torch.allclose(out[..., :3], torch.ones(1, 2, 2, 3))
    assert torch.allclose(out[..., 3], torch.full((1, 2, 2), 0.2))


def test_blend_batches_that_cannot_pair_are_a_clear_error():
    with pytest.raises(ValueError, match=r"ImageBlend, input 'image2'.*batch of 2.*batch of 3"):
        run(O.ImageBlend, image1=ramp_image(b=3), image2=ramp_image(b=2), blend_factor=0.5, blend_mode="normal")


# ------------------------------------------------------------------------------------ blur / sharpen

def gaussian(radius: int, sigma: float) -> list[list[float]]:
    """The kernel by its definition: exp(-d^2 / 2 sigma^2) on a [-1, 1] grid, normalised to sum 1."""
    n = 2 * radius + 1
    pos = [-1 + 2 * i / (n - 1) for i in range(n)]
    raw = [[math.exp(-(u * u + v * v) / (2 * sigma * sigma)) for v in pos] for u in pos]
    total = sum(map(sum, raw))
    return [[x / total for x in row] for row in raw]


def mirror(i: int, n: int) -> int:
    """Reflect an out-of-range index about the edge pixel (…, 2, 1 | 0, 1, 2 …)."""
    return -i if i < 0 else 2 * (n - 1) - i if i >= n else i


def convolve(image: torch.Tensor, kernel: list[list[float]]) -> torch.Tensor:
    r = len(kernel) // 2
    b, h, w, c = image.shape
    out = torch.zeros_like(image, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            for i in range(-r, r + 1):
                for j in range(-r, r + 1):
                    out[:, y, x, :] += kernel[i + r][j + r] * image[:, mirror(y + i, h), mirror(x + j, w), :].double()
    return out


@pytest.mark.parametrize(("radius", "sigma"), [(1, 1.0), (2, 0.5), (3, 10.0)])
def test_blur_is_the_gaussian_sum_over_a_mirrored_border(radius: int, sigma: float):
    image = ramp_image(b=2, h=5, w=7, seed=3)
    (out,) = run(O.ImageBlur, image=image, blur_radius=radius, sigma=sigma)
    assert out.shape == image.shape
    assert torch.allclose(out.double(), convolve(image, gaussian(radius, sigma)), atol=1e-6)


def test_blur_keeps_a_flat_image_and_refuses_a_radius_larger_than_the_image():
    flat = torch.full((1, 6, 6, 3), 0.4)
    assert torch.allclose(run(O.ImageBlur, image=flat, blur_radius=2, sigma=1.0)[0], flat, atol=1e-6)
    with pytest.raises(ValueError, match=r"ImageBlur, input 'blur_radius'.*radius of 5"):
        run(O.ImageBlur, image=ramp_image(h=3, w=8), blur_radius=5, sigma=1.0)


@pytest.mark.parametrize(("radius", "sigma", "alpha"), [(1, 1.0, 1.0), (2, 0.5, 0.3), (1, 2.0, 0.0)])
def test_sharpen_kernel_sums_to_one_with_a_boosted_centre(radius: int, sigma: float, alpha: float):
    g = gaussian(radius, sigma)
    kernel = [[-10 * alpha * x for x in row] for row in g]
    kernel[radius][radius] += 1 - sum(map(sum, kernel))
    image = ramp_image(h=5, w=6, seed=4)
    (out,) = run(O.ImageSharpen, image=image, sharpen_radius=radius, sigma=sigma, alpha=alpha)
    assert torch.allclose(out.double(), convolve(image, kernel).clamp(0, 1), atol=1e-5)
    if alpha == 0.0:
        assert torch.allclose(out, image, atol=1e-6)
    flat = torch.full((1, 5, 5, 3), 0.7)
    assert torch.allclose(run(O.ImageSharpen, image=flat, sharpen_radius=radius, sigma=sigma, alpha=alpha)[0], flat,
                          atol=1e-5)


# ------------------------------------------------------------------------------------------ quantize

def colours(image: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(p) for p in (image[..., :3] * 255).round().to(torch.int64).reshape(-1, 3).tolist()}


@pytest.mark.parametrize("dither", O.DITHER_METHODS)
@pytest.mark.parametrize("n", [1, 2, 5])
def test_quantize_gives_at_most_n_colours(dither: str, n: int):
    image = ramp_image(b=2, h=12, w=10, seed=5)
    (out,) = run(O.ImageQuantize, image=image, colors=n, dither=dither)
    assert out.shape == image.shape
    for item in out:
        assert len(colours(item)) <= n


def test_quantize_without_dither_keeps_an_image_that_already_fits_the_palette():
    palette = torch.tensor([[0, 0, 0], [255, 0, 0], [20, 200, 90]], dtype=torch.float32) / 255
    index = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 1], [1, 0, 0, 2]])
    image = palette[index][None]
    (out,) = run(O.ImageQuantize, image=image, colors=3, dither="none")
    assert torch.allclose(out, image, atol=1e-6)


@pytest.mark.parametrize("order", [2, 4, 8])
def test_bayer_dither_repeats_with_the_matrix_size(order: int):
    # Black and white borders give a two-colour palette; the flat grey between them is dithered.
    image = torch.full((1, 32, 32, 3), 0.5)
    image[0, :, :8] = 0.0
    image[0, :, -8:] = 1.0
    (out,) = run(O.ImageQuantize, image=image, colors=2, dither=f"bayer-{order}")
    inner = out[0, 8:24, 8:24, 0]
    assert torch.equal(inner[:-order], inner[order:]) and torch.equal(inner[:, :-order], inner[:, order:])
    assert len(colours(out[0])) == 2 and len(set(inner.flatten().tolist())) == 2  # a pattern, not one colour


def test_bayer_matrix_is_the_textbook_threshold_matrix():
    index = [[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]]
    assert (O.bayer_matrix(2) + 0.5).tolist() == [[(i + 0.5) / 4 for i in row] for row in [[0, 2], [3, 1]]]
    assert (O.bayer_matrix(4) + 0.5).tolist() == [[(i + 0.5) / 16 for i in row] for row in index]
    assert sorted(((O.bayer_matrix(16) + 0.5) * 256 - 0.5).round().astype(int).ravel().tolist()) == list(range(256))


def test_quantize_keeps_alpha():
    image = torch.cat([ramp_image(h=4, w=4), torch.full((1, 4, 4, 1), 0.3)], dim=-1)
    (out,) = run(O.ImageQuantize, image=image, colors=4, dither="floyd-steinberg")
    assert out.shape == (1, 4, 4, 4) and torch.allclose(out[..., 3], image[..., 3])


# ------------------------------------------------------------------------------------- total pixels

@pytest.mark.parametrize(("mp", "steps", "size"), [(0.01, 1, (145, 72)), (0.01, 8, (144, 72)),
                                                    (0.25, 64, (704, 384)), (0.01, 256, (256, 256))])
def test_scale_to_total_pixels(mp: float, steps: int, size: tuple[int, int]):
    # sqrt(mp x 2^20 / (100 x 50)) per side, each side rounded to a multiple of resolution_steps
    image = ramp_image(b=2, h=50, w=100)
    (out,) = run(O.ImageScaleToTotalPixels, image=image, upscale_method="bilinear", megapixels=mp,
                 resolution_steps=steps)
    assert out.shape == (2, size[1], size[0], 3)


def test_scale_to_total_pixels_respects_the_pixel_limit():
    class Ctx:
        limits = main.Limits(max_pixels=100_000)

    with pytest.raises(ValueError, match="ImageScaleToTotalPixels: the result would be"):
        O.ImageScaleToTotalPixels().execute(Ctx(), image=ramp_image(b=2), upscale_method="area", megapixels=1.0,
                                            resolution_steps=1)


# ---------------------------------------------------------------------------------- engine, schemas

def test_filters_run_through_the_engine(tmp_path: Path):
    engine = Engine(tmp_path, I, T, O)
    g = GraphBuilder()
    red = g.node("EmptyImage", width=16, height=8, batch_size=1, color=0xFF0000)
    blue = g.node("EmptyImage", width=4, height=4, batch_size=1, color=0x0000FF)
    blend = g.node("ImageBlend", image1=red, image2=blue, blend_factor=0.5, blend_mode="screen")
    blur = g.node("ImageBlur", image=blend, blur_radius=2, sigma=1.0)
    scaled = g.node("ImageScaleToTotalPixels", image=blur, upscale_method="nearest-exact", megapixels=0.01,
                    resolution_steps=2)
    (out,) = engine.values(g, scaled)
    assert out.shape == (1, 72, 144, 3)  # sqrt(0.01 x 2^20 / 128) = 9.05 per side, even
    assert torch.allclose(out[0, 0, 0], torch.tensor([1.0, 0.0, 0.5]), atol=1e-6)

    bad = GraphBuilder()
    image = bad.node("EmptyImage", width=8, height=8, batch_size=1, color=0)
    bad.node("Keep", value=bad.node("ImageBlend", image1=image, image2=image, blend_factor=0.5, blend_mode="hue"))
    result = engine.validate(bad.build())
    assert not result.ok and result.node_errors["2"].errors[0].type == "value_not_in_list"


def test_object_info_matches_comfyui(tmp_path: Path):
    info = main.build_registry(folders=Folders.under(tmp_path)).object_info()
    blend = info["ImageBlend"]
    assert blend["input"]["required"] == {
        "image1": ["IMAGE"], "image2": ["IMAGE"],
        "blend_factor": ["FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}],
        "blend_mode": [["normal", "multiply", "screen", "overlay", "soft_light", "difference"]]}
    assert blend["input_order"]["required"] == ["image1", "image2", "blend_factor", "blend_mode"]
    assert blend["output"] == ["IMAGE"] and blend["output_node"] is False and not blend["deprecated"]
    assert info["ImageBlur"]["input"]["required"]["blur_radius"] == ["INT", {"default": 1, "min": 1, "max": 31,
                                                                            "step": 1}]
    assert info["ImageBlur"]["input"]["required"]["sigma"] == ["FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0,
                                                                        "step": 0.1}]
    sharpen = info["ImageSharpen"]
    assert sharpen["input_order"]["required"] == ["image", "sharpen_radius", "sigma", "alpha"]
    assert sharpen["input"]["required"]["alpha"] == ["FLOAT", {"default": 1.0, "min": 0.0, "max": 5.0, "step": 0.01}]
    quantize = info["ImageQuantize"]["input"]["required"]
    assert quantize["colors"] == ["INT", {"default": 256, "min": 1, "max": 256, "step": 1}]
    assert quantize["dither"] == [["none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"]]
    total = info["ImageScaleToTotalPixels"]
    assert total["input_order"]["required"] == ["image", "upscale_method", "megapixels", "resolution_steps"]
    assert total["input"]["required"]["upscale_method"] == [["nearest-exact", "bilinear", "area", "bicubic",
                                                             "lanczos"]]
    assert total["input"]["required"]["megapixels"] == ["FLOAT", {"default": 1.0, "min": 0.01, "max": 16.0,
                                                                  "step": 0.01}]
