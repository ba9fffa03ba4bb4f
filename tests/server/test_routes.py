"""Every route's JSON shape (and its /api/ twin)."""

from __future__ import annotations

import json

import pytest

from server.routes import ROUTES
from tests.server import workflows as wf
from tests.server.conftest import served, wait_for


async def _run_to_end(client, prompt, **envelope) -> str:
    resp = await client.post("/api/run", json={"prompt": prompt, **envelope})
    assert resp.status == 200, await resp.text()
    return (await resp.json())["prompt_id"]


async def test_object_info(env):
    async with served(env) as client:
        info = await (await client.get("/object_info")).json()
        assert {"IntConst", "Sleep", "SavePng"} <= set(info)
        add = info["Add"]
        assert add["input"]["required"]["a"][0] == "INT" and add["output"] == ["INT"]
        assert add["output_name"] == ["sum"] and add["output_node"] is False
        one = await (await client.get("/api/object_info/Show")).json()
        assert list(one) == ["Show"] and one["Show"]["output_node"] is True
        assert await (await client.get("/object_info/Nope")).json() == {}


async def test_system_stats_without_and_with_a_system_service(env):
    async with served(env) as client:
        stats = await (await client.get("/system_stats")).json()
        assert stats["devices"] == [] and stats["system"]["pytorch_version"] is None
        assert {"os", "python_version", "ram_total", "ram_free", "embedded_python", "argv"} <= set(stats["system"])
        assert stats["system"]["ram_total"] > 0

    class System:
        freed: list[tuple[bool, bool]] = []

        def stats(self):
            return {"pytorch_version": "2.13.0", "devices": [{"name": "cuda:0 Test", "type": "cuda", "index": 0,
                                                              "vram_total": 1, "vram_free": 1}]}

        def free(self, *, unload_models, free_memory):
            self.freed.append((unload_models, free_memory))

    system = System()
    env.executor.services["system"] = system
    async with served(env) as client:
        stats = await (await client.get("/api/system_stats")).json()
        assert stats["system"]["pytorch_version"] == "2.13.0" and stats["devices"][0]["type"] == "cuda"
        await _run_to_end(client, wf.show_sum())
        assert len(env.executor.cache) > 0
        resp = await client.post("/free", json={"unload_models": True, "free_memory": True})
        assert resp.status == 200
        assert system.freed == [(True, True)] and len(env.executor.cache) == 0
        assert (await client.post("/api/free", data=b"")).status == 200


async def test_models_and_embeddings(env):
    models = env.folders.models
    (models / "checkpoints" / "sd15").mkdir(parents=True)
    (models / "checkpoints" / "sd15" / "a.safetensors").write_bytes(b"x")
    (models / "checkpoints" / "notes.txt").write_text("not a model")
    (models / "embeddings").mkdir()
    (models / "embeddings" / "easyneg.pt").write_bytes(b"x")
    (models / "mystery").mkdir()
    async with served(env) as client:
        kinds = await (await client.get("/models")).json()
        assert "checkpoints" in kinds and "loras" in kinds and "mystery" in kinds
        assert await (await client.get("/models/checkpoints")).json() == ["sd15/a.safetensors"]
        assert await (await client.get("/api/models/loras")).json() == []
        assert (await client.get("/models/nothing-here")).status == 404
        assert await (await client.get("/embeddings")).json() == ["easyneg"]


async def test_queue_delete_and_clear(env):
    async with served(env) as client:
        await client.post("/prompt", json={"prompt": wf.gated(), "prompt_id": "blocker"})

        async def running():
            return (await (await client.get("/queue")).json())["queue_running"]

        await wait_for(running, what="the blocker to run")
        for i in range(4):
            await client.post("/prompt", json={"prompt": wf.show_sum(i, 0), "prompt_id": f"p{i}"})
        assert (await client.post("/queue", json={"delete": ["p1", "unknown"]})).status == 200
        pending = (await (await client.get("/api/queue")).json())["queue_pending"]
        assert [item[1] for item in pending] == ["p0", "p2", "p3"]
        assert (await client.post("/api/queue", json={"clear": True})).status == 200
        assert (await (await client.get("/queue")).json())["queue_pending"] == []
        # Deleting from the queue never touches the running job.
        assert [i[1] for i in (await (await client.get("/queue")).json())["queue_running"]] == ["blocker"]
        bad = await client.post("/queue", json={"delete": "p0"})
        assert bad.status == 400


