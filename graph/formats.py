"""Workflow file formats: the published JSON Schemas and the POST /prompt envelope.

The JSON Schema documents (graph/jsonschemas/) describe both workflow formats for other tools and
are served by the server. The envelope is checked with jsonschema; the nodes inside `prompt` are
checked by `validate_workflow`, which is linear-time and reports errors per node and input.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

from .errors import Issue, RequestError
from .workflow import PromptRequest, parse_api_workflow

SCHEMA_DIR = Path(__file__).with_name("jsonschemas")
SCHEMA_NAMES = ("api_workflow", "ui_workflow")


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    if name not in SCHEMA_NAMES:
        raise KeyError(f"no schema named {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text("utf-8"))


@functools.cache
def _envelope_validator() -> Any:
    import jsonschema

    schema = copy.deepcopy(load_schema("api_workflow"))
    # The nodes are validated by validate_workflow; here only the envelope's shape matters.
    schema["$defs"]["envelope"]["properties"]["prompt"] = {"type": "object"}
    return jsonschema.Draft202012Validator(schema)


def parse_prompt_request(data: Any) -> PromptRequest:
    """Check a POST /prompt body and parse its workflow; raise RequestError for a bad envelope."""
    if not isinstance(data, dict):
        raise RequestError(Issue(type="invalid_prompt", message="The request body must be a JSON object",
                                 details=f"got {type(data).__name__}"))
    if "prompt" not in data:
        raise RequestError(Issue(type="no_prompt", message="No prompt provided",
                                 details="the body needs a 'prompt' object of nodes"))
    errors = sorted(_envelope_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "body"
        issue_type = "no_prompt" if where == "prompt" else "invalid_prompt"
        raise RequestError(Issue(type=issue_type, message=f"Invalid request field '{where}': {err.message}",
                                 details="see GET /schemas/api_workflow.json for the envelope's shape"))
    return PromptRequest(
        workflow=parse_api_workflow(data["prompt"]),
        client_id=data.get("client_id"),
        extra_data=data.get("extra_data") or {},
        front=bool(data.get("front", False)),
        number=data.get("number"),
        prompt_id=data.get("prompt_id"),
        partial_execution_targets=data.get("partial_execution_targets"),
    )
