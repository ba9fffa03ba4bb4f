"""The default txt2img workflow through Sumie's executor vs diffusers' StableDiffusionPipeline.

    python benchmarks/pipeline_overhead.py [--sizes tiny,full] [--steps 20] [--repeat 3]

Both sides use the same random weights (an original-layout SD 1.x file written by the benchmark),
the same prompt, size, step count, Euler sampler and CFG, and both end with a PNG file. Each repeat
changes the prompt and the seed, so neither side serves anything from a cache; models stay loaded on
both sides. Prints the median time of each and their ratio (goal: <= 1.02). Then measures the peak
memory of loading a full-size fp16 checkpoint in a fresh process, against the file's size (goal:
under 1.2x the file size above the interpreter's baseline).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = ["a watercolor fox in the snow", "a lighthouse at dusk, oil painting", "a bowl of ramen, photo",
           "a cat astronaut, digital art", "an old map of an island"]


def workflow(ckpt: str, prompt: str, seed: int, size: int, steps: int) -> dict:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": steps, "cfg": 7.5, "sampler_name": "euler",
                                                   "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0],
                                                   "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "bench", "images": ["8", 0]}},
    }


def compare(size_name: str, *, steps: int, repeat: int, root: Path, pixels: int = 256,
            bf16: bool = False, unet_bf16: bool = False) -> dict[str, float]:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    import main
    from graph import Executor, Folders, RecentRunsCache, RunRequest, parse_api_workflow
    from nodes.base.model_sampling import ModelSampling
    from nodes.models import load_clip_tokenizer
    from nodes.models.manager import ModelManager
    from nodes.models.random_checkpoint import write_random_checkpoint
    from nodes.models.speed import SpeedSettings
    from nodes.sampling.schedules import schedule

    folders = Folders.under(root / size_name)
    for name in ("models", "input", "output", "temp", "user"):
        getattr(folders, name).mkdir(parents=True, exist_ok=True)
    ckpt = folders.models / "checkpoints" / f"random-sd1-{size_name}.safetensors"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    size_arg = "small" if size_name == "small" else size_name
    write_random_checkpoint(ckpt, "sd1", dtype=torch.float16 if size_name == "full" else torch.float32,
                            size=size_arg)

    registry = main.build_registry(folders=folders)
    manager = ModelManager()
    executor = Executor(registry, cache=RecentRunsCache(1), folders=folders, services={"models": manager})
    plain_speed, bf16_speed = manager.speed, SpeedSettings(cpu_bf16=True)  # the same weights, --cpu-bf16 or not

    # --unet-dtype bf16: the same file loaded again with bf16 weights, in its own manager
    half_executor = Executor(registry, cache=RecentRunsCache(1), folders=folders,
                             services={"models": ModelManager(dtype=torch.bfloat16)})

    def ours(i: int, fast: bool = False, half: bool = False) -> float:
        manager.speed = bf16_speed if fast else plain_speed
        prompt = workflow(ckpt.name, PROMPTS[i % len(PROMPTS)] + f" #{i}", 1000 + i, pixels, steps)
        validation = executor.validate(parse_api_workflow(prompt))
        assert validation.ok, validation.messages()
        start = time.perf_counter()
        outcome = (half_executor if half else executor).run(RunRequest(validation=validation, run_id=f"r{i}"))
        elapsed = time.perf_counter() - start
        assert outcome.status == "success", outcome.failure and outcome.failure.describe()
        return elapsed

    ours(-1)  # loads the model (and warms up), as a running server would have done
    model, clip, vae = manager.load_checkpoint(ckpt)
    pipe = StableDiffusionPipeline(
        vae=vae.vae, text_encoder=clip.encoders[0], tokenizer=load_clip_tokenizer(), unet=model.unet,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    sigmas = schedule(ModelSampling.discrete(), "normal", steps).tolist()
    # Our EmptyLatentImage makes a (pixels/8)^2 latent whatever the VAE; diffusers derives the latent
    # from the VAE's own downscale (2 for the tiny test VAE): ask it for the same latent size.
    their_pixels = pixels // 8 * vae.downscale

    def theirs(i: int) -> float:
        generator = torch.Generator().manual_seed(1000 + i)
        start = time.perf_counter()
        image = pipe(PROMPTS[i % len(PROMPTS)] + f" #{i}", negative_prompt="blurry", num_inference_steps=steps,
                     guidance_scale=7.5, sigmas=sigmas, generator=generator, height=their_pixels,
                     width=their_pixels).images[0]
        image.save(folders.output / f"diffusers_{i}.png")
        return time.perf_counter() - start

    theirs(-1)
    if bf16:
        ours(-2, True)
    if unet_bf16:
        ours(-3, half=True)
    ours_t, theirs_t, fast_t, half_t = [], [], [], []
    for i in range(repeat):  # interleaved, so drift in machine load hits both sides alike
        ours_t.append(ours(i))
        theirs_t.append(theirs(i))
        if bf16:
            fast_t.append(ours(100 + i, True))
        if unet_bf16:
            half_t.append(ours(200 + i, half=True))
    return {"pixels": pixels, "ours": statistics.median(ours_t), "diffusers": statistics.median(theirs_t),
            "ours_all": ours_t, "diffusers_all": theirs_t, "bf16_all": fast_t, "half_all": half_t,
            "bf16": statistics.median(fast_t) if fast_t else None,
            "file_mb": ckpt.stat().st_size / 1e6, "path": str(ckpt)}


LOAD_PROBE = r"""
import json, sys, gc
import torch, diffusers, transformers, safetensors  # the interpreter's baseline includes the libraries
from nodes.models import load_checkpoint
import os
gc.collect()
# the resident size now (not the lifetime peak so far, which imports may have pushed higher)
base = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
ckpt = load_checkpoint(sys.argv[1])
# safetensors are memory-mapped, so pages load lazily: read every weight once so the peak counts
# the whole model resident, as it is when it runs.
with torch.no_grad():
    checksum = sum(float(p.sum()) for m in (ckpt.unet, ckpt.vae, *ckpt.text_encoders) for p in m.parameters())
