"""Planning, separate from running: which node may run next, demand-driven from the targets.

The planner knows nothing of node code. It is told each node's dependencies (a callable), whether a
node's result is already available (cached: its ancestors are then never scheduled), and, while
running, that a node needs more inputs first (`require`: lazy inputs and node expansion).
Ready nodes come out in a depth-first post-order, so a branch finishes (and its intermediates can
be released) before the next starts. Everything is iterative: any depth works.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence

VISITING, WAITING, READY, RUNNING, DONE = range(5)


class PlanningError(RuntimeError):
    pass


class Planner:
    def __init__(
        self,
        deps: Callable[[str], Sequence[str]],
        targets: Iterable[str],
        *,
        is_cached: Callable[[str], bool] = lambda node_id: False,
    ) -> None:
        self._deps = deps
        self._is_cached = is_cached
        self._state: dict[str, int] = {}
        self._waiting_on: dict[str, int] = {}
        self._dependents: dict[str, list[str]] = {}
        self._rank: dict[str, int] = {}
        self._ready: list[tuple[int, str]] = []
        self._counter = 0
        self.cached: list[str] = []
        self.targets = list(dict.fromkeys(targets))
        for target in self.targets:
            self._add(target)

    # -- queries -------------------------------------------------------------------------------
    def next(self) -> str | None:
        """The next node to run, or None when nothing is ready (done, or waiting on running nodes)."""
        if not self._ready:
            return None
        _, node_id = heapq.heappop(self._ready)
        self._state[node_id] = RUNNING
        return node_id

    @property
    def done(self) -> bool:
        return all(self._state.get(t) == DONE for t in self.targets)

    def is_done(self, node_id: str) -> bool:
        return self._state.get(node_id) == DONE

    def unfinished(self) -> list[str]:
        return [n for n, s in self._state.items() if s != DONE]

    # -- updates -------------------------------------------------------------------------------
    def complete(self, node_id: str) -> None:
        if self._state.get(node_id) != RUNNING:
            raise PlanningError(f"node {node_id} completed but was not running")
        self._finish(node_id)

    def require(self, node_id: str, deps: Iterable[str]) -> None:
        """A running node needs `deps` first: schedule them (and their ancestors) and park the node."""
        if self._state.get(node_id) != RUNNING:
            raise PlanningError(f"node {node_id} asked for inputs but is not running")
        deps = list(dict.fromkeys(deps))
        for dep in deps:
            if dep == node_id:
                raise PlanningError(f"node {node_id} cannot depend on itself")
            if dep not in self._state:
                self._add(dep)
        self._park(node_id, deps)

    # -- internals -----------------------------------------------------------------------------
    def _finish(self, node_id: str) -> None:
        self._state[node_id] = DONE
        waiting_on = self._waiting_on
        for consumer in self._dependents.pop(node_id, ()):
            left = waiting_on[consumer] - 1
            waiting_on[consumer] = left
            if left == 0:
                del waiting_on[consumer]
                self._state[consumer] = READY
                heapq.heappush(self._ready, (self._rank[consumer], consumer))

    def _park(self, node_id: str, deps: Sequence[str]) -> None:
        state = self._state
        unfinished = [d for d in deps if state[d] != DONE]
        if not unfinished:
            state[node_id] = READY
            heapq.heappush(self._ready, (self._rank[node_id], node_id))
            return
        state[node_id] = WAITING
        self._waiting_on[node_id] = len(unfinished)
        for d in unfinished:
            self._dependents.setdefault(d, []).append(node_id)

    def _add(self, root: str) -> None:
        state = self._state
        if root in state:
            return
        if self._is_cached(root):
            state[root] = DONE
            self.cached.append(root)
            return
        state[root] = VISITING
        root_deps = list(dict.fromkeys(self._deps(root)))
        stack: list[tuple[str, list[str], int]] = [(root, root_deps, 0)]
        while stack:
            node_id, deps, i = stack[-1]
            pushed = False
            while i < len(deps):
                dep = deps[i]
                i += 1
                s = state.get(dep)
                if s is None:
                    if self._is_cached(dep):
                        state[dep] = DONE
                        self.cached.append(dep)
                        continue
                    state[dep] = VISITING
                    stack[-1] = (node_id, deps, i)
                    stack.append((dep, list(dict.fromkeys(self._deps(dep))), 0))
                    pushed = True
                    break
                if s == VISITING:
                    raise PlanningError(f"dependency cycle through node {dep}")
            if pushed:
                continue
            stack.pop()
            self._rank[node_id] = self._counter
            self._counter += 1
            self._park(node_id, deps)
