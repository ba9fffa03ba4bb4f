"""Module attributes of `comfy_extras.nodes_*` resolved to the `nodes` facades of built-in nodes."""

from __future__ import annotations

from typing import Any


def node_attribute(module: str, table: dict[str, str], name: str) -> Any:
    """The facade of the node `table[name]` (ComfyUI's class name -> node id), or a clear AttributeError."""
    shown = module.removeprefix("compat.")
    node_id = table.get(name)
    if node_id is None:
        raise AttributeError(f"module {shown!r} has no attribute {name!r}: Sumie's compatibility layer provides "
                             f"{', '.join(sorted(table))} there")
    from ..nodes import NODE_CLASS_MAPPINGS

    try:
        return NODE_CLASS_MAPPINGS[node_id]
    except KeyError:
        raise AttributeError(f"module {shown!r} has no attribute {name!r}: this engine has no {node_id} "
                             "node") from None
