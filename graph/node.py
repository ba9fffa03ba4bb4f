"""The node base class and the narrow context a running node receives."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import Interrupted
from .limits import Limits
from .schema import NodeSchema


@dataclass(kw_only=True)
class NodeResult:
    """What a node returns when it has more to say than its output values.

    `ui` is shown in the editor and stored in history (e.g. `{"images": [...]}`); `expand` is a
    sub-graph in API format whose nodes are spliced into the running workflow, with `result`
    holding links (`[node_id, index]`) into it.
    """

    result: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None
    expand: dict[str, Any] | None = None


class Node:
    """Base class of every node. Subclasses set `SCHEMA` and implement `execute`.

    Optional hooks, looked up by name so a node pays only for what it defines:
      fingerprint(**constants) -> Any   joins the cache key (NaN: never cached)
      validate_inputs(**constants) -> True | str   extra checks at validation time
      check_lazy_status(**inputs) -> list[str]   names of lazy inputs still needed
      prefetch(ctx, **constants) -> str   loads this node's model file early (graph/prefetch.py)
    """

    SCHEMA: ClassVar[NodeSchema]

    def execute(self, ctx: NodeContext, **inputs: Any) -> tuple[Any, ...] | NodeResult:
        raise NotImplementedError(f"{type(self).__name__} must implement execute()")


class InterruptToken:
    """Per-run cancellation, optionally with a deadline (a per-job time limit ends a run the same way)."""

    __slots__ = ("_set", "reason", "deadline")

    def __init__(self, *, timeout: float | None = None) -> None:
        self._set = False
        self.reason = "interrupted"
        self.deadline = time.monotonic() + timeout if timeout else None

    def set(self, reason: str = "interrupted") -> None:
        self.reason = reason
        self._set = True

    @property
    def is_set(self) -> bool:
        if not self._set and self.deadline is not None and time.monotonic() > self.deadline:
            self.set("timeout")
        return self._set

    def check(self) -> None:
        if self.is_set:
            raise Interrupted(self.reason)


@dataclass(frozen=True, kw_only=True)
class Folders:
    """Where a node may read and write files; every path a node builds must stay inside one of these.

    `models` holds one subfolder per model kind (KIND_FOLDERS).
    """

    models: Path
    input: Path
    output: Path
    temp: Path
    user: Path

    @classmethod
    def under(cls, root: Path) -> Folders:
        return cls(models=root / "models", input=root / "input", output=root / "output", temp=root / "temp",
                   user=root / "user")


# Model kind -> its subfolders of models/, as ComfyUI names them; the first is where new files go, and
# legacy and new names share files (clip <-> text_encoders, unet <-> diffusion_models). The loaders'
# combos, the plugin shim's folder_paths and the server's /models all read this table.
KIND_FOLDERS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints",), "configs": ("configs",), "loras": ("loras",), "vae": ("vae",),
    "text_encoders": ("text_encoders", "clip"), "clip": ("clip", "text_encoders"),
    "diffusion_models": ("diffusion_models", "unet"), "unet": ("unet", "diffusion_models"),
    "clip_vision": ("clip_vision",), "style_models": ("style_models",), "embeddings": ("embeddings",),
    "diffusers": ("diffusers",), "vae_approx": ("vae_approx",), "controlnet": ("controlnet", "t2i_adapter"),
    "gligen": ("gligen",), "upscale_models": ("upscale_models",), "hypernetworks": ("hypernetworks",),
    "photomaker": ("photomaker",), "classifiers": ("classifiers",), "model_patches": ("model_patches",),
    "audio_encoders": ("audio_encoders",), "ipadapter": ("ipadapter",),
}
MODEL_KINDS = tuple(KIND_FOLDERS)


ProgressFn = Callable[[float, float, Any], None]


@dataclass(kw_only=True)
class NodeContext:
    """What a node may touch while it runs: no global services, only this."""

    node_id: str
    class_type: str
    run_id: str
    interrupt: InterruptToken
    folders: Folders | None = None
    services: Mapping[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("sumie.node"))
    _progress: ProgressFn | None = None

    def progress(self, value: float, total: float, preview: Any = None) -> None:
        """Report progress (e.g. a sampler step); also the point where an interrupt is honoured."""
        self.interrupt.check()
        if self._progress is not None:
            self._progress(value, total, preview)

    def check_interrupt(self) -> None:
        self.interrupt.check()

    def service(self, name: str) -> Any:
        """A named service handed in by main.py (e.g. "models" for the model manager)."""
        try:
            return self.services[name]
        except KeyError:
            raise LookupError(f"node {self.node_id} ({self.class_type}) needs service {name!r}, "
                              "which this engine was not started with") from None
