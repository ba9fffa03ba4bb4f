"""The routes and messages ComfyUI's own editor needs, in-process (shapes as ComfyUI's server sends them)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from server import api_frontend, cli
from server.app import create_app
from server.frontends import FrontendError, resolve_web_root
from server.options import ServerOptions
from tests.server import workflows as wf
from tests.server.conftest import receive_json, served, until_done, wait_for


class FakePlugins:
    """What the plugin manager reports about its packs (only the part these routes read)."""

    auto_reload = False
    route_tables: tuple = ()

    def __init__(self, packs: dict[str, Path]) -> None:
        self.packs = packs

    def to_json(self) -> dict:
        return {"packs": [{"name": name, "path": str(path), "status": "loaded"} for name, path in self.packs.items()]}


def write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")


async def test_settings_start_empty_and_are_stored_per_key_and_in_bulk(env):
    async with served(env) as client:
        assert await (await client.get("/api/settings")).json() == {}
        assert await (await client.get("/settings/Comfy.TutorialCompleted")).json() is None
        assert (await client.post("/api/settings/Comfy.TutorialCompleted", data=b"true")).status == 200
        assert (await client.post("/settings", json={"Comfy.Locale": "fr", "Comfy.Theme": {"a": [1]}})).status == 200
        assert (await client.post("/api/settings/Comfy.Locale", json="en")).status == 200
        expected = {"Comfy.TutorialCompleted": True, "Comfy.Locale": "en", "Comfy.Theme": {"a": [1]}}
        assert await (await client.get("/settings")).json() == expected
        assert await (await client.get("/api/settings/Comfy.Theme")).json() == {"a": [1]}
        # The file ComfyUI uses, in the default user's folder: a restart keeps them.
        stored = json.loads((env.folders.user / "default" / "comfy.settings.json").read_text())
        assert stored == expected
        bad = await client.post("/api/settings", json=["not", "an", "object"])
        assert bad.status == 400 and "must be a JSON object" in (await bad.json())["error"]["message"]
        assert (await client.post("/api/settings/x", data=b"{nope")).status == 400
    async with served(env) as client:
        assert await (await client.get("/api/settings")).json() == expected


async def test_users_single_user_form(env):
    async with served(env) as client:
        assert await (await client.get("/api/users")).json() == {"storage": "server", "migrated": True}
        refused = await client.post("/users", json={"username": "alice"})
        assert refused.status == 400 and "--multi-user" in (await refused.json())["error"]["details"]


async def test_user_css_is_an_empty_stylesheet_until_the_user_writes_one(env):
    async with served(env) as client:
        for path in ("/user.css", "/api/userdata/user.css", "/userdata/user.css"):
            resp = await client.get(path)
            assert resp.status == 200 and resp.content_type == "text/css" and await resp.text() == ""
        assert (await client.post("/api/userdata/user.css", data=b"body { color: red }")).status == 200
        resp = await client.get("/user.css")
        assert resp.content_type == "text/css" and await resp.text() == "body { color: red }"
        assert await (await client.get("/api/userdata/comfy.templates.json")).json() == []
        # The folders the editor lists at start exist, so listing them is never a 404.
        assert await (await client.get("/api/userdata", params={"dir": "workflows"})).json() == []
        assert await (await client.get("/api/userdata", params={"dir": "subgraphs"})).json() == []
        # Workflow bookmarks live in the one hidden file the editor may read and write.
        bookmarks = "/api/userdata/workflows%2F.index.json"
        assert await (await client.get(bookmarks)).json() == {"favorites": []}
        assert (await client.post(bookmarks, json={"favorites": ["a.json"]})).status == 200
        assert await (await client.get(bookmarks)).json() == {"favorites": ["a.json"]}
        assert (await client.get("/api/userdata/workflows%2F.other.json")).status == 400  # still refused


async def test_pack_translations_subgraphs_and_example_workflows(env, tmp_path):
    a, b = tmp_path / "pack_a", tmp_path / "pack_b"
    write(a / "locales" / "en" / "main.json", {"greeting": {"hello": "Hello"}})
    write(a / "locales" / "en" / "nodeDefs.json", {"ANode": {"display_name": "A node"}})
    write(b / "locales" / "en" / "main.json", {"greeting": {"bye": "Bye"}})
    write(b / "locales" / "fr" / "main.json", {"greeting": {"hello": "Bonjour"}})
    write(b / "locales" / "fr" / "settings.json", "{broken")  # skipped, not fatal
    write(a / "subgraphs" / "Upscale twice.json", {"nodes": [], "links": []})
    write(b / "example_workflows" / "first.json", {"nodes": []})
    write(b / "example_workflows" / "first.webp", "x")
    env.registry.plugins = FakePlugins({"pack_a": a, "pack_b": b})
    async with served(env) as client:
        i18n = await (await client.get("/api/i18n")).json()
        assert i18n == {"en": {"main": {"greeting": {"hello": "Hello", "bye": "Bye"}},
                               "nodeDefs": {"ANode": {"display_name": "A node"}}},
                        "fr": {"main": {"greeting": {"hello": "Bonjour"}}}}
        subgraphs = await (await client.get("/api/global_subgraphs")).json()
        ((sid, entry),) = subgraphs.items()
        assert entry == {"source": "custom_node", "name": "Upscale twice", "info": {"node_pack": "pack_a"}}
        one = await (await client.get(f"/global_subgraphs/{sid}")).json()
        assert json.loads(one["data"]) == {"nodes": [], "links": []}
        assert (await client.get("/api/global_subgraphs/nope")).status == 404
        assert await (await client.get("/api/workflow_templates")).json() == {"pack_b": ["first"]}
        resp = await client.get("/api/workflow_templates/pack_b/first.json")
        assert resp.status == 200 and await resp.json() == {"nodes": []}
        assert (await client.get("/api/workflow_templates/pack_b/..%2F..%2Fsecret")).status in (400, 403, 404)
        assert (await client.get("/api/workflow_templates/pack_a/x.json")).status == 404


async def test_with_no_plugins_every_list_is_empty(env):
    async with served(env) as client:
        for path in ("/api/i18n", "/api/global_subgraphs", "/api/workflow_templates"):
            assert await (await client.get(path)).json() == {}


async def test_template_gallery_without_and_with_the_templates_package(env, tmp_path, monkeypatch):
    monkeypatch.setattr(api_frontend, "_module_folder", lambda module: None)
    monkeypatch.setattr(api_frontend, "_asset_templates", lambda: {})
    async with served(env) as client:
        resp = await client.get("/templates/index.json")
        assert resp.status == 200 and resp.content_type == "application/json" and await resp.json() == []
        assert await (await client.get("/templates/index.fr.json")).json() == []
        assert (await client.get("/templates/default.json")).status == 404
    gallery = tmp_path / "gallery"
    write(gallery / "templates" / "index.json", [{"moduleName": "default", "templates": [{"name": "t2i"}]}])
    write(gallery / "templates" / "t2i.json", {"nodes": []})
    monkeypatch.setattr(api_frontend, "_module_folder", lambda module: gallery)
    async with served(env) as client:
        index = await client.get("/templates/index.json")
        assert index.content_type == "application/json"
        assert (await index.json())[0]["templates"] == [{"name": "t2i"}]
        assert await (await client.get("/templates/t2i.json")).json() == {"nodes": []}
        assert (await client.get("/templates/..%2Fsecret.json")).status in (400, 403, 404)


async def test_model_library_and_internal_folders(env):
    ckpt = env.folders.models / "checkpoints" / "sub" / "tiny.safetensors"
    write(ckpt, "x")
    async with served(env) as client:
        kinds = await (await client.get("/api/experiment/models")).json()
        entry = next(k for k in kinds if k["name"] == "checkpoints")
        assert entry["folders"] == [str(env.folders.models / "checkpoints")]
        files = await (await client.get("/experiment/models/checkpoints")).json()
        assert files == [{"name": "sub/tiny.safetensors", "pathIndex": 0, "modified": ckpt.stat().st_mtime}]
        assert (await client.get("/api/experiment/models/nope")).status == 404
        # The metadata a .safetensors file carries in its header, for the model library.
        header = json.dumps({"__metadata__": {"ss_trigger": "fox"}, "w": {"dtype": "F32", "shape": [1],
                                                                          "data_offsets": [0, 4]}}).encode()
        lora = env.folders.models / "loras" / "fox.safetensors"
        lora.parent.mkdir(parents=True, exist_ok=True)
        lora.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
        meta = await client.get("/api/view_metadata/loras", params={"filename": "fox.safetensors"})
        assert await meta.json() == {"ss_trigger": "fox"}
        plain = await client.get("/view_metadata/checkpoints", params={"filename": "sub/tiny.safetensors"})
        assert plain.status == 400  # "x" is no safetensors file
        assert (await client.get("/api/view_metadata/loras", params={"filename": "../x.safetensors"})).status in (
            400, 403)
        assert (await client.get("/api/view_metadata/loras", params={"filename": "none.safetensors"})).status == 404
        paths = await (await client.get("/internal/folder_paths")).json()
        assert paths["checkpoints"] == [str(env.folders.models / "checkpoints")]
        write(env.folders.output / "old.png", "a")
        write(env.folders.output / "new.png", "b")
        os.utime(env.folders.output / "old.png", (1_000_000, 1_000_000))
        assert await (await client.get("/internal/files/output")).json() == ["new.png", "old.png"]
        assert await (await client.get("/internal/files/input")).json() == []
        assert (await client.get("/internal/files/secrets")).status == 400


async def test_logs_buffered_raw_and_pushed_to_subscribers(env):
    async with served(env) as client:
        logging.getLogger("sumie.test").warning("first line %d", 1)
        text = await (await client.get("/internal/logs")).json()
        assert "sumie.test: first line 1" in text
        raw = await (await client.get("/internal/logs/raw")).json()
        assert raw["entries"][-1]["m"].endswith("first line 1\n") and raw["entries"][-1]["t"]
        assert raw["size"]["cols"] > 0 and raw["size"]["rows"] > 0
        ws = await client.ws_connect("/ws?clientId=watcher")
        await receive_json(ws)
        resp = await client.patch("/internal/logs/subscribe", json={"clientId": "watcher", "enabled": True})
        assert resp.status == 200
        logging.getLogger("sumie.test").warning("second line")
        msg = await receive_json(ws)
        assert msg["type"] == "logs" and msg["data"]["entries"][0]["m"].endswith("second line\n")
        await client.patch("/internal/logs/subscribe", json={"clientId": "watcher", "enabled": False})
        logging.getLogger("sumie.test").warning("third line")
        assert (await client.patch("/internal/logs/subscribe", json={"enabled": 1})).status == 400
        pid = (await client.post("/prompt", json={"prompt": wf.show_sum(), "client_id": "watcher"}))
        done = await until_done(ws, (await pid.json())["prompt_id"])
        assert not [m for m in done if m["type"] == "logs"]  # unsubscribed: no more log lines


async def test_websocket_answers_feature_flags_with_the_servers(env):
    async with served(env, max_upload_mb=3) as client:
        ws = await client.ws_connect("/ws?clientId=ed")
        assert (await receive_json(ws))["type"] == "status"
        await ws.send_str(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
        answer = await receive_json(ws)
        features = await (await client.get("/api/features")).json()
        assert answer == {"type": "feature_flags", "data": features}
        assert features["max_upload_size"] == 3 * 1024 * 1024
        await ws.send_str("not json")  # ignored; the socket stays open
        await ws.send_str(json.dumps({"type": "feature_flags", "data": {}}))
        assert (await receive_json(ws))["type"] == "feature_flags"


async def test_progress_state_follows_every_node_of_the_run(env):
    async with served(env) as client:
        ws = await client.ws_connect("/ws?clientId=p")
        await receive_json(ws)
        prompt = wf.previewing(steps=3)
        body = await (await client.post("/prompt", json={"prompt": prompt, "client_id": "p"})).json()
        messages = await until_done(ws, body["prompt_id"])
        states = [m["data"] for m in messages if isinstance(m, dict) and m["type"] == "progress_state"]
        assert states and all(s["prompt_id"] == body["prompt_id"] for s in states)
        final = states[-1]["nodes"]
        assert set(final) == set(prompt) and {n["state"] for n in final.values()} == {"finished"}
        entry = next(iter(final.values()))
        assert set(entry) == {"value", "max", "state", "node_id", "prompt_id", "display_node_id",
                              "parent_node_id", "real_node_id"}
        stepper = next(nid for nid, node in prompt.items() if node["class_type"] == "PreviewSteps")
        assert final[stepper]["value"] == final[stepper]["max"] == 3.0
        # The latest state comes after the last one was sent: values only move forward, and nothing
        # is sent after the run's end.
        assert [m for m in messages if m["type"] == "progress_state"][-1] is messages[-3]
        failed = await (await client.post("/prompt", json={"prompt": wf.failing(), "client_id": "p"})).json()
        messages = await until_done(ws, failed["prompt_id"])
        last = [m["data"] for m in messages if m["type"] == "progress_state"][-1]["nodes"]
        (cached,) = [m["data"]["nodes"] for m in messages if m["type"] == "execution_cached"]
        assert last["2"]["state"] == "error" and "3" not in last  # the failing node, and the one never reached
        assert cached == ["1"] and "1" not in last  # a cached node does not run, so it has no state


async def test_progress_state_is_coalesced_for_big_graphs(env):
    """Each message carries every node, so a message per node would cost the square of the graph's size."""
    g = wf.GraphBuilder()
    value = g.node("IntConst", value=0)
    for _ in range(400):
        value = g.node("Add", a=value, b=1)
    g.node("Show", value=value)
    prompt = g.build()
    async with served(env) as client:
        ws = await client.ws_connect("/ws?clientId=big")
        await receive_json(ws)
        body = await (await client.post("/prompt", json={"prompt": prompt, "client_id": "big"})).json()
        messages = await until_done(ws, body["prompt_id"], timeout=60)
        states = [m["data"]["nodes"] for m in messages if m["type"] == "progress_state"]
        assert 1 <= len(states) < 40  # at most one per 0.1 s, plus the final one
        assert len(states[-1]) == len(prompt) and {n["state"] for n in states[-1].values()} == {"finished"}


