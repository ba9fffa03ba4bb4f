"""Cache keys by structure, re-running only what changed, and the three policies."""

from __future__ import annotations

import pytest

from graph import Executor, NoCache, RamBudgetCache, RecentRunsCache, make_cache, parse_api_workflow
from graph.cache import CacheEntry, node_key, parse_bytes
from graph.sizing import estimate_size
from tests.conftest import run_prompt


def pipeline(g, seed=1, text="a cat"):
    """A stand-in for checkpoint -> encode -> sample -> save: changing `seed` touches only `sample`."""
    ckpt = g.node("IntConst", value=100)
    encoded = g.node("Concat", a=g.node("Text", text=text), b="!")
    sample = g.node("Add", a=ckpt, b=seed)
    g.node("Show", value=encoded)
    return g.node("Show", value=g.node("Stamp", value=sample))


def test_changing_a_seed_reruns_only_the_sampler_and_what_follows(executor, g, calls):
    pipeline(g, seed=1)
    first = run_prompt(executor, g.build())
    assert calls["IntConst"] == 1 and calls["Add"] == 1 and calls["Stamp"] == 1
    g2 = type(g)()
    pipeline(g2, seed=2)
    second = run_prompt(executor, g2.build())
    assert calls["IntConst"] == 1  # the "checkpoint loader" was not run again
    assert calls["Add"] == 2 and calls["Stamp"] == 2 and calls["Show"] == 3
    assert set(second.executed) == {"4", "6", "7"} and first.outputs["7"] != second.outputs["7"]


def test_identical_resubmission_runs_nothing(executor, g, calls):
    pipeline(g)
    run_prompt(executor, g.build())
    before = sum(calls.values())
    outcome = run_prompt(executor, g.build())
    assert sum(calls.values()) == before and outcome.executed == [] and outcome.outputs


def test_keys_follow_structure_not_node_ids(executor, registry, g, calls):
    pipeline(g)
    run_prompt(executor, g.build())
    renumbered = {f"n{k}": {"class_type": v["class_type"],
                            "inputs": {name: [f"n{val[0]}", val[1]] if isinstance(val, list) else val
                                       for name, val in v["inputs"].items()}}
                  for k, v in g.build().items()}
    outcome = run_prompt(executor, renumbered)
    assert outcome.executed == [] and calls["Show"] == 2


def test_identical_subgraphs_in_one_prompt_run_once(executor, g, calls):
    for _ in range(3):
        g.node("Show", value=g.node("Add", a=g.node("IntConst", value=4), b=5))
    run_prompt(executor, g.build())
    assert calls["IntConst"] == 1 and calls["Add"] == 1


def test_fingerprint_joins_the_key(executor, g, calls):
    from tests.support.testpack import Stamp

    g.node("Show", value=g.node("Stamp", value=1))
    Stamp.version = 0
    run_prompt(executor, g.build())
    run_prompt(executor, g.build())
    assert calls["Stamp"] == 1
    Stamp.version = 1
    try:
        outcome = run_prompt(executor, g.build())
    finally:
        Stamp.version = 0
    assert calls["Stamp"] == 2 and outcome.outputs["2"] == {"text": ["2"]}


def test_nan_fingerprint_means_always_rerun_and_so_does_everything_downstream(executor, g, calls):
    g.node("Show", value=g.node("Add", a=g.node("Volatile", value=1), b=1))
    run_prompt(executor, g.build())
    run_prompt(executor, g.build())
    assert calls["Volatile"] == 2 and calls["Add"] == 2


def test_unhashable_constants_fail_closed(registry):
    wf = parse_api_workflow({"1": {"class_type": "Text", "inputs": {"text": "x"}}})
    node = wf.nodes["1"]
    node.inputs["text"] = object()
    k1 = node_key(node, registry["Text"], {})
    k2 = node_key(node, registry["Text"], {})
    assert k1 != k2  # never served from the cache
    node.inputs["text"] = "x"
    assert node_key(node, registry["Text"], {}) == node_key(node, registry["Text"], {})


def test_key_distinguishes_types_and_values(registry):
    def key(value):
        wf = parse_api_workflow({"1": {"class_type": "Show", "inputs": {"value": value}}})
        return node_key(wf.nodes["1"], registry["Show"], {})

    assert len({key(1), key(1.0), key("1"), key(True), key({"__value__": [1]}), key(None)}) == 6
    assert key({"a": 1, "b": 2}) == key({"b": 2, "a": 1})


