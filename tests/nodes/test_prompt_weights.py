"""The prompt weighting parser: a table of prompts and the (text, weight) segments they mean."""

from __future__ import annotations

import pytest

from nodes.sd.prompt_weights import parse_prompt_weights

W = 1.1
CASES = [
    ("a cat", [("a cat", 1.0)]),
    ("", []),
    ("(cat)", [("cat", W)]),
    ("[cat]", [("cat", 1 / W)]),
    ("((cat))", [("cat", W * W)]),
    ("[[cat]]", [("cat", 1 / W / W)]),
    ("[(cat)]", [("cat", 1.0)]),
    ("(cat:1.5)", [("cat", 1.5)]),
    ("(cat: 0.5 )", [("cat", 0.5)]),
    ("(cat:.5)", [("cat", 0.5)]),
    ("(cat:-1)", [("cat", -1.0)]),
    ("((cat:1.5))", [("cat", 1.5)]),  # an explicit weight replaces the surrounding one, as in ComfyUI
    ("(a (b) c:0.5)", [("a ", 0.5), ("b", 0.5 * W), (" c", 0.5)]),
    ("a (b:0.5) c", [("a ", 1.0), ("b", 0.5), (" c", 1.0)]),
    ("x (a:1.2) (b:1.2) y", [("x ", 1.0), ("a", 1.2), (" ", 1.0), ("b", 1.2), (" y", 1.0)]),
    ("(red:1.2)(fox:1.2)", [("redfox", 1.2)]),
    ("(time: 12:30)", [("time: 12", 30.0)]),
    ("(ratio 16:9 frame)", [("ratio 16:9 frame", W)]),
    ("(a:x)", [("a:x", W)]),
    ("(a:nan)", [("a:nan", W)]),
    ("(:1.2)", [(":1.2", W)]),
    (r"\(cat\)", [("(cat)", 1.0)]),
    (r"\[cat\]", [("[cat]", 1.0)]),
    (r"(\(cat\):1.3)", [("(cat)", 1.3)]),
    (r"a \\ b", [("a \\ b", 1.0)]),
    (r"a\b", [("a\\b", 1.0)]),
    ("smile :)", [("smile :)", 1.0)]),
    ("(unclosed", [("(unclosed", 1.0)]),
    ("[unclosed (x)", [("[unclosed ", 1.0), ("x", W)]),
    ("closed) twice]", [("closed) twice]", 1.0)]),
    ("(a [b)", [("(a [b)", 1.0)]),
    ("(a [b] c", [("(a ", 1.0), ("b", 1 / W), (" c", 1.0)]),
    ("line\n(b)", [("line\n", 1.0), ("b", W)]),
    ("embedding:foo, (x)", [("embedding:foo, ", 1.0), ("x", W)]),
]


@pytest.mark.parametrize(("prompt", "expected"), CASES, ids=[repr(c[0]) for c in CASES])
def test_segments(prompt, expected):
    got = parse_prompt_weights(prompt)
    assert [text for text, _ in got] == [text for text, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


@pytest.mark.parametrize("prompt", ["(" * 500 + "x", ")" * 500, "[(" * 3000 + "x" + ")]" * 3000, "\\", "(\\", "((:)"])
def test_nothing_crashes(prompt):
    segments = parse_prompt_weights(prompt)
    assert all(isinstance(text, str) and text for text, _ in segments)


def test_deep_nesting_multiplies():
    ((text, weight),) = parse_prompt_weights("(" * 5 + "x" + ")" * 5)
    assert text == "x" and weight == pytest.approx(W**5)