async def test_system_stats_reports_the_frontend_fields(env):
    async with served(env) as client:
        system = (await (await client.get("/api/system_stats")).json())["system"]
        assert system["deploy_environment"] == "local"
        installed = {p["name"]: p for p in system["comfy_package_versions"]}
        try:
            version = importlib.metadata.version("comfyui-frontend-package")
        except importlib.metadata.PackageNotFoundError:
            assert "comfyui_frontend_version" not in system and "comfyui-frontend-package" not in installed
        else:
            assert system["comfyui_frontend_version"] == system["required_frontend_version"] == version
            assert installed["comfyui-frontend-package"] == {"name": "comfyui-frontend-package",
                                                             "installed": version, "required": version}


def test_web_root_choice(tmp_path, monkeypatch):
    assert resolve_web_root() is None  # our editor
    with pytest.raises(FrontendError, match="no index.html"):
        resolve_web_root(front_end_root=tmp_path)
    write(tmp_path / "index.html", "<html>other</html>")
    assert resolve_web_root(frontend="comfyui", front_end_root=tmp_path) == tmp_path.resolve()
    monkeypatch.setattr("server.frontends.comfyui_frontend_root", lambda: None)
    with pytest.raises(FrontendError, match="pip install"):
        resolve_web_root(frontend="comfyui")


