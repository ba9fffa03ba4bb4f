"""Running prompts through the server: websocket events, cache, errors, interrupts, reconnects."""

from __future__ import annotations

import struct

from tests.server import workflows as wf
from tests.server.conftest import kinds, receive_json, served, until_done, wait_for


async def _submit(client, prompt, **envelope):
    resp = await client.post("/prompt", json={"prompt": prompt, **envelope})
    body = await resp.json()
    assert resp.status == 200, body
    return body


async def test_event_sequence_of_a_run_then_a_cached_rerun(env):
    async with served(env) as client:
        ws = await client.ws_connect("/ws?clientId=alice")
        hello = await receive_json(ws)
        assert hello == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "alice"}}
        prompt = wf.save(value=7, prefix="seq", sleep=0.02)
        body = await _submit(client, prompt, client_id="alice")
        assert set(body) == {"prompt_id", "number", "node_errors"} and body["node_errors"] == {}
        pid = body["prompt_id"]
        messages = await until_done(ws, pid)
        names = kinds(messages)
        assert names[0] == "status"
        core = [n for n in names if n != "status"]
        assert core[:2] == ["execution_start", "execution_cached"]
        assert core[-2:] == ["execution_success", "executing"]
        assert names.index("progress") > names.index("executing")
        by_type = {}
        for m in messages:
            by_type.setdefault(m["type"], []).append(m["data"])
        assert [d["node"] for d in by_type["executing"]] == ["1", "2", "3", None]
        assert all(d["prompt_id"] == pid for k, ds in by_type.items() if k != "status" for d in ds)
        progress = by_type["progress"]
        assert progress[-1] == {"value": 20, "max": 20, "prompt_id": pid, "node": "2"}
        (executed,) = by_type["executed"]
        image = executed["output"]["images"][0]
        assert executed["node"] == "3" and executed["display_node"] == "3"
        assert image["filename"] == "seq_00001_.png" and image["type"] == "output"
        assert by_type["execution_cached"][0]["nodes"] == []
        assert (env.folders.output / "seq_00001_.png").is_file()

        history = await (await client.get(f"/history/{pid}")).json()
        entry = history[pid]
        assert entry["outputs"] == {"3": executed["output"]}
        assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
        assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached",
                                                               "execution_success"]
        assert entry["prompt"][1] == pid and entry["prompt"][2] == prompt and entry["prompt"][4] == ["3"]
        view = await client.get("/view", params={"filename": image["filename"], "type": "output"})
        assert view.status == 200 and view.headers["Content-Type"] == "image/png"
        assert view.headers["X-Content-Type-Options"] == "nosniff"
        assert (await view.read()).startswith(b"\x89PNG")

        # The same prompt again: nothing runs, every output is still reported.
        again = (await _submit(client, prompt, client_id="alice"))["prompt_id"]
        messages = await until_done(ws, again)
        cached = [m["data"] for m in messages if m["type"] == "execution_cached"][0]
        assert "3" in cached["nodes"]  # the engine lists the cached frontier (ancestors were not needed)
        assert [m["data"]["node"] for m in messages if m["type"] == "executing"] == [None]
        rerun = [m["data"] for m in messages if m["type"] == "executed"]
        assert rerun == [{**executed, "prompt_id": again}]
        assert "progress" not in kinds(messages)
        assert sorted(p.name for p in env.folders.output.iterdir()) == ["seq_00001_.png"]
        await ws.close()


async def test_events_go_to_their_client_and_status_to_all(env):
    async with served(env) as client:
        alice = await client.ws_connect("/ws?clientId=alice")
        bob = await client.ws_connect("/ws?clientId=bob")
        await receive_json(alice)
        await receive_json(bob)
        pid = (await _submit(client, wf.show_sum(2, 3), client_id="alice"))["prompt_id"]
        seen = kinds(await until_done(alice, pid))
        assert "executed" in seen
        bob_seen = []
        while len(bob_seen) < 2:  # queued -> 1 remaining, done -> 0 remaining
            bob_seen.append(await receive_json(bob))
        assert kinds(bob_seen) == ["status", "status"]
        assert bob_seen[-1]["data"]["status"]["exec_info"]["queue_remaining"] == 0


async def test_a_prompt_without_client_id_is_broadcast(env):
    async with served(env) as client:
        ws = await client.ws_connect("/ws")
        hello = await receive_json(ws)
        assert len(hello["data"]["sid"]) == 32
        pid = (await _submit(client, wf.show_sum(4, 4)))["prompt_id"]
        executed = [m for m in await until_done(ws, pid) if m["type"] == "executed"]
        assert executed[0]["data"]["output"] == {"text": ["8"]}


