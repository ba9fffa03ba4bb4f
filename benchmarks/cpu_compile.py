"""torch.compile (inductor) of the full-size SD 1.5 U-Net on the CPU: eager vs compiled vs diffusers' call.

    python benchmarks/cpu_compile.py [--jobs freezing@256,default@256,freezing@512] [--rounds 5]
                                     [--cache DIR] [--lock /work/wt/bench.lock]

Each job `CONFIG@PIXELS` runs in two fresh processes sharing one new inductor cache folder: the first
compiles from nothing (cold), the second starts again and compiles with that cache (a restart). The
first also times, in interleaved rounds (the order rotating each round), one fp32 forward of the
plain U-Net as KSampler calls it (batch 2, cond/uncond), the same U-Net called the way diffusers'
pipeline calls it, and the compiled U-Net; it prints medians, medians of the per-round ratios and
their spread, compile times, the relative difference of the compiled output from eager, and memory:
resident memory with the weights built, its peak while compiling and what stays resident after.

Configurations (inductor settings): `default`; `freezing` (weights become constants: folded, and
convolution/linear weights prepacked for oneDNN); `freezing+cpp` (also `cpp_wrapper`);
`freezing+discard` (also `freezing_discard_parameters`: the eager weights are dropped after
freezing, so the plain U-Net can no longer run: memory and compiled time only); `sumie` (what
`--compile` does on the CPU, nodes/models/speed.py, on weights mapped from a safetensors file as
the checkpoint loader leaves them; the file is written once to the temp folder). The random weights
have the real architecture; speed does not depend on their values. Each child holds the lock given
by `--lock` while it runs (nothing else timed on the machine at once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "default": {},
    "freezing": {"freezing": True},
    "freezing+cpp": {"freezing": True, "cpp_wrapper": True},
    "freezing+discard": {"freezing": True, "freezing_discard_parameters": True},
    "sumie": {},  # what `--compile` does on the CPU (nodes/models/speed.py), on weights mapped from a file
}
MAPPED = str(Path(tempfile.gettempdir()) / "sumie-cpu-compile-unet-{size}.safetensors")


def _mem(field: str) -> int:
    """VmRSS / VmHWM of this process in bytes."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field)).split()[1]) * 1024


