"""`main.py plugins check [PACK]`: what installing the packs' requirements.txt would change. Installs nothing."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from plugins.packs import discover
from plugins.requirements import check_requirements

from .common import EXIT_ERROR, EXIT_OK


def command_plugins(args: argparse.Namespace, *, default_dirs: Sequence[Path]) -> int:
    """`plugins check [PACK]`: report what each pack's requirements.txt would change; installs nothing.

    Exit code 0 when nothing protected would change, 1 when a pack is unknown or would replace torch,
    numpy or another package the engine depends on.
    """
    dirs = [Path(d).expanduser().resolve() for d in args.plugins_dir] if args.plugins_dir else list(default_dirs)
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
