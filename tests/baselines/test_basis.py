"""BASIS annealed Langevin separation against exact Gaussian priors, where the posterior is known."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from galsep.baselines.basis import basis_levels, basis_sample
from galsep.data.operators import DenseOperator, PixelOperator

from inference.conftest import GaussianDenoiser
from inference.conftest import random_gaussian as _random_gaussian

SIGMA_MIN = 1e-3
TAU = 0.2  # the paper's delta / sigma_L^2 = 2e-5 / 0.01^2
STEP = TAU * SIGMA_MIN**2


pytestmark = pytest.mark.usefixtures("single_thread")


def random_gaussian(dim: int, eigenvalues: list[float], seed: int) -> tuple[Tensor, Tensor]:
    """The diffusion tests' random Gaussian with its mean halved (sources near the data range)."""
    mean, cov = _random_gaussian(dim, eigenvalues, seed)
    return 0.5 * mean, cov


def draw(mean: Tensor, cov: Tensor, n: int, g: torch.Generator) -> Tensor:
    return mean + torch.randn(n, len(mean), generator=g, dtype=mean.dtype) @ torch.linalg.cholesky(cov).T


def test_levels_are_geometric():
    s = torch.tensor(basis_levels(2.0, 1e-3, 5), dtype=torch.float64)
    assert s[0] == pytest.approx(2.0) and s[-1] == pytest.approx(1e-3)
    ratios = s[1:] / s[:-1]
    assert torch.allclose(ratios, ratios[0].expand(4))
    with pytest.raises(ValueError, match="levels"):
        basis_levels(2.0, 1e-3, 1)


def test_dense_mixture_matches_closed_form_posterior():
    """y = x1 + x2 + n in 6 dims: constraint to the noise level, better than y as a source, posterior mean."""
    D, nv, n_obs, reps = 6, 1e-2, 4, 256
    m1, C1 = random_gaussian(D, [2.0, 1.0, 0.5, 0.2, 0.1, 0.05], seed=1)
    m2, C2 = random_gaussian(D, [1.0, 0.6, 0.3, 0.1, 0.03, 0.01], seed=2)
    g = torch.Generator().manual_seed(0)
    x1, x2 = draw(m1, C1, n_obs, g), draw(m2, C2, n_obs, g)
    y = x1 + x2 + nv**0.5 * torch.randn(n_obs, D, generator=g, dtype=torch.float64)

    # closed form: x = (x1, x2) ~ N(m, blockdiag(C1, C2)), y = G x + n with G = [I I]
    G = torch.cat([torch.eye(D, dtype=torch.float64)] * 2, 1)
    m, C = torch.cat([m1, m2]), torch.block_diag(C1, C2)
    gain = C @ G.T @ torch.linalg.inv(G @ C @ G.T + nv * torch.eye(D, dtype=torch.float64))
    post_mean = m + (y - m @ G.T) @ gain.T
    post_std = (C - gain @ G @ C).diagonal().sqrt()

    Y = y.repeat_interleave(reps, 0)  # reps independent chains per observation
    eye = torch.eye(D, dtype=torch.float64).expand(len(Y), D, D)
    x = basis_sample([GaussianDenoiser(m1, C1), GaussianDenoiser(m2, C2)], [DenseOperator(eye)] * 2, Y,
                     torch.full_like(Y, nv), shape=(D,), sigma_max=2.0, sigma_min=SIGMA_MIN, levels=20,
                     steps_per_level=20, step_size=STEP, generator=torch.Generator().manual_seed(1),
                     batch_size=512)
    assert x.shape == (n_obs * reps, 2, D)

    # the mixture constraint holds to the noise level (exact posterior: ~ nv)
    res = ((Y - x[:, 0] - x[:, 1]) ** 2).mean() / nv
    assert 0.5 < res < 2.0

    # one draw per chain separates better than taking the observation as either source
    truth = torch.stack([x1, x2], 1).repeat_interleave(reps, 0)
    mse = ((x - truth) ** 2).mean(dim=(0, 2))
    base = ((Y[:, None] - truth) ** 2).mean(dim=(0, 2))
    assert (mse < 0.6 * base).all()

    # the sample mean approaches the posterior mean: within 0.35 posterior std in RMS and 1 at worst
    # (Monte Carlo error alone is 1/16 std; the rest is finite annealing), and far closer than the prior mean
    mean = x.reshape(n_obs, reps, 2 * D).mean(1)
    z = (mean - post_mean) / post_std
    assert z.pow(2).mean().sqrt() < 0.35 and z.abs().max() < 1.0
    assert (mean - post_mean).norm() < 0.2 * (m - post_mean).norm(dim=1).sum()


def squared_exponential(H: int, length: float, amplitude: float) -> Tensor:
    ij = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(H), indexing="ij"), -1).reshape(-1, 2).double()
    d2 = ((ij[:, None] - ij[None]) ** 2).sum(-1)
    return amplitude**2 * torch.exp(-d2 / (2 * length**2)) + 1e-4 * torch.eye(H * H, dtype=torch.float64)


