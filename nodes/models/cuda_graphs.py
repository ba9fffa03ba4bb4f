"""CUDA graphs of the U-Net's plain calls: one replay instead of a thousand kernel launches per step.

An SD 1.5 step launches about a thousand kernels; on a fast GPU their launch cost from Python, not
the arithmetic, sets the pace (measured on an H200: 30 it/s eager for both Sumie and diffusers,
where the arithmetic alone allows several times that). A sampling run calls the U-Net with the same
shapes at every step, so after one eager call the call is recorded once as a CUDA graph and every
later step copies its inputs into the recorded buffers and replays it.

Only plain calls are graphed: no model patches (attention processors, hooks, wrappers), no per-step
additions (ControlNet residuals), whose Python code would not run again in a replay, and no module
hooks or forwards replaced by a plugin. A graph reads the weights at the addresses they had when it
was recorded, so the key holds those addresses (and the attention processors): a LoRA swapping
weights in, or the model manager moving the U-Net off the GPU and back, records a new graph, and
moving the U-Net off the GPU drops its graphs (`drop`). At most two graphs per U-Net are kept (say,
a run and its hires pass). A recording that fails logs why and leaves that U-Net eager for the rest
of the process.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger("sumie.models")

_ATTR = "_sumie_cuda_graphs"
KEEP = 2  # graphs per U-Net


@dataclass
class _Recorded:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    output: torch.Tensor


class UNetGraphs:
    """The recorded graphs of one U-Net, by call signature (LRU, `KEEP` at most)."""

    def __init__(self) -> None:
        self.graphs: OrderedDict[tuple, _Recorded] = OrderedDict()
        self.seen: set[tuple] = set()  # signatures called once eagerly (the warm-up before recording)
        self.disabled: str | None = None
        self.replays = 0

    def run(self, fn: Callable[..., Any], weights: tuple, x: torch.Tensor, timestep: torch.Tensor,
            context: torch.Tensor, added: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """`fn(x, timestep, encoder_hidden_states=context, added_cond_kwargs=added).sample`, replayed
        from a graph from the second call with this signature on."""
        names = sorted(added) if added else []
        flat = [x, timestep, context, *(added[n] for n in names)]

        def call(tensors: list[torch.Tensor]) -> torch.Tensor:
            kwargs: dict[str, Any] = {"encoder_hidden_states": tensors[2]}
            if added:
                kwargs["added_cond_kwargs"] = dict(zip(names, tensors[3:], strict=True))
            return fn(tensors[0], tensors[1], **kwargs).sample

        if self.disabled is not None:
            return call(flat)
        key = (id(fn), weights, tuple(names), tuple((t.shape, t.dtype, t.device) for t in flat),
               torch.is_inference_mode_enabled())  # inference tensors accept copies only in that mode
        recorded = self.graphs.get(key)
        if recorded is None:
            if key not in self.seen:
                self.seen.add(key)
                return call(flat)
            try:
                recorded = self._record(call, flat)
            except Exception as exc:  # an op that cannot be captured: stay eager, once and for all
                self.disabled = f"{type(exc).__name__}: {exc}"
                log.warning("CUDA graphs are off for this U-Net (recording failed: %s)", self.disabled)
                self.graphs.clear()
                return call(flat)
            self.graphs[key] = recorded
            while len(self.graphs) > KEEP:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        for dst, src in zip(recorded.inputs, flat, strict=True):
            dst.copy_(src)
        recorded.graph.replay()
        self.replays += 1
        return recorded.output.clone()  # the next replay overwrites the recorded output

    @staticmethod
    def _record(call: Callable[[list[torch.Tensor]], torch.Tensor], flat: list[torch.Tensor]) -> _Recorded:
        inputs = [t.clone() for t in flat]
        device = inputs[0].device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # a warm-up on a side stream, as capture requires
            call(inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = call(inputs)
        return _Recorded(graph, inputs, output)


def graphs_of(unet: torch.nn.Module) -> UNetGraphs:
    graphs = unet.__dict__.get(_ATTR)
    if graphs is None:
        graphs = unet.__dict__[_ATTR] = UNetGraphs()
    return graphs


def fingerprint(unet: torch.nn.Module) -> tuple | None:
    """What a recorded graph depends on besides its inputs: every weight's address and every attention
    processor. None when Python would run differently in a call in ways a replay cannot follow: a
    module hook, or a forward replaced on an instance (a plugin patching the U-Net directly)."""
    for module in unet.modules():
        if module._forward_hooks or module._forward_pre_hooks or "forward" in module.__dict__:
            return None
    processors = getattr(unet, "attn_processors", {})
    return weight_addresses(unet), tuple((name, id(proc)) for name, proc in processors.items())


def weight_addresses(unet: torch.nn.Module) -> tuple[int, ...]:
    """Where every weight lives now: code recorded or frozen with other addresses must not run."""
    return tuple(t.data_ptr() for t in unet.parameters()) + tuple(t.data_ptr() for t in unet.buffers())


def drop(module: torch.nn.Module) -> None:
    """Forget a module's graphs (and their memory): its weights are leaving the GPU."""
    graphs = module.__dict__.get(_ATTR)
    if graphs is not None:
        graphs.graphs.clear()
        graphs.seen.clear()


__all__ = ["KEEP", "UNetGraphs", "drop", "fingerprint", "graphs_of", "weight_addresses"]
