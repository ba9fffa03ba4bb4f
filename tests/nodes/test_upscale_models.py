"""UpscaleModelLoader and ImageUpscaleWithModel on tiny random models in the layouts users download."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from graph import InterruptToken, Progress
from graph.builder import GraphBuilder
from nodes.models.upscale import UpscaleModel, load_upscale_model
from nodes.sd import upscale_nodes
from nodes.sd.upscale_nodes import upscale_image, upscale_tiled
from tests.support.sd_engine import SdEngine

from .tiny_upscalers import compact_state, esrgan_old_state, rrdbnet_state, write


@pytest.fixture
def engine(tmp_path) -> SdEngine:
    return SdEngine(tmp_path)


def put_image(engine: SdEngine, name: str, width: int, height: int, seed: int = 0) -> torch.Tensor:
    """A random RGB PNG in input/; returns it as the IMAGE LoadImage makes of it."""
    rgb = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(engine.folders.input / name)
    return torch.from_numpy(rgb.astype(np.float32) / 255.0)[None]


def upscale_graph(model_name: str, image_name: str) -> GraphBuilder:
    g = GraphBuilder()
    model = g.node("UpscaleModelLoader", model_name=model_name)
    image = g.node("LoadImage", image=image_name)
    g.node("Keep", value=g.node("ImageUpscaleWithModel", upscale_model=model, image=image[0]))
    return g


def run_upscale(engine: SdEngine, model_name: str, image_name: str, **kw) -> torch.Tensor:
    engine.kept.clear()
    outcome = engine.run(upscale_graph(model_name, image_name).build(), **kw)
    assert outcome.status == "success", outcome.failure and outcome.failure.describe()
    return engine.kept[0]


def compact_reference(sd: dict[str, torch.Tensor], image: torch.Tensor, scale: int) -> torch.Tensor:
    """SRVGGNetCompact written out: conv/PReLU stack, pixel shuffle, plus the nearest-upsampled input."""
    x = image.movedim(-1, 1)
    h = x
    n = max(int(k.split(".")[1]) for k in sd)
    for i in range(0, n + 1):
        if f"body.{i}.bias" in sd:
            h = F.conv2d(h, sd[f"body.{i}.weight"], sd[f"body.{i}.bias"], padding=1)
        else:
            h = F.prelu(h, sd[f"body.{i}.weight"])
    out = F.pixel_shuffle(h, scale) + F.interpolate(x, scale_factor=scale, mode="nearest")
    return out.movedim(1, -1)


@pytest.mark.parametrize("name, state, wrap", [
    ("4x_esrgan_old.pth", esrgan_old_state, None),
    ("RealESRGAN_x4plus.pth", rrdbnet_state, "params_ema"),
    ("RealESRGAN_x4plus.safetensors", rrdbnet_state, None),
])
def test_esrgan_layouts_load_and_upscale_four_times(engine, name, state, wrap):
    write(engine.folders.models / "upscale_models" / name, state(), wrap=wrap)
    put_image(engine, "small.png", 12, 8)
    out = run_upscale(engine, name, "small.png")
    assert out.shape == (1, 32, 48, 3) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_old_and_new_esrgan_layouts_are_the_same_network(tmp_path):
    old, _ = load_upscale_model(write(tmp_path / "old.pth", esrgan_old_state()))
    new, _ = load_upscale_model(write(tmp_path / "new.pth", rrdbnet_state(), wrap="params_ema"))
    assert old.architecture == new.architecture == "ESRGAN" and old.scale == new.scale == 4
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.allclose(old(x), new(x), atol=1e-6)


def test_compact_model_matches_its_definition_and_clamps(engine):
    sd = compact_state(scale=2)
    write(engine.folders.models / "upscale_models" / "realesr-general-x2v3.safetensors", sd)
    image = put_image(engine, "photo.png", 20, 14)
    out = run_upscale(engine, "realesr-general-x2v3.safetensors", "photo.png")
    reference = compact_reference(sd, image, 2)
    assert out.shape == (1, 28, 40, 3)
    assert float(reference.min()) < 0.0 or float(reference.max()) > 1.0  # so clamping is actually exercised
    assert torch.allclose(out, reference.clamp(0, 1), atol=1e-5)


def test_tiled_result_equals_untiled_away_from_seams(engine):
    """600 pixels wide is two 512-pixel tiles; a 3-layer model sees 3 pixels around each one."""
    sd = compact_state(scale=2, seed=4)
    write(engine.folders.models / "upscale_models" / "compact.pth", sd)
    image = put_image(engine, "wide.png", 600, 24, seed=1)
    seen: list[tuple[float, float]] = []

    def listener(event):
        if isinstance(event, Progress) and event.node_id == "3":
            seen.append((event.value, event.max))

    out = run_upscale(engine, "compact.pth", "wide.png", listeners=[listener])
    untiled = compact_reference(sd, image, 2).clamp(0, 1)
    assert out.shape == untiled.shape == (1, 48, 1200, 3)
    assert seen == [(1, 2), (2, 2)]  # progress per tile
    diff = (out - untiled).abs()
    assert float(diff.mean()) < 2e-3 and float(diff.max()) < 0.1
    # The second tile starts at 600 - 512 = 88; outside [88, 512) there is one tile only: exact.
    assert torch.allclose(out[:, :, : 2 * 88], untiled[:, :, : 2 * 88], atol=1e-5)
    assert torch.allclose(out[:, :, 2 * 512:], untiled[:, :, 2 * 512:], atol=1e-5)


def test_interrupt_between_tiles(engine):
    write(engine.folders.models / "upscale_models" / "compact.pth", compact_state(scale=2))
    put_image(engine, "wide.png", 1100, 16)
    token = InterruptToken()

    def listener(event):
        if isinstance(event, Progress) and event.node_id == "3":
            token.set()

    outcome = engine.run(upscale_graph("compact.pth", "wide.png").build(), listeners=[listener], interrupt=token)
    assert outcome.status == "interrupted" and outcome.interrupted_at == "3" and not engine.kept


@pytest.mark.parametrize("content, expected", [
    (b"this is not a model", "cannot read checkpoint"),
    (None, "not a known upscale model architecture"),
])
def test_a_broken_file_is_an_error_naming_it(engine, content, expected):
    path = engine.folders.models / "upscale_models" / "broken.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        torch.save({"encoder.weight": torch.zeros(3, 3)}, str(path))
    else:
        path.write_bytes(content)
    put_image(engine, "small.png", 8, 8)
    outcome = engine.run(upscale_graph("broken.pth", "small.png").build())
    assert outcome.status == "error" and outcome.failure.node_type == "UpscaleModelLoader"
    message = outcome.failure.exception_message
    assert "broken.pth" in message and expected in message and "model_name" in message


def test_tile_is_halved_on_out_of_memory_down_to_the_floor():
    sizes: list[int] = []

    def run(piece: torch.Tensor) -> torch.Tensor:
        sizes.append(piece.shape[-1])
        if piece.shape[-1] > 64:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return F.interpolate(piece, scale_factor=2, mode="nearest")

    x = torch.rand(2, 3, 100, 300)
    out = upscale_tiled(run, x, scale=2, tile=256, overlap=8, min_tile=32)
    assert sizes[:2] == [256, 128] and set(sizes[2:]) == {64}
    assert torch.allclose(out, F.interpolate(x, scale_factor=2, mode="nearest"), atol=1e-6)
    with pytest.raises(torch.OutOfMemoryError):
        upscale_tiled(run, x, scale=2, tile=256, overlap=8, min_tile=128)


class RecordingManager:
    """Stands for the model manager: records when the model is placed on the device and sent back."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @contextmanager
    def use(self, module):
        self.events.append("use")
        yield torch.device("cpu")
        self.events.append("release")

    def offload(self, module) -> None:
        self.events.append("offload")


