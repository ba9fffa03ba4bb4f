"""Validation: every bad input of bad-inputs.md "Schema and graph" and "Numbers" gets a precise error."""

from __future__ import annotations

import pytest

from graph import Limits, parse_api_workflow, validate_workflow


def check(registry, prompt, **kw):
    return validate_workflow(parse_api_workflow(prompt), registry, **kw)


def errors_of(result, node_id):
    return [(e.type, e.input_name) for e in result.node_errors[node_id].errors]


def test_a_valid_prompt_passes_with_coerced_values(registry, g):
    a = g.node("IntConst", value="42")
    f = g.node("FloatConst", value=2)
    g.node("Show", value=g.node("Add", a=a, b=1.0))
    g.node("Show", value=f)
    result = check(registry, g.build())
    assert result.ok and not result.node_errors
    nodes = result.workflow.nodes
    assert nodes["1"].inputs["value"] == 42 and type(nodes["2"].inputs["value"]) is float
    assert result.order.index("1") < result.order.index("3") < result.order.index("4")


def test_unknown_node_type_rejects_the_prompt_and_names_the_failed_plugin(registry, g):
    registry.record_failed_pack("ComfyUI-Foo", "ModuleNotFoundError: No module named 'cv2'", ["FooNode"])
    g.node("Show", value=g.node("FooNode"))
    result = check(registry, g.build())
    assert not result.ok and result.error.type == "invalid_prompt"
    issue = result.node_errors["1"].errors[0]
    assert issue.type == "missing_node_type" and "FooNode" in issue.message
    assert "ComfyUI-Foo" in issue.details and "cv2" in issue.details


def test_malformed_nodes_reject_the_prompt(registry):
    result = check(registry, {"1": [], "2": {"inputs": {}}, "3": {"class_type": "Show", "inputs": {"value": 1}}})
    assert not result.ok
    assert result.node_errors["1"].errors[0].type == "invalid_node"
    assert result.node_errors["2"].errors[0].type == "missing_node_type"


def test_missing_required_input_and_unknown_extra_input(registry, g):
    g.node("Show", value=g.node("Add", a=1, typo=3))
    result = check(registry, g.build())
    assert not result.ok and result.error.type == "prompt_outputs_failed_validation"
    assert errors_of(result, "1") == [("required_input_missing", "b")]
    assert result.node_errors["1"].dependent_outputs == ["2"]
    assert [(nid, w.type, w.input_name) for nid, w in result.warnings] == [("1", "unknown_input", "typo")]


@pytest.mark.parametrize("value, kind", [
    ("abc", "invalid_input_type"), ("1e3", "invalid_input_type"), (1.5, "invalid_input_type"),
    (True, "invalid_input_type"), ([1], "malformed_link"), ({"__value__": [1]}, "invalid_input_type"),
    (2**200, "value_bigger_than_max"), (-(2**200), "value_smaller_than_min"), (10**6 + 1, "value_bigger_than_max"),
])
def test_bad_int_literals(registry, g, value, kind):
    g.node("Show", value=g.node("IntConst", value=value))
    result = check(registry, g.build())
    assert errors_of(result, "1") == [(kind, "value")]
    assert result.node_errors["1"].errors[0].to_json()["extra_info"]["input_name"] == "value"


@pytest.mark.parametrize("value, kind", [
    (float("nan"), "value_not_finite"), (float("inf"), "value_not_finite"), (float("-inf"), "value_not_finite"),
    ("nan", "invalid_input_type"), (11, "value_bigger_than_max"), (-10.5, "value_smaller_than_min"),
    (10**400, "value_bigger_than_max"), ([], "malformed_link"), (None, "invalid_input_type"),
])
def test_bad_float_literals(registry, g, value, kind):
    g.node("Show", value=g.node("FloatConst", value=value))
    assert errors_of(check(registry, g.build()), "1") == [(kind, "value")]