async def test_error_reports_node_and_traceback_and_the_next_job_runs(env):
    async with served(env) as client:
        ws = await client.ws_connect("/ws?clientId=c")
        await receive_json(ws)
        pid = (await _submit(client, wf.failing("bad things"), client_id="c"))["prompt_id"]
        messages = await until_done(ws, pid)
        (error,) = [m["data"] for m in messages if m["type"] == "execution_error"]
        assert error["node_id"] == "2" and error["node_type"] == "Fail"
        assert error["exception_message"] == "bad things"
        assert error["exception_type"].endswith("RuntimeError")
        assert any("bad things" in line for line in error["traceback"])
        assert error["executed"] == ["1"] and error["current_inputs"]["message"] == ["bad things"]
        assert {"prompt_id", "current_outputs", "timestamp"} <= set(error)
        entry = (await (await client.get(f"/history/{pid}")).json())[pid]
        assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
        job = await (await client.get(f"/api/jobs/{pid}")).json()
        assert job["status"] == "failed" and job["execution_error"]["node_id"] == "2"
        nxt = (await _submit(client, wf.show_sum(1, 1), client_id="c"))["prompt_id"]
        assert "execution_success" in kinds(await until_done(ws, nxt))


async def test_interrupt_ends_the_running_job_as_interrupted(env):
    async with served(env) as client:
        ws = await client.ws_connect("/ws?clientId=c")
        await receive_json(ws)
        pid = (await _submit(client, wf.gated(), client_id="c"))["prompt_id"]

        async def at_gate():
            msg = await receive_json(ws)
            return isinstance(msg, dict) and msg["type"] == "progress" and msg["data"]["node"] == "2"

        await wait_for(at_gate, what="the gate node to start")
        # A different prompt_id leaves the running job alone.
        assert (await client.post("/interrupt", json={"prompt_id": "someone-else"})).status == 200
        queue = await (await client.get("/queue")).json()
        assert [item[1] for item in queue["queue_running"]] == [pid]
        assert (await client.post("/interrupt", json={"prompt_id": pid})).status == 200
        messages = await until_done(ws, pid)
        (stopped,) = [m["data"] for m in messages if m["type"] == "execution_interrupted"]
        assert stopped["node_id"] == "2" and stopped["node_type"] == "Gate" and stopped["executed"] == ["1"]
        assert "execution_error" not in kinds(messages)
        entry = (await (await client.get(f"/history/{pid}")).json())[pid]
        assert entry["status"]["status_str"] == "interrupted"
        assert (await (await client.get(f"/api/jobs/{pid}")).json())["status"] == "cancelled"
        # Interrupting when nothing runs is a no-op (also with an empty body, as the editor sends it).
        assert (await client.post("/interrupt")).status == 200


async def test_job_timeout_ends_a_run_like_an_interrupt(env):
    async with served(env, job_timeout=0.2) as client:
        ws = await client.ws_connect("/ws?clientId=c")
        await receive_json(ws)
        pid = (await _submit(client, wf.gated(), client_id="c"))["prompt_id"]
        messages = await until_done(ws, pid)
        (stopped,) = [m["data"] for m in messages if m["type"] == "execution_interrupted"]
        assert stopped["reason"] == "timeout"


async def test_reconnect_with_the_same_client_id_gets_the_running_state(env):
    async with served(env) as client:
        ws = await client.ws_connect("/ws?clientId=carol")
        await receive_json(ws)
        pid = (await _submit(client, wf.gated(), client_id="carol"))["prompt_id"]

        async def at_gate():
            msg = await receive_json(ws)
            return isinstance(msg, dict) and msg["type"] == "progress"

        await wait_for(at_gate, what="the gate node to start")
        await ws.close()
        again = await client.ws_connect("/ws?clientId=carol")
        replay = [await receive_json(again) for _ in range(5)]
        assert kinds(replay) == ["status", "execution_start", "execution_cached", "executing", "progress"]
        assert replay[0]["data"]["sid"] == "carol"
        assert replay[3]["data"] == {"node": "2", "display_node": "2", "prompt_id": pid}
        env.gate.set()
        messages = await until_done(again, pid)
        assert "execution_success" in kinds(messages)
        assert (await (await client.get(f"/history/{pid}")).json())[pid]["status"]["completed"] is True


async def test_a_disconnected_client_still_gets_its_results_in_history(env):
    async with served(env) as client:
        ws = await client.ws_connect("/ws?clientId=gone")
        await receive_json(ws)
        await ws.close()
        pid = (await _submit(client, wf.save(prefix="gone"), client_id="gone"))["prompt_id"]

        async def finished():
            resp = await client.get(f"/history/{pid}")
            return (await resp.json()).get(pid)

        entry = await wait_for(finished, what="the job to finish")
        assert entry["outputs"]["2"]["images"][0]["filename"] == "gone_00001_.png"


