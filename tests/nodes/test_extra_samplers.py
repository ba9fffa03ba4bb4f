"""The added sampler names against independent references.

References: the exact denoiser of Gaussian data and its exact ODE solution (see test_samplers.py),
diffusers' DPMSolverMultistepScheduler (order 3) and DDPMScheduler on the same sigmas and noise,
the equal-step special case of variable-step Adams-Bashforth, and the data distribution for the
stochastic methods.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from nodes.base.model_sampling import ModelSampling
from nodes.sampling.noise import BrownianNoise, GaussianNoise, initial_noise
from nodes.sampling.samplers import BROWNIAN, SAMPLERS
from nodes.sampling.schedules import schedule
from nodes.sampling.steps import Stepper

from .test_samplers import MU, S, exact_denoiser

MS = ModelSampling.discrete()
ADDED = ("euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm",
         "ipndm", "ipndm_v", "deis")


def run(name: str, x: torch.Tensor, sigmas: torch.Tensor, *, model=exact_denoiser, seed: int = 0,
        **options) -> torch.Tensor:
    sigmas = sigmas.double()
    positive = sigmas[sigmas > 0]
    noise = (BrownianNoise(x, float(positive.min()), float(sigmas[0]), seed) if name in BROWNIAN
             else GaussianNoise(x, seed))
    stepper = Stepper(callback=lambda i, x, d: None, noise=noise, steps=len(sigmas) - 1)
    return SAMPLERS[name](model, x.clone(), sigmas, stepper, **options)


def ode_error(name: str, steps: int, **options) -> float:
    sigmas = schedule(MS, "karras", steps)[:-1]  # stop at sigma_min, where the exact solution is known
    x0 = torch.linspace(-3, 3, 64, dtype=torch.float64).reshape(4, 4, 2, 2) * float(sigmas[0])
    exact = MU + (x0 - MU) * math.sqrt(S**2 + float(sigmas[-1]) ** 2) / math.sqrt(S**2 + float(sigmas[0]) ** 2)
    return float((run(name, x0, sigmas, **options) - exact).abs().max())


def test_every_added_name_is_registered_and_valid_for_the_sampler_combo():
    from nodes.sd.sampler_nodes import SAMPLER_NAMES

    assert set(ADDED) <= set(SAMPLERS) and set(ADDED) <= set(SAMPLER_NAMES)
    assert "heunpp2" not in SAMPLERS  # no independent definition to test it against: not offered


@pytest.mark.parametrize("name, options, tolerance", [
    ("dpmpp_2s_ancestral", {"eta": 0.0}, 0.01), ("dpmpp_3m_sde", {"eta": 0.0}, 0.01), ("ipndm", {}, 0.01),
    ("ipndm_v", {}, 0.01), ("deis", {}, 0.01), ("euler_cfg_pp", {}, 0.1)])
def test_deterministic_parts_solve_the_ode(name, options, tolerance):
    assert ode_error(name, 60, **options) < tolerance


def test_higher_orders_beat_euler_at_few_steps():
    euler = ode_error("euler", 12)
    for name, options in (("dpmpp_2s_ancestral", {"eta": 0.0}), ("dpmpp_3m_sde", {"eta": 0.0}), ("ipndm_v", {}),
                          ("deis", {})):
        assert ode_error(name, 12, **options) < euler / 3, name


def test_variable_step_adams_bashforth_converges_at_its_order():
    ratios = {name: ode_error(name, 16) / ode_error(name, 32) for name in ("deis", "ipndm_v")}
    assert ratios["deis"] > 4 and ratios["ipndm_v"] > 4  # at least second order in practice (h^3, h^4 nominal)


def test_ipndm_fixed_coefficients_are_the_equal_step_case_of_ipndm_v():
    sigmas = torch.linspace(12.0, 0.5, 9, dtype=torch.float64)  # equal steps in sigma
    x = torch.linspace(-20, 20, 16, dtype=torch.float64).reshape(1, 4, 2, 2)
    assert torch.allclose(run("ipndm", x, sigmas), run("ipndm_v", x, sigmas), atol=1e-10)


def test_euler_cfg_pp_without_guidance_is_euler():
    sigmas = schedule(MS, "karras", 8)
    x = torch.linspace(-10, 10, 16, dtype=torch.float64).reshape(1, 4, 2, 2)
    assert torch.allclose(run("euler_cfg_pp", x, sigmas), run("euler", x, sigmas), atol=1e-10)


class GuidedGaussian:
    """CFG over two exact denoisers (cond mean MU, uncond mean -MU), exposing last_uncond like our Guider."""

    def __init__(self, cfg: float) -> None:
        self.cfg = cfg
        self.last_uncond: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        cond = MU + S**2 / (S**2 + sigma**2) * (x - MU)
        uncond = -MU + S**2 / (S**2 + sigma**2) * (x + MU)
        self.last_uncond = uncond
        return uncond + (cond - uncond) * self.cfg


def test_cfg_pp_steps_along_the_unconditional_noise():
    """CFG++ in its DDIM form: x_next = sqrt(abar') x0_guided + sqrt(1 - abar') eps_uncond (VP space)."""
    sigmas = torch.tensor([3.0, 1.2], dtype=torch.float64)
    x = torch.linspace(-6, 6, 16, dtype=torch.float64).reshape(1, 4, 2, 2)
    model = GuidedGaussian(cfg=2.5)
    guided = model(x, sigmas[0])
    eps_uncond = (x - model.last_uncond) / sigmas[0]
    abar_next = 1 / (1 + sigmas[1] ** 2)
    x_vp_next = abar_next.sqrt() * guided + (1 - abar_next).sqrt() * eps_uncond
    assert torch.allclose(run("euler_cfg_pp", x, sigmas, model=GuidedGaussian(2.5)), x_vp_next / abar_next.sqrt())
    ancestral = run("euler_ancestral_cfg_pp", x, sigmas, model=GuidedGaussian(2.5), eta=0.0)
    assert torch.allclose(ancestral, x_vp_next / abar_next.sqrt())


def test_dpmpp_3m_without_noise_matches_diffusers_step_for_step():
    from diffusers import DPMSolverMultistepScheduler

    steps = 10
    sigmas = schedule(MS, "karras", steps)
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * float(sigmas[0])
    ours = run("dpmpp_3m_sde", x, sigmas, eta=0.0)
    sched = DPMSolverMultistepScheduler(solver_order=3, algorithm_type="dpmsolver++", lower_order_final=False,
                                        final_sigmas_type="zero", prediction_type="epsilon")
    sched.set_timesteps(steps)
    sched.sigmas = sigmas.double()
    sched.timesteps = torch.arange(steps, 0, -1)
    theirs = x.clone()
    for i in range(steps):
        sigma = sigmas[i].double()
        eps = (theirs - exact_denoiser(theirs, sigma)) / sigma
        x_vp = sched.step(eps, sched.timesteps[i], theirs / (1 + sigma**2) ** 0.5).prev_sample
        theirs = x_vp * (1 + sigmas[i + 1].double() ** 2) ** 0.5
    assert torch.allclose(ours, theirs.double(), atol=2e-4)  # diffusers steps in float32


def test_ddpm_matches_diffusers_posterior_sampling():
    from diffusers import DDPMScheduler

    steps = 8
    sigmas = schedule(MS, "simple", steps)  # exact table values: integer training timesteps
    timesteps = [int(MS.timestep(s)) for s in sigmas[:-1]]
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(4)) * float(sigmas[0])
    ours = run("ddpm", x.double(), sigmas, seed=11)
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          variance_type="fixed_small", prediction_type="epsilon")
    sched.set_timesteps(timesteps=timesteps)
    generator = torch.Generator().manual_seed(11)  # draws in the same order as our GaussianNoise
    sample = x / (1 + sigmas[0] ** 2) ** 0.5
    for i, t in enumerate(sched.timesteps):
        sigma = sigmas[i]
        x_ve = sample * (1 + sigma**2) ** 0.5
        eps = (x_ve - exact_denoiser(x_ve, sigma)) / sigma
        sample = sched.step(eps, t, sample, generator=generator).prev_sample
    assert torch.allclose(ours.float(), sample, atol=2e-4)


@pytest.mark.parametrize("name, steps", [("dpmpp_2s_ancestral", 30), ("dpmpp_3m_sde", 30), ("ddpm", 60),
                                         ("euler_ancestral_cfg_pp", 80), ("ipndm", 20), ("deis", 20)])
def test_stochastic_and_deterministic_end_on_the_data_distribution(name, steps):
    sigmas = schedule(MS, "karras", steps)
    x = initial_noise(torch.zeros(1, 4096, 1, 1), seed=3).double() * float(sigmas[0])
    out = run(name, x, sigmas, seed=5)
    assert abs(float(out.mean()) - MU) < 0.05 and abs(float(out.std()) - S) < 0.05


def test_sde_variants_are_reproducible_per_seed_and_differ_across_seeds():
    sigmas = schedule(MS, "karras", 10)
    x = initial_noise(torch.zeros(1, 4, 8, 8), seed=1).double() * float(sigmas[0])
    a, b, c = (run("dpmpp_3m_sde", x, sigmas, seed=s) for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    partial = functools.partial(run, "dpmpp_2s_ancestral", x, sigmas)
    assert torch.equal(partial(seed=1), partial(seed=1))
