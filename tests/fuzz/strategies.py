"""Hypothesis strategies for every JSON entry point: the API format, the editor format and the
POST /prompt envelope. Each mixes well-formed shapes (so generation reaches deep into the
converter and the validator) with wrong types, odd numbers and junk in every position."""

from __future__ import annotations

import copy
import os
from typing import Any

from hypothesis import strategies as st

from tests.support import testpack


def scaled(examples: int) -> int:
    """Example counts are sized for the test pass; SUMIE_FUZZ_SCALE=20 searches twenty times longer."""
    return max(1, int(examples * float(os.environ.get("SUMIE_FUZZ_SCALE", "1"))))


NODE_TYPES = sorted(cls.SCHEMA.node_type for cls in testpack.NODES if cls.SCHEMA.node_type not in ("Sleep",))
INPUT_NAMES = sorted({spec.name for cls in testpack.NODES for spec in cls.SCHEMA.inputs}) + ["", "__value__"]
NODE_IDS = ["1", "2", "3", "4", "10", "a", "1:2", ""]

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
numbers = st.one_of(st.integers(-(2**70), 2**70), st.integers(-5, 5),
                    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.5, -0.0, 1e308, 5e-324]))
leaves = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(texts, inner, max_size=4), max_leaves=12)


# -- API format ----------------------------------------------------------------------------------
links = st.one_of(
    st.tuples(st.sampled_from(NODE_IDS), st.integers(-2, 4)).map(list),  # well-formed or nearly
    st.lists(st.one_of(st.sampled_from(NODE_IDS), st.integers(-3, 2**65), st.none()), max_size=4),
)
input_values = st.one_of(leaves, links, st.fixed_dictionaries({"__value__": st.lists(leaves, max_size=3)}),
                         json_values)
api_nodes = st.fixed_dictionaries(
    {"class_type": st.one_of(st.sampled_from(NODE_TYPES), texts, st.integers())},
    optional={"inputs": st.one_of(st.dictionaries(st.sampled_from(INPUT_NAMES) | texts, input_values, max_size=4),
                                  json_values),
              "_meta": st.one_of(st.fixed_dictionaries({"title": texts}), json_values)})
api_prompts = st.dictionaries(st.sampled_from(NODE_IDS) | texts, st.one_of(api_nodes, json_values), max_size=5)


def _constant_for(spec: Any) -> st.SearchStrategy[Any]:
    """A typed-in value for one declared input: mostly of its type and near its range, sometimes not."""
    from graph.schema import BooleanInput, ComboInput, FloatInput, IntInput, StringInput

    if isinstance(spec, IntInput):
        low, high = spec.min if spec.min is not None else -(2**63), spec.max if spec.max is not None else 2**64
        good = st.one_of(st.integers(max(low, -100), min(high, 100)), st.sampled_from([low, high, low - 1, high + 1]))
    elif isinstance(spec, FloatInput):
        good = st.floats(allow_nan=False, allow_infinity=False, min_value=-20, max_value=20)
    elif isinstance(spec, StringInput):
        good = st.one_of(texts, st.just("x" * 1000))
    elif isinstance(spec, BooleanInput):
        good = st.booleans()
    elif isinstance(spec, ComboInput) and isinstance(spec.choices, (list, tuple)) and spec.choices:
        good = st.sampled_from(list(spec.choices))
    else:
        good = leaves
    return st.one_of(good, good, good, leaves)


@st.composite
def runnable_prompts(draw: st.DrawFn) -> dict[str, Any]:
    """API prompts built from the test pack's schemas: inputs of the right names, values mostly of the right
    type, links to earlier nodes' real outputs. Many validate and run, so execution is fuzzed too."""
    by_type = {cls.SCHEMA.node_type: cls.SCHEMA for cls in testpack.NODES if cls.SCHEMA.node_type in NODE_TYPES}
    prompt: dict[str, Any] = {}
    for index in range(1, draw(st.integers(1, 6)) + 1):
        schema = by_type[draw(st.sampled_from(sorted(by_type)))]
        inputs: dict[str, Any] = {}
        for spec in schema.inputs:
            earlier = [(nid, slot) for nid, node in prompt.items()
                       for slot in range(len(by_type[node["class_type"]].outputs))]
            if earlier and draw(st.integers(0, 2)) == 0:
                nid, slot = draw(st.sampled_from(earlier))
                inputs[spec.name] = [nid, slot]
            elif not spec.optional or draw(st.booleans()):
                inputs[spec.name] = draw(_constant_for(spec))
        prompt[str(index)] = {"class_type": schema.node_type, "inputs": inputs}
    return prompt


