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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` run where CUDA is present and are skipped, with the reason, elsewhere."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_tests:
        return
    try:
        import torch

        reason = None if torch.cuda.is_available() else "needs a CUDA device (torch.cuda.is_available() is False)"
    except ImportError:
        reason = "needs torch with CUDA (torch is not installed)"
    if reason is not None:
        for item in gpu_tests:
            item.add_marker(pytest.mark.skip(reason=reason))
