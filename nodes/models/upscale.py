"""Upscale models (ESRGAN, Real-ESRGAN, SwinIR, SPAN, Compact, ...) loaded through spandrel.

spandrel reads the architecture and its settings from the state dict's keys and shapes, offline. Only
the MIT-licensed `spandrel` package is used, never `spandrel_extra_arches` (non-commercial licences).

spandrel declares torchvision as a dependency, but only two architectures that have nothing to do
with upscaling use it (LaMa's rotation, RestoreFormer's normalisation), and both import it when
spandrel is imported. torchvision is not installed here (its only wheel is a CUDA build that breaks
transformers), so when it is absent spandrel is imported with placeholder torchvision modules that
exist only for the duration of that import; calling into them raises a clear error.
"""

from __future__ import annotations

import importlib.machinery
import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nodes.base.errors import ModelLoadError

from .weights_file import read_state_dict

_IMPORT_LOCK = threading.Lock()
_TORCHVISION_MODULES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
# SwinIR files saved from a DataParallel wrapper carry a "module." prefix on every key.
_SWINIR_WRAPPED_KEY = "module.layers.0.residual_group.blocks.0.norm1.weight"


class _NeedsTorchvision:
    """Stands in for a torchvision function or class: attribute access works, calling it explains."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> _NeedsTorchvision:
        return _NeedsTorchvision(f"{self._name}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self._name} needs torchvision, which is not installed; this model architecture "
                           "(LaMa or RestoreFormer) cannot run here")


def _placeholder(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__getattr__ = lambda attr: _NeedsTorchvision(f"{name}.{attr}")  # type: ignore[method-assign]
    return module


def import_spandrel() -> Any:
    """The spandrel module, importable with or without torchvision installed."""
    with _IMPORT_LOCK:
        try:
            import spandrel

            return spandrel
        except ModuleNotFoundError as exc:
            if exc.name == "spandrel":
                raise ModelLoadError(None, "upscale models need the 'spandrel' package; install it with "
                                           "'pip install --no-deps spandrel einops' (scripts/setup.sh does)") from None
            if not (exc.name or "").startswith("torchvision"):
                raise
        # Libraries that check for torchvision once, at import, must have done so before the placeholders.
        import diffusers.utils.import_utils  # noqa: F401
        import transformers.utils.import_utils  # noqa: F401

        placeholders = {name: _placeholder(name) for name in _TORCHVISION_MODULES}
        placeholders["torchvision"].transforms = placeholders["torchvision.transforms"]  # type: ignore[attr-defined]
        placeholders["torchvision.transforms"].functional = placeholders["torchvision.transforms.functional"]  # type: ignore[attr-defined]
        sys.modules.update(placeholders)
        try:
            import spandrel

            return spandrel
        finally:
            for name, module in placeholders.items():
                if sys.modules.get(name) is module:
                    del sys.modules[name]


@dataclass(frozen=True, eq=False)
class UpscaleModel:
    """UPSCALE_MODEL: a spandrel ImageModelDescriptor and the file it came from."""

    descriptor: Any
    source: Path | None = None
    manager: Any = None

    @property
    def module(self) -> torch.nn.Module:
        return self.descriptor.model

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.name)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] in 0..1 on the model's device -> [B, C, h*scale, w*scale] (not clamped)."""
        return self.descriptor(image)

    def __sumie_size__(self) -> int:
        return 0


def load_upscale_model(path: str | Path, *, manager: Any = None) -> tuple[UpscaleModel, list[torch.nn.Module]]:
    """Read a .pth (weights only) or .safetensors upscale model; raises ModelLoadError naming the file."""
    path = Path(path)
    sd = read_state_dict(path)
    if _SWINIR_WRAPPED_KEY in sd:
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    spandrel = import_spandrel()
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(sd)
    except spandrel.UnsupportedModelError:
        raise ModelLoadError(path, "not a known upscale model architecture (the keys match none that spandrel "
                                   "supports: ESRGAN, Real-ESRGAN, SwinIR, SPAN, Compact, HAT, DAT, ...)") from None
    except (RuntimeError, KeyError, ValueError, IndexError, AssertionError, TypeError) as exc:
        raise ModelLoadError(path, f"the weights do not form a complete upscale model ({type(exc).__name__}: "
                                   f"{str(exc)[:300]})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelLoadError(path, f"is a {descriptor.architecture.name} model for masked images (inpainting); "
                                   "an upscale model must take a single image")
    descriptor.model.eval()
    for p in descriptor.model.parameters():
        p.requires_grad_(False)
    return UpscaleModel(descriptor=descriptor, source=path.resolve(), manager=manager), [descriptor.model]


__all__ = ["UpscaleModel", "import_spandrel", "load_upscale_model"]
