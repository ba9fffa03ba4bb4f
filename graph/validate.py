"""Workflow validation: a pure, linear-time, non-recursive function returning every error at once.

Policy (the one ComfyUI clients expect): an unknown or malformed node anywhere rejects the prompt;
otherwise each output node is judged by itself and its ancestors. Outputs whose ancestors are all
valid still run and the response lists the failed ones in `node_errors`; only when no output is valid
is the prompt rejected (`prompt_outputs_failed_validation`). Nodes that feed no requested output are
not validated, since they will not run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import MISSING, InputError, Issue
from .limits import Limits
from .registry import NodeDef, NodeRegistry
from .schema import ComboInput
from .types import types_compatible
from .workflow import BadLink, Link, NodeInstance, Workflow

DEFAULT_LIMITS = Limits()
_MAX_CYCLE_REPORTS = 100


@dataclass(kw_only=True)
class NodeErrors:
    class_type: str
    errors: list[Issue] = field(default_factory=list)
    dependent_outputs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "errors": [e.to_json() for e in self.errors],
            "dependent_outputs": self.dependent_outputs,
            "class_type": self.class_type,
        }


@dataclass(kw_only=True)
class ValidationResult:
    ok: bool
    workflow: Workflow
    outputs: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # topological order of the nodes that will run
    error: Issue | None = None
    node_errors: dict[str, NodeErrors] = field(default_factory=dict)
    warnings: list[tuple[str, Issue]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The body ComfyUI clients parse: `{"error": ..., "node_errors": {...}}`."""
        body: dict[str, Any] = {"node_errors": {nid: ne.to_json() for nid, ne in self.node_errors.items()}}
        if self.error is not None:
            body["error"] = self.error.to_json()
        return body

    def messages(self) -> list[str]:
        """Every problem as one readable line (for the command line and logs)."""
        lines = []
        summary_only = self.error and self.error.type in ("prompt_outputs_failed_validation", "invalid_prompt")
        if self.error and not (summary_only and self.node_errors):
            lines.append(self.error.describe())
        for nid, ne in self.node_errors.items():
            lines.extend(e.describe(nid, ne.class_type) for e in ne.errors)
        return lines