# -- editor format -------------------------------------------------------------------------------
SUBGRAPH_IDS = ["sg-a", "sg-b"]
ui_node_ids = st.one_of(st.integers(1, 6), st.integers(1, 6), st.sampled_from([-10, -20, 0, "5", "x"]))
slot_types = st.sampled_from(["INT", "FLOAT", "STRING", "*", "IMAGE", "INT,FLOAT"])
ui_types = st.sampled_from(NODE_TYPES + ["Reroute", "PrimitiveNode", "Note", "Missing"] + SUBGRAPH_IDS)
slot_index = st.integers(0, 3)

slot_in = st.fixed_dictionaries(
    {"name": st.sampled_from(INPUT_NAMES), "type": slot_types},
    optional={"link": st.one_of(st.none(), st.integers(0, 12)),
              "widget": st.fixed_dictionaries({"name": st.sampled_from(INPUT_NAMES)})})
slot_out = st.fixed_dictionaries({"name": texts, "type": slot_types},
                                 optional={"links": st.lists(st.integers(0, 12), max_size=3),
                                           "slot_index": st.integers(0, 3)})
ui_nodes = st.fixed_dictionaries(
    {"id": ui_node_ids, "type": ui_types},
    optional={"mode": st.sampled_from([0, 0, 2, 4]), "inputs": st.lists(slot_in, max_size=3),
              "outputs": st.lists(slot_out, max_size=2),
              "widgets_values": st.one_of(st.lists(leaves, max_size=5),
                                          st.dictionaries(st.sampled_from(INPUT_NAMES), leaves, max_size=3)),
              "title": texts, "properties": st.just({})})
link_tuples = st.tuples(st.integers(0, 12), ui_node_ids, slot_index, ui_node_ids, slot_index, slot_types).map(list)
link_objects = st.fixed_dictionaries({"id": st.integers(0, 12), "origin_id": ui_node_ids, "origin_slot": slot_index,
                                      "target_id": ui_node_ids, "target_slot": slot_index},
                                     optional={"type": slot_types})
subgraph_io = st.lists(st.fixed_dictionaries({"name": texts, "type": slot_types}), max_size=2)
subgraphs = st.fixed_dictionaries(
    {"id": st.sampled_from(SUBGRAPH_IDS), "nodes": st.lists(ui_nodes, max_size=3),
     "links": st.lists(link_objects, max_size=4)},
    optional={"inputs": subgraph_io, "outputs": subgraph_io})
well_formed_ui = st.fixed_dictionaries(
    {"nodes": st.lists(ui_nodes, max_size=6), "links": st.lists(st.one_of(link_tuples, link_objects), max_size=8)},
    optional={"version": st.sampled_from([0.4, 1]), "definitions": st.fixed_dictionaries(
        {"subgraphs": st.lists(subgraphs, max_size=2)}), "extra": st.just({}), "groups": st.just([])})


def _places(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path into a JSON value (dict keys and list indexes), the root included."""
    found = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            found += _places(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _places(v, (*path, i))
    return found


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> Any:
    """A well-formed value with one place (anywhere in it) replaced by an arbitrary JSON value."""
    value = copy.deepcopy(draw(base))
    path = draw(st.sampled_from([p for p in _places(value) if p]))
    holder = value
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = draw(json_values)
    return value


# Half well formed (deep into conversion and validation), half broken in exactly one place.
ui_workflows = st.one_of(well_formed_ui, mutated(well_formed_ui))


def _maybe_junk(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the well-formed value, sometimes anything at all."""
    return st.one_of(strategy, strategy, strategy, strategy, json_values)


# -- the POST /prompt envelope -------------------------------------------------------------------
prompt_ids = st.one_of(st.from_regex(r"[A-Za-z0-9_.:\-]{1,20}", fullmatch=True), texts, st.integers())
envelopes = st.fixed_dictionaries(
    {"prompt": st.one_of(runnable_prompts(), runnable_prompts(), api_prompts, ui_workflows, json_values)},
    optional={"client_id": _maybe_junk(texts), "prompt_id": prompt_ids,
              "extra_data": _maybe_junk(st.dictionaries(st.sampled_from(["extra_pnginfo", "preview_method", "x"]),
                                                        json_values, max_size=2)),
              "number": _maybe_junk(numbers), "front": _maybe_junk(st.booleans()),
              "partial_execution_targets": _maybe_junk(st.one_of(st.none(), st.lists(st.sampled_from(NODE_IDS))))})
# Whole bodies: envelopes, bare editor workflows (accepted as the body), and anything else.
bodies = st.one_of(envelopes, envelopes, ui_workflows, json_values)
