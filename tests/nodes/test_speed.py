"""Speed settings and memory: zero-copy loading, per-tensor casts, the speed flags, the VAE's fallback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import main
from cli.args import parse_args
from nodes.base.errors import ModelLoadError
from nodes.base.handles import VaeHandle
from nodes.models.lora import WeightPatch
from nodes.models.manager import ModelManager
from nodes.models.speed import SpeedSettings, compiled
from nodes.models.weights_file import read_state_dict
from nodes.sampling.ksampler import SamplingRequest, sample
from nodes.sd.vae import VAEDecode, VAEEncode, decode_tiled, encode_tiled

ROOT = Path(__file__).resolve().parents[2]

# Loads a file of 32 tensors of 8 MiB (fp32) or 4 MiB (fp16), casting to fp32, touches every value,
# and prints the peak resident memory above what the process used before loading.
_PROBE = r"""
import json, os, sys
import torch
from nodes.models.convert import _cast
from nodes.models.weights_file import read_state_dict
float(torch.ones(1 << 20).sum())  # thread pools and allocator set up before the baseline
base = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
sd = _cast(read_state_dict(sys.argv[1]), torch.float32)
total = sum(float(v.sum()) for v in sd.values())
# VmHWM, not ru_maxrss: a child's ru_maxrss starts from the (large) forking test process
peak = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
print(json.dumps({"above": peak - base, "weights": sum(v.numel() * v.element_size() for v in sd.values())}))
"""


def _big_file(path: Path, dtype: torch.dtype) -> Path:
    gen = torch.Generator().manual_seed(0)
    save_file({f"w{i}": torch.randn(2048, 1024, generator=gen).to(dtype) for i in range(32)}, str(path))
    return path


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_loading_and_casting_hold_one_copy_of_the_weights(tmp_path, dtype):
    path = _big_file(tmp_path / "w.safetensors", dtype)
    out = subprocess.run([sys.executable, "-c", _PROBE, str(path)], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["weights"] == 32 * 2048 * 1024 * 4
    # one copy of the fp32 weights (+ one tensor in flight, + ~40 MB of allocator noise under pytest);
    # keeping the fp16 file's pages beside the cast copy would be 1.5x, a second fp32 copy 2x
    assert data["above"] < 1.3 * data["weights"], data


def test_loaded_tensors_are_the_files_values_and_writing_them_leaves_the_file_alone(tmp_path):
    path = _big_file(tmp_path / "w.safetensors", torch.float16)
    first = read_state_dict(path)
    expected = first["w3"].clone()
    first["w3"].add_(1)  # a LoRA merged in place writes like this
    again = read_state_dict(path)
    assert torch.equal(again["w3"], expected)
    assert torch.equal(first["w3"], expected + 1)


def test_a_header_whose_sizes_do_not_match_the_shapes_is_refused(tmp_path):
    path = tmp_path / "bad.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 32]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(32))
    with pytest.raises(ModelLoadError, match="claims 32 bytes for shape"):
        read_state_dict(path)


def test_fp16_file_loaded_as_fp32_matches_the_fp32_file(tiny_file):
    from nodes.models.checkpoint import load_checkpoint

    half = load_checkpoint(tiny_file("sd1", torch.float16), dtype=torch.float32)
    ref = load_checkpoint(tiny_file("sd1", torch.float32))
    for (name, a), (_, b) in zip(half.unet.state_dict().items(), ref.unet.state_dict().items(), strict=True):
        assert a.dtype == torch.float32, name
        torch.testing.assert_close(a, b.half().float(), msg=name)


# ------------------------------------------------------------------------------- the flags


def test_speed_flags_reach_the_model_manager(tmp_path):
    args = parse_args(["run", "x.json", "--compile", "--unet-dtype", "bf16", "--vae-dtype", "fp32",
                       "--no-channels-last", "--vram-budget", "6", "--cpu-bf16", "--user-dir", str(tmp_path)])
    settings = main.settings_from(args)
    speed = settings.speed
    assert speed.compile and speed.cpu_bf16 and speed.channels_last is False and speed.vram_budget_gb == 6
    assert speed.compile_cache == tmp_path / "compile_cache"
    manager = ModelManager(force_cpu=True, speed=speed)
    assert manager.dtype == torch.bfloat16 and manager.vae_dtype == torch.float32
    alone = ModelManager(force_cpu=True, speed=SpeedSettings(unet_dtype="bf16"))
    assert alone.dtype == torch.bfloat16 and alone.vae_dtype == torch.float32  # the VAE keeps its default
    assert manager.vram_budget_bytes == 6 * 1024**3 and not manager.channels_last
    assert main.settings_from(parse_args(["convert", "a.json", "b.json"])).speed is None
    default = ModelManager(force_cpu=True)
    assert default.dtype == torch.float32 and not default.channels_last and not default.speed.compile


def _conds(width: int) -> tuple[list, list]:
    gen = torch.Generator().manual_seed(0)
    return [[torch.randn(1, 7, width, generator=gen), {}]], [[torch.randn(1, 7, width, generator=gen), {}]]


def _sample(model, conds, cfg: float = 5.0) -> torch.Tensor:
    req = SamplingRequest(seed=3, steps=2, cfg=cfg, sampler_name="euler", scheduler="normal")
    return sample(model, conds[0], conds[1], {"samples": torch.zeros(1, 4, 8, 8)}, req)["samples"]


def test_channels_last_weights_sample_the_same_image(tiny_file):
    plain, _, _ = ModelManager(force_cpu=True).load_checkpoint(tiny_file("sd1"))
    fast, _, _ = ModelManager(force_cpu=True, speed=SpeedSettings(channels_last=True)).load_checkpoint(
        tiny_file("sd1"))
    conv = fast.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    conds = _conds(plain.unet.config.cross_attention_dim)
    # another convolution algorithm rounds differently; the tiny random model amplifies it to ~1e-3
    torch.testing.assert_close(_sample(fast, conds), _sample(plain, conds), atol=1e-2, rtol=1e-2)


def test_compile_flag_runs_the_unet_through_torch_compile(tiny_file):
    plain, _, _ = ModelManager(force_cpu=True).load_checkpoint(tiny_file("sd1"))
    speed = SpeedSettings(compile=True, compile_backend="eager")  # eager: torch.compile's path without codegen
    model, _, _ = ModelManager(force_cpu=True, speed=speed).load_checkpoint(tiny_file("sd1"))
    conds = _conds(plain.unet.config.cross_attention_dim)
    assert torch.equal(_sample(model, conds), _sample(plain, conds))
    assert compiled(model.unet, "eager") is model.unet.__dict__["_compiled_by_backend"]["eager"]
    assert "_compiled_by_backend" not in plain.unet.__dict__


def test_inductor_on_the_cpu_gives_the_eager_image_and_follows_weight_patches(tiny_file):
    """--compile on the CPU freezes the weights into the compiled code; a LoRA swapped in for a run
    must still change the result (the frozen code is bypassed), and the base comes back after."""
    from nodes.models.patching import Multiply, patched
    from nodes.models.speed import FrozenOnCpu

    plain, _, _ = ModelManager(force_cpu=True).load_checkpoint(tiny_file("sd1"))
    model, _, _ = ModelManager(force_cpu=True, speed=SpeedSettings(compile=True)).load_checkpoint(tiny_file("sd1"))
    conds = _conds(plain.unet.config.cross_attention_dim)
    # the U-Net agrees to ~1e-6 (below); two steps at cfg 5 of the tiny random model amplify it to ~1e-3
    torch.testing.assert_close(_sample(model, conds), _sample(plain, conds), rtol=5e-3, atol=5e-3)
    unet = model.unet
    fast = compiled(unet)
    assert isinstance(fast, FrozenOnCpu) and unet.__dict__["_compiled_by_backend"]["inductor"] is fast
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([500.0, 500.0])
    ctx = torch.randn(2, 7, unet.config.cross_attention_dim, generator=gen)

    def both() -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return fast(x, t, encoder_hidden_states=ctx).sample, unet(x, t, encoder_hidden_states=ctx).sample

    out, ref = both()
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    lora = WeightPatch(name="x", strength=1.0, component="unet",
                       deltas={n: Multiply(1.5) for n, p in unet.named_parameters() if p.dim() == 4})
    with patched(unet, [lora], "unet"):
        patched_out, patched_ref = both()
    assert (patched_ref - ref).abs().max() > 1e-2  # the patch really changes the U-Net
    assert (patched_out - patched_ref).abs().max() <= 1e-5 * patched_ref.abs().max()
    again, _ = both()
    assert (again - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_cpu_bf16_runs_only_when_asked_and_only_on_cpus_with_bf16_units(tiny_file):
    from nodes.models.speed import cpu_has_bf16

    plain, _, _ = ModelManager(force_cpu=True).load_checkpoint(tiny_file("sd1"))
    again, _, _ = ModelManager(force_cpu=True).load_checkpoint(tiny_file("sd1"))
    fast, _, _ = ModelManager(force_cpu=True, speed=SpeedSettings(cpu_bf16=True)).load_checkpoint(tiny_file("sd1"))
    conds = _conds(plain.unet.config.cross_attention_dim)
    a, b = _sample(plain, conds), _sample(fast, conds)
    assert torch.equal(_sample(again, conds), a)  # off by default: fp32, bit for bit
    if cpu_has_bf16():
        assert not torch.equal(a, b) and torch.isfinite(b).all()  # bf16 arithmetic really ran
    else:
        assert torch.equal(a, b)  # no bf16 units: the setting is ignored, never emulated (slower)


# ------------------------------------------------------------------------------- VAE out of memory


class _SmallDevice:
    """Makes a VAE's encode/decode fail like a GPU out of memory on inputs larger than `limit` pixels."""

    def __init__(self, vae, decode_limit: int, encode_limit: int) -> None:
        self.vae, self.refused = vae, 0
        self.decode_limit, self.encode_limit = decode_limit, encode_limit
        self.decode_fn, self.encode_fn = vae.decode, vae.encode

    def decode(self, z, *a, **k):
        if z.shape[-1] * z.shape[-2] > self.decode_limit:
            self.refused += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return self.decode_fn(z, *a, **k)

    def encode(self, x, *a, **k):
        if x.shape[-1] * x.shape[-2] > self.encode_limit:
            self.refused += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return self.encode_fn(x, *a, **k)


