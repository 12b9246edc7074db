"""CLVM-Linear and CLVM-VAE: exact likelihood and posterior against dense Gaussians, the ELBO as a
lower bound, fits that climb their objectives and separation on a masked contrastive image toy."""

from __future__ import annotations

import math

import pytest
import torch

from galsep.baselines.clvm import CLVMVAE, CLVMLinear, fit_clvm_linear, fit_clvm_vae
from galsep.data.operators import DenseOperator, PixelOperator

from .conftest import contrastive_toy, masked_mse

pytestmark = pytest.mark.usefixtures("single_thread")


def _linear(D: int, latents, seed: int) -> CLVMLinear:
    g = torch.Generator().manual_seed(seed)
    model = CLVMLinear((D,), latents).double()
    with torch.no_grad():
        model.means.normal_(generator=g)
        for W in model.factors:
            W.normal_(generator=g)
    return model


def _dense_problem(n: int, D: int, M: int, K: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(K, n, M, D, generator=g, dtype=torch.float64)
    A[0, 0] = 0  # source 0 is absent from row 0
    A[1, 1, 0] = 0  # and source 1 from the first element of row 1 (still observed through source 0)
    y = torch.randn(n, M, generator=g, dtype=torch.float64)
    var = 0.1 + torch.rand(n, M, generator=g, dtype=torch.float64)
    return A, y, var


def test_log_likelihood_matches_dense_gaussian():
    n, D, M, latents = 4, 4, 3, (1, 2, 2)
    model = _linear(D, latents, seed=0)
    A, y, var = _dense_problem(n, D, M, 3, seed=1)
    ll = model.log_likelihood(y, [DenseOperator(a) for a in A], var)
    for i in range(n):
        mean = sum(A[k, i] @ model.means[k] for k in range(3))
        cov = torch.diag(var[i]) + sum(A[k, i] @ W @ W.T @ A[k, i].T for k, W in enumerate(model.factors))
        torch.testing.assert_close(ll[i], torch.distributions.MultivariateNormal(mean, cov).log_prob(y[i]))


def test_unobserved_pixels_carry_no_information():
    g = torch.Generator().manual_seed(2)
    n, S = 3, (2, 2)
    model = CLVMLinear(S, (1, 2)).double()
    with torch.no_grad():
        model.means.normal_(generator=g)
        for W in model.factors:
            W.normal_(generator=g)
    mask = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]],
                        dtype=torch.float64)
    coef = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 0.5]], dtype=torch.float64)
    ops = [PixelOperator(mask, torch.ones(n, dtype=torch.long), coef[:, k]) for k in range(2)]
    y = torch.randn(n, *S, generator=g, dtype=torch.float64) * mask
    var = torch.where(mask > 0, 0.2, 1.0).to(torch.float64)
    ll = model.log_likelihood(y, ops, var)
    junk = model.log_likelihood(torch.where(mask > 0, y, 5.0), ops, torch.where(mask > 0, var, 9.0))
    torch.testing.assert_close(junk, ll)
    # row 1 as a 2-element dense Gaussian on its observed top row
    keep = mask[1].flatten() > 0
    mean = sum(coef[1, k] * model.means[k] for k in range(2))[keep]
    cov = sum(coef[1, k] ** 2 * W @ W.T for k, W in enumerate(model.factors))[keep][:, keep] + 0.2 * torch.eye(2)
    ref = torch.distributions.MultivariateNormal(mean, cov).log_prob(y[1].flatten()[keep])
    torch.testing.assert_close(ll[1], ref)


def test_exact_posterior_matches_closed_form():
    D, M = 3, 4
    model = _linear(D, (1, 2), seed=3)
    A, y, var = _dense_problem(2, D, M, 2, seed=4)
    draws = model.sample_posterior(y, [DenseOperator(a) for a in A], var, samples=40000,
                                   generator=torch.Generator().manual_seed(5))
    assert draws.shape == (2, 40000, 2, D)
    # joint state (x_0, x_1): prior block-diagonal, y = [A_0, A_1] x + n
    C = torch.block_diag(*[W @ W.T for W in model.factors]).detach()
    m = model.means.detach().flatten()
    for i in range(2):
        Ai = torch.cat([A[0, i], A[1, i]], 1)
        gain = C @ Ai.T @ torch.linalg.inv(Ai @ C @ Ai.T + torch.diag(var[i]))
        mean, cov = m + gain @ (y[i] - Ai @ m), C - gain @ Ai @ C
        x = draws[i].flatten(1)
        scale = cov.diagonal().max().item()
        torch.testing.assert_close(x.mean(0), mean, atol=4 * math.sqrt(scale / 40000), rtol=0)
        torch.testing.assert_close(torch.cov(x.T), cov, atol=0.03 * scale, rtol=0)


