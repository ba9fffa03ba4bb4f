"""Scale-out on Ray: throughput with 1 and 2 workers, routing loads, and killed workers.

    flock /work/wt/bench.lock python benchmarks/scale_out.py [--jobs 16] [--rounds 3] [--kills 20]

Needs the `ray` extra. Everything runs on this machine: the server in this process on loopback, a
private Ray instance bound to 127.0.0.1 with one worker actor per CPU core given (`--worker-cpus`), and
tiny random SD1 checkpoints written to a temporary models folder. It prints:
  1. throughput of `jobs` independent txt2img jobs (by default 160x160, 8 steps: about 0.2 s of CPU on
     one core, a small real workload rather than pure overhead) through the in-process worker (one
     torch thread), 1 worker actor and 2 worker actors (one core each), `rounds` times interleaved, each
     configuration on a fresh server: jobs/s, the paired per-round ratios (median and spread), and where
     the CPU went per job: this process (the front door: HTTP, store, relay, websocket, the Ray driver;
     and the benchmark's own client), Ray's daemons, and the worker actors. Clients learn of finished
     jobs from the websocket, as a real client does;
  2. routing: a mixed queue over 3 checkpoints on 2 workers holding one checkpoint each, checkpoint
     loads with affinity routing vs round-robin (real runs), and the same policies on a simulated
     cluster of 4 workers and 200 jobs;
  3. faults: `kills` times, a job's worker actor is killed with SIGKILL mid-job; every job must complete
     exactly once (one execution_success on the websocket, one history entry, one output file), with
     the time from the kill to the job running again elsewhere and to its completion.
The load average is printed at the start and the end: other work on the machine competes for its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from aiohttp import WSMsgType  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

import main  # noqa: E402  (the module, not __main__: worker processes import the factory by name)
from graph import Folders  # noqa: E402
from nodes.models.random_checkpoint import write_random_checkpoint  # noqa: E402
from server.app import create_app  # noqa: E402
from server.cluster import make_cluster_worker  # noqa: E402
from server.cluster.cli import WorkerPlan  # noqa: E402
from server.cluster.routing import AffinityRouter, RoundRobinRouter, simulate  # noqa: E402
from server.options import ServerOptions  # noqa: E402

CHECKPOINTS = ("tiny-a.safetensors", "tiny-b.safetensors", "tiny-c.safetensors")


def prompt(ckpt: str, seed: int, steps: int, size: int, prefix: str) -> dict[str, Any]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox in the snow", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler",
              "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0],
              "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["8", 0]}},
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> set[int]:
    """Every process below `root` (Ray's daemons and worker processes below this one)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.add(child)
            todo.append(child)
    return out


@dataclass
class Sample:
    """One timed batch of jobs on one configuration: jobs/s and CPU seconds per job by where they went."""

    rate: float
    server_cpu: float  # this process: the front door, the Ray driver, the benchmark's client
    ray_cpu: float  # Ray's daemons and idle worker processes
    worker_cpu: float  # the worker actors (the jobs themselves)


class Bench:
    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.args = args
        self.folders = Folders.under(root)
        for name in ("input", "output", "temp", "user", "models"):
            getattr(self.folders, name).mkdir(parents=True, exist_ok=True)
        ckpts = self.folders.models / "checkpoints"
        ckpts.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(CHECKPOINTS):
            write_random_checkpoint(ckpts / name, kind="sd1", seed=i, size="tiny")
        self.settings = main.Settings(folders=self.folders, cache="recent:1")
        self.plugins = main.PluginSettings(enabled=False)
        self.registry = main.build_registry(folders=self.folders)
        self.seed = 0

    @contextlib.asynccontextmanager
    async def server(self, plan: WorkerPlan | None) -> AsyncIterator[TestClient]:
        make_worker = None
        if plan is not None:
            factory = functools.partial(main.build_worker_executor, self.settings, self.plugins)
            make_worker = functools.partial(make_cluster_worker, plan, factory, num_cpus=self.args.cpus)
        executor = main.build_executor(self.settings, self.registry)
        app = create_app(self.settings, self.registry, executor, options=ServerOptions(max_attempts=2),
                         web_root=None, make_worker=make_worker)
        async with TestClient(TestServer(app)) as client:
            if plan is not None:
                await self.ready(client, plan.count or 1)
            yield client

    async def ready(self, client: TestClient, count: int, timeout: float = 300) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = (await (await client.get("/queue")).json()).get("workers", [])
            if sum(w.get("status") == "ready" for w in workers) >= count:
                return workers
            await asyncio.sleep(0.1)
        raise SystemExit("the workers did not start")

    async def submit(self, client: TestClient, ckpt: str = CHECKPOINTS[0], *, steps: int | None = None,
                     size: int | None = None) -> str:
        self.seed += 1
        pid = f"job-{self.seed}"
        body = {"prompt": prompt(ckpt, self.seed, steps or self.args.steps, size or self.args.size, pid),
                "prompt_id": pid, "client_id": "bench"}
        resp = await client.post("/prompt", json=body)
        if resp.status != 200:
            raise SystemExit(f"submit failed: {resp.status} {await resp.text()}")
        return pid

    async def throughput(self, client: TestClient, workers: int) -> Sample:
        """Warm every worker up (its checkpoint loaded), then time `jobs` jobs submitted at once; a job is
        done when the websocket says so."""
        ws = await client.ws_connect("/ws?clientId=bench")
        finished: dict[str, str] = {}
        changed = asyncio.Event()

        async def listen() -> None:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = msg.json()
                    if data["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                        finished[data["data"]["prompt_id"]] = data["type"]
                        changed.set()

        async def run(count: int) -> None:
            pids = [await self.submit(client) for _ in range(count)]
            while not all(p in finished for p in pids):
                changed.clear()
                await asyncio.wait_for(changed.wait(), 600)
            failed = [p for p in pids if finished[p] != "execution_success"]
            if failed:
                raise SystemExit(f"jobs failed: {failed}")

        listener = asyncio.get_running_loop().create_task(listen())
        try:
            await run(2 * workers)  # each worker loads the checkpoint
            actors = {w["pid"] for w in (await (await client.get("/queue")).json()).get("workers", [])}
            ray = descendants(os.getpid()) - actors
            before = (cpu_seconds(os.getpid()), sum(map(cpu_seconds, ray)), sum(map(cpu_seconds, actors)))
            start = time.perf_counter()
            await run(self.args.jobs)
            rate = self.args.jobs / (time.perf_counter() - start)
            after = (cpu_seconds(os.getpid()), sum(map(cpu_seconds, ray)), sum(map(cpu_seconds, actors)))
        finally:
            listener.cancel()
            await ws.close()
        per_job = [(b - a) / self.args.jobs for a, b in zip(before, after, strict=True)]
        return Sample(rate, *per_job)

    async def wait_done(self, client: TestClient, pids: list[str], timeout: float = 600) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        done: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            for pid in [p for p in pids if p not in done]:
                job = await (await client.get(f"/api/jobs/{pid}")).json()
                if job["status"] in ("completed", "failed", "cancelled"):
                    if job["status"] != "completed":
                        raise SystemExit(f"{pid} {job['status']}: {job.get('execution_error')}")
                    done[pid] = job
            if len(done) == len(pids):
                return [done[p] for p in pids]
            await asyncio.sleep(0.05)
        raise SystemExit(f"jobs not done in {timeout} s")

    async def routing(self, client: TestClient) -> tuple[int, float]:
        rng = random.Random(11)
        mix = [rng.choice(CHECKPOINTS) for _ in range(self.args.mixed)]
        before = await self.loads(client)
        start = time.perf_counter()
        # Longer jobs than the throughput run's, so the queue fills up behind the busy workers.
        pids = [await self.submit(client, ckpt, steps=self.args.mixed_steps, size=self.args.small_size) for ckpt in mix]
        await self.wait_done(client, pids)
        return await self.loads(client) - before, time.perf_counter() - start

    async def loads(self, client: TestClient) -> int:
        workers = await self.ready(client, 2)
        return sum(int(w.get("model_loads", 0)) for w in workers)

    async def faults(self, client: TestClient) -> dict[str, Any]:
        successes: Counter[str] = Counter()
        ws = await client.ws_connect("/ws?clientId=bench")

        async def listen() -> None:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    data = msg.json()
                    if data["type"] == "execution_success":
                        successes[data["data"]["prompt_id"]] += 1

        listener = asyncio.get_running_loop().create_task(listen())
        rng = random.Random(5)
        to_rerun, to_done, to_replaced, pids = [], [], [], []
        for _ in range(self.args.kills):
            await self.ready(client, 2)
            pid = await self.submit(client, steps=self.args.kill_steps, size=self.args.small_size)
            pids.append(pid)
            await self.running_on(client, pid)
            await asyncio.sleep(rng.uniform(0.1, 0.4))
            worker = await self.running_on(client, pid, timeout=1)  # still on it: the kill lands mid-job
            os.kill(worker["pid"], signal.SIGKILL)
            killed = time.time()
            [job] = await self.wait_done(client, [pid])
            to_rerun.append(job["execution_start_time"] / 1000 - killed)
            to_done.append(job["execution_end_time"] / 1000 - killed)
            if job["attempts"] != 2:
                raise SystemExit(f"{pid}: {job['attempts']} attempts, expected the killed one and one more")
            await self.ready(client, 2)
            to_replaced.append(time.time() - killed)
        await asyncio.sleep(0.5)
        listener.cancel()
        await ws.close()
        history = await (await client.get("/history")).json()
        files = Counter(p.name.split("_")[0] for p in self.folders.output.glob("job-*.png"))
        return {"jobs": len(pids), "completed_once": sum(successes[p] == 1 for p in pids),
                "in_history": sum(p in history for p in pids), "one_file": sum(files[p] == 1 for p in pids),
                "to_rerun": to_rerun, "to_done": to_done, "to_replaced": to_replaced}

    async def running_on(self, client: TestClient, pid: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers = (await (await client.get("/queue")).json())["workers"]
            for worker in workers:
                if worker.get("current_job") == pid and worker.get("pid"):
                    return worker
            await asyncio.sleep(0.02)
        raise SystemExit(f"{pid} never started")


def _ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def _line(name: str, samples: list[Sample]) -> str:
    rates = " ".join(f"{s.rate:5.2f}" for s in samples)
    cpu = (f"CPU/job: this process {statistics.median(s.server_cpu for s in samples) * 1000:5.1f} ms, "
           f"Ray daemons {statistics.median(s.ray_cpu for s in samples) * 1000:5.1f} ms, "
           f"workers {statistics.median(s.worker_cpu for s in samples) * 1000:5.0f} ms")
    return f"{name:<17} jobs/s per round: {rates}  (median {statistics.median(s.rate for s in samples):5.2f}); {cpu}"


async def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)  # the in-process worker gets the one core each actor gets
    torch.set_num_interop_threads(1)
    cpus = args.worker_cpus
    with tempfile.TemporaryDirectory(prefix="sumie-scale-") as tmp:
        bench = Bench(Path(tmp), args)
        print(f"throughput: {args.jobs} txt2img jobs, tiny SD1, {args.size}x{args.size}, {args.steps} steps, "
              f"{args.rounds} rounds; {cpus} core(s) per worker, 1 torch thread in-process; machine has "
              f"{os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start")
        plans = {"in-process": None, "Ray, 1 worker": WorkerPlan(mode="local", count=1, cpus_per_worker=cpus),
                 "Ray, 2 workers": WorkerPlan(mode="local", count=2, cpus_per_worker=cpus)}
        samples: dict[str, list[Sample]] = {name: [] for name in plans}
        for round_ in range(args.rounds):
            order = list(plans) if round_ % 2 == 0 else list(plans)[::-1]  # neither side always goes first
            for name in order:
                async with bench.server(plans[name]) as client:
                    samples[name].append(await bench.throughput(client, (plans[name] and plans[name].count) or 1))
        for name, taken in samples.items():
            print(_line(name, taken))
        one, two, inproc = samples["Ray, 1 worker"], samples["Ray, 2 workers"], samples["in-process"]
        scaling = [b.rate / a.rate for a, b in zip(one, two, strict=True)]
        cost = [b.rate / a.rate for a, b in zip(inproc, one, strict=True)]
        print(f"2 workers / 1 worker, paired per round: {_spread(scaling)}  (goal >= 1.8 with 2 free cores)")
        print(f"Ray 1 worker / in-process, paired per round: {_spread(cost)}  (the cost of Ray)")

        plan = WorkerPlan(mode="local", count=2, cpus_per_worker=cpus, model_capacity=1)
        async with bench.server(plan) as client:
            affinity_loads, affinity_s = await bench.routing(client)
            faults = await bench.faults(client) if args.kills else None
        rr_plan = WorkerPlan(mode="local", count=2, cpus_per_worker=cpus, model_capacity=1, routing="round-robin")
        async with bench.server(rr_plan) as client:
            rr_loads, rr_s = await bench.routing(client)
        print(f"routing, {args.mixed} queued jobs over 3 checkpoints, 2 workers holding 1 each: affinity "
              f"{affinity_loads} loads ({affinity_s:.1f} s), round-robin {rr_loads} loads ({rr_s:.1f} s)")
        rng = random.Random(1)
        mix = [rng.choice(["a", "b", "c"]) for _ in range(200)]
        sim_a = simulate(AffinityRouter(), mix, workers=4)
        sim_r = simulate(RoundRobinRouter(), mix, workers=4)
        print(f"routing, simulated 4 workers, 200 jobs (1 s run, 5 s load): affinity {sim_a[0]} loads "
              f"({sim_a[1]:.0f} s), round-robin {sim_r[0]} loads ({sim_r[1]:.0f} s)")
        if faults is not None:
            print(f"faults: {faults['jobs']} workers killed mid-job (SIGKILL); completed exactly once: "
                  f"{faults['completed_once']}/{faults['jobs']}, in history {faults['in_history']}/{faults['jobs']}, "
                  f"one output file {faults['one_file']}/{faults['jobs']}")
            print(f"  kill -> running again on the other worker: {_ms(faults['to_rerun'])}")
            print(f"  kill -> job completed: {_ms(faults['to_done'])}")
            print(f"  kill -> killed worker replaced and ready: {_ms(faults['to_replaced'])}")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16, help="jobs of each timed throughput batch")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the throughput comparison")
    parser.add_argument("--steps", type=int, default=8, help="steps of the throughput jobs")
    parser.add_argument("--size", type=int, default=160, help="image side of the throughput jobs")
    parser.add_argument("--small-size", type=int, default=64, help="image side of the routing and fault jobs")
    parser.add_argument("--mixed", type=int, default=18, help="jobs of the routing run")
    parser.add_argument("--mixed-steps", type=int, default=20, help="steps of the routing run's jobs")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--kill-steps", type=int, default=150, help="steps of the jobs killed mid-run")
    parser.add_argument("--worker-cpus", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=2, help="cores the local Ray instance may use")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main_()
