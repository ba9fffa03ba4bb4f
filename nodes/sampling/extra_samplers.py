"""More sampling methods in the sigma formulation, each a published algorithm written from its math.

- dpmpp_2s_ancestral: DPM-Solver++(2S) (Lu et al. 2022), one midpoint in log-sigma per step, then
  ancestral noise; eta = 0 is the deterministic solver.
- dpmpp_3m_sde: DPM-Solver++(3M) with the SDE's exponential decay and fresh Brownian noise; eta = 0
  is diffusers' DPMSolverMultistepScheduler(order 3, "dpmsolver++") on the same sigmas.
- ipndm: improved PNDM (Zhang & Chen 2023): Adams-Bashforth (order <= 4) on dx/dsigma with the
  fixed, equal-step coefficients; ipndm_v: the same with variable-step coefficients.
- deis: tAB-DEIS (Zhang & Chen 2023) in the variance-exploding parameterisation, where the
  exponential integrator's linear part vanishes: Adams-Bashforth of order <= 3 whose coefficients
  integrate the Lagrange polynomial through past derivatives over each step.
- ddpm: ancestral sampling with the DDPM posterior q(x_{t-1} | x_t, x0) (Ho et al. 2020).
- euler_cfg_pp / euler_ancestral_cfg_pp: CFG++ (Chung et al. 2024): step from the guided x0
  estimate along the UNCONDITIONAL noise estimate, which the guider exposes as `last_uncond`.
"""

from __future__ import annotations

import torch

from .steps import Denoiser, Stepper, adams_bashforth, ancestral_step, neg_log_sigma, to_d


def _uncond(model: Denoiser, denoised: torch.Tensor) -> torch.Tensor:
    """The unconditional x0 estimate of the model's last call (= denoised without guidance)."""
    uncond = getattr(model, "last_uncond", None)
    return denoised if uncond is None else uncond


@torch.no_grad()
def dpmpp_2s_ancestral(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper, eta: float = 1.0,
                       s_noise: float = 1.0) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        s.step(i, x, denoised)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if float(sigma_down) == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = neg_log_sigma(sigmas[i]), neg_log_sigma(sigma_down)
            h = t_next - t
            t_mid = t + 0.5 * h
            sigma_mid = (-t_mid).exp()
            x_2 = (sigma_mid / sigmas[i]) * x - (-0.5 * h).expm1() * denoised
            denoised_2 = model(x_2, sigma_mid)
            x = (sigma_down / sigmas[i]) * x - (-h).expm1() * denoised_2
        if float(sigmas[i + 1]) > 0:
            x = x + s.noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def dpmpp_3m_sde(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper, eta: float = 1.0,
                 s_noise: float = 1.0) -> torch.Tensor:
    history: list[torch.Tensor] = []  # previous x0 estimates, newest first
    steps_back: list[torch.Tensor] = []  # previous step sizes in log-sigma, newest first
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        s.step(i, x, denoised)
        if float(sigmas[i + 1]) == 0:
            x = denoised
            break
        h = neg_log_sigma(sigmas[i + 1]) - neg_log_sigma(sigmas[i])
        h_eta = h * (eta + 1)
        x = (-h_eta).exp() * x - (-h_eta).expm1() * denoised
        phi_2 = (-h_eta).expm1() / h_eta + 1
        if len(history) >= 2:
            r0, r1 = steps_back[0] / h, steps_back[1] / h
            d1_0 = (denoised - history[0]) / r0
            d1_1 = (history[0] - history[1]) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_3 = phi_2 / h_eta - 0.5
            x = x + phi_2 * d1 - phi_3 * d2
        elif history:
            x = x + phi_2 * (denoised - history[0]) / (steps_back[0] / h)
        if eta:
            x = x + s.noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        history = [denoised, *history[:1]]
        steps_back = [h, *steps_back[:1]]
    return x


_AB_FIXED = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


@torch.no_grad()
def ipndm(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper, max_order: int = 4) -> torch.Tensor:
    ds: list[torch.Tensor] = []  # derivatives, newest first
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        s.step(i, x, denoised)
        ds = [to_d(x, sigmas[i], denoised), *ds[: max_order - 1]]
        coeffs = _AB_FIXED[min(len(ds), max_order)]
        x = x + (sigmas[i + 1] - sigmas[i]) * sum(c * d for c, d in zip(coeffs, ds, strict=False))
    return x


def ipndm_v(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper) -> torch.Tensor:
    return adams_bashforth(model, x, sigmas, s, max_order=4)


def deis(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper, max_order: int = 3) -> torch.Tensor:
    return adams_bashforth(model, x, sigmas, s, max_order=max_order)


@torch.no_grad()
def ddpm(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper) -> torch.Tensor:
    """Each step samples the DDPM posterior in variance-preserving space (x_vp = x / sqrt(1 + sigma^2))."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma)
        s.step(i, x, denoised)
        abar = 1 / (sigma**2 + 1)
        abar_next = 1 / (sigma_next**2 + 1)
        alpha = abar / abar_next
        eps = (x - denoised) / sigma
        x_vp = x * abar.sqrt()
        mean = (x_vp - (1 - alpha) / (1 - abar).sqrt() * eps) / alpha.sqrt()
        if float(sigma_next) > 0:
            std = ((1 - alpha) * (1 - abar_next) / (1 - abar)).sqrt()
            mean = mean + std * s.noise(sigma, sigma_next)
        x = mean / abar_next.sqrt()
    return x


@torch.no_grad()
def euler_cfg_pp(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        uncond = _uncond(model, denoised)
        s.step(i, x, denoised)
        x = denoised + to_d(x, sigmas[i], uncond) * sigmas[i + 1]
    return x


@torch.no_grad()
def euler_ancestral_cfg_pp(model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, s: Stepper, eta: float = 1.0,
                           s_noise: float = 1.0) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        uncond = _uncond(model, denoised)
        s.step(i, x, denoised)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        x = denoised + to_d(x, sigmas[i], uncond) * sigma_down
        if float(sigmas[i + 1]) > 0:
            x = x + s.noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


EXTRA_SAMPLERS = {
    "euler_cfg_pp": euler_cfg_pp,
    "euler_ancestral_cfg_pp": euler_ancestral_cfg_pp,
    "dpmpp_2s_ancestral": dpmpp_2s_ancestral,
    "dpmpp_3m_sde": dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": dpmpp_3m_sde,
    "ddpm": ddpm,
    "ipndm": ipndm,
    "ipndm_v": ipndm_v,
    "deis": deis,
}
EXTRA_BROWNIAN = frozenset({"dpmpp_3m_sde", "dpmpp_3m_sde_gpu"})

__all__ = ["EXTRA_BROWNIAN", "EXTRA_SAMPLERS"]
