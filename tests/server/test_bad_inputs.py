"""bad-inputs.md, "Transport", "Paths" and "Concurrency": every rejection is a 4xx and queues nothing."""

from __future__ import annotations

import os

import pytest
from aiohttp import WSServerHandshakeError

from server.app import refuse_reason
from server.options import ServerOptions
from tests.server import workflows as wf
from tests.server.conftest import receive_json, served, wait_for

GOOD = {"prompt": wf.show_sum()}


async def _queue_is_empty(client) -> bool:
    queue = await (await client.get("/queue")).json()
    history = await (await client.get("/history")).json()
    return not queue["queue_pending"] and not queue["queue_running"] and not history


@pytest.mark.parametrize(("body", "needle"), [
    (b"{not json", "Invalid JSON"),
    (b"", "empty"),
    (b"   ", "empty"),
    (b"[1, 2]", "JSON object"),
    (b'"text"', "JSON object"),
    (b"{}", "No prompt"),
    (b'{"prompt": [1]}', "prompt"),
    (b'{"prompt": {"1": {"class_type": "FloatConst", "inputs": {"value": NaN}}}}', "NaN"),
    (b'{"prompt": {"1": {"class_type": "IntConst", "inputs": {"value": Infinity}}}}', "Infinity"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"prompt": {"1": {"class_type": "Text", "inputs": {"text": "\\ud800"}}}}', "surrogate"),
    (b'{"prompt": {"1": {"class_type": "Text", "inputs": {"text": "x"}}}, "client_id": 5}', "client_id"),
    (b"\xff\xfe{}", "UTF-8"),
])
async def test_bad_json_bodies_are_400_and_queue_nothing(env, body, needle):
    async with served(env) as client:
        resp = await client.post("/prompt", data=body, headers={"Content-Type": "application/json"})
        assert resp.status == 400
        error = (await resp.json())["error"]
        assert needle.lower() in (error["message"] + error["details"]).lower(), error
        assert await _queue_is_empty(client)


