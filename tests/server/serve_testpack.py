"""Run the real server with the torch-free test pack: `python tests/server/serve_testpack.py --root DIR --port N`.

The crash test starts this as a subprocess and kills it; it goes through the same `server.app.serve`
and `server.cli` options as `main.py serve`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import main  # noqa: E402  (the repository root must be importable first)
from graph import Folders  # noqa: E402
from server import cli  # noqa: E402
from server.app import serve  # noqa: E402
from tests.server.nodes import make_registry  # noqa: E402


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="folder holding input/, output/, user/ ...")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--listen", default="127.0.0.1")
    cli.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = main.Settings(folders=Folders.under(args.root.resolve()), listen=args.listen, port=args.port)
    registry = make_registry()
    return serve(settings, registry, main.build_executor(settings, registry), cli.options_from(args))


if __name__ == "__main__":
    sys.exit(run())
