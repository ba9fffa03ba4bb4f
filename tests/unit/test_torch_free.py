"""graph/ (and server/) must import without torch and without nodes/: the engine stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCKER = r"""
import importlib.abc, pkgutil, sys
BLOCKED = ("torch", "diffusers", "transformers", "safetensors", "nodes", "numpy")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked import of {name}")
        return None
sys.meta_path.insert(0, Block())
import graph
for pkg in ("graph", "server"):
    try:
        mod = __import__(pkg)
    except ModuleNotFoundError:
        continue
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        __import__(info.name)
        print("imported", info.name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not leaked, leaked
"""


def test_engine_imports_with_torch_and_nodes_blocked():
    proc = subprocess.run([sys.executable, "-c", BLOCKER], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    imported = proc.stdout.split()
    for module in ("graph.executor", "graph.validate", "graph.planner", "graph.cache", "graph.schema"):
        assert module in imported
