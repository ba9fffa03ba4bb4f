"""The planner alone: structure in, order out, no node code anywhere."""

from __future__ import annotations

import pytest

from graph.planner import Planner, PlanningError


def drain(planner: Planner, on_run=None) -> list[str]:
    order = []
    while (node := planner.next()) is not None:
        order.append(node)
        if on_run is None or not on_run(node):
            planner.complete(node)
    return order


def test_only_targets_and_their_ancestors_run_in_dependency_order():
    deps = {"out": ["b", "c"], "b": ["a"], "c": ["a"], "a": [], "unused": ["a"]}
    planner = Planner(deps.__getitem__, ["out"])
    order = drain(planner)
    assert set(order) == {"a", "b", "c", "out"} and order[0] == "a" and order[-1] == "out"
    assert planner.done


def test_order_is_depth_first_so_branches_finish_before_others_start():
    deps = {"out": ["x2", "y2"], "x2": ["x1"], "x1": [], "y2": ["y1"], "y1": []}
    assert drain(Planner(deps.__getitem__, ["out"])) == ["x1", "x2", "y1", "y2", "out"]


def test_order_is_deterministic():
    deps = {str(i): [str(j) for j in range(i) if (i * j) % 3 == 1] for i in range(50)}
    first = drain(Planner(deps.__getitem__, ["49", "30"]))
    assert all(first == drain(Planner(deps.__getitem__, ["49", "30"])) for _ in range(3))


def test_cached_nodes_prune_their_ancestors():
    deps = {"out": ["b"], "b": ["a"], "a": []}
    planner = Planner(deps.__getitem__, ["out"], is_cached=lambda n: n == "b")
    assert drain(planner) == ["out"] and planner.cached == ["b"]
    planner = Planner(deps.__getitem__, ["out"], is_cached=lambda n: n == "out")
    assert drain(planner) == [] and planner.done


def test_require_schedules_lazy_inputs_and_parks_the_node():
    deps = {"switch": ["cond"], "cond": [], "expensive": ["base"], "base": [], "cheap": []}
    planner = Planner(deps.__getitem__, ["switch"])
    asked = []

    def on_run(node):
        if node == "switch" and not asked:
            asked.append(node)
            planner.require("switch", ["expensive"])
            return True
        return False

    order = drain(planner, on_run)
    assert order == ["cond", "switch", "base", "expensive", "switch"]
    assert "cheap" not in order and planner.done


def test_require_with_finished_deps_makes_the_node_ready_again():
    deps = {"n": ["a"], "a": []}
    planner = Planner(deps.__getitem__, ["n"])
    assert planner.next() == "a"
    planner.complete("a")
    assert planner.next() == "n"
    planner.require("n", ["a"])
    assert planner.next() == "n"


def test_misuse_is_reported():
    planner = Planner({"a": []}.__getitem__, ["a"])
    with pytest.raises(PlanningError):
        planner.complete("a")  # not handed out yet
    node = planner.next()
    with pytest.raises(PlanningError):
        planner.require(node, [node])


def test_cycles_are_detected():
    deps = {"a": ["b"], "b": ["a"]}
    with pytest.raises(PlanningError, match="cycle"):
        Planner(deps.__getitem__, ["a"])


def test_any_depth_works():
    n = 200_000
    deps = {i: [i - 1] if i else [] for i in range(n)}
    order = drain(Planner(deps.__getitem__, [n - 1]))
    assert order[0] == 0 and order[-1] == n - 1 and len(order) == n
