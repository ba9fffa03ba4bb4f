"""Cost as work grows, through Sumie's executor: batching, a mixed queue, memory over many jobs.

- 4 images as one job at batch 4 vs 4 jobs at batch 1 (same model, size, steps);
- a 20-job queue over 3 different checkpoints (model switches: first use of a file; cache hits);
- the process's resident memory after each of those jobs (it must not grow once every model is loaded);
- with `--prefetch`: a queue alternating 3 checkpoints run by the server's worker, with the next job's
  model loads prefetched during the current job vs not (--no-prefetch), interleaved; total-time ratio.

Used by pipeline_overhead.py (`--growth`); runnable alone:  python benchmarks/work_growth.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """The resident size now (Linux /proc), in MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _prompt(ckpt: str, seed: int, pixels: int, steps: int, batch: int) -> dict:
    from benchmarks.pipeline_overhead import workflow

    prompt = workflow(ckpt, f"a lighthouse #{seed}", seed, pixels, steps)
    prompt["5"]["inputs"]["batch_size"] = batch
    return prompt


class _Runner:
    def __init__(self, root: Path) -> None:
        import main
        from graph import Executor, Folders, RecentRunsCache
        from nodes.models.manager import ModelManager

        self.folders = Folders.under(root)
        for name in ("models", "input", "output", "temp", "user"):
            getattr(self.folders, name).mkdir(parents=True, exist_ok=True)
        (self.folders.models / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.manager = ModelManager()
        self.executor = Executor(main.build_registry(folders=self.folders), cache=RecentRunsCache(1),
                                 folders=self.folders, services={"models": self.manager})
        self.count = 0

    def checkpoint(self, name: str, seed: int, size: str, dtype: Any = None) -> str:
        import torch

        from nodes.models.random_checkpoint import write_random_checkpoint

        write_random_checkpoint(self.folders.models / "checkpoints" / name, "sd1", dtype=dtype or torch.float32,
                                seed=seed, size=size)
        return name

    def run(self, prompt: dict) -> float:
        from graph import RunRequest, parse_api_workflow

        validation = self.executor.validate(parse_api_workflow(prompt))
        assert validation.ok, validation.messages()
        self.count += 1
        start = time.perf_counter()
        outcome = self.executor.run(RunRequest(validation=validation, run_id=f"g{self.count}"))
        assert outcome.status == "success", outcome.failure and outcome.failure.describe()
        return time.perf_counter() - start


def batching(runner: _Runner, ckpt: str, *, pixels: int, steps: int, repeat: int) -> dict[str, float]:
    """Median seconds of one batch-4 job and of four batch-1 jobs, interleaved."""
    runner.run(_prompt(ckpt, 1, pixels, steps, 1))  # load and warm up
    one, four = [], []
    for i in range(repeat):
        one.append(runner.run(_prompt(ckpt, 100 + i, pixels, steps, 4)))
        four.append(sum(runner.run(_prompt(ckpt, 200 + 4 * i + k, pixels, steps, 1)) for k in range(4)))
    return {"batch4": statistics.median(one), "four_jobs": statistics.median(four),
            "spread4": max(one) - min(one), "spread1": max(four) - min(four)}


# which of the 3 checkpoints each of the 20 jobs uses: runs of the same model and switches
QUEUE = [0, 0, 1, 2, 0, 1, 1, 2, 2, 0, 1, 0, 2, 0, 0, 1, 2, 1, 0, 2]


def queue(runner: _Runner, ckpts: list[str], *, pixels: int, steps: int) -> dict[str, object]:
    """20 jobs over 3 checkpoints: time of first loads, switches to a loaded model, same-model jobs; RSS."""
    first, switch, same, rss = [], [], [], []
    seen: set[int] = set()
    previous = None
    for i, which in enumerate(QUEUE):
        t = runner.run(_prompt(ckpts[which], 300 + i, pixels, steps, 1))
        (first if which not in seen else same if which == previous else switch).append(t)
        seen.add(which)
        previous = which
        rss.append(rss_mb())
    return {"first_load": statistics.median(first), "switch": statistics.median(switch),
            "same": statistics.median(same), "n_switch": len(switch), "n_same": len(same), "rss": rss,
            "loaded": runner.manager.loaded_count()}


def _alternating(count: int) -> list[int]:
    """Two rounds over `count` checkpoints: each read once, by its first job; the second round hits the cache."""
    return [i % count for i in range(2 * count)]


def _evict_page_cache(paths: list[Path]) -> None:
    """Drop the files from the OS page cache, as for checkpoints not read recently (clean pages; no root)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _queue_through_worker(folders: Any, ckpts: list[str], order: list[int], *, pixels: int, steps: int,
                          prefetch: bool, tag: str) -> tuple[float, int]:
    """Seconds from the first claim to the last result of the queue `order` run by the server's worker with
    a fresh model manager (every first use of a file reads it), and how many loads were prefetched."""
    import asyncio
    import gc

    import main
    from graph import Executor, RecentRunsCache
    from nodes.models.manager import ModelManager
    from server.jobs import DONE, JobStore
    from server.options import ServerOptions
    from server.worker import Worker
    from server.ws import Hub

    async def go() -> tuple[float, int]:
        manager = ModelManager()
        executor = Executor(main.build_registry(folders=folders), cache=RecentRunsCache(1), folders=folders,
                            services={"models": manager})
        store = JobStore(folders.user / f"queue-{tag}.db")
        worker = Worker(store=store, executor=executor, hub=Hub(capacity=64, queue_remaining=store.queue_remaining),
                        options=ServerOptions(prefetch=prefetch))
        for i, which in enumerate(order):
            store.add(prompt_id=f"{tag}-{i}", prompt=_prompt(ckpts[which], 500 + i, pixels, steps, 1), extra_data={},
                      client_id=None, outputs_to_execute=["9"], digest=tag)
        start = time.perf_counter()
        worker.start()
        while store.count(DONE) < len(order):
            await asyncio.sleep(0.005)
        took = time.perf_counter() - start
        failed = [j.prompt_id for j in store.history() if j.status != "success"]
        assert not failed, failed
        await worker.stop()
        store.close()
        return took, sum(r.prefetch for r in manager.loads)

    result = asyncio.run(go())
    gc.collect()  # the manager and its models go before the other side starts
    return result


def prefetch_queue(root: Path, *, size: str, pixels: int, steps: int, repeat: int, count: int,
                   cold: bool) -> dict[str, object]:
    """The queue with prefetching on and off, interleaved (the order alternates each repeat); with `cold`,
    the checkpoint files are dropped from the page cache before each queue."""
    import torch

    runner = _Runner(root)
    dtype = torch.float16 if size == "full" else torch.float32  # full-size files as they are downloaded
    ckpts = [runner.checkpoint(f"queue-{i}.safetensors", seed=10 + i, size=size, dtype=dtype) for i in range(count)]
    paths = [runner.folders.models / "checkpoints" / c for c in ckpts]
    order = _alternating(count)
    runner.run(_prompt(ckpts[0], 1, pixels, steps, 1))  # warm up the code paths (its manager is dropped)
    folders = runner.folders
    del runner
    times: dict[bool, list[float]] = {True: [], False: []}
    prefetched: list[int] = []
    for r in range(repeat):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            if cold:
                _evict_page_cache(paths)
            took, ahead = _queue_through_worker(folders, ckpts, order, pixels=pixels, steps=steps, prefetch=on,
                                                tag=f"r{r}{'on' if on else 'off'}")
            times[on].append(took)
            if on:
                prefetched.append(ahead)
    ratios = [a / b for a, b in zip(times[True], times[False], strict=True)]
    return {"on": times[True], "off": times[False], "ratios": ratios, "prefetched": prefetched, "order": order,
            "file_mb": paths[0].stat().st_size / 1e6}


def report(root: Path, *, size: str = "tiny", pixels: int = 256, steps: int = 4, repeat: int = 3) -> None:
    runner = _Runner(root)
    ckpts = [runner.checkpoint(f"growth-{i}.safetensors", seed=i, size=size) for i in range(3)]
    b = batching(runner, ckpts[0], pixels=pixels, steps=steps, repeat=repeat)
    print(f"\n4 images, {size} model, {pixels}px, {steps} steps: one job at batch 4 {b['batch4']:.3f} s "
          f"(spread {b['spread4']:.3f}) vs 4 jobs at batch 1 {b['four_jobs']:.3f} s (spread {b['spread1']:.3f}): "
          f"ratio {b['batch4'] / b['four_jobs']:.2f}", flush=True)
    q = queue(runner, ckpts, pixels=pixels, steps=steps)
    rss = q["rss"]
    assert isinstance(rss, list)
    print(f"20-job queue over 3 checkpoints: first load {q['first_load']:.3f} s/job, switch to a loaded model "
          f"{q['switch']:.3f} s/job ({q['n_switch']} jobs), same model {q['same']:.3f} s/job ({q['n_same']} jobs); "
          f"{q['loaded']} models cached")
    print(f"resident memory after jobs 3/10/20 of the queue: {rss[2]:.0f} / {rss[9]:.0f} / {rss[19]:.0f} MB "
          f"(growth from job 10 to 20: {rss[19] - rss[9]:+.0f} MB)", flush=True)


def report_prefetch(root: Path, *, size: str = "tiny", pixels: int = 256, steps: int = 4, repeat: int = 3,
                    count: int = 3, cold: bool = False) -> None:
    q = prefetch_queue(root, size=size, pixels=pixels, steps=steps, repeat=repeat, count=count, cold=cold)
    on, off, ratios, order = q["on"], q["off"], q["ratios"], q["order"]
    assert isinstance(on, list) and isinstance(off, list) and isinstance(ratios, list) and isinstance(order, list)
    print(f"\nqueue {order} over {count} {size} checkpoints ({q['file_mb']:.0f} MB files, "
          f"{'cold' if cold else 'in the page cache'}) through the worker, {pixels}px, "
          f"{steps} steps: prefetch on {statistics.median(on):.3f} s, off {statistics.median(off):.3f} s (medians of "
          f"{repeat}); on/off ratio median {statistics.median(ratios):.3f} (paired, spread {min(ratios):.3f}-"
          f"{max(ratios):.3f}); loads done ahead per queue: {q['prefetched']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny", help="tiny or small (or full, with --prefetch)")
    parser.add_argument("--pixels", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--prefetch", action="store_true", help="only the queue with prefetching on vs off")
    parser.add_argument("--checkpoints", type=int, default=3, help="with --prefetch: how many checkpoints alternate")
    parser.add_argument("--cold", action="store_true", help="with --prefetch: drop the files from the page cache "
                                                            "before each queue (checkpoints not read recently)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sumie-growth-") as tmp:
        if args.prefetch:
            report_prefetch(Path(tmp), size=args.size, pixels=args.pixels, steps=args.steps, repeat=args.repeat,
                            count=args.checkpoints, cold=args.cold)
        else:
            report(Path(tmp), size=args.size, pixels=args.pixels, steps=args.steps, repeat=args.repeat)


if __name__ == "__main__":
    main()
