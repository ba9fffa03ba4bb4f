from __future__ import annotations

import pytest

from graph import Link, RequestError, parse_api_workflow
from graph.documents import detect_format
from graph.formats import load_schema, parse_prompt_request
from graph.jsonio import loads_strict
from graph.workflow import BadLink


def test_links_and_list_constants_are_told_apart():
    wf = parse_api_workflow({
        "1": {"class_type": "A", "inputs": {"x": ["2", 0], "y": {"__value__": [1, 2]}, "z": 5, "w": [3, 1]},
              "_meta": {"title": "My A"}},
    })
    node = wf.nodes["1"]
    assert node.inputs["x"] == Link("2", 0)
    assert node.inputs["y"] == [1, 2]
    assert node.inputs["w"] == Link("3", 1)  # an integer node id is read as its string form
    assert node.title == "My A"


@pytest.mark.parametrize("raw, reason", [
    (["3"], "2-element"), (["3", 0, 1], "2-element"), ([3, "0"], "output index must be an integer"),
    (["3", -1], "must not be negative"), (["3", 1.5], "integer"), ([None, 0], "source node id"),
    (["3", True], "integer"),
])
def test_malformed_links_are_kept_for_reporting(raw, reason):
    value = parse_api_workflow({"1": {"class_type": "A", "inputs": {"x": raw}}}).nodes["1"].inputs["x"]
    assert isinstance(value, BadLink) and reason in value.reason


def test_structural_problems_are_collected_per_node():
    wf = parse_api_workflow({"1": "nope", "2": {"inputs": {}}, "3": {"class_type": "A", "inputs": []}})
    assert wf.parse_issues["1"][0].type == "invalid_node"
    assert wf.parse_issues["2"][0].type == "missing_node_type"
    assert wf.parse_issues["3"][0].type == "invalid_node"
    assert not wf.nodes
    assert parse_api_workflow([1, 2]).parse_issues[""][0].type == "invalid_prompt"


def test_envelope_is_checked_and_parsed():
    req = parse_prompt_request({"prompt": {"1": {"class_type": "A", "inputs": {}}}, "client_id": "c1",
                                "prompt_id": "job-1", "front": True, "number": 3,
                                "extra_data": {"extra_pnginfo": {"workflow": {}}},
                                "partial_execution_targets": ["1"]})
    assert req.client_id == "c1" and req.prompt_id == "job-1" and req.front and req.number == 3
    assert req.partial_execution_targets == ["1"] and "1" in req.workflow.nodes


@pytest.mark.parametrize("body, kind", [
    ({}, "no_prompt"), ({"prompt": []}, "no_prompt"), ([], "invalid_prompt"),
    ({"prompt": {}, "client_id": 5}, "invalid_prompt"), ({"prompt": {}, "prompt_id": "../x"}, "invalid_prompt"),
    ({"prompt": {}, "partial_execution_targets": [1]}, "invalid_prompt"),
])
def test_bad_envelopes_are_rejected(body, kind):
    with pytest.raises(RequestError) as info:
        parse_prompt_request(body)
    assert info.value.issue.type == kind


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"), ("{", "Invalid JSON"), ('{"a": NaN}', "NaN"), ('{"a": -Infinity}', "Infinity"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"), ('{"a": "\\ud800"}', "lone surrogate"),
    ('{"\\udc00": 1}', "lone surrogate"), (b"\xff\xfe", "UTF-8"),
])
def test_strict_json_rejects_what_python_would_accept_or_crash_on(text, fragment):
    with pytest.raises(RequestError) as info:
        loads_strict(text)
    assert fragment in info.value.issue.message


def test_strict_json_keeps_unicode_exactly():
    text = '{"prompt": "一只猫 🐱 café \\u00e9"}'
    assert loads_strict(text)["prompt"] == "一只猫 🐱 café é"


def test_format_detection_and_published_schemas():
    import jsonschema

    api = {"1": {"class_type": "A", "inputs": {"x": ["2", 0], "l": {"__value__": [1]}}}}
    ui = {"nodes": [{"id": 1, "type": "A", "inputs": [{"name": "x", "type": "INT", "link": 1}], "mode": 0}],
          "links": [[1, 2, 0, 1, 0, "INT"]], "version": 0.4, "last_node_id": 2, "last_link_id": 1}
    assert detect_format(api) == "api" and detect_format(ui) == "ui" and detect_format({"prompt": api}) == "envelope"
    jsonschema.validate({"prompt": api, "client_id": "x"}, load_schema("api_workflow"))
    jsonschema.validate(ui, load_schema("ui_workflow"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"prompt": {"1": {"class_type": "A", "inputs": {"x": ["2"]}}}}, load_schema("api_workflow"))
