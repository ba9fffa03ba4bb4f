from __future__ import annotations

import pytest

from graph import (
    ComboInput,
    FloatInput,
    HiddenInput,
    InputSpec,
    IntInput,
    Node,
    NodeRegistry,
    NodeSchema,
    OutputSpec,
    SchemaError,
    StringInput,
)
from graph.types import types_compatible


def make(schema: NodeSchema, execute=None, **attrs):
    def default_execute(self, ctx, **kw):
        return ()

    return type(schema.node_type, (Node,), {"SCHEMA": schema, "execute": execute or default_execute, **attrs})


def test_object_info_has_the_comfy_shape(registry):
    info = registry.object_info()["Concat"]
    assert info["input"]["required"]["a"] == ["STRING", {"default": ""}]
    assert info["input"]["optional"] == {"sep": ["STRING", {"default": ""}]}
    assert info["input_order"] == {"required": ["a", "b"], "optional": ["sep"]}
    assert info["output"] == ["STRING"] and info["output_is_list"] == [False] and info["output_name"] == ["STRING"]
    for key in ("name", "display_name", "description", "category", "python_module", "output_node"):
        assert key in info
    add = registry.object_info("Add")["Add"]
    assert add["input"]["required"]["a"][1]["min"] == -(10**9)
    assert add["output_name"] == ["sum"]
    who = registry.object_info("WhoAmI")["WhoAmI"]
    assert who["input"]["hidden"] == {"unique_id": "UNIQUE_ID", "prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert who["output_node"] is True
    switch = registry.object_info("Switch")["Switch"]
    assert switch["input"]["required"]["a"] == ["*", {"lazy": True}]


def test_combo_object_info_lists_choices_and_reads_callables_each_time():
    files = ["a.safetensors"]
    spec = ComboInput(name="ckpt_name", choices=lambda folders: list(files))
    assert spec.to_object_info() == [["a.safetensors"]]
    files.append("b.safetensors")
    assert spec.to_object_info() == [["a.safetensors", "b.safetensors"]]


def test_registering_a_duplicate_id_is_refused(registry):
    with pytest.raises(SchemaError, match="already registered"):
        registry.register(make(NodeSchema(node_type="Add")))


@pytest.mark.parametrize("spec, message", [
    (IntInput(name="steps", default=0, min=1, max=10), "min <= default <= max"),
    (FloatInput(name="cfg", default=float("nan")), "finite"),
    (ComboInput(name="mode", choices=["a", "b"], default="c"), "not one of its choices"),
    (IntInput(name="bad name"), "identifier"),
])
def test_inconsistent_inputs_are_refused_at_registration(spec, message):
    with pytest.raises(SchemaError, match=message):
        NodeRegistry().register(make(NodeSchema(node_type="X", inputs=[spec])))


def test_duplicate_input_names_are_refused():
    schema = NodeSchema(node_type="X", inputs=[IntInput(name="a"), StringInput(name="a")])
    with pytest.raises(SchemaError, match="declared twice"):
        NodeRegistry().register(make(schema))


def test_execute_signature_must_match_the_declared_inputs():
    schema = NodeSchema(node_type="X", inputs=[IntInput(name="a"), IntInput(name="b")])

    def takes_only_a(self, ctx, *, a):
        return ()

    def wants_undeclared(self, ctx, *, a, b, c):
        return ()

    with pytest.raises(SchemaError, match=r"does not accept declared inputs \['b'\]"):
        NodeRegistry().register(make(schema, takes_only_a))
    with pytest.raises(SchemaError, match="requires 'c'"):
        NodeRegistry().register(make(schema, wants_undeclared))

    def fine(self, ctx, *, a, b, c=3):
        return ()

    NodeRegistry().register(make(schema, fine))


def test_optional_inputs_need_a_default_in_execute():
    schema = NodeSchema(node_type="X", inputs=[IntInput(name="a", optional=True)])

    def no_default(self, ctx, *, a):
        return ()

    with pytest.raises(SchemaError, match="needs a default"):
        NodeRegistry().register(make(schema, no_default))


def test_lazy_inputs_need_check_lazy_status():
    schema = NodeSchema(node_type="X", inputs=[InputSpec(name="a", type="IMAGE", lazy=True)])
    with pytest.raises(SchemaError, match="check_lazy_status"):
        NodeRegistry().register(make(schema))


def test_unknown_hidden_kind_is_refused():
    schema = NodeSchema(node_type="X", hidden=[HiddenInput(name="p", kind="SECRET")])
    with pytest.raises(SchemaError, match="unknown kind"):
        NodeRegistry().register(make(schema))


def test_node_without_execute_is_refused():
    class NoExecute(Node):
        SCHEMA = NodeSchema(node_type="NoExecute", outputs=[OutputSpec(type="INT")])

    with pytest.raises(SchemaError, match="does not implement execute"):
        NodeRegistry().register(NoExecute)


@pytest.mark.parametrize("out_type, in_type, ok", [
    ("IMAGE", "IMAGE", True), ("IMAGE", "MODEL", False), ("*", "MODEL", True), ("LATENT", "*", True),
    ("INT,FLOAT", "FLOAT", True), ("INT", "FLOAT,STRING", False),
])
def test_type_compatibility(out_type, in_type, ok):
    assert types_compatible(out_type, in_type) is ok
