"""ComfyUI's string utilities (utils/string): substring, length, case, trim, replace, compare, regex.

Torch-free. The regular expressions run on the `regex` module (the engine `re` users know, plus a
time limit): Python's own `re` cannot be stopped, so a catastrophic pattern such as `(x+x+)+y`
would block the worker forever. Here a match that runs longer than REGEX_TIMEOUT_S fails the node
with a message naming the input, and so does an invalid pattern or replacement (ComfyUI quietly
returns False or "" for some of them; a clear error is easier to act on). Text sizes are bounded by
the engine's `max_string_length`, also for what a replacement would produce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import regex

from graph import BooleanInput, ComboInput, InputSpec, IntInput, Node, NodeSchema, OutputSpec, StringInput
from graph.limits import Limits

REGEX_TIMEOUT_S = 5.0
MAX_PATTERN_LENGTH = 10_000
CASE_MODES = ("UPPERCASE", "lowercase", "Capitalize", "Title Case")
TRIM_MODES = ("Both", "Left", "Right")
COMPARE_MODES = ("Starts With", "Ends With", "Equal")
EXTRACT_MODES = ("First Match", "All Matches", "First Group", "All Groups")
CATEGORY = "utils/string"


@dataclass(frozen=True, kw_only=True)
class BareIntInput(IntInput):
    """An INT input that, like ComfyUI's `io.Int.Input("start")`, declares no default or range (any int)."""

    def options(self) -> dict[str, Any]:
        return InputSpec.options(self)


def _text(name: str) -> StringInput:
    return StringInput(name=name, multiline=True)


def _flags() -> list[BooleanInput]:
    return [BooleanInput(name="case_insensitive", default=True), BooleanInput(name="multiline", default=False),
            BooleanInput(name="dotall", default=False)]


def _schema(node_type: str, display: str, inputs: list[InputSpec], output: OutputSpec,
            description: str = "") -> NodeSchema:
    return NodeSchema(node_type=node_type, display_name=display, category=CATEGORY, description=description,
                      inputs=inputs, outputs=[output])


def check_length(node: str, name: str, text: str, limit: int) -> None:
    """Refuse text (linked from another node, so not checked at validation) beyond the engine's limit."""
    if len(text) > limit:
        raise ValueError(f"{node}, input '{name}': text of {len(text):,} characters is longer than the limit of "
                         f"{limit:,}")


# ------------------------------------------------------------------------------------------- plain text

class StringSubstring(Node):
    SCHEMA = _schema("StringSubstring", "Substring",
                     [_text("string"), BareIntInput(name="start"), BareIntInput(name="end")],
                     OutputSpec(type="STRING"),
                     "Python slicing: string[start:end]; negative values count from the end.")

    def execute(self, ctx, *, string: str, start: int, end: int) -> tuple[str]:
        return (string[start:end],)


class StringLength(Node):
    SCHEMA = _schema("StringLength", "Length", [_text("string")], OutputSpec(type="INT", name="length"),
                     "The number of characters (Unicode code points).")

    def execute(self, ctx, *, string: str) -> tuple[int]:
        return (len(string),)


class CaseConverter(Node):
    SCHEMA = _schema("CaseConverter", "Case Converter",
                     [_text("string"), ComboInput(name="mode", choices=CASE_MODES)], OutputSpec(type="STRING"))

    def execute(self, ctx, *, string: str, mode: str) -> tuple[str]:
        convert: dict[str, Callable[[str], str]] = {"UPPERCASE": str.upper, "lowercase": str.lower,
                                                     "Capitalize": str.capitalize, "Title Case": str.title}
        return (convert[mode](string),)


class StringTrim(Node):
    SCHEMA = _schema("StringTrim", "Trim", [_text("string"), ComboInput(name="mode", choices=TRIM_MODES)],
                     OutputSpec(type="STRING"), "Remove whitespace from both ends, or only the left or right one.")

    def execute(self, ctx, *, string: str, mode: str) -> tuple[str]:
        trim: dict[str, Callable[[str], str]] = {"Both": str.strip, "Left": str.lstrip, "Right": str.rstrip}
        return (trim[mode](string),)


class StringReplace(Node):
    SCHEMA = _schema("StringReplace", "Replace", [_text("string"), _text("find"), _text("replace")],
                     OutputSpec(type="STRING"), "Replace every occurrence of find (plain text, not a pattern).")

    def execute(self, ctx, *, string: str, find: str, replace: str) -> tuple[str]:
        limit = ctx.limits.max_string_length
        count = len(string) + 1 if find == "" else string.count(find)
        size = len(string) + count * (len(replace) - len(find))
        if size > limit:
            raise ValueError(f"StringReplace, input 'replace': the result would be {size:,} characters long, more "
                             f"than the limit of {limit:,}")
        return (string.replace(find, replace),)