class _Ctx:
    progress = None


def _vae_handle() -> VaeHandle:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1).eval()
    return VaeHandle(vae=vae, scale_factor=0.18215)


def test_vae_decode_and_encode_fall_back_to_tiles_when_the_device_runs_out_of_memory(monkeypatch, caplog):
    handle = _vae_handle()
    small = _SmallDevice(handle.vae, decode_limit=300 * 300, encode_limit=600 * 600)  # whole fails, tiles fit
    monkeypatch.setattr(handle.vae, "decode", small.decode)
    monkeypatch.setattr(handle.vae, "encode", small.encode)
    latent = torch.randn(1, 4, 320, 320, generator=torch.Generator().manual_seed(0)) * 0.5
    (image,) = VAEDecode().execute(_Ctx(), samples={"samples": latent}, vae=handle)
    assert small.refused == 1 and image.shape == (1, 640, 640, 3)
    torch.testing.assert_close(image, decode_tiled(handle, latent, tile_size=512, overlap=64))
    (encoded,) = VAEEncode().execute(_Ctx(), pixels=image, vae=handle)
    assert small.refused == 2 and encoded["samples"].shape == (1, 4, 320, 320)
    torch.testing.assert_close(encoded["samples"], encode_tiled(handle, image, tile_size=512, overlap=64))
    assert "ran out of device memory" in caplog.text


def test_bf16_weights_sample_on_the_cpu(tiny_file):
    plain, _, _ = ModelManager(force_cpu=True).load_checkpoint(tiny_file("sd1"))
    half, clip, vae = ModelManager(force_cpu=True, speed=SpeedSettings(unet_dtype="bf16")).load_checkpoint(
        tiny_file("sd1"))
    assert half.unet.dtype == torch.bfloat16 and clip.encoders[0].dtype == torch.bfloat16
    assert vae.vae.dtype == torch.float32
    conds = _conds(plain.unet.config.cross_attention_dim)
    out = _sample(half, conds)
    assert out.dtype == torch.float32 and out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
    assert not torch.equal(out, _sample(plain, conds))


def test_the_vae_is_cast_from_the_files_values_not_through_the_unets_precision(tiny_file):
    from nodes.models.checkpoint import load_checkpoint

    _, _, vae = ModelManager(force_cpu=True, speed=SpeedSettings(unet_dtype="bf16")).load_checkpoint(tiny_file("sd1"))
    ref = load_checkpoint(tiny_file("sd1")).vae
    for (name, a), (_, b) in zip(vae.vae.state_dict().items(), ref.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # fp32 file, fp32 VAE: exact, no bf16 rounding on the way
