"""The demo checkpoint: so a fresh install runs the default workflow end to end with no download.

It is a small SD1-layout model with random weights (a fixed seed), loaded through the same path as a
real checkpoint. It makes noise, not art; put a real checkpoint in models/checkpoints to get images.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import torch

from nodes.base.folders import list_files

from .random_checkpoint import write_random_checkpoint

log = logging.getLogger("sumie.demo")

DEMO_NAME = "sumie-demo-random-sd1.safetensors"
DEMO_SEED = 20240601


def ensure_demo_checkpoint(models_dir: str | Path) -> Path:
    """The checkpoint to use by default: the first one in models/checkpoints, or the demo one.

    The demo file is written only when the folder holds no checkpoint at all, to a hidden temporary
    file that is renamed into place, so an interrupted write never leaves a broken checkpoint behind.
    """
    models_dir = Path(models_dir)
    folder = models_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    existing = list_files(_Folders(models_dir), "checkpoints")
    if existing:
        return folder / (DEMO_NAME if DEMO_NAME in existing else existing[0])
    target = folder / DEMO_NAME
    temp = folder / f".{DEMO_NAME}.{uuid.uuid4().hex}.tmp.safetensors"
    log.info("no checkpoint in %s: writing a small random demo model (%s); it makes noise, not art", folder,
             DEMO_NAME)
    try:
        write_random_checkpoint(temp, kind="sd1", dtype=torch.float16, seed=DEMO_SEED, size="small")
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


class _Folders:
    """Just enough of graph.Folders for list_files."""

    def __init__(self, models: Path) -> None:
        self.models = models


__all__ = ["DEMO_NAME", "ensure_demo_checkpoint"]