def test_frontend_flags(tmp_path):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert cli.options_from(parser.parse_args([])).web_root is None
    write(tmp_path / "index.html", "<html></html>")
    options = cli.options_from(parser.parse_args(["--front-end-root", str(tmp_path)]))
    assert options.web_root == tmp_path.resolve()
    with pytest.raises(SystemExit, match="no index.html"):
        cli.options_from(parser.parse_args(["--front-end-root", str(tmp_path / "missing")]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--frontend", "other"])


async def test_another_frontend_is_served_at_the_root(env, tmp_path):
    write(tmp_path / "fe" / "index.html", "<html>another editor</html>")
    write(tmp_path / "fe" / "assets" / "app.js", "export {}")
    write(tmp_path / "fe" / "extensions" / "core" / "widgetInputs.js", "export const shim = 1")
    app = create_app(env.settings, env.registry, env.executor, options=ServerOptions(web_root=tmp_path / "fe"))
    async with TestClient(TestServer(app)) as client:
        assert "another editor" in await (await client.get("/")).text()
        resp = await client.get("/assets/app.js")
        assert resp.status == 200 and resp.content_type == "text/javascript"
        assert (await client.get("/api/object_info")).status == 200  # the API beside it
        # Modules of the editor that plugins' scripts import from /extensions/core/.
        shim = await client.get("/extensions/core/widgetInputs.js")
        assert shim.status == 200 and await shim.text() == "export const shim = 1"
        assert (await client.get("/extensions/core/..%2F..%2Findex.html")).status in (400, 403, 404)
        # Beside a ComfyUI editor, a small extension keeps older editors' model dropdowns working when a
        # model-loader node type they expect is not installed here.
        compat = "/extensions/sumie-comfyui-compat/model_providers.js"
        assert compat in await (await client.get("/api/extensions")).json()
        script = await client.get(compat)
        assert script.content_type == "text/javascript" and "getRegisteredNodeTypes" in await script.text()
    async with served(env) as client:  # our editor: no such extension
        assert await (await client.get("/api/extensions")).json() == []


async def test_jobs_are_cancelled_from_the_queue_panel(env):
    async with served(env) as client:
        running = (await (await client.post("/prompt", json={"prompt": wf.gated(1)})).json())["prompt_id"]
        pending = (await (await client.post("/prompt", json={"prompt": wf.gated(2)})).json())["prompt_id"]

        async def started():
            return (await (await client.get("/api/queue")).json())["queue_running"]

        await wait_for(started, what="the first job to run")
        answer = await client.post("/api/jobs/cancel", json={"job_ids": [pending, "unknown"]})
        assert await answer.json() == {"cancelled": [pending]}
        assert (await (await client.get("/api/queue")).json())["queue_pending"] == []
        answer = await client.post(f"/jobs/{running}/cancel")
        assert await answer.json() == {"prompt_id": running, "cancelled": True}

        async def finished():
            return (await (await client.get(f"/api/history/{running}")).json()).get(running)

        entry = await wait_for(finished, what="the running job to stop")
        assert entry["status"]["status_str"] == "interrupted"
        assert (await client.get("/api/history/" + pending)).status == 404  # it never ran
        assert (await client.post("/api/jobs/nope/cancel")).status == 404
        assert (await client.post("/api/jobs/cancel", json={"job_ids": "x"})).status == 400
