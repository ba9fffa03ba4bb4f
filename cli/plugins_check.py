"""`main.py plugins check [PACK | PACK_DIR]`: before a pack is installed, what its requirements.txt would
change here and which of its imports Sumie provides. Installs nothing and never runs the pack."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from plugins.imports_check import ImportCheck, builtin_nodes_bound, check_imports
from plugins.packs import PackSource, discover
from plugins.requirements import check_requirements

from .common import EXIT_ERROR, EXIT_OK


def _source_at(path: Path) -> PackSource | None:
    """A pack given by its folder (or single .py file) rather than by its name in a plugins folder."""
    name = path.expanduser().absolute().name
    path = path.expanduser().resolve()
    if path.is_dir() and (path / "__init__.py").is_file():
        return PackSource(name=name, path=path, init=path / "__init__.py")
    if path.is_file() and path.suffix == ".py":
        return PackSource(name=Path(name).stem, path=path, init=path)
    return None


def _blocking(checks: list[ImportCheck]) -> list[ImportCheck]:
    """ComfyUI imports the layer lacks outside try/except ImportError: the pack (or a node) fails to load."""
    return [c for c in checks if c.status == "missing" and not c.guarded]


def _print_imports(checks: list[ImportCheck]) -> None:
    provided = [c.module for c in checks if c.status == "provided"]
    missing = [c for c in checks if c.status == "missing"]
    absent = [c for c in checks if c.status == "not installed"]
    print(f"  imports: {len(provided)} ComfyUI module(s) provided, {len(missing)} not provided, "
          f"{len(absent)} package(s) not installed")
    if provided:
        print(f"    ok {', '.join(provided)}")
    for c in missing:
        what = ", ".join(c.missing[:6]) + (" ..." if len(c.missing) > 6 else "")
        print(f"    {'--' if c.guarded else '!!'} {c.module}: not provided: {what}"
              f"{' (guarded by the pack)' if c.guarded else ''} [{', '.join(c.files[:3])}]")
    for c in absent:
        print(f"    {'--' if c.guarded else '+'} {c.module}: not installed{' (optional)' if c.guarded else ''}")


def command_plugins(args: argparse.Namespace, *, default_dirs: Sequence[Path]) -> int:
    """`plugins check [PACK | PACK_DIR]`: requirements and imports of each pack; installs nothing.

    Exit code 0 when nothing protected would change and every ComfyUI import the packs rely on is
    provided; 1 when a pack is unknown, would replace torch, numpy or another engine dependency, or
    imports a part of ComfyUI that Sumie does not provide.
    """
    dirs = [Path(d).expanduser().resolve() for d in args.plugins_dir] if args.plugins_dir else list(default_dirs)
    given = _source_at(Path(args.pack)) if args.pack and ("/" in args.pack or Path(args.pack).is_dir()) else None
    sources = [given] if given is not None else discover(dirs)
    if args.pack and given is None:
        sources = [s for s in sources if s.name == args.pack]
        if not sources:
            print(f"error: no plugin pack named {args.pack!r} in {', '.join(map(str, dirs))}", file=sys.stderr)
            return EXIT_ERROR
    with builtin_nodes_bound():
        report = {s.name: (check_requirements(s.path), check_imports(s)) for s in sources}
    flagged = any(c.flagged for reqs, _ in report.values() for c in reqs)
    blocked = any(_blocking(imports) for _, imports in report.values())
    code = EXIT_ERROR if flagged or blocked else EXIT_OK
    if args.json:
        print(json.dumps({name: {"requirements": [c.to_json() for c in reqs],
                                 "imports": [c.to_json() for c in imports]}
                          for name, (reqs, imports) in report.items()}, indent=2))
        return code
    for name, (checks, imports) in report.items():
        if not checks:
            print(f"{name}: no requirements.txt (nothing to install)")
        else:
            changes = [c for c in checks if c.action in ("install", "change")]
            print(f"{name}: {len(changes)} of {len(checks)} requirement(s) would change this environment")
            for c in checks:
                marks = {"ok": "ok", "install": "+", "change": "~", "skip": "-"}
                mark = "!!" if c.flagged else marks.get(c.action, "?")
                print(f"  {mark:>2} {c.line}: {c.note}")
        _print_imports(imports)
    if flagged:
        print("\n!! marks a package the engine depends on: installing that pack's requirements would replace it. "
              "Install its other requirements by hand instead.")
    if blocked:
        print("\n!! marks a part of ComfyUI that Sumie's compatibility layer does not provide: the pack, or the "
              "nodes that need it, will not load (docs/plugins.md lists what is provided).")
    return code
