"""ControlNets while sampling, on tiny random nets: fidelity to diffusers, strength, windows, stacking."""

from __future__ import annotations

import pytest
import torch

from nodes.base.model_sampling import ModelSampling
from nodes.models import load_checkpoint
from nodes.models.controlnet import ControlNetHandle, load_controlnet
from nodes.sampling.control import AppliedControl, apply_to_uncond
from nodes.sampling.ksampler import sample
from nodes.sampling.schedules import schedule
from nodes.sampling.unet_additions import UNetCall

from .test_ksampler import FractionalTimesteps, diffusers_reference, embeddings, handle, req
from .tiny_controlnets import tiny_adapter, tiny_controlnet, write_adapter, write_controlnet


@pytest.fixture(scope="module")
def conds(sd1):
    return embeddings(sd1, "a photo of a cat", "blurry")


def hint_image(seed: int = 0, size: int = 64, batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def cn(tmp_path, name="cn.safetensors", seed=0, zero=False) -> ControlNetHandle:
    return load_controlnet(write_controlnet(tmp_path / name, tiny_controlnet(seed=seed, zero=zero)))


def run(sd1, conds, control=None, *, latent=None, model=None, **kw):
    pe, ne = conds
    po, no = ({"control": control} if control else {}), ({"control": control} if control else {})
    latent = latent or {"samples": torch.zeros(1, 4, 8, 8)}
    return sample(model or handle(sd1), [[pe, po]], [[ne, no]], latent, req(**kw))["samples"]


def counting(module: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    module.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def test_a_controlnet_whose_output_is_zero_changes_nothing(sd1, conds, tmp_path):
    zero = AppliedControl(net=cn(tmp_path, zero=True), hint=hint_image())
    assert torch.equal(run(sd1, conds, zero), run(sd1, conds))


def test_a_controlnet_changes_the_result_and_strength_scales_its_residuals(sd1, conds, tmp_path):
    net = cn(tmp_path)
    plain = run(sd1, conds)
    full = run(sd1, conds, AppliedControl(net=net, hint=hint_image()))
    assert float((full - plain).abs().max()) > 1e-3
    link = AppliedControl(net=net, hint=hint_image(), strength=1.0).prepare(handle(sd1), device=torch.device("cpu"),
                                                                             dtype=torch.float32)
    half = AppliedControl(net=net, hint=hint_image(), strength=0.5).prepare(handle(sd1), device=torch.device("cpu"),
                                                                             dtype=torch.float32)
    call = unet_call(conds[0])
    one, other = link.unet_kwargs(call), half.unet_kwargs(call)
    for a, b in zip(one["down_block_additional_residuals"], other["down_block_additional_residuals"], strict=True):
        assert torch.allclose(a * 0.5, b, atol=1e-6)
    assert torch.allclose(one["mid_block_additional_residual"] * 0.5, other["mid_block_additional_residual"])


def unet_call(context: torch.Tensor, sigma: float = 3.0) -> UNetCall:
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    ms = ModelSampling.discrete()
    sig = torch.tensor([sigma])
    return UNetCall(x=x, sigma=sig, timestep=ms.timestep(sig), context=context, added_cond_kwargs=None, batched=1)


def test_stacked_controlnets_add_their_residuals(sd1, conds, tmp_path):
    a, b = cn(tmp_path, "a.safetensors", seed=1), cn(tmp_path, "b.safetensors", seed=2)
    first = AppliedControl(net=a, hint=hint_image(1), strength=0.7)
    second = AppliedControl(net=b, hint=hint_image(2), strength=1.3)
    both = AppliedControl(net=b, hint=hint_image(2), strength=1.3, previous=first)
    cpu, model, call = torch.device("cpu"), handle(sd1), unet_call(conds[0])
    ka, kb = (c.prepare(model, device=cpu, dtype=torch.float32).unet_kwargs(call) for c in (first, second))
    kab = both.prepare(model, device=cpu, dtype=torch.float32).unet_kwargs(call)
    for x, y, s in zip(ka["down_block_additional_residuals"], kb["down_block_additional_residuals"],
                       kab["down_block_additional_residuals"], strict=True):
        assert torch.allclose(x + y, s, atol=1e-6)
    assert torch.allclose(ka["mid_block_additional_residual"] + kb["mid_block_additional_residual"],
                          kab["mid_block_additional_residual"], atol=1e-6)
    stacked = run(sd1, conds, both)
    assert not torch.allclose(stacked, run(sd1, conds, second), atol=1e-4)


def test_outside_start_end_the_net_is_not_run(sd1, conds, tmp_path):
    net = cn(tmp_path)
    calls = counting(net.model)
    steps = 8
    run(sd1, conds, AppliedControl(net=net, hint=hint_image()), steps=steps)
    assert len(calls) == steps  # positive and negative in one batched call per step
    calls.clear()
    ms = ModelSampling.discrete()
    window = AppliedControl(net=net, hint=hint_image(), start_percent=0.25, end_percent=0.6)
    run(sd1, conds, window, steps=steps)
    sigmas = schedule(ms, "normal", steps)[:-1]
    hi, lo = ms.percent_to_sigma(0.25), ms.percent_to_sigma(0.6)
    expected = sum(1 for s in sigmas.tolist() if lo <= s <= hi + 1e-6)
    assert 0 < expected < steps and len(calls) == expected
    calls.clear()
    assert torch.equal(run(sd1, conds, AppliedControl(net=net, hint=hint_image(), start_percent=1.0,
                                                      end_percent=1.0), steps=steps), run(sd1, conds, steps=steps))


def test_matches_diffusers_controlnet_pipeline(sd1, conds, tmp_path):
    from diffusers import StableDiffusionControlNetPipeline

    source = tiny_controlnet(seed=4)
    net = load_controlnet(write_controlnet(tmp_path / "cn.safetensors", source))
    pe, ne = conds
    hint = hint_image(3)
    pipe, ms, sigmas, latents = diffusers_reference(sd1, StableDiffusionControlNetPipeline, controlnet=source)
    theirs = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, image=hint, num_inference_steps=6, guidance_scale=7.5,
                  sigmas=sigmas.tolist(), latents=latents, output_type="latent", height=64, width=64,
                  controlnet_conditioning_scale=0.8).images
    model = handle(sd1, FractionalTimesteps(ms.sigmas, ms.log_sigmas, "epsilon"))
    control = AppliedControl(net=net, hint=hint, strength=0.8)
    ours = run(sd1, conds, control, model=model) * sd1.info.vae_scaling_factor
    without = run(sd1, conds, model=model) * sd1.info.vae_scaling_factor
    scale = float(theirs.abs().max())
    assert float((ours - theirs).abs().max()) < 1e-4 * max(1.0, scale)
    assert float((without - theirs).abs().max()) > 1e-2 * scale  # the control made the difference


def test_the_hint_is_center_cropped_to_the_latent_aspect(sd1, conds, tmp_path):
    net = cn(tmp_path)
    square = hint_image(7)
    wide = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(8))
    wide[..., 32:96] = square  # the centre of the wide hint is the square one
    a = run(sd1, conds, AppliedControl(net=net, hint=square))
    b = run(sd1, conds, AppliedControl(net=net, hint=wide))
    assert torch.equal(a, b)


