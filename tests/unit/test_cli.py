"""`python main.py run`: headless runs, overrides, JSON events, exit codes, folders."""

from __future__ import annotations

import _thread
import json
import threading
from pathlib import Path

import pytest

import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello.json"


@pytest.fixture
def with_testpack(monkeypatch):
    monkeypatch.setattr(main, "BUILTIN_NODE_MODULES", (*main.BUILTIN_NODE_MODULES, "tests.support.testpack"))


def write(tmp_path: Path, prompt) -> Path:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(prompt) if not isinstance(prompt, str) else prompt, encoding="utf-8")
    return path


def test_runs_a_saved_workflow(capsys):
    assert main.main(["run", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "Hello, Sumie" in err


def test_overrides_and_json_events(capsys):
    assert main.main(["run", str(EXAMPLE), "--json", "--set", "1.value=Bye", "--set", '2.delimiter="; "']) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    assert events[-1]["status"] == "success" and events[-1]["outputs"]["3"]["text"] == ["Bye; Sumie"]
    assert [e["node_id"] for e in events if e["type"] == "node_started"] == ["1", "2", "3"]


@pytest.mark.parametrize("override, message", [
    ("1.value", "NODE_ID.INPUT=VALUE"), ("value=3", "NODE_ID.INPUT=VALUE"), ("9.value=3", "no node '9'"),
])
def test_bad_overrides_are_explained(capsys, override, message):
    assert main.main(["run", str(EXAMPLE), "--set", override]) == 1
    assert message in capsys.readouterr().err


def test_validation_errors_name_node_and_input(capsys):
    assert main.main(["run", str(EXAMPLE), "--set", "2.delimiter=[1, 2]"]) == 1
    err = capsys.readouterr().err
    assert "node 2 (StringConcatenate), input 'delimiter'" in err and "expects text" in err


@pytest.mark.parametrize("content, message", [
    ("{", "Invalid JSON"), ('{"1": {"class_type": "X", "inputs": {"v": NaN}}}', "NaN"),
    ('{"nodes": [], "links": []}', "Prompt has no outputs"), ("[1]", "expected a JSON object"),
])
def test_bad_files_are_explained(tmp_path, capsys, content, message):
    assert main.main(["run", str(write(tmp_path, content))]) == 1
    assert message in capsys.readouterr().err


def test_missing_file(tmp_path, capsys):
    assert main.main(["run", str(tmp_path / "nope.json")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_saved_outputs_are_printed_and_land_in_the_output_dir(tmp_path, capsys, with_testpack):
    prompt = {"1": {"class_type": "PrimitiveString", "inputs": {"value": "saved text"}},
              "2": {"class_type": "SaveText", "inputs": {"value": ["1", 0], "filename_prefix": "note"}}}
    out_dir = tmp_path / "out"
    assert main.main(["run", str(write(tmp_path, prompt)), "--output-dir", str(out_dir)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out_dir / "note_2.txt")]
    assert (out_dir / "note_2.txt").read_text() == "saved text"


def test_folders_come_from_environment_variables(tmp_path, capsys, monkeypatch, with_testpack):
    monkeypatch.setenv("SUMIE_OUTPUT_DIR", str(tmp_path / "env_out"))
    prompt = {"2": {"class_type": "SaveText", "inputs": {"value": 5, "filename_prefix": "text"}}}
    assert main.main(["run", str(write(tmp_path, prompt))]) == 0
    assert (tmp_path / "env_out" / "text_2.txt").exists()


def test_a_node_failure_exits_1_with_the_node_named(tmp_path, capsys, with_testpack):
    prompt = {"1": {"class_type": "Fail", "inputs": {"value": 1, "message": "kaboom"}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    assert main.main(["run", str(write(tmp_path, prompt))]) == 1
    assert "node 1 (Fail) failed: builtins.RuntimeError: kaboom" in capsys.readouterr().err


def test_ctrl_c_interrupts_the_run_and_exits_130(tmp_path, capsys, with_testpack):
    prompt = {"1": {"class_type": "Sleep", "inputs": {"value": 1, "seconds": 30}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    try:
        code = main.main(["run", str(write(tmp_path, prompt))])
    finally:
        timer.cancel()
    assert code == 130
    assert "interrupted" in capsys.readouterr().err


def test_timeout_ends_the_run_as_interrupted(tmp_path, capsys, with_testpack):
    prompt = {"1": {"class_type": "Sleep", "inputs": {"value": 1, "seconds": 30}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    assert main.main(["run", str(write(tmp_path, prompt)), "--timeout", "0.3"]) == 130
    assert "timeout" in capsys.readouterr().err


HELLO_EDITOR = {
    "nodes": [
        {"id": 1, "type": "PrimitiveString", "mode": 0, "widgets_values": ["Hi"],
         "outputs": [{"name": "STRING", "type": "STRING", "links": [1]}], "inputs": []},
        {"id": 2, "type": "StringConcatenate", "mode": 0, "widgets_values": ["", "editor", " from the "],
         "inputs": [{"name": "string_a", "type": "STRING", "link": 1, "widget": {"name": "string_a"}}],
         "outputs": [{"name": "STRING", "type": "STRING", "links": [2]}]},
        {"id": 3, "type": "PreviewAny", "mode": 0, "inputs": [{"name": "source", "type": "*", "link": 2}],
         "outputs": []},
    ],
    "links": [[1, 1, 0, 2, 0, "STRING"], [2, 2, 0, 3, 0, "STRING"]], "version": 0.4,
}


def test_runs_an_editor_format_file(tmp_path, capsys):
    assert main.main(["run", str(write(tmp_path, HELLO_EDITOR))]) == 0
    assert "Hi from the editor" in capsys.readouterr().err


def test_reruns_the_workflow_embedded_in_a_png(tmp_path, capsys):
    from PIL import Image

    from nodes.sd.png_meta import build_png_info

    prompt = json.loads(EXAMPLE.read_text())
    path = tmp_path / "saved.png"
    Image.new("RGB", (4, 4)).save(path, pnginfo=build_png_info(prompt, {"workflow": HELLO_EDITOR}))
    assert main.main(["run", str(path)]) == 0
    assert "Hello, Sumie" in capsys.readouterr().err  # the exact API prompt that ran is preferred
    Image.new("RGB", (4, 4)).save(path, pnginfo=build_png_info(None, {"workflow": HELLO_EDITOR}))
    assert main.main(["run", str(path)]) == 0
    assert "Hi from the editor" in capsys.readouterr().err
    Image.new("RGB", (4, 4)).save(path)
    assert main.main(["run", str(path)]) == 1 and "holds no workflow" in capsys.readouterr().err


def test_convert_writes_the_api_prompt(tmp_path, capsys):
    target = tmp_path / "api.json"
    assert main.main(["convert", str(write(tmp_path, HELLO_EDITOR)), str(target)]) == 0
    api = json.loads(target.read_text())
    assert api["2"]["inputs"] == {"string_a": ["1", 0], "string_b": "editor", "delimiter": " from the "}
    assert main.main(["run", str(target)]) == 0


def test_inspect_lists_what_is_missing(tmp_path, capsys):
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "dreamshaper.safetensors"}},
              "2": {"class_type": "FancyPackNode", "inputs": {}}}
    code = main.main(["inspect", str(write(tmp_path, prompt)), "--models-dir", str(tmp_path / "models")])
    out = capsys.readouterr().out
    assert code == 1 and "missing node type: FancyPackNode" in out
    assert "MISSING  dreamshaper.safetensors  (node 1 CheckpointLoaderSimple.ckpt_name)" in out
