"""Sumie's composition root: settings, the node registry, plugins, services, the executor and the server,
wired together for the command the user asked for (the commands themselves live in cli/).

    python main.py                 start the server with the editor (same as `python main.py serve`)
    python main.py run FILE        run a saved workflow (JSON of either format, or a PNG) headlessly
    python main.py convert IN OUT  write the API-format prompt of an editor workflow or image
    python main.py inspect FILE    list missing node types and model files a workflow needs
    python main.py plugins check   what installing the plugins' requirements.txt would change
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.args import parse_args
from cli.common import EXIT_ERROR
from graph import Executor, Folders, NodeRegistry, make_cache
from graph.limits import Limits
from plugins.manager import PluginManager
from server import cli as server_cli
from server.cluster import cli as cluster_cli

ROOT = Path(__file__).resolve().parent
log = logging.getLogger("sumie")

# Built-in node modules, each exposing a NODES list. Modules that need torch are skipped (with the
# reason logged) when torch is not installed, so the engine still runs torch-free workflows.
BUILTIN_NODE_MODULES = (
    "nodes.primitives",
    "nodes.utility",
    "nodes.sd.loaders",
    "nodes.sd.lora_nodes",
    "nodes.sd.text_encode",
    "nodes.sd.conditioning",
    "nodes.sd.sampler_nodes",
    "nodes.sd.custom_sampling",
    "nodes.sd.latent",
    "nodes.sd.vae",
    "nodes.sd.image",
    "nodes.sd.image_ops",
    "nodes.sd.image_layout",
    "nodes.sd.mask_nodes",
    "nodes.sd.inpaint_nodes",
    "nodes.sd.upscale_nodes",
    "nodes.strings",
    "nodes.sd.latent_ops",
    "nodes.sd.latent_files",
    "nodes.sd.animated",
    "nodes.sd.image_transform",
    "nodes.sd.controlnet_nodes",
    "nodes.sd.unet_patch_nodes",
    "nodes.sd.guidance_patch_nodes",
    "nodes.sd.model_sampling_nodes",
    "nodes.sd.token_patch_nodes",
    "nodes.sd.model_extra_nodes",
    "nodes.sd.merge_nodes",
    "nodes.sd.model_save_nodes",
    "nodes.sd.clip_vision_nodes",
    "nodes.sd.ipadapter_nodes",
    "nodes.sd.ipadapter_image_nodes",
    "nodes.sd.ipadapter_style_nodes",
    "nodes.sd.unclip_nodes",
    "nodes.sd.gligen_nodes",
)

PLUGINS_DIR = ROOT / "custom_nodes"


@dataclass(frozen=True, kw_only=True)
class PluginSettings:
    """Which plugin packs to load (plugins/manager.py; docs/plugins.md)."""

    enabled: bool = True
    dirs: tuple[Path, ...] = (PLUGINS_DIR,)
    allow: tuple[str, ...] | None = None  # only these packs (None: all)
    reload: bool = False  # reload changed packs between prompts (development)


@dataclass(frozen=True, kw_only=True)
class Settings:
    folders: Folders
    force_cpu: bool = False
    cache: str = "recent:1"
    listen: str = "127.0.0.1"
    port: int = 8188
    limits: Limits = field(default_factory=Limits)
    speed: Any = None  # nodes.models.speed.SpeedSettings (torch-free here: built in speed_settings_from)


def build_registry(modules: Sequence[str] | None = None, *, folders: Folders | None = None) -> NodeRegistry:
    """The built-in nodes (registered first, so their names always win over plugins')."""
    registry = NodeRegistry(folders=folders)
    for name in BUILTIN_NODE_MODULES if modules is None else modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            log.warning("built-in nodes %s unavailable: %s", name, exc)
            registry.record_failed_pack(name, f"{type(exc).__name__}: {exc}")
            continue
        registry.register_module(module, source=name)
    return registry


def load_plugins(registry: NodeRegistry, plugins: PluginSettings, *, folders: Folders | None = None) -> PluginManager:
    """Load the plugin packs into `registry`; the manager is the report GET /plugins serves."""
    manager = PluginManager(registry, plugins.dirs, allow=plugins.allow, enabled=plugins.enabled, folders=folders,
                            auto_reload=plugins.reload)
    manager.load_all()
    return manager


def build_services(settings: Settings) -> dict[str, Any]:
    """The services nodes reach through their context: the model manager (when torch is installed)."""
    services: dict[str, Any] = {"force_cpu": settings.force_cpu}
    try:
        from nodes.models.manager import ModelManager
    except ImportError as exc:
        log.warning("model support unavailable (%s): only torch-free nodes will run", exc)
        return services
    manager = ModelManager(force_cpu=settings.force_cpu, speed=settings.speed)
    services["models"] = manager
    services["system"] = manager  # /system_stats and /free
    return services


def build_executor(settings: Settings, registry: NodeRegistry) -> Executor:
    return Executor(registry, cache=make_cache(settings.cache), folders=settings.folders,
                    services=build_services(settings), limits=settings.limits)


def build_worker_executor(settings: Settings, plugins: PluginSettings) -> Executor:
    """A cluster worker's executor, built in the worker's own process (server/cluster): the same nodes,
    plugins and services as the server's, with its own model manager and cache."""
    registry = build_registry(folders=settings.folders)
    load_plugins(registry, plugins, folders=settings.folders)
    return build_executor(settings, registry)


def settings_from(args: argparse.Namespace) -> Settings:
    def folder(name: str) -> Path:
        value = getattr(args, f"{name}_dir", None)
        return Path(value).expanduser().resolve() if value else ROOT / name

    folders = Folders(models=folder("models"), input=folder("input"), output=folder("output"),
                      temp=folder("temp"), user=folder("user"))
    return Settings(folders=folders, force_cpu=args.cpu, cache=args.cache, listen=getattr(args, "listen", "127.0.0.1"),
                    port=getattr(args, "port", 8188), speed=speed_settings_from(args, folders))


def speed_settings_from(args: argparse.Namespace, folders: Folders) -> Any:
    """The speed flags of `serve` and `run` (None without torch, or for commands that run no model)."""
    if not hasattr(args, "compile"):
        return None
    try:
        from nodes.models.speed import SpeedSettings
    except ImportError:
        return None
    return SpeedSettings(unet_dtype=args.unet_dtype, vae_dtype=args.vae_dtype, channels_last=args.channels_last,
                         compile=args.compile, compile_cache=folders.user / "compile_cache",
                         cuda_graphs=args.cuda_graphs,
                         vram_budget_gb=args.vram_budget, threads=args.threads, cpu_bf16=args.cpu_bf16)


def plugin_settings_from(args: argparse.Namespace) -> PluginSettings:
    dirs = tuple(Path(d).expanduser().resolve() for d in args.plugins_dir) if getattr(args, "plugins_dir", None) \
        else (PLUGINS_DIR,)
    return PluginSettings(enabled=not getattr(args, "disable_plugins", False), dirs=dirs,
                          allow=tuple(args.plugins_allow) if getattr(args, "plugins_allow", None) else None,
                          reload=bool(getattr(args, "reload_plugins", False)))


def ensure_demo_model(settings: Settings) -> None:
    """With no checkpoint installed, write the small random demo checkpoint so the editor works at once."""
    try:
        from nodes.models.demo import ensure_demo_checkpoint
    except ImportError as exc:
        log.warning("cannot create the demo checkpoint: %s", exc)
        return
    path = ensure_demo_checkpoint(settings.folders.models)
    if path is not None and "demo" in path.name:
        log.info("using the demo checkpoint %s (random weights: it makes noise, not art; put real checkpoints "
                 "in %s)", path.name, settings.folders.models / "checkpoints")


def command_serve(args: argparse.Namespace, settings: Settings) -> int:
    try:
        server_app = importlib.import_module("server.app")
    except ImportError as exc:
        print(f"error: the server is not available in this installation: {exc}", file=sys.stderr)
        return EXIT_ERROR
    ensure_demo_model(settings)
    registry = build_registry(folders=settings.folders)
    plugins = load_plugins(registry, plugin_settings_from(args), folders=settings.folders)
    workers = cluster_cli.plan_from(args)
    make_worker = None
    if workers is not None:
        from server.cluster import make_cluster_worker

        # Pickled by reference to the importable `main` module (not __main__), for the worker processes.
        factory = functools.partial(importlib.import_module("main").build_worker_executor, settings,
                                    plugin_settings_from(args))
        make_worker = functools.partial(make_cluster_worker, workers, factory)
    return server_app.serve(settings, registry, build_executor(settings, registry),
                            options=server_cli.options_from(args), plugins=plugins, make_worker=make_worker)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command == "plugins":
        from cli.plugins_check import command_plugins

        return command_plugins(args, default_dirs=[PLUGINS_DIR])
    settings = settings_from(args)
    if args.command == "serve":
        return command_serve(args, settings)
    if args.command == "run":
        ensure_demo_model(settings)
    registry = build_registry(folders=settings.folders)
    load_plugins(registry, plugin_settings_from(args), folders=settings.folders)
    if args.command == "run":
        from cli.run import command_run

        return command_run(args, registry=registry, executor=build_executor(settings, registry),
                           folders=settings.folders)
    from cli.documents import command_convert, command_inspect

    if args.command == "convert":
        return command_convert(args, registry=registry)
    return command_inspect(args, registry=registry)


if __name__ == "__main__":
    sys.exit(main())