def test_t2i_adapter_runs_once_per_sampling_and_changes_the_result(sd1, conds, tmp_path):
    adapter = load_controlnet(write_adapter(tmp_path / "t2i.safetensors", tiny_adapter("full")))
    calls = counting(adapter.model)
    out = run(sd1, conds, AppliedControl(net=adapter, hint=hint_image()), steps=5, sampler_name="heun")
    assert len(calls) == 1
    assert float((out - run(sd1, conds, steps=5, sampler_name="heun")).abs().max()) > 1e-3
    calls.clear()
    run(sd1, conds, AppliedControl(net=adapter, hint=hint_image(), start_percent=1.0), steps=5)
    assert calls == []  # never active: never run


def test_adapter_features_are_added_inside_the_down_blocks(sd1, conds, tmp_path):
    adapter = load_controlnet(write_adapter(tmp_path / "t2i.safetensors", tiny_adapter("light"), "diffusers"))
    prepared = AppliedControl(net=adapter, hint=hint_image(), strength=0.5).prepare(
        handle(sd1), device=torch.device("cpu"), dtype=torch.float32)
    kwargs = prepared.unet_kwargs(unet_call(conds[0]))
    with torch.no_grad():
        expected = adapter.model(hint_image())
    got = kwargs["down_intrablock_additional_residuals"]
    assert [tuple(f.shape) for f in got] == [(1, 32, 8, 8), (1, 64, 4, 4), (1, 64, 2, 2)]
    assert all(torch.allclose(g, e * 0.5) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m", "heun", "uni_pc"])
def test_works_with_areas_masks_batches_img2img_and_inpainting(sd1, conds, tmp_path, sampler):
    net = cn(tmp_path)
    pe, ne = conds
    control = AppliedControl(net=net, hint=hint_image(batch=2))
    source = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1
    latent = {"samples": source, "noise_mask": mask}
    positive = [[pe, {"control": control}], [pe * 0.5, {"control": control, "area": (4, 4, 0, 0), "strength": 0.8}]]
    negative = [[ne, {"control": control}]]
    out = sample(handle(sd1), positive, negative, latent, req(sampler_name=sampler, denoise=0.7, steps=4))["samples"]
    plain = sample(handle(sd1), [[pe, {}], [pe * 0.5, {"area": (4, 4, 0, 0), "strength": 0.8}]], [[ne, {}]], latent,
                   req(sampler_name=sampler, denoise=0.7, steps=4))["samples"]
    assert out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()
    assert torch.allclose(out[..., :3], source[..., :3], atol=1e-5)  # kept outside the noise mask
    assert float((out - plain).abs().max()) > 1e-3


def test_the_old_apply_node_controls_the_negative_side_too():
    control = object()
    positive = [["p", {"control": control, "control_apply_to_uncond": True}]]
    negative = [["n", {}], ["n2", {"area": (1, 1, 0, 0)}]]
    out = apply_to_uncond(positive, negative)
    assert out[0][1]["control"] is control and "control" not in out[1][1] and "control" not in negative[0][1]
    advanced = [["p", {"control": control, "control_apply_to_uncond": False}]]
    assert apply_to_uncond(advanced, negative) == negative


def test_sdxl_controlnet_gets_the_sdxl_embeddings(tiny_file, tmp_path):
    from diffusers import ControlNetModel

    xl = load_checkpoint(tiny_file("sdxl"))
    source = ControlNetModel.from_unet(xl.unet, conditioning_embedding_out_channels=(8, 8, 16, 16)).eval()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    net = load_controlnet(write_controlnet(tmp_path / "xl.safetensors", source, "diffusers"))
    width = xl.unet.config.cross_attention_dim
    pooled = xl.unet.config.projection_class_embeddings_input_dim - 6 * 256
    gen = torch.Generator().manual_seed(1)
    cond, opts = torch.randn(1, 77, width, generator=gen), {"pooled_output": torch.randn(1, pooled, generator=gen)}
    control = AppliedControl(net=net, hint=hint_image())
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    with_cn = sample(handle(xl), [[cond, {**opts, "control": control}]], [[cond * 0, {**opts, "control": control}]],
                     latent, req(steps=3))["samples"]
    plain = sample(handle(xl), [[cond, opts]], [[cond * 0, opts]], latent, req(steps=3))["samples"]
    assert torch.isfinite(with_cn).all() and float((with_cn - plain).abs().max()) > 1e-3


def test_inpainting_model_with_a_controlnet_gets_the_latent_without_its_extra_channels(tiny_file, conds, tmp_path):
    inpaint = load_checkpoint(tiny_file("sd1_inpaint"))
    control = AppliedControl(net=cn(tmp_path), hint=hint_image())
    source = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1
    latent = {"samples": source, "noise_mask": mask}
    out = run(inpaint, conds, control, latent=latent, steps=3)
    assert torch.allclose(out[..., :3], source[..., :3], atol=1e-5)
    assert float((out - run(inpaint, conds, latent=latent, steps=3)).abs().max()) > 1e-3
