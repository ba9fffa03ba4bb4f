"""graph/prefetch.py with torch-free nodes: which nodes qualify, what their hooks receive, and that a hook
that raises or a job no longer wanted stops nothing but the prefetch; plus the run gate of server/prefetch.py."""

from __future__ import annotations

from typing import Any

from graph import ComboInput, Executor, InputSpec, Node, NodeRegistry, NodeSchema, OutputSpec, parse_api_workflow
from graph.events import NodeFinished, NodesCached, Progress, RunFinished
from graph.prefetch import prefetch_loads, prefetchable
from server.prefetch import LoadsDone


class ReadFile(Node):
    SCHEMA = NodeSchema(node_type="ReadFile", inputs=[ComboInput(name="name", choices=["a", "b", "bad"])],
                        outputs=[OutputSpec(type="FILE")])

    def execute(self, ctx, *, name: str) -> tuple[Any]:
        return (name,)

    def prefetch(self, ctx, *, name: str) -> str:
        if name == "bad":
            raise OSError("cannot read bad")
        ctx.service("read").append((ctx.node_id, ctx.run_id, name))
        return "loaded"


class ReadBeside(Node):
    """Has a prefetch hook but takes a link: its load depends on another node, so it cannot go early."""

    SCHEMA = NodeSchema(node_type="ReadBeside", inputs=[InputSpec(name="file", type="FILE"),
                                                        ComboInput(name="name", choices=["a", "b"])],
                        outputs=[OutputSpec(type="FILE")])

    def execute(self, ctx, *, file: str, name: str) -> tuple[Any]:
        return (file + name,)

    def prefetch(self, ctx, *, file: str, name: str) -> str:
        raise AssertionError("a node with a linked input is never prefetched")


class Use(Node):
    SCHEMA = NodeSchema(node_type="Use", inputs=[InputSpec(name="file", type="FILE")], output_node=True)

    def execute(self, ctx, *, file: str) -> tuple[()]:
        return ()


def setup(prompt: dict[str, Any]) -> tuple[Executor, Any, list]:
    registry = NodeRegistry()
    registry.register_all([ReadFile, ReadBeside, Use])
    read: list = []
    executor = Executor(registry, services={"read": read})
    validation = executor.validate(parse_api_workflow(prompt))
    assert validation.ok, validation.messages()
    return executor, validation, read


PROMPT = {
    "1": {"class_type": "ReadFile", "inputs": {"name": "bad"}},
    "2": {"class_type": "ReadFile", "inputs": {"name": "b"}},
    "3": {"class_type": "ReadBeside", "inputs": {"file": ["2", 0], "name": "a"}},
    "4": {"class_type": "Use", "inputs": {"file": ["3", 0]}},
    "5": {"class_type": "Use", "inputs": {"file": ["1", 0]}},
}


def test_only_nodes_with_constant_inputs_are_prefetched_and_a_failing_hook_is_reported_not_raised():
    executor, validation, read = setup(PROMPT)
    assert sorted(prefetchable(executor, validation)) == ["1", "2"]
    done = prefetch_loads(executor, validation, run_id="queued", folders=None)
    outcomes = {d.node_id: d.outcome for d in done}
    assert outcomes["2"] == "loaded" and outcomes["1"].startswith("failed") and "bad" in outcomes["1"]
    assert read == [("2", "queued", "b")]


def test_a_job_no_longer_wanted_is_not_prefetched():
    executor, validation, read = setup(PROMPT)
    assert prefetch_loads(executor, validation, run_id="gone", folders=None, wanted=lambda: False) == []
    assert read == []


def test_the_gate_opens_once_the_runs_own_loaders_are_done_or_it_computes():
    gate = LoadsDone(["1", "2"])
    gate(NodeFinished(run_id="r", node_id="1", class_type="ReadFile", display_node="1", ui=None))
    assert not gate.opened
    gate(NodesCached(run_id="r", node_ids=["2"]))
    assert gate.opened and gate.wait()

    computing = LoadsDone(["1"])
    computing(Progress(run_id="r", node_id="9", value=1, max=2))
    assert computing.opened

    ended = LoadsDone(["1"])
    ended(RunFinished(run_id="r", status="success", timestamp=0.0))
    assert not ended.opened and ended.wait() is False  # the run ended first: nothing to prefetch any more
