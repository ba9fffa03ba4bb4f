"""HypernetworkLoader and TorchCompileModel, with ComfyUI's names and inputs.

- HypernetworkLoader reads A1111 hypernetwork files (models/hypernetworks/*.pt, loaded with torch's
  weights-only unpickler: tensors, numbers, strings and containers only) and adds, as an attention
  patch, each layer width's two small MLPs to the key and value inputs of every attention layer.
- TorchCompileModel runs the U-Net through `torch.compile` (compiled lazily, on the first step, and
  kept per U-Net and backend so later runs reuse it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from graph import ComboInput, FloatInput, InputSpec, Node, NodeSchema, OutputSpec
from nodes.base.errors import ModelLoadError
from nodes.base.folders import files_of, resolve
from nodes.base.handles import ModelHandle
from nodes.models.model_patches import ActivePatches, ModelPatch
from nodes.models.speed import compiled as compile_once

from .loaders import file_fingerprint
from .unet_patch_nodes import check_model

_MODEL_OUT = [OutputSpec(type="MODEL", name="MODEL")]
ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "linear": torch.nn.Identity, "relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU, "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
    "softsign": torch.nn.Softsign, "mish": torch.nn.Mish,
}
_INDEX = re.compile(r"(\d+)\.weight$")


def _mlp(sd: dict[str, torch.Tensor], activation: str, layer_norm: bool, activate_output: bool,
         path: Path) -> torch.nn.Sequential:
    """One A1111 HypernetworkModule: Linear (+ activation) (+ LayerNorm) per layer, in index order."""
    names = sorted((k[:-len(".weight")] for k in sd if k.endswith(".weight")),
                   key=lambda k: int(m.group(1)) if (m := _INDEX.search(k + ".weight")) else 0)
    layers: list[torch.nn.Module] = []
    i = 0
    while i < len(names):
        weight, bias = sd[f"{names[i]}.weight"], sd.get(f"{names[i]}.bias")
        if weight.ndim != 2:
            raise ModelLoadError(path, f"hypernetwork layer {names[i]!r} is not a linear layer")
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        linear.load_state_dict({"weight": weight, **({"bias": bias} if bias is not None else {})})
        layers.append(linear)
        last = i == len(names) - (2 if layer_norm else 1)
        if activation != "linear" and (not last or activate_output):
            layers.append(ACTIVATIONS[activation]())
        if layer_norm:
            i += 1
            norm = torch.nn.LayerNorm(sd[f"{names[i]}.weight"].shape[0])
            norm.load_state_dict({"weight": sd[f"{names[i]}.weight"], "bias": sd[f"{names[i]}.bias"]})
            layers.append(norm)
        i += 1
    return torch.nn.Sequential(*layers).eval()  # dropout layers of training are not part of inference


def load_hypernetwork(path: str | Path) -> dict[int, tuple[torch.nn.Module, torch.nn.Module]]:
    """{layer width: (key MLP, value MLP)} from an A1111 hypernetwork .pt file."""
    path = Path(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle that is not plain data, or not a torch file at all
        raise ModelLoadError(path, f"not a readable hypernetwork file ({type(exc).__name__}: {exc})") from None
    if not isinstance(sd, dict):
        raise ModelLoadError(path, "not a hypernetwork file: expected a dict of layer widths")
    activation = str(sd.get("activation_func", "linear"))
    if activation not in ACTIVATIONS:
        raise ModelLoadError(path, f"unsupported hypernetwork activation {activation!r}; supported: "
                                   f"{', '.join(ACTIVATIONS)}")
    out = {}
    for key, pair in sd.items():
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise ModelLoadError(path, f"hypernetwork entry {key}: expected a pair of state dicts")
            out[int(key)] = tuple(_mlp(dict(p), activation, bool(sd.get("is_layer_norm", False)),
                                       bool(sd.get("activate_output", False)), path) for p in pair)
    if not out:
        raise ModelLoadError(path, "not a hypernetwork file: no layer widths found")
    return out  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class HypernetworkPatch(ModelPatch):
    name: str
    strength: float
    networks: dict[int, tuple[torch.nn.Module, torch.nn.Module]] = field(repr=False)

    @property
    def key(self) -> tuple[Any, ...]:
        return ("HypernetworkPatch", self.name, self.strength)

    def install(self, active: ActivePatches) -> None:
        placed: dict[tuple[int, torch.device, torch.dtype], tuple[torch.nn.Module, torch.nn.Module]] = {}

        def networks(width: int, like: torch.Tensor) -> tuple[torch.nn.Module, torch.nn.Module]:
            slot = (width, like.device, like.dtype)
            if slot not in placed:
                placed[slot] = tuple(n.to(like.device, like.dtype) for n in self.networks[width])  # type: ignore
            return placed[slot]

        def add(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, info: dict[str, Any]) -> tuple:
            for_k, for_v = networks(k.shape[-1], k)
            with torch.no_grad():
                return q, k + for_k(k) * self.strength, v + for_v(v) * self.strength

        def fits(info: dict[str, Any]) -> bool:
            return info["context_width"] in self.networks

        for kind in ("attn1", "attn2"):
            active.attention(kind, input=add, when=fits)


class HypernetworkLoader(Node):
    SCHEMA = NodeSchema(node_type="HypernetworkLoader", display_name="HypernetworkLoader", category="loaders",
                        description="Applies an A1111 hypernetwork to the attention layers' keys and values.",
                        inputs=[InputSpec(name="model", type="MODEL"),
                                ComboInput(name="hypernetwork_name", choices=files_of("hypernetworks")),
                                FloatInput(name="strength", default=1.0, min=-10.0, max=10.0, step=0.01)],
                        outputs=_MODEL_OUT)

    def fingerprint(self, *, hypernetwork_name: str, folders: Any = None, **_: Any) -> Any:
        return file_fingerprint(folders, "hypernetworks", hypernetwork_name)

    def execute(self, ctx, *, model: ModelHandle, hypernetwork_name: str, strength: float) -> tuple[ModelHandle]:
        model = check_model("HypernetworkLoader", model)
        try:
            networks = load_hypernetwork(resolve(ctx.folders, "hypernetworks", hypernetwork_name))
        except ModelLoadError as exc:
            raise ModelLoadError(exc.path, f"{exc.reason} (input 'hypernetwork_name' = {hypernetwork_name!r})"
                                 ) from None
        if strength == 0:
            return (model,)
        return (model.with_patches(HypernetworkPatch(hypernetwork_name, float(strength), networks)),)


# ------------------------------------------------------------------------------- torch.compile


def compiled_unet(unet: torch.nn.Module, backend: str) -> Any:
    """`torch.compile(unet)` for this backend, made once per U-Net and shared with `--compile`."""
    return compile_once(unet, backend)


@dataclass(frozen=True)
class TorchCompilePatch(ModelPatch):
    backend: str

    def install(self, active: ActivePatches) -> None:
        unet = active.unet
        compiled = compiled_unet(unet, self.backend)

        def call(forward: Any, args: tuple, kwargs: dict, info: dict[str, Any]) -> Any:
            # the compiled U-Net replaces the plain one; wrappers added before this one stay outside it
            return compiled(*args, **kwargs) if forward is unet else forward(*args, **kwargs)

        active.unet_wrapper(call)


class TorchCompileModel(Node):
    SCHEMA = NodeSchema(node_type="TorchCompileModel", display_name="TorchCompileModel", category="_for_testing",
                        experimental=True,
                        description="Compiles the U-Net with torch.compile on its first use (slow first step, "
                                    "faster after).",
                        inputs=[InputSpec(name="model", type="MODEL"),
                                ComboInput(name="backend", choices=["inductor", "cudagraphs"])],
                        outputs=_MODEL_OUT)

    def execute(self, ctx, *, model: ModelHandle, backend: str) -> tuple[ModelHandle]:
        model = check_model("TorchCompileModel", model)
        if backend not in ("inductor", "cudagraphs"):
            raise ValueError(f"TorchCompileModel: input 'backend' must be inductor or cudagraphs, got {backend!r}")
        return (model.with_patches(TorchCompilePatch(backend)),)


NODES = [HypernetworkLoader, TorchCompileModel]
