"""Small workflows the server tests submit."""

from __future__ import annotations

from typing import Any

from graph.builder import GraphBuilder


def save(value: int = 1, prefix: str = "t", sleep: float | None = None) -> dict[str, Any]:
    g = GraphBuilder()
    n = g.node("IntConst", value=value)
    src = g.node("Sleep", value=n, seconds=sleep) if sleep is not None else n
    g.node("SavePng", value=src, filename_prefix=prefix)
    return g.build()


def show_sum(a: int = 1, b: int = 2) -> dict[str, Any]:
    g = GraphBuilder()
    x = g.node("IntConst", value=a)
    y = g.node("Add", a=x, b=b)
    g.node("Show", value=y)
    return g.build()


def gated(value: int = 1) -> dict[str, Any]:
    g = GraphBuilder()
    n = g.node("IntConst", value=value)
    gate = g.node("Gate", value=n)
    g.node("Show", value=gate)
    return g.build()


def failing(message: str = "boom") -> dict[str, Any]:
    g = GraphBuilder()
    n = g.node("IntConst", value=1)
    f = g.node("Fail", value=n, message=message)
    g.node("Show", value=f)
    return g.build()


def previewing(steps: int = 3) -> dict[str, Any]:
    g = GraphBuilder()
    n = g.node("IntConst", value=1)
    p = g.node("PreviewSteps", value=n, steps=steps)
    g.node("Show", value=p)
    return g.build()
