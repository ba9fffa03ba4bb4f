"""`Keep`: a test output node that hands whatever reaches it to the test (through the `kept` service), and
`kept_values`, which runs a graph and returns what reached it."""

from __future__ import annotations

from typing import Any

from graph import InputSpec, Node, NodeResult, NodeSchema
from graph.builder import GraphBuilder


class Keep(Node):
    SCHEMA = NodeSchema(node_type="Keep", inputs=[InputSpec(name="value", type="*")], output_node=True)

    def fingerprint(self, **_: Any) -> float:
        return float("nan")  # never cached: every run hands its value over

    def execute(self, ctx, *, value: Any) -> NodeResult:
        ctx.service("kept").append(value)
        return NodeResult(result=(), ui={"kept": [len(ctx.service("kept"))]})


def kept_values(engine: Any, g: GraphBuilder, *refs: Any, extra_data: dict[str, Any] | None = None) -> list[Any]:
    """Run `g` on `engine` (anything with a `kept` list and `run(prompt, extra_data=...)`), adding a `Keep` for
    each of `refs`; asserts success and returns every kept value in the order the nodes ran."""
    for ref in refs:
        g.node("Keep", value=ref)
    engine.kept.clear()
    outcome = engine.run(g.build(), extra_data=extra_data)
    assert outcome.status == "success", outcome.failure and outcome.failure.describe()
    return list(engine.kept)
