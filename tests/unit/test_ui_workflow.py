"""Editor-format workflows to API prompts: one hand-written fixture per conversion rule."""

from __future__ import annotations

import pytest

import nodes.primitives
import nodes.utility
from graph import parse_api_workflow
from graph.ui_workflow import convert_ui_workflow, is_ui_workflow
from tests.conftest import run_prompt


@pytest.fixture
def reg(registry):
    registry.register_module(nodes.primitives)
    registry.register_module(nodes.utility)
    return registry


def node(id, type, *, inputs=(), outputs=(), widgets=None, mode=0, title=None):
    n = {"id": id, "type": type, "pos": [0, 0], "size": [100, 50], "flags": {}, "order": 0, "mode": mode,
         "inputs": [dict(i) for i in inputs], "outputs": [dict(o) for o in outputs], "properties": {}}
    if widgets is not None:
        n["widgets_values"] = widgets
    if title:
        n["title"] = title
    return n


def sock(name, type, link=None, widget=False):
    s = {"name": name, "type": type, "link": link}
    if widget:
        s["widget"] = {"name": name}
    return s


def out(name, type, links=()):
    return {"name": name, "type": type, "links": list(links), "slot_index": 0}


def ui(nodes_, links, **extra):
    return {"last_node_id": 99, "last_link_id": 99, "nodes": nodes_, "links": links, "groups": [], "config": {},
            "extra": {}, "version": 0.4, **extra}


def test_widgets_values_map_through_the_schema_skipping_the_seed_control(reg):
    wf = ui([node(1, "PrimitiveInt", widgets=[42, "randomize"], outputs=[out("INT", "INT", [1])]),
             node(2, "Add", inputs=[sock("a", "INT", 1, widget=True)], widgets=[0, 5], outputs=[out("sum", "INT")],
                  title="My add"),
             node(3, "Show", inputs=[sock("value", "*", 2)])],
            [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"]])
    assert is_ui_workflow(wf)
    conv = convert_ui_workflow(wf, reg)
    assert conv.ok and conv.prompt["1"]["inputs"] == {"value": 42}
    assert conv.prompt["2"] == {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 5}, "_meta": {"title": "My add"}}
    assert conv.prompt["3"]["inputs"] == {"value": ["2", 0]}


def test_older_files_saved_the_seed_control_as_a_boolean(reg):
    from graph import BooleanInput, IntInput, Node, NodeSchema, OutputSpec

    class Seeded(Node):
        SCHEMA = NodeSchema(node_type="Seeded", outputs=[OutputSpec(type="INT")],
                            inputs=[IntInput(name="seed", control_after_generate=True), IntInput(name="steps"),
                                    IntInput(name="noise_seed", control_after_generate=True),
                                    BooleanInput(name="flag")])

        def execute(self, ctx, **kw):
            return (0,)

    reg.register(Seeded)
    conv = convert_ui_workflow(ui([node(1, "Seeded", widgets=[42, True, 20, 7, True])], []), reg)
    assert conv.prompt["1"]["inputs"] == {"seed": 42, "steps": 20, "noise_seed": 7, "flag": True}


def test_widgets_a_file_does_not_store_get_their_defaults(reg):
    conv = convert_ui_workflow(ui([node(1, "Concat", widgets=["x"]), node(2, "Add")], []), reg)
    assert conv.prompt["1"]["inputs"] == {"a": "x", "b": ""} and conv.prompt["2"]["inputs"] == {"a": 0, "b": 0}


def test_reroute_chains_are_followed(reg):
    wf = ui([node(1, "IntConst", widgets=[7], outputs=[out("INT", "INT", [1])]),
             node(2, "Reroute", inputs=[sock("", "*", 1)], outputs=[out("", "INT", [2])]),
             node(3, "Reroute", inputs=[sock("", "*", 2)], outputs=[out("", "INT", [3])]),
             node(4, "Show", inputs=[sock("value", "*", 3)])],
            [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "*"], [3, 3, 0, 4, 0, "*"]])
    conv = convert_ui_workflow(wf, reg)
    assert set(conv.prompt) == {"1", "4"} and conv.prompt["4"]["inputs"] == {"value": ["1", 0]}


