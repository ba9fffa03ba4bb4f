"""The executor with the torch-free test pack: mapping, laziness, expansion, errors, interrupts, events."""

from __future__ import annotations

import threading
import time

from graph import (
    Executor,
    InterruptToken,
    NodeFailed,
    NodeFinished,
    NodesCached,
    NodeStarted,
    Progress,
    RunFinished,
    RunInterrupted,
    RunStarted,
)
from tests.conftest import run_prompt


def shown(outcome, node_id):
    return outcome.outputs[node_id]["text"]


def test_values_flow_through_a_graph(executor, g):
    total = g.node("Add", a=g.node("IntConst", value=2), b=g.node("IntConst", value=3))
    out = g.node("Show", value=total)
    outcome = run_prompt(executor, g.build())
    assert outcome.status == "success" and shown(outcome, out.id) == ["5"]


def test_events_arrive_in_order(executor, g):
    out = g.node("Show", value=g.node("Sleep", value=g.node("IntConst", value=1), seconds=0))
    events = []
    run_prompt(executor, g.build(), listeners=[events.append])
    kinds = [type(e) for e in events]
    assert kinds[0] is RunStarted and kinds[-1] is RunFinished
    assert [e.node_id for e in events if isinstance(e, NodeStarted)] == ["1", "2", out.id]
    steps = [e for e in events if isinstance(e, Progress)]
    assert steps and steps[-1].value == steps[-1].max == 20 and steps[0].node_id == "2"
    done = [e for e in events if isinstance(e, NodeFinished)]
    assert [e.node_id for e in done] == ["1", "2", "3"] and done[-1].ui == {"text": ["1"]}


def test_list_outputs_map_over_the_next_node_and_whole_lists_are_collected(executor, g):
    numbers = g.node("Range", count=4)
    plus = g.node("Add", a=numbers, b=10)
    collect = g.node("Collect", values=plus)
    outcome = run_prompt(executor, g.build())
    assert outcome.outputs[collect.id] == {"values": [10, 11, 12, 13]}


def test_shorter_lists_repeat_their_last_element(executor, g):
    plus = g.node("Add", a=g.node("Range", count=3), b=g.node("Range", count=2))
    outcome = run_prompt(executor, g.build() | {"9": {"class_type": "Collect", "inputs": {"values": [plus.id, 0]}}})
    assert outcome.outputs["9"] == {"values": [0, 2, 3]}


def test_empty_list_input_runs_nothing_downstream(executor, g, calls):
    plus = g.node("Add", a=g.node("Range", count=0), b=1)
    outcome = run_prompt(executor, g.build() | {"9": {"class_type": "Collect", "inputs": {"values": [plus.id, 0]}}})
    assert outcome.outputs["9"] == {"values": []} and calls["Add"] == 0


def test_lazy_inputs_only_evaluate_the_branch_that_is_needed(executor, g):
    bad = g.node("Fail", value=1, message="must never run")
    good = g.node("Text", text="chosen")
    out = g.node("Show", value=g.node("Switch", choose_a=False, a=bad, b=good))
    outcome = run_prompt(executor, g.build())
    assert outcome.status == "success" and shown(outcome, out.id) == ["'chosen'"]
    assert bad.id not in outcome.executed


def test_node_expansion_splices_a_subgraph(executor, g, calls):
    out = g.node("Show", value=g.node("RepeatAdd", value=g.node("IntConst", value=5), times=4))
    outcome = run_prompt(executor, g.build())
    assert shown(outcome, out.id) == ["9"] and calls["Add"] == 4
    assert sum(1 for n in outcome.executed if n.startswith("2.")) == 4


def test_hidden_inputs(executor, g):
    who = g.node("WhoAmI")
    from graph import RunRequest, parse_api_workflow

    validation = executor.validate(parse_api_workflow(g.build()))
    outcome = executor.run(RunRequest(validation=validation, run_id="r", extra_data={"extra_pnginfo": {"k": 1}}))
    assert outcome.outputs[who.id] == {"id": [who.id], "nodes": [1], "extra": [{"k": 1}]}


