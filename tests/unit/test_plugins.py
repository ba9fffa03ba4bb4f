"""Plugin loading: our API, ComfyUI packs, broken packs, conflicts, flags, reloading, requirements."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from graph import NodeFailed, NodeRegistry, parse_api_workflow
from plugins.manager import PluginManager
from plugins.packs import discover, scan_node_names
from plugins.requirements import check_requirements
from tests.conftest import run_prompt
from tests.support import testpack

ROOT = Path(__file__).resolve().parents[2]

OURS = '''
from graph import IntInput, Node, NodeSchema, OutputSpec

class Triple(Node):
    SCHEMA = NodeSchema(node_type="{prefix}Triple", category="test", inputs=[IntInput(name="x", default=1)],
                        outputs=[OutputSpec(type="INT")])

    def execute(self, ctx, *, x):
        return (3 * x,)

SUMIE_API = 1
NODES = [Triple]
'''

V1_SINGLE = '''
class Shout:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hi"})}}
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "text"
    def run(self, text):
        return (text.upper() + "!",)

NODE_CLASS_MAPPINGS = {"Shout": Shout}
NODE_DISPLAY_NAME_MAPPINGS = {"Shout": "Shout It"}
'''


def write(base: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return base


def load(tmp_path: Path, files: dict[str, str] | None = None, **options) -> tuple[NodeRegistry, PluginManager]:
    plugins = tmp_path / "custom_nodes"
    plugins.mkdir(exist_ok=True)
    write(plugins, files or {})
    registry = NodeRegistry()
    registry.register_module(testpack)
    manager = PluginManager(registry, [plugins], **options)
    manager.load_all()
    return registry, manager


def add_show(prompt: dict, source: str) -> dict:
    return {**prompt, "out": {"class_type": "Show", "inputs": {"value": [source, 0]}}}


def test_a_pack_with_our_api_registers_typed_nodes(tmp_path, executor):
    registry, manager = load(tmp_path, {"mypack/__init__.py": OURS.format(prefix="My")})
    report = manager.reports["mypack"]
    assert report.status == "loaded" and report.protocol == "sumie" and report.api_version == 1
    assert report.nodes == ["MyTriple"] and registry["MyTriple"].source == "plugin:mypack"
    assert registry.object_info("MyTriple")["MyTriple"]["python_module"] == "custom_nodes.mypack"
    executor.registry = registry
    outcome = run_prompt(executor, add_show({"1": {"class_type": "MyTriple", "inputs": {"x": 4}}}, "1"))
    assert outcome.outputs["out"] == {"text": ["12"]}


def test_a_pack_needing_a_newer_api_is_reported(tmp_path):
    registry, manager = load(tmp_path, {"future/__init__.py": OURS.format(prefix="F").replace("SUMIE_API = 1",
                                                                                            "SUMIE_API = 99")})
    report = manager.reports["future"]
    assert report.status == "failed" and "API 99" in report.error and "FTriple" not in registry
    assert report.likely_nodes == ["FTriple"]  # found by scanning the source for node_type="..."


def test_single_file_comfy_pack(tmp_path, executor):
    registry, manager = load(tmp_path, {"shout.py": V1_SINGLE})
    report = manager.reports["shout"]
    assert report.status == "loaded" and report.protocol == "comfy_v1" and report.nodes == ["Shout"]
    info = registry.object_info("Shout")["Shout"]
    assert info["display_name"] == "Shout It" and info["category"] == "text"
    executor.registry = registry
    outcome = run_prompt(executor, add_show({"1": {"class_type": "Shout", "inputs": {"text": "hey"}}}, "1"))
    assert outcome.outputs["out"] == {"text": ["'HEY!'"]}


@pytest.mark.parametrize(("files", "needle"), [
    ({"__init__.py": "from .defs import NODE_CLASS_MAPPINGS\nx = (\n",
      "defs.py": "NODE_CLASS_MAPPINGS = {'BadSyntaxNode': object}\n"}, "SyntaxError"),
    ({"__init__.py": "import cv2_not_installed\nNODE_CLASS_MAPPINGS = {'BadSyntaxNode': object}\n"},
     "No module named 'cv2_not_installed'"),
    ({"__init__.py": "NODE_CLASS_MAPPINGS = {}\nNODE_CLASS_MAPPINGS['BadSyntaxNode'] = object\n"
                     "raise RuntimeError('no GPU found')\n"}, "RuntimeError: no GPU found"),
])
def test_a_pack_that_fails_to_import_is_reported_and_its_nodes_named(tmp_path, files, needle):
    registry, manager = load(tmp_path, {f"badpack/{k}": v for k, v in files.items()}
                             | {"shout.py": V1_SINGLE})
    report = manager.reports["badpack"]
    assert report.status == "failed" and needle in report.error
    assert report.likely_nodes == ["BadSyntaxNode"] and report.traceback
    assert not any("plugins/manager.py" in line for line in report.traceback)  # the loader's frames are cut
    assert manager.reports["shout"].status == "loaded"  # the others still load
    validation = _validate(registry, {"1": {"class_type": "BadSyntaxNode", "inputs": {}}})
    issue = validation.node_errors["1"].errors[0]
    assert issue.type == "missing_node_type" and "badpack" in issue.details and needle in issue.details
    if "cv2" in needle:
        assert "requirements.txt" in report.error and "plugins check badpack" in report.error


def _validate(registry, prompt):
    from graph import validate_workflow

    return validate_workflow(parse_api_workflow(prompt), registry)


def test_packs_cannot_replace_builtin_nodes_and_the_first_pack_keeps_a_name(tmp_path):
    clash = V1_SINGLE.replace('{"Shout": Shout}', '{"Add": Shout, "Shout": Shout}')
    registry, manager = load(tmp_path, {"a_first.py": V1_SINGLE, "b_second/__init__.py": clash})
    second = manager.reports["b_second"]
    assert "built-in" in second.conflicts["Add"] and "a_first" in second.conflicts["Shout"]
    assert registry["Add"].source == "tests.support.testpack" and registry["Shout"].source == "plugin:a_first"
    assert second.status == "loaded" and second.nodes == []


def test_bad_node_classes_are_reported_on_their_pack(tmp_path):
    text = V1_SINGLE.replace('{"Shout": Shout}', '{"Shout": Shout, "NoTypes": object, "BadFn": BadFn}')
    text = text.replace("NODE_CLASS_MAPPINGS =", "class BadFn(Shout):\n    FUNCTION = 'missing'\n\n"
                        "NODE_CLASS_MAPPINGS =")
    registry, manager = load(tmp_path, {"mixed.py": text})
    report = manager.reports["mixed"]
    assert report.nodes == ["Shout"] and set(report.node_errors) == {"NoTypes", "BadFn"}
    assert "INPUT_TYPES" in report.node_errors["NoTypes"] and "FUNCTION" in report.node_errors["BadFn"]


def test_a_pack_exporting_nothing_fails(tmp_path):
    _, manager = load(tmp_path, {"empty/__init__.py": "x = 1\n"})
    assert manager.reports["empty"].status == "failed" and "exports no nodes" in manager.reports["empty"].error


def test_a_slow_import_is_flagged_and_a_hanging_one_times_out(tmp_path):
    files = {"slowish.py": "import time\ntime.sleep(0.05)\n" + V1_SINGLE,
             "hangs/__init__.py": "import time\ntime.sleep(3)\nNODE_CLASS_MAPPINGS = {'HangNode': object}\n"}
    started = time.monotonic()
    registry, manager = load(tmp_path, files, import_timeout=0.5, slow_seconds=0.01)
    assert time.monotonic() - started < 2.5
    assert manager.reports["slowish"].status == "loaded" and manager.reports["slowish"].slow
    hung = manager.reports["hangs"]
    assert hung.status == "timed_out" and "0.5 s" in hung.error and hung.likely_nodes == ["HangNode"]
    assert "hangs" in registry.missing_node_hint("HangNode")


def test_allow_list_disabled_and_skipped_entries(tmp_path):
    files = {"one.py": V1_SINGLE, "two/__init__.py": OURS.format(prefix="Two"), "three.py.disabled": "boom(",
             ".hidden/__init__.py": "boom(", "notes.txt": "hello", "nopkg/helper.py": "boom("}
    registry, manager = load(tmp_path, files, allow=["two"])
    assert set(manager.reports) == {"one", "two"}
    assert manager.reports["one"].status == "skipped" and "Shout" not in registry
    assert manager.reports["two"].status == "loaded"
    registry, manager = load(tmp_path, enabled=False)
    assert manager.reports == {} and "Shout" not in registry


def test_web_directory_is_recorded_and_must_stay_inside_the_pack(tmp_path):
    files = {"webby/__init__.py": V1_SINGLE + "WEB_DIRECTORY = './js'\n", "webby/js/a.js": "export default 1;",
             "escape/__init__.py": "WEB_DIRECTORY = '..'\n", "webonly/__init__.py": "WEB_DIRECTORY = 'web'\n",
             "webonly/web/x.js": ""}
    registry, manager = load(tmp_path, files)
    assert manager.web_dirs["webby"] == (tmp_path / "custom_nodes" / "webby" / "js").resolve()
    assert manager.reports["webby"].to_json()["web_directory"] == "/extensions/webby"
    assert "escape" not in manager.web_dirs and manager.reports["escape"].status == "failed"
    assert manager.reports["webonly"].status == "loaded" and "webonly" in manager.web_dirs


def test_reload_picks_up_changed_new_and_removed_packs(tmp_path, executor):
    registry, manager = load(tmp_path, {"live.py": V1_SINGLE, "gone.py": V1_SINGLE.replace("Shout", "Gone")},
                             auto_reload=True)
    executor.registry = registry
    prompt = add_show({"1": {"class_type": "Shout", "inputs": {"text": "a"}}}, "1")
    assert run_prompt(executor, prompt).outputs["out"] == {"text": ["'A!'"]}
    assert manager.reload_changed(min_interval=0) == []
    plugins = tmp_path / "custom_nodes"
    path = plugins / "live.py"
    path.write_text(V1_SINGLE.replace('"!"', '"?"'))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    (plugins / "gone.py").unlink()
    (plugins / "fresh.py").write_text(V1_SINGLE.replace("Shout", "Fresh"))
    assert sorted(manager.reload_changed(min_interval=0)) == ["fresh", "gone", "live"]
    assert "Gone" not in registry and "Fresh" in registry and "gone" not in manager.reports
    # The version in the cache key changed with the file, so the cached result is not reused.
    assert run_prompt(executor, prompt).outputs["out"] == {"text": ["'A?'"]}


def test_reloading_a_failed_pack_clears_its_failure(tmp_path):
    registry, manager = load(tmp_path, {"flaky.py": "import not_there_yet\n"})
    assert [p.name for p in registry.failed_packs] == ["flaky"]
    path = tmp_path / "custom_nodes" / "flaky.py"
    path.write_text(V1_SINGLE)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert manager.reload_changed(min_interval=0) == ["flaky"]
    assert registry.failed_packs == [] and "Shout" in registry


def test_a_runtime_exception_is_a_node_failure_and_the_next_run_works(tmp_path, executor):
    boom = V1_SINGLE.replace("return (text.upper() + \"!\",)",
                             "if text == 'boom':\n            raise ValueError('cannot shout boom')\n"
                             "        return (text.upper() + \"!\",)")
    registry, _ = load(tmp_path, {"boomer.py": boom})
    executor.registry = registry
    events = []
    outcome = run_prompt(executor, add_show({"1": {"class_type": "Shout", "inputs": {"text": "boom"}}}, "1"),
                         listeners=[events.append])
    failure = outcome.failure
    assert outcome.status == "error" and failure.node_id == "1" and failure.node_type == "Shout"
    assert failure.exception_message == "cannot shout boom" and failure.exception_type == "builtins.ValueError"
    assert any(isinstance(e, NodeFailed) for e in events)
    ok = run_prompt(executor, add_show({"1": {"class_type": "Shout", "inputs": {"text": "ok"}}}, "1"))
    assert ok.status == "success"


def test_the_shim_serves_comfy_names_to_packs_without_shadowing_ours(tmp_path):
    pack = {
        "shimmed/__init__.py": """
            import folder_paths
            import comfy.utils
            import comfy.model_management as mm
            from comfy import utils as u2
            from server import PromptServer
            import nodes
            from nodes import NODE_CLASS_MAPPINGS, MAX_RESOLUTION
            from .sub import where
            SEEN = {"fp": folder_paths.__name__, "utils": comfy.utils.__name__, "mm": mm.__name__,
                    "u2": u2.__name__, "ps": type(PromptServer.instance).__module__, "nodes": nodes.__name__,
                    "max": MAX_RESOLUTION, "has_add": "Add" in NODE_CLASS_MAPPINGS, "sub": where()}
            WEB_DIRECTORY = "."
        """,
        "shimmed/sub.py": """
            def where():
                import server
                return server.__name__
        """,
        "internal.py": "import comfy.sd\n",
        "extras.py": "from comfy_extras.nodes_lt import LTXVAddGuide\n",
        "extras_node.py": "from comfy_extras.nodes_mask import MaskComposite\n",  # a node this registry lacks
    }
    registry, manager = load(tmp_path, pack)
    assert manager.reports["shimmed"].status == "loaded", manager.reports["shimmed"].error
    seen = sys.modules[manager.reports["shimmed"].module].SEEN
    assert seen == {"fp": "compat.folder_paths", "utils": "compat.comfy.utils", "mm": "compat.comfy.model_management",
                    "u2": "compat.comfy.utils", "ps": "compat.server", "nodes": "compat.nodes", "max": 16384,
                    "has_add": True, "sub": "compat.server"}
    for name in ("internal", "extras"):
        report = manager.reports[name]
        assert report.status == "failed" and "part of ComfyUI" in report.error and "requirements" not in report.error
    assert "this engine has no MaskComposite node" in manager.reports["extras_node"].error
    # Our own code still gets our packages, and no bare alias leaks into sys.modules.
    import server

    assert server.__file__ == str(ROOT / "server" / "__init__.py") and not hasattr(server, "PromptServer")
    assert importlib.util.find_spec("nodes").origin == str(ROOT / "nodes" / "__init__.py")
    assert "folder_paths" not in sys.modules and "comfy" not in sys.modules


def test_a_pack_named_like_one_of_our_packages_gets_another_module_name(tmp_path):
    registry, manager = load(tmp_path, {"graph/__init__.py": V1_SINGLE})
    report = manager.reports["graph"]
    assert report.status == "loaded" and report.module == "sumie_pack_graph"
    assert sys.modules["graph"].__file__ == str(ROOT / "graph" / "__init__.py")


def test_scan_finds_node_names_without_running_the_pack(tmp_path):
    write(tmp_path, {"p/__init__.py": "raise SystemExit(1)\nNODE_CLASS_MAPPINGS = {'A': x, **more}\n",
                     "p/more.py": "NODE_CLASS_MAPPINGS.update({'B': y})\nNODE_CLASS_MAPPINGS['C'] = z\n"})
    (source,) = discover([tmp_path])
    assert sorted(scan_node_names(source)) == ["A", "B", "C"]


def test_requirements_report_flags_packs_that_would_replace_engine_packages(tmp_path):
    write(tmp_path, {"req/__init__.py": "", "req/requirements.txt": """
        # comment
        numpy==1.0.0
        torch>=99
        torchvision
        aiohttp
        surely-not-installed-pkg>=1.0  # trailing comment
        oldpy ; python_version < "3.0"
        -r other.txt
        not a requirement !!
    """})
    checks = {c.line: c for c in check_requirements(tmp_path / "req")}
    assert checks["numpy==1.0.0"].action == "change" and checks["numpy==1.0.0"].flagged
    assert checks["torch>=99"].flagged and checks["torchvision"].action == "install" and checks["torchvision"].flagged
    assert checks["aiohttp"].action == "ok" and not checks["aiohttp"].flagged
    assert checks["surely-not-installed-pkg>=1.0"].action == "install" and not checks[
        "surely-not-installed-pkg>=1.0"].flagged
    assert checks['oldpy ; python_version < "3.0"'].action == "skip"
    assert checks["-r other.txt"].action == "unknown" and checks["not a requirement !!"].action == "unknown"


def test_plugins_check_command(tmp_path, capsys):
    import main

    write(tmp_path, {"safe/__init__.py": "", "safe/requirements.txt": "aiohttp\n",
                     "risky/__init__.py": "", "risky/requirements.txt": "numpy<1\n"})
    assert main.main(["plugins", "check", "safe", "--plugins-dir", str(tmp_path)]) == 0
    assert "0 of 1 requirement(s) would change" in capsys.readouterr().out
    assert main.main(["plugins", "check", "--plugins-dir", str(tmp_path)]) == 1
    assert "!!" in capsys.readouterr().out
    assert main.main(["plugins", "check", "nope", "--plugins-dir", str(tmp_path)]) == 1


def test_build_registry_loads_plugins_only_when_asked(tmp_path):
    import main

    write(tmp_path, {"shout.py": V1_SINGLE})
    from cli.args import make_parser

    settings = main.PluginSettings(dirs=(tmp_path,))
    registry = main.build_registry(["tests.support.testpack"])
    manager = main.load_plugins(registry, settings)
    assert "Shout" in registry and manager.reports["shout"].status == "loaded"
    assert "Shout" not in main.build_registry(["tests.support.testpack"])
    off = main.build_registry(["tests.support.testpack"])
    main.load_plugins(off, main.PluginSettings(enabled=False, dirs=(tmp_path,)))
    assert "Shout" not in off
    args = make_parser().parse_args(["serve", "--disable-plugins", "--plugins-allow", "a", "b",
                                          "--reload-plugins", "--plugins-dir", str(tmp_path)])
    plugin_settings = main.plugin_settings_from(args)
    assert not plugin_settings.enabled and plugin_settings.allow == ("a", "b") and plugin_settings.reload
    assert plugin_settings.dirs == (tmp_path.resolve(),)