# VmHWM: the peak of this process image (ru_maxrss would start from the forking parent's size)
peak = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
params = sum(p.numel() * p.element_size() for m in (ckpt.unet, ckpt.vae, *ckpt.text_encoders) for p in m.parameters())
print(json.dumps({"base_kb": base, "peak_kb": peak, "param_bytes": params}))
"""


def load_memory(path: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", LOAD_PROBE, path], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    size = Path(path).stat().st_size
    return {"file_mb": size / 1e6, "above_baseline_mb": (data["peak_kb"] - data["base_kb"]) * 1024 / 1e6,
            "ratio": (data["peak_kb"] - data["base_kb"]) * 1024 / size, "params_mb": data["param_bytes"] / 1e6}


def _paired(ours: list[float], theirs: list[float]) -> str:
    """Each round's ratio (run back to back, so they share the machine's load), then the median."""
    return f"{statistics.median(o / t for o, t in zip(ours, theirs, strict=True)):.3f}"


def _secs(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,full", help="tiny, small (the demo model), full (SD 1.5)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pixels", type=int, default=256)
    parser.add_argument("--cpu-bf16", action="store_true", help="also time Sumie with --cpu-bf16, interleaved")
    parser.add_argument("--unet-bf16", action="store_true", help="also time Sumie with --unet-dtype bf16")
    parser.add_argument("--growth", action="store_true", help="also the cost-as-work-grows figures (work_growth.py)")
    parser.add_argument("--no-memory", action="store_true", help="skip the full-size loading-memory probe")
    parser.add_argument("--run-memory", metavar="FILE", nargs="+",
                        help="peak memory of one whole run (--pixels, 1 step) per phase with each checkpoint, "
                             "each in a fresh process, against the file's size (benchmarks/run_memory.py)")
    args = parser.parse_args()
    if args.run_memory:
        from benchmarks.run_memory import measure, table

        results = {Path(f).name: measure(f, pixels=args.pixels) for f in args.run_memory}
        print(f"a whole {args.pixels}px run (load, encode, 1 step, decode, save), peak RSS per phase:")
        print(table(results))
        print("goal: whole run <= 1.2x the file")
        return
    with tempfile.TemporaryDirectory(prefix="sumie-bench-") as tmp:
        full_path = None
        print(f"{'model':<8}{'size':>6}{'steps':>7}{'sumie s':>10}{'diffusers s':>13}{'ratio':>8}   (goal <= 1.02)",
              flush=True)
        for size_name in args.sizes.split(","):
            steps = args.steps
            r = compare(size_name, steps=steps, repeat=args.repeat, root=Path(tmp), pixels=args.pixels,
                        bf16=args.cpu_bf16, unet_bf16=args.unet_bf16)
            print(f"{size_name:<8}{r['pixels']:>6}{steps:>7}{r['ours']:>10.3f}{r['diffusers']:>13.3f}"
                  f"{r['ours'] / r['diffusers']:>8.3f}   all: sumie {_secs(r['ours_all'])} diffusers "
                  f"{_secs(r['diffusers_all'])}; median of paired ratios {_paired(r['ours_all'], r['diffusers_all'])}",
                  flush=True)
            if r["bf16"] is not None:
                print(f"{size_name + '+bf16':<14}{steps:>7}{r['bf16']:>10.3f}{r['diffusers']:>13.3f}"
                      f"{r['bf16'] / r['diffusers']:>8.3f}   all: {_secs(r['bf16_all'])}; median of paired ratios "
                      f"{_paired(r['bf16_all'], r['diffusers_all'])}   (--cpu-bf16)", flush=True)
            if r["half_all"]:
                med = statistics.median(r["half_all"])
                print(f"{size_name + '+bf16w':<14}{steps:>7}{med:>10.3f}{r['diffusers']:>13.3f}"
                      f"{med / r['diffusers']:>8.3f}   all: {_secs(r['half_all'])}; median of paired ratios "
                      f"{_paired(r['half_all'], r['diffusers_all'])}   (--unet-dtype bf16)", flush=True)
            if size_name == "full":
                full_path = r["path"]
        if args.growth:
            from benchmarks.work_growth import report

            report(Path(tmp) / "growth", steps=min(args.steps, 4), repeat=args.repeat)
        if full_path and not args.no_memory:
            m = load_memory(full_path)
            print(f"\nloading the full-size fp16 file ({m['file_mb']:.0f} MB, {m['params_mb']:.0f} MB of weights) "
                  f"and reading every weight: peak {m['above_baseline_mb']:.0f} MB above the baseline = "
                  f"{m['ratio']:.2f}x the file (goal < 1.2)")


if __name__ == "__main__":
    main()