def test_a_failure_names_the_node_its_inputs_and_keeps_the_traceback(executor, g):
    failing = g.node("Fail", value=g.node("Text", text="input text"), message="exploded")
    g.node("Show", value=failing)
    events = []
    outcome = run_prompt(executor, g.build(), listeners=[events.append])
    assert outcome.status == "error"
    failure = outcome.failure
    assert failure.node_id == failing.id and failure.node_type == "Fail"
    assert failure.exception_message == "exploded" and failure.exception_type == "builtins.RuntimeError"
    assert failure.current_inputs["value"] == ["input text"] and failure.executed == ["1"]
    assert any("raise RuntimeError(message)" in line for line in failure.traceback)
    assert [type(e) for e in events][-2:] == [NodeFailed, RunFinished] and events[-1].status == "error"


def test_wrong_number_of_return_values_is_a_node_error(registry, g):
    from graph import Node, NodeSchema, OutputSpec

    class TwoOut(Node):
        SCHEMA = NodeSchema(node_type="TwoOut", outputs=[OutputSpec(type="INT"), OutputSpec(type="INT")])

        def execute(self, ctx):
            return (1,)

    registry.register(TwoOut)
    g.node("Show", value=g.node("TwoOut"))
    outcome = run_prompt(Executor(registry), g.build())
    assert outcome.status == "error" and "returned 1 value(s)" in outcome.failure.exception_message


def test_interrupt_stops_within_about_one_step(executor, g):
    g.node("Show", value=g.node("Sleep", value=1, seconds=5))
    token = InterruptToken()
    events = []
    set_at = []

    def interrupt():
        set_at.append(time.perf_counter())
        token.set()

    threading.Timer(0.3, interrupt).start()
    outcome = run_prompt(executor, g.build(), interrupt=token, listeners=[events.append])
    ended_after = time.perf_counter() - set_at[0]
    assert outcome.status == "interrupted" and outcome.interrupted_at == "1"
    assert ended_after < 0.25 + 0.5  # within about one 0.25 s step (with slack for a busy machine)
    assert isinstance(events[-2], RunInterrupted) and events[-1].status == "interrupted"


def test_a_time_limit_ends_a_run_like_an_interrupt(executor, g):
    g.node("Show", value=g.node("Sleep", value=1, seconds=5))
    outcome = run_prompt(executor, g.build(), interrupt=InterruptToken(timeout=0.2))
    assert outcome.status == "interrupted" and outcome.reason == "timeout"


def test_interrupt_before_start_runs_nothing(executor, g, calls):
    g.node("Show", value=g.node("IntConst", value=1))
    token = InterruptToken()
    token.set()
    outcome = run_prompt(executor, g.build(), interrupt=token)
    assert outcome.status == "interrupted" and calls["IntConst"] == 0


def test_cached_output_nodes_still_report_their_ui(executor, g):
    out = g.node("Show", value=g.node("IntConst", value=7))
    run_prompt(executor, g.build())
    events = []
    outcome = run_prompt(executor, g.build(), listeners=[events.append])
    assert outcome.executed == [] and outcome.outputs[out.id] == {"text": ["7"]}
    cached = [e for e in events if isinstance(e, NodesCached)]
    assert cached and out.id in cached[0].node_ids
    finished = [e for e in events if isinstance(e, NodeFinished)]
    assert finished[0].cached and finished[0].ui == {"text": ["7"]}


def test_intermediates_are_released_after_their_last_consumer(registry, g):
    from graph import NoCache, RunRequest, parse_api_workflow
    from graph.executor import _Run

    a = g.node("IntConst", value=1)
    b = g.node("Add", a=a, b=a)
    g.node("Show", value=g.node("Add", a=b, b=1))
    executor = Executor(registry, cache=NoCache())
    run = _Run(executor, RunRequest(validation=executor.validate(parse_api_workflow(g.build())), run_id="r"))
    outcome = run.execute()
    assert outcome.status == "success"
    assert list(run.store) == [run.keys["4"]]  # only the output node's entry is left


def test_an_unchanged_rerun_reports_every_node_as_cached(executor, g):
    g.node("Show", value=g.node("Add", a=g.node("IntConst", value=1), b=2))
    run_prompt(executor, g.build())
    events = []
    outcome = run_prompt(executor, g.build(), listeners=[events.append])
    cached = [e for e in events if isinstance(e, NodesCached)][0]
    assert sorted(cached.node_ids) == ["1", "2", "3"] and sorted(outcome.cached) == ["1", "2", "3"]
