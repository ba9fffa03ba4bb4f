"""Routes ComfyUI's editor reads at start and on demand, beyond the core API.

Translations, global subgraphs and example workflows come from the plugin packs' folders, in the
layout ComfyUI's packs use (`locales/<lang>/*.json`, `subgraphs/*.json`, `example_workflows/*.json`);
the template gallery comes from the optional `comfyui-workflow-templates` package. Every route answers
with the empty value of its shape when there is nothing to show, so the editor never logs an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiohttp import web

from .api_files import static_response
from .api_settings import user_folder
from .api_system import model_files, model_kinds
from .files import PathError, list_files, resolve_file, split_relative
from .state import ServerState, state_of

log = logging.getLogger("sumie.frontend")

LOCALE_FILES = {"main": "main.json", "nodeDefs": "nodeDefs.json", "commands": "commands.json",
                "settings": "settings.json"}
EXAMPLE_FOLDERS = ("example_workflows", "example", "examples", "workflow", "workflows")
TEMPLATES_JSON_MODULE = "comfyui_workflow_templates_json"
TEMPLATES_MODULE = "comfyui_workflow_templates"


# -- plugin pack folders -------------------------------------------------------------------------
def pack_dirs(state: ServerState) -> dict[str, Path]:
    """Pack name -> folder, for the packs that loaded (a single-file pack has no folder)."""
    manager = getattr(state.registry, "plugins", None)
    if manager is None:
        return {}
    found: dict[str, Path] = {}
    for pack in manager.to_json().get("packs", []):
        path = Path(str(pack.get("path") or ""))
        if pack.get("status") == "loaded" and path.is_dir():
            found[str(pack["name"])] = path
    return found


def _read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("skipping %s: %s", path, exc)
        return None


def _merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


async def get_i18n(request: web.Request) -> web.Response:
    """{lang: {main, nodeDefs, commands, settings}} merged over every pack's `locales/` folder."""
    result: dict[str, dict[str, Any]] = {}
    for _name, folder in sorted(pack_dirs(state_of(request)).items()):
        locales = folder / "locales"
        if not locales.is_dir():
            continue
        for lang_dir in sorted(p for p in locales.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for key, file_name in LOCALE_FILES.items():
                data = _read_json_file(lang_dir / file_name) if (lang_dir / file_name).is_file() else None
                if isinstance(data, dict):
                    _merge(result.setdefault(lang_dir.name, {}).setdefault(key, {}), data)
    return web.json_response(result)


# -- global subgraphs (blueprints a pack ships) ----------------------------------------------------
def _subgraph_files(state: ServerState) -> dict[str, tuple[str, Path]]:
    """Subgraph id -> (pack, file). The id is a digest of pack and file name: stable across restarts."""
    found: dict[str, tuple[str, Path]] = {}
    for pack, folder in sorted(pack_dirs(state).items()):
        for rel in list_files(folder / "subgraphs", recurse=False):
            if rel.suffix == ".json":
                digest = hashlib.sha256(f"custom_node/{pack}/{rel.as_posix()}".encode()).hexdigest()
                found[digest] = (pack, folder / "subgraphs" / rel)
    return found


def _subgraph_entry(pack: str, path: Path, *, with_data: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"source": "custom_node", "name": path.stem, "info": {"node_pack": pack}}
    if with_data:
        entry["data"] = path.read_text(encoding="utf-8")
    return entry


async def get_global_subgraphs(request: web.Request) -> web.Response:
    """Every pack's subgraph blueprints, without their (possibly large) data: the editor asks per id."""
    files = _subgraph_files(state_of(request))
    return web.json_response({sid: _subgraph_entry(pack, path, with_data=False) for sid, (pack, path) in files.items()})


async def get_global_subgraph(request: web.Request) -> web.Response:
    found = _subgraph_files(state_of(request)).get(request.match_info["id"])
    if found is None:
        raise PathError(f"no global subgraph {request.match_info['id'][:80]!r}", status=404)
    return web.json_response(_subgraph_entry(*found, with_data=True))


# -- example workflows of packs (the editor's "custom nodes" template tab) -------------------------
def _example_folder(folder: Path) -> Path | None:
    for child in sorted(folder.iterdir()) if folder.is_dir() else ():
        if child.is_dir() and child.name.lower() in EXAMPLE_FOLDERS:
            return child
    return None


async def get_workflow_templates(request: web.Request) -> web.Response:
    """{pack: [template names]}: the `.json` workflows in each pack's example_workflows folder."""
    result: dict[str, list[str]] = {}
    for pack, folder in sorted(pack_dirs(state_of(request)).items()):
        examples = _example_folder(folder)
        if examples is not None:
            names = [rel.stem for rel in list_files(examples, recurse=False) if rel.suffix == ".json"]
            if names:
                result[pack] = names
    return web.json_response(result)


async def get_workflow_template_file(request: web.Request) -> web.StreamResponse:
    folder = pack_dirs(state_of(request)).get(request.match_info["pack"])
    examples = _example_folder(folder) if folder is not None else None
    if examples is None:
        raise PathError(f"no example workflows in a pack named {request.match_info['pack'][:60]!r}", status=404)
    return static_response(resolve_file(examples, "", request.match_info["path"]))


# -- the template gallery of comfyui-workflow-templates ---------------------------------------------
def _module_folder(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def _asset_templates() -> dict[str, str]:
    """Asset file name -> template id, from the installed templates package's manifest."""
    try:
        import comfyui_workflow_templates as templates  # optional: pip install comfyui-workflow-templates
    except ImportError:
        return {}
    names: dict[str, str] = {}
    for entry in templates.iter_templates():
        for asset in entry.assets:
            names.setdefault(asset.filename, entry.template_id)
    return names


def template_file(path: str) -> Path | None:
    """A file of the template gallery (index, workflow, thumbnail, logo), or None when absent."""
    parts = split_relative(path, "template file")
    folder = _module_folder(TEMPLATES_JSON_MODULE)
    if folder is not None:
        candidate = folder / "templates" / Path(*parts)
        if candidate.is_file():
            return candidate
    template_id = _asset_templates().get("/".join(parts))
    if template_id is None:
        return None
    import comfyui_workflow_templates as templates

    try:
        return Path(templates.get_asset_path(template_id, "/".join(parts)))
    except (FileNotFoundError, KeyError):
        return None


async def get_template(request: web.Request) -> web.StreamResponse:
    path = request.match_info["path"]
    found = template_file(path)
    if found is None:
        if path.startswith("index") and path.endswith(".json"):  # no gallery installed: an empty one
            return web.json_response([])
        raise PathError(f"no template file {path[:100]!r} (pip install comfyui-workflow-templates for the "
                        "template gallery)", status=404)
    return static_response(found)


# -- model folders, the way the editor's model library lists them ---------------------------------
async def get_experiment_models(request: web.Request) -> web.Response:

    state = state_of(request)
    root = Path(state.folders.models)
    return web.json_response([{"name": kind, "folders": [str(root / kind)]} for kind in model_kinds(state)])


async def get_experiment_model_folder(request: web.Request) -> web.Response:

    state = state_of(request)
    kind = request.match_info["folder"]
    if kind not in model_kinds(state):
        raise PathError(f"no model folder named {kind[:60]!r}", status=404)
    directory = Path(state.folders.models) / kind
    result = []
    for name in model_files(state, kind):
        try:
            modified = (directory / name).stat().st_mtime
        except OSError:
            continue
        result.append({"name": name, "pathIndex": 0, "modified": modified})
    return web.json_response(result)


MAX_HEADER = 64 * 1024 * 1024  # a safetensors header larger than this is not read


def safetensors_metadata(path: Path) -> dict[str, Any]:
    """The `__metadata__` of a .safetensors file's header ({} when it has none), without reading tensors."""
    with open(path, "rb") as fh:
        size_bytes = fh.read(8)
        size = int.from_bytes(size_bytes, "little") if len(size_bytes) == 8 else -1
        if not 0 < size <= MAX_HEADER:
            raise PathError(f"{path.name} is not a safetensors file (bad header size)")
        try:
            header = json.loads(fh.read(size))
        except ValueError:
            raise PathError(f"{path.name} is not a safetensors file (its header is not JSON)") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


async def get_view_metadata(request: web.Request) -> web.Response:
    """The metadata a model file carries (training details, trigger words): the model library shows it."""
    state = state_of(request)
    kind = request.match_info["folder"]
    if kind not in model_kinds(state):
        raise PathError(f"no model folder named {kind[:60]!r}", status=404)
    name = request.query.get("filename", "")
    path = resolve_file(Path(state.folders.models) / kind, "", name)
    if path.suffix.lower() not in (".safetensors", ".sft"):
        raise PathError("only .safetensors files carry metadata", status=404)
    return web.json_response(await asyncio.to_thread(safetensors_metadata, path))


# -- user.css ----------------------------------------------------------------------------------------
async def get_user_css(request: web.Request) -> web.StreamResponse:
    """The user's own stylesheet (user/<user>/user.css), or an empty one: the editor links it on
    every load, and a browser refuses a JSON 404 for a stylesheet with a console error."""
    path = user_folder(request) / "user.css"
    if path.is_file():
        return web.FileResponse(path, headers={"Content-Type": "text/css; charset=utf-8"})
    return web.Response(text="", content_type="text/css")


async def get_node_templates(request: web.Request) -> web.StreamResponse:
    """The user's saved node templates (a JSON list the editor reads at start), or [] when none."""
    path = user_folder(request) / "comfy.templates.json"
    if path.is_file():
        return web.FileResponse(path, headers={"Content-Type": "application/json"})
    return web.json_response([])
