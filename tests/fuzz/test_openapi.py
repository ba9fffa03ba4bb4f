"""Every operation of /openapi.json driven by schemathesis against a live in-process server: whatever
it generates (bodies from the published schemas in positive and negative mode, odd path values), the
answer is never a 5xx, never a traceback, and never JSON a browser cannot parse (bare NaN/Infinity)."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.live import live_server
from tests.fuzz.strategies import scaled


@pytest.fixture(scope="module")
def operations(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("openapi")) as server:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        ops = [result.ok() for result in schema.get_all_operations()]
        yield ops


def _refuse(name: str) -> None:
    raise AssertionError(f"bare {name} on the wire")


def test_the_document_lists_every_api_route(operations):
    labels = {op.label for op in operations}
    assert {"POST /prompt", "POST /convert", "GET /view", "POST /upload/image", "GET /jobs/{prompt_id}"} <= labels


def test_every_operation_answers_without_a_server_error(operations):
    for operation in operations:
        modes = st.one_of(operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
                          operation.as_strategy(schemathesis.GenerationMode.NEGATIVE))

        @given(case=modes)
        @settings(max_examples=scaled(12), deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            response = case.call(timeout=30)
            where = f"{case.method} {case.formatted_path}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
            assert "Traceback" not in response.text, where
            if "json" in response.headers.get("Content-Type", ""):
                json.loads(response.content, parse_constant=_refuse)

        check()
