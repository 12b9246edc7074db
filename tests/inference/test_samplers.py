"""Samplers driven by an exact Gaussian denoiser must reproduce the Gaussian prior.

Tolerances: with n samples, the sample mean of component i has standard error sqrt(C_ii / n) and the
sample covariance entry (i, j) has standard error sqrt((C_ii C_jj + C_ij^2) / n) (Gaussian fourth
moments). We allow 5 standard errors plus the sampler's own discretisation bias, which the step counts
below keep under one standard error (for DDIM the variance bias is about -4.6/steps relative, computed
from the closed-form per-step gain (lam + s t) / (lam + t^2); at 512 steps it is 0.9 % vs 1 % SE).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from galsep.inference.samplers import ddim_sample, heun_sample, pc_sample
from galsep.inference.schedule import VESchedule

from .conftest import GaussianDenoiser, random_gaussian

pytestmark = pytest.mark.usefixtures("single_thread")

N = 20_000  # samples: 1 % standard error on variances
SCHEDULE = VESchedule(1e-2, 1e2)  # sigma_max^2 = 1e4 >> max eigenvalue 2, so x1 ~ sigma_max N(0, I) is exact to 2e-4


def _x1(shape: tuple[int, ...], seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return SCHEDULE.sigma_max * torch.randn(shape, generator=g, dtype=torch.float64)


def assert_moments(x: Tensor, mean: Tensor, cov: Tensor, k: float = 5.0) -> None:
    """Sample mean and covariance of x (n, D) within k standard errors of (mean, cov)."""
    n = x.shape[0]
    d = torch.diag(cov)
    se_mean = (d / n).sqrt()
    se_cov = ((d[:, None] * d[None, :] + cov**2) / n).sqrt()
    m_hat = x.mean(0)
    c_hat = torch.cov(x.T)
    assert ((m_hat - mean).abs() < k * se_mean).all(), (m_hat - mean) / se_mean
    assert ((c_hat - cov).abs() < k * se_cov).all(), (c_hat - cov) / se_cov


@pytest.mark.parametrize(
    "sampler, kwargs",
    [
        (pc_sample, dict(steps=256, corrections=1, tau=1e-2)),
        (pc_sample, dict(steps=128, corrections=2, tau=5e-2)),
        (ddim_sample, dict(steps=512)),
        (heun_sample, dict(steps=64)),
    ],
)
def test_sampler_reproduces_gaussian_prior(gaussian3, sampler, kwargs) -> None:
    mean, cov = gaussian3
    D = GaussianDenoiser(mean, cov)
    if sampler is pc_sample:
        kwargs = dict(kwargs, generator=torch.Generator().manual_seed(1))
    x = sampler(D, _x1((N, 3), seed=2), SCHEDULE, **kwargs)
    assert x.shape == (N, 3) and x.dtype == torch.float64
    assert_moments(x, mean, cov)


def test_gaussian_check_is_not_vacuous(gaussian3) -> None:
    """Too few DDIM steps shrink the variance by ~4.6/steps: 8 steps must fail the same check."""
    mean, cov = gaussian3
    x = ddim_sample(GaussianDenoiser(mean, cov), _x1((N, 3), seed=2), SCHEDULE, steps=8)
    with pytest.raises(AssertionError):
        assert_moments(x, mean, cov)


def test_pc_on_joint_image_state() -> None:
    """A (B, K, H, W) state (K = 2 sources of 2x2 pixels) is sampled as one 8-D Gaussian."""
    mean, cov = random_gaussian(8, [3.0, 1.5, 1.0, 0.7, 0.4, 0.2, 0.1, 0.05], seed=3)
    D = GaussianDenoiser(mean, cov)
    x = pc_sample(D, _x1((N, 2, 2, 2), seed=4), SCHEDULE, steps=128, corrections=1, tau=5e-2,
                  generator=torch.Generator().manual_seed(5))
    assert x.shape == (N, 2, 2, 2)
    assert_moments(x.reshape(N, 8), mean, cov)


def test_seeds_reproduce(gaussian3) -> None:
    mean, cov = gaussian3
    D = GaussianDenoiser(mean, cov)
    x1 = _x1((64, 3), seed=0)

    def run(seed: int) -> Tensor:
        return pc_sample(D, x1, SCHEDULE, steps=16, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))
    assert torch.equal(ddim_sample(D, x1, SCHEDULE, steps=16), ddim_sample(D, x1, SCHEDULE, steps=16))


def test_final_denoise_and_call_pattern() -> None:
    """PC calls D once per predictor, once per correction, once at the end at sigma_min, in that order."""
    calls: list[float] = []

    def D(x: Tensor, sigma: Tensor) -> Tensor:
        assert sigma.shape == (x.shape[0],)
        calls.append(sigma[0].item())
        return torch.zeros_like(x)

    steps, corrections = 4, 2
    out = pc_sample(D, torch.ones(3, 5), SCHEDULE, steps=steps, corrections=corrections,
                    generator=torch.Generator().manual_seed(0))
    assert len(calls) == steps * (1 + corrections) + 1
    sig = SCHEDULE.sigma(torch.linspace(1, 0, steps + 1, dtype=torch.float64)).tolist()
    for i in range(steps):
        block = calls[i * (1 + corrections): (i + 1) * (1 + corrections)]
        assert block[0] == pytest.approx(sig[i], rel=1e-6)  # predictor at the old time
        assert block[1:] == pytest.approx([sig[i + 1]] * corrections, rel=1e-6)  # correctors at the new time
    assert calls[-1] == pytest.approx(SCHEDULE.sigma_min, rel=1e-6)
    assert torch.equal(out, torch.zeros(3, 5))  # the returned value is the final denoiser output


def test_sampler_does_not_chain_graphs() -> None:
    """With grad enabled and a trainable denoiser the output is detached (no graph across steps)."""
    w = torch.nn.Parameter(torch.tensor(0.5))

    def D(x: Tensor, sigma: Tensor) -> Tensor:
        return w * x

    out = pc_sample(D, torch.randn(4, 2), SCHEDULE, steps=3)
    assert not out.requires_grad
