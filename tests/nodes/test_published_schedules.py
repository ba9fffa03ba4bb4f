"""AlignYourSteps, GITS, Polyexponential and VP schedulers against the published tables and formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nodes.sd import custom_sampling

AYS_SD1 = [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
           0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582]
AYS_SVD = [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002]
# Rows of the published GITS tables (coefficient, steps): the levels, first to last.
GITS_PUBLISHED = {
    (1.20, 11): [14.61464119, 5.85520077, 2.95596409, 1.84880662, 1.24153244, 0.83188516, 0.59516323, 0.41087446,
                 0.27464288, 0.17026083, 0.09824532, 0.02916753],
    (0.80, 2): [14.61464119, 7.49001646, 0.02916753],
    (1.50, 6): [14.61464119, 1.56271636, 0.72133851, 0.36617002, 0.19894916, 0.09824532, 0.02916753],
    (1.00, 20): [14.61464119, 12.2308979, 9.24142551, 8.30717278, 7.49001646, 6.77309084, 5.85520077, 5.09240818,
                 4.26497746, 3.60512662, 2.95596409, 2.45070267, 1.91321158, 1.51179266, 1.12534678, 0.83188516,
                 0.59516323, 0.38853383, 0.22545385, 0.09824532, 0.02916753],
}


def run(node: type, **inputs) -> torch.Tensor:
    (sigmas,) = node().execute(None, **inputs)
    assert sigmas.dtype == torch.float32 and sigmas.ndim == 1
    return sigmas


def loglinear(levels: list[float], count: int) -> list[float]:
    """The resampling the AYS authors publish: linear interpolation of log(level) on an even grid."""
    logs = [math.log(v) for v in reversed(levels)]
    out = []
    for k in range(count):
        pos = k / (count - 1) * (len(logs) - 1)
        i = min(int(pos), len(logs) - 2)
        frac = pos - i
        out.append(math.exp(logs[i] * (1 - frac) + logs[i + 1] * frac))
    return out[::-1]


def test_align_your_steps_uses_the_published_levels_at_ten_steps():
    sigmas = run(custom_sampling.AlignYourStepsScheduler, model_type="SD1", steps=10, denoise=1.0)
    assert torch.allclose(sigmas, torch.tensor(AYS_SD1[:-1] + [0.0]))
    svd = run(custom_sampling.AlignYourStepsScheduler, model_type="SVD", steps=10, denoise=1.0)
    assert float(svd[0]) == 700.0 and float(svd[-1]) == 0.0


@pytest.mark.parametrize("steps", [4, 17, 30])
def test_align_your_steps_resamples_log_linearly(steps):
    sigmas = run(custom_sampling.AlignYourStepsScheduler, model_type="SD1", steps=steps, denoise=1.0)
    expected = loglinear(AYS_SD1, steps + 1)
    assert len(sigmas) == steps + 1
    assert np.allclose(sigmas[:-1].numpy(), expected[:-1], rtol=1e-6) and float(sigmas[-1]) == 0.0


def test_align_your_steps_denoise_keeps_the_tail_of_the_full_schedule():
    full = run(custom_sampling.AlignYourStepsScheduler, model_type="SDXL", steps=20, denoise=1.0)
    part = run(custom_sampling.AlignYourStepsScheduler, model_type="SDXL", steps=20, denoise=0.5)
    assert len(part) == 11 and torch.equal(part[:-1], full[-11:-1]) and float(part[-1]) == 0.0
    assert len(run(custom_sampling.AlignYourStepsScheduler, model_type="SD1", steps=10, denoise=0.0)) == 0


@pytest.mark.parametrize("coeff, steps", sorted(GITS_PUBLISHED))
def test_gits_reproduces_the_published_rows(coeff, steps):
    sigmas = run(custom_sampling.GITSScheduler, coeff=coeff, steps=steps, denoise=1.0)
    published = GITS_PUBLISHED[(coeff, steps)]
    assert np.allclose(sigmas.numpy(), published[:-1] + [0.0], rtol=1e-6)


def test_gits_beyond_twenty_steps_resamples_the_twenty_step_row():
    sigmas = run(custom_sampling.GITSScheduler, coeff=1.00, steps=26, denoise=1.0)
    expected = loglinear(GITS_PUBLISHED[(1.00, 20)], 27)
    assert np.allclose(sigmas[:-1].numpy(), expected[:-1], rtol=1e-6) and float(sigmas[-1]) == 0.0
    part = run(custom_sampling.GITSScheduler, coeff=1.20, steps=11, denoise=0.3)
    assert np.allclose(part.numpy(), GITS_PUBLISHED[(1.20, 11)][-4:-1] + [0.0], rtol=1e-6)


def test_gits_refuses_a_coefficient_without_a_table():
    with pytest.raises(ValueError, match="GITSScheduler: input 'coeff'"):
        run(custom_sampling.GITSScheduler, coeff=1.23, steps=10, denoise=1.0)


def test_every_gits_row_descends_from_sigma_max():
    for coeff in np.arange(0.80, 1.501, 0.05):
        for steps in range(2, 21):
            sigmas = run(custom_sampling.GITSScheduler, coeff=float(coeff), steps=steps, denoise=1.0)
            assert len(sigmas) == steps + 1 and math.isclose(float(sigmas[0]), 14.61464119, rel_tol=1e-6)
            assert bool((sigmas[1:] < sigmas[:-1]).all()), (coeff, steps)


def test_polyexponential_follows_its_formula():
    sigmas = run(custom_sampling.PolyexponentialScheduler, steps=5, sigma_max=10.0, sigma_min=0.1, rho=2.0)
    expected = [math.exp(math.log(0.1) + (1 - i / 4) ** 2 * (math.log(10.0) - math.log(0.1))) for i in range(5)]
    assert np.allclose(sigmas.numpy(), expected + [0.0], rtol=1e-5)
    exp = run(custom_sampling.PolyexponentialScheduler, steps=4, sigma_max=8.0, sigma_min=0.5, rho=1.0)
    assert np.allclose(exp.numpy(), [8.0, 8.0 * (1 / 16) ** (1 / 3), 8.0 * (1 / 16) ** (2 / 3), 0.5, 0.0], rtol=1e-5)


def test_vp_follows_its_formula():
    sigmas = run(custom_sampling.VPScheduler, steps=4, beta_d=19.9, beta_min=0.1, eps_s=0.001)
    ts = [1 + k / 3 * (0.001 - 1) for k in range(4)]
    expected = [math.sqrt(math.exp(19.9 * t * t / 2 + 0.1 * t) - 1) for t in ts]
    assert np.allclose(sigmas.numpy(), expected + [0.0], rtol=1e-5)


def test_scheduler_defaults_match_comfyui():
    infos = {n.SCHEMA.node_type: n.SCHEMA.to_object_info()["input"]["required"] for n in custom_sampling.NODES}
    ays = infos["AlignYourStepsScheduler"]
    assert ays["model_type"][0] == ["SD1", "SDXL", "SVD"] and ays["steps"][1]["default"] == 10
    gits = infos["GITSScheduler"]
    assert (gits["coeff"][1]["default"], gits["coeff"][1]["min"], gits["coeff"][1]["max"]) == (1.2, 0.8, 1.5)
    assert gits["steps"][1]["min"] == 2 and gits["steps"][1]["max"] == 1000
    poly = infos["PolyexponentialScheduler"]
    assert poly["rho"][1]["default"] == 1.0 and poly["sigma_max"][1]["default"] == 14.614642
    vp = infos["VPScheduler"]
    assert (vp["beta_d"][1]["default"], vp["beta_min"][1]["default"], vp["eps_s"][1]["default"]) == (19.9, 0.1, 0.001)
