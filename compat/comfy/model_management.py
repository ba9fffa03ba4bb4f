"""`comfy.model_management` for ComfyUI packs: devices, the interrupt check and cache emptying.

The interrupt is the running job's own token (no global flag): `throw_exception_if_processing_interrupted`
raises `InterruptProcessingException`, a subclass of the engine's `Interrupted`, so the run ends as
interrupted rather than as an error.
"""

from __future__ import annotations

import enum
from typing import Any

from graph.errors import Interrupted
from graph.sizing import system_memory

from .. import _runtime


class InterruptProcessingException(Interrupted):
    def __init__(self, reason: str = "interrupted") -> None:
        super().__init__(reason)


class VRAMState(enum.Enum):
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


class CPUState(enum.Enum):
    GPU = 0
    CPU = 1
    MPS = 2


vram_state = VRAMState.NORMAL_VRAM
current_loaded_models: list[Any] = []


def _torch() -> Any:
    import torch

    return torch


def get_torch_device() -> Any:
    """The engine's compute device (the model manager's), else cuda when present and allowed."""
    torch = _torch()
    manager = _runtime.services().get("models")
    if manager is not None and getattr(manager, "device", None) is not None:
        return manager.device
    force_cpu = bool(_runtime.services().get("force_cpu"))
    if torch.cuda.is_available() and not force_cpu:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def intermediate_device() -> Any:
    return _torch().device("cpu")  # IMAGE, MASK and LATENT live on the CPU between nodes


def unet_offload_device() -> Any:
    return _torch().device("cpu")


def text_encoder_device() -> Any:
    return get_torch_device()


def text_encoder_offload_device() -> Any:
    return _torch().device("cpu")


def vae_device() -> Any:
    return get_torch_device()


def vae_offload_device() -> Any:
    return _torch().device("cpu")


def get_autocast_device(dev: Any) -> str:
    return getattr(dev, "type", "cuda")


def is_device_cpu(device: Any) -> bool:
    return getattr(device, "type", device) == "cpu"


def is_device_mps(device: Any) -> bool:
    return getattr(device, "type", device) == "mps"


def is_device_cuda(device: Any) -> bool:
    return getattr(device, "type", device) == "cuda"


def cpu_mode() -> bool:
    return is_device_cpu(get_torch_device())


def should_use_fp16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    device = device if device is not None else get_torch_device()
    return is_device_cuda(device)


def should_use_bf16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    torch = _torch()
    device = device if device is not None else get_torch_device()
    return is_device_cuda(device) and torch.cuda.is_bf16_supported()


def unet_dtype(device: Any = None, model_params: int = 0, supported_dtypes: Any = None) -> Any:
    torch = _torch()
    return torch.float16 if should_use_fp16(device) else torch.float32


def vae_dtype(device: Any = None, allowed_dtypes: Any = None) -> Any:
    manager = _runtime.services().get("models")
    if manager is not None and getattr(manager, "vae_dtype", None) is not None:
        return manager.vae_dtype
    return _torch().float32


def get_total_memory(dev: Any = None, torch_total_too: bool = False) -> int:
    torch = _torch()
    dev = dev if dev is not None else get_torch_device()
    if is_device_cuda(dev):
        total = torch.cuda.get_device_properties(dev).total_memory
        return (total, total) if torch_total_too else total  # type: ignore[return-value]
    total = system_memory()[0] or 0
    return (total, total) if torch_total_too else total  # type: ignore[return-value]


def get_free_memory(dev: Any = None, torch_free_too: bool = False) -> int:
    torch = _torch()
    dev = dev if dev is not None else get_torch_device()
    if is_device_cuda(dev):
        free, _ = torch.cuda.mem_get_info(dev)
        return (free, free) if torch_free_too else free  # type: ignore[return-value]
    free = system_memory()[1] or 0
    return (free, free) if torch_free_too else free  # type: ignore[return-value]


def soft_empty_cache(force: bool = False) -> None:
    import sys

    torch = sys.modules.get("torch")  # nothing to empty if torch was never imported
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def unload_all_models() -> None:
    manager = _runtime.services().get("models")
    if manager is not None and hasattr(manager, "unload_all"):
        manager.unload_all()


def load_models_gpu(models: Any, memory_required: int = 0, force_patch_weights: bool = False,
                    minimum_memory_required: Any = None, force_full_load: bool = False) -> None:
    """The engine's model manager places weights itself; nothing to do."""


def load_model_gpu(model: Any) -> None:
    load_models_gpu([model])


def cleanup_models(keep_clone_weights_loaded: bool = False) -> None:
    pass


def cast_to_device(tensor: Any, device: Any, dtype: Any, copy: bool = False) -> Any:
    return tensor.to(device=device, dtype=dtype, copy=copy)


def processing_interrupted() -> bool:
    ctx = _runtime.context()
    return bool(ctx is not None and ctx.interrupt.is_set)


def throw_exception_if_processing_interrupted() -> None:
    ctx = _runtime.context()
    if ctx is not None and ctx.interrupt.is_set:
        raise InterruptProcessingException(ctx.interrupt.reason)


def interrupt_current_processing(value: bool = True) -> None:
    ctx = _runtime.context()
    if ctx is not None and value:
        ctx.interrupt.set("interrupted")


# -- more of ComfyUI's queries packs make --------------------------------------------------------------
def intermediate_dtype() -> Any:
    return _torch().float32


def get_torch_device_name(device: Any) -> str:
    torch = _torch()
    if is_device_cuda(device):
        return f"{device} {torch.cuda.get_device_name(device)}"
    return str(getattr(device, "type", device))


def cast_to(weight: Any, dtype: Any = None, device: Any = None, non_blocking: bool = False, copy: bool = False,
            stream: Any = None) -> Any:
    return weight.to(device=device, dtype=dtype, non_blocking=non_blocking, copy=copy)


def cast_to_device_dtype(tensor: Any, device: Any, dtype: Any) -> Any:
    return tensor.to(device=device, dtype=dtype)


def free_memory(memory_required: int, device: Any, keep_loaded: Any = ()) -> None:
    """The engine's model manager frees memory itself; emptying the cache is all that is left to do."""
    soft_empty_cache()


def raise_non_oom(exc: BaseException) -> None:
    if not isinstance(exc, _torch().cuda.OutOfMemoryError):
        raise exc


def is_intel_xpu() -> bool:
    return False


def is_directml_enabled() -> bool:
    return False


directml_enabled = False


def xformers_enabled() -> bool:
    return False


def pytorch_attention_enabled() -> bool:
    return True


def dtype_size(dtype: Any) -> int:
    return _torch().empty((), dtype=dtype).element_size()


def module_size(module: Any) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def __getattr__(name: str) -> Any:
    if name == "OOM_EXCEPTION":  # torch's, without importing torch before a pack asks
        return _torch().cuda.OutOfMemoryError
    raise AttributeError(f"module 'comfy.model_management' has no attribute {name!r}: it is part of ComfyUI's "
                         "model management, which Sumie's compatibility layer does not provide")