async def test_a_cleared_queue_leaves_nothing_of_its_jobs_in_memory(env):
    """Cleared or deleted jobs are gone: no validation result of theirs stays behind in the server."""
    import gc

    from graph import ValidationResult

    async with served(env) as client:
        await client.post("/prompt", json={"prompt": wf.gated(), "prompt_id": "blocker"})

        async def running():
            return (await (await client.get("/queue")).json())["queue_running"]

        await wait_for(running, what="the blocker to run")
        markers = {1000 + i for i in range(6)}
        for i, marker in enumerate(sorted(markers)):
            resp = await client.post("/prompt", json={"prompt": wf.show_sum(marker, 0), "prompt_id": f"p{i}"})
            assert resp.status == 200
        assert (await client.post("/queue", json={"delete": ["p0"]})).status == 200
        assert (await client.post("/queue", json={"clear": True})).status == 200
        gc.collect()
        kept = [obj for obj in gc.get_objects() if type(obj) is ValidationResult
                and any(node.inputs.get("value") in markers for node in obj.workflow.nodes.values())]
        assert kept == []


async def test_the_worker_validates_the_job_it_claims_not_the_one_submitted(env):
    """A node type that goes away between submit and run (a plugin unloaded) fails the job, naming why."""
    from tests.server.conftest import receive_json, until_done

    async with served(env) as client:
        ws = await client.ws_connect("/ws?clientId=v")
        await receive_json(ws)
        await client.post("/prompt", json={"prompt": wf.gated(), "prompt_id": "blocker", "client_id": "v"})

        async def running():
            return (await (await client.get("/queue")).json())["queue_running"]

        await wait_for(running, what="the blocker to run")
        resp = await client.post("/prompt", json={"prompt": wf.show_sum(1, 2), "prompt_id": "later", "client_id": "v"})
        assert resp.status == 200
        env.registry.remove_source("tests.support.testpack")
        env.gate.set()
        messages = await until_done(ws, "later")
        (error,) = [m["data"] for m in messages if isinstance(m, dict) and m["type"] == "execution_error"]
        assert "no longer validates" in error["exception_message"] and "IntConst" in error["exception_message"]
        await ws.close()


async def test_history_paging_delete_clear_and_unknown_ids(env):
    async with served(env) as client:
        ids = [await _run_to_end(client, wf.show_sum(i, 100), prompt_id=f"h{i}") for i in range(5)]
        everything = await (await client.get("/history")).json()
        assert list(everything) == ids
        assert list(await (await client.get("/history?max_items=2")).json()) == ids[-2:]
        assert list(await (await client.get("/history?max_items=2&offset=1")).json()) == ids[1:3]
        assert (await client.get("/history?max_items=abc")).status == 400
        assert (await client.post("/history", json={"delete": ["h0"]})).status == 200
        assert list(await (await client.get("/api/history")).json()) == ids[1:]
        unknown = await client.get("/history/h0")
        assert unknown.status == 404 and (await unknown.json())["error"]["type"] == "unknown_prompt_id"
        await client.post("/prompt", json={"prompt": wf.gated(), "prompt_id": "waiting"})
        pending = await client.get("/history/waiting")
        assert pending.status == 200 and await pending.json() == {}
        assert pending.headers["X-Job-Status"] in ("pending", "in_progress")
        assert (await client.post("/history", json={"clear": True})).status == 200
        assert await (await client.get("/history")).json() == {}


async def test_jobs_paging_and_filters(env):
    async with served(env) as client:
        for i in range(3):
            await _run_to_end(client, wf.show_sum(i, 7), prompt_id=f"ok{i}")
        await _run_to_end(client, wf.failing(), prompt_id="bad")
        page = await (await client.get("/api/jobs?limit=2")).json()
        assert [j["id"] for j in page["jobs"]] == ["bad", "ok2"]
        assert page["pagination"] == {"offset": 0, "limit": 2, "total": 4, "has_more": True}
        page = await (await client.get("/api/jobs?limit=2&offset=2&sort_order=desc")).json()
        assert [j["id"] for j in page["jobs"]] == ["ok1", "ok0"] and page["pagination"]["has_more"] is False
        failed = await (await client.get("/api/jobs?status=failed")).json()
        assert [j["id"] for j in failed["jobs"]] == ["bad"] and failed["jobs"][0]["execution_error"]["node_id"] == "2"
        done = await (await client.get("/api/jobs?status=completed&sort_order=asc")).json()
        assert [j["id"] for j in done["jobs"]] == ["ok0", "ok1", "ok2"]
        job = await (await client.get("/api/jobs/ok1")).json()
        assert job["status"] == "completed" and job["outputs"] == {"3": {"text": ["8"]}}
        assert job["outputs_count"] == 1 and job["workflow"]["prompt"] == wf.show_sum(1, 7)
        assert job["execution_start_time"] <= job["execution_end_time"]
        assert (await client.get("/api/jobs/nope")).status == 404
        assert (await client.get("/api/jobs?status=weird")).status == 400


