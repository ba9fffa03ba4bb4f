"""Sampling methods in the sigma (Karras et al.) formulation: `denoise(x, sigma) -> x0 estimate`.

Each sampler takes the denoiser, the starting latent `x` (already noised to `sigmas[0]`), the sigma
schedule and a `Stepper` that reports progress (and so honours interrupts) and draws noise. The
methods are the standard published ones (Euler, Heun, DPM-Solver(++), linear multistep, LCM, DDIM);
tests check them against diffusers' schedulers where those compute the same thing.
"""

from __future__ import annotations

import torch

from .extra_samplers import EXTRA_BROWNIAN, EXTRA_SAMPLERS
from .steps import Denoiser, SamplerFn, Stepper, adams_bashforth, ancestral_step, neg_log_sigma, to_d


@torch.no_grad()
def euler_ancestral(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper,
                    eta: float = 1.0) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        s.step(i, x, denoised)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        if eta and float(sigmas[i + 1]) > 0:
            x = x + s.noise(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def euler(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper) -> torch.Tensor:
    """Euler is the ancestral method without noise: each step goes all the way down to sigma_next."""
    return euler_ancestral(model, x, sigmas, s, eta=0.0)


@torch.no_grad()
def heun(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        s.step(i, x, denoised)
        d = to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if float(sigmas[i + 1]) == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1]))
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def dpm_2_ancestral(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper,
                    eta: float = 1.0) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        s.step(i, x, denoised)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        d = to_d(x, sigmas[i], denoised)
        if float(sigma_down) == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid))
            x = x + d_2 * (sigma_down - sigmas[i])
            if eta:
                x = x + s.noise(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def dpm_2(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper) -> torch.Tensor:
    """DPM-Solver-2 (midpoint in log-sigma) is its ancestral form without noise."""
    return dpm_2_ancestral(model, x, sigmas, s, eta=0.0)


def lms(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper, order: int = 4) -> torch.Tensor:
    return adams_bashforth(model, x, sigmas, s, max_order=order)


@torch.no_grad()
def dpmpp_2m(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper) -> torch.Tensor:
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        s.step(i, x, denoised)
        if float(sigmas[i + 1]) == 0:
            x = denoised
        else:
            t, t_next = neg_log_sigma(sigmas[i]), neg_log_sigma(sigmas[i + 1])
            h = t_next - t
            if old_denoised is None:
                denoised_d = denoised
            else:
                r = (t - neg_log_sigma(sigmas[i - 1])) / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def dpmpp_2m_sde(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper, eta: float = 1.0,
                 s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver++(2M) SDE, midpoint variant."""
    old_denoised = None
    h_last = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        s.step(i, x, denoised)
        if float(sigmas[i + 1]) == 0:
            x = denoised
        else:
            t, t_next = neg_log_sigma(sigmas[i]), neg_log_sigma(sigmas[i + 1])
            h = t_next - t
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta:
                x = x + s.noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() * s_noise
            h_last = h
        old_denoised = denoised
    return x


@torch.no_grad()
def dpmpp_sde(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper, eta: float = 1.0,
              s_noise: float = 1.0, r: float = 0.5) -> torch.Tensor:
    """DPM-Solver++ (stochastic, second order with an intermediate evaluation at ratio r)."""
    def sigma_fn(t: torch.Tensor) -> torch.Tensor:
        return t.neg().exp()

    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        s.step(i, x, denoised)
        if float(sigmas[i + 1]) == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = neg_log_sigma(sigmas[i]), neg_log_sigma(sigmas[i + 1])
        h = t_next - t
        s_mid = t + h * r
        fac = 1 / (2 * r)
        sd, su = ancestral_step(sigma_fn(t), sigma_fn(s_mid), eta)
        s_ = neg_log_sigma(sd)
        x_2 = (sigma_fn(s_) / sigma_fn(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + s.noise(sigma_fn(t), sigma_fn(s_mid)) * s_noise * su
        denoised_2 = model(x_2, sigma_fn(s_mid))
        sd, su = ancestral_step(sigma_fn(t), sigma_fn(t_next), eta)
        t_next_ = neg_log_sigma(sd)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (sigma_fn(t_next_) / sigma_fn(t)) * x - (t - t_next_).expm1() * denoised_d
        x = x + s.noise(sigma_fn(t), sigma_fn(t_next)) * s_noise * su
    return x


@torch.no_grad()
def lcm(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper) -> torch.Tensor:
    """Latent consistency sampling: jump to the x0 estimate, re-noise to the next level."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        s.step(i, x, denoised)
        x = denoised
        if float(sigmas[i + 1]) > 0:
            x = x + s.noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
    return x


@torch.no_grad()
def uni_pc(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper, variant: str = "bh1") -> torch.Tensor:
    """UniPC (order 3, data prediction) through diffusers' UniPCMultistepScheduler on our sigmas.

    The scheduler works in variance-preserving space: x_vp = x / sqrt(1 + sigma^2) with
    alpha = 1 / sqrt(1 + sigma^2), which is the same diffusion written differently.
    """
    from diffusers import UniPCMultistepScheduler

    steps = len(sigmas) - 1
    sched = UniPCMultistepScheduler(solver_order=3, solver_type=variant, predict_x0=True, lower_order_final=True,
                                    prediction_type="epsilon", final_sigmas_type="zero")
    sched.set_timesteps(steps)
    sched.sigmas = sigmas.detach().float().cpu()
    sched.timesteps = torch.arange(steps, 0, -1)
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        s.step(i, x, denoised)
        if float(sigma_next) == 0:
            # The last (first-order) step to sigma 0 lands exactly on the data prediction; computing it
            # through the scheduler's bh1 formula gives 0 * inf.
            x = denoised
            break
        eps = (x - denoised) / sigma
        scale = (1 + sigma**2) ** 0.5
        x_vp = sched.step(eps, sched.timesteps[i], x / scale).prev_sample
        x = x_vp * (1 + sigma_next**2) ** 0.5
    return x


def uni_pc_bh2(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper) -> torch.Tensor:
    return uni_pc(model, x, sigmas, s, variant="bh2")


# DDIM (eta = 0) takes exactly Euler's step in this formulation: x_next = x0 + sigma_next * eps.
_BASE: dict[str, SamplerFn] = {
    "euler": euler,
    "euler_ancestral": euler_ancestral,
    "heun": heun,
    "dpm_2": dpm_2,
    "dpm_2_ancestral": dpm_2_ancestral,
    "lms": lms,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_2m_sde": dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": dpmpp_2m_sde,
    "dpmpp_sde": dpmpp_sde,
    "dpmpp_sde_gpu": dpmpp_sde,
    "ddim": euler,
    "uni_pc": uni_pc,
    "uni_pc_bh2": uni_pc_bh2,
    "lcm": lcm,
}

# In ComfyUI's order (the combo lists them so).
_ORDER = ("euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "dpm_2", "dpm_2_ancestral",
          "lms", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
          "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "ddim", "uni_pc",
          "uni_pc_bh2")
SAMPLERS: dict[str, SamplerFn] = {name: {**_BASE, **EXTRA_SAMPLERS}[name] for name in _ORDER}

# Samplers whose noise comes from a Brownian tree (one consistent path per seed, any step count).
BROWNIAN = frozenset({"dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_sde", "dpmpp_sde_gpu"}) | EXTRA_BROWNIAN


def get_sampler(name: str) -> SamplerFn:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}") from None


__all__ = ["BROWNIAN", "SAMPLERS", "get_sampler"]
