"""GPU it/s: Sumie's sampler vs raw diffusers, plain and compiled, SD 1.5 512² and SDXL 1024².

    python benchmarks/gpu.py [--steps 20] [--repeat 3] [--models sd1,sdxl] [--no-compile]

Both sides get the same random full-size weights (written once to a temporary folder in the real
single-file layout), batch 1, the Euler sampler, CFG 7, fp16 U-Net. Sumie runs its KSampler path
(the model manager's placement and dtype, the batched cond/uncond guider); diffusers runs
StableDiffusion(XL)Pipeline with `output_type="latent"` and prompt embeddings computed once, so only
the denoising loop is timed on both.
Rounds interleave the sides; Sumie runs with its CUDA graphs (the default) and without. Then both
again with `torch.compile` (Sumie: `--compile`; diffusers: `pipe.unet = torch.compile(pipe.unet)`),
after one warm-up run that compiles. Prints it/s, the Sumie/diffusers ratio, and the published H100
anchors for scale. Needs CUDA; exits with a message without it (`--smoke` checks the script anywhere).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodes.models.cuda_graphs import graphs_of  # noqa: E402

ANCHORS = {"sd1": (54.0, 66.0, 104.6), "sdxl": (15.0, 18.5, 21.6)}  # H100 it/s: plain, compiled, best compiler
PIXELS = {"sd1": 512, "sdxl": 1024}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class _Case:
    """One model: the file, Sumie's handles and a diffusers pipeline over the same modules."""

    def __init__(self, kind: str, folder: Path, steps: int, size: str = "full") -> None:
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

        from nodes.models.manager import ModelManager
        from nodes.models.random_checkpoint import write_random_checkpoint
        from nodes.models.tokenizer import load_clip_tokenizer

        self.kind, self.steps, self.pixels = kind, steps, PIXELS[kind] if size == "full" else 64
        path = folder / f"random-{kind}-{size}.safetensors"
        print(f"writing a random {size} {kind} checkpoint ...", flush=True)
        write_random_checkpoint(path, kind, dtype=torch.float16, size=size)
        self.manager = ModelManager()
        self.model, self.clip, self.vae = self.manager.load_checkpoint(path)
        scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           steps_offset=1)
        common = {"vae": self.vae.vae, "unet": self.model.unet, "scheduler": scheduler}
        if kind == "sdxl":
            te1, te2 = self.clip.encoders
            self.pipe = StableDiffusionXLPipeline(text_encoder=te1, text_encoder_2=te2, tokenizer=load_clip_tokenizer(),
                                                  tokenizer_2=load_clip_tokenizer("open_clip"), **common)
        else:
            self.pipe = StableDiffusionPipeline(text_encoder=self.clip.encoders[0], tokenizer=load_clip_tokenizer(),
                                                safety_checker=None, feature_extractor=None,
                                                requires_safety_checker=False, **common)
        self.pipe.set_progress_bar_config(disable=True)
        self.conds = self._conds()
        self.embeds = self._embeds()

    def _conds(self) -> tuple[list, list]:
        from nodes.sd.text_encode import _conditioning, encode_clip

        def cond(text: str) -> list:
            return _conditioning(*encode_clip(self.clip, {spec.name: text for spec in self.clip.specs}))

        return cond("a lighthouse at dusk"), cond("blurry")

    def _embeds(self) -> dict:
        """diffusers' prompt embeddings, computed once: both sides time the denoising loop alone."""
        with torch.no_grad():
            out = self.pipe.encode_prompt("a lighthouse at dusk", device=self.manager.device,
                                          num_images_per_prompt=1, do_classifier_free_guidance=True,
                                          negative_prompt="blurry")
        names = ["prompt_embeds", "negative_prompt_embeds"]
        if self.kind == "sdxl":
            names += ["pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
        return dict(zip(names, out, strict=True))

    def ours(self, seed: int) -> float:
        """Seconds per step of Sumie's KSampler (after placing the modules, as a server keeps them)."""
        from nodes.sampling.ksampler import SamplingRequest, sample

        side = self.pixels // 8
        req = SamplingRequest(seed=seed, steps=self.steps, cfg=7.0, sampler_name="euler", scheduler="normal")
        latent = {"samples": torch.zeros(1, 4, side, side)}
        _sync()
        start = time.perf_counter()
        sample(self.model, self.conds[0], self.conds[1], latent, req)
        _sync()
        return (time.perf_counter() - start) / self.steps

    def theirs(self, seed: int) -> float:
        generator = torch.Generator(self.manager.device).manual_seed(seed)
        _sync()
        start = time.perf_counter()
        self.pipe(**self.embeds, num_inference_steps=self.steps,
                  guidance_scale=7.0, height=self.pixels, width=self.pixels, generator=generator,
                  output_type="latent")
        _sync()
        return (time.perf_counter() - start) / self.steps

    def compile_both(self, backend: str = "inductor") -> None:
        from nodes.models.speed import compiled

        self.manager.speed = replace(self.manager.speed, compile=True, compile_backend=backend)
        self.pipe.unet = compiled(self.model.unet, backend)  # the same compiled module serves both sides


def _round(case: _Case, repeat: int, label: str) -> tuple[float, float]:
    case.ours(0)  # warm-up (and compilation when compiled)
    case.theirs(0)
    ours, theirs = [], []
    for i in range(repeat):
        ours.append(case.ours(1 + i))
        theirs.append(case.theirs(1 + i))
    o, t = 1 / statistics.median(ours), 1 / statistics.median(theirs)
    spread = f"sumie {min(1 / x for x in ours):.1f}..{max(1 / x for x in ours):.1f}"
    print(f"{case.kind:<6}{case.pixels:>6}{label:>10}{o:>12.2f}{t:>12.2f}{o / t:>8.3f}   ({spread})", flush=True)
    return o, t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", default="sd1,sdxl")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="check the script itself: tiny models, 2 steps, "
                        "any device, compile through torch.compile's eager backend (figures meaningless)")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.repeat = 2, 1
    elif not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA device; none is available here (--smoke checks the script)")
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (smoke run)"
    print(f"{name}, torch {torch.__version__}, batch 1, {args.steps} Euler steps, cfg 7, "
          f"fp16 U-Net", flush=True)
    print(f"{'model':<6}{'size':>6}{'mode':>10}{'sumie it/s':>12}{'diffusers':>12}{'ratio':>8}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="sumie-gpu-") as tmp:
        for kind in args.models.split(","):
            case = _Case(kind, Path(tmp), args.steps, "tiny" if args.smoke else "full")
            results[(kind, "plain")] = _round(case, args.repeat, "plain")
            graphs = graphs_of(case.model.unet)
            print(f"        CUDA graph replays {graphs.replays}, off because: {graphs.disabled}", flush=True)
            case.manager.speed = replace(case.manager.speed, cuda_graphs=False)
            _round(case, args.repeat, "no graphs")
            case.manager.speed = replace(case.manager.speed, cuda_graphs=True)
            if not args.no_compile:
                case.compile_both("eager" if args.smoke else "inductor")
                results[(kind, "compiled")] = _round(case, args.repeat, "compiled")
                stats = {k: dict(v) for k, v in torch._dynamo.utils.counters.items() if k in ("stats", "recompiles")}
                print(f"        dynamo: {stats}", flush=True)
            case.manager.unload_all()
            del case
            torch.cuda.empty_cache()
    print("\npublished H100 anchors (it/s: plain torch / torch.compile / best specialised compiler):")
    for kind, (plain, comp, best) in ANCHORS.items():
        if not any(k == kind for k, _ in results):
            continue
        ours = max(results[key][0] for key in results if key[0] == kind)
        print(f"  {kind}: {plain} / {comp} / {best}; Sumie's best here {ours:.1f} "
              f"({ours / comp:.2f}x the compiled anchor)")


if __name__ == "__main__":
    main()
