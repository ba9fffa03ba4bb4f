"""Any workflow document a user or a client hands us, as one prompt request: the boundary parser.

`prompt_request_from` takes an API-format prompt, an editor-format workflow (converted with the
registry), a POST /prompt envelope holding either, or the bytes of a JSON file or of a PNG/WebP
that embeds a workflow. Overrides (`NODE_ID.INPUT=VALUE`) are applied to the API prompt's raw JSON
before it is parsed, so the prompt stored with a job and embedded in the images it saves is the
one that ran. `main.py run` and POST /prompt both go through it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import Issue, RequestError
from .formats import parse_prompt_request
from .image_meta import is_image, read_workflow_metadata
from .jsonio import loads_strict
from .registry import NodeRegistry
from .ui_workflow import Conversion, convert_ui_workflow, is_ui_workflow
from .workflow import PromptRequest

API, EDITOR, ENVELOPE, UNKNOWN = "api", "ui", "envelope", "unknown"


class ConversionFailed(RequestError):
    """An editor-format workflow that cannot be converted; `conversion` names every node that failed."""

    def __init__(self, conversion: Conversion) -> None:
        document = conversion.errors.get("", [])
        first = document[0] if document else next(iter(conversion.errors.values()))[0]
        super().__init__(Issue(type="invalid_prompt", message=f"Cannot convert the editor workflow: {first.message}",
                               details=first.details))
        self.conversion = conversion


def detect_format(data: Any) -> str:
    """'ui' for an editor file, 'envelope' for a POST /prompt body, 'api' for an API-format prompt."""
    if is_ui_workflow(data):
        return EDITOR
    if isinstance(data, Mapping):
        return ENVELOPE if isinstance(data.get("prompt"), Mapping) else API
    return UNKNOWN


def read_document(data: bytes) -> Any:
    """The JSON a file holds: the file itself, or the workflow a PNG/WebP embeds.

    From an image, the API prompt that ran is preferred (it reruns exactly), with the editor workflow
    kept as its metadata; else the editor workflow alone.
    """
    if not is_image(data):
        return loads_strict(data)
    meta = read_workflow_metadata(data)
    if isinstance(meta.get("prompt"), dict):
        envelope: dict[str, Any] = {"prompt": meta["prompt"]}
        if isinstance(meta.get("workflow"), dict):
            envelope["extra_data"] = {"extra_pnginfo": {"workflow": meta["workflow"]}}
        return envelope
    if isinstance(meta.get("workflow"), dict):
        return meta["workflow"]
    raise RequestError(Issue(type="no_prompt", message="the image holds no workflow (no 'prompt' or 'workflow' "
                                                       "metadata)"))


def apply_overrides(prompt: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of an API prompt with `NODE_ID.INPUT=VALUE` overrides written into its inputs.

    VALUE is read as JSON when it parses, else as text; a list is a constant (`{"__value__": [...]}`),
    never a link.
    """
    result = dict(prompt)
    for item in overrides:
        target, sep, text = item.partition("=")
        node_id, dot, input_name = target.partition(".")
        if not sep or not dot or not input_name:
            raise _override_error(item, "write NODE_ID.INPUT=VALUE, e.g. 3.seed=42")
        node = result.get(node_id)
        if not isinstance(node, Mapping):
            raise _override_error(item, f"there is no node {node_id!r} in the workflow")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        if isinstance(value, list):
            value = {"__value__": value}
        inputs = node.get("inputs")
        result[node_id] = {**node, "inputs": {**(inputs if isinstance(inputs, Mapping) else {}), input_name: value}}
    return result


def _override_error(item: str, why: str) -> RequestError:
    return RequestError(Issue(type="invalid_override", message=f"--set {item!r}: {why}"))


def _with_workflow(extra_data: Any, workflow: Mapping[str, Any]) -> Any:
    """`extra_data` with the editor workflow as its `extra_pnginfo.workflow`, unless one is there already
    (something that is not an object is left as it is, for the envelope check to refuse)."""
    if extra_data is None:
        extra_data = {}
    if not isinstance(extra_data, Mapping):
        return extra_data
    pnginfo = extra_data.get("extra_pnginfo")
    if pnginfo is None:
        pnginfo = {}
    if not isinstance(pnginfo, Mapping):
        return extra_data
    return {**extra_data, "extra_pnginfo": {"workflow": workflow, **pnginfo}}


def prompt_request_from(document: Any, registry: NodeRegistry, *, overrides: Sequence[str] = (),
                        bare_prompt: bool = True) -> PromptRequest:
    """The prompt request a document describes; RequestError (ConversionFailed for an editor workflow
    that cannot be converted) when it describes none.

    `bare_prompt=False` refuses a bare API prompt (POST /prompt wants it inside an envelope); an editor
    workflow is accepted bare either way, and is kept as the `workflow` metadata that SaveImage
    embeds unless the envelope brings its own.
    """
    if isinstance(document, (bytes, bytearray)):
        document = read_document(bytes(document))
    kind = detect_format(document)
    if kind == EDITOR or (kind == API and bare_prompt):
        document = {"prompt": document}
    elif kind == UNKNOWN and bare_prompt:
        raise RequestError(Issue(type="invalid_prompt", message="expected a JSON object of nodes, got "
                                                                f"{type(document).__name__}"))
    warnings: list[str] = []
    if isinstance(document, Mapping) and is_ui_workflow(document.get("prompt")):
        conversion = convert_ui_workflow(document["prompt"], registry)
        if not conversion.ok:
            raise ConversionFailed(conversion)
        warnings = conversion.warnings
        document = {**document, "prompt": conversion.prompt,
                    "extra_data": _with_workflow(document.get("extra_data"), document["prompt"])}
    if overrides and isinstance(document, Mapping) and isinstance(document.get("prompt"), Mapping):
        document = {**document, "prompt": apply_overrides(document["prompt"], overrides)}
    request = parse_prompt_request(document)
    request.warnings = warnings
    return request