def test_the_model_goes_back_off_the_device_after_use(tmp_path):
    model, _ = load_upscale_model(write(tmp_path / "c.pth", compact_state(scale=2)))
    manager = RecordingManager()
    placed = UpscaleModel(descriptor=model.descriptor, source=model.source, manager=manager)
    out = upscale_image(placed, torch.rand(1, 10, 10, 3))
    assert out.shape == (1, 20, 20, 3) and manager.events == ["use", "release", "offload"]


def test_schemas_match_comfyui():
    by_id = {n.SCHEMA.node_type: n.SCHEMA.to_object_info() for n in upscale_nodes.NODES}
    loader, upscale = by_id["UpscaleModelLoader"], by_id["ImageUpscaleWithModel"]
    assert list(loader["input"]["required"]) == ["model_name"] and loader["output"] == ["UPSCALE_MODEL"]
    assert loader["category"] == "loaders" and loader["display_name"] == "Load Upscale Model"
    assert list(upscale["input"]["required"]) == ["upscale_model", "image"] and upscale["output"] == ["IMAGE"]
    assert upscale["category"] == "image/upscaling"


def test_the_loader_lists_the_upscale_models_folder(engine):
    write(engine.folders.models / "upscale_models" / "sub" / "4x.pth", esrgan_old_state())
    choices = upscale_nodes.UpscaleModelLoader.SCHEMA.to_object_info(engine.folders)["input"]["required"]
    assert choices["model_name"][0] == ["sub/4x.pth"]


def test_spandrel_imports_without_leaving_a_fake_torchvision_behind():
    import importlib.util
    import sys

    from nodes.models.upscale import import_spandrel

    spandrel = import_spandrel()
    assert hasattr(spandrel, "ModelLoader")
    module = sys.modules.get("torchvision")
    if module is None:  # not installed: libraries probing for it must still find nothing
        assert importlib.util.find_spec("torchvision") is None
    else:
        assert getattr(module, "__file__", None)  # a real torchvision, not a placeholder
    from spandrel.architectures.LaMa import __arch as lama_arch  # its torchvision use fails clearly, if at all

    rotate = vars(lama_arch.LaMa)["rotate"]
    if module is None:
        with pytest.raises(RuntimeError, match="needs torchvision"):
            rotate(torch.zeros(1), 0)
