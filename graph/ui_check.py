"""The editor format checked against its published JSON Schema before it is converted.

The converter trusts the shapes the schema promises (slots are small integers, a node's type is
text, subgraph definitions are objects with node and link lists), so a malformed file is refused
here with the path of the first problem instead of failing deep inside the conversion.
"""

from __future__ import annotations

import functools
from typing import Any

from .errors import Issue
from .formats import load_schema


@functools.cache
def _validator() -> Any:
    # jsonschema_rs: a 2 MB workflow checks in milliseconds (the pure-Python validator takes seconds).
    import jsonschema_rs

    return jsonschema_rs.validator_for(load_schema("ui_workflow"))


def ui_workflow_problem(workflow: Any) -> Issue | None:
    """The first place an editor-format workflow breaks its schema, as an Issue; None when it is valid."""
    validator = _validator()
    if validator.is_valid(workflow):
        return None
    error = next(iter(validator.iter_errors(workflow)))
    where = _path(error.instance_path)
    return Issue(type="invalid_workflow", message=f"Invalid editor workflow at {where}: {_short(error.message)}",
                 details="see GET /schemas/ui_workflow.json for the editor format's shape")


def _path(parts: Any) -> str:
    text = "$"
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{str(part)[:40]}"
    return text[:200]


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[:limit] + "…"