async def test_validation_errors_have_comfyui_shape(env):
    async with served(env) as client:
        prompt = wf.show_sum()
        prompt["2"]["inputs"]["b"] = "abc"
        resp = await client.post("/prompt", json={"prompt": prompt})
        assert resp.status == 400
        body = await resp.json()
        assert body["error"]["type"] == "prompt_outputs_failed_validation"
        node = body["node_errors"]["2"]
        assert node["class_type"] == "Add" and node["dependent_outputs"] == ["3"]
        (err,) = node["errors"]
        assert err["type"] == "invalid_input_type" and err["extra_info"]["input_name"] == "b"
        assert err["extra_info"]["received_value"] == "abc"
        resp = await client.post("/prompt", json={"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}})
        body = await resp.json()
        assert resp.status == 400 and body["error"]["type"] == "invalid_prompt"
        assert body["node_errors"]["1"]["errors"][0]["type"] == "missing_node_type"
        resp = await client.post("/prompt", json={"prompt": {"1": {"class_type": "IntConst", "inputs": {"value": 1}}}})
        assert (await resp.json())["error"]["type"] == "prompt_no_outputs"
        assert await _queue_is_empty(client)


async def test_partly_valid_prompt_runs_the_valid_outputs_and_reports_the_rest(env):
    async with served(env) as client:
        prompt = wf.show_sum()
        prompt["9"] = {"class_type": "Show", "inputs": {"value": ["8", 0]}}
        resp = await client.post("/api/run", json={"prompt": prompt})
        assert resp.status == 200
        body = await resp.json()
        assert body["outputs"] == {"3": {"text": ["3"]}}
        resp = await client.post("/prompt", json={"prompt": prompt})
        body = await resp.json()
        assert resp.status == 200 and body["node_errors"]["9"]["errors"][0]["type"] == "link_to_missing_node"


async def test_body_over_the_limit_is_413_before_parsing(env):
    async with served(env, max_json_mb=0.01) as client:
        big = b'{"prompt": {}, "pad": "' + b"x" * 20_000 + b'"}'
        resp = await client.post("/prompt", data=big, headers={"Content-Type": "application/json"})
        assert resp.status == 413 and (await resp.json())["error"]["type"] == "payload_too_large"

        async def chunks():
            for _ in range(40):
                yield b" " * 1000
            yield b"{}"

        resp = await client.post("/prompt", data=chunks(), headers={"Content-Type": "application/json"})
        assert resp.status == 413
        assert await _queue_is_empty(client)


@pytest.mark.parametrize(("params", "status"), [
    ({"filename": "../secret.txt"}, 400),
    ({"filename": "secret.txt", "subfolder": ".."}, 400),
    ({"filename": "secret.txt", "subfolder": "a/../.."}, 400),
    ({"filename": "/etc/passwd"}, 400),
    ({"filename": "C:/Windows/win.ini"}, 400),
    ({"filename": "..\\secret.txt"}, 400),
    ({"filename": "ok.png\x00.txt"}, 400),
    ({"filename": ".hidden.png"}, 400),
    ({"filename": "ok.png", "type": "models"}, 400),
    ({"filename": "ok.png", "type": "../output"}, 400),
    ({"filename": "missing.png"}, 404),
    ({"filename": "escape.txt"}, 403),
    ({"filename": "secret.txt", "subfolder": "linkdir"}, 403),
    ({}, 400),
])
async def test_view_refuses_traversal_and_symlink_escapes(env, params, status):
    (env.root / "secret.txt").write_text("top secret")
    os.symlink(env.root / "secret.txt", env.folders.output / "escape.txt")
    os.symlink(env.root, env.folders.output / "linkdir")
    async with served(env) as client:
        resp = await client.get("/view", params=params)
        assert resp.status == status
        assert b"top secret" not in await resp.read()


async def test_view_url_encoded_traversal(env):
    (env.root / "secret.txt").write_text("top secret")
    async with served(env) as client:
        for raw in ("/view?filename=..%2fsecret.txt", "/view?filename=%2e%2e%2fsecret.txt",
                    "/view?filename=secret.txt&subfolder=%2e%2e", "/view?filename=..%5csecret.txt"):
            resp = await client.get(raw)
            assert resp.status == 400, raw


async def test_view_serves_dangerous_types_as_downloads(env):
    (env.folders.output / "page.html").write_text("<script>alert(1)</script>")
    (env.folders.output / "sub").mkdir()
    (env.folders.output / "sub" / "pic.svg").write_text("<svg onload='alert(1)'/>")
    async with served(env) as client:
        for params in ({"filename": "page.html"}, {"filename": "pic.svg", "subfolder": "sub"}):
            resp = await client.get("/view", params=params)
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/octet-stream"
            assert resp.headers["Content-Disposition"].startswith("attachment")
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert "sandbox" in resp.headers["Content-Security-Policy"]


async def test_full_queue_answers_429_with_retry_after(env):
    async with served(env, max_queue=2) as client:
        await client.post("/prompt", json={"prompt": wf.gated(), "prompt_id": "run"})

        async def running():
            return (await (await client.get("/queue")).json())["queue_running"]

        await wait_for(running, what="the first job to run")
        for i in range(2):
            assert (await client.post("/prompt", json={"prompt": wf.show_sum(i)})).status == 200
        resp = await client.post("/prompt", json={"prompt": wf.show_sum(9)})
        assert resp.status == 429
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["error"]["type"] == "queue_full"
        assert len((await (await client.get("/queue")).json())["queue_pending"]) == 2
        # A retry of an accepted job is still answered (it queues nothing new).
        assert (await client.post("/prompt", json={"prompt": wf.gated(), "prompt_id": "run"})).status == 200


async def test_cross_site_origin_is_refused(env):
    async with served(env) as client:
        port = client.server.port
        evil = await client.post("/prompt", json=GOOD, headers={"Origin": "https://evil.example"})
        assert evil.status == 403 and (await evil.json())["error"]["type"] == "forbidden_origin"
        assert (await client.post("/prompt", json=GOOD, headers={"Origin": "null"})).status == 403
        fetch = await client.post("/interrupt", headers={"Sec-Fetch-Site": "cross-site"})
        assert fetch.status == 403
        same = await client.post("/prompt", json=GOOD, headers={"Origin": f"http://127.0.0.1:{port}"})
        assert same.status == 200
        local = await client.get("/queue", headers={"Origin": f"http://localhost:{port}"})
        assert local.status == 200
        other_port = await client.get("/queue", headers={"Origin": f"http://127.0.0.1:{port + 1}"})
        assert other_port.status == 403
        rebinding = await client.get("/queue", headers={"Host": f"attacker.example:{port}"})
        assert rebinding.status == 403 and (await rebinding.json())["error"]["type"] == "forbidden_host"
        with pytest.raises(WSServerHandshakeError) as info:
            await client.ws_connect("/ws", headers={"Origin": "https://evil.example"})
        assert info.value.status == 403
    async with served(env, allowed_origins=("https://editor.example",)) as client:
        ok = await client.get("/queue", headers={"Origin": "https://editor.example"})
        assert ok.status == 200


async def test_auth_token_for_http_and_websocket(env):
    async with served(env, auth_token="s3cret") as client:
        resp = await client.get("/queue")
        assert resp.status == 401 and "Bearer" in resp.headers["WWW-Authenticate"]
        assert (await client.get("/queue", headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await client.get("/queue", headers={"Authorization": "Bearer s3cret"})).status == 200
        assert (await client.get("/queue?token=s3cret")).status == 401  # only the websocket takes ?token=
        with pytest.raises(WSServerHandshakeError) as info:
            await client.ws_connect("/ws?clientId=x")
        assert info.value.status == 401
        ws = await client.ws_connect("/ws?clientId=x&token=s3cret")
        assert (await receive_json(ws))["type"] == "status"
        await ws.close()
        # With a token the Host check is not needed (remote clients use real host names).
        assert (await client.get("/queue", headers={"Authorization": "Bearer s3cret",
                                                    "Host": "gpu-box.lan:8188"})).status == 200


def test_listening_beyond_loopback_needs_a_token_or_an_explicit_opt_in():
    assert refuse_reason("127.0.0.1", ServerOptions()) is None
    assert refuse_reason("::1", ServerOptions()) is None
    assert refuse_reason("localhost", ServerOptions()) is None
    assert "auth-token" in refuse_reason("0.0.0.0", ServerOptions())
    assert refuse_reason("0.0.0.0", ServerOptions(auth_token="t")) is None
    assert refuse_reason("192.168.1.5", ServerOptions(allow_remote=True)) is None


async def test_api_stays_responsive_while_a_job_runs(env):
    import time

    async with served(env) as client:
        await client.post("/prompt", json={"prompt": wf.gated()})

        async def running():
            return (await (await client.get("/queue")).json())["queue_running"]

        await wait_for(running, what="the job to run")
        start = time.perf_counter()
        for _ in range(20):
            assert (await client.get("/queue")).status == 200
        assert (time.perf_counter() - start) / 20 < 0.05
