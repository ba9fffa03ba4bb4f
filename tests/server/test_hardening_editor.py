"""Editor-format files that are malformed, or that explode when their subgraphs are expanded: a clear 400
with the path of the problem, quickly, while every other client keeps being answered."""

from __future__ import annotations

import asyncio
import copy
import time

import pytest

from graph.ui_workflow import convert_ui_workflow
from tests.server.conftest import served


def _node(id_, type_, *, inputs=(), outputs=(), widgets=None):
    n = {"id": id_, "type": type_, "pos": [0, 0], "size": [100, 50], "flags": {}, "order": 0, "mode": 0,
         "inputs": list(inputs), "outputs": list(outputs), "properties": {}}
    if widgets is not None:
        n["widgets_values"] = widgets
    return n


def _sock(name, type_, link=None):
    return {"name": name, "type": type_, "link": link}


def _out(name, type_, links=()):
    return {"name": name, "type": type_, "links": list(links), "slot_index": 0}


def base() -> dict:
    """IntConst -> Add -> Show, as the editor saves it."""
    return {"version": 0.4, "last_node_id": 3, "last_link_id": 2, "groups": [], "config": {}, "extra": {},
            "nodes": [_node(1, "IntConst", widgets=[5], outputs=[_out("INT", "INT", [1])]),
                      _node(2, "Add", inputs=[_sock("a", "INT", 1)], widgets=[0, 2], outputs=[_out("sum", "INT", [2])]),
                      _node(3, "Show", inputs=[_sock("value", "*", 2)])],
            "links": [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"]]}


def _broken(change) -> dict:
    wf = copy.deepcopy(base())
    change(wf)
    return wf


MALFORMED = {
    "link slot is text": lambda wf: wf["links"][0].__setitem__(2, "0"),
    "link slot is null": lambda wf: wf["links"][0].__setitem__(4, None),
    "link slot is huge": lambda wf: wf["links"][0].__setitem__(2, 10**18),
    "link id is a list": lambda wf: wf["links"][0].__setitem__(0, [1]),
    "link object misses fields": lambda wf: wf.__setitem__("links", [{"id": 1, "origin_id": 1}]),
    "definitions is a list": lambda wf: wf.__setitem__("definitions", [1, 2]),
    "subgraphs is an object": lambda wf: wf.__setitem__("definitions", {"subgraphs": {"a": 1}}),
    "a subgraph is text": lambda wf: wf.__setitem__("definitions", {"subgraphs": ["sg"]}),
    "widgets_values is text": lambda wf: wf["nodes"][1].__setitem__("widgets_values", "0, 2"),
    "input slot's link is text": lambda wf: wf["nodes"][1]["inputs"][0].__setitem__("link", "1"),
    "input slot's name is a list": lambda wf: wf["nodes"][1]["inputs"][0].__setitem__("name", ["a"]),
    "widget is a list": lambda wf: wf["nodes"][1]["inputs"][0].__setitem__("widget", ["a"]),
    "node type is a list": lambda wf: wf["nodes"][1].__setitem__("type", ["Add"]),
    "node is a number": lambda wf: wf["nodes"].append(7),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_editor_files_are_a_400_naming_where(env, case):
    wf = _broken(MALFORMED[case])
    async with served(env) as client:
        for path, body in (("/prompt", {"prompt": wf}), ("/prompt", wf), ("/api/convert", wf)):
            resp = await client.post(path, json=body)
            data = await resp.json()
            assert resp.status == 400, (path, data)
            assert "Invalid editor workflow at $" in data["error"]["message"], data
        assert (await (await client.get("/queue")).json())["queue_pending"] == []


@pytest.mark.parametrize("extra", ["text", [1], {"extra_pnginfo": "x"}, {"extra_pnginfo": [1]}])
async def test_editor_envelope_with_bad_extra_data_is_a_400(env, extra):
    async with served(env) as client:
        resp = await client.post("/prompt", json={"prompt": base(), "extra_data": extra})
        assert resp.status == 400 and "extra_data" in (await resp.json())["error"]["message"]


# widget entries of unhashable types used to be looked up in sets (TypeError)
def test_widget_values_of_any_type_convert_or_fail_validation_cleanly(registry):
    wf = base()
    wf["nodes"][1]["widgets_values"] = [{"x": 1}, ["y"]]
    conv = convert_ui_workflow(wf, registry)
    assert conv.ok and conv.prompt["2"]["inputs"]["b"] == {"__value__": ["y"]}


# -- 5. subgraph expansion is capped while expanding, off the event loop ---------------------------
def _nested(levels: int, fanout: int) -> dict:
    """Subgraph k holds `fanout` instances of subgraph k+1; the last holds one Text node."""
    subgraphs = []
    for level in range(levels):
        if level == levels - 1:
            inner = [_node(1, "Text", widgets=["x"], outputs=[_out("STRING", "STRING")])]
        else:
            inner = [_node(i + 1, f"sg-{level + 1}") for i in range(fanout)]
        subgraphs.append({"id": f"sg-{level}", "name": f"level {level}", "nodes": inner, "links": [],
                          "inputs": [], "outputs": []})
    wf = base()
    wf["nodes"].append(_node(9, "sg-0"))
    wf["definitions"] = {"subgraphs": subgraphs}
    return wf


async def test_a_geometric_subgraph_bomb_is_refused_quickly_and_the_server_stays_responsive(env):
    bomb = _nested(9, 8)  # 8^8 = 16.7 M nodes if fully expanded
    async with served(env) as client:
        started = time.monotonic()
        posting = asyncio.ensure_future(client.post("/prompt", json={"prompt": bomb}))
        answered = []
        while not posting.done():
            t0 = time.monotonic()
            assert (await client.get("/queue")).status == 200
            answered.append(time.monotonic() - t0)
            await asyncio.sleep(0.02)
        resp = await posting
        elapsed = time.monotonic() - started
        data = await resp.json()
        assert resp.status == 400 and "more than 100,000 nodes" in data["error"]["message"], data
        assert elapsed < 15
        assert max(answered) < 1.0, max(answered)  # the loop was never blocked for long


def test_many_instances_of_a_subgraph_expand_in_linear_time(registry):
    wf = _nested(2, 8000)
    started = time.monotonic()
    conv = convert_ui_workflow(wf, registry)
    assert conv.ok, conv.messages()[:3]
    assert len(conv.prompt) == 8000 + 3 and time.monotonic() - started < 5


def test_chained_instances_of_one_subgraph_are_wired_through_each_other(registry):
    plus = {"id": "plus", "name": "plus two", "inputs": [{"name": "x", "type": "INT"}],
            "outputs": [{"name": "y", "type": "INT"}],
            "nodes": [_node(1, "Add", inputs=[_sock("a", "INT", 11)], widgets=[0, 2], outputs=[_out("sum", "INT")])],
            "links": [{"id": 11, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0},
                      {"id": 12, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0}]}
    through = {"id": "through", "name": "pass", "inputs": [{"name": "x", "type": "INT"}],
               "outputs": [{"name": "y", "type": "INT"}], "nodes": [],
               "links": [{"id": 21, "origin_id": -10, "origin_slot": 0, "target_id": -20, "target_slot": 0}]}
    wf = base()
    wf["nodes"] = [_node(1, "IntConst", widgets=[5], outputs=[_out("INT", "INT", [1])]),
                   _node(2, "plus", inputs=[_sock("x", "INT", 1)], outputs=[_out("y", "INT", [2])]),
                   _node(3, "through", inputs=[_sock("x", "INT", 2)], outputs=[_out("y", "INT", [3])]),
                   _node(4, "plus", inputs=[_sock("x", "INT", 3)], outputs=[_out("y", "INT", [4])]),
                   _node(5, "Show", inputs=[_sock("value", "*", 4)])]
    wf["links"] = [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"], [3, 3, 0, 4, 0, "INT"], [4, 4, 0, 5, 0, "INT"]]
    wf["definitions"] = {"subgraphs": [plus, through]}
    conv = convert_ui_workflow(wf, registry)
    assert conv.ok, conv.messages()
    assert conv.prompt["2:1"]["inputs"]["a"] == ["1", 0]
    assert conv.prompt["4:1"]["inputs"]["a"] == ["2:1", 0]
    assert conv.prompt["5"]["inputs"]["value"] == ["4:1", 0]
