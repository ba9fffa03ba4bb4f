"""The ControlNet nodes as workflows see them: ComfyUI's specs, the apply semantics, Canny, the examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import main
from nodes.sampling.control import AppliedControl
from nodes.sd.controlnet_nodes import Canny, ControlNetApply, ControlNetApplyAdvanced

from .tiny_controlnets import tiny_adapter, tiny_controlnet, write_adapter, write_controlnet
from .tiny_models import write_tiny_checkpoint

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_object_info_matches_comfyui():
    registry = main.build_registry()
    info = {name: registry.get(name).schema.to_object_info() for name in
            ("ControlNetLoader", "DiffControlNetLoader", "ControlNetApply", "ControlNetApplyAdvanced",
             "SetUnionControlNetType", "Canny")}
    adv = info["ControlNetApplyAdvanced"]
    assert adv["input_order"] == {"required": ["positive", "negative", "control_net", "image", "strength",
                                               "start_percent", "end_percent"], "optional": ["vae"]}
    required = adv["input"]["required"]
    assert required["strength"][1].items() >= {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}.items()
    assert required["end_percent"][1].items() >= {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}.items()
    assert adv["output"] == ["CONDITIONING", "CONDITIONING"] and adv["output_name"] == ["positive", "negative"]
    assert adv["display_name"] == "Apply ControlNet" and adv["category"] == "conditioning/controlnet"
    old = info["ControlNetApply"]
    assert old["input_order"]["required"] == ["conditioning", "control_net", "image", "strength"]
    assert old["display_name"] == "Apply ControlNet (OLD)" and old["deprecated"] is True
    assert info["DiffControlNetLoader"]["input_order"]["required"] == ["model", "control_net_name"]
    assert info["ControlNetLoader"]["output"] == ["CONTROL_NET"] and info["ControlNetLoader"]["category"] == "loaders"
    assert info["SetUnionControlNetType"]["input"]["required"]["type"][0] == [
        "auto", "openpose", "depth", "hed/pidi/scribble/ted", "canny/lineart/anime_lineart/mlsd", "normal",
        "segment", "tile", "repaint"]
    canny = info["Canny"]
    assert canny["category"] == "image/preprocessors" and canny["output"] == ["IMAGE"]
    assert canny["input"]["required"]["low_threshold"][1].items() >= {"default": 0.4, "min": 0.01, "max": 0.99}.items()
    assert canny["input"]["required"]["high_threshold"][1].items() >= {"default": 0.8, "min": 0.01, "max": 0.99}.items()


def test_apply_nodes_chain_share_and_skip_at_strength_zero():
    net, image = object(), torch.rand(1, 16, 16, 3)
    positive = [[torch.zeros(1, 2, 3), {"strength": 0.5}], [torch.ones(1, 2, 3), {}]]
    negative = [[torch.zeros(1, 2, 3), {}]]
    node = ControlNetApplyAdvanced()
    same = node.execute(None, positive=positive, negative=negative, control_net=net, image=image, strength=0.0,
                        start_percent=0.0, end_percent=1.0)
    assert same[0] is positive and same[1] is negative
    pos, neg = node.execute(None, positive=positive, negative=negative, control_net=net, image=image, strength=0.6,
                            start_percent=0.2, end_percent=0.7)
    first = pos[0][1]["control"]
    assert isinstance(first, AppliedControl) and first.previous is None and first.strength == 0.6
    assert pos[1][1]["control"] is first and neg[0][1]["control"] is first  # one control for the whole chain
    assert (first.start_percent, first.end_percent) == (0.2, 0.7) and pos[0][1]["strength"] == 0.5
    assert first.hint.shape == (1, 3, 16, 16) and "control" not in positive[0][1]  # inputs untouched
    again, _ = node.execute(None, positive=pos, negative=neg, control_net=net, image=image, strength=1.0,
                            start_percent=0.0, end_percent=1.0)
    assert again[0][1]["control"].previous is first and again[0][1]["control_apply_to_uncond"] is False
    (old,) = ControlNetApply().execute(None, conditioning=positive, control_net=net, image=image, strength=1.0)
    assert old[0][1]["control_apply_to_uncond"] is True


def test_canny_finds_the_edges_of_a_square():
    image = torch.zeros(1, 48, 48, 3)
    image[:, 12:36, 12:36] = 1.0
    (edges,) = Canny().execute(None, image=image, low_threshold=0.4, high_threshold=0.8)
    assert edges.shape == (1, 48, 48, 3) and set(edges.unique().tolist()) <= {0.0, 1.0}
    ys, xs = edges[0, :, :, 0].nonzero(as_tuple=True)
    boundary = torch.minimum(torch.minimum((ys - 11.5).abs(), (ys - 35.5).abs()),
                             torch.minimum((xs - 11.5).abs(), (xs - 35.5).abs()))
    assert len(ys) > 4 * 20 and float(boundary.max()) <= 1.5  # every edge pixel lies on the square's outline
    for side in (ys < 14, ys > 33, xs < 14, xs > 33):
        assert int(side.sum()) >= 20  # all four sides are found
    (flat,) = Canny().execute(None, image=torch.full((1, 32, 32, 3), 0.7), low_threshold=0.4, high_threshold=0.8)
    assert float(flat.sum()) == 0.0
    with pytest.raises(ValueError, match="low_threshold"):
        Canny().execute(None, image=image, low_threshold=0.9, high_threshold=0.5)


@pytest.mark.parametrize(("example", "files"), [
    ("controlnet_canny", {"control_v11p_sd15_canny.safetensors": "controlnet"}),
    ("t2i_adapter", {"t2iadapter_canny_sd15v2.pth": "adapter"}),
])
def test_example_workflows_run_from_the_command_line(tmp_path, capsys, example, files):
    models, inputs, outputs = tmp_path / "models", tmp_path / "input", tmp_path / "output"
    (models / "checkpoints").mkdir(parents=True)
    (models / "controlnet").mkdir()
    inputs.mkdir()
    write_tiny_checkpoint(models / "checkpoints" / "sumie-demo-random-sd1.safetensors", "sd1")
    for name, kind in files.items():
        if kind == "controlnet":
            write_controlnet(models / "controlnet" / name, tiny_controlnet(seed=5))
        else:
            write_adapter(models / "controlnet" / name, tiny_adapter("full", in_channels=1))
    picture = Image.new("RGB", (96, 64), (20, 20, 20))
    picture.paste((230, 230, 230), (24, 16, 72, 48))
    picture.save(inputs / "example.png")
    prompt = json.loads((EXAMPLES / f"{example}.json").read_text())
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "KSampler")
    latent = next(k for k, v in prompt.items() if v["class_type"] == "EmptyLatentImage")
    args = ["run", str(EXAMPLES / f"{example}.json"), "--models-dir", str(models), "--input-dir", str(inputs),
            "--output-dir", str(outputs), "--temp-dir", str(tmp_path / "temp"), "--user-dir", str(tmp_path / "user"),
            "--set", f"{sampler}.steps=2", "--set", f"{latent}.width=64", "--set", f"{latent}.height=64"]
    assert main.main(args) == 0, capsys.readouterr().err
    saved = [Path(line) for line in capsys.readouterr().out.splitlines() if line.endswith(".png")]
    assert any(p.parent == outputs and p.name.startswith(example) for p in saved)
    assert Image.open(next(p for p in saved if p.parent == outputs)).mode == "RGB"
