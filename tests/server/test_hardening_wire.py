"""Hardening on the wire: values that would poison storage, malformed headers, file-system edge cases,
produced values over the limits, websockets that never read. Always a 4xx naming the problem, never a 500."""

from __future__ import annotations

import asyncio
import gzip
import json

import pytest

from graph.builder import GraphBuilder
from server.ws import Hub, SendBuffer
from tests.server import workflows as wf
from tests.server.conftest import served, wait_for


async def _post(client, path: str, body: bytes, **headers: str):
    resp = await client.post(path, data=body, headers={"Content-Type": "application/json", **headers})
    return resp.status, await resp.text()


# -- 2. values that poison storage ---------------------------------------------------------------
@pytest.mark.parametrize(("body", "needle"), [
    ('{"prompt": {"1": {"class_type": "Text", "inputs": {"text": %s}}}}' % ("[" * 1000 + "]" * 1000), "nested"),
    ('{"prompt": {"1": {"class_type": "IntConst", "inputs": {"value": 1}}}, "extra_data": {"x": %s}}'
     % ("{\"a\":" * 150 + "1" + "}" * 150), "nested"),
    ('{"prompt": {"1": {"class_type": "IntConst", "inputs": {"value": 1}}}, "number": 1e309}', "finite"),
    ('{"prompt": {"1": {"class_type": "FloatConst", "inputs": {"value": -1e400}}}}', "finite"),
    ('{"prompt": {"1": {"class_type": "IntConst", "inputs": {"value": 1}}}, "number": 1%s}' % ("0" * 400), "2^64"),
    ('{"prompt": {"1": {"class_type": "IntConst", "inputs": {"value": 1}}}, "extra_data": {"n": -9%s}}'
     % ("9" * 30), "2^64"),
])
async def test_values_that_cannot_be_served_back_are_refused_at_ingest(env, body, needle):
    async with served(env) as client:
        status, text = await _post(client, "/prompt", body.encode())
        assert status == 400 and needle in text, text
        for path in ("/history", "/api/jobs", "/queue"):
            resp = await client.get(path)
            assert resp.status == 200, path
            assert "Infinity" not in await resp.text()


async def test_deep_but_sane_values_are_kept_and_served_back(env):
    deep: object = "leaf"
    for _ in range(40):
        deep = {"k": [deep]}
    async with served(env) as client:
        body = {"prompt": wf.show_sum(), "extra_data": {"deep": deep}, "number": 1e300, "prompt_id": "deep"}
        assert (await client.post("/prompt", json=body)).status == 200
        await wait_for(lambda: _done(client, "deep"), what="the job")
        job = await (await client.get("/api/jobs/deep")).json()
        assert job["workflow"]["extra_data"]["deep"] == deep and job["priority"] == 1e300
        assert (await client.get("/history")).status == 200


async def _done(client, pid: str) -> bool:
    return (await (await client.get(f"/api/jobs/{pid}")).json())["status"] == "completed"


# -- 3. malformed Host and Origin headers ----------------------------------------------------------
@pytest.mark.parametrize("host", ["localhost:abc", "127.0.0.1:99999", "[::1", "[::1]:x", "a b", "u@127.0.0.1",
                                  "127.0.0.1:-1"])
async def test_malformed_host_header_is_a_400(env, host):
    async with served(env) as client:
        resp = await client.get("/queue", headers={"Host": host})
        assert resp.status == 400 and (await resp.json())["error"]["type"] == "bad_host"


@pytest.mark.parametrize("origin", ["http://localhost:abc", "http://127.0.0.1:99999", "http://[::1", "http://[::1]:x",
                                    "http://", "null", "http://127.0.0.1:8188/path?q"])
async def test_malformed_origin_header_is_refused_not_a_500(env, origin):
    async with served(env) as client:
        resp = await client.post("/prompt", json={"prompt": wf.show_sum()}, headers={"Origin": origin})
        assert resp.status == 403 and (await resp.json())["error"]["type"] == "forbidden_origin"


async def test_well_formed_loopback_origin_still_works(env):
    async with served(env) as client:
        host = f"127.0.0.1:{client.port}"
        resp = await client.get("/queue", headers={"Origin": f"http://{host}", "Host": host})
        assert resp.status == 200
        v6 = f"[::1]:{client.port}"
        resp = await client.get("/queue", headers={"Origin": f"http://{v6}", "Host": v6})
        assert resp.status == 200


# -- 6. produced values obey the limits typed-in values obey ---------------------------------------
async def test_a_produced_text_over_the_limit_fails_its_node_and_stores_nothing_huge(env):
    g = GraphBuilder()
    text = g.node("Text", text="x" * 3000)
    for _ in range(12):  # doubles each time: 3000 * 4096 characters
        text = g.node("Concat", a=text, b=text)
    g.node("Show", value=text)
    async with served(env) as client:
        resp = await client.post("/prompt", json={"prompt": g.build(), "prompt_id": "bomb"})
        assert resp.status == 200
        await wait_for(lambda: _status(client, "bomb", "failed"), what="the job to fail")
        raw = await (await client.get("/history/bomb")).text()
        assert len(raw) < 200_000
        error = json.loads(raw)["bomb"]["status"]["messages"][-1][1]
        assert error["node_type"] == "Concat" and "over the limit of 1,000,000" in error["exception_message"]


async def _status(client, pid: str, wanted: str) -> bool:
    return (await (await client.get(f"/api/jobs/{pid}")).json())["status"] == wanted


