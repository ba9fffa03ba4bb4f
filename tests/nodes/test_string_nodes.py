"""The utils/string nodes: behaviour as ComfyUI defines it, regex flags, and bad or hostile patterns."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from graph import Executor, Limits, NodeRegistry, RecentRunsCache, RunRequest, parse_api_workflow
from graph.builder import GraphBuilder
from nodes import primitives
from nodes import strings as S
from tests.support.keep import Keep


def ctx(max_string_length: int = Limits().max_string_length) -> Any:
    return SimpleNamespace(limits=Limits(max_string_length=max_string_length))


def run(cls: type, **inputs: Any) -> Any:
    return cls().execute(ctx(), **inputs)[0]


class Engine:
    """Registry + executor with the string and primitive nodes only (no torch needed)."""

    def __init__(self) -> None:
        self.registry = NodeRegistry()
        self.registry.register_module(S)
        self.registry.register_module(primitives)
        self.registry.register(Keep)
        self.kept: list[Any] = []
        self.executor = Executor(self.registry, cache=RecentRunsCache(1), services={"kept": self.kept})

    def validate(self, g: GraphBuilder):
        return self.executor.validate(parse_api_workflow(g.build()))

    def run(self, g: GraphBuilder):
        validation = self.validate(g)
        assert validation.ok, validation.messages()
        self.kept.clear()
        return self.executor.run(RunRequest(validation=validation, run_id="t"))


@pytest.fixture
def engine() -> Engine:
    return Engine()


# ----------------------------------------------------------------------------------------- plain text

def test_substring_is_python_slicing():
    assert run(S.StringSubstring, string="hello world", start=0, end=5) == "hello"
    assert run(S.StringSubstring, string="hello world", start=-5, end=11) == "world"
    assert run(S.StringSubstring, string="abc", start=2, end=1) == ""


def test_length_counts_characters_not_bytes():
    assert run(S.StringLength, string="añb✓") == 4


@pytest.mark.parametrize(("mode", "expected"), [("UPPERCASE", "HELLO WORLD ÉTÉ"), ("lowercase", "hello world été"),
                                                ("Capitalize", "Hello world été"), ("Title Case", "Hello World Été")])
def test_case_converter(mode: str, expected: str):
    assert run(S.CaseConverter, string="hELLO world été", mode=mode) == expected


@pytest.mark.parametrize(("mode", "expected"), [("Both", "a b"), ("Left", "a b \n"), ("Right", " \t a b")])
def test_trim(mode: str, expected: str):
    assert run(S.StringTrim, string=" \t a b \n", mode=mode) == expected


def test_replace_is_literal_and_replaces_all():
    assert run(S.StringReplace, string="a.b.c", find=".", replace="+") == "a+b+c"
    assert run(S.StringReplace, string="ab", find="", replace="-") == "-a-b-"


def test_replace_refuses_results_beyond_the_string_limit():
    node = S.StringReplace()
    assert node.execute(ctx(20), string="aaaa", find="a", replace="xxxx")[0] == "x" * 16
    with pytest.raises(ValueError, match=r"StringReplace, input 'replace'.*40 characters.*limit of 20"):
        node.execute(ctx(20), string="aaaaaaaaaa", find="a", replace="xxxx")


def test_contains_and_compare_with_and_without_case():
    assert run(S.StringContains, string="Hello", substring="ell", case_sensitive=True)
    assert not run(S.StringContains, string="Hello", substring="HELL", case_sensitive=True)
    assert run(S.StringContains, string="Hello", substring="HELL", case_sensitive=False)
    compare = S.StringCompare()
    assert compare.execute(ctx(), string_a="Prefix-x", string_b="prefix", mode="Starts With", case_sensitive=False)[0]
    assert not compare.execute(ctx(), string_a="Prefix-x", string_b="prefix", mode="Starts With",
                               case_sensitive=True)[0]
    assert compare.execute(ctx(), string_a="a.PNG", string_b=".png", mode="Ends With", case_sensitive=False)[0]
    assert not compare.execute(ctx(), string_a="abc", string_b="ab", mode="Equal", case_sensitive=True)[0]
    assert compare.execute(ctx(), string_a="ABC", string_b="abc", mode="Equal", case_sensitive=False)[0]


# ------------------------------------------------------------------------------------------------ regex

def match(string: str, pattern: str, **flags: bool) -> bool:
    opts = {"case_insensitive": True, "multiline": False, "dotall": False, **flags}
    return S.RegexMatch().execute(ctx(), string=string, regex_pattern=pattern, **opts)[0]


def test_regex_match_flags():
    assert match("Hello", "^hello$")  # case_insensitive defaults to on, as in ComfyUI
    assert not match("Hello", "^hello$", case_insensitive=False)
    assert not match("one\ntwo", "^two$")
    assert match("one\ntwo", "^two$", multiline=True)
    assert not match("a\nb", "a.b")
    assert match("a\nb", "a.b", dotall=True)


def extract(string: str, pattern: str, mode: str, group_index: int = 1, **flags: bool) -> str:
    opts = {"case_insensitive": True, "multiline": False, "dotall": False, **flags}
    return S.RegexExtract().execute(ctx(), string=string, regex_pattern=pattern, mode=mode, group_index=group_index,
                                    **opts)[0]


def test_regex_extract_modes():
    text = "w=512 h=768 W=1024"
    assert extract(text, r"w=(\d+)", "First Match") == "w=512"
    assert extract(text, r"w=\d+", "All Matches") == "w=512\nW=1024"
    assert extract(text, r"w=\d+", "All Matches", case_insensitive=False) == "w=512"
    assert extract(text, r"(\w)=(\d+)", "All Matches") == "w\nh\nW"  # with groups: the first group of each
    assert extract(text, r"h=(\d+)", "First Group") == "768"
    assert extract(text, r"(\w)=(\d+)", "All Groups", group_index=2) == "512\n768\n1024"
    assert extract(text, r"(\w)=(\d+)", "First Group", group_index=0) == "w=512"
    assert extract(text, r"h=(\d+)", "First Group", group_index=2) == ""  # no such group
    assert extract(text, r"x=(\d+)", "First Match") == ""


def replace(string: str, pattern: str, repl: str, **options: Any) -> str:
    return S.RegexReplace().execute(ctx(), string=string, regex_pattern=pattern, replace=repl, **options)[0]


def test_regex_replace_groups_count_and_flags():
    assert replace("a cat, A CAT", "cat", "dog") == "a dog, A dog"
    assert replace("a cat, A CAT", "cat", "dog", case_insensitive=False) == "a dog, A CAT"
    assert replace("x1 x2 x3", r"x(\d)", r"y\1", count=2) == "y1 y2 x3"
    assert replace("2024-05-06", r"(?P<y>\d+)-(\d+)-(\d+)", r"\3/\2/\g<y>") == "06/05/2024"
    assert replace("a\nb", "a.b", "-", dotall=True) == "-"
    assert replace("a\nb", "^b", "B", multiline=True) == "a\nB"


def test_regex_replace_output_is_bounded():
    node = S.RegexReplace()
    # Near the limit each match is expanded in turn (the fast path could not rule out a huge result):
    # the same result as without a limit, and an error as soon as the result would not fit.
    near = node.execute(ctx(20), string="x1 x2 x3", regex_pattern=r"x(\d)", replace=r"y\1\g<0>", count=2)[0]
    assert near == replace("x1 x2 x3", r"x(\d)", r"y\1\g<0>", count=2) == "y1x1 y2x2 x3"
    with pytest.raises(ValueError, match=r"RegexReplace, input 'replace'.*longer than the limit of 100"):
        node.execute(ctx(100), string="a" * 50, regex_pattern="a", replace="bbbb")


_OTHER_INPUTS = {"RegexMatch": {}, "RegexExtract": {"mode": "First Match", "group_index": 1},
                 "RegexReplace": {"replace": "x"}}


@pytest.mark.parametrize("node_type", list(_OTHER_INPUTS))
def test_invalid_pattern_is_reported_at_validation_naming_the_input(engine: Engine, node_type: str):
    g = GraphBuilder()
    node = g.node(node_type, string="abc", regex_pattern="(unclosed", case_insensitive=True, multiline=False,
                  dotall=False, **_OTHER_INPUTS[node_type])
    g.node("Keep", value=node)
    result = engine.validate(g)
    assert not result.ok
    text = "\n".join(result.messages())
    assert f"{node_type}, input 'regex_pattern': invalid regular expression '(unclosed'" in text
    assert "missing )" in text


def test_invalid_linked_pattern_fails_the_run_naming_the_input(engine: Engine):
    g = GraphBuilder()
    pattern = g.node("PrimitiveString", value="[a-")
    node = g.node("RegexMatch", string="abc", regex_pattern=pattern, case_insensitive=True, multiline=False,
                  dotall=False)
    g.node("Keep", value=node)
    outcome = engine.run(g)
    assert outcome.status == "error"
    assert "RegexMatch, input 'regex_pattern': invalid regular expression '[a-'" in outcome.failure.exception_message


def test_bad_replacement_template_names_the_replace_input():
    with pytest.raises(ValueError, match=r"RegexReplace, input 'replace': invalid replacement"):
        replace("abc", "(b)", r"\2")
    with pytest.raises(ValueError, match=r"RegexReplace, input 'replace': invalid replacement"):
        replace("abc", "z", "\\")  # malformed even though nothing matches


def test_catastrophic_pattern_ends_with_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(S, "REGEX_TIMEOUT_S", 0.3)
    hostile, text = r"(x+x+)+y", "x" * 5000
    for call in (lambda: match(text, hostile), lambda: extract(text, hostile, "All Matches"),
                 lambda: replace(text, hostile, "z")):
        start = time.monotonic()
        with pytest.raises(ValueError, match=r"input 'regex_pattern': matching took longer than 0.3 s"):
            call()
        assert time.monotonic() - start < 5


def test_long_linked_text_and_patterns_are_refused():
    node = S.RegexMatch()
    with pytest.raises(ValueError, match=r"RegexMatch, input 'string': text of 101 characters"):
        node.execute(ctx(100), string="a" * 101, regex_pattern="a", case_insensitive=True, multiline=False,
                     dotall=False)
    with pytest.raises(ValueError, match=r"input 'regex_pattern': the pattern is 10,001 characters"):
        match("a", "a" * (S.MAX_PATTERN_LENGTH + 1))


# ------------------------------------------------------------------------------------------- the specs

def test_object_info_matches_comfyui(engine: Engine):
    info = engine.registry.object_info()
    sub = info["StringSubstring"]
    assert sub["input"]["required"] == {"string": ["STRING", {"default": "", "multiline": True}],
                                        "start": ["INT"], "end": ["INT"]}
    assert sub["category"] == "utils/string" and sub["display_name"] == "Substring"
    assert info["StringLength"]["output_name"] == ["length"] and info["StringLength"]["output"] == ["INT"]
    assert info["CaseConverter"]["input"]["required"]["mode"] == [["UPPERCASE", "lowercase", "Capitalize",
                                                                    "Title Case"]]
    assert info["StringTrim"]["input"]["required"]["mode"] == [["Both", "Left", "Right"]]
    assert info["StringCompare"]["input_order"]["required"] == ["string_a", "string_b", "mode", "case_sensitive"]
    assert info["RegexMatch"]["output_name"] == ["matches"]
    extract_in = info["RegexExtract"]["input"]["required"]
    assert list(extract_in) == ["string", "regex_pattern", "mode", "case_insensitive", "multiline", "dotall",
                                "group_index"]
    assert extract_in["mode"] == [["First Match", "All Matches", "First Group", "All Groups"]]
    assert extract_in["group_index"] == ["INT", {"default": 1, "min": 0, "max": 100, "step": 1}]
    rr = info["RegexReplace"]
    assert list(rr["input"]["required"]) == ["string", "regex_pattern", "replace"]
    assert list(rr["input"]["optional"]) == ["case_insensitive", "multiline", "dotall", "count"]
    assert rr["input"]["optional"]["count"][1]["max"] == 100 and rr["description"]
    assert {n for n, d in info.items() if d["category"] == "utils/string"} == {
        "StringSubstring", "StringLength", "CaseConverter", "StringTrim", "StringReplace", "StringContains",
        "StringCompare", "RegexMatch", "RegexExtract", "RegexReplace"}


def test_substring_runs_from_an_editor_workflow_with_its_widgets(engine: Engine):
    g = GraphBuilder()
    node = g.node("StringSubstring", string="abcdef", start=1, end=-1)
    g.node("Keep", value=node)
    assert engine.run(g).status == "success" and engine.kept == ["bcde"]