def test_a_primitive_feeds_every_widget_it_is_linked_to(reg):
    wf = ui([node(1, "PrimitiveNode", widgets=[11, "fixed"], outputs=[out("INT", "INT", [1, 2])]),
             node(2, "Add", inputs=[sock("a", "INT", 1, widget=True), sock("b", "INT", 2, widget=True)],
                  widgets=[0, 0], outputs=[out("sum", "INT", [3])]),
             node(3, "Show", inputs=[sock("value", "*", 3)])],
            [[1, 1, 0, 2, 0, "INT"], [2, 1, 0, 2, 1, "INT"], [3, 2, 0, 3, 0, "INT"]])
    conv = convert_ui_workflow(wf, reg)
    assert "1" not in conv.prompt and conv.prompt["2"]["inputs"] == {"a": 11, "b": 11}


def test_bypassed_node_with_several_outputs_relinks_by_type(reg):
    # Text -> [bypassed Concat: STRING in, STRING out] -> Show; IntConst -> bypassed Add (INT) -> Show
    wf = ui([node(1, "Text", widgets=["hello"], outputs=[out("STRING", "STRING", [1])]),
             node(2, "IntConst", widgets=[3], outputs=[out("INT", "INT", [2])]),
             node(3, "Concat", mode=4, inputs=[sock("a", "STRING", 1), sock("b", "STRING")], widgets=["", "", ""],
                  outputs=[out("STRING", "STRING", [3])]),
             node(4, "Add", mode=4, inputs=[sock("a", "INT", 2, widget=True)], widgets=[0, 1],
                  outputs=[out("sum", "INT", [4])]),
             node(5, "Show", inputs=[sock("value", "*", 3)]),
             node(6, "Show", inputs=[sock("value", "*", 4)])],
            [[1, 1, 0, 3, 0, "STRING"], [2, 2, 0, 4, 0, "INT"], [3, 3, 0, 5, 0, "STRING"], [4, 4, 0, 6, 0, "INT"]])
    conv = convert_ui_workflow(wf, reg)
    assert "3" not in conv.prompt and "4" not in conv.prompt
    assert conv.prompt["5"]["inputs"] == {"value": ["1", 0]} and conv.prompt["6"]["inputs"] == {"value": ["2", 0]}


def test_muted_branches_and_notes_are_dropped(reg):
    wf = ui([node(1, "IntConst", widgets=[1], mode=2, outputs=[out("INT", "INT", [1])]),
             node(2, "Show", inputs=[sock("value", "*", 1)], mode=2),
             node(3, "Note", widgets=["remember"]),
             node(4, "MarkdownNote", widgets=["# hi"]),
             node(5, "Show", inputs=[sock("value", "*", 2)]),
             node(6, "IntConst", widgets=[2], outputs=[out("INT", "INT", [2])])],
            [[1, 1, 0, 2, 0, "INT"], [2, 6, 0, 5, 0, "INT"]])
    conv = convert_ui_workflow(wf, reg)
    assert set(conv.prompt) == {"5", "6"}


