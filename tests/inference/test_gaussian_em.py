"""Low-rank Gaussian prior: analytic denoiser, PPCA closed form, and Gaussian EM from incomplete data."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from galsep.inference.gaussian import LowRankGaussian, fit_ppca, gaussian_em
from galsep.inference.schedule import VESchedule
from galsep.data.operators import DenseOperator

from .conftest import GaussianDenoiser

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("single_thread")


def _truth(D: int, rank: int, seed: int, noise: float = 0.1) -> LowRankGaussian:
    g = torch.Generator().manual_seed(seed)
    return LowRankGaussian(torch.randn(D, generator=g, dtype=F64), torch.randn(D, rank, generator=g, dtype=F64),
                           noise)


def _max_angle(U: Tensor, V: Tensor) -> float:
    """Largest principal angle (degrees) between the column spaces of U and V."""
    qu, qv = torch.linalg.qr(U)[0], torch.linalg.qr(V)[0]
    cos = torch.linalg.svdvals(qu.T @ qv).clamp(max=1).min()
    return math.degrees(math.acos(cos.item()))


def test_low_rank_denoiser_equals_dense_gaussian_denoiser() -> None:
    prior = _truth(6, 2, seed=0)
    dense = GaussianDenoiser(prior.mean, prior.covariance())
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(5, 2, 3, generator=g, dtype=F64) * 3
    sigma = torch.tensor([1e-3, 0.1, 1.0, 10.0, 1e3], dtype=F64)
    # Woodbury in the eigenbasis vs a dense eigendecomposition: both exact, float64 round-off only
    assert torch.allclose(prior(x_t, sigma), dense(x_t, sigma), atol=1e-12)


def test_low_rank_sample_moments() -> None:
    prior = _truth(6, 2, seed=2)
    x = prior.sample(40_000, generator=torch.Generator().manual_seed(3))
    C = prior.covariance()
    d = torch.diag(C)
    n = x.shape[0]
    # 5 standard errors: mean sqrt(C_ii / n), covariance sqrt((C_ii C_jj + C_ij^2) / n)
    assert ((x.mean(0) - prior.mean).abs() < 5 * (d / n).sqrt()).all()
    assert ((torch.cov(x.T) - C).abs() < 5 * ((d[:, None] * d[None] + C**2) / n).sqrt()).all()


@pytest.mark.parametrize("N", [5, 200])  # fewer and more samples than dimensions (both PPCA branches)
def test_ppca_is_the_closed_form_ml_fit(N: int) -> None:
    D, r = 12, 3
    x = _truth(D, r, seed=4, noise=0.3).sample(N, shape=(3, 4), generator=torch.Generator().manual_seed(5))
    fit = fit_ppca(x, r)
    flat = x.reshape(N, -1)
    S = (flat - flat.mean(0)).T @ (flat - flat.mean(0)) / N
    lam, Q = torch.linalg.eigh(S)
    lam, Q = lam.flip(0), Q.flip(1)
    s2 = lam[r:].sum() / (D - r)  # Tipping & Bishop eq. 15
    assert torch.allclose(fit.mean, flat.mean(0), atol=1e-12)
    assert math.isclose(fit.noise**2, s2.item(), rel_tol=1e-9)
    # U U^T = Q_r (L_r - s^2) Q_r^T (eq. 16, up to the rotation R)
    UUt = Q[:, :r] @ torch.diag(lam[:r] - s2) @ Q[:, :r].T
    assert torch.allclose(fit.factors @ fit.factors.T, UUt, atol=1e-9)


def test_gaussian_em_recovers_mean_and_principal_subspace_from_incomplete_data() -> None:
    """Vectors (D = 8) from a rank-2 Gaussian, each seen through a random mask or a random 4-dim projection.

    Tolerances: with N = 2048 complete observations the mean would have error sqrt(tr C / N) ~ 0.09, i.e.
    ~3 % of ||mu||; incomplete data (about half the information per observation) and Monte-Carlo E-steps
    inflate that, so we allow 10 %. The rank-2 signal (eigenvalues ~8) dwarfs the noise (0.01), so its
    subspace is pinned to well under a degree by complete data; we allow 5 degrees. The N(0, I) start is
    at 100 % mean error and tens of degrees (measured here: 2.6 % and 0.3 degrees after 12 laps).
    """
    D, r, N = 8, 2, 2048
    truth = _truth(D, r, seed=6)
    g = torch.Generator().manual_seed(7)
    x = truth.sample(N, generator=g)
    # half the observations: a random mask (as a diagonal, ~60 % kept); half: a random 4 x 8 projection
    # (padded with zero rows to 8 x 8, rows that observe pure noise)
    mask = (torch.rand(N // 2, D, generator=g) < 0.6).to(F64)
    proj = torch.cat([torch.randn(N // 2, 4, D, generator=g, dtype=F64) / math.sqrt(D),
                      torch.zeros(N // 2, 4, D, dtype=F64)], 1)
    op = DenseOperator(torch.cat([torch.diag_embed(mask), proj]))
    noise_var = torch.full((N, D), 1e-2, dtype=F64)
    y = op(x) + noise_var.sqrt() * torch.randn(N, D, generator=g, dtype=F64)

    history = []
    priors, samples = gaussian_em(
        y, [op], noise_var, shape=(D,), rank=r, laps=12, generator=torch.Generator().manual_seed(8),
        schedule=VESchedule(1e-3, 1e2), steps=32, cg_iters=D, cg_tol=0.0, regularisation=None,
        log=lambda lap, p, s: history.append((lap, p[0])))
    fit = priors[0]
    mean_err = ((fit.mean - truth.mean).norm() / truth.mean.norm()).item()
    angle = _max_angle(fit.factors, truth.factors)
    print(f"\nGaussian EM: mean rel err {mean_err:.3f}, max subspace angle {angle:.1f} deg, noise {fit.noise:.3f}")
    assert samples.shape == (N, 1, D) and len(history) == 12
    assert mean_err < 0.10
    assert angle < 5.0


def test_gaussian_em_holds_fixed_sources() -> None:
    D, N = 4, 64
    g = torch.Generator().manual_seed(9)
    known = _truth(D, 1, seed=10)
    ops = [DenseOperator(torch.eye(D, dtype=F64).expand(N, D, D))] * 2
    y = torch.randn(N, D, generator=g, dtype=F64)
    priors, samples = gaussian_em(y, ops, torch.full((N, D), 0.1, dtype=F64), shape=(D,), rank=1, laps=2,
                                  priors=[known, LowRankGaussian.standard(D, 1, dtype=F64)], fixed=[0],
                                  schedule=VESchedule(1e-2, 1e1), steps=4, generator=g)
    assert priors[0] is known and priors[1] is not known
    assert samples.shape == (N, 2, D)
