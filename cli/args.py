"""The argument parser of every command (main.py dispatches on `command`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from server import cli as server_cli
from server.cluster import cli as cluster_cli


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


def _speed_args(parser: argparse.ArgumentParser) -> None:
    """How models run (nodes/models/speed.py; README "Performance")."""
    group = parser.add_argument_group("speed")
    precisions = ("fp32", "fp16", "bf16")
    group.add_argument("--unet-dtype", choices=precisions, default=os.environ.get("SUMIE_UNET_DTYPE"),
                       help="U-Net and text-encoder precision; default fp16 on a GPU, fp32 on the CPU")
    group.add_argument("--vae-dtype", choices=precisions, default=os.environ.get("SUMIE_VAE_DTYPE"),
                       help="VAE precision; default bf16 on a GPU that has it, else fp32")
    group.add_argument("--compile", action="store_true", default=os.environ.get("SUMIE_COMPILE") == "1",
                       help="torch.compile the U-Net on first use (slow first run, cached on disk under "
                            "user/compile_cache for later runs; env SUMIE_COMPILE=1)")
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="NHWC weight layout (default: on a GPU only)")
    group.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                       help="replay each sampling step's U-Net call as a recorded CUDA graph (GPU only; default on)")
    group.add_argument("--vram-budget", type=float, default=None, metavar="GB",
                       help="GPU memory for weights; least recently used models are offloaded beyond it "
                            "(default: all but 2 GB)")
    group.add_argument("--cpu-bf16", action="store_true", default=os.environ.get("SUMIE_CPU_BF16") == "1",
                       help="bf16 autocast of the U-Net on CPUs with bf16 units (AMX/AVX512-BF16); images change "
                            "slightly; --unet-dtype bf16 is the steadier speed-up (env SUMIE_CPU_BF16=1)")
    group.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: the cores)")


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
    cluster_cli.add_arguments(serve)
    _speed_args(serve)
    run = sub.add_parser("run", help="run a saved workflow headlessly, without a server")
    run.add_argument("workflow", type=Path, help="a workflow: API or editor format .json, a POST /prompt body, or "
                     "a PNG/WebP with an embedded workflow")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE_ID.INPUT=VALUE",
                     help="override an input; VALUE is read as JSON when it parses, else as text (repeatable)")
    run.add_argument("--json", action="store_true", help="stream events as JSON lines on stdout")
    run.add_argument("--timeout", type=float, default=None, help="stop the run after this many seconds")
    _folder_args(run)
    _speed_args(run)
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
    check = plugins_sub.add_parser("check", help="what installing a pack's requirements.txt would change here and "
                                   "which of its ComfyUI imports Sumie provides; "
                                   "flags packs that would replace torch, numpy or another engine dependency")
    check.add_argument("pack", nargs="?", help="a pack's name in custom_nodes/, or the path of a pack folder not "
                       "installed yet (default: every pack)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("-v", "--verbose", action="store_true", help="log more")
    check.add_argument("--plugins-dir", action="append", type=Path, default=None, metavar="DIR",
                       help="folder of plugin packs (repeatable); default ./custom_nodes/")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The parsed command line; with no command (or only flags), `serve`."""
    argv = list(argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv.insert(0, "serve")
    return make_parser().parse_args(argv)
