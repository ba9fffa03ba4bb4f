"""ComfyUI's V3 node protocol: the test pack (tests/support/packs/v3_testpack) loaded through the plugin
manager and run by the engine, one protocol feature per test."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from graph import Executor, NodeRegistry, Progress, RecentRunsCache, RunRequest, parse_api_workflow
from plugins.comfy_v3 import V3Error, adapt_v3
from plugins.manager import PluginManager
from tests.conftest import run_prompt
from tests.support import testpack

ROOT = Path(__file__).resolve().parents[2]
PACKS = ROOT / "tests" / "support" / "packs"


@pytest.fixture(scope="module")
def loaded() -> tuple[NodeRegistry, PluginManager]:
    registry = NodeRegistry()
    registry.register_module(testpack)
    manager = PluginManager(registry, [PACKS], allow=["v3_testpack"])
    manager.load_all()
    return registry, manager


@pytest.fixture
def ex(loaded) -> Executor:
    return Executor(loaded[0], cache=RecentRunsCache(1))


def show(prompt: dict, *sources: str) -> dict:
    return {**prompt, **{f"show_{s}": {"class_type": "Show", "inputs": {"value": [s.split(":")[0],
                                                                                  int((s + ":0").split(":")[1])]}}
                         for s in sources}}


def shown(outcome, source: str) -> str:
    return outcome.outputs[f"show_{source}"]["text"][0]


def test_the_pack_loads_through_comfy_entrypoint_and_node_class_mappings(loaded):
    registry, manager = loaded
    report = manager.reports["v3_testpack"]
    assert report.status == "loaded", (report.error, report.traceback)
    assert report.protocol == "comfy_v1+comfy_v3" and report.node_errors == {}
    assert set(report.nodes) == {"V3MappedPipeline", "V3Numbers", "V3Describe", "V3Spec", "V3Strict", "V3Whoami",
                                 "V3Growing", "V3Mode", "V3PassSame", "V3TextList", "V3LazyPick", "V3ExpandSum",
                                 "V3SlowAsync", "V3Seen", "V3Fresh"}
    assert sys.modules["v3_testpack"].LOADED == ["on_load"]
    # importlib.import_module("folder_paths") inside a pack reaches the shim, as `import folder_paths` does
    assert sys.modules["v3_testpack.values"].folder_paths is sys.modules["compat.folder_paths"]
    assert registry.get("V3Numbers").source == "plugin:v3_testpack"


def test_widget_declarations_become_our_input_specs(loaded):
    info = loaded[0].object_info("V3Numbers")["V3Numbers"]
    req = info["input"]["required"]
    assert req["count"] == ["INT", {"default": 3, "min": 1, "max": 10, "step": 1, "display": "slider",
                                    "tooltip": "how many"}]
    assert req["scale"] == ["FLOAT", {"default": 0.5, "min": 0.0, "max": 2.0, "step": 0.05, "round": 0.01}]
    assert req["label"] == ["STRING", {"default": "x", "multiline": True, "placeholder": "label"}]
    assert req["loud"] == ["BOOLEAN", {"default": False, "label_on": "LOUD", "label_off": "quiet"}]
    assert req["shape"] == [["circle", "square"], {"default": "square"}]
    assert info["input"]["optional"]["seed"][1]["control_after_generate"] is True
    assert info["output"] == ["STRING", "MY_DATA", "FLOAT"] and info["output_name"] == ["text", "MY_DATA", "FLOAT"]
    assert info["display_name"] == "V3 Numbers" and info["category"] == "tests/v3"
    assert info["python_module"] == "custom_nodes.v3_testpack" and info["description"] == "widgets of every kind"
    sockets = loaded[0].object_info("V3Spec")["V3Spec"]["input"]["optional"]
    assert {k: v[0] for k, v in sockets.items()} == {
        "model": "MODEL", "clip": "CLIP", "vae": "VAE", "positive": "CONDITIONING", "latent": "LATENT",
        "image": "IMAGE", "mask": "MASK", "sigmas": "SIGMAS", "noise": "NOISE", "sampler": "SAMPLER",
        "guider": "GUIDER", "control": "CONTROL_NET", "upscaler": "UPSCALE_MODEL"}


def test_custom_and_multi_types_link_and_run_with_ui(ex):
    prompt = {"n": {"class_type": "V3Numbers", "inputs": {"count": 2, "scale": 1.5, "label": "ab", "loud": True,
                                                          "shape": "circle", "seed": 7}},
              "d": {"class_type": "V3Describe", "inputs": {"data": ["n", 1], "amount": ["n", 2]}},
              "i": {"class_type": "IntConst", "inputs": {"value": 4}},
              "d2": {"class_type": "V3Describe", "inputs": {"data": ["n", 1], "amount": ["i", 0]}}}
    outcome = run_prompt(ex, show(prompt, "n", "d"))
    assert shown(outcome, "n") == repr("ABAB:circle")
    assert outcome.outputs["d"] == {"text": ["[('scale', 1.5), ('seed', 7)]*3.0"]}  # ui.PreviewText
    assert outcome.outputs["d2"] == {"text": ["[('scale', 1.5), ('seed', 7)]*4"]}  # INT accepted by MultiType
    info = ex.registry.object_info("V3Describe")["V3Describe"]["input"]["required"]
    assert info["data"] == ["MY_DATA"] and info["amount"][0] == "FLOAT,INT" and info["amount"][1]["max"] == 5.0
    assert info["amount"][1]["widgetType"] == "FLOAT"
    wrong = ex.validate(parse_api_workflow({"t": {"class_type": "Text", "inputs": {"text": "x"}},
                                            "d": {"class_type": "V3Describe",
                                                  "inputs": {"data": ["t", 0], "amount": 1.0}}}))
    assert not wrong.ok and wrong.node_errors["d"].errors[0].input_name == "data"


def test_builtin_validation_and_validate_inputs(ex):
    def check(node: str, **inputs):
        return ex.validate(parse_api_workflow(show({"1": {"class_type": node, "inputs": inputs}}, "1")))

    too_big = check("V3Numbers", count=11, scale=0.5, label="x", loud=False, shape="square")
    assert too_big.node_errors["1"].errors[0].type == "value_bigger_than_max"
    bad_choice = check("V3Numbers", count=1, scale=0.5, label="x", loud=False, shape="hexagon")
    assert bad_choice.node_errors["1"].errors[0].type == "value_not_in_list"
    odd = check("V3Strict", value=3)
    issue = odd.node_errors["1"].errors[0]
    assert issue.type == "custom_validation_failed" and "must be even, got 3" in issue.message
    assert check("V3Strict", value=12).ok  # validate_inputs takes `value`, so max=10 is its call
    assert run_prompt(ex, show({"1": {"class_type": "V3Strict", "inputs": {"value": 12}}}, "1")).outputs[
        "show_1"] == {"text": ["12"]}


def test_hidden_inputs_reach_cls_hidden(ex):
    validation = ex.validate(parse_api_workflow({"me": {"class_type": "V3Whoami", "inputs": {}},
                                                 "show_me": {"class_type": "Show", "inputs": {"value": ["me", 0]}}}))
    outcome = ex.run(RunRequest(validation=validation, run_id="r", extra_data={"extra_pnginfo": {"w": 1}}))
    assert outcome.outputs["show_me"] == {"text": [repr("me:V3Whoami:['me', 'show_me']:{'w': 1}:None")]}
    hidden = ex.registry.object_info("V3Whoami")["V3Whoami"]["input"]["hidden"]
    assert hidden == {"unique_id": "UNIQUE_ID", "dynprompt": "DYNPROMPT", "prompt": "PROMPT",
                      "extra_pnginfo": "EXTRA_PNGINFO"}


def test_autogrow_inputs_arrive_as_one_dict(ex):
    info = ex.registry.object_info("V3Growing")["V3Growing"]["input"]
    assert list(info["required"]) == ["values.values0", "values.values1"]
    assert list(info["optional"]) == ["values.values2", "values.values3"]
    assert info["required"]["values.values0"][1]["forceInput"] is True
    prompt = {"a": {"class_type": "IntConst", "inputs": {"value": 1}},
              "b": {"class_type": "IntConst", "inputs": {"value": 2}},
              "g": {"class_type": "V3Growing", "inputs": {"values.values0": ["a", 0], "values.values1": ["b", 0],
                                                          "values.values3": ["a", 0]}}}
    assert shown(run_prompt(ex, show(prompt, "g")), "g") == repr("[('values0', 1), ('values1', 2), ('values3', 1)]")
    missing = ex.validate(parse_api_workflow(show({"a": prompt["a"], "g": {
        "class_type": "V3Growing", "inputs": {"values.values0": ["a", 0]}}}, "g")))
    assert not missing.ok and missing.node_errors["g"].errors[0].input_name == "values.values1"


def test_dynamic_combo_passes_the_chosen_options_inputs(ex):
    info = ex.registry.object_info("V3Mode")["V3Mode"]["input"]
    assert info["required"]["mode"][0] == ["add", "neg"]
    assert set(info["optional"]) == {"mode.a", "mode.b"}
    add = run_prompt(ex, show({"m": {"class_type": "V3Mode", "inputs": {"mode": "add", "mode.a": 5, "mode.b": 7}}},
                              "m"))
    assert shown(add, "m") == "12"
    neg = run_prompt(ex, show({"m": {"class_type": "V3Mode", "inputs": {"mode": "neg", "mode.a": 5, "mode.b": 7}}},
                              "m"))
    assert shown(neg, "m") == "-5"


def test_match_type_input_list_and_output_list(ex):
    info = ex.registry.object_info("V3PassSame")["V3PassSame"]
    assert info["input"]["required"]["value"][0] == "INT,STRING" and info["output"] == ["INT,STRING"]
    prompt = {"s": {"class_type": "V3Spec", "inputs": {}},
              "l": {"class_type": "V3TextList", "inputs": {"items": ["s", 0]}},
              "p": {"class_type": "V3PassSame", "inputs": {"value": ["l", 0]}}}
    assert shown(run_prompt(ex, show(prompt, "p")), "p") == repr("0+2")
    fl = ex.validate(parse_api_workflow({"f": {"class_type": "FloatConst", "inputs": {"value": 1.0}},
                                         "p": {"class_type": "V3PassSame", "inputs": {"value": ["f", 0]}},
                                         "o": {"class_type": "Show", "inputs": {"value": ["p", 0]}}}))
    assert not fl.ok and fl.node_errors["p"].errors[0].input_name == "value"


def test_lazy_inputs_follow_check_lazy_status(ex):
    prompt = {"ok": {"class_type": "IntConst", "inputs": {"value": 3}},
              "bad": {"class_type": "Fail", "inputs": {"value": ["ok", 0], "message": "must not run"}},
              "pick": {"class_type": "V3LazyPick", "inputs": {"first": True, "a": ["ok", 0], "b": ["bad", 0]}}}
    outcome = run_prompt(ex, show(prompt, "pick"))
    assert outcome.status == "success" and shown(outcome, "pick") == "3"
    failing = run_prompt(ex, show({**prompt, "pick": {**prompt["pick"], "inputs": {**prompt["pick"]["inputs"],
                                                                                  "first": False}}}, "pick"))
    assert failing.status == "error" and failing.failure.exception_message == "must not run"


def test_expand_async_execute_and_progress(ex):
    events = []
    outcome = run_prompt(ex, show({"x": {"class_type": "V3ExpandSum", "inputs": {"x": 5}},
                                   "a": {"class_type": "V3SlowAsync", "inputs": {"text": "abc"}}}, "x", "a"),
                         listeners=[events.append])
    assert shown(outcome, "x") == "15" and shown(outcome, "a") == repr("cba")
    assert any(isinstance(e, Progress) and e.node_id == "a" and (e.value, e.max) == (1, 2) for e in events)


def test_fingerprint_inputs_joins_the_cache_key(ex):
    calls = sys.modules["v3_testpack.flow"].CALLS
    calls.clear()

    def run(key: str, salt: int) -> str:
        return shown(run_prompt(ex, show({"s": {"class_type": "V3Seen", "inputs": {"key": key, "salt": salt}}}, "s")),
                     "s")

    assert run("a", 0) == "1"
    assert run("a", 0) == "1" and calls["Seen"] == 1  # same inputs and fingerprint: cached
    assert run("b", 0) == "2" and calls["Seen"] == 2  # the fingerprint changed


def test_not_idempotent_nodes_do_not_share_results(ex):
    calls = sys.modules["v3_testpack.flow"].CALLS
    calls.clear()
    outcome = run_prompt(ex, show({"f1": {"class_type": "V3Fresh", "inputs": {"x": 10}},
                                   "f2": {"class_type": "V3Fresh", "inputs": {"x": 10}}}, "f1", "f2"))
    assert calls["Fresh"] == 2 and {shown(outcome, "f1"), shown(outcome, "f2")} == {"11", "12"}


def _pack(tmp_path: Path, body: str) -> PluginManager:
    folder = tmp_path / "custom_nodes" / "badv3"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(textwrap.dedent(body))
    registry = NodeRegistry()
    registry.register_module(testpack)
    manager = PluginManager(registry, [folder.parent])
    manager.load_all()
    return manager


def test_bad_v3_nodes_are_reported_per_node_and_good_ones_load(tmp_path):
    manager = _pack(tmp_path, '''
        from comfy_api.latest import ComfyExtension, io

        class Good(io.ComfyNode):
            @classmethod
            def define_schema(cls):
                return io.Schema(node_id="BadV3Good", inputs=[io.Int.Input("x")], outputs=[io.Int.Output()])
            @classmethod
            def execute(cls, x):
                return io.NodeOutput(x, expand={"a": {"class_type": "IntConst", "inputs": {"value": 1}}})

        class Dupes(Good):
            @classmethod
            def define_schema(cls):
                return io.Schema(node_id="BadV3Dupes", inputs=[io.Int.Input("x"), io.Float.Input("x")])

        class Raises(Good):
            @classmethod
            def define_schema(cls):
                raise RuntimeError("no schema today")

        class Slot(Good):
            @classmethod
            def define_schema(cls):
                return io.Schema(node_id="BadV3Slot", inputs=[io.Custom("COMFY_DYNAMICSLOT_V3").Input("s")])

        class Ext(ComfyExtension):
            async def get_node_list(self):
                return [Good, Dupes, Raises, Slot, object]

        async def comfy_entrypoint():
            return Ext()
    ''')
    report = manager.reports["badv3"]
    assert report.status == "loaded" and report.nodes == ["BadV3Good"]
    assert "Input ids must be unique" in report.node_errors["Dupes"]
    assert "define_schema() raised RuntimeError: no schema today" in report.node_errors["Raises"]
    assert "DynamicSlot" in report.node_errors["Slot"] and "not a V3 node class" in report.node_errors["object"]
    ex = Executor(manager.registry, cache=RecentRunsCache(1))
    outcome = run_prompt(ex, {"g": {"class_type": "BadV3Good", "inputs": {"x": 1}},
                              "o": {"class_type": "Show", "inputs": {"value": ["g", 0]}}})
    assert outcome.status == "error" and "enable_expand" in outcome.failure.exception_message


def test_a_failing_entrypoint_fails_the_pack_with_its_reason(tmp_path):
    manager = _pack(tmp_path, '''
        async def comfy_entrypoint():
            raise ValueError("cannot start")
    ''')
    report = manager.reports["badv3"]
    assert report.status == "failed" and report.error == "comfy_entrypoint() failed: ValueError: cannot start"


def test_adapt_v3_refuses_classes_that_are_not_v3_nodes():
    with pytest.raises(V3Error, match="not a V3 node class"):
        adapt_v3(type("Plain", (), {}))


def test_the_example_pack_serves_its_v3_nodes_next_to_its_own():
    registry = NodeRegistry()
    registry.register_module(testpack)
    manager = PluginManager(registry, [ROOT / "custom_nodes"], allow=["example_pack"])
    manager.load_all()
    report = manager.reports["example_pack"]
    assert report.status == "loaded" and report.protocol == "sumie+comfy_v3", report.error
    assert {"ExampleWordCount", "ExampleJoinTexts", "ExampleRepeatText"} <= set(report.nodes)
    ex = Executor(registry, cache=RecentRunsCache(1))
    prompt = {"w": {"class_type": "ExampleWordCount", "inputs": {"text": "a big red fox", "min_length": 3}},
              "r": {"class_type": "ExampleRepeatText", "inputs": {"text": "x", "times": 2, "separator": ""}},
              "j": {"class_type": "ExampleJoinTexts", "inputs": {"texts.text0": ["r", 0], "texts.text1": ["w", 1],
                                                                 "separator": " | "}}}
    outcome = run_prompt(ex, show(prompt, "w", "j"))
    assert shown(outcome, "w") == "3" and outcome.outputs["w"] == {"text": ["3 word(s) of 3+ letters"]}
    assert shown(outcome, "j") == repr("xx | 3 word(s) of 3+ letters")
    bad = ex.validate(parse_api_workflow(show({**prompt, "j": {**prompt["j"], "inputs": {
        **prompt["j"]["inputs"], "separator": "a\nb"}}}, "j")))
    assert bad.node_errors["j"].errors[0].message.endswith("the separator must be on one line")


def test_ui_preview_image_writes_a_png_with_the_prompt(loaded, tmp_path):
    from PIL import Image

    from graph import Folders

    folders = Folders.under(tmp_path)
    ex = Executor(loaded[0], cache=RecentRunsCache(1), folders=folders)
    outcome = run_prompt(ex, {"p": {"class_type": "V3MappedPipeline", "inputs": {"gray": 0.25}}})
    assert outcome.status == "success", outcome.failure
    (ref,) = outcome.outputs["p"]["images"]
    assert ref["type"] == "temp" and ref["filename"].startswith("ComfyUI_temp_") and outcome.outputs["p"][
        "animated"] == [False]
    with Image.open(folders.temp / ref["subfolder"] / ref["filename"]) as png:
        assert png.size == (4, 4) and png.getpixel((0, 0)) == (63, 63, 63)  # 0.25 * 255 = 63.75, truncated
        assert '"class_type": "V3MappedPipeline"' in png.text["prompt"]
