"""SaveLatent and LoadLatent: ComfyUI's `.latent` files, both ways.

A `.latent` file is a safetensors file holding `latent_tensor` (the raw, unscaled latent) and an
empty marker tensor `latent_format_version_0`. Files without the marker come from ComfyUI's
earliest versions, which stored latents multiplied by the SD VAE scale (0.18215), so they are
divided by it when loaded. The safetensors header metadata carries the workflow that made the
latent: `prompt` (the API JSON, "" when there was none) and one JSON string per key of
`extra_pnginfo` (usually `workflow`), as ComfyUI writes it.

Saving goes through the shared numbered, atomic output files; loading reads only the input folder
(annotated names may point at the output or temp folder) and checks the declared size first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open

from graph import HiddenInput, InputSpec, Node, NodeResult, NodeSchema, OutputSpec
from graph.limits import Limits
from graph.node import Folders
from graph.paths import UnsafePathError
from nodes.sd.image import FilenamePrefixInput, ImageFileInput, input_file_fingerprint, resolve_image
from nodes.sd.latent import Latent
from nodes.sd.output_files import checked_prefix, write_numbered

LATENT_EXTENSION = ".latent"
TENSOR_KEY = "latent_tensor"
VERSION_0_KEY = "latent_format_version_0"
# Files without the version marker hold latents scaled by the SD 1.x VAE factor.
LEGACY_SCALE = 0.18215


def latent_file_bytes(samples: torch.Tensor, metadata: dict[str, str] | None = None) -> bytes:
    """A `.latent` file (version 0: unscaled) as bytes."""
    tensors = {TENSOR_KEY: samples.detach().to("cpu").contiguous(), VERSION_0_KEY: torch.tensor([])}
    return safetensors.torch.save(tensors, metadata=metadata)


def latent_metadata(prompt: Any = None, extra_pnginfo: Any = None) -> dict[str, str]:
    """The header metadata SaveLatent writes: `prompt` ("" when none) and one JSON string per extra key."""
    meta = {"prompt": json.dumps(prompt) if prompt is not None else ""}
    if isinstance(extra_pnginfo, dict):
        meta.update({str(k): json.dumps(v) for k, v in extra_pnginfo.items()})
    return meta


def read_latent_file(path: Path, *, max_elements: int) -> torch.Tensor:
    """The latent of a `.latent` file as float32, in the raw (version 0) convention whatever its version."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = set(f.keys())
            if TENSOR_KEY not in keys:
                raise ValueError(f"{path.name} holds no {TENSOR_KEY!r} tensor (keys: {sorted(keys)[:8]}); it is not "
                                 "a .latent file written by SaveLatent")
            shape = f.get_slice(TENSOR_KEY).get_shape()
            elements = 1
            for side in shape:
                elements *= side
            if elements > max_elements:
                raise ValueError(f"{path.name} declares a latent of shape {shape} ({elements:,} values), more than the "
                                 f"limit of {max_elements:,}")
            tensor = f.get_tensor(TENSOR_KEY)
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path.name} is not a readable .latent (safetensors) file: {exc}") from None
    multiplier = 1.0 if VERSION_0_KEY in keys else 1.0 / LEGACY_SCALE
    return tensor.float() * multiplier


def list_input_latents(folders: Folders | None) -> list[str]:
    """`.latent` files directly in the input folder, sorted: the LoadLatent combo."""
    if folders is None or not Path(folders.input).is_dir():
        return []
    return sorted(p.name for p in Path(folders.input).iterdir()
                  if p.name.endswith(LATENT_EXTENSION) and not p.name.startswith(".") and p.is_file())


class LatentFileInput(ImageFileInput):
    """LoadLatent's `latent`: lists the input folder, and also takes subfolder and annotated names.

    ComfyUI checks this input with the node's own validation (the file must exist), not against
    the list, so names such as "x.latent [output]" work; they are checked for safety as LoadImage's are.
    """

    WHAT = "latent"


def _missing_latent(name: str, folders: Folders | None) -> str | None:
    try:
        path = resolve_image(folders, name)
    except (UnsafePathError, ValueError) as exc:
        return f"Invalid latent file: {name} ({exc})"
    return None if path.is_file() else f"Invalid latent file: {name}"


_HIDDEN = [HiddenInput(name="prompt", kind="PROMPT"), HiddenInput(name="extra_pnginfo", kind="EXTRA_PNGINFO")]


class SaveLatent(Node):
    SCHEMA = NodeSchema(
        node_type="SaveLatent", display_name="Save Latent", category="_for_testing",
        description="Save latents as a .latent file in the output folder (with the workflow that made them); "
                    "copy it to the input folder to load it with Load Latent.",
        inputs=[InputSpec(name="samples", type="LATENT"),
                FilenamePrefixInput(name="filename_prefix", default="latents/ComfyUI")],
        hidden=_HIDDEN, outputs=[OutputSpec(type="LATENT", name="samples")], output_node=True,
    )

    def execute(self, ctx, *, samples: Latent, filename_prefix: str, prompt: Any = None,
                extra_pnginfo: Any = None) -> NodeResult:
        if ctx.folders is None:
            raise ValueError("SaveLatent: this engine was started without an output folder")
        prefix = checked_prefix(filename_prefix, 0, 0, node="SaveLatent")
        data = latent_file_bytes(samples["samples"], latent_metadata(prompt, extra_pnginfo))
        ref, _ = write_numbered(ctx.folders.output, prefix, LATENT_EXTENSION[1:], lambda f: f.write(data),
                                kind="output", node="SaveLatent")
        return NodeResult(result=(samples,), ui={"latents": [ref]})


class LoadLatent(Node):
    SCHEMA = NodeSchema(
        node_type="LoadLatent", display_name="Load Latent", category="_for_testing",
        description="Load a .latent file (written by Save Latent) from the input folder.",
        inputs=[LatentFileInput(name="latent", choices=list_input_latents)],
        outputs=[OutputSpec(type="LATENT")],
    )

    def fingerprint(self, *, latent: str, folders: Folders | None = None, **_: Any) -> Any:
        return input_file_fingerprint(folders, latent)

    def validate_inputs(self, *, limits: Limits, latent: Any = None, folders: Folders | None = None,
                        **_: Any) -> str | bool:
        if not isinstance(latent, str) or folders is None:
            return True
        return _missing_latent(latent, folders) or True

    def execute(self, ctx, *, latent: str) -> tuple[Latent]:
        problem = _missing_latent(latent, ctx.folders)
        if problem:
            raise FileNotFoundError(f"LoadLatent: {problem}")
        try:
            tensor = read_latent_file(resolve_image(ctx.folders, latent), max_elements=ctx.limits.max_pixels)
        except ValueError as exc:
            raise ValueError(f"LoadLatent, input 'latent': {exc}") from None
        return ({"samples": tensor},)


NODES = [SaveLatent, LoadLatent]