def test_pixel_operator_with_mask():
    """8x8 images: a smooth and a rough Gaussian source, the second scaled by 0.7, 15% of pixels missing."""
    H, n, nv = 8, 64, 1e-2
    g = torch.Generator().manual_seed(3)
    C1, C2 = squared_exponential(H, 3.0, 1.0), squared_exponential(H, 0.6, 0.6)
    m1, m2 = torch.zeros(H * H, dtype=torch.float64), 0.2 * torch.ones(H * H, dtype=torch.float64)
    x1, x2 = draw(m1, C1, n, g).reshape(n, H, H), draw(m2, C2, n, g).reshape(n, H, H)
    mask = (torch.rand(n, H, H, generator=g) > 0.15).double()
    ones, coef = torch.ones(n, dtype=torch.float64), torch.full((n,), 0.7, dtype=torch.float64)
    factor = torch.ones(n, dtype=torch.long)
    ops = [PixelOperator(mask, factor, ones), PixelOperator(mask, factor, coef)]
    y = ops[0](x1) + ops[1](x2) + mask * nv**0.5 * torch.randn(n, H, H, generator=g, dtype=torch.float64)
    var = torch.where(mask > 0, nv, 1.0)  # the views' convention: finite variance where masked

    x = basis_sample([GaussianDenoiser(m1, C1), GaussianDenoiser(m2, C2)], ops, y, var, shape=(H, H),
                     sigma_max=2.0, sigma_min=SIGMA_MIN, levels=20, steps_per_level=20, step_size=STEP,
                     generator=torch.Generator().manual_seed(4), batch_size=40)
    assert x.shape == (n, 2, H, H) and torch.isfinite(x).all()

    res = (((y - ops[0](x[:, 0]) - ops[1](x[:, 1])) ** 2).sum() / mask.sum()) / nv
    assert 0.3 < res < 2.0

    # observed pixels: better than the observation as either source; missing pixels: the prior fills them
    # in with roughly the prior's spread, never with the zeros y holds there
    for k, (truth, c) in enumerate([(x1, 1.0), (x2, 0.7)]):
        mse = ((x[:, k] - truth) ** 2 * mask).sum() / mask.sum()
        base = ((y / c - truth) ** 2 * mask).sum() / mask.sum()
        assert mse < 0.6 * base, k
    hole = 1 - mask
    spread = (x[:, 0] ** 2 * hole).sum() / hole.sum()
    assert 0.2 < spread < 3.0


def test_reproducible_and_chunked():
    D, nv = 3, 1e-2
    m, C = random_gaussian(D, [1.0, 0.5, 0.1], seed=5)
    y = 2 * torch.randn(5, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    var = torch.full_like(y, nv)
    ops = [DenseOperator(torch.eye(D, dtype=torch.float64).expand(5, D, D))] * 2
    kw = dict(shape=(D,), sigma_max=2.0, sigma_min=1e-2, levels=10, steps_per_level=5, step_size=0.5e-4)
    den = [GaussianDenoiser(m, C)] * 2

    def run(**extra):
        return basis_sample(den, ops, y, var, generator=torch.Generator().manual_seed(7), **kw, **extra)

    a = run()
    assert torch.equal(a, run()) and torch.equal(a, run(batch_size=5))  # one chunk of all rows = no chunks
    # uneven chunks (2 + 2 + 1): every row still meets its own observation (measured <= 4.3 nv after
    # this short annealing; another row's observation would leave > 250 nv)
    c = run(batch_size=2)
    assert c.shape == a.shape
    assert (((y - c.sum(1)) ** 2).mean(1) < 20 * nv).all()
    # an explicit init replaces the uniform draw (ignoring it would reproduce ``a``)
    assert not torch.equal(a, run(init=torch.zeros(5, 2, D, dtype=torch.float64)))


def test_bad_input():
    D = 3
    m, C = random_gaussian(D, [1.0, 0.5, 0.1], seed=5)
    y = torch.zeros(2, D, dtype=torch.float64)
    op = DenseOperator(torch.eye(D, dtype=torch.float64).expand(2, D, D))
    kw = dict(shape=(D,), sigma_max=2.0, sigma_min=1e-2, levels=4, steps_per_level=3, step_size=1e-5)
    den = GaussianDenoiser(m, C)
    with pytest.raises(ValueError, match="one operator per denoiser"):
        basis_sample([den, den], [op], y, torch.ones_like(y), **kw)
    with pytest.raises(ValueError, match="differ in shape"):
        basis_sample([den], [op], y, torch.ones(2, D + 1), **kw)
    with pytest.raises(ValueError, match="init"):
        basis_sample([den], [op], y, torch.ones_like(y), init=torch.zeros(2, 2, D), **kw)
    with pytest.raises(ValueError, match="sigma_min"):
        basis_sample([den], [op], y, torch.ones_like(y), **{**kw, "sigma_min": 3.0})
    with pytest.raises(FloatingPointError, match="step_size"):
        basis_sample([den], [op], y, torch.ones_like(y), **{**kw, "step_size": 1.0, "steps_per_level": 40})
