"""GLIGENLoader and GLIGENTextBoxApply: a phrase placed in a box of the image (nodes/models/gligen.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from graph import ComboInput, InputSpec, IntInput, Node, NodeSchema, OutputSpec, StringInput
from graph.limits import MAX_RESOLUTION
from nodes.base.errors import ModelLoadError
from nodes.base.folders import files_of
from nodes.models.gligen import GligenAddition, GligenModel, build_gligen
from nodes.models.weights_file import read_state_dict

from .clip_vision_nodes import _resolve
from .loaders import file_fingerprint
from .text_encode import _text_model, _tokenizer


class GLIGENLoader(Node):
    SCHEMA = NodeSchema(node_type="GLIGENLoader", display_name="GLIGENLoader", category="loaders",
                        inputs=[ComboInput(name="gligen_name", choices=files_of("gligen"))],
                        outputs=[OutputSpec(type="GLIGEN", name="GLIGEN")], python_module="nodes.sd.gligen_nodes")

    def fingerprint(self, *, gligen_name: str, folders: Any = None, **_: Any) -> Any:
        return file_fingerprint(folders, "gligen", gligen_name)

    def execute(self, ctx, *, gligen_name: str) -> tuple[GligenModel]:
        path = _resolve(ctx, "gligen", gligen_name, "gligen_name")
        manager = ctx.service("models")

        def load(p: Path) -> tuple[GligenModel, list[torch.nn.Module]]:
            gligen = build_gligen(read_state_dict(p), p, dtype=manager.dtype)
            return gligen, [gligen.fusers, gligen.position_net]

        try:
            return (manager.load_file("gligen", path, load),)
        except ModelLoadError as exc:
            raise ModelLoadError(exc.path, f"{exc.reason} (input 'gligen_name' = {gligen_name!r})") from None


@torch.no_grad()
def pooled_text(clip: Any, text: str) -> torch.Tensor:
    """The unprojected pooled output (the final-normed end-of-text token) of the CLIP's text encoder, [1, width]."""
    if len(clip.encoders) != 1:
        raise ValueError("GLIGENTextBoxApply: input 'clip' must be a single-encoder (SD1) CLIP; GLIGEN models "
                         "are made for SD1")
    encoder, spec = clip.encoders[0], clip.specs[0]
    tok = _tokenizer(clip, spec)
    ids = tok(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    manager = clip.manager
    if manager is None:
        return _text_model(encoder)(input_ids=ids).pooler_output.float().cpu()
    with manager.use(encoder):
        device = manager.device_for(encoder)
        return _text_model(encoder)(input_ids=ids.to(device)).pooler_output.float().cpu()


class GLIGENTextBoxApply(Node):
    SCHEMA = NodeSchema(
        node_type="GLIGENTextBoxApply", display_name="GLIGENTextBoxApply", category="conditioning/gligen",
        inputs=[InputSpec(name="conditioning_to", type="CONDITIONING"), InputSpec(name="clip", type="CLIP"),
                InputSpec(name="gligen_textbox_model", type="GLIGEN"),
                StringInput(name="text", multiline=True, dynamic_prompts=True),
                IntInput(name="width", default=64, min=8, max=MAX_RESOLUTION, step=8),
                IntInput(name="height", default=64, min=8, max=MAX_RESOLUTION, step=8),
                IntInput(name="x", default=0, min=0, max=MAX_RESOLUTION, step=8),
                IntInput(name="y", default=0, min=0, max=MAX_RESOLUTION, step=8)],
        outputs=[OutputSpec(type="CONDITIONING", name="CONDITIONING")], python_module="nodes.sd.gligen_nodes")

    def execute(self, ctx, *, conditioning_to: list[Any], clip: Any, gligen_textbox_model: GligenModel, text: str,
                width: int, height: int, x: int, y: int) -> tuple[list[Any]]:
        pooled = pooled_text(clip, text)
        if pooled.shape[-1] != gligen_textbox_model.key_dim:
            raise ValueError(f"GLIGENTextBoxApply: input 'clip' encodes {pooled.shape[-1]}-wide phrases; this GLIGEN "
                             f"model takes {gligen_textbox_model.key_dim}")
        box = (pooled, height // 8, width // 8, y // 8, x // 8)  # latent units, as ComfyUI keeps them
        out = []
        for item in conditioning_to:
            options = dict(item[1])
            previous = options.get("gligen")
            same = isinstance(previous, GligenAddition) and previous.gligen is gligen_textbox_model
            options["gligen"] = previous.chained(box) if same else GligenAddition(gligen_textbox_model, (box,))
            out.append([item[0], options])
        return (out,)


NODES = [GLIGENLoader, GLIGENTextBoxApply]
