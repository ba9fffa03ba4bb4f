"""Sumie's composition root: the command line (serve | run), settings, registry and wiring.

    python main.py                 start the server with the editor (same as `python main.py serve`)
    python main.py run FILE        run a saved workflow (JSON of either format, or a PNG) headlessly
    python main.py convert IN OUT  write the API-format prompt of an editor workflow or image
    python main.py inspect FILE    list missing node types and model files a workflow needs
    python main.py plugins check   what installing the plugins' requirements.txt would change
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import threading
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from graph import Executor, Folders, InterruptToken, NodeRegistry, RunRequest, make_cache
from graph.errors import RequestError
from graph.events import Event, NodeFailed, NodeFinished, NodeStarted, Progress, RunFinished, RunInterrupted
from graph.formats import detect_format, parse_prompt_request
from graph.jsonio import loads_strict
from graph.limits import Limits
from graph.ui_workflow import convert_ui_workflow, is_ui_workflow
from graph.workflow import PromptRequest, parse_api_workflow
from server import cli as server_cli

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
    "nodes.sd.unet_patch_nodes",
    "nodes.sd.guidance_patch_nodes",
    "nodes.sd.model_sampling_nodes",
    "nodes.sd.token_patch_nodes",
    "nodes.sd.model_extra_nodes",
)

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 130
PLUGINS_DIR = ROOT / "custom_nodes"


@dataclass(frozen=True, kw_only=True)
class PluginSettings:
    """Which plugin packs to load (graph/plugins.py; docs/plugins.md)."""

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


def build_registry(modules: Sequence[str] | None = None, *, folders: Folders | None = None,
                   plugins: PluginSettings | None = None) -> NodeRegistry:
    """Built-in nodes first (their names always win), then the plugin packs when `plugins` is given."""
    registry = NodeRegistry(folders=folders)
    for name in BUILTIN_NODE_MODULES if modules is None else modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            log.warning("built-in nodes %s unavailable: %s", name, exc)
            registry.record_failed_pack(name, f"{type(exc).__name__}: {exc}")
            continue
        registry.register_module(module, source=name)
    if plugins is not None:
        from graph.plugins import PluginManager

        manager = PluginManager(registry, plugins.dirs, allow=plugins.allow, enabled=plugins.enabled,
                                folders=folders, auto_reload=plugins.reload)
        manager.load_all()
    return registry


def build_services(settings: Settings) -> dict[str, Any]:
    """The services nodes reach through their context: the model manager (when torch is installed)."""
    services: dict[str, Any] = {"force_cpu": settings.force_cpu}
    try:
        from nodes.models.manager import ModelManager
    except ImportError as exc:
        log.warning("model support unavailable (%s): only torch-free nodes will run", exc)
        return services
    manager = ModelManager(force_cpu=settings.force_cpu)
    services["models"] = manager
    services["system"] = manager  # /system_stats and /free
    return services


def build_executor(settings: Settings, registry: NodeRegistry) -> Executor:
    return Executor(registry, cache=make_cache(settings.cache), folders=settings.folders,
                    services=build_services(settings), limits=settings.limits)


# -- arguments -------------------------------------------------------------------------------------
def _folder_args(parser: argparse.ArgumentParser) -> None:
    for name, help_text in (("models", "model files (checkpoints/, loras/, vae/, ...)"),
                            ("input", "images LoadImage reads and uploads land in"),
                            ("output", "saved images"),
                            ("user", "saved workflows, settings and the job database"),
                            ("temp", "previews (PreviewImage files)")):
        env = f"SUMIE_{name.upper()}_DIR"
        parser.add_argument(f"--{name}-dir", default=os.environ.get(env), metavar="DIR",
                            help=f"folder for {help_text}; env {env}; default ./{name}/ beside main.py")
    parser.add_argument("--cpu", action="store_true", default=os.environ.get("SUMIE_CPU") == "1",
                        help="run on the CPU even when a GPU is present (env SUMIE_CPU=1)")
    parser.add_argument("--cache", default=os.environ.get("SUMIE_CACHE", "recent:1"),
                        help="what to keep between prompts: none, recent[:N] (results of the last N prompts) "
                             "or ram:SIZE (e.g. ram:8GB, least recently used first); default recent:1")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    _plugin_args(parser)


def _plugin_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("plugins")
    group.add_argument("--disable-plugins", action="store_true", default=os.environ.get("SUMIE_DISABLE_PLUGINS") == "1",
                       help="load no plugin packs from custom_nodes/ (env SUMIE_DISABLE_PLUGINS=1)")
    group.add_argument("--plugins-allow", nargs="+", metavar="NAME", default=None,
                       help="load only these plugin packs (folder or file names in custom_nodes/)")
    group.add_argument("--plugins-dir", action="append", type=Path, default=None, metavar="DIR",
                       help="folder of plugin packs (repeatable); default ./custom_nodes/ beside main.py")


def plugin_settings_from(args: argparse.Namespace) -> PluginSettings:
    dirs = tuple(Path(d).expanduser().resolve() for d in args.plugins_dir) if getattr(args, "plugins_dir", None) \
        else (PLUGINS_DIR,)
    return PluginSettings(enabled=not getattr(args, "disable_plugins", False), dirs=dirs,
                          allow=tuple(args.plugins_allow) if getattr(args, "plugins_allow", None) else None,
                          reload=bool(getattr(args, "reload_plugins", False)))


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="main.py", description="Sumie: a node-graph workflow engine for "
                                     "Stable Diffusion.")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="start the server and the editor (the default)")
    serve.add_argument("--listen", default=os.environ.get("SUMIE_LISTEN", "127.0.0.1"),
                       help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("SUMIE_PORT", "8188")))
    _folder_args(serve)
    serve.add_argument("--reload-plugins", action="store_true",
                       help="development: reload plugin packs whose files changed, between prompts")
    server_cli.add_arguments(serve)
    run = sub.add_parser("run", help="run a saved workflow headlessly, without a server")
    run.add_argument("workflow", type=Path, help="a workflow: API or editor format .json, a POST /prompt body, or "
                     "a PNG/WebP with an embedded workflow")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE_ID.INPUT=VALUE",
                     help="override an input; VALUE is read as JSON when it parses, else as text (repeatable)")
    run.add_argument("--json", action="store_true", help="stream events as JSON lines on stdout")
    run.add_argument("--timeout", type=float, default=None, help="stop the run after this many seconds")
    _folder_args(run)
    convert = sub.add_parser("convert", help="write the API-format prompt of an editor workflow or image")
    convert.add_argument("source", type=Path, help="an editor-format .json, an API .json, or a PNG/WebP")
    convert.add_argument("target", type=Path, help="the API-format .json to write ('-' for stdout)")
    _folder_args(convert)
    inspect = sub.add_parser("inspect", help="list the node types and model files a workflow needs that are "
                             "missing")
    inspect.add_argument("workflow", type=Path, help="a workflow .json (either format) or a PNG/WebP")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    _folder_args(inspect)
    plugins = sub.add_parser("plugins", help="inspect plugin packs (never installs anything)")
    plugins_sub = plugins.add_subparsers(dest="plugins_command", required=True)
    check = plugins_sub.add_parser("check", help="what installing a pack's requirements.txt would change here; "
                                   "flags packs that would replace torch, numpy or another engine dependency")
    check.add_argument("pack", nargs="?", help="a pack's name in custom_nodes/ (default: every pack)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("-v", "--verbose", action="store_true", help="log more")
    check.add_argument("--plugins-dir", action="append", type=Path, default=None, metavar="DIR",
                       help="folder of plugin packs (repeatable); default ./custom_nodes/")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    def folder(name: str) -> Path:
        value = getattr(args, f"{name}_dir", None)
        return Path(value).expanduser().resolve() if value else ROOT / name

    folders = Folders(models=folder("models"), input=folder("input"), output=folder("output"),
                      temp=folder("temp"), user=folder("user"))
    return Settings(folders=folders, force_cpu=args.cpu, cache=args.cache, listen=getattr(args, "listen", "127.0.0.1"),
                    port=getattr(args, "port", 8188))


# -- run -------------------------------------------------------------------------------------------
class CommandError(Exception):
    pass


IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"RIFF")


def read_workflow_document(path: Path) -> Any:
    """The JSON a workflow file holds: a .json file, or the workflow embedded in a PNG/WebP we (or
    ComfyUI) saved. From an image, the API prompt that ran is preferred (it reruns exactly), with the
    editor workflow kept as its metadata; else the editor workflow alone."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw.startswith(IMAGE_SIGNATURES):
        from nodes.sd.png_meta import read_workflow_metadata

        meta = read_workflow_metadata(raw)
        if isinstance(meta.get("prompt"), dict):
            envelope: dict[str, Any] = {"prompt": meta["prompt"]}
            if isinstance(meta.get("workflow"), dict):
                envelope["extra_data"] = {"extra_pnginfo": {"workflow": meta["workflow"]}}
            return envelope
        if isinstance(meta.get("workflow"), dict):
            return meta["workflow"]
        raise CommandError(f"{path} holds no workflow (no 'prompt' or 'workflow' metadata)")
    try:
        return loads_strict(raw)
    except RequestError as exc:
        raise CommandError(f"{path}: {exc.issue.message}") from None


