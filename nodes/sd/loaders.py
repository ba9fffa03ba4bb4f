"""Loader nodes: checkpoints, VAEs, text encoders and UNets from the model folders.

The weights are owned by the model manager (`ctx.service("models")`), which caches them by file
identity; a node's fingerprint holds the file's size and mtime so a file replaced under the same name
is loaded again instead of being served from the result cache. Each loader's `prefetch` makes the
very manager call its `execute` makes, so a load done ahead of the job is the one the job gets.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from graph import ComboInput, Node, NodeSchema, OutputSpec
from nodes.base.errors import ModelLoadError
from nodes.base.folders import files_of, resolve
from nodes.models.manager import CLIP_TYPES, DUAL_CLIP_TYPES, ModelManager, file_stamp

log = logging.getLogger("sumie.loaders")

UNET_WEIGHT_DTYPES = ("default",)  # fp8 storage is not supported yet, so it is not offered
CLIP_DEVICES = ("default", "cpu")


def _schema(node_id: str, display: str, inputs: list[Any], outputs: list[OutputSpec]) -> NodeSchema:
    return NodeSchema(node_type=node_id, display_name=display, category="loaders", inputs=inputs, outputs=outputs,
                      python_module="nodes.sd.loaders")


def _manager(ctx: Any) -> ModelManager:
    return ctx.service("models")


def _path(ctx: Any, kind: str, name: str, input_name: str) -> Path:
    ctx.check_interrupt()  # a stop asked for while earlier nodes ran must not start a long load
    try:
        return resolve(ctx.folders, kind, name)
    except ModelLoadError as exc:
        raise ModelLoadError(exc.path, f"input '{input_name}': {exc.reason}") from None


def _failed(exc: ModelLoadError, input_name: str, name: str) -> ModelLoadError:
    """The loader's error with the node input and the chosen name added (the file is already named)."""
    return ModelLoadError(exc.path, f"{exc.reason} (input '{input_name}' = {name!r})")


def file_fingerprint(folders: Any, kind: str, name: Any) -> Any:
    """Fingerprint part for one file: its size and mtime when the folders are known, else its name."""
    if folders is None or not isinstance(name, str):
        return name
    try:
        return [name, *map(str, file_stamp(resolve(folders, kind, name)))]
    except ModelLoadError:
        return [name, "missing"]  # execution reports the problem with the input named


class CheckpointLoaderSimple(Node):
    SCHEMA = _schema("CheckpointLoaderSimple", "Load Checkpoint",
                     [ComboInput(name="ckpt_name", choices=files_of("checkpoints"),
                                 tooltip="The checkpoint (model) to load.")],
                     [OutputSpec(type="MODEL", name="MODEL"), OutputSpec(type="CLIP", name="CLIP"),
                      OutputSpec(type="VAE", name="VAE")])

    def fingerprint(self, *, ckpt_name: str, folders: Any = None, **_: Any) -> Any:
        return file_fingerprint(folders, "checkpoints", ckpt_name)

    def execute(self, ctx, *, ckpt_name: str) -> tuple[Any, Any, Any]:
        path = _path(ctx, "checkpoints", ckpt_name, "ckpt_name")
        try:
            return _manager(ctx).load_checkpoint(path)
        except ModelLoadError as exc:
            raise _failed(exc, "ckpt_name", ckpt_name) from None

    def prefetch(self, ctx, *, ckpt_name: str) -> str:
        path = _path(ctx, "checkpoints", ckpt_name, "ckpt_name")
        return _manager(ctx).prefetch([path], lambda: _manager(ctx).load_checkpoint(path))


class VAELoader(Node):
    SCHEMA = _schema("VAELoader", "Load VAE", [ComboInput(name="vae_name", choices=files_of("vae"))],
                     [OutputSpec(type="VAE", name="VAE")])

    def fingerprint(self, *, vae_name: str, folders: Any = None, **_: Any) -> Any:
        return file_fingerprint(folders, "vae", vae_name)

    def execute(self, ctx, *, vae_name: str) -> tuple[Any]:
        path = _path(ctx, "vae", vae_name, "vae_name")
        try:
            return (_manager(ctx).load_vae(path),)
        except ModelLoadError as exc:
            raise _failed(exc, "vae_name", vae_name) from None

    def prefetch(self, ctx, *, vae_name: str) -> str:
        path = _path(ctx, "vae", vae_name, "vae_name")
        return _manager(ctx).prefetch([path], lambda: _manager(ctx).load_vae(path))


def _clip_with_device(manager: ModelManager, handle: Any, device: str) -> Any:
    if device == "cpu":
        for encoder in handle.encoders:
            manager.keep_on_cpu(encoder)
    return handle