class StringContains(Node):
    SCHEMA = _schema("StringContains", "Contains",
                     [_text("string"), _text("substring"), BooleanInput(name="case_sensitive", default=True)],
                     OutputSpec(type="BOOLEAN", name="contains"))

    def execute(self, ctx, *, string: str, substring: str, case_sensitive: bool) -> tuple[bool]:
        if case_sensitive:
            return (substring in string,)
        return (substring.lower() in string.lower(),)


class StringCompare(Node):
    SCHEMA = _schema("StringCompare", "Compare",
                     [_text("string_a"), _text("string_b"), ComboInput(name="mode", choices=COMPARE_MODES),
                      BooleanInput(name="case_sensitive", default=True)],
                     OutputSpec(type="BOOLEAN"), "Whether string_a starts with, ends with or equals string_b.")

    def execute(self, ctx, *, string_a: str, string_b: str, mode: str, case_sensitive: bool) -> tuple[bool]:
        a, b = (string_a, string_b) if case_sensitive else (string_a.lower(), string_b.lower())
        if mode == "Starts With":
            return (a.startswith(b),)
        if mode == "Ends With":
            return (a.endswith(b),)
        return (a == b,)


# ------------------------------------------------------------------------------------------------ regex

def _compile(node: str, pattern: str, *, case_insensitive: bool, multiline: bool, dotall: bool) -> Any:
    """The compiled pattern, or a ValueError naming the node and input."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValueError(f"{node}, input 'regex_pattern': the pattern is {len(pattern):,} characters long; the limit "
                         f"is {MAX_PATTERN_LENGTH:,}")
    flags = ((regex.IGNORECASE if case_insensitive else 0) | (regex.MULTILINE if multiline else 0)
             | (regex.DOTALL if dotall else 0))
    try:
        return regex.compile(pattern, flags)
    except regex.error as exc:
        raise ValueError(f"{node}, input 'regex_pattern': invalid regular expression {pattern[:200]!r}: "
                         f"{exc}") from None


def _timed(node: str, text: str, run: Callable[[], Any]) -> Any:
    """Run a match with the time limit, turning a timeout into an error that says what to do."""
    try:
        return run()
    except TimeoutError:
        raise ValueError(f"{node}, input 'regex_pattern': matching took longer than {REGEX_TIMEOUT_S:g} s on "
                         f"{len(text):,} characters (the pattern backtracks catastrophically); simplify the pattern, "
                         "e.g. avoid nested repeats such as (a+)+") from None


def _check_pattern_constant(node: str, regex_pattern: Any, **flags: Any) -> str | bool:
    """Validation-time check of a typed-in pattern, so a bad one is reported before anything runs."""
    if not isinstance(regex_pattern, str):
        return True  # linked: checked when the node runs
    try:
        _compile(node, regex_pattern, case_insensitive=bool(flags.get("case_insensitive", True)),
                 multiline=bool(flags.get("multiline", False)), dotall=bool(flags.get("dotall", False)))
    except ValueError as exc:
        return str(exc)
    return True


class RegexMatch(Node):
    SCHEMA = _schema("RegexMatch", "Regex Match", [_text("string"), _text("regex_pattern"), *_flags()],
                     OutputSpec(type="BOOLEAN", name="matches"), "Whether the pattern matches anywhere in the string.")

    def validate_inputs(self, *, limits: Limits, regex_pattern: Any = None, **flags: Any) -> str | bool:
        return _check_pattern_constant("RegexMatch", regex_pattern, **flags)

    def execute(self, ctx, *, string: str, regex_pattern: str, case_insensitive: bool, multiline: bool,
                dotall: bool) -> tuple[bool]:
        check_length("RegexMatch", "string", string, ctx.limits.max_string_length)
        pattern = _compile("RegexMatch", regex_pattern, case_insensitive=case_insensitive, multiline=multiline,
                           dotall=dotall)
        found = _timed("RegexMatch", string,
                       lambda: pattern.search(string, timeout=REGEX_TIMEOUT_S, concurrent=True))
        return (found is not None,)


def extract(pattern: Any, string: str, mode: str, group_index: int) -> str:
    """RegexExtract's result: matches or groups joined by newlines ("" when there is none)."""
    if mode == "First Match":
        m = pattern.search(string, timeout=REGEX_TIMEOUT_S, concurrent=True)
        return m.group(0) if m else ""
    if mode == "All Matches":
        found = pattern.findall(string, timeout=REGEX_TIMEOUT_S, concurrent=True)
        return "\n".join(m[0] if isinstance(m, tuple) else m for m in found)
    if mode == "First Group":
        m = pattern.search(string, timeout=REGEX_TIMEOUT_S, concurrent=True)
        return (m.group(group_index) or "") if m and len(m.groups()) >= group_index else ""
    found = pattern.finditer(string, timeout=REGEX_TIMEOUT_S, concurrent=True)
    return "\n".join(m.group(group_index) or "" for m in found if m.groups() and len(m.groups()) >= group_index)


