"""The ComfyUI compatibility layer as packs use it: folder_paths, comfy.utils, comfy.model_management,
server.PromptServer and nodes, exercised by a small pack written here and run through the engine."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from graph import (
    Executor,
    Folders,
    InterruptToken,
    NodeContext,
    NodeRegistry,
    Progress,
    RunRequest,
    parse_api_workflow,
)
from graph.errors import Interrupted
from graph.paths import UnsafePathError
from plugins.manager import PluginManager

ROOT = Path(__file__).resolve().parents[2]

PACK = '''
import folder_paths
import comfy.utils
import comfy.model_management as mm
import nodes
from server import PromptServer


class Steps:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 3, "min": 1, "max": 10}),
                             "stop_at": ("INT", {"default": -1, "min": -1, "max": 10})}}
    RETURN_TYPES = ("STRING",)
    FUNCTION = "go"
    OUTPUT_NODE = True

    def go(self, steps, stop_at):
        bar = comfy.utils.ProgressBar(steps)
        for i in range(steps):
            if i == stop_at:
                mm.interrupt_current_processing()
            mm.throw_exception_if_processing_interrupted()
            bar.update(1)
        PromptServer.instance.send_sync("nobody.listens", {"i": steps})  # no server: dropped quietly
        device = mm.get_torch_device()
        return {"ui": {"text": [f"{device.type}:{mm.processing_interrupted()}"]}, "result": (str(device),)}


class Files:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt": (folder_paths.get_filename_list("checkpoints"),)}}
    RETURN_TYPES = ()
    FUNCTION = "go"
    OUTPUT_NODE = True

    def go(self, ckpt):
        path = folder_paths.get_full_path("checkpoints", ckpt)
        sd = comfy.utils.load_torch_file(path)
        image = torch_image()
        small = comfy.utils.common_upscale(image.movedim(-1, 1), 2, 3, "bilinear", "disabled")
        inverted = nodes.NODE_CLASS_MAPPINGS["ImageInvert"]().execute_v1(image)[0]
        return {"ui": {"keys": sorted(sd), "small": [list(small.shape)], "inverted": [float(inverted.mean())],
                       "max": [nodes.MAX_RESOLUTION]}}


def torch_image():
    import torch
    return torch.full((1, 8, 8, 3), 0.25)


NODE_CLASS_MAPPINGS = {"ShimSteps": Steps, "ShimFiles": Files}
'''


@pytest.fixture
def shim(tmp_path):
    folders = Folders.under(tmp_path)
    for name in ("models", "input", "output", "temp", "user"):
        getattr(folders, name).mkdir()
    ckpts = folders.models / "checkpoints"
    (ckpts / "sub").mkdir(parents=True)
    save_file({"w": torch.ones(2)}, str(ckpts / "sub" / "tiny.safetensors"))
    (ckpts / "readme.txt").write_text("not a model")
    outside = tmp_path / "outside.safetensors"
    save_file({"x": torch.ones(1)}, str(outside))
    os.symlink(outside, ckpts / "escape.safetensors")
    plugins = tmp_path / "custom_nodes"
    plugins.mkdir()
    (plugins / "shimpack.py").write_text(textwrap.dedent(PACK))
    import nodes.sd.image as image_nodes
    import nodes.sd.image_transform as image_transform_nodes
    from tests.support import testpack

    registry = NodeRegistry(folders=folders)
    registry.register_module(testpack)
    registry.register_module(image_nodes)
    registry.register_module(image_transform_nodes)
    manager = PluginManager(registry, [plugins, ROOT / "custom_nodes"], folders=folders)
    manager.load_all()
    assert manager.reports["shimpack"].status == "loaded", manager.reports["shimpack"].error
    executor = Executor(registry, folders=folders, services={"force_cpu": True})
    return executor, folders


def run(executor, prompt, *, interrupt=None, events=None):
    validation = executor.validate(parse_api_workflow(prompt))
    assert validation.ok, validation.messages()
    request = RunRequest(validation=validation, run_id="r", listeners=[events.append] if events is not None else [],
                         **({"interrupt": interrupt} if interrupt else {}))
    return executor.run(request)


def test_progress_bar_reports_through_the_node_and_the_device_is_the_engines(shim):
    executor, _ = shim
    events = []
    outcome = run(executor, {"1": {"class_type": "ShimSteps", "inputs": {"steps": 3, "stop_at": -1}}}, events=events)
    assert outcome.status == "success" and outcome.outputs["1"] == {"text": ["cpu:False"]}
    assert [(e.value, e.max) for e in events if isinstance(e, Progress)] == [(1, 3), (2, 3), (3, 3)]


def test_interrupt_check_uses_the_runs_token(shim):
    executor, _ = shim
    outcome = run(executor, {"1": {"class_type": "ShimSteps", "inputs": {"steps": 5, "stop_at": 2}}})
    assert outcome.status == "interrupted" and outcome.interrupted_at == "1"
    token = InterruptToken()
    token.set()
    from compat.comfy import model_management as mm

    assert issubclass(mm.InterruptProcessingException, Interrupted)
    assert run(executor, {"1": {"class_type": "ShimSteps", "inputs": {"steps": 1, "stop_at": -1}}},
               interrupt=token).status == "interrupted"


def test_files_loading_resizing_and_builtin_nodes_through_the_shim(shim):
    executor, _ = shim
    info = executor.registry.object_info("ShimFiles")["ShimFiles"]["input"]["required"]["ckpt"]
    assert info == [["sub/tiny.safetensors"]]  # no text file, no symlink leading outside
    outcome = run(executor, {"1": {"class_type": "ShimFiles", "inputs": {"ckpt": "sub/tiny.safetensors"}}})
    assert outcome.status == "success", outcome.failure
    assert outcome.outputs["1"] == {"keys": ["w"], "small": [[1, 3, 3, 2]], "inverted": [0.75], "max": [16384]}


def test_folder_paths_functions(shim):
    from compat import folder_paths as fp

    _, folders = shim
    assert fp.models_dir == str(folders.models) and fp.get_output_directory() == str(folders.output)
    assert fp.get_input_directory() == str(folders.input) and fp.get_temp_directory() == str(folders.temp)
    assert fp.get_folder_paths("clip") == [str(folders.models / "clip"), str(folders.models / "text_encoders")]
    assert fp.get_filename_list("checkpoints") == ["sub/tiny.safetensors"]
    assert fp.get_full_path("checkpoints", "sub/tiny.safetensors").endswith("tiny.safetensors")
    for bad in ("../outside.safetensors", "/etc/passwd", "escape.safetensors", "missing.safetensors"):
        assert fp.get_full_path("checkpoints", bad) is None
    with pytest.raises(FileNotFoundError):
        fp.get_full_path_or_raise("checkpoints", "missing.safetensors")
    extra = folders.models.parent / "more_loras"
    extra.mkdir()
    (extra / "mine.safetensors").write_bytes(b"x")
    fp.add_model_folder_path("loras", str(extra))
    assert fp.get_filename_list("loras") == ["mine.safetensors"]
    (folders.output / "x.png").write_bytes(b"png")
    assert fp.get_annotated_filepath("x.png [output]") == str(folders.output / "x.png")
    assert fp.exists_annotated_filepath("x.png [output]") and not fp.exists_annotated_filepath("x.png")
    assert not fp.exists_annotated_filepath("../../etc/passwd")
    with pytest.raises(UnsafePathError):
        fp.get_annotated_filepath("../secret.png")
    (folders.output / "shots").mkdir()
    (folders.output / "shots" / "img_00004_.png").write_bytes(b"")
    full, name, counter, sub, prefix = fp.get_save_image_path("shots/img", str(folders.output), 64, 32)
    assert (full, name, counter, sub) == (str(folders.output / "shots"), "img", 5, "shots")
    assert fp.get_save_image_path("%width%x%height%", str(folders.output), 64, 32)[1] == "64x32"
    with pytest.raises(UnsafePathError):
        fp.get_save_image_path("../escape", str(folders.output))


def test_example_packs_tint_node_called_directly(shim):
    import sys

    executor, _ = shim
    module = sys.modules[executor.registry["ExampleTintImage"].cls.__module__]
    node = module.ExampleTintImage()
    ctx = NodeContext(node_id="t", class_type="ExampleTintImage", run_id="t", interrupt=InterruptToken())
    image = torch.zeros(2, 4, 4, 3)
    (out,) = node.execute(ctx, image=image, color="#ff0000", strength=0.25)
    assert out.shape == image.shape and torch.allclose(out[..., 0], torch.full((2, 4, 4), 0.25))
    assert float(out[..., 1:].abs().max()) == 0.0
    assert node.validate_inputs(color="red") != True  # noqa: E712 - a message, not False
    ctx.interrupt.set()
    with pytest.raises(Interrupted):
        node.execute(ctx, image=image, color="#ff0000", strength=0.25)
