"""System routes: node schemas, system stats, model folders, /free, and the API's own descriptions."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from graph.formats import SCHEMA_NAMES, load_schema
from graph.node import MODEL_KINDS
from graph.sizing import system_memory

from .files import PathError, list_files
from .frontends import Versions
from .security import read_json, require_object
from .state import ServerState, state_of

VERSION = "0.1.0"
# The model folder kinds clients expect (graph.node.MODEL_KINDS), plus any other folder found under models/.
MODEL_EXTENSIONS = frozenset({".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx", ".yaml"})


async def get_object_info(request: web.Request) -> web.Response:
    registry = state_of(request).registry
    node_class = request.match_info.get("node_class")
    return web.json_response(registry.object_info(node_class) if node_class else registry.object_info())


async def get_system_stats(request: web.Request) -> web.Response:
    state = state_of(request)
    total, free = system_memory()
    system: dict[str, Any] = {
        "os": sys.platform if os.name != "nt" else "nt", "ram_total": total, "ram_free": free,
        "comfyui_version": VERSION, "sumie_version": VERSION, "python_version": sys.version,
        "pytorch_version": None, "embedded_python": False, "argv": sys.argv, "machine": platform.machine(),
    }
    system.update(Versions.installed().system_fields())
    devices: list[dict[str, Any]] = []
    service = state.executor.services.get("system")
    if service is not None and hasattr(service, "stats"):
        stats = dict(service.stats())
        devices = list(stats.pop("devices", []))
        system.update(stats)
    if state.system_info is not None:
        system.update(state.system_info())
    workers = state.worker.describe()
    if workers is not None:  # several workers: their devices are the devices, each named by its worker
        devices = [{**d, "name": f"{w['id']}: {d.get('name')}", "worker": w["id"]}
                   for w in workers for d in w.get("devices", ())]
        system["workers"] = workers
    return web.json_response({"system": system, "devices": devices})


def _models_root(state: ServerState) -> Path:
    return Path(state.folders.models)


def model_kinds(state: ServerState) -> list[str]:
    root = _models_root(state)
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if root.is_dir() else []
    return list(dict.fromkeys([*MODEL_KINDS, *found]))


def model_files(state: ServerState, kind: str) -> list[str]:
    directory = _models_root(state) / kind
    return [p.as_posix() for p in list_files(directory, recurse=True) if p.suffix.lower() in MODEL_EXTENSIONS]


async def get_models(request: web.Request) -> web.Response:
    return web.json_response(model_kinds(state_of(request)))


async def get_model_folder(request: web.Request) -> web.Response:
    state = state_of(request)
    kind = request.match_info["folder"]
    if kind not in model_kinds(state):
        raise PathError(f"no model folder named {kind[:60]!r}", status=404)
    return web.json_response(model_files(state, kind))


async def get_embeddings(request: web.Request) -> web.Response:
    names = [name.rsplit(".", 1)[0] for name in model_files(state_of(request), "embeddings")]
    return web.json_response(names)


async def post_free(request: web.Request) -> web.Response:
    state = state_of(request)
    data = require_object(await read_json(request, state.options.max_json_bytes, allow_empty=True))
    await state.worker.free(unload_models=data.get("unload_models") is True,
                            free_memory=data.get("free_memory") is True)
    return web.Response(status=200)


def features(options: Any) -> dict[str, Any]:
    """What this server supports: GET /features, and the answer to a websocket client's feature_flags."""
    return {"supports_preview_metadata": False, "max_upload_size": options.max_upload_bytes}


async def get_features(request: web.Request) -> web.Response:
    return web.json_response(features(state_of(request).options))


async def get_schema(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in SCHEMA_NAMES:
        raise PathError(f"no schema named {name[:60]!r}; known: {', '.join(SCHEMA_NAMES)}", status=404)
    return web.json_response(load_schema(name), content_type="application/schema+json")