def test_string_inputs_reject_lists_giant_text_and_lone_surrogates(registry, g):
    g.node("Show", value=g.node("Text", text={"__value__": ["a"]}))
    g.node("Show", value=g.node("Text", text="x" * 2_000_001))
    g.node("Show", value=g.node("Text", text="bad \ud800 text"))
    g.node("Show", value=g.node("Text", text=12))
    result = check(registry, g.build(), limits=Limits(max_string_length=2_000_000))
    assert errors_of(result, "1") == [("invalid_input_type", "text")]
    assert errors_of(result, "3") == [("value_too_long", "text")]
    assert errors_of(result, "5") == [("invalid_string", "text")]
    assert "7" not in result.node_errors and result.workflow.nodes["7"].inputs["text"] == "12"
    assert result.ok and result.outputs == ["8"]  # the valid output still runs (documented policy)


def test_combo_value_not_in_list_suggests_close_matches(registry):
    from graph import ComboInput, Node, NodeSchema, OutputSpec

    class Pick(Node):
        SCHEMA = NodeSchema(node_type="Pick", inputs=[ComboInput(name="sampler_name",
                                                                 choices=["euler", "euler_ancestral", "dpmpp_2m"])],
                            outputs=[OutputSpec(type="STRING")])

        def execute(self, ctx, *, sampler_name):
            return (sampler_name,)

    registry.register(Pick)
    result = check(registry, {"1": {"class_type": "Pick", "inputs": {"sampler_name": "eulr"}},
                              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}})
    issue = result.node_errors["1"].errors[0]
    assert issue.type == "value_not_in_list" and "'euler'" in issue.message and "Did you mean" in issue.message
    assert issue.to_json()["extra_info"]["received_value"] == "eulr"


