"""The model manager: handles for every kind, caching by file identity, device placement under a budget."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from nodes.base.errors import ModelLoadError
from nodes.base.handles import SD_LATENT_RGB, SDXL_LATENT_RGB, ClipHandle, ModelHandle, VaeHandle
from nodes.models.manager import ModelManager, module_bytes

from .tiny_models import (
    clip_to_ldm,
    open_clip_to_ldm,
    tiny_models,
    unet_output,
    write_component,
    write_diffusers_folder,
)

EXPECTED = {  # kind -> (handle kind, encoder names, prediction, latent scale)
    "sd1": ("sd1", ["clip_l"], "epsilon", 0.18215),
    "sd2_v": ("sd2", ["clip_h"], "v_prediction", 0.18215),
    "sdxl": ("sdxl", ["clip_l", "clip_g"], "epsilon", 0.13025),
    "sdxl_refiner": ("sdxl_refiner", ["clip_g"], "epsilon", 0.13025),
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_checkpoint_handles(tiny_file, kind):
    manager = ModelManager()
    model, clip, vae = manager.load_checkpoint(tiny_file(kind))
    handle_kind, encoders, prediction, scale = EXPECTED[kind]
    assert isinstance(model, ModelHandle) and isinstance(clip, ClipHandle) and isinstance(vae, VaeHandle)
    assert model.kind == clip.kind == handle_kind
    assert [s.name for s in clip.specs] == encoders and len(clip.encoders) == len(encoders)
    assert model.sampling.prediction == prediction
    assert model.latent_format.scale_factor == vae.scale_factor == scale
    assert model.latent_format.rgb_factors == (SDXL_LATENT_RGB if kind.startswith("sdxl") else SD_LATENT_RGB)
    assert model.manager is clip.manager is vae.manager is manager
    assert model.source == tiny_file(kind).resolve()
    assert manager.device == torch.device("cpu") and model.unet.dtype == torch.float32
    torch.testing.assert_close(unet_output(model.unet), unet_output(tiny_models(kind).unet), atol=1e-5, rtol=1e-4)


def test_device_and_dtype_defaults_follow_the_machine():
    manager = ModelManager()
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert manager.device.type == expected
    assert manager.dtype == (torch.float16 if expected == "cuda" else torch.float32)
    forced = ModelManager(force_cpu=True, dtype=torch.bfloat16)
    assert forced.device == torch.device("cpu") and forced.dtype == torch.bfloat16


def test_loaded_files_are_reused_until_they_change(tiny_file, tmp_path):
    path = shutil.copy(tiny_file("sd1"), tmp_path / "model.safetensors")
    manager = ModelManager()
    first = manager.load_checkpoint(path)
    assert manager.load_checkpoint(path) is first
    assert manager.load_checkpoint(tmp_path / "." / "model.safetensors") is first  # same resolved path
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "replaced": same size, new mtime
    second = manager.load_checkpoint(path)
    assert second is not first and manager.loaded_count() == 1
    shutil.copy(tiny_file("sd2"), path)  # replaced by another model: size changes too
    third = manager.load_checkpoint(path)
    assert third[0].kind == "sd2" and manager.loaded_count() == 1
    os.remove(path)
    with pytest.raises(ModelLoadError, match="no such file") as info:
        manager.load_checkpoint(path)
    assert str(path) in str(info.value)


def test_options_are_part_of_the_cache_key(tiny_file):
    manager = ModelManager()
    eps = manager.load_checkpoint(tiny_file("sd2"))
    v = manager.load_checkpoint(tiny_file("sd2"), prediction_type="v_prediction")
    assert eps[0].sampling.prediction == "epsilon" and v[0].sampling.prediction == "v_prediction"
    assert manager.loaded_count() == 2


def test_a_broken_file_is_not_cached(tiny_file, tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(tiny_file("sd1").read_bytes()[:5000])
    manager = ModelManager()
    for _ in range(2):
        with pytest.raises(ModelLoadError) as info:
            manager.load_checkpoint(path)
        assert str(path) in str(info.value)
    assert manager.loaded_count() == 0
    path.write_bytes(tiny_file("sd1").read_bytes())  # fixed: loads
    assert manager.load_checkpoint(path)[0].kind == "sd1"


def test_component_files(tiny_file, tmp_path):
    ref = tiny_models("sdxl")
    clip_l = write_component(tmp_path / "clip_l.safetensors", clip_to_ldm(ref.text_encoders[0]))
    clip_g = write_component(tmp_path / "clip_g.safetensors", open_clip_to_ldm(ref.text_encoders[1]))
    manager = ModelManager()
    for order in ([clip_l, clip_g], [clip_g, clip_l]):
        clip = manager.load_clip(order, "sdxl")
        assert clip.kind == "sdxl" and [s.name for s in clip.specs] == ["clip_l", "clip_g"]
        assert [s.default_layer for s in clip.specs] == [-2, -2]
    single = manager.load_clip([clip_l], "stable_diffusion")
    assert single.kind == "sd1" and single.specs[0].default_layer == -1
    assert manager.load_clip([clip_g], "stable_diffusion").kind == "sdxl_refiner"
    with pytest.raises(ModelLoadError, match="CLIP-L and an OpenCLIP-G"):
        manager.load_clip([clip_l, clip_l], "sdxl")
    with pytest.raises(ValueError, match="unknown clip type"):
        manager.load_clip([clip_l], "flux")
    vae = manager.load_vae(tiny_file("sdxl"))
    assert vae.scale_factor == 0.13025 and vae.manager is manager
    unet = manager.load_unet(tiny_file("sd1"))
    assert unet.kind == "sd1" and unet.latent_format.scale_factor == 0.18215
    assert manager.load_unet(tiny_file("sd1")) is unet


def test_tokenizers_are_built_once():
    manager = ModelManager()
    assert manager.tokenizer("sd1") is manager.tokenizer("sd1")
    assert manager.tokenizer("open_clip").pad_token_id == 0 and manager.tokenizer("sd1").pad_token_id == 49407


def test_use_on_a_cpu_machine_is_a_no_op(tiny_file):
    manager = ModelManager(force_cpu=True)
    model, _, _ = manager.load_checkpoint(tiny_file("sd1"))
    with manager.use(model.unet) as device:
        assert device == torch.device("cpu")
    assert manager.resident_bytes() == 0


class _Recording(ModelManager):
    """A manager with a pretend GPU: records moves instead of making them (no CUDA needed)."""

    def __init__(self, budget: int) -> None:
        super().__init__(device=torch.device("cuda", 0), dtype=torch.float32, vae_dtype=torch.float32,
                         vram_budget_bytes=budget)
        self.moves: list[tuple[str, str]] = []

    def _move(self, module, device):
        self.moves.append((type(module).__name__ if not hasattr(module, "tag") else module.tag, device.type))


def _block(tag: str, floats: int) -> torch.nn.Module:
    module = torch.nn.Linear(floats, 1, bias=False)
    module.tag = tag
    return module


def test_use_keeps_the_budget_evicting_least_recently_used():
    a, b, c = _block("a", 100), _block("b", 100), _block("c", 100)
    manager = _Recording(budget=2 * module_bytes(a))
    with manager.use(a) as device:
        assert device.type == "cuda"
    with manager.use(b):
        pass
    with manager.use(a):  # a becomes the most recently used
        pass
    with manager.use(c):  # room for c: b goes back, a stays
        pass
    assert manager.moves == [("a", "cuda"), ("b", "cuda"), ("b", "cpu"), ("c", "cuda")]
    assert manager.resident_bytes() == 2 * module_bytes(a)
    manager.moves.clear()
    with manager.use(a, b):  # a in use together with b: c is evicted, not a
        pass
    assert manager.moves == [("c", "cpu"), ("b", "cuda")]
    manager.moves.clear()
    manager.free_memory()
    assert sorted(manager.moves) == [("a", "cpu"), ("b", "cpu")] and manager.resident_bytes() == 0


def test_modules_in_use_are_never_evicted_and_cpu_pinned_ones_never_move(caplog):
    a, b, c = _block("a", 100), _block("b", 100), _block("c", 100)
    manager = _Recording(budget=module_bytes(a))
    manager.keep_on_cpu(c)
    with manager.use(a):
        with manager.use(b):  # over budget, but a is running: both stay, with a warning
            assert manager.resident_bytes() == 2 * module_bytes(a)
        with manager.use(c) as device:
            assert device.type == "cuda" and manager.device_for(c).type == "cpu"
    assert ("c", "cuda") not in manager.moves
    assert "does not fit" in caplog.text


def test_unload_and_free(tiny_file):
    manager = ModelManager()
    manager.load_checkpoint(tiny_file("sd1"))
    manager.free(free_memory=True)
    assert manager.loaded_count() == 1
    manager.free(unload_models=True)
    assert manager.loaded_count() == 0


def test_stats_describe_the_devices():
    stats = ModelManager(force_cpu=True).stats()
    assert stats["pytorch_version"] == torch.__version__
    (device,) = stats["devices"]
    assert device["type"] == "cpu" and device["name"] == "cpu"
    for key in ("index", "vram_total", "vram_free", "torch_vram_total", "torch_vram_free"):
        assert key in device
    assert device["vram_total"] >= device["vram_free"] >= 0


def test_diffusers_folders_are_cached_by_their_files(tmp_path):
    folder = write_diffusers_folder(tmp_path / "pipe", "sdxl")
    manager = ModelManager()
    model, clip, vae = manager.load_checkpoint(folder)
    assert model.kind == clip.kind == "sdxl" and vae.scale_factor == model.latent_format.scale_factor
    assert manager.load_checkpoint(folder)[0] is model
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace("epsilon", "v_prediction"))
    assert manager.load_checkpoint(folder)[0].sampling.prediction == "v_prediction"
