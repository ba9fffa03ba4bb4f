"""Peak resident memory of one whole txt2img run, phase by phase, in a fresh process.

    python benchmarks/run_memory.py FILE [--pixels 512] [--steps 1] [--runs 1]

Phases: imports (the interpreter, torch, diffusers, transformers and Sumie's node library), load
(CheckpointLoaderSimple), encode (the two CLIPTextEncode), sample (EmptyLatentImage + KSampler),
decode (VAEDecode) and save (SaveImage). The kernel's peak-RSS mark (VmHWM) is read and reset
(``/proc/self/clear_refs``) around every node, so each phase's figure is the highest resident size
the process reached while that phase ran, everything already resident included. ``--runs 2`` runs a
second job (another seed) with the model loaded, as a server would. Linux only.

``benchmarks/pipeline_overhead.py --run-memory`` runs this for one or more files and prints the table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PHASES = ("imports", "load", "encode", "sample", "decode", "save")
_PHASE_OF = {"CheckpointLoaderSimple": "load", "CLIPTextEncode": "encode", "EmptyLatentImage": "sample",
             "KSampler": "sample", "VAEDecode": "decode", "SaveImage": "save"}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith(field)).split()[1])


def _reset_peak() -> None:
    """Start a new peak: VmHWM drops to the resident size now (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


class PhasePeaks:
    """An executor listener: the peak RSS while each node ran, folded into its phase."""

    def __init__(self, run: int) -> None:
        self.run = run
        self.peaks: dict[str, int] = {}
        self.ends: dict[str, int] = {}  # the resident size when the phase ended
        self.seconds: dict[str, float] = {}
        self.mark = time.perf_counter()
        self.phase = "load"

    def __call__(self, event: object) -> None:
        name = type(event).__name__
        if name not in ("NodeStarted", "NodeFinished"):
            return
        self._close()
        if name == "NodeStarted":
            self.phase = _PHASE_OF.get(event.class_type, "other")  # type: ignore[attr-defined]

    def _close(self) -> None:
        """What the process reached since the last mark belongs to the phase running then."""
        key = self.phase if self.run == 1 else f"{self.phase} (run {self.run})"
        self.peaks[key] = max(self.peaks.get(key, 0), _status_kb("VmHWM"))
        self.ends[key] = _status_kb("VmRSS")
        now = time.perf_counter()
        self.seconds[key] = self.seconds.get(key, 0.0) + now - self.mark
        self.mark = now
        _reset_peak()


def probe(path: Path, pixels: int, steps: int, runs: int, keep: Path | None = None) -> dict[str, object]:
    """Run in the measured process: import, then run the workflow `runs` times; peaks in kB."""
    import shutil
    import tempfile

    import main
    from benchmarks.pipeline_overhead import workflow
    from graph import Executor, Folders, RecentRunsCache, RunRequest, parse_api_workflow
    from nodes.models.manager import ModelManager

    with tempfile.TemporaryDirectory() as tmp:
        folders = Folders.under(Path(tmp))
        for name in ("input", "output", "temp", "user"):
            getattr(folders, name).mkdir(parents=True, exist_ok=True)
        (folders.models / "checkpoints").mkdir(parents=True)
        os.link(path, folders.models / "checkpoints" / path.name)  # a hard link: a symlink leaves the folder
        executor = Executor(main.build_registry(folders=folders), cache=RecentRunsCache(1), folders=folders,
                            services={"models": ModelManager()})
        peaks = {"imports": _status_kb("VmHWM")}  # the node library is imported by build_registry
        ends = {"imports": _status_kb("VmRSS")}
        seconds: dict[str, float] = {}
        _reset_peak()
        for run in range(1, runs + 1):
            listener = PhasePeaks(run)
            prompt = workflow(path.name, f"a fox #{run}", run, pixels, steps)
            validation = executor.validate(parse_api_workflow(prompt))
            outcome = executor.run(RunRequest(validation=validation, run_id=f"m{run}", listeners=[listener]))
            assert outcome.status == "success", outcome.failure and outcome.failure.describe()
            listener._close()
            peaks.update(listener.peaks)
            if keep is not None:  # the image, to compare pixels between versions
                keep.mkdir(parents=True, exist_ok=True)
                for png in folders.output.glob("*.png"):
                    shutil.move(png, keep / f"{path.stem}-run{run}.png")
            ends.update(listener.ends)
            seconds.update(listener.seconds)
    return {"peaks_kb": peaks, "ends_kb": ends, "seconds": seconds}


def measure(path: str | Path, *, pixels: int = 512, steps: int = 1, runs: int = 1,
            env: dict[str, str] | None = None, keep: Path | None = None) -> dict[str, object]:
    """Per-phase peaks (MB) of a whole run in a fresh process, and the whole run's peak against the file."""
    path = Path(path)
    extra = ["--keep-images", str(keep)] if keep is not None else []
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(path), "--pixels", str(pixels),
                          "--steps", str(steps), "--runs", str(runs), "--json", *extra],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if out.returncode:
        raise RuntimeError(f"the memory probe failed:\n{out.stderr[-3000:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    peaks = {k: v * 1024 / 1e6 for k, v in data["peaks_kb"].items()}
    size = path.stat().st_size
    ends = {k: v * 1024 / 1e6 for k, v in data["ends_kb"].items()}
    return {"file_mb": size / 1e6, "phases_mb": peaks, "ends_mb": ends, "seconds": data["seconds"],
            "peak_mb": max(peaks.values()), "ratio": max(peaks.values()) * 1e6 / size}


def _took(seconds: float | None) -> str:
    return "" if seconds is None else f" ({seconds:.1f} s)"


def _secs(values: list[float]) -> str:
    return "/".join(f"{v:.3f}" for v in values)


def table(results: dict[str, dict[str, object]]) -> str:
    """One column per file: each phase's peak RSS and the RSS when it ended (MB), then the whole run's
    peak and its ratio to the file."""
    names = list(results)
    keys = [k for k in PHASES if any(k in r["phases_mb"] for r in results.values())]
    keys += [k for r in results.values() for k in r["phases_mb"] if k not in keys]
    width = max(26, *(len(n) for n in names)) + 2
    lines = [f"{'MB: peak / at the end (s)':<24}" + "".join(f"{n:>{width}}" for n in names)]
    for key in dict.fromkeys(keys):
        cells = [f"{r['phases_mb'][key]:.0f} / {r['ends_mb'][key]:.0f}" + _took(r["seconds"].get(key))
                 if key in r["phases_mb"] else "-" for r in results.values()]
        lines.append(f"{key:<24}" + "".join(f"{c:>{width}}" for c in cells))
    lines.append(f"{'file size':<24}" + "".join(f"{r['file_mb']:>{width}.0f}" for r in results.values()))
    lines.append(f"{'whole run peak / file':<24}" + "".join(f"{r['ratio']:>{width}.2f}" for r in results.values()))
    return "\n".join(lines)


def refault(path: Path, rounds: int = 3) -> dict[str, object]:
    """What giving pages back costs the next job: reading every U-Net weight once when it is resident,
    and again after its pages were given back (they fault in from the page cache), interleaved."""
    import statistics
    import time

    import torch

    from nodes.models.manager import ModelManager
    from nodes.models.weights_file import release_clean_pages

    model, _clip, _vae = ModelManager(force_cpu=True).load_checkpoint(path)
    weights = list(model.unet.parameters())

    def read_all() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for w in weights:
                w.sum()
        return time.perf_counter() - start

    read_all()
    resident, faulted = [], []
    for _ in range(rounds):
        resident.append(read_all())
        release_clean_pages(weights)
        faulted.append(read_all())
    extra = [f - r for f, r in zip(faulted, resident, strict=True)]
    return {"resident_s": resident, "faulted_s": faulted, "extra_median_s": statistics.median(extra)}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--pixels", type=int, default=512)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="measure in this process and print the raw peaks")
    parser.add_argument("--keep-images", type=Path, metavar="DIR", help="move each run's PNG here")
    parser.add_argument("--refault", action="store_true",
                        help="instead: the time to read the U-Net's weights resident vs faulted back in")
    args = parser.parse_args()
    if args.refault:
        sys.path.insert(0, str(ROOT))
        r = refault(args.file)
        print(f"reading every U-Net weight: resident {_secs(r['resident_s'])} s, after giving its pages back "
              f"{_secs(r['faulted_s'])} s; median extra {r['extra_median_s']:.3f} s per job")
        return
    if args.json:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(probe(args.file, args.pixels, args.steps, args.runs, args.keep_images)))
        return
    print(table({args.file.name: measure(args.file, pixels=args.pixels, steps=args.steps, runs=args.runs,
                                         keep=args.keep_images)}))


if __name__ == "__main__":
    main()