def load_workflow_file(path: Path, registry: NodeRegistry) -> PromptRequest:
    """A runnable request from an API-format file, a POST /prompt body, an editor file or an image."""
    data = read_workflow_document(path)
    kind = detect_format(data)
    if kind == "ui":
        data = {"prompt": data, "extra_data": {"extra_pnginfo": {"workflow": data}}}
        kind = "envelope"
    if kind == "envelope" and is_ui_workflow(data.get("prompt")):
        data = {**data, "prompt": convert_or_fail(path, data["prompt"], registry)}
    if kind == "envelope":
        try:
            return parse_prompt_request(data)
        except RequestError as exc:
            raise CommandError(f"{path}: {exc.issue.message}") from None
    if kind == "api":
        return PromptRequest(workflow=parse_api_workflow(data))
    raise CommandError(f"{path}: expected a JSON object of nodes, got {type(data).__name__}")


def convert_or_fail(path: Path, workflow: dict[str, Any], registry: NodeRegistry) -> dict[str, Any]:
    conversion = convert_ui_workflow(workflow, registry)
    for warning in conversion.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not conversion.ok:
        raise CommandError(f"{path}: cannot convert the editor workflow:\n  " + "\n  ".join(conversion.messages()))
    return conversion.prompt


def apply_overrides(request: PromptRequest, overrides: Sequence[str]) -> None:
    nodes = request.workflow.nodes
    for item in overrides:
        target, sep, text = item.partition("=")
        node_id, dot, input_name = target.partition(".")
        if not sep or not dot or not input_name:
            raise CommandError(f"--set {item!r}: write NODE_ID.INPUT=VALUE, e.g. --set 3.seed=42")
        if node_id not in nodes:
            raise CommandError(f"--set {item!r}: there is no node {node_id!r} in the workflow")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        if isinstance(value, list):
            value = {"__value__": value}
        if isinstance(value, dict) and "__value__" in value:
            value = value["__value__"]
        nodes[node_id].inputs[input_name] = value


