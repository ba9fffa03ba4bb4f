"""graph/documents.py: every kind of workflow document becomes the same prompt request."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from graph.documents import ConversionFailed, detect_format, prompt_request_from
from graph.errors import RequestError
from tests.unit.test_ui_workflow import node, out, sock, ui

API = {"1": {"class_type": "IntConst", "inputs": {"value": 2}},
       "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
EDITOR = ui([node(1, "IntConst", widgets=[2], outputs=[out("INT", "INT", [1])]),
             node(2, "Show", inputs=[sock("value", "*", 1)])], [[1, 1, 0, 2, 0, "INT"]])


def png(**texts: object) -> bytes:
    info = PngInfo()
    for key, value in texts.items():
        info.add_itxt(key, json.dumps(value))
    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def inputs_of(request) -> dict:
    return {nid: dict(body["inputs"]) for nid, body in request.workflow.raw.items()}


@pytest.mark.parametrize("document", [
    API, {"prompt": API}, EDITOR, {"prompt": EDITOR}, json.dumps(API).encode(), json.dumps(EDITOR).encode(),
    png(prompt=API, workflow=EDITOR), png(workflow=EDITOR),
], ids=["api", "envelope", "editor", "editor-envelope", "api-file", "editor-file", "png", "png-editor-only"])
def test_every_document_kind_gives_the_same_prompt(registry, document):
    request = prompt_request_from(document, registry)
    assert inputs_of(request) == {"1": {"value": 2}, "2": {"value": ["1", 0]}}
    assert request.workflow.parse_issues == {}


def test_an_editor_workflow_is_kept_as_the_workflow_saved_images_embed(registry):
    assert prompt_request_from(EDITOR, registry).extra_data["extra_pnginfo"]["workflow"] == EDITOR
    own = {"prompt": EDITOR, "extra_data": {"extra_pnginfo": {"workflow": {"mine": True}}}}
    assert prompt_request_from(own, registry).extra_data["extra_pnginfo"]["workflow"] == {"mine": True}
    from_image = prompt_request_from(png(prompt=API, workflow=EDITOR), registry)
    assert from_image.extra_data["extra_pnginfo"]["workflow"] == EDITOR


def test_overrides_are_written_into_the_raw_prompt_before_parsing(registry):
    request = prompt_request_from(EDITOR, registry, overrides=["1.value=42", '2.value=[1, 2]', "1.note=some text"])
    assert request.workflow.raw["1"]["inputs"] == {"value": 42, "note": "some text"}
    assert request.workflow.raw["2"]["inputs"] == {"value": {"__value__": [1, 2]}}  # a list constant, not a link
    assert request.workflow.nodes["1"].inputs["value"] == 42 and request.workflow.nodes["2"].inputs["value"] == [1, 2]
    original = json.loads(json.dumps(API))
    prompt_request_from(original, registry, overrides=["1.value=7"])
    assert original == API  # the caller's document is not changed


@pytest.mark.parametrize("override, message", [
    ("1.value", "NODE_ID.INPUT=VALUE"), ("value=3", "NODE_ID.INPUT=VALUE"), ("9.value=3", "no node '9'"),
])
def test_bad_overrides_are_explained(registry, override, message):
    with pytest.raises(RequestError, match=message) as caught:
        prompt_request_from(API, registry, overrides=[override])
    assert caught.value.issue.type == "invalid_override"


def test_post_prompt_needs_an_envelope_for_an_api_prompt(registry):
    with pytest.raises(RequestError) as caught:
        prompt_request_from(API, registry, bare_prompt=False)
    assert caught.value.issue.type == "no_prompt"
    assert inputs_of(prompt_request_from(EDITOR, registry, bare_prompt=False))["1"] == {"value": 2}


@pytest.mark.parametrize("document, message", [
    ([1], "expected a JSON object of nodes, got list"), (b"{", "Invalid JSON"),
    (png(), "holds no workflow"), ({"prompt": API, "front": "yes"}, "front"),
])
def test_documents_that_describe_no_prompt_are_refused(registry, document, message):
    with pytest.raises(RequestError, match=message):
        prompt_request_from(document, registry)


def test_an_editor_workflow_that_cannot_be_converted_names_its_nodes(registry):
    broken = ui([node(1, "NoSuchNode"), node(2, "Show")], [])
    with pytest.raises(ConversionFailed) as caught:
        prompt_request_from(broken, registry)
    assert "NoSuchNode" in caught.value.issue.message and set(caught.value.conversion.errors) == {"1"}


def test_format_detection():
    assert [detect_format(d) for d in (API, EDITOR, {"prompt": API}, {"prompt": EDITOR}, [API], "x")] == \
        ["api", "ui", "envelope", "envelope", "unknown", "unknown"]
