"""The ComfyUI surface popular packs use, through test packs written in those packs' patterns
(tests/support/packs/*_style) and run unchanged on the real engine with a tiny SD1 checkpoint."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from graph import InterruptToken, Progress
from plugins.manager import PluginManager
from tests.support.sd_engine import SdEngine

ROOT = Path(__file__).resolve().parents[2]
PACKS = ROOT / "tests" / "support" / "packs"
STYLES = ["essentials_style", "impact_style", "kj_style", "rgthree_style", "was_style"]


@pytest.fixture
def engine(tmp_path, tiny_file) -> SdEngine:
    engine = SdEngine(tmp_path)
    engine.add("checkpoints", tiny_file("sd1"), "tiny.safetensors")
    engine.plugins = PluginManager(engine.registry, [PACKS], allow=STYLES, folders=engine.folders)
    engine.plugins.load_all()
    return engine


LOADER = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
          "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}}


def keep(prompt: dict, *sources: tuple[str, int]) -> dict:
    return {**prompt, **{f"keep{i}": {"class_type": "Keep", "inputs": {"value": list(s)}}
                         for i, s in enumerate(sources)}}


def test_every_style_pack_loads(engine):
    for name in STYLES:
        report = engine.plugins.reports[name]
        assert report.status == "loaded" and report.node_errors == {}, (name, report.error, report.traceback)
    assert engine.plugins.reports["kj_style"].protocol == "comfy_v1+comfy_v3"
    paths = {getattr(route, "path", None) for table in engine.plugins.route_tables for route in table}
    assert "/rgthree_style/loras" in paths  # registered with @PromptServer.instance.routes.get


def test_core_nodes_called_from_packs_sample_exactly_like_ksampler(engine):
    """KSampler in the graph, nodes.common_ksampler, nodes.KSampler().sample and comfy.sample.sample with
    comfy.sample.prepare_noise all give the same latent for the same seed."""
    prompt = {**LOADER,
              "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a cat"}},
              "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
              "ks": {"class_type": "KSampler", "inputs": {
                  "model": ["ckpt", 0], "seed": 5, "steps": 2, "cfg": 2.0, "sampler_name": "euler",
                  "scheduler": "normal", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["empty", 0],
                  "denoise": 1.0}},
              "es": {"class_type": "ES_QuickSample", "inputs": {"model": ["ckpt", 0], "clip": ["ckpt", 1],
                                                                "latent": ["empty", 0], "seed": 5, "text": "a cat"}},
              "is": {"class_type": "IS_DetailSampler", "inputs": {
                  "model": ["ckpt", 0], "clip": ["ckpt", 1], "vae": ["ckpt", 2], "latent": ["empty", 0], "seed": 5,
                  "sampler_name": "euler", "scheduler": "normal"}},
              "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}}}
    events = []
    outcome = engine.run(keep(prompt, ("ks", 0), ("es", 0), ("is", 0), ("is", 1), ("is", 2), ("dec", 0),
                              ("is", 3)), listeners=[events.append])
    assert outcome.status == "success", outcome.failure
    ks, es, via_node, own, image, decoded, info = engine.kept
    assert torch.equal(es["samples"], ks["samples"])
    assert torch.equal(via_node["samples"], ks["samples"])
    assert torch.allclose(own["samples"], ks["samples"], atol=1e-6)
    assert torch.equal(image, decoded)
    assert info == "True:sample:decode:True"  # comfy.k_diffusion is not provided; the pack guarded its import
    assert any(isinstance(e, Progress) and e.node_id == "is" for e in events)


def test_comfy_extras_nodes_called_from_a_pack_match_the_same_graph(engine):
    prompt = {**LOADER,
              "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a cat"}},
              "sweep": {"class_type": "ES_SeedSweep", "inputs": {"model": ["ckpt", 0], "conditioning": ["pos", 0],
                                                                 "latent": ["empty", 0], "seed": 7}},
              "guider": {"class_type": "BasicGuider", "inputs": {"model": ["ckpt", 0], "conditioning": ["pos", 0]}},
              "sig": {"class_type": "BasicScheduler", "inputs": {"model": ["ckpt", 0], "scheduler": "normal",
                                                                 "steps": 2, "denoise": 1.0}},
              "euler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}}
    for n in (7, 8):
        prompt[f"noise{n}"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": n}}
        prompt[f"s{n}"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": [f"noise{n}", 0], "guider": ["guider", 0], "sampler": ["euler", 0], "sigmas": ["sig", 0],
            "latent_image": ["empty", 0]}}
    prompt["both"] = {"class_type": "LatentBatch", "inputs": {"samples1": ["s7", 0], "samples2": ["s8", 0]}}
    outcome = engine.run(keep(prompt, ("sweep", 0), ("both", 0)))
    assert outcome.status == "success", outcome.failure
    swept, graph = engine.kept
    assert swept["samples"].shape[0] == 2 and torch.equal(swept["samples"], graph["samples"])


def test_a_packs_own_sampler_function_runs_in_sampler_custom(engine):
    """comfy.samplers.KSAMPLER(fn): a k-diffusion-style euler written by the pack gives the built-in euler's
    latent, with a progress event per step."""
    common = {"model": ["ckpt", 0], "add_noise": True, "noise_seed": 3, "cfg": 2.0, "positive": ["pos", 0],
              "negative": ["neg", 0], "sigmas": ["sig", 0], "latent_image": ["empty", 0]}
    prompt = {**LOADER,
              "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a cat"}},
              "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": ""}},
              "sig": {"class_type": "BasicScheduler", "inputs": {"model": ["ckpt", 0], "scheduler": "normal",
                                                                 "steps": 3, "denoise": 1.0}},
              "euler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
              "own": {"class_type": "KJ_OwnSampler", "inputs": {}},
              "a": {"class_type": "SamplerCustom", "inputs": {**common, "sampler": ["euler", 0]}},
              "b": {"class_type": "SamplerCustom", "inputs": {**common, "sampler": ["own", 0]}}}
    events = []
    outcome = engine.run(keep(prompt, ("a", 0), ("b", 0)), listeners=[events.append])
    assert outcome.status == "success", outcome.failure
    builtin, own = engine.kept
    assert torch.allclose(own["samples"], builtin["samples"], atol=1e-6)
    assert [e.value for e in events if isinstance(e, Progress) and e.node_id == "b"] == [1, 2, 3]


def test_utility_surface_resizing_conditioning_and_sampler_lists(engine):
    object_info = engine.registry.object_info("ES_SamplerSelectHelper")["ES_SamplerSelectHelper"]
    from nodes.sd.sampler_nodes import SAMPLER_NAMES, SCHEDULER_NAMES

    assert object_info["input"]["required"]["sampler_name"][0] == SAMPLER_NAMES
    assert object_info["input"]["required"]["scheduler"] == [SCHEDULER_NAMES, {"default": "karras"}]
    methods = engine.registry.object_info("RG_SizedLatent")["RG_SizedLatent"]["input"]["required"]["method"][0]
    assert methods == engine.registry.object_info("ImageScale")["ImageScale"]["input"]["required"]["upscale_method"][0]
    prompt = {**LOADER,
              "img": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 2, "batch_size": 1,
                                                             "color": 0xFF0000}},
              "rs": {"class_type": "ES_ImageResize", "inputs": {"image": ["img", 0], "width": 8, "height": 6}},
              "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a cat"}},
              "st": {"class_type": "ES_ConditioningStrength", "inputs": {"conditioning": ["pos", 0], "strength": 0.5}},
              "sel": {"class_type": "ES_SamplerSelectHelper", "inputs": {"sampler_name": "euler",
                                                                         "scheduler": "karras"}},
              "rg": {"class_type": "RG_SizedLatent", "inputs": {"width": 32, "height": 48, "method": "bilinear",
                                                                "scheduler": "simple"}},
              "kj": {"class_type": "KJ_ImageInfo", "inputs": {"image": ["rs", 0]}},
              "was": {"class_type": "WAS_CheckpointKeys", "inputs": {"ckpt_name": "tiny.safetensors"}}}
    outcome = engine.run(keep(prompt, ("rs", 0), ("rs", 1), ("st", 0), ("pos", 0), ("sel", 0), ("sel", 1),
                              ("rg", 0), ("rg", 1), ("kj", 0), ("kj", 1), ("was", 0), ("was", 1)))
    assert outcome.status == "success", outcome.failure
    (resized, device, strong, plain, sampler, names, latent, how, width, height, n_keys, device_name) = engine.kept
    assert resized.shape == (1, 6, 8, 3) and torch.allclose(resized[..., 0], torch.ones(1, 6, 8))
    assert device == "cpu:1" and (width, height) == (8, 6)
    assert [opts for _, opts in strong] == [{**opts, "strength": 0.5} for _, opts in plain]
    assert all(a is b for (a, _), (b, _) in zip(strong, plain, strict=True))  # the tensors are shared, not copied
    assert sampler.name == "euler" and names == "euler/karras"
    assert latent["samples"].shape == (1, 4, 6, 4) and how == "bilinear/simple"
    from safetensors import safe_open

    with safe_open(str(engine.path("checkpoints", "tiny.safetensors")), framework="pt") as f:
        assert n_keys == len(list(f.keys()))
    assert device_name == "cpu:16384"


def test_v3_pack_progress_messages_and_interrupt(engine):
    sent = []

    class Hooks:
        def send(self, event, data, sid=None):
            sent.append((event, data))

        def client_id(self):
            return None

        def prompt_id(self):
            return "test"

    engine.plugins.server = Hooks()
    events = []
    outcome = engine.run(keep({"c": {"class_type": "KJ_CountSteps", "inputs": {"steps": 3}}}, ("c", 0)),
                         listeners=[events.append])
    assert outcome.status == "success", outcome.failure
    assert [e.value for e in events if isinstance(e, Progress) and e.node_id == "c"] == [1, 2, 3]
    assert ("kj_style.done", {"node": "c", "steps": 3}) in sent
    assert engine.kept == ["cpu:torch.float32"]
    stop = InterruptToken()
    stop.set("interrupted")
    stopped = engine.run({"c": {"class_type": "KJ_CountSteps", "inputs": {"steps": 4}}}, interrupt=stop)
    assert stopped.status == "interrupted" and len(sent) == 1  # stopped before it could send again


def test_internals_we_do_not_have_fail_the_pack_with_the_missing_name(tmp_path):
    from graph import NodeRegistry

    plugins = tmp_path / "custom_nodes"
    for name, body in {"needs_sd": "import comfy.sd\nNODE_CLASS_MAPPINGS = {}\n",
                       "needs_attr": "from comfy.model_management import get_mmap_mem_threshold_gb\n"
                                     "NODE_CLASS_MAPPINGS = {}\n",
                       "needs_extras": "from comfy_extras.nodes_lt import LTXVAddGuide\nNODE_CLASS_MAPPINGS = {}\n",
                       "needs_node": "from comfy_extras.nodes_model_advanced import ModelSamplingFlux\n"
                                     "NODE_CLASS_MAPPINGS = {}\n",
                       }.items():
        (plugins / name).mkdir(parents=True)
        (plugins / name / "__init__.py").write_text(textwrap.dedent(body))
    manager = PluginManager(NodeRegistry(), [plugins])
    manager.load_all()
    assert "No module named 'comfy.sd'" in manager.reports["needs_sd"].error
    assert "get_mmap_mem_threshold_gb" in manager.reports["needs_attr"].error
    assert "No module named 'comfy_extras.nodes_lt'" in manager.reports["needs_extras"].error
    assert "No module named 'comfy_extras.nodes_model_advanced'" in manager.reports["needs_node"].error
    assert all(manager.reports[n].status == "failed" for n in ("needs_sd", "needs_attr", "needs_extras",
                                                                 "needs_node"))


def test_a_node_reaching_for_a_missing_attribute_is_reported_and_its_pack_loads(tmp_path):
    from graph import NodeRegistry

    pack = tmp_path / "custom_nodes" / "half"
    pack.mkdir(parents=True)
    (pack / "__init__.py").write_text(textwrap.dedent('''
        import comfy.utils
        import nodes

        class Fine:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {"size": ("INT", {"max": nodes.MAX_RESOLUTION})}}
            RETURN_TYPES = ("INT",)
            FUNCTION = "go"
            def go(self, size):
                return (size,)

        class Reaches:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {"mode": (comfy.utils.SOME_INTERNAL_LIST,)}}
            RETURN_TYPES = ("INT",)
            FUNCTION = "go"

        NODE_CLASS_MAPPINGS = {"HalfFine": Fine, "HalfReaches": Reaches}
    '''))
    manager = PluginManager(NodeRegistry(), [pack.parent])
    manager.load_all()
    report = manager.reports["half"]
    assert report.status == "loaded" and report.nodes == ["HalfFine"]
    assert "module 'comfy.utils' has no attribute 'SOME_INTERNAL_LIST'" in report.node_errors["HalfReaches"]


def test_nodes_mask_composite_pastes_by_the_formula():
    from compat.comfy_extras.nodes_mask import composite

    destination = torch.zeros(1, 4, 8, 8)
    source = torch.ones(1, 4, 2, 3)
    mask = torch.full((1, 2, 3), 0.25)
    out = composite(destination, source, 8, 16, mask)  # pixels on a latent: (x, y) = (1, 2) latent cells
    expected = destination.clone()
    expected[:, :, 2:4, 1:4] = 0.25 * 1 + 0.75 * 0  # source * mask + destination * (1 - mask)
    assert torch.equal(out, expected) and float(destination.abs().sum()) == 0.0  # the input is not modified


def test_execution_blocker_packs_load_and_a_blocking_output_fails_clearly(tmp_path):
    from graph import Executor, NodeRegistry, RecentRunsCache
    from tests.conftest import run_prompt
    from tests.support import testpack

    pack = tmp_path / "custom_nodes" / "gate"
    pack.mkdir(parents=True)
    (pack / "__init__.py").write_text(textwrap.dedent('''
        import execution  # imported (and unused) at load time, as some packs do
        from comfy_execution.graph import ExecutionBlocker

        class Gate:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {"value": ("INT", {"default": 1}), "open": ("BOOLEAN", {"default": True})}}
            RETURN_TYPES = ("INT",)
            FUNCTION = "go"
            def go(self, value, open):
                return (value if open else ExecutionBlocker("gate closed"),)

        NODE_CLASS_MAPPINGS = {"Gate": Gate}
    '''))
    registry = NodeRegistry()
    registry.register_module(testpack)
    manager = PluginManager(registry, [pack.parent])
    manager.load_all()
    assert manager.reports["gate"].status == "loaded", manager.reports["gate"].error
    ex = Executor(registry, cache=RecentRunsCache(1))

    def run(open_: bool):
        return run_prompt(ex, {"g": {"class_type": "Gate", "inputs": {"value": 5, "open": open_}},
                               "o": {"class_type": "Show", "inputs": {"value": ["g", 0]}}})

    assert run(True).outputs["o"] == {"text": ["5"]}
    closed = run(False)
    assert closed.status == "error" and closed.failure.node_id == "g"
    assert "ExecutionBlocker (gate closed)" in closed.failure.exception_message
    import sys

    with pytest.raises(AttributeError, match="ComfyUI's executor is not provided"):
        sys.modules["gate"].execution.PromptExecutor  # noqa: B018 - the attribute access is the test


def test_odd_declarations_from_real_packs_never_stop_the_load(tmp_path):
    """A hidden kind that is not text (seen in a popular pack) is passed as None; a declaration the adapter
    cannot read fails that node only."""
    from graph import NodeRegistry

    pack = tmp_path / "custom_nodes" / "odd"
    pack.mkdir(parents=True)
    (pack / "__init__.py").write_text(textwrap.dedent('''
        class OddHidden:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {"x": ("INT", {})}, "hidden": {"weird": [["A", "B"]], "uid": "UNIQUE_ID"}}
            RETURN_TYPES = ("INT",)
            FUNCTION = "go"
            def go(self, x, weird="unset", uid=None):
                return (x,)

        class Unreadable:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {}}
            RETURN_TYPES = ("INT",)
            OUTPUT_IS_LIST = 5
            FUNCTION = "go"
            def go(self):
                return (1,)

        NODE_CLASS_MAPPINGS = {"OddHidden": OddHidden, "Unreadable": Unreadable}
    '''))
    registry = NodeRegistry()
    manager = PluginManager(registry, [pack.parent])
    manager.load_all()
    report = manager.reports["odd"]
    assert report.status == "loaded" and report.nodes == ["OddHidden"]
    assert report.node_errors["Unreadable"].startswith("cannot be adapted: TypeError")
    assert registry.object_info("OddHidden")["OddHidden"]["input"]["hidden"] == {"uid": "UNIQUE_ID"}


def test_modules_a_pack_puts_on_sys_path_see_the_shim(tmp_path, monkeypatch):
    """Impact-style packs add their own subfolder to sys.path and import it under another name."""
    import sys

    from graph import NodeRegistry

    monkeypatch.setattr(sys, "path", list(sys.path))
    pack = tmp_path / "custom_nodes" / "pathy"
    (pack / "modules" / "pathy_core_lib").mkdir(parents=True)
    (pack / "__init__.py").write_text(textwrap.dedent('''
        import os
        import sys
        sys.path.append(os.path.join(os.path.dirname(__file__), "modules"))
        from pathy_core_lib import where
        NODE_CLASS_MAPPINGS = {}
        WEB_DIRECTORY = "modules"
    '''))
    (pack / "modules" / "pathy_core_lib" / "__init__.py").write_text(textwrap.dedent('''
        import importlib
        import folder_paths
        def where():
            return folder_paths.__name__, importlib.import_module("comfy.utils").__name__
    '''))
    manager = PluginManager(NodeRegistry(), [pack.parent])
    manager.load_all()
    try:
        assert manager.reports["pathy"].status == "loaded", manager.reports["pathy"].error
        assert sys.modules["pathy_core_lib"].where() == ("compat.folder_paths", "compat.comfy.utils")
    finally:
        sys.modules.pop("pathy_core_lib", None)
