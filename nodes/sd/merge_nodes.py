"""ComfyUI's model-merging nodes: MODEL and CLIP merges, whole or per U-Net block.

A merge returns a new handle of the first model carrying the merge as a weight patch
(nodes/models/merging.py): no weights are copied or loaded, the merge is computed while the model is
in use and undone afterwards, and it stacks with LoRAs in the order the nodes apply them. Weights
the second model lacks or has in another shape are left as they are and reported, as ComfyUI does.
"""

from __future__ import annotations

from typing import Any

from graph import FloatInput, InputSpec, Node, NodeResult, NodeSchema, OutputSpec
from graph.errors import SchemaError
from nodes.models.merging import (
    MergeReport,
    Weights,
    add_weights,
    block_weights,
    merge_clips,
    merge_models,
    simple_weights,
    subtract_weights,
)

_CATEGORY = "advanced/model_merging"


class BlockRatioInput(FloatInput):
    """A ratio named by the LDM key prefix it applies to (`input_blocks.4.`): ComfyUI's names have dots."""

    def check(self) -> None:
        if not self.name or not self.name.replace(".", "_").isidentifier():
            raise SchemaError(f"input name {self.name!r} must be a dotted key prefix such as 'input_blocks.0.'")


def _ratio(name: str, tooltip: str | None = None) -> FloatInput:
    cls = FloatInput if name.isidentifier() else BlockRatioInput
    return cls(name=name, default=1.0, min=0.0, max=1.0, step=0.01, tooltip=tooltip)


def _multiplier() -> FloatInput:
    return FloatInput(name="multiplier", default=1.0, min=-10.0, max=10.0, step=0.01)


def _report(ctx: Any, report: MergeReport) -> dict[str, Any] | None:
    message = report.describe()
    if message is None:
        return None
    ctx.logger.warning("node %s (%s): %s", ctx.node_id, ctx.class_type, message)
    return {"text": [message]}


def _models(node: str, inputs: list[InputSpec], category: str = _CATEGORY) -> NodeSchema:
    return NodeSchema(node_type=node, category=category,
                      inputs=[InputSpec(name="model1", type="MODEL"), InputSpec(name="model2", type="MODEL"), *inputs],
                      outputs=[OutputSpec(type="MODEL", name="MODEL")], python_module="nodes.sd.merge_nodes")


def _clips(node: str, inputs: list[InputSpec]) -> NodeSchema:
    return NodeSchema(node_type=node, category=_CATEGORY,
                      inputs=[InputSpec(name="clip1", type="CLIP"), InputSpec(name="clip2", type="CLIP"), *inputs],
                      outputs=[OutputSpec(type="CLIP", name="CLIP")], python_module="nodes.sd.merge_nodes")


def _merge(ctx: Any, node: str, model1: Any, model2: Any, weights: Weights, *, by_block: bool = False) -> NodeResult:
    merged, report = merge_models(model1, model2, weights, name=node, by_block=by_block)
    return NodeResult(result=(merged,), ui=_report(ctx, report))


def _merge_clip(ctx: Any, node: str, clip1: Any, clip2: Any, weights: Weights) -> NodeResult:
    merged, report = merge_clips(clip1, clip2, weights, name=node)
    return NodeResult(result=(merged,), ui=_report(ctx, report))


class ModelMergeSimple(Node):
    SCHEMA = _models("ModelMergeSimple", [_ratio("ratio", "1.0 keeps model1, 0.0 gives model2.")])

    def execute(self, ctx, *, model1: Any, model2: Any, ratio: float) -> NodeResult:
        return _merge(ctx, "ModelMergeSimple", model1, model2, simple_weights(ratio))


class ModelMergeSubtract(Node):
    SCHEMA = _models("ModelMergeSubtract", [_multiplier()])

    def execute(self, ctx, *, model1: Any, model2: Any, multiplier: float) -> NodeResult:
        return _merge(ctx, "ModelMergeSubtract", model1, model2, subtract_weights(multiplier))


class ModelMergeAdd(Node):
    SCHEMA = _models("ModelMergeAdd", [])

    def execute(self, ctx, *, model1: Any, model2: Any) -> NodeResult:
        return _merge(ctx, "ModelMergeAdd", model1, model2, add_weights())


class _BlockMerge(Node):
    """Per-block ratios: each input is named by the LDM key prefix it applies to (longest match wins)."""

    def execute(self, ctx, *, model1: Any, model2: Any, **ratios: float) -> NodeResult:
        order = [spec.name for spec in self.SCHEMA.inputs[2:]]
        weights = block_weights([(name, float(ratios[name])) for name in order])
        return _merge(ctx, self.SCHEMA.node_type, model1, model2, weights, by_block=True)


class ModelMergeBlocks(_BlockMerge):
    SCHEMA = _models("ModelMergeBlocks", [_ratio("input"), _ratio("middle"), _ratio("out")])


def _sd1_blocks() -> list[InputSpec]:
    names = ["time_embed.", "label_emb."] + [f"input_blocks.{i}." for i in range(12)]
    names += [f"middle_block.{i}." for i in range(3)] + [f"output_blocks.{i}." for i in range(12)] + ["out."]
    return [_ratio(name) for name in names]


def _sdxl_blocks() -> list[InputSpec]:
    # ComfyUI spells these without the trailing dot (input_blocks.0 ... input_blocks.8).
    names = ["time_embed.", "label_emb."] + [f"input_blocks.{i}" for i in range(9)]
    names += [f"middle_block.{i}" for i in range(3)] + [f"output_blocks.{i}" for i in range(9)] + ["out."]
    return [_ratio(name) for name in names]


class ModelMergeSD1(_BlockMerge):
    SCHEMA = _models("ModelMergeSD1", _sd1_blocks(), _CATEGORY + "/model_specific")


class ModelMergeSD2(_BlockMerge):
    """SD2's U-Net has SD1's blocks; ComfyUI registers the same node under both names."""

    SCHEMA = _models("ModelMergeSD2", _sd1_blocks(), _CATEGORY + "/model_specific")


class ModelMergeSDXL(_BlockMerge):
    SCHEMA = _models("ModelMergeSDXL", _sdxl_blocks(), _CATEGORY + "/model_specific")


class CLIPMergeSimple(Node):
    SCHEMA = _clips("CLIPMergeSimple", [_ratio("ratio", "1.0 keeps clip1, 0.0 gives clip2.")])

    def execute(self, ctx, *, clip1: Any, clip2: Any, ratio: float) -> NodeResult:
        return _merge_clip(ctx, "CLIPMergeSimple", clip1, clip2, simple_weights(ratio))


class CLIPMergeSubtract(Node):
    SCHEMA = _clips("CLIPMergeSubtract", [_multiplier()])

    def execute(self, ctx, *, clip1: Any, clip2: Any, multiplier: float) -> NodeResult:
        return _merge_clip(ctx, "CLIPMergeSubtract", clip1, clip2, subtract_weights(multiplier))


class CLIPMergeAdd(Node):
    SCHEMA = _clips("CLIPMergeAdd", [])

    def execute(self, ctx, *, clip1: Any, clip2: Any) -> NodeResult:
        return _merge_clip(ctx, "CLIPMergeAdd", clip1, clip2, add_weights())


NODES = [ModelMergeSimple, ModelMergeBlocks, ModelMergeSubtract, ModelMergeAdd, ModelMergeSD1, ModelMergeSD2,
         ModelMergeSDXL, CLIPMergeSimple, CLIPMergeSubtract, CLIPMergeAdd]
