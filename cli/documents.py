"""`main.py convert IN OUT` (an editor workflow or image as an API prompt) and `main.py inspect FILE`
(the node types and model files a workflow needs that are missing here)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from graph import NodeRegistry
from graph.documents import ENVELOPE, detect_format, prompt_request_from, read_document
from graph.errors import RequestError
from graph.ui_workflow import convert_ui_workflow, is_ui_workflow

from .common import EXIT_ERROR, EXIT_OK, fail, read_bytes


def command_convert(args: argparse.Namespace, *, registry: NodeRegistry) -> int:
    """Write the API prompt of an editor workflow (or of a PNG/WebP's embedded workflow)."""
    try:
        request = prompt_request_from(read_bytes(args.source), registry)
    except RequestError as exc:
        return fail(exc, args.source)
    for warning in request.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    text = json.dumps(dict(request.workflow.raw), indent=2, ensure_ascii=False) + "\n"
    if str(args.target) == "-":
        sys.stdout.write(text)
    else:
        args.target.write_text(text, encoding="utf-8")
        print(f"wrote {args.target} ({len(request.workflow.raw)} nodes)", file=sys.stderr)
    return EXIT_OK


def inspect_workflow(data: Any, registry: NodeRegistry) -> dict[str, Any]:
    """Which node types a workflow needs that are missing, and which model/input files it names."""
    missing: dict[str, str] = {}
    prompt: dict[str, Any] = {}
    if detect_format(data) == ENVELOPE:
        data = data["prompt"]
    if is_ui_workflow(data):
        conversion = convert_ui_workflow(data, registry)
        for issues in conversion.errors.values():
            for issue in issues:
                if issue.type == "missing_node_type":
                    missing[str(issue.extra.get("class_type"))] = issue.details
        prompt = conversion.prompt
    elif isinstance(data, dict):
        prompt = data
    files = []
    for nid, node in prompt.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        node_def = registry.get(class_type) if isinstance(class_type, str) else None
        if node_def is None:
            if isinstance(class_type, str):
                missing[class_type] = registry.missing_node_hint(class_type)
            continue
        for name, spec in node_def.inputs.items():
            value = (node.get("inputs") or {}).get(name)
            if getattr(spec, "choices", None) is not None and callable(spec.choices) and isinstance(value, str):
                installed = value in spec.current_choices(registry.folders)
                files.append({"node": nid, "class_type": class_type, "input": name, "file": value,
                              "installed": installed})
    return {"missing_node_types": missing, "files": files}


def command_inspect(args: argparse.Namespace, *, registry: NodeRegistry) -> int:
    """Print what `args.workflow` needs that is missing; exit code 1 when anything is."""
    try:
        report = inspect_workflow(read_document(read_bytes(args.workflow)), registry)
    except RequestError as exc:
        return fail(exc, args.workflow)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for class_type, hint in report["missing_node_types"].items():
            print(f"missing node type: {class_type} ({hint})")
        for f in report["files"]:
            state = "ok" if f["installed"] else "MISSING"
            print(f"{state:>7}  {f['file']}  (node {f['node']} {f['class_type']}.{f['input']})")
        if not report["missing_node_types"] and all(f["installed"] for f in report["files"]):
            print("everything this workflow needs is installed")
    problems = report["missing_node_types"] or any(not f["installed"] for f in report["files"])
    return EXIT_ERROR if problems else EXIT_OK
