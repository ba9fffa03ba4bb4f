"""Sampling methods against independent references.

Data drawn from N(mu, s^2) has an exact denoiser, D(x, sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu), and
its probability-flow ODE an exact solution, (x - mu) proportional to sqrt(s^2 + sigma^2). Deterministic
samplers must converge to it (higher orders closer); stochastic ones must end with the data's mean
and spread. Euler is also checked step for step against diffusers' EulerDiscreteScheduler.
"""

from __future__ import annotations

import math

import pytest
import torch

from nodes.base.model_sampling import ModelSampling
from nodes.sampling.noise import BrownianNoise, GaussianNoise, initial_noise
from nodes.sampling.samplers import SAMPLERS
from nodes.sampling.schedules import schedule
from nodes.sampling.steps import Stepper

MU, S = 0.7, 0.5
MS = ModelSampling.discrete()


def exact_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return MU + S**2 / (S**2 + sigma**2) * (x - MU)


def run(name: str, x: torch.Tensor, sigmas: torch.Tensor, seed: int = 0, brownian: bool = False) -> torch.Tensor:
    noise = BrownianNoise(x, float(sigmas[-2]), float(sigmas[0]), seed) if brownian else GaussianNoise(x, seed)
    stepper = Stepper(callback=lambda i, x, d: None, noise=noise, steps=len(sigmas) - 1)
    return SAMPLERS[name](exact_denoiser, x.clone(), sigmas.double(), stepper)


def ode_error(name: str, steps: int) -> float:
    sigmas = schedule(MS, "karras", steps)[:-1]  # stop at sigma_min: the ODE solution is known there
    x0 = torch.linspace(-3, 3, 64, dtype=torch.float64).reshape(4, 4, 2, 2) * float(sigmas[0])
    exact = MU + (x0 - MU) * math.sqrt(S**2 + float(sigmas[-1]) ** 2) / math.sqrt(S**2 + float(sigmas[0]) ** 2)
    return float((run(name, x0, sigmas) - exact).abs().max())


@pytest.mark.parametrize("name, tolerance", [("euler", 0.1), ("ddim", 0.1), ("heun", 0.01), ("dpm_2", 0.01),
                                             ("lms", 0.01), ("dpmpp_2m", 0.01), ("uni_pc", 0.01),
                                             ("uni_pc_bh2", 0.01)])
def test_deterministic_samplers_solve_the_ode(name, tolerance):
    assert ode_error(name, 60) < tolerance  # final values span about +-1.5


def test_higher_order_samplers_are_more_accurate():
    euler, heun, lms, dpmpp, unipc = (ode_error(n, 12) for n in ("euler", "heun", "lms", "dpmpp_2m", "uni_pc"))
    assert heun < euler / 3 and lms < euler / 3 and dpmpp < euler / 3 and unipc < euler / 3


@pytest.mark.parametrize("name, steps", [("euler_ancestral", 100), ("dpm_2_ancestral", 30), ("dpmpp_sde", 30),
                                         ("dpmpp_2m_sde", 30), ("uni_pc", 20), ("uni_pc_bh2", 20), ("dpmpp_2m", 20)])
def test_samplers_end_on_the_data_distribution(name, steps):
    """Down to sigma = 0, stochastic or not, the samples must have the data's mean and spread."""
    sigmas = schedule(MS, "karras", steps)
    x = initial_noise(torch.zeros(1, 4096, 1, 1), seed=3).double() * float(sigmas[0])
    out = run(name, x, sigmas, seed=5, brownian="sde" in name)
    assert abs(float(out.mean()) - MU) < 0.05 and abs(float(out.std()) - S) < 0.05


def test_lcm_jumps_to_the_estimate_and_renoises():
    sigmas = torch.tensor([10.0, 2.0, 0.0], dtype=torch.float64)
    x = torch.full((1, 4, 2, 2), 5.0, dtype=torch.float64)
    out = run("lcm", x, sigmas, seed=7)
    first = exact_denoiser(x, sigmas[0]) + GaussianNoise(x, 7)(sigmas[0], sigmas[1]) * 2.0
    assert torch.allclose(out, exact_denoiser(first, sigmas[1]))


def test_euler_matches_diffusers_step_for_step():
    from diffusers import EulerDiscreteScheduler

    sigmas = schedule(MS, "normal", 12)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * float(sigmas[0])
    ours = run("euler", x, sigmas)
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    sched.set_timesteps(sigmas=sigmas.tolist())
    theirs = x.clone().float()
    for t in sched.timesteps:
        sigma = sched.sigmas[sched.step_index or 0]
        eps = (theirs - exact_denoiser(theirs, sigma)) / sigma  # the scheduler wants the noise prediction
        theirs = sched.step(eps, t, theirs).prev_sample
    assert torch.allclose(ours.float(), theirs, atol=1e-4)


def test_initial_noise_follows_the_seed_conventions():
    latent = torch.zeros(3, 4, 8, 8)
    noise = initial_noise(latent, 42)
    torch.manual_seed(42)
    assert torch.equal(noise, torch.randn(3, 4, 8, 8))  # one draw of the whole shape, float32, CPU
    picked = initial_noise(latent[:1], 42, batch_index=[2])
    singles = [torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(42)) for _ in range(1)]
    gen = torch.Generator().manual_seed(42)
    draws = [torch.randn(1, 4, 8, 8, generator=gen) for _ in range(3)]
    assert torch.equal(picked, draws[2]) and torch.equal(singles[0], draws[0])
    assert initial_noise(latent, 2**64 - 1).shape == latent.shape  # the largest seed is accepted


def test_brownian_noise_is_reproducible_and_unit_variance():
    like = torch.zeros(2, 4, 16, 16)
    a = BrownianNoise(like, 0.03, 14.6, seed=9)
    b = BrownianNoise(like, 0.03, 14.6, seed=9)
    s, s_next = torch.tensor(3.0), torch.tensor(2.0)
    n1, n2 = a(s, s_next), b(s, s_next)
    assert torch.equal(n1, n2) and abs(float(n1.std()) - 1) < 0.1
    assert not torch.equal(n1[0], n1[1])  # images of a batch get independent paths
