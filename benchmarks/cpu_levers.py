"""Which speed levers pay on this CPU: one full-size SD 1.5 U-Net, each lever on and off, interleaved.

    python benchmarks/cpu_levers.py [--pixels 256] [--rounds 5] [--levers base,channels_last,...]

The U-Net gets random weights (the real architecture; speed does not depend on the values) and the
batched cond/uncond input KSampler gives it (batch 2, 77 tokens). Every round times one forward per
lever, in turn, so drift in the machine's load hits all levers alike; prints each lever's median
wall time, spread (min..max), ratio to the baseline, the same ratio in CPU time of this process
(what the lever costs in work, much steadier than wall time on a machine shared with other busy
processes), and the largest difference of its output from the baseline's.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _unet() -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    from nodes.models.random_checkpoint import unet_config

    torch.manual_seed(0)
    return UNet2DConditionModel(**unet_config("sd1", "full")).eval()


def _levers(unet: torch.nn.Module) -> dict[str, tuple[Callable[[], None], Callable[[], None],
                                                       Callable[[], AbstractContextManager]]]:
    """name -> (apply, undo, context of the call)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from nodes.models.speed import channels_last, fuse_qkv, unfuse_qkv

    def none() -> None:
        return None

    def plain_layout() -> None:
        unet.to(memory_format=torch.contiguous_format)

    return {
        "base": (none, none, nullcontext),
        "channels_last": (lambda: channels_last(unet), plain_layout, nullcontext),
        "fused_qkv": (lambda: fuse_qkv(unet), lambda: unfuse_qkv(unet), nullcontext),
        "sdpa_math": (none, none, lambda: sdpa_kernel([SDPBackend.MATH])),
        "bf16_autocast": (none, none, lambda: torch.autocast("cpu", dtype=torch.bfloat16)),
        "bf16_weights": (none, none, nullcontext),
        "cl+fused": (lambda: (channels_last(unet), fuse_qkv(unet)), lambda: (plain_layout(), unfuse_qkv(unet)),
                     nullcontext),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--levers", default="base,channels_last,fused_qkv,sdpa_math,bf16_autocast,cl+fused")
    args = parser.parse_args()
    unet = _unet()
    levers = _levers(unet)
    chosen = args.levers.split(",")
    # bf16 weights (--unet-dtype bf16): a second U-Net stored in bf16, fed bf16 inputs
    half = copy.deepcopy(unet).to(torch.bfloat16) if "bf16_weights" in chosen else None
    side = args.pixels // 8
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, side, side, generator=gen)
    t = torch.tensor([500.0, 500.0])
    ctx = torch.randn(2, 77, 768, generator=gen)
    times: dict[str, list[float]] = {name: [] for name in chosen}
    cpu: dict[str, list[float]] = {name: [] for name in chosen}
    outs: dict[str, torch.Tensor] = {}
    print(f"SD 1.5 U-Net, batch 2, {args.pixels}x{args.pixels}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds", flush=True)
    with torch.inference_mode():
        for rnd in range(args.rounds + 1):  # round 0 warms up every lever
            for name in chosen:
                apply, undo, context = levers[name]
                apply()
                start, start_cpu = time.perf_counter(), time.process_time()
                with context():
                    if name == "bf16_weights":
                        out = half(x.bfloat16(), t, encoder_hidden_states=ctx.bfloat16()).sample.float()
                    else:
                        out = unet(x, t, encoder_hidden_states=ctx).sample.float()
                elapsed, used = time.perf_counter() - start, time.process_time() - start_cpu
                undo()
                if rnd:
                    times[name].append(elapsed)
                    cpu[name].append(used)
                else:
                    outs[name] = out
    base = statistics.median(times["base"]) if "base" in times else None
    base_cpu = statistics.median(cpu["base"]) if "base" in cpu else None
    ref = outs.get("base")
    print(f"{'lever':<16}{'median s':>10}{'min':>8}{'max':>8}{'ratio':>8}{'cpu s':>8}{'cpu ratio':>10}"
          f"{'max |diff|':>12}")
    for name in chosen:
        med, med_cpu = statistics.median(times[name]), statistics.median(cpu[name])
        ratio = f"{med / base:>8.3f}" if base else f"{'':>8}"
        cpu_ratio = f"{med_cpu / base_cpu:>10.3f}" if base_cpu else f"{'':>10}"
        diff = f"{float((outs[name] - ref).abs().max()):>12.2e}" if ref is not None else ""
        print(f"{name:<16}{med:>10.3f}{min(times[name]):>8.3f}{max(times[name]):>8.3f}{ratio}{med_cpu:>8.2f}"
              f"{cpu_ratio}{diff}", flush=True)


if __name__ == "__main__":
    main()
