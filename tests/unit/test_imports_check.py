"""`plugins check`'s import report: which of a pack's imports Sumie provides, read from source (never run)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from plugins.imports_check import builtin_nodes_bound, check_imports
from plugins.packs import discover

PACK = '''
import os
import folder_paths
import comfy.utils
import comfy.model_management as mm
from comfy import model_management
from comfy.utils import ProgressBar, not_a_comfy_util
from nodes import MAX_RESOLUTION, KSampler
import node_helpers
import comfy.sd
import surely_not_installed_package
from . import helpers
import helpers as also_local
from aiohttp import web
try:
    from comfy_extras.nodes_lt import composite
except ImportError:
    composite = None

SIZE = comfy.utils.common_upscale, comfy.utils.no_such_helper, mm.get_torch_device, model_management.no_such_query
LISTS = KSampler.FUNCTION, KSampler.NOT_A_LIST
'''


def make(tmp_path: Path) -> Path:
    pack = tmp_path / "packs" / "probe"
    pack.mkdir(parents=True)
    (pack / "__init__.py").write_text(textwrap.dedent(PACK))
    (pack / "helpers.py").write_text("raise SystemExit('never run')\n")
    return pack


def test_imports_are_sorted_into_provided_missing_and_packages(tmp_path):
    make(tmp_path)
    (source,) = discover([tmp_path / "packs"])
    with builtin_nodes_bound():
        checks = {c.module: c for c in check_imports(source)}
    assert "os" not in checks and "helpers" not in checks  # the standard library and the pack's own modules
    assert checks["folder_paths"].status == "provided" and checks["node_helpers"].status == "provided"
    assert checks["comfy.utils"].status == "missing"
    assert set(checks["comfy.utils"].missing) == {"comfy.utils.not_a_comfy_util", "comfy.utils.no_such_helper"}
    assert checks["comfy.model_management"].status == "missing"
    assert checks["comfy.model_management"].missing == ["comfy.model_management.no_such_query"]
    assert checks["nodes"].missing == ["nodes.KSampler.NOT_A_LIST"]  # KSampler.FUNCTION resolves
    assert checks["comfy.sd"].status == "missing" and not checks["comfy.sd"].guarded
    assert checks["comfy_extras.nodes_lt"].status == "missing" and checks["comfy_extras.nodes_lt"].guarded
    assert checks["surely_not_installed_package"].status == "not installed"
    assert checks["aiohttp"].status == "installed"


def test_plugins_check_takes_a_pack_folder_and_reports_imports(tmp_path, capsys):
    import main

    pack = make(tmp_path)
    assert main.main(["plugins", "check", str(pack)]) == 1  # comfy.sd is imported unguarded
    out = capsys.readouterr().out
    assert "probe: no requirements.txt" in out and "!! comfy.sd: not provided" in out
    assert "-- comfy_extras.nodes_lt: not provided" in out and "(guarded by the pack)" in out
    assert main.main(["plugins", "check", str(pack), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {c["module"]: c["status"] for c in report["probe"]["imports"]}["folder_paths"] == "provided"
    (pack / "__init__.py").write_text("import folder_paths\nfrom nodes import MAX_RESOLUTION\n")
    assert main.main(["plugins", "check", str(pack)]) == 0
