"""POST /prompt and /api/run accept editor-format workflows, converted on the server; /api/convert."""

from __future__ import annotations

from tests.server.conftest import served
from tests.unit.test_ui_workflow import node, out, sock, ui

EDITOR = ui([node(1, "PrimitiveNode", widgets=[4, "fixed"], outputs=[out("INT", "INT", [1])]),
             node(2, "Add", inputs=[sock("a", "INT", 1, widget=True)], widgets=[0, 6],
                  outputs=[out("sum", "INT", [2])]),
             node(3, "Reroute", inputs=[sock("", "*", 2)], outputs=[out("", "INT", [3])]),
             node(4, "Show", inputs=[sock("value", "*", 3)])],
            [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"], [3, 3, 0, 4, 0, "INT"]])


async def test_an_editor_workflow_runs_and_is_kept_as_its_workflow_metadata(env):
    async with served(env) as client:
        resp = await client.post("/api/run", json={"prompt": EDITOR, "client_id": "c1"})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["outputs"] == {"4": {"text": ["10"]}}
        history = (await (await client.get(f"/history/{body['prompt_id']}")).json())[body["prompt_id"]]
        number, prompt_id, prompt, extra_data, outputs = history["prompt"][:5]
        assert prompt["2"]["inputs"] == {"a": 4, "b": 6}  # history holds the API prompt that ran
        assert extra_data["extra_pnginfo"]["workflow"] == EDITOR


async def test_a_bare_editor_workflow_body_is_accepted(env):
    async with served(env) as client:
        resp = await client.post("/api/run", json=EDITOR)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["outputs"] == {"4": {"text": ["10"]}}


async def test_unknown_node_types_in_an_editor_workflow_are_a_400_naming_them(env):
    async with served(env) as client:
        resp = await client.post("/prompt", json={"prompt": ui([node(7, "NoSuchNode", widgets=[1])], [])})
        body = await resp.json()
        assert resp.status == 400 and body["error"]["type"] == "invalid_prompt"
        assert "NoSuchNode" in body["error"]["message"]
        assert body["node_errors"]["7"]["errors"][0]["type"] == "missing_node_type"
        assert (await (await client.get("/queue")).json())["queue_pending"] == []


async def test_convert_route(env):
    async with served(env) as client:
        resp = await client.post("/api/convert", json={"workflow": EDITOR})
        body = await resp.json()
        assert resp.status == 200 and body["prompt"]["2"]["inputs"] == {"a": 4, "b": 6}
        assert body["prompt"]["4"]["inputs"] == {"value": ["2", 0]}
        assert (await client.post("/api/convert", json={"nodes": "x"})).status == 400