class CLIPLoader(Node):
    SCHEMA = _schema("CLIPLoader", "Load CLIP",
                     [ComboInput(name="clip_name", choices=files_of("text_encoders")),
                      ComboInput(name="type", choices=CLIP_TYPES, default="stable_diffusion",
                                 tooltip="stable_diffusion: SD1 CLIP-L, SD2 OpenCLIP-H or the SDXL refiner's "
                                         "OpenCLIP-G, read from the file"),
                      ComboInput(name="device", choices=CLIP_DEVICES, default="default", optional=True)],
                     [OutputSpec(type="CLIP", name="CLIP")])

    def fingerprint(self, *, clip_name: str, folders: Any = None, **constants: Any) -> Any:
        return [file_fingerprint(folders, "text_encoders", clip_name), constants.get("type"), constants.get("device")]

    def execute(self, ctx, *, clip_name: str, type: str, device: str = "default") -> tuple[Any]:
        path = _path(ctx, "text_encoders", clip_name, "clip_name")
        manager = _manager(ctx)
        try:
            handle = manager.load_clip([path], type)
        except ModelLoadError as exc:
            raise _failed(exc, "clip_name", clip_name) from None
        return (_clip_with_device(manager, handle, device),)

    def prefetch(self, ctx, *, clip_name: str, type: str, device: str = "default") -> str:
        path = _path(ctx, "text_encoders", clip_name, "clip_name")
        return _manager(ctx).prefetch([path], lambda: _manager(ctx).load_clip([path], type))


class DualCLIPLoader(Node):
    SCHEMA = _schema("DualCLIPLoader", "DualCLIPLoader",
                     [ComboInput(name="clip_name1", choices=files_of("text_encoders")),
                      ComboInput(name="clip_name2", choices=files_of("text_encoders")),
                      ComboInput(name="type", choices=DUAL_CLIP_TYPES, default="sdxl",
                                 tooltip="sdxl: CLIP-L + OpenCLIP-G, in either order"),
                      ComboInput(name="device", choices=CLIP_DEVICES, default="default", optional=True)],
                     [OutputSpec(type="CLIP", name="CLIP")])

    def fingerprint(self, *, clip_name1: str, clip_name2: str, folders: Any = None, **constants: Any) -> Any:
        return [file_fingerprint(folders, "text_encoders", clip_name1),
                file_fingerprint(folders, "text_encoders", clip_name2), constants.get("type"), constants.get("device")]

    def execute(self, ctx, *, clip_name1: str, clip_name2: str, type: str, device: str = "default") -> tuple[Any]:
        path1 = _path(ctx, "text_encoders", clip_name1, "clip_name1")
        path2 = _path(ctx, "text_encoders", clip_name2, "clip_name2")
        manager = _manager(ctx)
        try:
            handle = manager.load_clip([path1, path2], type)
        except ModelLoadError as exc:
            which = "clip_name2" if exc.path == path2 else "clip_name1"
            raise _failed(exc, which, clip_name2 if which == "clip_name2" else clip_name1) from None
        return (_clip_with_device(manager, handle, device),)

    def prefetch(self, ctx, *, clip_name1: str, clip_name2: str, type: str, device: str = "default") -> str:
        paths = [_path(ctx, "text_encoders", clip_name1, "clip_name1"),
                 _path(ctx, "text_encoders", clip_name2, "clip_name2")]
        return _manager(ctx).prefetch(paths, lambda: _manager(ctx).load_clip(paths, type))


class UNETLoader(Node):
    SCHEMA = _schema("UNETLoader", "Load Diffusion Model",
                     [ComboInput(name="unet_name", choices=files_of("diffusion_models")),
                      ComboInput(name="weight_dtype", choices=UNET_WEIGHT_DTYPES, default="default")],
                     [OutputSpec(type="MODEL", name="MODEL")])

    def fingerprint(self, *, unet_name: str, folders: Any = None, **constants: Any) -> Any:
        return [file_fingerprint(folders, "diffusion_models", unet_name), constants.get("weight_dtype")]

    def execute(self, ctx, *, unet_name: str, weight_dtype: str) -> tuple[Any]:
        path = _path(ctx, "diffusion_models", unet_name, "unet_name")
        try:
            return (_manager(ctx).load_unet(path),)
        except ModelLoadError as exc:
            raise _failed(exc, "unet_name", unet_name) from None

    def prefetch(self, ctx, *, unet_name: str, weight_dtype: str) -> str:
        path = _path(ctx, "diffusion_models", unet_name, "unet_name")
        return _manager(ctx).prefetch([path], lambda: _manager(ctx).load_unet(path))


NODES = [CheckpointLoaderSimple, VAELoader, CLIPLoader, DualCLIPLoader, UNETLoader]