async def test_binary_previews_only_when_asked_for(env):
    async with served(env) as client:
        ws = await client.ws_connect("/ws?clientId=p")
        await receive_json(ws)
        pid = (await _submit(client, wf.previewing(3), client_id="p"))["prompt_id"]
        assert not [m for m in await until_done(ws, pid) if isinstance(m, bytes)]
        pid = (await _submit(client, wf.previewing(4), client_id="p", extra_data={"preview_method": "auto"}))[
            "prompt_id"]
        frames = [m for m in await until_done(ws, pid) if isinstance(m, bytes)]
        assert len(frames) == 4
        event, fmt = struct.unpack(">II", frames[0][:8])
        assert (event, fmt) == (1, 1) and frames[0][8:10] == b"\xff\xd8"  # a JPEG


async def test_server_wide_preview_method_sends_previews(env):
    async with served(env, preview_method="auto") as client:
        ws = await client.ws_connect("/ws?clientId=p")
        await receive_json(ws)
        pid = (await _submit(client, wf.previewing(2), client_id="p"))["prompt_id"]
        assert len([m for m in await until_done(ws, pid) if isinstance(m, bytes)]) == 2


async def test_client_prompt_id_is_idempotent(env):
    async with served(env) as client:
        prompt = wf.save(prefix="once")
        first = await _submit(client, prompt, prompt_id="job-1")
        second = await _submit(client, prompt, prompt_id="job-1")
        assert first == {**second, "node_errors": first["node_errors"]}
        assert first["prompt_id"] == "job-1"

        async def finished():
            return (await (await client.get("/history/job-1")).json()).get("job-1")

        await wait_for(finished, what="job-1 to finish")
        third = await _submit(client, prompt, prompt_id="job-1")  # after it ran: still the same job
        assert third["prompt_id"] == "job-1" and third["number"] == first["number"]
        history = await (await client.get("/history")).json()
        assert list(history) == ["job-1"]
        assert [p.name for p in env.folders.output.iterdir()] == ["once_00001_.png"]
        conflict = await client.post("/prompt", json={"prompt": wf.save(prefix="other"), "prompt_id": "job-1"})
        assert conflict.status == 409
        assert (await conflict.json())["error"]["type"] == "prompt_id_conflict"
        bad = await client.post("/prompt", json={"prompt": prompt, "prompt_id": "../x"})
        assert bad.status == 400


async def test_blocking_run_returns_outputs(env):
    async with served(env) as client:
        resp = await client.post("/api/run", json={"prompt": wf.show_sum(20, 22)})
        body = await resp.json()
        assert resp.status == 200, body
        assert body["status"] == "success" and body["outputs"] == {"3": {"text": ["42"]}}
        resp = await client.post("/api/run", json={"prompt": wf.failing("nope")})
        body = await resp.json()
        assert body["status"] == "error" and body["error"]["node_id"] == "2"
        resp = await client.post("/api/run?timeout=0", json={"prompt": wf.gated(), "prompt_id": "slow"})
        assert resp.status == 202
        assert (await resp.json())["prompt_id"] == "slow" and resp.headers["Location"] == "/api/jobs/slow"
        env.gate.set()
        resp = await client.post("/api/run?timeout=10", json={"prompt": wf.gated(), "prompt_id": "slow"})
        assert resp.status == 200 and (await resp.json())["status"] == "success"


async def test_queue_order_front_and_number(env):
    async with served(env) as client:
        blocker = (await _submit(client, wf.gated(0)))["prompt_id"]

        async def running():
            return (await (await client.get("/queue")).json())["queue_running"]

        await wait_for(running, what="the blocker to run")
        a = (await _submit(client, wf.show_sum(1, 0)))["prompt_id"]
        b = (await _submit(client, wf.show_sum(2, 0)))["prompt_id"]
        c = (await _submit(client, wf.show_sum(3, 0), front=True))["prompt_id"]
        d = (await _submit(client, wf.show_sum(4, 0), number=-1000))["prompt_id"]
        queue = await (await client.get("/queue")).json()
        assert [item[1] for item in queue["queue_pending"]] == [d, c, a, b]
        assert queue["queue_running"][0][1] == blocker and len(queue["queue_running"][0]) == 5
        assert (await (await client.get("/prompt")).json()) == {"exec_info": {"queue_remaining": 5}}
        env.gate.set()

        async def all_done():
            history = await (await client.get("/history")).json()
            return len(history) == 5 and history

        history = await wait_for(all_done, what="every job to finish")
        assert list(history) == [blocker, d, c, a, b]


async def test_concurrent_retries_with_one_prompt_id_queue_one_job(env):
    import asyncio

    async with served(env) as client:
        body = {"prompt": wf.save(prefix="many"), "prompt_id": "dup"}
        responses = await asyncio.gather(*(client.post("/prompt", json=body) for _ in range(20)))
        assert {r.status for r in responses} == {200}
        assert {(await r.json())["prompt_id"] for r in responses} == {"dup"}
        resp = await client.post("/api/run?timeout=10.5", json=body)
        assert (await resp.json())["status"] == "success"
        assert list(await (await client.get("/history")).json()) == ["dup"]
        assert [p.name for p in env.folders.output.iterdir()] == ["many_00001_.png"]
        assert (await client.post("/api/run?timeout=nan", json=body)).status == 400
