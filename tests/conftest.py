"""Shared fixtures: a registry with the torch-free test pack and an executor that counts node calls."""

from __future__ import annotations

from collections import Counter

import pytest

from graph import Executor, NodeRegistry, RecentRunsCache, RunRequest, parse_api_workflow
from graph.builder import GraphBuilder
from tests.support import testpack


@pytest.fixture
def registry() -> NodeRegistry:
    reg = NodeRegistry()
    reg.register_module(testpack)
    return reg


@pytest.fixture
def calls() -> Counter:
    return Counter()


@pytest.fixture
def executor(registry, calls) -> Executor:
    return Executor(registry, cache=RecentRunsCache(1), services={"calls": calls})


@pytest.fixture
def g() -> GraphBuilder:
    return GraphBuilder()


def run_prompt(executor: Executor, prompt: dict, *, run_id: str = "run", listeners=(), targets=None, interrupt=None):
    validation = executor.validate(parse_api_workflow(prompt), targets)
    assert validation.ok, validation.messages()
    kw = {"interrupt": interrupt} if interrupt is not None else {}
    return executor.run(RunRequest(validation=validation, run_id=run_id, listeners=listeners, **kw))