class _Reporter:
    """Listens to run events: a progress bar per node (tqdm) or JSON lines on stdout."""

    def __init__(self, *, as_json: bool, class_of: dict[str, str]) -> None:
        self.as_json = as_json
        self.class_of = class_of
        self.bar: Any = None
        self.lock = threading.Lock()
        self.quiet = not sys.stderr.isatty()

    def __call__(self, event: Event) -> None:
        with self.lock:
            if self.as_json:
                self._json(event)
            else:
                self._bar(event)

    def _json(self, event: Event) -> None:
        data = asdict(event)
        data.pop("preview", None)
        name = "".join("_" + c.lower() if c.isupper() else c for c in type(event).__name__).lstrip("_")
        sys.stdout.write(json.dumps({"type": name, **data}, default=repr, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def _bar(self, event: Event) -> None:
        from tqdm import tqdm

        if isinstance(event, NodeStarted):
            self._close()
            if not self.quiet:
                self.bar = tqdm(total=None, desc=f"{event.node_id} {event.class_type}", leave=False, file=sys.stderr,
                                unit="step", dynamic_ncols=True)
        elif isinstance(event, Progress) and self.bar is not None:
            if self.bar.total != event.max:
                self.bar.reset(total=event.max)
            self.bar.n = event.value
            self.bar.refresh()
        elif isinstance(event, NodeFinished):
            self._close()
            if event.ui and "text" in event.ui:
                for text in event.ui["text"]:
                    print(f"[{event.node_id} {event.class_type}] {text}", file=sys.stderr)
        elif isinstance(event, (NodeFailed, RunInterrupted, RunFinished)):
            self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def output_paths(outputs: dict[str, dict[str, Any]], folders: Folders) -> list[Path]:
    """Files named in output nodes' `ui` (images, gifs, audio, files) resolved under their folder."""
    roots = {"output": folders.output, "temp": folders.temp, "input": folders.input}
    paths: list[Path] = []
    for ui in outputs.values():
        for key in ("images", "gifs", "audio", "video", "files"):
            for item in ui.get(key, ()):
                if isinstance(item, dict) and "filename" in item:
                    root = roots.get(item.get("type", "output"), folders.output)
                    paths.append(root / item.get("subfolder", "") / item["filename"])
    return paths


def command_run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    ensure_demo_model(settings)
    registry = build_registry(folders=settings.folders, plugins=plugin_settings_from(args))
    try:
        request = load_workflow_file(args.workflow, registry)
        apply_overrides(request, args.overrides)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    executor = build_executor(settings, registry)
    validation = executor.validate(request.workflow, request.partial_execution_targets)
    for node_id, issue in validation.warnings:
        print(f"warning: {issue.describe(node_id)}", file=sys.stderr)
    if not validation.ok or validation.node_errors:
        for line in validation.messages():
            print(f"error: {line}", file=sys.stderr)
        if not validation.ok:
            if args.json:
                print(json.dumps({"type": "validation_failed", **validation.to_json()}))
            return EXIT_ERROR
    token = InterruptToken(timeout=args.timeout)
    reporter = _Reporter(as_json=args.json, class_of={k: n.class_type for k, n in validation.workflow.nodes.items()})
    run_request = RunRequest(validation=validation, run_id=request.prompt_id or str(uuid.uuid4()),
                             extra_data=request.extra_data, interrupt=token, listeners=[reporter])
    result: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            result["outcome"] = executor.run(run_request)
        finally:
            done.set()

    # The run happens in a worker thread so Ctrl-C lands here and becomes the run's interrupt token
    # (an Event, not Thread.join: a KeyboardInterrupt inside join can leave the thread looking dead).
    threading.Thread(target=work, name="sumie-run", daemon=True).start()
    try:
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        token.set("interrupted")
        print("\ninterrupting...", file=sys.stderr)
        done.wait()
    outcome = result.get("outcome")
    if outcome is None:
        print("error: the run ended unexpectedly (see the log above)", file=sys.stderr)
        return EXIT_ERROR
    if not args.json:
        for path in output_paths(outcome.outputs, settings.folders):
            print(path)
    if outcome.status == "success":
        return EXIT_OK
    if outcome.status == "interrupted":
        print(f"interrupted ({outcome.reason}) at node {outcome.interrupted_at}", file=sys.stderr)
        return EXIT_INTERRUPTED
    failure = outcome.failure
    if failure is not None:
        print(f"error: {failure.describe()}", file=sys.stderr)
        if args.verbose:
            print("".join(failure.traceback), file=sys.stderr)
    return EXIT_ERROR


# -- convert and inspect ---------------------------------------------------------------------------
def command_convert(args: argparse.Namespace) -> int:
    """Write the API prompt of an editor workflow (or of a PNG/WebP's embedded workflow)."""
    settings = settings_from(args)
    registry = build_registry(folders=settings.folders, plugins=plugin_settings_from(args))
    try:
        request = load_workflow_file(args.source, registry)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    text = json.dumps(dict(request.workflow.raw), indent=2, ensure_ascii=False) + "\n"
    if str(args.target) == "-":
        sys.stdout.write(text)
    else:
        args.target.write_text(text, encoding="utf-8")
        print(f"wrote {args.target} ({len(request.workflow.raw)} nodes)", file=sys.stderr)
    return EXIT_OK


def inspect_workflow(data: Any, registry: NodeRegistry) -> dict[str, Any]:
    """Which node types a workflow needs that are missing, and which model/input files it names."""
    missing: dict[str, str] = {}
    prompt: dict[str, Any] = {}
    if detect_format(data) == "envelope":
        data = data["prompt"]
    if is_ui_workflow(data):
        conversion = convert_ui_workflow(data, registry)
        for issues in conversion.errors.values():
            for issue in issues:
                if issue.type == "missing_node_type":
                    missing[str(issue.extra.get("class_type"))] = issue.details
        prompt = conversion.prompt
    elif isinstance(data, dict):
        prompt = data
    files = []
    for nid, node in prompt.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        node_def = registry.get(class_type) if isinstance(class_type, str) else None
        if node_def is None:
            if isinstance(class_type, str):
                missing[class_type] = registry.missing_node_hint(class_type)
            continue
        for name, spec in node_def.inputs.items():
            value = (node.get("inputs") or {}).get(name)
            if getattr(spec, "choices", None) is not None and callable(spec.choices) and isinstance(value, str):
                installed = value in spec.current_choices(registry.folders)
                files.append({"node": nid, "class_type": class_type, "input": name, "file": value,
                              "installed": installed})
    return {"missing_node_types": missing, "files": files}


def command_inspect(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    registry = build_registry(folders=settings.folders, plugins=plugin_settings_from(args))
    try:
        report = inspect_workflow(read_workflow_document(args.workflow), registry)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for class_type, hint in report["missing_node_types"].items():
            print(f"missing node type: {class_type} ({hint})")
        for f in report["files"]:
            state = "ok" if f["installed"] else "MISSING"
            print(f"{state:>7}  {f['file']}  (node {f['node']} {f['class_type']}.{f['input']})")
        if not report["missing_node_types"] and all(f["installed"] for f in report["files"]):
            print("everything this workflow needs is installed")
    problems = report["missing_node_types"] or any(not f["installed"] for f in report["files"])
    return EXIT_ERROR if problems else EXIT_OK


# -- serve -----------------------------------------------------------------------------------------
def command_serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    try:
        server_app = importlib.import_module("server.app")
    except ImportError as exc:
        print(f"error: the server is not available in this installation: {exc}", file=sys.stderr)
        return EXIT_ERROR
    ensure_demo_model(settings)
    registry = build_registry(folders=settings.folders, plugins=plugin_settings_from(args))
    return server_app.serve(settings, registry, build_executor(settings, registry),
                            options=server_cli.options_from(args))


# -- plugins ---------------------------------------------------------------------------------------
def command_plugins(args: argparse.Namespace) -> int:
    """`plugins check [PACK]`: report what each pack's requirements.txt would change; installs nothing.

    Exit code 0 when nothing protected would change, 1 when a pack is unknown or would replace torch,
    numpy or another package the engine depends on.
    """
    from graph.plugins import check_requirements, discover

    dirs = [Path(d).expanduser().resolve() for d in args.plugins_dir] if args.plugins_dir else [PLUGINS_DIR]
    sources = discover(dirs)
    if args.pack:
        sources = [s for s in sources if s.name == args.pack]
        if not sources:
            print(f"error: no plugin pack named {args.pack!r} in {', '.join(map(str, dirs))}", file=sys.stderr)
            return EXIT_ERROR
    report = {s.name: check_requirements(s.path) for s in sources}
    flagged = any(c.flagged for checks in report.values() for c in checks)
    if args.json:
        print(json.dumps({name: [c.to_json() for c in checks] for name, checks in report.items()}, indent=2))
        return EXIT_ERROR if flagged else EXIT_OK
    for name, checks in report.items():
        if not checks:
            print(f"{name}: no requirements.txt (nothing to install)")
            continue
        changes = [c for c in checks if c.action in ("install", "change")]
        print(f"{name}: {len(changes)} of {len(checks)} requirement(s) would change this environment")
        for c in checks:
            mark = "!!" if c.flagged else {"ok": "ok", "install": "+", "change": "~", "skip": "-"}.get(c.action, "?")
            print(f"  {mark:>2} {c.line}: {c.note}")
    if flagged:
        print("\n!! marks a package the engine depends on: installing that pack's requirements would replace it. "
              "Install its other requirements by hand instead.")
    return EXIT_ERROR if flagged else EXIT_OK


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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "serve")
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command == "run":
        return command_run(args)
    if args.command == "plugins":
        return command_plugins(args)
    if args.command == "convert":
        return command_convert(args)
    if args.command == "inspect":
        return command_inspect(args)
    return command_serve(args)


if __name__ == "__main__":
    sys.exit(main())


