"""`Keep`: a test output node that hands whatever reaches it to the test (through the `kept` service)."""

from __future__ import annotations

from typing import Any

from graph import InputSpec, Node, NodeResult, NodeSchema


class Keep(Node):
    SCHEMA = NodeSchema(node_type="Keep", inputs=[InputSpec(name="value", type="*")], output_node=True)

    def fingerprint(self, **_: Any) -> float:
        return float("nan")  # never cached: every run hands its value over

    def execute(self, ctx, *, value: Any) -> NodeResult:
        ctx.service("kept").append(value)
        return NodeResult(result=(), ui={"kept": [len(ctx.service("kept"))]})
