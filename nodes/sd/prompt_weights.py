"""The prompt weighting syntax users write, parsed into (text, weight) segments.

- `(text)` multiplies the weight by 1.1 and `[text]` divides it by 1.1; nesting multiplies.
- `(text:1.3)` sets the weight of `text` to 1.3 (an explicit weight replaces the one around it, as in
  ComfyUI, so `((cat:1.3))` is 1.3).
- `\\(`, `\\)`, `\\[`, `\\]` and `\\\\` are literal characters.
- Brackets that do not pair up are kept as literal text: no prompt makes the parser fail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

EMPHASIS = 1.1
_ESCAPABLE = "()[]\\"
_WEIGHT = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*")
_CLOSER = {"(": ")", "[": "]"}


@dataclass(kw_only=True)
class _Group:
    opener: str  # "(" or "[", or "" for the whole prompt
    parts: list[str | _Group] = field(default_factory=list)

    def add_text(self, text: str) -> None:
        if self.parts and isinstance(self.parts[-1], str):
            self.parts[-1] += text
        else:
            self.parts.append(text)


def _parse(text: str) -> _Group:
    root = _Group(opener="")
    stack = [root]
    i = 0
    while i < len(text):
        char = text[i]
        top = stack[-1]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPABLE:
            top.add_text("\0" + text[i + 1])  # marked so it is never taken as syntax; unmarked later
            i += 2
            continue
        if char in _CLOSER:
            group = _Group(opener=char)
            top.parts.append(group)
            stack.append(group)
        elif len(stack) > 1 and char == _CLOSER[top.opener]:
            stack.pop()
        else:
            top.add_text(char)
        i += 1
    while len(stack) > 1:  # unclosed: the opener is literal text, its contents belong to the parent
        group = stack.pop()
        parent = stack[-1]
        parent.parts.pop()
        parent.add_text(group.opener)
        for part in group.parts:
            if isinstance(part, str):
                parent.add_text(part)
            else:
                parent.parts.append(part)
    return root


def _explicit_weight(group: _Group) -> float | None:
    """`(text:1.2)`: strip the weight from the group's last text part and return it."""
    if not group.parts or not isinstance(group.parts[-1], str):
        return None
    last = group.parts[-1]
    colon = last.rfind(":")
    if colon < 0 or (colon == 0 and len(group.parts) == 1):
        return None
    match = _WEIGHT.fullmatch(last[colon + 1 :])
    if match is None:
        return None
    group.parts[-1] = last[:colon]
    return float(match.group(1))


def _flatten(group: _Group, weight: float, out: list[tuple[str, float]]) -> None:
    """Depth-first, with an explicit stack: any nesting depth works."""
    stack = [(iter(group.parts), weight)]
    while stack:
        parts, current = stack[-1]
        part = next(parts, None)
        if part is None:
            stack.pop()
        elif isinstance(part, str):
            out.append((part, current))
        elif part.opener == "(":
            explicit = _explicit_weight(part)
            stack.append((iter(part.parts), explicit if explicit is not None else current * EMPHASIS))
        else:
            stack.append((iter(part.parts), current / EMPHASIS))


def _unmark(text: str) -> str:
    return re.sub(r"\0(.)", r"\1", text, flags=re.DOTALL)


def parse_prompt_weights(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) segments; neighbours of equal weight are merged, empty ones dropped."""
    raw: list[tuple[str, float]] = []
    _flatten(_parse(text), 1.0, raw)
    merged: list[tuple[str, float]] = []
    for piece, weight in raw:
        piece = _unmark(piece)
        if not piece:
            continue
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + piece, weight)
        else:
            merged.append((piece, weight))
    return merged


__all__ = ["EMPHASIS", "parse_prompt_weights"]