def validate_workflow(
    workflow: Workflow,
    registry: NodeRegistry,
    *,
    targets: Sequence[str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ValidationResult:
    nodes = workflow.nodes
    result = ValidationResult(ok=False, workflow=workflow)
    doc_issues = workflow.parse_issues.get("")
    if doc_issues:
        result.error = doc_issues[0]
        return result
    total = len(nodes) + len(workflow.parse_issues)
    if total > limits.max_nodes:
        result.error = Issue(type="too_many_nodes", message=f"The prompt has {total} nodes; the limit is "
                             f"{limits.max_nodes}", details="split the workflow or raise the node limit")
        return result

    errors: dict[str, list[Issue]] = {nid: list(iss) for nid, iss in workflow.parse_issues.items()}
    class_of: dict[str, str] = {}
    defs: dict[str, NodeDef] = {}
    get_def = registry.get
    for nid, node in nodes.items():
        node_def = get_def(node.class_type)
        if node_def is None:
            errors[nid] = [Issue(type="missing_node_type",
                                 message=f"Node type '{node.class_type}' (node {nid}) does not exist",
                                 details=registry.missing_node_hint(node.class_type),
                                 extra={"class_type": node.class_type})]
        else:
            defs[nid] = node_def
    if errors:
        for nid in errors:
            node = nodes.get(nid)
            class_of[nid] = node.class_type if node else ""
        first_id = next(iter(errors))
        first = errors[first_id][0]
        result.error = Issue(type="invalid_prompt", message=f"Cannot execute because {first.message[0].lower()}"
                             f"{first.message[1:]}", details=first.details, extra={"node_id": first_id})
        result.node_errors = {nid: NodeErrors(class_type=class_of[nid], errors=iss) for nid, iss in errors.items()}
        return result

    if targets is not None:
        unknown = [t for t in targets if t not in nodes]
        if unknown:
            result.error = Issue(type="invalid_target", message=f"Execution targets not in the prompt: {unknown}",
                                 details="partial_execution_targets must name node ids of this prompt")
            return result
        outputs = list(dict.fromkeys(targets))
    else:
        outputs = [nid for nid, d in defs.items() if d.schema.output_node]
    if not outputs:
        result.error = Issue(type="prompt_no_outputs", message="Prompt has no outputs",
                             details="add an output node such as SaveImage or PreviewImage")
        return result

    run_set = _ancestors(nodes, outputs)
    new_nodes: dict[str, NodeInstance] | None = None
    choice_memo: dict[int, list[Any]] = {}
    for nid in run_set:
        node = nodes[nid]
        node_def = defs[nid]
        node_issues, changed = _check_node(node, node_def, nodes, defs, limits, choice_memo, result.warnings,
                                           registry.folders)
        if node_issues:
            errors[nid] = node_issues
        elif changed:
            if new_nodes is None:
                new_nodes = dict(nodes)
            new_nodes[nid] = NodeInstance(id=nid, class_type=node.class_type, inputs={**node.inputs, **changed},
                                          title=node.title)
    if new_nodes is not None:
        workflow = Workflow(nodes=new_nodes, raw=workflow.raw, parse_issues=workflow.parse_issues)
        result.workflow = workflow
        nodes = new_nodes

    for nid in run_set:
        if nid not in errors and defs[nid].has_validate:
            issue = _custom_validation(nodes[nid], defs[nid], limits, registry.folders)
            if issue is not None:
                errors[nid] = [issue]

    order, cyclic = topological_order(nodes, run_set)
    if cyclic:
        for nid, issue in _describe_cycles(nodes, cyclic):
            errors.setdefault(nid, []).append(issue)

    if errors or cyclic:
        bad = set(errors) | cyclic
        for nid in order:
            if nid not in bad:
                for v in nodes[nid].inputs.values():
                    if type(v) is Link and v.node_id in bad:
                        bad.add(nid)
                        break
        good_outputs = [o for o in outputs if o not in bad]
        node_errors = {nid: NodeErrors(class_type=nodes[nid].class_type, errors=iss) for nid, iss in errors.items()}
        for out in outputs:
            if out in bad:
                for anc in _ancestors(nodes, [out]):
                    if anc in node_errors:
                        node_errors[anc].dependent_outputs.append(out)
        result.node_errors = node_errors
        if not good_outputs:
            result.error = Issue(type="prompt_outputs_failed_validation", message="Prompt outputs failed validation",
                                 details="; ".join(result.messages()[:5]))
            return result
        keep = _ancestors(nodes, good_outputs)
        order = [n for n in order if n in keep]
        outputs = good_outputs

    result.ok = True
    result.outputs = outputs
    result.order = order
    return result


def _check_node(
    node: NodeInstance,
    node_def: NodeDef,
    nodes: dict[str, NodeInstance],
    defs: dict[str, NodeDef],
    limits: Limits,
    choice_memo: dict[int, list[Any]],
    warnings: list[tuple[str, Issue]],
    folders: Any = None,
) -> tuple[list[Issue], dict[str, Any] | None]:
    issues: list[Issue] = []
    changed: dict[str, Any] | None = None
    inputs = node.inputs
    for name, spec in node_def.inputs.items():
        value = inputs.get(name, MISSING)
        if value is MISSING:
            if not spec.optional:
                hint = f" (its default is {spec.default_value()!r})" if spec.has_default() else ""
                issues.append(Issue(type="required_input_missing", message=f"Required input is missing: {name}",
                                    details=f"connect a {spec.type} or set a value{hint}", input_name=name))
            continue
        kind = type(value)
        if kind is Link:
            src = nodes.get(value.node_id)
            if src is None:
                issues.append(Issue(type="link_to_missing_node",
                                    message=f"Input '{name}' is linked to node {value.node_id}, which is not in "
                                    "the prompt", input_name=name, received=[value.node_id, value.output_index]))
                continue
            out_types = defs[value.node_id].output_types
            if value.output_index >= len(out_types):
                issues.append(Issue(type="link_to_missing_output",
                                    message=f"Input '{name}' is linked to output {value.output_index} of node "
                                    f"{value.node_id} ({src.class_type}), which has {len(out_types)} output(s)",
                                    input_name=name, received=[value.node_id, value.output_index]))
                continue
            out_type = out_types[value.output_index]
            if out_type != spec.type and not types_compatible(out_type, spec.type):
                issues.append(Issue(type="return_type_mismatch",
                                    message=f"Return type mismatch between linked nodes: {name}, received_type"
                                    f"({out_type}) mismatch input_type({spec.type})",
                                    details=f"node {value.node_id} ({src.class_type}) outputs {out_type}; "
                                    f"'{name}' needs {spec.type}", input_name=name,
                                    extra={"received_type": out_type, "input_type": spec.type,
                                           "linked_node": [value.node_id, value.output_index]}))
        elif kind is BadLink:
            issues.append(Issue(type="malformed_link", message=f"Bad linked input '{name}': {value.reason}",
                                details="a link is [source_node_id (string), output_index (integer >= 0)]; "
                                "write a list constant as {\"__value__\": [...]}",
                                input_name=name, received=value.raw))
        else:
            try:
                if type(spec) is ComboInput:
                    key = id(spec)
                    choices = choice_memo.get(key)
                    if choices is None:
                        choices = choice_memo[key] = spec.current_choices(folders)
                    new = spec.coerce(value, limits, choices)
                else:
                    new = spec.coerce(value, limits)
            except InputError as exc:
                issues.append(Issue(type=exc.type, message=exc.message, details=name,
                                    input_name=name, received=value, extra=exc.extra))
                continue
            if new is not value and (type(new) is not type(value) or new != value):
                if changed is None:
                    changed = {}
                changed[name] = new
    if len(inputs) > len(node_def.inputs) or any(k not in node_def.inputs for k in inputs):
        for name in inputs:
            if name not in node_def.inputs:
                warnings.append((node.id, Issue(type="unknown_input", message=f"Input '{name}' is not an input of "
                                                f"{node.class_type}; it is ignored", input_name=name)))
    return issues, changed


def _custom_validation(node: NodeInstance, node_def: NodeDef, limits: Limits, folders: Any) -> Issue | None:
    constants = {k: v for k, v in node.inputs.items()
                 if k in node_def.inputs and type(v) is not Link}
    if "validate_inputs" in node_def.hooks_take_folders:
        constants["folders"] = folders
    try:
        verdict = node_def.cls().validate_inputs(limits=limits, **constants)
    except Exception as exc:  # a node's own check failing is reported, never fatal
        verdict = f"{type(exc).__name__}: {exc}"
    if verdict is True or verdict is None:
        return None
    return Issue(type="custom_validation_failed", message=str(verdict),
                 details=f"{node.class_type} rejected its inputs",
                 extra={"node_id": node.id})


def _ancestors(nodes: dict[str, NodeInstance], roots: Iterable[str]) -> dict[str, None]:
    """Roots and everything they link to (iteratively), as an insertion-ordered set."""
    seen: dict[str, None] = dict.fromkeys(roots)
    stack = list(seen)
    while stack:
        for v in nodes[stack.pop()].inputs.values():
            if type(v) is Link and v.node_id not in seen and v.node_id in nodes:
                seen[v.node_id] = None
                stack.append(v.node_id)
    return seen


def topological_order(nodes: dict[str, NodeInstance], run_set: dict[str, None]) -> tuple[list[str], set[str]]:
    """Kahn's algorithm: an order for the acyclic part, and the nodes stuck on or behind a cycle."""
    indegree = dict.fromkeys(run_set, 0)
    consumers: dict[str, list[str]] = {}
    for nid in run_set:
        for v in nodes[nid].inputs.values():
            if type(v) is Link and v.node_id in indegree:
                indegree[nid] += 1
                if v.node_id in consumers:
                    consumers[v.node_id].append(nid)
                else:
                    consumers[v.node_id] = [nid]
    ready = deque(nid for nid, d in indegree.items() if d == 0)
    order: list[str] = []
    no_consumers: list[str] = []
    while ready:
        nid = ready.popleft()
        order.append(nid)
        for c in consumers.get(nid, no_consumers):
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    if len(order) == len(run_set):
        return order, set()
    placed = set(order)
    return order, {nid for nid in run_set if nid not in placed}


def _describe_cycles(nodes: dict[str, NodeInstance], stuck: set[str]) -> list[tuple[str, Issue]]:
    import networkx as nx  # only on this rare path, so the common path pays nothing for it

    graph = nx.DiGraph()
    graph.add_nodes_from(stuck)
    for nid in stuck:
        for v in nodes[nid].inputs.values():
            if type(v) is Link and v.node_id in stuck:
                graph.add_edge(v.node_id, nid)
    reports: list[tuple[str, Issue]] = []
    for component in nx.strongly_connected_components(graph):
        if len(component) == 1:
            (only,) = component
            if not graph.has_edge(only, only):
                continue  # merely downstream of a cycle
        sub = graph.subgraph(component)
        cycle = [edge[0] for edge in nx.find_cycle(sub)]
        members = sorted(component, key=_id_sort_key)
        path = " -> ".join(cycle[:20]) + (" -> ..." if len(cycle) > 20 else f" -> {cycle[0]}")
        for nid in members[:_MAX_CYCLE_REPORTS]:
            reports.append((nid, Issue(type="dependency_cycle",
                                       message=f"Node {nid} is part of a dependency cycle: {path}",
                                       details=f"{len(members)} node(s) in the cycle; remove one of its links",
                                       extra={"cycle": members[:1000]})))
    return reports


def _id_sort_key(node_id: str) -> tuple[int, int | str]:
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)