def test_v1_link_objects_and_dict_widget_values(reg):
    wf = {"version": 1, "state": {"lastNodeId": 2, "lastLinkId": 1},
          "nodes": [node(1, "IntConst", widgets={"value": 9}, outputs=[out("INT", "INT", [1])]),
                    node(2, "Show", inputs=[sock("value", "*", 1)])],
          "links": [{"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "INT"}]}
    conv = convert_ui_workflow(wf, reg)
    assert conv.prompt["1"]["inputs"] == {"value": 9} and conv.prompt["2"]["inputs"] == {"value": ["1", 0]}


def test_unknown_node_types_are_named(reg):
    reg.record_failed_pack("was-node-suite", "ImportError: numba", ["Image Blend"])
    conv = convert_ui_workflow(ui([node(1, "Image Blend", widgets=[1])], []), reg)
    assert not conv.ok
    issue = conv.errors["1"][0]
    assert "Image Blend" in issue.message and "was-node-suite" in issue.details


def test_list_widget_values_stay_constants(reg):
    conv = convert_ui_workflow(ui([node(1, "Text", widgets=[["a", "b"]])], []), reg)
    assert conv.prompt["1"]["inputs"] == {"text": {"__value__": ["a", "b"]}}


def test_subgraphs_are_expanded(reg):
    inner = {"id": "sg-1", "name": "plus two",
             "nodes": [node(1, "Add", inputs=[sock("a", "INT", 11, widget=True)], widgets=[0, 2],
                            outputs=[out("sum", "INT", [12])])],
             "links": [{"id": 11, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "INT"},
                       {"id": 12, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0,
                        "type": "INT"}],
             "inputs": [{"name": "x", "type": "INT"}], "outputs": [{"name": "y", "type": "INT"}]}
    wf = ui([node(1, "IntConst", widgets=[5], outputs=[out("INT", "INT", [1])]),
             node(2, "sg-1", inputs=[sock("x", "INT", 1)], outputs=[out("y", "INT", [2])]),
             node(3, "Show", inputs=[sock("value", "*", 2)])],
            [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"]], definitions={"subgraphs": [inner]})
    conv = convert_ui_workflow(wf, reg)
    assert conv.ok, conv.messages()
    assert conv.prompt["2:1"]["inputs"] == {"a": ["1", 0], "b": 2}
    assert conv.prompt["3"]["inputs"] == {"value": ["2:1", 0]}


def test_nulls_editors_write_in_fields_the_converter_does_not_read_are_accepted(reg):
    """Editors write `"definitions": null` without subgraphs and `"slot_index": null`, `"order": null`,
    `"last_node_id": null` in places; such files convert."""
    first = node(1, "IntConst", widgets=[5], outputs=[{**out("INT", "INT", [1]), "slot_index": None}])
    wf = ui([{**first, "order": None}, node(2, "Show", inputs=[sock("value", "*", 1)])], [[1, 1, 0, 2, 0, "INT"]],
            definitions=None, last_node_id=None, last_link_id=None)
    conv = convert_ui_workflow(wf, reg)
    assert conv.ok, conv.messages()
    assert conv.prompt["2"]["inputs"] == {"value": ["1", 0]}


def test_converted_prompt_runs_like_the_api_prompt_written_directly(reg, executor):
    wf = ui([node(1, "PrimitiveNode", widgets=[4, "fixed"], outputs=[out("INT", "INT", [1])]),
             node(2, "Add", inputs=[sock("a", "INT", 1, widget=True)], widgets=[0, 6],
                  outputs=[out("sum", "INT", [2])]),
             node(3, "Reroute", inputs=[sock("", "*", 2)], outputs=[out("", "INT", [3])]),
             node(4, "Show", inputs=[sock("value", "*", 3)])],
            [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"], [3, 3, 0, 4, 0, "INT"]])
    converted = run_prompt(executor, convert_ui_workflow(wf, reg).prompt)
    direct = run_prompt(executor, {"2": {"class_type": "Add", "inputs": {"a": 4, "b": 6}},
                                   "4": {"class_type": "Show", "inputs": {"value": ["2", 0]}}})
    assert converted.outputs == direct.outputs == {"4": {"text": ["10"]}}
    assert parse_api_workflow(convert_ui_workflow(wf, reg).prompt).parse_issues == {}


def test_long_reroute_chains_convert_without_recursion(reg):
    n = 20_000
    nodes_ = [node(0, "IntConst", widgets=[1], outputs=[out("INT", "INT", [0])])]
    links = []
    for i in range(1, n):
        nodes_.append(node(i, "Reroute", inputs=[sock("", "*", i - 1)], outputs=[out("", "*", [i])]))
        links.append([i - 1, i - 1, 0, i, 0, "*"])
    nodes_.append(node(n, "Show", inputs=[sock("value", "*", n - 1)]))
    links.append([n - 1, n - 1, 0, n, 0, "*"])
    conv = convert_ui_workflow(ui(nodes_, links), reg)
    assert conv.prompt[str(n)]["inputs"] == {"value": ["0", 0]}