class RegexExtract(Node):
    SCHEMA = _schema("RegexExtract", "Regex Extract",
                     [_text("string"), _text("regex_pattern"), ComboInput(name="mode", choices=EXTRACT_MODES),
                      *_flags(), IntInput(name="group_index", default=1, min=0, max=100)],
                     OutputSpec(type="STRING"),
                     "The first match, all matches, or one group of the first or of every match, one per line.")

    def validate_inputs(self, *, limits: Limits, regex_pattern: Any = None, **flags: Any) -> str | bool:
        return _check_pattern_constant("RegexExtract", regex_pattern, **flags)

    def execute(self, ctx, *, string: str, regex_pattern: str, mode: str, case_insensitive: bool, multiline: bool,
                dotall: bool, group_index: int) -> tuple[str]:
        check_length("RegexExtract", "string", string, ctx.limits.max_string_length)
        pattern = _compile("RegexExtract", regex_pattern, case_insensitive=case_insensitive, multiline=multiline,
                           dotall=dotall)
        return (_timed("RegexExtract", string, lambda: extract(pattern, string, mode, group_index)),)


class _OutputTooLong(Exception):
    pass


def bounded_sub(pattern: Any, replace: str, string: str, count: int, limit: int) -> str:
    """`pattern.sub(replace, string, count)` whose result never grows beyond `limit` characters.

    When even the worst case fits (a replacement at every position, each group reference taking the
    whole string) the substitution runs at full speed; otherwise each match is expanded in turn and
    the work stops as soon as the result would be too long. A malformed template (\\q, \\g<nope>)
    raises regex.error before anything runs; one naming a group number the pattern lacks, at the
    first match.
    """
    pattern.sub(replace, "\0", timeout=REGEX_TIMEOUT_S)  # parses the template (an empty string would skip it)
    n = len(string)
    if n + (n + 1) * len(replace) + replace.count("\\") * n <= limit:
        return pattern.sub(replace, string, count=count, timeout=REGEX_TIMEOUT_S, concurrent=True)
    grown = 0

    def expand(m: Any) -> str:
        nonlocal grown
        text = m.expand(replace)
        grown += len(text) - (m.end() - m.start())
        if n + grown > limit:
            raise _OutputTooLong
        return text

    return pattern.sub(expand, string, count=count, timeout=REGEX_TIMEOUT_S, concurrent=True)


class RegexReplace(Node):
    SCHEMA = _schema("RegexReplace", "Regex Replace",
                     [_text("string"), _text("regex_pattern"), _text("replace"),
                      BooleanInput(name="case_insensitive", default=True, optional=True),
                      BooleanInput(name="multiline", default=False, optional=True),
                      BooleanInput(name="dotall", default=False, optional=True,
                                   tooltip="When enabled, the dot (.) character will match any character including "
                                           "newline characters. When disabled, dots won't match newlines."),
                      IntInput(name="count", default=0, min=0, max=100, optional=True,
                               tooltip="Maximum number of replacements to make. Set to 0 to replace all occurrences "
                                       "(default). Set to 1 to replace only the first match, 2 for the first two "
                                       "matches, etc.")],
                     OutputSpec(type="STRING"), "Find and replace text using regex patterns.")

    def validate_inputs(self, *, limits: Limits, regex_pattern: Any = None, **flags: Any) -> str | bool:
        return _check_pattern_constant("RegexReplace", regex_pattern, **flags)

    def execute(self, ctx, *, string: str, regex_pattern: str, replace: str, case_insensitive: bool = True,
                multiline: bool = False, dotall: bool = False, count: int = 0) -> tuple[str]:
        limit = ctx.limits.max_string_length
        check_length("RegexReplace", "string", string, limit)
        pattern = _compile("RegexReplace", regex_pattern, case_insensitive=case_insensitive, multiline=multiline,
                           dotall=dotall)
        try:
            return (_timed("RegexReplace", string, lambda: bounded_sub(pattern, replace, string, count, limit)),)
        except _OutputTooLong:
            raise ValueError(f"RegexReplace, input 'replace': the result would be longer than the limit of {limit:,} "
                             "characters") from None
        except (regex.error, IndexError) as exc:
            raise ValueError(f"RegexReplace, input 'replace': invalid replacement {replace[:200]!r}: {exc}") from None


NODES = [StringSubstring, StringLength, CaseConverter, StringTrim, StringReplace, StringContains, StringCompare,
         RegexMatch, RegexExtract, RegexReplace]