def test_recent_runs_policy_keeps_the_last_n_prompts(registry, calls):
    ex = Executor(registry, cache=RecentRunsCache(2), services={"calls": calls})

    def run(v):
        return run_prompt(ex, {"1": {"class_type": "IntConst", "inputs": {"value": v}},
                               "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}})

    run(1), run(2), run(1)
    assert calls["IntConst"] == 2  # 1 was still among the last two prompts
    run(3), run(4), run(1)
    assert calls["IntConst"] == 5  # now it had been evicted


def test_no_cache_policy_reruns_everything(registry, calls, g):
    ex = Executor(registry, cache=NoCache(), services={"calls": calls})
    pipeline(g)
    run_prompt(ex, g.build())
    run_prompt(ex, g.build())
    assert calls["IntConst"] == 2


class Blob:
    def __init__(self, n):
        self.nbytes = n


def test_ram_budget_evicts_least_recently_used_by_size():
    cache = RamBudgetCache(1300)
    cache.put(b"a", CacheEntry(outputs=([Blob(400)],), ui=None))
    cache.put(b"b", CacheEntry(outputs=([Blob(400)],), ui=None))
    assert cache.get(b"a") is not None  # a is now the most recently used
    cache.put(b"c", CacheEntry(outputs=([Blob(400)],), ui=None))
    assert cache.get(b"b") is None and cache.get(b"a") is not None and cache.get(b"c") is not None
    assert cache.total <= 1300
    cache.put(b"huge", CacheEntry(outputs=([Blob(5000)],), ui=None))
    assert cache.get(b"huge") is None and len(cache) == 2


def test_size_estimates_use_nbytes_and_walk_containers():
    assert estimate_size([Blob(1000), {"x": Blob(500)}]) >= 1500
    assert estimate_size(Blob(10**9)) == 10**9

    class Handle:
        def __sumie_size__(self):
            return 0

    assert estimate_size(Handle()) == 0


def test_policy_settings_parse():
    assert isinstance(make_cache("none"), NoCache)
    assert make_cache("recent:3").runs == 3 and make_cache("recent").runs == 1
    assert make_cache("ram:2GB").max_bytes == 2 * 10**9
    assert parse_bytes("512MiB") == 512 * 2**20
    with pytest.raises(ValueError):
        make_cache("lru:5")
    with pytest.raises(ValueError):
        parse_bytes("lots")


def test_a_cached_rerun_keeps_the_ancestors_the_next_change_needs(executor, g, calls):
    pipeline(g, seed=1)
    run_prompt(executor, g.build())
    run_prompt(executor, g.build())  # fully cached: only the output nodes are looked at
    g2 = type(g)()
    pipeline(g2, seed=2)
    run_prompt(executor, g2.build())
    assert calls["IntConst"] == 1 and calls["Add"] == 2


def test_a_failing_fingerprint_is_logged_and_never_cached(registry, calls, caplog):
    from graph import IntInput, Node, NodeSchema, OutputSpec

    class Flaky(Node):
        SCHEMA = NodeSchema(node_type="Flaky", inputs=[IntInput(name="value")], outputs=[OutputSpec(type="INT")])

        def fingerprint(self, *, missing_argument):
            return 1

        def execute(self, ctx, *, value):
            ctx.services["calls"]["Flaky"] += 1
            return (value,)

    registry.register(Flaky)
    ex = Executor(registry, cache=RecentRunsCache(1), services={"calls": calls})
    prompt = {"1": {"class_type": "Flaky", "inputs": {"value": 1}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    run_prompt(ex, prompt)
    run_prompt(ex, prompt)
    assert calls["Flaky"] == 2
    assert "node 1 (Flaky): fingerprint() failed" in caplog.text


def test_no_ordinary_key_is_mistaken_for_an_uncacheable_one(registry):
    from graph.cache import is_uncacheable, uncacheable_key

    node_def = registry["IntConst"]
    keys = [node_key(parse_api_workflow({"1": {"class_type": "IntConst", "inputs": {"value": i}}}).nodes["1"],
                     node_def, {}) for i in range(5000)]
    assert not any(is_uncacheable(k) for k in keys) and len(set(keys)) == 5000
    assert is_uncacheable(uncacheable_key())


def test_hooks_that_ask_for_folders_receive_the_engines_folders(registry, tmp_path, calls):
    from graph import Folders, IntInput, Node, NodeSchema, OutputSpec

    seen = []

    class FileBacked(Node):
        SCHEMA = NodeSchema(node_type="FileBacked", inputs=[IntInput(name="value")], outputs=[OutputSpec(type="INT")])

        def fingerprint(self, *, value, folders=None):
            seen.append(folders)
            return (folders.input / "data.txt").read_text()

        def execute(self, ctx, *, value):
            ctx.services["calls"]["FileBacked"] += 1
            return (value,)

    folders = Folders.under(tmp_path)
    folders.input.mkdir(parents=True)
    (folders.input / "data.txt").write_text("v1")
    registry.register(FileBacked)
    ex = Executor(registry, cache=RecentRunsCache(1), services={"calls": calls}, folders=folders)
    prompt = {"1": {"class_type": "FileBacked", "inputs": {"value": 1}},
              "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    run_prompt(ex, prompt)
    run_prompt(ex, prompt)
    (folders.input / "data.txt").write_text("v2")
    run_prompt(ex, prompt)
    assert seen[0] == folders and calls["FileBacked"] == 2