async def test_userdata_round_trip_and_listing(env):
    async with served(env) as client:
        flow = {"nodes": [], "links": [], "version": 0.4, "title": "naïve ✓"}
        resp = await client.post("/userdata/workflows%2Fmy%20flow.json", data=json.dumps(flow).encode())
        assert resp.status == 200 and await resp.json() == "workflows/my flow.json"
        assert (env.folders.user / "default" / "workflows" / "my flow.json").is_file()
        got = await client.get("/api/userdata/workflows%2Fmy%20flow.json")
        assert got.status == 200 and await got.json() == flow
        assert got.headers["X-Content-Type-Options"] == "nosniff"
        refused = await client.post("/userdata/workflows%2Fmy%20flow.json?overwrite=false", data=b"{}")
        assert refused.status == 409
        info = await (await client.post("/userdata/workflows%2Fb.json?full_info=true", data=b"{}")).json()
        assert info["path"] == "workflows/b.json" and info["size"] == 2
        listing = await (await client.get("/userdata?dir=workflows")).json()
        assert listing == ["b.json", "my flow.json"]
        full = await (await client.get("/userdata?dir=workflows&full_info=true")).json()
        assert {f["path"] for f in full} == {"b.json", "my flow.json"}
        assert (await client.get("/userdata?dir=nothing")).status == 404
        moved = await client.post("/userdata/workflows%2Fb.json/move/workflows%2Fc.json")
        assert moved.status == 200 and await moved.json() == "workflows/c.json"
        assert (await client.delete("/userdata/workflows%2Fc.json")).status == 204
        assert (await client.get("/userdata/workflows%2Fc.json")).status == 404
        assert (await client.delete("/userdata/workflows%2Fc.json")).status == 404
        # The job database beside the user folder is not reachable.
        assert (await client.get("/userdata/..%2Fjobs.sqlite3")).status == 400


async def test_extensions_list_and_files(env, tmp_path):
    web_dir = tmp_path / "pack_web"
    (web_dir / "js").mkdir(parents=True)
    (web_dir / "js" / "widget.js").write_text("export const x = 1;\n")
    (web_dir / "style.css").write_text("body{}")
    from server.app import create_app
    from server.options import ServerOptions

    async with served(env) as client:
        assert await (await client.get("/extensions")).json() == []
    app = create_app(env.settings, env.registry, env.executor, options=ServerOptions(), web_root=None,
                     web_dirs={"mypack": web_dir})
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(app)) as client:
        assert await (await client.get("/api/extensions")).json() == ["/extensions/mypack/js/widget.js"]
        js = await client.get("/extensions/mypack/js/widget.js")
        assert js.status == 200 and js.headers["Content-Type"].startswith("text/javascript")
        assert (await client.get("/extensions/mypack/..%2F..%2Fetc%2Fpasswd")).status in (400, 404)
        assert (await client.get("/extensions/other/x.js")).status == 404


async def test_openapi_and_schemas(env):
    async with served(env) as client:
        doc = await (await client.get("/openapi.json")).json()
        assert doc["openapi"].startswith("3.") and "/prompt" in doc["paths"] and "/history/{prompt_id}" in doc["paths"]
        assert "post" in doc["paths"]["/prompt"] and "429" in doc["paths"]["/prompt"]["post"]["responses"]
        assert (await client.get("/api/openapi.json")).status == 200
        schema = await (await client.get("/schemas/api_workflow.json")).json()
        assert "$defs" in schema
        assert (await client.get("/schemas/ui_workflow.json")).status == 200
        assert (await client.get("/schemas/secret.json")).status == 404
        features = await (await client.get("/features")).json()
        assert features["max_upload_size"] > 0


@pytest.mark.parametrize("route", [r for r in ROUTES if r.api and r.method == "GET" and "{" not in r.path],
                         ids=lambda r: r.path)
async def test_every_get_route_has_an_api_twin(env, route):
    async with served(env) as client:
        plain = await client.get(route.path, params={"filename": "x"} if route.path == "/view" else None)
        twin = await client.get("/api" + route.path, params={"filename": "x"} if route.path == "/view" else None)
        assert plain.status == twin.status and plain.status < 500
