"""The FreeU + PAG example runs from `main.py run` on a tiny model, and its patches change the picture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "freeu_pag.json"
DEMO = "sumie-demo-random-sd1.safetensors"


def _run(tmp_path: Path, tiny_file, capsys, prefix: str, *sets: str) -> np.ndarray:
    args = []
    for name in ("models", "input", "output", "user", "temp"):
        (tmp_path / name).mkdir(exist_ok=True)
        args += [f"--{name}-dir", str(tmp_path / name)]
    target = tmp_path / "models" / "checkpoints" / DEMO
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copy(tiny_file("sd1"), target)
    sets = ("5.width=64", "5.height=64", "3.steps=3", f"9.filename_prefix={prefix}", *sets)
    code = main.main(["run", str(EXAMPLE), *args, "--cpu", *sum((["--set", s] for s in sets), [])])
    assert code == 0, capsys.readouterr().err
    (path,) = sorted((tmp_path / "output").glob(f"{prefix}_*.png"))
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def test_freeu_pag_example_runs_and_its_patches_act(tmp_path, tiny_file, capsys):
    patched = _run(tmp_path, tiny_file, capsys, "patched")
    plain = _run(tmp_path, tiny_file, capsys, "plain", "11.scale=0", "10.b1=1", "10.b2=1", "10.s1=1", "10.s2=1")
    assert patched.shape == plain.shape and not np.array_equal(patched, plain)


def test_the_example_names_only_registered_nodes():
    registry = main.build_registry(folders=None)
    prompt = json.loads(EXAMPLE.read_text())
    assert {n["class_type"] for n in prompt.values()} <= set(registry.names())
