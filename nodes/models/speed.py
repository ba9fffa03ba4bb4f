"""Speed settings and the levers they turn: memory layout, compilation, precision, backend flags.

Defaults follow what was measured (README, "Performance"): on a GPU channels_last, cudnn.benchmark,
CUDA graphs of the sampling steps, fp16 U-Net/text encoders and a bf16 VAE (fp32 where the GPU lacks
bf16) are on; `torch.compile` is
opt-in everywhere (minutes of compilation on first use, cached on disk across runs). On a GPU it is
inductor's default; on the CPU inductor's default measured 1.26x slower than eager for the full SD 1.5
U-Net, and freezing the weights into the compiled code (folded, prepacked for oneDNN) 0.83x, so the CPU
compiles with freezing (FrozenOnCpu), which holds its own copy of the weights and drops the module's
file pages. On the CPU no
lever is on by default: the one that measured much faster, bf16 weights (`--unet-dtype bf16`, 0.36x
the fp32 time on a CPU with AMX; `--cpu-bf16` autocast is less steady), changes the images beyond the
fidelity tests' tolerance; channels_last (1.045x), fused QKV (1.002x) and the math SDPA
kernel (1.20x) measured no faster.
"""

from __future__ import annotations

import logging
import os
import weakref
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import cuda_graphs
from .weights_file import release_clean_pages, release_file_pages

log = logging.getLogger("sumie.models")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True, kw_only=True)
class SpeedSettings:
    """How models run; `None` means "the default for the device" (see the module docstring)."""

    unet_dtype: str | None = None  # fp32, fp16, bf16 (U-Net and text encoders)
    vae_dtype: str | None = None  # fp32, fp16, bf16
    channels_last: bool | None = None
    compile: bool = False  # torch.compile the U-Net on first use
    compile_backend: str = "inductor"
    compile_cache: Path | None = None  # inductor's on-disk cache, so a restart reuses the compiled code
    cuda_graphs: bool = True  # replay plain U-Net calls as CUDA graphs (nodes/models/cuda_graphs.py)
    cudnn_benchmark: bool = True
    pinned_offload: bool = True  # weights moved off the GPU land in pinned memory (fast, async reloads)
    load_to_device: bool = True  # load weights straight onto the GPU when they fit the budget
    vram_budget_gb: float | None = None
    threads: int | None = None  # CPU threads for torch ops; default torch's (the physical cores)
    cpu_bf16: bool = False  # bf16 autocast of the U-Net on CPUs with bf16 matmul units (AMX, AVX512-BF16)

    def autocast(self, device: torch.device) -> AbstractContextManager:
        """bf16 autocast around U-Net calls on the CPU when asked for and the CPU has bf16 units."""
        if device.type == "cpu" and self.cpu_bf16 and cpu_has_bf16():
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return nullcontext()

    def dtype(self, name: str | None) -> torch.dtype | None:
        if name is None:
            return None
        if name not in DTYPES:
            raise ValueError(f"unknown precision {name!r}; expected one of {', '.join(DTYPES)}")
        return DTYPES[name]

    def channels_last_on(self, device: torch.device) -> bool:
        return self.channels_last if self.channels_last is not None else device.type == "cuda"


def cpu_has_bf16() -> bool:
    """Whether oneDNN has fast bf16 kernels here (AVX512-BF16 or AMX); elsewhere bf16 is emulated, slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def apply_process_settings(settings: SpeedSettings, device: torch.device) -> None:
    """Process-wide switches: threads, cuDNN autotuning, TF32 matmuls, the compile cache folder."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = True  # only fp32 matmuls change; fp16/bf16 are unaffected
        torch.backends.cudnn.allow_tf32 = True
    if settings.compile and settings.compile_cache is not None:
        settings.compile_cache.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(settings.compile_cache))
        os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")


def channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """Store the 4-D (convolution) weights NHWC, the layout cuDNN and oneDNN convolve fastest.
    One weight at a time, dropping the file's copy of each as it is rewritten: converting never
    holds two copies of the model."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is None or param.dim() != 4 or param.is_contiguous(memory_format=torch.channels_last):
                continue
            sub._parameters[name] = torch.nn.Parameter(param.detach().contiguous(memory_format=torch.channels_last),
                                                       requires_grad=param.requires_grad)
            release_file_pages(param)
    return module


def fuse_qkv(unet: torch.nn.Module) -> None:
    """One matmul for q, k and v of each self-attention (k and v of each cross-attention). diffusers
    keeps the separate projections beside the fused ones, so this costs their memory twice: measured
    only, not used."""
    unet.fuse_qkv_projections()


def unfuse_qkv(unet: torch.nn.Module) -> None:
    unet.unfuse_qkv_projections()


class FrozenOnCpu:
    """The U-Net compiled by inductor with freezing, for the CPU: its weights become constants of
    the compiled code, folded and prepacked for oneDNN's convolutions and matmuls.

    Frozen code computes with the weights of its first call, whatever the module holds later, so it
    only runs while the U-Net holds exactly those tensors (checked by address on every call). Other
    weights (a LoRA or a merge swapped in for a run) and calls with gradients on run the plain
    module: eagerly, as inductor without freezing measured slower than eager on the CPU.
    """

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet
        self.frozen = torch.compile(unet, backend="inductor", options={"freezing": True})
        self.addresses: tuple[int, ...] | None = None
        self.released = False

    def release_weights(self) -> None:
        """Drop the module's copy of the weights from memory once frozen: the compiled code holds its
        own (prepacked) copy, so keeping both would double the U-Net's memory. Weights mapped from an
        uncompressed file only lose their pages (touching them again, for a patch or a plain call,
        reads the file); weights in ordinary memory (cast from another precision) stay."""
        release_clean_pages([*self.unet.parameters(), *self.unet.buffers()])  # pages written in place stay

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        addresses = cuda_graphs.weight_addresses(self.unet)
        if self.addresses is None:
            self.addresses = addresses
        if addresses != self.addresses or torch.is_grad_enabled():
            return self.unet(*args, **kwargs)
        # dynamo decides what becomes a constant while tracing, so the setting must be on here too
        with torch._inductor.config.patch(freezing=True):
            out = self.frozen(*args, **kwargs)
        if not self.released:
            self.released = True
            self.release_weights()
        return out


_frozen_unets: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()
_frozen_count = 0


def _forget_unloaded_frozen() -> None:
    """Dynamo's cache keeps frozen code, and with it the weights it froze, after its U-Net is gone;
    when one is gone, clear that cache before freezing another (live ones compile again, from the
    on-disk cache). Done here, never from a finalizer, which could run in the middle of a compile."""
    global _frozen_count
    if len(_frozen_unets) < _frozen_count:
        torch._dynamo.reset()
        _frozen_count = len(_frozen_unets)
        for unet in _frozen_unets:  # freezing again reads their weights: drop the pages again after
            unet.__dict__["_compiled_by_backend"]["inductor"].released = False


def compiled(unet: torch.nn.Module, backend: str = "inductor") -> Any:
    """`torch.compile(unet)` for this backend, made once per U-Net (compilation waits for the first call).
    Inductor on the CPU freezes the weights (FrozenOnCpu); on a GPU it compiles with its defaults."""
    global _frozen_count
    cache = unet.__dict__.setdefault("_compiled_by_backend", {})  # a plain attribute, not a submodule
    if backend not in cache:
        on_cpu = all(p.device.type == "cpu" for p in unet.parameters())
        if backend == "inductor" and on_cpu:
            _forget_unloaded_frozen()
            cache[backend] = FrozenOnCpu(unet)
            _frozen_unets.add(unet)
            _frozen_count += 1
        else:
            cache[backend] = torch.compile(unet, backend=backend)
    return cache[backend]


def pin_to_cpu(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of a device tensor in pinned host memory (so moving it back is a fast async DMA)."""
    out = torch.empty_like(tensor, device="cpu", pin_memory=True)  # keeps the layout (channels_last)
    out.copy_(tensor, non_blocking=True)
    return out


def move_module(module: torch.nn.Module, device: torch.device, *, pinned: bool) -> None:
    """Move weights between the CPU and a GPU; off the GPU into pinned memory when `pinned`."""
    if device.type == "cpu" and pinned and torch.cuda.is_available():
        on_gpu = any(p.is_cuda for p in module.parameters())
        if on_gpu:
            cuda_graphs.drop(module)
            module._apply(lambda t: pin_to_cpu(t) if t.is_cuda else t)
            torch.cuda.synchronize()
            return
    if device.type == "cpu":
        cuda_graphs.drop(module)
    module.to(device, non_blocking=device.type == "cuda")


__all__ = ["DTYPES", "FrozenOnCpu", "SpeedSettings", "apply_process_settings", "channels_last", "compiled",
           "cpu_has_bf16", "fuse_qkv", "move_module", "pin_to_cpu", "unfuse_qkv"]