@pytest.mark.parametrize("link, kind", [
    (["99", 0], "link_to_missing_node"), (["1", 1], "link_to_missing_output"), (["1", 7], "link_to_missing_output"),
    (["1"], "malformed_link"), (["1", 0, 1], "malformed_link"), ([1, "0"], "malformed_link"),
    (["1", -1], "malformed_link"),
])
def test_bad_links(registry, link, kind):
    prompt = {"1": {"class_type": "IntConst", "inputs": {"value": 1}},
              "2": {"class_type": "Add", "inputs": {"a": link, "b": 1}},
              "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    result = check(registry, prompt)
    assert errors_of(result, "2") == [(kind, "a")]


def test_type_mismatched_link(registry):
    prompt = {"1": {"class_type": "Text", "inputs": {"text": "hi"}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
              "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    issue = check(registry, prompt).node_errors["2"].errors[0]
    assert issue.type == "return_type_mismatch" and "STRING" in issue.message and "INT" in issue.message


def test_constant_given_to_a_socket_input(registry):
    from graph import InputSpec, Node, NodeSchema

    class TakesModel(Node):
        SCHEMA = NodeSchema(node_type="TakesModel", output_node=True, inputs=[InputSpec(name="model", type="MODEL")])

        def execute(self, ctx, *, model):
            return ()

    registry.register(TakesModel)
    issue = check(registry, {"1": {"class_type": "TakesModel", "inputs": {"model": "x.safetensors"}}}) \
        .node_errors["1"].errors[0]
    assert issue.type == "invalid_input_type" and "expects a link" in issue.message


def test_self_loop_and_long_cycle_list_their_members(registry):
    prompt = {"1": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
              "9": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    result = check(registry, prompt)
    assert errors_of(result, "1") == [("dependency_cycle", None)]
    n = 50_000
    prompt = {str(i): {"class_type": "Add", "inputs": {"a": [str((i + 1) % n), 0], "b": 1}} for i in range(n)}
    prompt["out"] = {"class_type": "Show", "inputs": {"value": ["0", 0]}}
    result = check(registry, prompt)
    assert not result.ok
    issue = result.node_errors["0"].errors[0]
    assert issue.type == "dependency_cycle" and issue.extra["cycle"][:3] == ["0", "1", "2"]
    assert f"{n} node(s)" in issue.details


def test_cycle_among_valid_nodes_only_fails_its_outputs(registry, g):
    good = g.node("Show", value=g.node("IntConst", value=1))
    loop = {"10": {"class_type": "Add", "inputs": {"a": ["11", 0], "b": 1}},
            "11": {"class_type": "Add", "inputs": {"a": ["10", 0], "b": 1}},
            "12": {"class_type": "Show", "inputs": {"value": ["11", 0]}}}
    result = check(registry, {**g.build(), **loop})
    assert result.ok and result.outputs == [good.id]
    assert set(result.node_errors) == {"10", "11"}
    assert result.node_errors["10"].dependent_outputs == ["12"]


def test_no_outputs(registry, g):
    g.node("IntConst", value=1)
    result = check(registry, g.build())
    assert not result.ok and result.error.type == "prompt_outputs_failed_validation" or \
        result.error.type == "prompt_no_outputs"
    assert result.error.type == "prompt_no_outputs"


def test_partial_execution_targets_narrow_what_runs(registry, g):
    a = g.node("Show", value=g.node("IntConst", value=1))
    g.node("Show", value=g.node("IntConst", value="bad"))
    result = check(registry, g.build(), targets=[a.id])
    assert result.ok and result.outputs == [a.id] and not result.node_errors
    assert set(result.order) == {"1", "2"}
    assert check(registry, g.build(), targets=["nope"]).error.type == "invalid_target"


def test_nodes_that_feed_no_output_are_not_validated(registry, g):
    g.node("Show", value=g.node("IntConst", value=1))
    g.node("Add", a="junk")
    assert check(registry, g.build()).ok


def test_custom_validation(registry, g):
    g.node("Show", value=g.node("EvenOnly", value=3))
    issue = check(registry, g.build()).node_errors["1"].errors[0]
    assert issue.type == "custom_validation_failed" and "must be even" in issue.message


def test_node_count_cap(registry):
    prompt = {str(i): {"class_type": "IntConst", "inputs": {"value": 1}} for i in range(11)}
    result = check(registry, prompt, limits=Limits(max_nodes=10))
    assert result.error.type == "too_many_nodes" and "limit is 10" in result.error.message


def test_error_body_has_the_comfy_shape(registry, g):
    g.node("Show", value=g.node("IntConst", value="abc"))
    body = check(registry, g.build()).to_json()
    assert set(body) == {"error", "node_errors"}
    assert set(body["error"]) == {"type", "message", "details", "extra_info"}
    node = body["node_errors"]["1"]
    assert set(node) == {"errors", "dependent_outputs", "class_type"} and node["class_type"] == "IntConst"
    assert node["errors"][0]["extra_info"] == {"input_name": "value", "received_value": "abc"}


def test_a_100000_node_chain_validates_without_recursion(registry):
    """Any depth works (no recursion limit); the time it takes is measured by the engine benchmark."""
    n = 99_999  # 100,000 nodes with the output: the default cap
    prompt = {"0": {"class_type": "IntConst", "inputs": {"value": 0}}}
    for i in range(1, n):
        prompt[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": 1}}
    prompt["out"] = {"class_type": "Show", "inputs": {"value": [str(n - 1), 0]}}
    result = validate_workflow(parse_api_workflow(prompt), registry)
    assert result.ok and len(result.order) == 100_000 and result.order[0] == "0" and result.order[-1] == "out"


def test_file_combos_list_what_is_in_the_configured_folder(tmp_path):
    from graph import ComboInput, Folders, Node, NodeRegistry, NodeSchema

    def checkpoints(folders):
        return sorted(p.name for p in (folders.models / "checkpoints").glob("*.safetensors"))

    class Loader(Node):
        SCHEMA = NodeSchema(node_type="Loader", output_node=True,
                            inputs=[ComboInput(name="ckpt_name", choices=checkpoints)])

        def execute(self, ctx, *, ckpt_name):
            return ()

    folders = Folders.under(tmp_path)
    (folders.models / "checkpoints").mkdir(parents=True)
    (folders.models / "checkpoints" / "a.safetensors").write_bytes(b"")
    registry = NodeRegistry(folders=folders)
    registry.register(Loader)
    assert registry.object_info("Loader")["Loader"]["input"]["required"]["ckpt_name"] == [["a.safetensors"]]
    prompt = {"1": {"class_type": "Loader", "inputs": {"ckpt_name": "b.safetensors"}}}
    assert check(registry, prompt).node_errors["1"].errors[0].type == "value_not_in_list"
    (folders.models / "checkpoints" / "b.safetensors").write_bytes(b"")
    assert check(registry, prompt).ok
