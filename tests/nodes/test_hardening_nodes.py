"""Nodes facing hostile or careless input: bounded echoes of names, one naming rule for what SaveImage
writes and /view serves, and long text encodings that honour a stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nodes.primitives
from graph.errors import Interrupted
from graph.names import check_prefix
from graph.node import InterruptToken
from graph.paths import UnsafePathError
from nodes.models.manager import ModelManager
from nodes.sd import image as I
from nodes.sd import image_transform as T
from nodes.sd import latent as L
from nodes.sd.text_encode import ROWS_PER_PASS, encode_clip
from server.files import PathError, split_relative

from .test_image_nodes import files, load_graph, save_graph
from .test_latent_nodes import Engine


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return Engine(tmp_path, I, T, L, nodes.primitives)


def test_an_invalid_image_name_is_echoed_once_and_bounded(engine: Engine):
    for name in ("x" * 1_000_000 + ".png", "sub/" + "y" * 1_000_000, "../" + "z" * 1_000_000):
        result = engine.validate(load_graph(name))
        assert not result.ok
        text = json.dumps(result.to_json())
        assert len(text) < 5_000, len(text)
        assert "characters" in text  # the preview says how long the name really was


@pytest.mark.parametrize("prefix", ["~/x", ".hidden/x", "a/.x", ".x", "con/x", "sub/LPT1.txt/x"])
def test_save_image_refuses_prefixes_whose_files_view_would_refuse(engine: Engine, prefix: str):
    result = engine.validate(save_graph(prefix))
    assert not result.ok and result.node_errors["9"].errors[0].input_name == "filename_prefix"
    linked = save_graph()
    linked["5"] = {"class_type": "PrimitiveString", "inputs": {"value": prefix}}
    linked["9"]["inputs"]["filename_prefix"] = ["5", 0]
    outcome = engine.run(linked)
    assert outcome.status == "error" and "filename_prefix" in outcome.failure.exception_message
    assert files(engine.folders.output) == []


def test_a_prefix_too_long_for_its_file_names_is_refused_at_validation(engine: Engine):
    result = engine.validate(save_graph("p" * 250))  # p..p_00001_.png would be 261 bytes
    assert not result.ok and "too long" in result.node_errors["9"].errors[0].message
    assert engine.run(save_graph("p" * 240)).status == "success"


def test_device_names_are_fine_as_the_file_prefix_itself(engine: Engine):
    outcome = engine.run(save_graph("con"))  # writes con_00001_.png, which /view serves
    assert outcome.status == "success" and files(engine.folders.output) == ["con_00001_.png"]


_PREFIX_CHARS = st.sampled_from(list("ab~./\\:_- %") + ["con", "nul", "..", "é", "\x00", "C:", "p" * 120,
                                                               "\U0001f600" * 30])


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_PREFIX_CHARS, min_size=1, max_size=8).map("".join))
def test_every_prefix_save_image_accepts_names_files_view_serves(prefix: str):
    """One rule: whatever SaveImage writes under a prefix, /view accepts its subfolder and file name."""
    try:
        check_prefix(prefix)
    except UnsafePathError:
        return
    subfolder, _, base = prefix.rpartition("/")
    filename = f"{base}_00001_.webp"
    assert len(filename.encode()) <= 255, "a saved file name must fit the file system"
    try:
        split_relative(subfolder, "subfolder", allow_empty=True)
        split_relative(filename, "filename")
    except PathError as exc:
        raise AssertionError(f"SaveImage accepts {prefix!r} but /view refuses its file: {exc}") from None


@pytest.fixture(scope="module")
def clip(tiny_file):
    return ModelManager().load_checkpoint(tiny_file("sd1"))[1]


def test_a_long_prompt_is_encoded_in_passes_that_honour_a_stop(clip):
    token = InterruptToken()
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 3:
            token.set("shutdown")
        token.check()

    long_prompt = ", ".join(f"word{i}" for i in range(3000))  # about 100 rows of 77 tokens
    with pytest.raises(Interrupted):
        encode_clip(clip, {"clip_l": long_prompt}, check=check)
    assert len(calls) == 3  # stopped after two passes, not after encoding every row
    short, _ = encode_clip(clip, {"clip_l": "a cat " * 100}, check=lambda: None)
    whole, _ = encode_clip(clip, {"clip_l": "a cat " * 100})
    assert short.shape[1] == whole.shape[1] and short.shape[1] > 77 * ROWS_PER_PASS // 4
