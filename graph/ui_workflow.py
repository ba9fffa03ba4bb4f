"""Editor-format ("UI") workflows converted to API prompts, on the server and the command line.

Handles what saved files contain (versions 0.4 and 1; see shared docs, comfy-compat section 2):
positional `widgets_values` mapped through each node's schema (skipping a seed's
control_after_generate value and an image upload button's value), widgets converted to inputs,
Reroute chains, PrimitiveNode values written into every widget they feed, Note/MarkdownNote
dropped, muted nodes (mode 2) dropped, bypassed nodes (mode 4) re-linked type-correctly, groups
ignored, and subgraph definitions (`definitions.subgraphs`) expanded inline. Everything here is
iterative, so chains of any length convert.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import Issue
from .limits import Limits
from .registry import NodeDef, NodeRegistry
from .schema import BooleanInput, IntInput
from .types import types_compatible

MUTED, BYPASS = 2, 4
VIRTUAL = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap"})
UPLOAD_VALUES = frozenset({"image", "upload", "video", "audio"})
SUBGRAPH_INPUT, SUBGRAPH_OUTPUT = -10, -20
MAX_SUBGRAPH_DEPTH = 32


@dataclass(frozen=True, slots=True)
class _Link:
    id: str
    origin: str
    origin_slot: int
    target: str
    target_slot: int
    type: Any


@dataclass(kw_only=True)
class Conversion:
    prompt: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, list[Issue]] = field(default_factory=dict)  # node id -> problems
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def messages(self) -> list[str]:
        return [issue.describe(nid) for nid, issues in self.errors.items() for issue in issues]


def is_ui_workflow(data: Any) -> bool:
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list) and "links" in data


def convert_ui_workflow(workflow: Mapping[str, Any], registry: NodeRegistry, *,
                        max_nodes: int = Limits.max_nodes) -> Conversion:
    """The API prompt for an editor-format workflow, with every node it could not convert named.

    The file is checked against the editor format's schema first; subgraph expansion stops as soon
    as it would produce more than `max_nodes` nodes (nesting multiplies them geometrically).
    """
    from .ui_check import ui_workflow_problem

    result = Conversion()
    problem = ui_workflow_problem(workflow)
    if problem is not None:
        result.errors[""] = [problem]
        return result
    nodes = {str(n.get("id")): dict(n) for n in workflow.get("nodes") or [] if isinstance(n, Mapping)}
    links = _read_links(workflow.get("links") or [])
    subgraphs = {str(sg.get("id")): sg for sg in (workflow.get("definitions") or {}).get("subgraphs") or []
                 if isinstance(sg, Mapping)}
    if subgraphs:
        try:
            nodes, links = _expand_subgraphs(nodes, links, subgraphs, max_nodes=max_nodes)
        except ValueError as exc:
            result.errors[""] = [Issue(type="invalid_subgraph", message=str(exc))]
            return result

    for nid, node in nodes.items():
        kind = node.get("type")
        mode = node.get("mode", 0)
        if not isinstance(kind, str) or kind in VIRTUAL or mode in (MUTED, BYPASS):
            continue
        node_def = registry.get(kind) if isinstance(kind, str) else None
        if node_def is None:
            result.errors[nid] = [Issue(type="missing_node_type",
                                        message=f"Node type '{kind}' (node {nid}) does not exist",
                                        details=registry.missing_node_hint(str(kind)),
                                        extra={"class_type": kind})]
            continue
        inputs = _widget_values(node, node_def, result.warnings, nid)
        for slot in node.get("inputs") or []:
            if not isinstance(slot, Mapping) or slot.get("link") is None:
                continue
            name = (slot.get("widget") or {}).get("name") or slot.get("name")
            if name not in node_def.inputs:
                result.warnings.append(f"node {nid} ({kind}): input '{name}' is not an input of {kind}; ignored")
                continue
            source = _resolve(str(slot["link"]), nodes, links)
            if source is None:
                continue  # a widget keeps its saved value; a socket stays unconnected (validation says so)
            if isinstance(source, tuple):
                inputs[name] = [source[0], source[1]]
            else:
                inputs[name] = _constant(source["value"])
        entry: dict[str, Any] = {"inputs": inputs, "class_type": kind}
        title = node.get("title")
        entry["_meta"] = {"title": title if isinstance(title, str) else node_def.schema.display_name or kind}
        result.prompt[nid] = entry
    return result


def _constant(value: Any) -> Any:
    return {"__value__": value} if isinstance(value, list) else value


def _read_links(raw: list[Any]) -> dict[str, _Link]:
    links: dict[str, _Link] = {}
    for item in raw:
        if isinstance(item, list) and len(item) >= 5:
            link = _Link(str(item[0]), str(item[1]), int(item[2]), str(item[3]), int(item[4]),
                         item[5] if len(item) > 5 else None)
        elif isinstance(item, Mapping) and "origin_id" in item:
            link = _Link(str(item["id"]), str(item["origin_id"]), int(item["origin_slot"]), str(item["target_id"]),
                         int(item["target_slot"]), item.get("type"))
        else:
            continue
        links[link.id] = link
    return links


def _resolve(link_id: str, nodes: dict[str, dict], links: dict[str, _Link]) -> tuple[str, int] | dict | None:
    """Where a link's value really comes from: (node id, slot), {"value": v} from a primitive, or None.

    Follows Reroutes and bypassed nodes; a muted source, a dangling link or a loop gives None.
    """
    seen: set[str] = set()
    while link_id not in seen:
        seen.add(link_id)
        link = links.get(link_id)
        origin = nodes.get(link.origin) if link else None
        if origin is None:
            return None
        kind, mode = origin.get("type"), origin.get("mode", 0)
        if mode == MUTED:
            return None
        if kind == "Reroute":
            upstream = ((origin.get("inputs") or [{}])[0] or {}).get("link")
            if upstream is None:
                return None
            link_id = str(upstream)
            continue
        if kind == "PrimitiveNode":
            values = origin.get("widgets_values")
            return {"value": values[0]} if isinstance(values, list) and values else None
        if mode == BYPASS:
            outputs = origin.get("outputs") or []
            out_type = link.type
            if link.origin_slot < len(outputs) and isinstance(outputs[link.origin_slot], Mapping):
                out_type = outputs[link.origin_slot].get("type", out_type)
            through = next((i for i in origin.get("inputs") or []
                            if isinstance(i, Mapping) and i.get("link") is not None
                            and _same_type(i.get("type"), out_type)), None)
            if through is None:
                return None
            link_id = str(through["link"])
            continue
        if kind in VIRTUAL:
            return None
        return (link.origin, link.origin_slot)
    return None


def _same_type(a: Any, b: Any) -> bool:
    if not isinstance(a, str) or not isinstance(b, str):
        return a == b
    return types_compatible(a, b)


def _widget_values(node: Mapping[str, Any], node_def: NodeDef, warnings: list[str], nid: str) -> dict[str, Any]:
    """Saved widget values by input name, walking the schema's widget inputs in order.

    A widget the file does not store (older files, nodes saved before an input existed) gets its
    default, as the editor gives it when it opens the file.
    """
    saved = node.get("widgets_values")
    widgets = [spec for spec in node_def.inputs.values() if spec.is_widget]
    values: dict[str, Any] = {s.name: _constant(s.default_value()) for s in widgets
                              if not s.optional and s.has_default() and s.default_value() is not None}
    if isinstance(saved, Mapping):
        values.update({s.name: _constant(saved[s.name]) for s in widgets if s.name in saved})
        return values
    if not isinstance(saved, list):
        return values
    i = 0
    for k, spec in enumerate(widgets):
        if i >= len(saved):
            break
        values[spec.name] = _constant(saved[i])
        i += 1
        if isinstance(spec, IntInput) and spec.control_after_generate or spec.name in ("seed", "noise_seed"):
            # "fixed"/"randomize"/...; files from older editors saved a boolean there instead
            following_is_boolean = k + 1 < len(widgets) and isinstance(widgets[k + 1], BooleanInput)
            if i < len(saved) and (_is_one_of(saved[i], CONTROL_VALUES)
                                   or isinstance(saved[i], bool) and not following_is_boolean):
                i += 1
        if spec.extra.get("image_upload") and i < len(saved) and _is_one_of(saved[i], UPLOAD_VALUES):
            i += 1
    if i < len(saved):
        warnings.append(f"node {nid} ({node_def.class_type}): {len(saved) - i} saved widget value(s) beyond "
                        "its inputs were ignored")
    return values


def _is_one_of(value: Any, choices: frozenset[str]) -> bool:
    return isinstance(value, str) and value in choices


def _expand_subgraphs(nodes: dict[str, dict], links: dict[str, _Link], subgraphs: Mapping[str, Mapping[str, Any]],
                      *, max_nodes: int) -> tuple[dict[str, dict], dict[str, _Link]]:
    """Inline every subgraph instance (nested ones too): inner nodes get ids '<instance>:<inner>'.

    One level per round; the links leaving the instances of a round are rewired in one pass at its
    end (per instance it would be quadratic). The node count is checked after every instance.
    """
    for _ in range(MAX_SUBGRAPH_DEPTH):
        instances = [nid for nid, n in nodes.items() if str(n.get("type")) in subgraphs]
        if not instances:
            return nodes, links
        produced: dict[str, dict[int, tuple[str, int]]] = {}
        for inst_id in instances:
            produced[inst_id] = _inline(inst_id, nodes, links, subgraphs[str(nodes[inst_id]["type"])])
            if len(nodes) > max_nodes or len(links) > 4 * max_nodes:
                raise ValueError(f"expanding the subgraphs gives more than {max_nodes:,} nodes (instances of "
                                 "nested subgraphs multiply); the limit keeps one file from freezing the server")
        _rewire(links, produced)
    raise ValueError(f"subgraphs nest deeper than {MAX_SUBGRAPH_DEPTH} levels (or contain themselves)")


def _rewire(links: dict[str, _Link], produced: Mapping[str, Mapping[int, tuple[str, int]]]) -> None:
    """Links that left an inlined instance now leave the inner node that produces that output."""
    for link_id, link in list(links.items()):
        source: tuple[str, int] | None = (link.origin, link.origin_slot)
        seen: set[str] = set()
        while source is not None and source[0] in produced and source[0] not in seen:
            seen.add(source[0])
            source = produced[source[0]].get(source[1])
        if source is None or source[0] in produced:
            del links[link_id]
        elif source != (link.origin, link.origin_slot):
            links[link_id] = _Link(link.id, source[0], source[1], link.target, link.target_slot, link.type)


def _inline(inst_id: str, nodes: dict[str, dict], links: dict[str, _Link],
            sg: Mapping[str, Any]) -> dict[int, tuple[str, int]]:
    instance = nodes.pop(inst_id)
    prefix = f"{inst_id}:"
    inner_links = _read_links(sg.get("links") or [])
    feeding = {i: str(slot.get("link")) for i, slot in enumerate(instance.get("inputs") or [])
               if isinstance(slot, Mapping) and slot.get("link") is not None}
    produced: dict[int, tuple[str, int]] = {}
    renamed: dict[str, str] = {}
    for link in inner_links.values():
        new_id = prefix + link.id
        if link.target == str(SUBGRAPH_OUTPUT):
            origin = _outer_origin(link, prefix, feeding, links)
            if origin is not None:
                produced[link.target_slot] = origin
            continue
        origin = _outer_origin(link, prefix, feeding, links)
        if origin is None:
            continue
        links[new_id] = _Link(new_id, origin[0], origin[1], prefix + link.target, link.target_slot, link.type)
        renamed[link.id] = new_id
    for inner in sg.get("nodes") or []:
        if not isinstance(inner, Mapping):
            continue
        copy = dict(inner)
        copy["id"] = prefix + str(inner.get("id"))
        copy["inputs"] = [{**slot, "link": renamed.get(str(slot.get("link")))} if isinstance(slot, Mapping) else slot
                          for slot in inner.get("inputs") or []]
        nodes[copy["id"]] = copy
    for link_id in list(feeding.values()):
        links.pop(link_id, None)
    return produced


def _outer_origin(link: _Link, prefix: str, feeding: dict[int, str],
                  links: dict[str, _Link]) -> tuple[str, int] | None:
    if link.origin == str(SUBGRAPH_INPUT):
        outer = links.get(feeding.get(link.origin_slot, ""))
        return (outer.origin, outer.origin_slot) if outer else None
    return (prefix + link.origin, link.origin_slot)