def child(config: str, pixels: int, rounds: int, size: str = "full") -> dict:
    import torch
    from diffusers import UNet2DConditionModel

    from nodes.models.random_checkpoint import unet_config

    for key, value in CONFIGS[config].items():
        setattr(torch._inductor.config, key, value)
    float(torch.ones(1 << 20).sum())
    base_rss = _mem("VmRSS")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_config("sd1", size)).eval()
    if config == "sumie":  # the weights as a checkpoint loader leaves them: views of the file's pages
        from safetensors.torch import save_file

        from nodes.models.weights_file import read_state_dict

        mapped = Path(MAPPED.format(size=size))
        if not mapped.exists():
            save_file(unet.state_dict(), str(mapped))
        unet.load_state_dict(read_state_dict(mapped), assign=True)
    weights = sum(p.numel() * p.element_size() for p in unet.parameters())
    built_rss = _mem("VmRSS")
    side = pixels // 8
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, side, side, generator=gen)
    t = torch.tensor([500.0, 500.0])
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen)
    discard = CONFIGS[config].get("freezing_discard_parameters", False)

    def eager() -> torch.Tensor:  # as KSampler calls it: a timestep per sample, `.sample`
        return unet(x, t, encoder_hidden_states=ctx).sample

    def diffusers_call() -> torch.Tensor:  # as StableDiffusionPipeline calls it
        return unet(x, t[0], encoder_hidden_states=ctx, timestep_cond=None, cross_attention_kwargs=None,
                    added_cond_kwargs=None, return_dict=False)[0]

    if config == "sumie":
        from nodes.models.speed import compiled as sumie_compiled

        fast = sumie_compiled(unet)
    else:
        fast = torch.compile(unet)

    def compiled() -> torch.Tensor:
        return fast(x, t, encoder_hidden_states=ctx).sample

    result: dict = {"config": config, "pixels": pixels, "threads": torch.get_num_threads(), "weights": weights,
                    "rss_before_weights": base_rss, "rss_weights": built_rss - base_rss}
    with torch.no_grad():  # as the samplers run
        ref = eager()
        result["rss_eager"] = _mem("VmRSS") - base_rss
        start = time.perf_counter()
        out = compiled()
        result["compile_s"] = time.perf_counter() - start
        result["rss_peak"] = _mem("VmHWM") - base_rss
        result["rss_after"] = _mem("VmRSS") - base_rss
        result["rel_diff"] = float((out - ref).abs().max() / ref.abs().max())
        result["max_abs_diff"] = float((out - ref).abs().max())
        start = time.perf_counter()
        compiled()
        result["second_call_s"] = time.perf_counter() - start
        result["rss_after_second"] = _mem("VmRSS") - base_rss
        sides = {"compiled": compiled} if discard else {"eager": eager, "diffusers": diffusers_call,
                                                        "compiled": compiled}
        if not discard:
            diffusers_call()
        times: dict[str, list[float]] = {name: [] for name in sides}
        cpu: dict[str, list[float]] = {name: [] for name in sides}
        names = list(sides)
        for rnd in range(rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in order:
                start, start_cpu = time.perf_counter(), time.process_time()
                sides[name]()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        result["times"], result["cpu"] = times, cpu
        result["rss_end"] = _mem("VmRSS") - base_rss
        result["rss_peak_end"] = _mem("VmHWM") - base_rss
    return result


def _run_child(args: argparse.Namespace, config: str, pixels: int, rounds: int, cache: Path) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache), TORCHINDUCTOR_FX_GRAPH_CACHE="1",
               TORCHINDUCTOR_AUTOGRAD_CACHE="1")
    cmd = [sys.executable, __file__, "--child", config, "--pixels", str(pixels), "--rounds", str(rounds),
           "--size", args.size]
    if args.lock:
        cmd = ["flock", args.lock, *cmd]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{config}@{pixels} failed:\n{proc.stderr[-4000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    data["process_s"] = time.perf_counter() - start
    return data


def _ratios(a: list[float], b: list[float]) -> tuple[float, float, float]:
    r = [x / y for x, y in zip(a, b, strict=True)]
    return statistics.median(r), min(r), max(r)


def report(cold: dict, warm: dict) -> None:
    gb = 1e9
    print(f"\n== {cold['config']} @ {cold['pixels']}x{cold['pixels']}, {cold['threads']} threads, "
          f"U-Net weights {cold['weights'] / gb:.2f} GB", flush=True)
    print(f"compile (first call): cold {cold['compile_s']:.1f} s, restart with the cache {warm['compile_s']:.1f} s "
          f"(whole processes {cold['process_s']:.0f} s / {warm['process_s']:.0f} s)")
    print(f"compiled vs eager output: max |diff| {cold['max_abs_diff']:.2e}, relative {cold['rel_diff']:.2e} "
          f"(restart: {warm['rel_diff']:.2e})")
    print(f"memory above the interpreter: weights built {cold['rss_weights'] / gb:.2f} GB, after an eager call "
          f"{cold['rss_eager'] / gb:.2f} GB, peak while compiling {cold['rss_peak'] / gb:.2f} GB, resident after "
          f"{cold['rss_after'] / gb:.2f} GB, after a second call {cold['rss_after_second'] / gb:.2f} GB, after the "
          f"rounds {cold['rss_end'] / gb:.2f} GB (peak {cold['rss_peak_end'] / gb:.2f}); restart: peak "
          f"{warm['rss_peak'] / gb:.2f} GB, after {warm['rss_after'] / gb:.2f} GB")
    times, cpu = cold["times"], cold["cpu"]
    for name, series in times.items():
        print(f"{name:<10} median {statistics.median(series):7.3f} s  min {min(series):7.3f}  max {max(series):7.3f}"
              f"  cpu {statistics.median(cpu[name]):7.2f} s   rounds {' '.join(f'{v:.2f}' for v in series)}")
    if "eager" in times:
        for ref in ("diffusers", "eager"):
            med, lo, hi = _ratios(times["compiled"], times[ref])
            cmed, clo, chi = _ratios(cpu["compiled"], cpu[ref])
            print(f"compiled / {ref:<9}: median {med:.3f} ({lo:.3f}..{hi:.3f}); cpu time {cmed:.3f} "
                  f"({clo:.3f}..{chi:.3f})")
        med, lo, hi = _ratios(times["eager"], times["diffusers"])
        print(f"eager / diffusers   : median {med:.3f} ({lo:.3f}..{hi:.3f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="freezing@256,default@256,freezing@512")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pixels", type=int, default=256)
    parser.add_argument("--cache", type=Path, default=None, help="folder for the inductor caches (default: a temp dir)")
    parser.add_argument("--lock", default=None, help="flock this file around each child (shared machines)")
    parser.add_argument("--size", default="full", help="random U-Net size: full, or tiny to try the script")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.pixels, args.rounds, args.size)), flush=True)
        return
    root = args.cache or Path(tempfile.mkdtemp(prefix="sumie-compile-"))
    for job in args.jobs.split(","):
        config, _, pixels = job.partition("@")
        if config not in CONFIGS:
            raise SystemExit(f"unknown configuration {config!r}; expected one of {', '.join(CONFIGS)}")
        cache = root / job.replace("@", "_").replace("+", "_")
        cold = _run_child(args, config, int(pixels or 256), args.rounds, cache)
        warm = _run_child(args, config, int(pixels or 256), 0, cache)
        report(cold, warm)
        print(json.dumps({"cold": cold, "warm": warm}), flush=True)


if __name__ == "__main__":
    main()