def test_prior_state_and_arguments():
    model = _linear(4, (2, 1), seed=6).float()
    x = model.sample_prior(20000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (20000, 2, 4)
    for k, W in enumerate(model.factors):
        C = (W @ W.T).detach()
        torch.testing.assert_close(torch.cov(x[:, k].T), C, atol=0.05 * C.diagonal().max().item(), rtol=0)
    clone = CLVMLinear.from_state(model.state())
    torch.testing.assert_close(clone.factors[1], model.factors[1])
    op = DenseOperator(torch.eye(4).expand(3, 4, 4))
    with pytest.raises(ValueError, match="2 sources"):
        model.log_likelihood(torch.zeros(3, 4), [op], torch.ones(3, 4))
    with pytest.raises(ValueError, match="differ in shape"):
        model.log_likelihood(torch.zeros(3, 4), [op, op], torch.ones(3, 5))
    vae = CLVMVAE((4,), (2, 1), hidden=8, layers=1, dropout=0.0)
    clone = CLVMVAE.from_state(vae.state())
    torch.testing.assert_close(clone.decode(torch.ones(1, 3)), vae.decode(torch.ones(1, 3)))


@pytest.fixture(scope="module")
def toy():
    return contrastive_toy(150, 150, 8, seed=0)


def _galaxy_mse(model, toy) -> tuple[float, float]:
    """Posterior-mean MSE of the galaxy in the galaxies view, and the observation's."""
    t = slice(toy.nb, None)
    x = model.sample_posterior(toy.y[t], toy.operators(t), toy.variance[t], samples=8,
                               generator=torch.Generator().manual_seed(1)).mean(1)[:, 0]
    truth, mask = toy.truth[t, 0], toy.mask[t]
    return masked_mse(x, truth, mask), masked_mse(toy.y[t], truth, mask)


def test_linear_fit_climbs_likelihood_and_separates(toy):
    ops = toy.operators()
    kw = dict(shape=(8, 8), latents=(3, 4), lr=1e-2, batch_size=50)
    init, _ = fit_clvm_linear(toy.y, ops, toy.variance, steps=0, generator=torch.Generator().manual_seed(0), **kw)
    model, trace = fit_clvm_linear(toy.y, ops, toy.variance, steps=150, generator=torch.Generator().manual_seed(0),
                                   **kw)
    with torch.no_grad():
        before = init.log_likelihood(toy.y, ops, toy.variance).mean()
        after = model.log_likelihood(toy.y, ops, toy.variance).mean()
    assert after > before + 5
    assert sum(trace[-15:]) > sum(trace[:15])
    mse, baseline = _galaxy_mse(model, toy)
    assert mse < 0.5 * baseline


def test_vae_elbo_climbs_is_a_lower_bound_and_separates(toy):
    ops = toy.operators()
    kw = dict(shape=(8, 8), latents=(3, 4), hidden=64, layers=2, dropout=0.0, lr=2e-3, batch_size=50)
    init, _ = fit_clvm_vae(toy.y, ops, toy.variance, steps=0, generator=torch.Generator().manual_seed(0), **kw)
    model, trace = fit_clvm_vae(toy.y, ops, toy.variance, steps=400, generator=torch.Generator().manual_seed(0),
                                **kw)

    def elbo(m):
        with torch.no_grad():
            return m.elbo(toy.y, ops, toy.variance, samples=16, generator=torch.Generator().manual_seed(2))

    before, after = elbo(init), elbo(model)
    assert after.mean() > before.mean() + 10
    assert sum(trace[-40:]) > sum(trace[:40])

    # the generating linear-Gaussian model's exact log evidence bounds the ELBO from above (on average)
    truth = CLVMLinear((8, 8), (3, 4))
    with torch.no_grad():
        truth.means.copy_(toy.means)
        for W, w in zip(truth.factors, toy.factors):
            W.copy_(w)
        evidence = truth.log_likelihood(toy.y, ops, toy.variance)
    assert after.mean() < evidence.mean()

    # and the ELBO is below the model's own importance-weighted bound (which uses no analytic KL)
    with torch.no_grad():
        s, sl = 256, slice(toy.nb - 20, toy.nb + 20)  # rows from both views
        y, var, rows = toy.y[sl], toy.variance[sl], toy.operators(sl)
        mean, logvar = model.encode(y, rows, var)
        std = (0.5 * logvar).exp()
        z = mean + std * torch.randn(s, *mean.shape, generator=torch.Generator().manual_seed(3))
        x = model.decode(z)
        obs = toy.mask[sl]
        log_w = torch.distributions.Normal(mean, std).log_prob(z).sum(-1).neg()
        log_w += torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        for j in range(s):
            pred = sum(op(x[j, :, k]) for k, op in enumerate(rows))
            log_w[j] += (torch.distributions.Normal(pred, var.sqrt()).log_prob(y) * obs).flatten(1).sum(-1)
        iwae = log_w.logsumexp(0) - math.log(s)
        assert after[sl].mean() <= iwae.mean() + 0.5

    mse, baseline = _galaxy_mse(model, toy)
    assert mse < 0.7 * baseline
