"""Server load: submit->done latency of a fully cached workflow, and 200 websocket clients.

    python benchmarks/server_load.py [--runs 200] [--clients 200] [--steps 50]

Starts the real server (this file with --serve) in a subprocess on a free loopback port, then:
  1. latency: the same small workflow is submitted `runs` times after a first run fills the cache;
     each is timed from POST /prompt to its `executing: null` on the websocket (goal: median < 20 ms).
     Baselines measured in the same run: a bare GET /prompt round trip, and the engine alone
     (in-process executor.run of the same cached workflow).
  2. fan-out: `clients` websockets connect, one broadcast prompt reports `steps` progress events, and
     every client must receive every message (none dropped) before its `executing: null`.
Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graph import (  # noqa: E402
    Executor,
    Folders,
    InputSpec,
    IntInput,
    Node,
    NodeRegistry,
    NodeResult,
    NodeSchema,
    OutputSpec,
    RecentRunsCache,
    RunRequest,
    parse_api_workflow,
)

LATENCY_GOAL_MS = 20.0


class Const(Node):
    SCHEMA = NodeSchema(node_type="Const", inputs=[IntInput(name="value")], outputs=[OutputSpec(type="INT")])

    def execute(self, ctx, *, value):
        return (value,)


class Steps(Node):
    """Reports `steps` progress events, like a sampler."""

    SCHEMA = NodeSchema(node_type="Steps", outputs=[OutputSpec(type="INT")],
                        inputs=[InputSpec(name="value", type="INT"),
                                IntInput(name="steps", default=1, min=1, max=10_000)])

    def fingerprint(self, *, steps):
        return float("nan")  # always runs

    def execute(self, ctx, *, value, steps):
        for i in range(1, steps + 1):
            ctx.progress(i, steps)
        return (value,)


class Out(Node):
    SCHEMA = NodeSchema(node_type="Out", output_node=True, inputs=[InputSpec(name="value", type="INT")])

    def execute(self, ctx, *, value):
        return NodeResult(ui={"text": [str(value)]})


def registry() -> NodeRegistry:
    reg = NodeRegistry()
    reg.register_all([Const, Steps, Out], source="benchmark")
    return reg


def cached_workflow() -> dict[str, Any]:
    return {"1": {"class_type": "Const", "inputs": {"value": 1}},
            "2": {"class_type": "Const", "inputs": {"value": 2}},
            "3": {"class_type": "Out", "inputs": {"value": ["1", 0]}},
            "4": {"class_type": "Out", "inputs": {"value": ["2", 0]}}}


def progress_workflow(steps: int) -> dict[str, Any]:
    return {"1": {"class_type": "Const", "inputs": {"value": 7}},
            "2": {"class_type": "Steps", "inputs": {"value": ["1", 0], "steps": steps}},
            "3": {"class_type": "Out", "inputs": {"value": ["2", 0]}}}


# -- the server side -------------------------------------------------------------------------------
def serve(root: Path, port: int) -> int:
    from dataclasses import dataclass

    from server.app import serve as run_server
    from server.options import ServerOptions

    @dataclass(frozen=True)
    class Settings:
        folders: Folders
        listen: str = "127.0.0.1"
        port: int = 0

    folders = Folders.under(root)
    reg = registry()
    executor = Executor(reg, cache=RecentRunsCache(1), folders=folders)
    return run_server(Settings(folders=folders, port=port), reg, executor, ServerOptions(max_queue=100_000))


# -- the client side -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_until_up(session: Any, base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the server exited during start-up")
        try:
            async with session.get(f"{base}/queue") as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.05)
    raise SystemExit("the server did not start within 30 s")


async def until_done(ws: Any, prompt_id: str) -> int:
    """Messages received up to and including this prompt's `executing: null`."""
    count = 0
    while True:
        msg = await ws.receive(timeout=60)
        count += 1
        if msg.type.name != "TEXT":
            if msg.type.name == "BINARY":
                continue
            raise RuntimeError(f"websocket ended: {msg.type}")
        data = json.loads(msg.data)
        if data["type"] == "executing" and data["data"]["node"] is None and data["data"]["prompt_id"] == prompt_id:
            return count


