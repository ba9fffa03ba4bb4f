"""The OpenAPI 3.1 description of the server, served at /openapi.json (and /api/openapi.json).

Built from the route table that routes.py hands in (this module imports no routes, so the table can
list its handler); request bodies reference the published JSON Schemas.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from graph.formats import load_schema

_PARAM = re.compile(r"{(\w+)(?::[^}]*)?}")

_ERROR = {"type": "object", "required": ["error"], "properties": {
    "error": {"type": "object", "properties": {"type": {"type": "string"}, "message": {"type": "string"},
                                               "details": {"type": "string"}, "extra_info": {"type": "object"}}},
    "node_errors": {"type": "object"}}}

_BODIES: dict[str, dict[str, Any]] = {
    "DeleteOrClear": {"type": "object", "properties": {"delete": {"type": "array", "items": {"type": "string"}},
                                                       "clear": {"type": "boolean"}}},
    "Interrupt": {"type": "object", "properties": {"prompt_id": {"type": "string"}}},
    "Free": {"type": "object", "properties": {"unload_models": {"type": "boolean"},
                                              "free_memory": {"type": "boolean"}}},
    "Upload": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary"}, "subfolder": {"type": "string"},
        "type": {"enum": ["input", "output", "temp"]}, "overwrite": {"type": "string"},
        "original_ref": {"type": "string", "description": "mask uploads: JSON {filename, subfolder, type}"}}},
    "EditorWorkflow": {"type": "object", "description": "An editor-format workflow (see /schemas/ui_workflow.json), "
                       "as the body or its 'workflow' field."},
}

_STATUS_TEXT = {200: "OK", 202: "Still running: poll /api/jobs/{id}", 204: "Done", 400: "Invalid request",
                401: "Token required", 403: "Forbidden (path outside its folder, or cross-site request)",
                404: "Not found", 409: "Conflict", 413: "Body or image too large", 415: "Not a supported image",
                429: "Queue full (see Retry-After)"}


@functools.cache
def document(routes: tuple[Any, ...]) -> dict[str, Any]:
    """The description of `routes` (routes.Route rows: method, path, handler, summary, tag, body, responses)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if route.tag == "editor" or route.path == "/openapi.json":
            continue
        path = _PARAM.sub(r"{\1}", route.path)
        op: dict[str, Any] = {"summary": route.summary, "tags": [route.tag],
                              "operationId": f"{route.method.lower()}_{route.handler.__name__}_{len(paths)}",
                              "responses": {str(code): _response(code) for code in route.responses}}
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in _PARAM.findall(route.path)]
        params += [{"name": q, "in": "query", "schema": {"type": "string"}} for q in route.query]
        if params:
            op["parameters"] = params
        if route.body == "PromptRequest":
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/PromptRequest"}}}}
        elif route.body == "Upload":
            op["requestBody"] = {"required": True, "content": {"multipart/form-data": {
                "schema": {"$ref": "#/components/schemas/Upload"}}}}
        elif route.body:
            op["requestBody"] = {"content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{route.body}"}}}}
        paths.setdefault(path, {})[route.method.lower()] = op
    api_schema = load_schema("api_workflow")
    envelope = api_schema.get("$defs", {}).get("envelope", {"type": "object"})
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sumie", "version": "0.1.0",
                 "description": "ComfyUI-compatible API. Every path is also served under /api. Websocket: "
                                "/ws?clientId=ID sends status, execution_start, execution_cached, executing, "
                                "progress, executed, execution_success, execution_error and execution_interrupted "
                                "messages. Workflow formats: /schemas/api_workflow.json, /schemas/ui_workflow.json."},
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR, "PromptRequest": {"$ref": "/schemas/api_workflow.json#/$defs/envelope"}
                        if not envelope else {**_strip_refs(envelope), "description": "See "
                                              "/schemas/api_workflow.json for the node format."},
                        **_BODIES},
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer",
                                          "description": "only when the server was started with --auth-token"}},
        },
    }


def _strip_refs(schema: Any) -> Any:
    """The envelope with its internal $refs pointed at the published schema document."""
    if isinstance(schema, dict):
        return {k: (f"/schemas/api_workflow.json{v}" if k == "$ref" and isinstance(v, str) and v.startswith("#")
                    else _strip_refs(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_strip_refs(v) for v in schema]
    return schema


def _response(code: int) -> dict[str, Any]:
    body: dict[str, Any] = {"description": _STATUS_TEXT.get(code, "")}
    if code >= 400:
        body["content"] = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return body
