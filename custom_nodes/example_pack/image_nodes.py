"""A torch node on IMAGE tensors: [batch, height, width, 3] float32 in 0..1, on the CPU between nodes."""

from __future__ import annotations

from typing import Any

from graph import FloatInput, InputSpec, Node, NodeSchema, OutputSpec, StringInput


class ExampleTintImage(Node):
    """Blends every image of a batch towards a colour, reporting progress per image."""

    SCHEMA = NodeSchema(
        node_type="ExampleTintImage", display_name="Tint Image (example)", category="examples/image",
        inputs=[InputSpec(name="image", type="IMAGE"),
                StringInput(name="color", default="#ff8800"),
                FloatInput(name="strength", default=0.5, min=0.0, max=1.0, step=0.05)],
        outputs=[OutputSpec(type="IMAGE", name="image")],
    )

    def validate_inputs(self, *, limits: Any = None, color: str = "#ff8800", **_: Any) -> bool | str:
        text = color.lstrip("#")
        if len(text) != 6 or any(c not in "0123456789abcdefABCDEF" for c in text):
            return f"color must be a hex colour like #ff8800, got {color!r}"
        return True

    def execute(self, ctx, *, image: Any, color: str, strength: float) -> tuple[Any]:
        import torch  # imported where it is used, so the pack itself loads without torch

        text = color.lstrip("#")
        rgb = torch.tensor([int(text[i:i + 2], 16) / 255.0 for i in (0, 2, 4)], dtype=image.dtype)
        out = torch.empty_like(image)
        for i in range(image.shape[0]):
            ctx.progress(i, image.shape[0])  # also where an interrupt stops the node
            out[i] = image[i] * (1.0 - strength) + rgb * strength
        ctx.progress(image.shape[0], image.shape[0])
        return (out.clamp(0.0, 1.0),)