# -- 7. a websocket that never reads ---------------------------------------------------------------
def test_send_buffer_is_bounded_in_bytes_dropping_previews_first():
    buf = SendBuffer(1000, max_bytes=10_000)
    assert buf.offer("t" * 100, droppable=False)
    for _ in range(20):
        assert buf.offer(b"p" * 1000, droppable=True)
    assert buf.bytes <= 10_000 and buf.dropped_previews == 11
    assert buf.offer("u" * 5000, droppable=False)  # previews make room for text
    assert buf.bytes <= 10_000
    assert buf.offer("v" * 9000, droppable=False) is False  # text alone cannot fit: the socket must go
    assert buf.offer("é" * 3000, droppable=False) is False  # 3,000 characters but up to 12,000 bytes


class _StuckSocket:
    """A peer that never reads: every send waits forever."""

    def __init__(self) -> None:
        self.closed = False
        self.close_code = None

    async def send_str(self, _: str) -> None:
        await asyncio.Event().wait()

    async def send_bytes(self, _: bytes) -> None:
        await asyncio.Event().wait()

    async def close(self, *, code: int, message: bytes) -> None:
        self.closed, self.close_code = True, code


async def test_a_socket_that_never_reads_holds_bounded_bytes_then_is_closed():
    from server.ws import Client

    hub = Hub(capacity=10_000, max_bytes=1_000_000, queue_remaining=lambda: 0)
    sock = _StuckSocket()
    client = Client("slow", sock, hub.capacity, hub.max_bytes)  # type: ignore[arg-type]
    hub.clients["slow"] = client
    client.task = asyncio.get_running_loop().create_task(client.pump())
    for _ in range(200):
        hub.send_preview(b"\0" * 100_000, "slow")  # 20 MB offered
    assert client.buffer.bytes <= 1_000_000
    for i in range(2000):
        hub.send("progress", {"value": i, "pad": "x" * 1000}, "slow")
    await asyncio.sleep(0)
    assert sock.closed and client.buffer.bytes == 0
    client.task.cancel()


# -- 8. file-system edge cases ---------------------------------------------------------------------
async def test_file_system_edge_cases_are_4xx(env):
    long_name = "n" * 300 + ".png"
    async with served(env) as client:
        resp = await client.get("/view", params={"filename": long_name, "type": "input"})
        assert resp.status in (400, 404) and resp.status != 500
        resp = await client.post(f"/userdata/{long_name[:-4]}.json", data=b"{}")
        assert resp.status == 400 and "longer than" in (await resp.json())["error"]["message"]
        assert (await client.post("/userdata/a.json", data=b"{}")).status == 200
        resp = await client.post("/userdata/a.json%2Finner.json", data=b"{}")
        assert resp.status == 409, await resp.text()
        assert (await client.post("/userdata/dir%2Fx.json", data=b"{}")).status == 200
        resp = await client.post("/userdata/a.json/move/dir?overwrite=true")
        assert resp.status == 409, await resp.text()
        assert (env.folders.user / "default" / "a.json").read_bytes() == b"{}"  # nothing lost
        (env.folders.input / "file").write_bytes(b"x")
        resp = await client.post("/upload/image", data=_png(subfolder="file"))
        assert resp.status == 409, await resp.text()
        resp = await client.post("/upload/image", data=_png(long_name))
        assert resp.status == 400, await resp.text()
        corrupt = bytearray(gzip.compress(json.dumps({"prompt": wf.show_sum()}).encode()))
        corrupt[10:20] = b"\xff" * 10
        status, text = await _post(client, "/prompt", bytes(corrupt), **{"Content-Encoding": "gzip",
                                                                            "Connection": "close"})
        assert status == 400 and "could not be read" in text
        good = gzip.compress(json.dumps({"prompt": wf.show_sum()}).encode())
        status, _ = await _post(client, "/prompt", good, **{"Content-Encoding": "gzip"})
        assert status == 200


def _png(name: str = "a.png", **fields: str):
    import io

    from aiohttp import FormData
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, format="PNG")
    form = FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field("image", buf.getvalue(), filename=name, content_type="image/png")
    return form


# -- 10. ?token= only where browsers cannot send a header ------------------------------------------
async def test_query_token_is_accepted_only_on_the_websocket(env):
    async with served(env, auth_token="s3cret") as client:
        assert (await client.get("/queue?token=s3cret")).status == 401
        assert (await client.get("/api/queue?token=s3cret")).status == 401
        assert (await client.get("/queue", headers={"Authorization": "Bearer s3cret"})).status == 200
        ws = await client.ws_connect("/ws?clientId=x&token=s3cret")
        await ws.close()


# -- found by the upload fuzzer: a deeply nested original_ref was a RecursionError (500) -----------
async def test_a_deeply_nested_mask_reference_is_a_400(env):
    from PIL import Image

    Image.new("RGBA", (2, 2)).save(env.folders.input / "a.png")
    async with served(env) as client:
        for ref in ("[" * 5000, '{"filename": ' * 3000):
            resp = await client.post("/upload/mask", data=_png("m.png", original_ref=ref))
            assert resp.status == 400 and "original_ref" in (await resp.json())["error"]["message"]


# -- found while fuzzing: the hidden temporary of a legal multi-byte name was over 255 bytes ------
async def test_a_legal_multibyte_name_of_253_bytes_can_be_written(env):
    from urllib.parse import quote

    name = "\U0001f600" * 62 + ".json"  # 253 bytes: legal, but its temporary was counted in characters
    async with served(env) as client:
        resp = await client.post(f"/userdata/{quote(name)}", data=b"{}")
        assert resp.status == 200, await resp.text()
        assert (env.folders.user / "default" / name).read_bytes() == b"{}"