async def latency(session: Any, base: str, runs: int) -> dict[str, float]:
    ws = await session.ws_connect(f"{base}/ws?clientId=bench")
    await ws.receive()
    prompt = cached_workflow()
    async with session.post(f"{base}/prompt", json={"prompt": prompt, "client_id": "bench"}) as resp:
        first = (await resp.json())["prompt_id"]
    await until_done(ws, first)
    times: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        async with session.post(f"{base}/prompt", json={"prompt": prompt, "client_id": "bench"}) as resp:
            pid = (await resp.json())["prompt_id"]
        await until_done(ws, pid)
        times.append((time.perf_counter() - start) * 1000)
    rtt: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        async with session.get(f"{base}/prompt") as resp:
            await resp.read()
        rtt.append((time.perf_counter() - start) * 1000)
    await ws.close()
    times.sort()
    return {"median": statistics.median(times), "p90": times[int(len(times) * 0.9) - 1], "max": times[-1],
            "rtt": statistics.median(rtt)}


def engine_alone(runs: int) -> float:
    """Median ms of validate + run of the same cached workflow in-process (the engine's share)."""
    reg = registry()
    executor = Executor(reg, cache=RecentRunsCache(1))
    prompt = cached_workflow()
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        validation = executor.validate(parse_api_workflow(prompt))
        executor.run(RunRequest(validation=validation, run_id=str(i)))
        if i:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def fan_out(session: Any, base: str, clients: int, steps: int) -> dict[str, float]:
    start = time.perf_counter()
    sockets = await asyncio.gather(*(session.ws_connect(f"{base}/ws?clientId=fan{i}") for i in range(clients)))
    for ws in sockets:
        await ws.receive()  # the status greeting
    connect_s = time.perf_counter() - start
    start = time.perf_counter()
    async with session.post(f"{base}/prompt", json={"prompt": progress_workflow(steps)}) as resp:
        pid = (await resp.json())["prompt_id"]  # no client_id: its events go to every socket
    counts = await asyncio.gather(*(until_done(ws, pid) for ws in sockets))
    deliver_s = time.perf_counter() - start
    await asyncio.gather(*(ws.close() for ws in sockets))
    # status (queued), execution_start, execution_cached, executing x3, progress x steps, executed,
    # execution_success, executing null; status broadcasts may add a few.
    expected_min = 1 + 2 + 3 + steps + 1 + 1 + 1
    return {"connect_s": connect_s, "deliver_s": deliver_s, "min": min(counts), "max": max(counts),
            "expected_min": expected_min, "complete": sum(c >= expected_min for c in counts)}


async def client_main(args: argparse.Namespace) -> None:
    import aiohttp

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="sumie-bench-") as tmp:
        proc = subprocess.Popen([sys.executable, __file__, "--serve", "--root", tmp, "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                await wait_until_up(session, base, proc)
                lat = await latency(session, base, args.runs)
                engine = engine_alone(args.runs)
                fan = await fan_out(session, base, args.clients, args.steps)
        finally:
            proc.terminate()
            proc.wait(20)
    print(f"submit->done, fully cached workflow ({args.runs} runs):")
    print(f"  median {lat['median']:.2f} ms   p90 {lat['p90']:.2f} ms   max {lat['max']:.2f} ms")
    print(f"  goal < {LATENCY_GOAL_MS:.0f} ms: ratio {lat['median'] / LATENCY_GOAL_MS:.2f} "
          f"({'met' if lat['median'] < LATENCY_GOAL_MS else 'MISSED'})")
    print(f"  baseline GET /prompt round trip {lat['rtt']:.2f} ms: ratio {lat['median'] / lat['rtt']:.1f}x")
    print(f"  baseline engine alone (validate + cached run, in-process) {engine:.3f} ms: "
          f"ratio {lat['median'] / engine:.0f}x")
    dropped = args.clients - fan["complete"]
    print(f"{args.clients} websocket clients, one broadcast prompt with {args.steps} progress steps:")
    print(f"  connected in {fan['connect_s'] * 1000:.0f} ms; all events delivered in {fan['deliver_s'] * 1000:.0f} ms")
    print(f"  messages per client: min {fan['min']} max {fan['max']} (at least {fan['expected_min']} expected)")
    print(f"  clients missing messages: {dropped} ({'none dropped' if dropped == 0 else 'DROPPED'})")
    total = fan["min"] * args.clients
    print(f"  throughput {total / fan['deliver_s']:.0f} messages/s; "
          f"per-client delivery {fan['deliver_s'] * 1000 / args.steps:.2f} ms per progress step")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.root, args.port)
    asyncio.run(client_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
