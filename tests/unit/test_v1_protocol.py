"""ComfyUI's V1 node protocol through plugins.comfy_v1.adapt_v1 and the engine: one feature per test."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from graph import Executor, NodeRegistry, RecentRunsCache, parse_api_workflow
from plugins.comfy_v1 import V1Error, adapt_v1, input_spec
from tests.conftest import run_prompt
from tests.support import testpack

CALLS: Counter = Counter()


def make(**mapping: type) -> Executor:
    registry = NodeRegistry()
    registry.register_module(testpack)
    for name, cls in mapping.items():
        registry.register(adapt_v1(name, cls, pack="tpack"), source="plugin:tpack")
    CALLS.clear()
    return Executor(registry, cache=RecentRunsCache(1))


def v1(inputs: dict, returns: tuple = ("INT",), fn=None, **attrs) -> type:
    """A V1 class: INPUT_TYPES returns `inputs`; FUNCTION is `fn` (default: count and echo the kwargs)."""

    def run(self, **kwargs):
        CALLS["run"] += 1
        return (kwargs,) if returns else {"ui": {"text": [repr(sorted(kwargs))]}}

    body = {"INPUT_TYPES": classmethod(lambda cls: inputs), "RETURN_TYPES": returns, "FUNCTION": "run",
            "run": fn or run, **attrs}
    return type("V1Test", (), body)


def show(source: str, prompt: dict, out: str = "out") -> dict:
    return {**prompt, out: {"class_type": "Show", "inputs": {"value": [source, 0]}}}


def test_widget_and_socket_types_map_to_our_input_specs():
    cls = adapt_v1("Types", v1({
        "required": {
            "count": ("INT", {"default": 500, "min": 0, "max": 100, "step": 8, "display": "slider"}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
            "ratio": ("FLOAT", {"default": 0.5, "min": -float("inf"), "max": 1.0, "step": 0.01, "round": 0.001}),
            "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "what to say"}),
            "flag": ("BOOLEAN", {"default": True, "label_on": "yes"}),
            "choice": (["a", "b"], {"default": "b"}),
            "new_combo": ("COMBO", {"options": ["x", "y"]}),
            "image": ("IMAGE",),
            "anything": ("*", {}),
            "custom": ("MY_TYPE", {"image_upload": True, "weird": object()}),
            "as_socket": ("INT", {"forceInput": True}),
        },
        "optional": {"lazy one": ("LATENT", {"lazy": True})},
        "hidden": {"prompt": "PROMPT", "extra": "EXTRA_PNGINFO", "uid": "UNIQUE_ID", "dyn": "DYNPROMPT",
                   "key": "API_KEY_COMFY_ORG"},
    }), pack="tpack")
    info = cls.SCHEMA.to_object_info()
    req = info["input"]["required"]
    assert req["count"] == ["INT", {"default": 100, "min": 0, "max": 100, "step": 8, "display": "slider"}]
    assert req["seed"][1]["max"] == 2**64 - 1 and req["seed"][1]["control_after_generate"] is True
    assert req["ratio"][1]["min"] == -1e18 and req["ratio"][1]["round"] == 0.001
    assert req["text"] == ["STRING", {"default": "", "multiline": True, "dynamicPrompts": True,
                                      "tooltip": "what to say"}]
    assert req["flag"] == ["BOOLEAN", {"default": True, "label_on": "yes"}]
    assert req["choice"] == [["a", "b"], {"default": "b"}] and req["new_combo"] == [["x", "y"]]
    assert req["image"] == ["IMAGE"] and req["anything"] == ["*"]
    assert req["custom"] == ["MY_TYPE", {"image_upload": True}]  # options that are not JSON are dropped
    assert req["as_socket"][1]["forceInput"] is True
    assert info["input"]["optional"]["lazy one"] == ["LATENT", {"lazy": True}]  # any name, as in ComfyUI
    assert info["input"]["hidden"] == {"prompt": "PROMPT", "extra": "EXTRA_PNGINFO", "uid": "UNIQUE_ID",
                                       "dyn": "DYNPROMPT"}
    assert info["python_module"] == "custom_nodes.tpack"


def test_bad_declarations_are_refused_with_the_reason():
    with pytest.raises(V1Error, match="INPUT_TYPES"):
        adapt_v1("X", type("X", (), {}))
    with pytest.raises(V1Error, match="FUNCTION"):
        adapt_v1("X", type("X", (), {"INPUT_TYPES": classmethod(lambda c: {}), "FUNCTION": "nope"}))
    with pytest.raises(V1Error, match="RETURN_TYPES"):
        adapt_v1("X", v1({"required": {}}, returns="INT"))
    with pytest.raises(V1Error, match="raised"):
        adapt_v1("X", type("X", (), {"INPUT_TYPES": classmethod(lambda c: 1 / 0), "FUNCTION": "f", "f": len}))
    with pytest.raises(V1Error, match="expected"):
        input_spec("x", 5)


def test_outputs_hidden_inputs_and_names():
    def run(self, a, prompt=None, extra=None, uid=None, dyn=None, key="unset"):
        node = dyn.get_node(uid)
        return (a + 1, f"{uid}:{sorted(prompt)}:{extra}:{node['class_type']}:{key}")

    ex = make(Hidden=v1({"required": {"a": ("INT", {})},
                         "hidden": {"prompt": "PROMPT", "extra": "EXTRA_PNGINFO", "uid": "UNIQUE_ID",
                                    "dyn": "DYNPROMPT", "key": "API_KEY_COMFY_ORG"}},
                        returns=("INT", "STRING"), fn=run, RETURN_NAMES=("plus", "about")))
    info = ex.registry.object_info("Hidden")["Hidden"]
    assert info["output"] == ["INT", "STRING"] and info["output_name"] == ["plus", "about"]
    prompt = {"h": {"class_type": "Hidden", "inputs": {"a": 1}},
              "o1": {"class_type": "Show", "inputs": {"value": ["h", 0]}},
              "o2": {"class_type": "Show", "inputs": {"value": ["h", 1]}}}
    validation = ex.validate(parse_api_workflow(prompt))
    from graph import RunRequest

    outcome = ex.run(RunRequest(validation=validation, run_id="r", extra_data={"extra_pnginfo": {"w": 1}}))
    assert outcome.outputs["o1"] == {"text": ["2"]}
    assert outcome.outputs["o2"] == {"text": [repr("h:['h', 'o1', 'o2']:{'w': 1}:Hidden:None")]}


def test_input_is_list_and_output_is_list():
    def split(self, text):
        return (text.split(","),)

    def join(self, parts, sep):
        assert isinstance(sep, list)  # INPUT_IS_LIST: every input arrives as a list
        return (sep[0].join(parts),)

    ex = make(Split=v1({"required": {"text": ("STRING", {})}}, returns=("STRING",), fn=split,
                       OUTPUT_IS_LIST=(True,)),
              Upper=v1({"required": {"s": ("STRING", {"forceInput": True})}}, returns=("STRING",),
                       fn=lambda self, s: (s.upper(),)),
              Join=v1({"required": {"parts": ("STRING", {"forceInput": True}), "sep": ("STRING", {})}},
                      returns=("STRING",), fn=join, INPUT_IS_LIST=True))
    assert ex.registry.object_info("Split")["Split"]["output_is_list"] == [True]
    prompt = {"1": {"class_type": "Split", "inputs": {"text": "a,b,c"}},
              "2": {"class_type": "Upper", "inputs": {"s": ["1", 0]}},  # mapped: called once per element
              "3": {"class_type": "Join", "inputs": {"parts": ["2", 0], "sep": "-"}}}
    assert run_prompt(ex, show("3", prompt)).outputs["out"] == {"text": ["'A-B-C'"]}


def test_is_changed_joins_the_cache_key_and_nan_always_reruns():
    state = {"version": 1}

    def changed(cls, a):
        return state["version"] if a >= 0 else float("nan")

    ex = make(Watch=v1({"required": {"a": ("INT", {"min": -5})}}, IS_CHANGED=classmethod(changed),
                       fn=lambda self, a: (CALLS.update(["watch"]) or a,)))
    prompt = show("1", {"1": {"class_type": "Watch", "inputs": {"a": 1}}})
    for _ in range(2):
        run_prompt(ex, prompt)
    assert CALLS["watch"] == 1  # same IS_CHANGED value: cached
    state["version"] = 2
    run_prompt(ex, prompt)
    assert CALLS["watch"] == 2
    nan_prompt = show("1", {"1": {"class_type": "Watch", "inputs": {"a": -1}}})
    for _ in range(2):
        run_prompt(ex, nan_prompt)
    assert CALLS["watch"] == 4


def test_is_changed_as_a_plain_method_works_too():
    class Plain:
        INPUT_TYPES = classmethod(lambda cls: {"required": {"a": ("INT", {})}})
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        def IS_CHANGED(self, a):  # noqa: N802 - the protocol's name
            return "same"

        def run(self, a):
            CALLS["plain"] += 1
            return (a,)

    ex = make(Plain=Plain)
    prompt = show("1", {"1": {"class_type": "Plain", "inputs": {"a": 1}}})
    run_prompt(ex, prompt)
    run_prompt(ex, prompt)
    assert CALLS["plain"] == 1


def test_validate_inputs_rejects_and_takes_over_the_checks_of_its_inputs():
    def validate(cls, choice, count):
        return True if choice != "forbidden" else "forbidden is not allowed here"

    ex = make(Picky=v1({"required": {"choice": (["a", "b"],), "count": ("INT", {"max": 3}),
                                     "other": (["x"],)}}, returns=("STRING",),
                       fn=lambda self, choice, count, other: (f"{choice}{count}{other}",),
                       VALIDATE_INPUTS=classmethod(validate)))

    def check(**inputs):
        return ex.validate(parse_api_workflow(show("1", {"1": {"class_type": "Picky", "inputs": inputs}})))

    ok = check(choice="not-in-list", count=99, other="x")  # VALIDATE_INPUTS takes choice and count
    assert ok.ok, ok.messages()
    assert run_prompt(ex, show("1", {"1": {"class_type": "Picky", "inputs": {"choice": "z", "count": 7,
                                                                             "other": "x"}}})).outputs["out"] == {
        "text": ["'z7x'"]}
    bad = check(choice="forbidden", count=1, other="x")
    issue = bad.node_errors["1"].errors[0]
    assert not bad.ok and issue.type == "custom_validation_failed" and "forbidden" in issue.message
    still_checked = check(choice="a", count=1, other="nope")
    assert still_checked.node_errors["1"].errors[0].type == "value_not_in_list"


def test_lazy_inputs_run_only_what_check_lazy_status_asks_for():
    class Switch:
        INPUT_TYPES = classmethod(lambda cls: {"required": {"pick": ("BOOLEAN", {}),
                                                            "yes": ("INT", {"lazy": True}),
                                                            "no": ("INT", {"lazy": True})}})
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        def check_lazy_status(self, pick, yes=None, no=None):
            return ["yes"] if pick else ["no"]

        def run(self, pick, yes=None, no=None):
            return (yes if pick else no,)

    ex = make(V1Switch=Switch)
    calls = Counter()
    ex.services["calls"] = calls
    prompt = {"y": {"class_type": "IntConst", "inputs": {"value": 1}},
              "n": {"class_type": "Sleep", "inputs": {"value": 2, "seconds": 0}},
              "s": {"class_type": "V1Switch", "inputs": {"pick": True, "yes": ["y", 0], "no": ["n", 0]}}}
    outcome = run_prompt(ex, show("s", prompt))
    assert outcome.outputs["out"] == {"text": ["1"]} and "n" not in outcome.executed
    assert ex.registry.object_info("V1Switch")["V1Switch"]["input"]["required"]["yes"][1]["lazy"] is True


def test_ui_results_and_output_nodes():
    ex = make(Note=v1({"required": {"value": ("*",)}}, returns=(), OUTPUT_NODE=True,
                      fn=lambda self, value: {"ui": {"text": [f"got {value}"]}, "result": ()}))
    assert ex.registry.object_info("Note")["Note"]["output_node"] is True
    prompt = {"1": {"class_type": "IntConst", "inputs": {"value": 3}},
              "2": {"class_type": "Note", "inputs": {"value": ["1", 0]}}}
    assert run_prompt(ex, prompt).outputs["2"] == {"text": ["got 3"]}


def test_node_expansion_returns_a_subgraph():
    def expand(self, a):
        graph = {"x": {"class_type": "IntConst", "inputs": {"value": a}},
                 "y": {"class_type": "Add", "inputs": {"a": ["x", 0], "b": 100}}}
        return {"result": (["y", 0],), "expand": graph}

    ex = make(Expand=v1({"required": {"a": ("INT", {})}}, fn=expand))
    assert run_prompt(ex, show("1", {"1": {"class_type": "Expand", "inputs": {"a": 5}}})).outputs["out"] == {
        "text": ["105"]}


def test_async_node_functions_are_awaited():
    async def run(self, a):
        await asyncio.sleep(0)
        return (a * 2,)

    ex = make(Async=v1({"required": {"a": ("INT", {})}}, fn=run))
    for _ in range(2):  # the loop kept for plugin coroutines is reused
        outcome = run_prompt(ex, show("1", {"1": {"class_type": "Async", "inputs": {"a": 21}}}), run_id="x")
        assert outcome.outputs["out"] == {"text": ["42"]}
        ex.cache.clear()


def test_a_bad_return_value_is_a_node_error_naming_the_node():
    ex = make(Bad=v1({"required": {"a": ("INT", {})}}, fn=lambda self, a: a))
    outcome = run_prompt(ex, show("1", {"1": {"class_type": "Bad", "inputs": {"a": 1}}}))
    assert outcome.status == "error" and "tpack: Bad.run() returned int" in outcome.failure.exception_message


def test_combo_lists_are_read_again_from_input_types(monkeypatch):
    files = ["a.safetensors"]
    ex = make()
    cls = adapt_v1("Loader", type("Loader", (), {
        "INPUT_TYPES": classmethod(lambda c: {"required": {"name": (list(files),)}}),
        "RETURN_TYPES": ("STRING",), "FUNCTION": "run", "run": lambda self, name: (name,)}))
    ex.registry.register(cls, source="plugin:tpack")
    import plugins.comfy_v1 as v1_module

    monkeypatch.setattr(v1_module, "LIVE_CHOICES_SECONDS", 0.0)
    assert ex.registry.object_info("Loader")["Loader"]["input"]["required"]["name"] == [["a.safetensors"]]
    files.append("b.safetensors")
    time.sleep(0.001)
    assert ex.registry.object_info("Loader")["Loader"]["input"]["required"]["name"] == [["a.safetensors",
                                                                                         "b.safetensors"]]
    ok = ex.validate(parse_api_workflow(show("1", {"1": {"class_type": "Loader",
                                                         "inputs": {"name": "b.safetensors"}}})))
    assert ok.ok, ok.messages()


def test_inputs_named_like_the_adapters_own_parameters():
    def run(this, **kwargs):  # a V1 method may well take inputs called ctx or self
        return (f"{kwargs['ctx']}{kwargs['self']}",)

    ex = make(Names=v1({"required": {"ctx": ("STRING", {}), "self": ("STRING", {})}}, returns=("STRING",), fn=run,
                       IS_CHANGED=classmethod(lambda cls, **kw: "x")))
    prompt = show("1", {"1": {"class_type": "Names", "inputs": {"ctx": "a", "self": "b"}}})
    assert run_prompt(ex, prompt).outputs["out"] == {"text": ["'ab'"]}
