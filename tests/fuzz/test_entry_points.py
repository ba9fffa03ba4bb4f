"""Property-based tests of every JSON entry point. The rule: a clear 4xx or a result; never an
exception escaping, a 5xx, a traceback or a bare NaN/Infinity on the wire; what is accepted can
always be served back."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph import Executor, NodeRegistry, RecentRunsCache, parse_api_workflow
from graph.errors import RequestError
from graph.formats import parse_prompt_request
from graph.jsonio import loads_strict
from graph.ui_workflow import convert_ui_workflow
from tests.fuzz import strategies as S
from tests.fuzz.live import Live, live_server
from tests.fuzz.strategies import scaled
from tests.support import testpack

FAST = settings(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def engine() -> Executor:
    registry = NodeRegistry()
    registry.register_module(testpack)
    return Executor(registry, cache=RecentRunsCache(1))


def _strict(text: bytes | str) -> object:
    """The body parsed as JSON that a browser accepts: NaN and Infinity literals fail."""
    def refuse(name: str) -> None:
        raise AssertionError(f"bare {name} on the wire")
    return json.loads(text, parse_constant=refuse)


@settings(FAST, max_examples=scaled(300))
@given(S.ui_workflows)
def test_converter_returns_a_conversion_for_any_editor_file(engine, workflow):
    conversion = convert_ui_workflow(workflow, engine.registry)
    if conversion.errors:
        assert all(issue.message for issues in conversion.errors.values() for issue in issues)
        return
    json.dumps(conversion.prompt, allow_nan=False)
    engine.validate(parse_api_workflow(conversion.prompt))  # a converted prompt is always parseable


@settings(FAST, max_examples=scaled(200))
@given(st.one_of(st.binary(max_size=64), S.json_values.map(lambda v: json.dumps(v, allow_nan=True)),
                 st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
                 st.integers(300, 4000).map(lambda n: "1" * n), st.sampled_from(["1e309", "-1e999", "NaN"])))
def test_strict_json_reader_refuses_with_a_request_error_only(text):
    try:
        value = loads_strict(text)
    except RequestError as exc:
        assert exc.issue.message
        return
    json.dumps(value, allow_nan=False)  # whatever it accepts can be written back


@settings(FAST, max_examples=scaled(300))
@given(S.envelopes)
def test_envelope_parses_or_refuses_and_validation_never_raises(engine, body):
    try:
        request = parse_prompt_request(body)
    except RequestError as exc:
        assert exc.issue.message
        return
    result = engine.validate(request.workflow, request.partial_execution_targets)
    json.dumps(result.to_json(), allow_nan=False)


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Live:
    with live_server(tmp_path_factory.mktemp("fuzz")) as server:
        yield server


def _check_answer(resp) -> object:
    assert resp.status_code < 500, resp.text[:500]
    assert "Traceback" not in resp.text
    return _strict(resp.content) if resp.content else None


@settings(FAST, max_examples=scaled(150))
@given(S.bodies)
def test_post_prompt_and_convert_answer_4xx_or_accept(live, body):
    raw = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    for path in ("/prompt", "/api/convert"):
        resp = live.call("POST", path, data=raw, headers={"Content-Type": "application/json"})
        _check_answer(resp)
        assert resp.status_code in (200, 400, 409, 413, 429), (path, resp.status_code, resp.text[:300])
    for path in ("/api/jobs?limit=3", "/history?max_items=3", "/queue"):
        resp = live.call("GET", path)
        assert resp.status_code == 200, (path, resp.text[:300])
        _strict(resp.content)


def test_everything_accepted_is_served_back(live):
    """After the fuzzing above: the whole history and every job can still be read."""
    for path in ("/history", "/api/jobs?limit=1000", "/queue"):
        resp = live.call("GET", path)
        assert resp.status_code == 200
        _strict(resp.content)


header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30),
    st.tuples(st.sampled_from(["localhost", "127.0.0.1", "[::1]", "[::1", "example.org", ""]),
              st.sampled_from(["", ":", ":0", ":80", ":65535", ":65536", ":99999", ":-1", ":abc", ":8188/x"]))
    .map("".join))


@settings(FAST, max_examples=scaled(150))
@given(host=header_values, origin=st.one_of(st.none(), header_values,
                                            header_values.map(lambda h: f"http://{h}"),
                                            header_values.map(lambda h: f"https://{h}")))
def test_any_host_and_origin_header_is_answered_without_a_server_error(live, host, origin):
    headers = {"Host": host} if host else {}
    if origin is not None:
        headers["Origin"] = origin
    for method, path in (("GET", "/queue"), ("POST", "/prompt")):
        resp = live.call(method, path, headers=headers, json={"prompt": {}} if method == "POST" else None)
        _check_answer(resp)
        assert resp.status_code in (200, 400, 403), (host, origin, resp.status_code, resp.text[:200])


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGBA", (2, 2)).save(buf, format="PNG")
    return buf.getvalue()


form_texts = st.one_of(S.texts, st.sampled_from(["", "input", "output", "temp", "true", "sub/dir", "../x", "a.png"]),
                       S.json_values.map(json.dumps), st.integers(1, 5000).map(lambda n: "[" * n),
                       st.integers(1500, 5000).map(lambda n: '{"filename": ' * n))
deep_texts = st.one_of(st.integers(1500, 5000).map(lambda n: "[" * n),
                       st.integers(1500, 5000).map(lambda n: '{"filename": ' * n))
refs = st.one_of(form_texts, deep_texts, st.fixed_dictionaries(
    {"filename": st.sampled_from(["a.png", "missing.png", "../a.png"])},
    optional={"subfolder": form_texts, "type": form_texts, "x": S.json_values}).map(json.dumps))


def _mostly(good: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A sensible value three times in four, so the other fields get past the first check."""
    return st.one_of(good, good, good, form_texts)


upload_names = _mostly(st.just("m.png"))
upload_fields = st.fixed_dictionaries({}, optional={
    "subfolder": _mostly(st.sampled_from(["", "sub"])), "type": _mostly(st.sampled_from(["input", "temp"])),
    "overwrite": _mostly(st.sampled_from(["true", "false"])), "original_ref": refs})


@settings(FAST, max_examples=scaled(120))
@given(name=upload_names, fields=upload_fields)
def test_uploads_with_any_fields_answer_without_a_server_error(live, name, fields):
    if not (live.folders.input / "a.png").exists():
        (live.folders.input / "a.png").write_bytes(_tiny_png())
    data = {k: v.encode("utf-8", "surrogatepass") for k, v in fields.items()}
    files = {"image": (name.encode("utf-8", "surrogatepass").decode("utf-8", "replace") or "x.png", _tiny_png(),
                       "image/png")}
    for path in ("/upload/image", "/upload/mask"):
        resp = live.call("POST", path, data=data, files=files)
        _check_answer(resp)
