"""The demo checkpoint and the random-checkpoint writer behind it (and behind the tests and benchmarks)."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from nodes.models import checkpoint_from_state_dict, load_checkpoint
from nodes.models import demo as demo_module
from nodes.models.demo import DEMO_NAME, ensure_demo_checkpoint
from nodes.models.random_checkpoint import (
    KINDS,
    ldm_state_dict,
    random_models,
    unet_config,
    vae_config,
    write_random_checkpoint,
    write_state_dict,
)


def test_demo_is_written_once_and_loads(tmp_path):
    models = tmp_path / "models"
    path = ensure_demo_checkpoint(models)
    assert path == models / "checkpoints" / DEMO_NAME and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [DEMO_NAME]  # no temporary file left behind
    stamp = path.stat().st_mtime_ns
    assert ensure_demo_checkpoint(models) == path and path.stat().st_mtime_ns == stamp  # idempotent
    loaded = load_checkpoint(path)
    assert loaded.info.kind == "sd1" and loaded.info.prediction_type == "epsilon"
    assert list(loaded.vae.config.block_out_channels) == [32, 32, 32, 32]  # 8× downscale: 512×512 from 64×64 latents
    assert path.stat().st_size < 20 * 1024**2


def test_demo_is_the_same_everywhere(tmp_path):
    a = ensure_demo_checkpoint(tmp_path / "a").read_bytes()
    assert a == ensure_demo_checkpoint(tmp_path / "b").read_bytes()


def test_an_existing_checkpoint_means_no_demo(tmp_path, tiny_file):
    folder = tmp_path / "models" / "checkpoints" / "mine"
    folder.mkdir(parents=True)
    (folder / "real.safetensors").write_bytes(tiny_file("sd1").read_bytes())
    assert ensure_demo_checkpoint(tmp_path / "models") == folder / "real.safetensors"
    assert not (folder.parent / DEMO_NAME).exists()


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def fail(path, **kwargs):
        path.write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(demo_module, "write_random_checkpoint", fail)
    with pytest.raises(OSError, match="disk full"):
        ensure_demo_checkpoint(tmp_path / "models")
    assert list((tmp_path / "models" / "checkpoints").iterdir()) == []


@pytest.mark.parametrize("kind", KINDS)
def test_small_models_detect_exactly(kind):
    """Shapes only (meta tensors): the detector rebuilds the small configs the writer used."""
    sd = ldm_state_dict(kind, random_models(kind, "small", meta=True))
    loaded = checkpoint_from_state_dict(sd, device="meta", prediction_type="epsilon")
    for key, want in unet_config(kind, "small").items():
        if key != "sample_size":
            got = loaded.info.unet_config.get(key)
            assert (list(got) if isinstance(got, tuple) else got) == want, key
    assert loaded.info.vae_config["block_out_channels"] == vae_config(kind, "small")["block_out_channels"]


def test_full_size_sd15_layout():
    sd = ldm_state_dict("sd1", random_models("sd1", "full"))
    assert sum(k.startswith("model.diffusion_model.") for k in sd) == 686  # the SD 1.5 UNet's tensors
    unet = {k: v for k, v in sd.items() if k.startswith("model.diffusion_model.")}
    assert sum(v.numel() for v in unet.values()) == 859_520_964 and all(v.is_meta for v in unet.values())
    loaded = checkpoint_from_state_dict(sd, device="meta")
    assert loaded.info.kind == "sd1" and loaded.info.unet_config["block_out_channels"] == [320, 640, 1280, 1280]


def test_meta_tensors_are_drawn_as_they_are_written(tmp_path):
    """What "full" does, at tiny size: shapes from the meta device, values drawn tensor by tensor."""
    sd = ldm_state_dict("sd1", random_models("sd1", "tiny", meta=True))
    path = write_state_dict(tmp_path / "drawn.safetensors", sd, dtype=torch.float16)
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(sd)
        assert bool((f.get_tensor("first_stage_model.encoder.norm_out.weight") == 1).all())
        assert not f.get_tensor("model.diffusion_model.out.2.bias").any()
        conv = f.get_tensor("model.diffusion_model.input_blocks.0.0.weight").float()
        assert conv.dtype == torch.float32 and 0.05 < float(conv.std()) < 0.3  # ~ 1/sqrt(fan_in = 36)
    loaded = load_checkpoint(path, dtype=torch.float32)
    sample = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        out = loaded.unet(sample, torch.tensor([500]), encoder_hidden_states=torch.randn(1, 77, 32)).sample
        image = loaded.vae.decode(sample).sample
    assert out.isfinite().all() and image.isfinite().all()


def test_writer_formats_and_dtypes(tmp_path):
    st = write_random_checkpoint(tmp_path / "m.safetensors", "sdxl", torch.bfloat16, seed=3)
    ckpt = write_random_checkpoint(tmp_path / "m.ckpt", "sdxl", torch.bfloat16, seed=3)
    a, b = load_checkpoint(st, dtype=torch.float32), load_checkpoint(ckpt, dtype=torch.float32)
    assert a.info.kind == b.info.kind == "sdxl"
    for (name, x), (_, y) in zip(a.unet.state_dict().items(), b.unet.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    other = load_checkpoint(write_random_checkpoint(tmp_path / "o.safetensors", "sdxl", seed=4))
    assert not torch.equal(other.unet.conv_in.weight, a.unet.conv_in.weight)
    with pytest.raises(ValueError, match="unknown size"):
        write_random_checkpoint(tmp_path / "x.safetensors", size="huge")
