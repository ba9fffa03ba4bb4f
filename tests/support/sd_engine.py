"""`SdEngine`: every built-in node, wired as main.py wires them, over a temporary folder tree.

Node tests use it to run real workflows through the real engine with a real model manager; the
`Keep` node hands values back to the test; `sample_a_fox` adds the small text-to-image graph they sample with.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import main
from graph import Executor, Folders, RecentRunsCache, RunOutcome, RunRequest, ValidationResult, parse_api_workflow
from graph.builder import GraphBuilder
from nodes.models.manager import ModelManager
from tests.support.keep import Keep


class SdEngine:
    def __init__(self, root: Path) -> None:
        self.folders = Folders.under(root)
        for name in ("models", "input", "output", "temp", "user"):
            getattr(self.folders, name).mkdir(parents=True, exist_ok=True)
        self.registry = main.build_registry(folders=self.folders)
        self.registry.register(Keep)
        self.kept: list[Any] = []
        self.models = ModelManager()
        self.executor = Executor(self.registry, cache=RecentRunsCache(1), folders=self.folders,
                                 services={"models": self.models, "kept": self.kept})

    def add(self, kind: str, source: Path, name: str) -> str:
        """Copy a model file into models/<kind>/name; returns the name a workflow uses."""
        target = self.folders.models / kind / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
        return name

    def path(self, kind: str, name: str) -> Path:
        return self.folders.models / kind / name

    def validate(self, prompt: dict[str, Any]) -> ValidationResult:
        return self.executor.validate(parse_api_workflow(prompt))

    def run(self, prompt: dict[str, Any], *, listeners=(), interrupt=None,
            extra_data: dict[str, Any] | None = None) -> RunOutcome:
        validation = self.validate(prompt)
        assert validation.ok, validation.messages()
        kw = {"interrupt": interrupt} if interrupt is not None else {}
        return self.executor.run(RunRequest(validation=validation, run_id="test", listeners=listeners,
                                            extra_data=extra_data or {}, **kw))


def sample_a_fox(g: GraphBuilder, model: Any, clip: Any, *, seed: int = 3, cfg: float = 6.0,
                 size: int = 64) -> tuple[Any, Any]:
    """Two euler steps of "a fox" against "blurry" from an empty size x size latent, added to `g`.

    Returns the positive CONDITIONING and the sampled LATENT outputs, for the test to `Keep`.
    """
    pos = g.node("CLIPTextEncode", text="a fox", clip=clip)
    neg = g.node("CLIPTextEncode", text="blurry", clip=clip)
    latent = g.node("EmptyLatentImage", width=size, height=size, batch_size=1)
    sampled = g.node("KSampler", seed=seed, steps=2, cfg=cfg, sampler_name="euler", scheduler="normal", denoise=1.0,
                     model=model, positive=pos, negative=neg, latent_image=latent)
    return pos, sampled
