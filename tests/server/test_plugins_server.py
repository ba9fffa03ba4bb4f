"""Plugins through the server: the example pack in a workflow, web extensions, /plugins, failures,
PromptServer routes and messages, and reloading between prompts."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

from plugins.manager import PluginManager
from tests.server.conftest import kinds, receive_json, served, until_done

ROOT = Path(__file__).resolve().parents[2]

V1_PACK = '''
import torch
from server import PromptServer
from aiohttp import web


@PromptServer.instance.routes.get("/v1pack/hello")
async def hello(request):
    return web.json_response({"hello": "from v1pack"})


class SolidImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"gray": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0})}}
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "test"

    def make(self, gray):
        return (torch.full((2, 4, 4, 3), gray),)


class MeanColor:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}
    RETURN_TYPES = ()
    FUNCTION = "mean"
    OUTPUT_NODE = True

    def mean(self, image):
        rgb = [round(float(v), 3) for v in image.mean(dim=(0, 1, 2))]
        return {"ui": {"rgb": rgb, "shape": [list(image.shape)]}}


class Boom:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    def go(self, value):
        raise RuntimeError(f"boom {value}")


class Notify:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hi"})}}
    RETURN_TYPES = ()
    FUNCTION = "go"
    OUTPUT_NODE = True

    def go(self, text):
        server = PromptServer.instance
        server.send_sync("v1pack.note", {"text": text, "client": server.client_id}, server.client_id)
        return {"ui": {"text": [text]}}


NODE_CLASS_MAPPINGS = {"V1SolidImage": SolidImage, "V1MeanColor": MeanColor, "V1Boom": Boom, "V1Notify": Notify}
'''

BROKEN = '''
import definitely_not_installed_module
NODE_CLASS_MAPPINGS = {"BrokenThing": object}
'''


def with_plugins(env, *, auto_reload: bool = False) -> PluginManager:
    extra = env.root / "custom_nodes"
    (extra / "v1pack").mkdir(parents=True, exist_ok=True)
    (extra / "v1pack" / "__init__.py").write_text(textwrap.dedent(V1_PACK))
    (extra / "brokenpack.py").write_text(BROKEN)
    manager = PluginManager(env.registry, [ROOT / "custom_nodes", extra], folders=env.folders,
                            auto_reload=auto_reload)
    manager.load_all()
    env.plugins = manager
    return manager


async def run(client, prompt: dict, **envelope) -> dict:
    resp = await client.post("/api/run", json={"prompt": prompt, **envelope})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_example_pack_nodes_run_in_a_workflow(env):
    manager = with_plugins(env)
    assert manager.reports["example_pack"].status == "loaded", manager.reports["example_pack"].error
    prompt = {
        "1": {"class_type": "ExampleRepeatText", "inputs": {"text": "ab", "times": 3, "separator": "-"}},
        "2": {"class_type": "ExampleShowText", "inputs": {"text": ["1", 0]}},
        "3": {"class_type": "ExampleLazySwitch", "inputs": {"use_first": False, "first": ["9", 0],
                                                            "second": ["1", 0]}},
        "4": {"class_type": "ExampleShowText", "inputs": {"text": ["3", 0]}},
        "9": {"class_type": "V1Boom", "inputs": {"value": 1}},  # lazy and not chosen: never runs
        "5": {"class_type": "V1SolidImage", "inputs": {"gray": 0.2}},
        "6": {"class_type": "ExampleTintImage", "inputs": {"image": ["5", 0], "color": "#ff0000", "strength": 0.5}},
        "7": {"class_type": "V1MeanColor", "inputs": {"image": ["6", 0]}},
        "8": {"class_type": "ExampleColorSwatch", "inputs": {"color": "#ABCDEF"}},
    }
    async with served(env) as client:
        body = await run(client, prompt)
        assert body["status"] == "success", body
        outputs = body["outputs"]
        assert outputs["2"] == {"text": ["ab-ab-ab"]} and outputs["4"] == {"text": ["ab-ab-ab"]}
        assert outputs["7"] == {"rgb": [0.6, 0.1, 0.1], "shape": [[2, 4, 4, 3]]}
        assert outputs["8"] == {"color": ["#abcdef"], "text": ["#abcdef"]}
        info = await (await client.get("/object_info/ExampleTintImage")).json()
        assert info["ExampleTintImage"]["python_module"] == "custom_nodes.example_pack"
        bad = await client.post("/prompt", json={"prompt": {"1": {"class_type": "ExampleColorSwatch",
                                                                  "inputs": {"color": "red"}}}})
        assert bad.status == 400
        assert (await bad.json())["node_errors"]["1"]["errors"][0]["type"] == "custom_validation_failed"


async def test_a_packs_web_extension_is_served(env):
    with_plugins(env)
    async with served(env) as client:
        urls = await (await client.get("/extensions")).json()
        assert "/extensions/example_pack/swatch.js" in urls
        js = await client.get("/extensions/example_pack/swatch.js")
        assert js.status == 200 and js.headers["Content-Type"].startswith("text/javascript")
        assert "registerExtension" in await js.text()
        assert (await client.get("/extensions/example_pack/..%2F__init__.py")).status in (400, 404)
        assert (await client.get("/extensions/v1pack/x.js")).status == 404


async def test_plugins_lists_failures_and_a_workflow_using_a_failed_pack_is_told_why(env):
    with_plugins(env)
    async with served(env) as client:
        body = await (await client.get("/api/plugins")).json()
        packs = {p["name"]: p for p in body["packs"]}
        assert body["api_version"] == 1 and packs["example_pack"]["status"] == "loaded"
        assert packs["example_pack"]["web_directory"] == "/extensions/example_pack"
        assert "ExampleTintImage" in packs["example_pack"]["nodes"]
        assert "ExampleWordCount" in packs["example_pack"]["nodes"]  # its V3 module
        assert packs["example_pack"]["protocol"] == "sumie+comfy_v3"
        broken = packs["brokenpack"]
        assert broken["status"] == "failed" and "definitely_not_installed_module" in broken["error"]
        assert broken["likely_nodes"] == ["BrokenThing"] and broken["traceback"]
        assert body["failed"] == [{"name": "brokenpack", "error": broken["error"], "node_names": ["BrokenThing"]}]
        resp = await client.post("/prompt", json={"prompt": {"1": {"class_type": "BrokenThing", "inputs": {}}}})
        assert resp.status == 400
        error = (await resp.json())["node_errors"]["1"]["errors"][0]
        assert error["type"] == "missing_node_type" and "brokenpack" in error["details"]
        assert "definitely_not_installed_module" in error["details"]


async def test_a_runtime_exception_is_an_execution_error_and_the_server_lives_on(env):
    with_plugins(env)
    async with served(env) as client:
        ws = await client.ws_connect("/ws?clientId=c1")
        await receive_json(ws)
        resp = await client.post("/prompt", json={"prompt": {"1": {"class_type": "V1Boom", "inputs": {"value": 7}},
                                                             "2": {"class_type": "Show",
                                                                   "inputs": {"value": ["1", 0]}}},
                                                  "client_id": "c1"})
        prompt_id = (await resp.json())["prompt_id"]
        messages = await until_done(ws, prompt_id)
        assert "execution_error" in kinds(messages)
        error = next(m for m in messages if isinstance(m, dict) and m["type"] == "execution_error")["data"]
        assert error["node_id"] == "1" and error["node_type"] == "V1Boom"
        assert error["exception_message"] == "boom 7" and error["exception_type"] == "builtins.RuntimeError"
        assert (await run(client, {"1": {"class_type": "ExampleRepeatText",
                                         "inputs": {"text": "x", "times": 1, "separator": ""}},
                                   "2": {"class_type": "ExampleShowText", "inputs": {"text": ["1", 0]}}}
                          ))["status"] == "success"
        await ws.close()


async def test_prompt_server_routes_and_messages(env):
    with_plugins(env)
    async with served(env) as client:
        for path in ("/v1pack/hello", "/api/v1pack/hello"):
            resp = await client.get(path)
            assert resp.status == 200 and await resp.json() == {"hello": "from v1pack"}
        ws = await client.ws_connect("/ws?clientId=c2")
        await receive_json(ws)
        resp = await client.post("/prompt", json={"prompt": {"1": {"class_type": "V1Notify",
                                                                   "inputs": {"text": "ping"}}},
                                                  "client_id": "c2"})
        prompt_id = (await resp.json())["prompt_id"]
        messages = await until_done(ws, prompt_id)
        note = next(m for m in messages if isinstance(m, dict) and m["type"] == "v1pack.note")
        assert note["data"] == {"text": "ping", "client": "c2"}
        await ws.close()


async def test_reload_plugins_between_prompts(env):
    manager = with_plugins(env, auto_reload=True)
    path = env.root / "custom_nodes" / "v1pack" / "__init__.py"
    prompt = {"1": {"class_type": "V1Notify", "inputs": {"text": "a"}}}
    async with served(env) as client:
        assert (await run(client, prompt))["outputs"]["1"] == {"text": ["a"]}
        path.write_text(path.read_text().replace('{"ui": {"text": [text]}}', '{"ui": {"text": [text * 2]}}'))
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
        manager._last_check = 0.0
        assert (await run(client, prompt))["outputs"]["1"] == {"text": ["aa"]}
