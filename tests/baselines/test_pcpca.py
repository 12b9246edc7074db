"""PCPCA on incomplete data: likelihood against dense Gaussians, the objective's sign, the exact
posterior, the contrastive direction and separation on a masked image toy."""

from __future__ import annotations

import pytest
import torch

from galsep.baselines.pcpca import PCPCA, fit_pcpca, pseudo_inverse
from galsep.data.operators import DenseOperator, PixelOperator

from .conftest import contrastive_toy, masked_mse

pytestmark = pytest.mark.usefixtures("single_thread")


def _model(D: int, L: int, gamma: float, seed: int) -> PCPCA:
    g = torch.Generator().manual_seed(seed)
    model = PCPCA((D,), L, gamma).double()
    with torch.no_grad():
        model.mean.copy_(torch.randn(D, generator=g, dtype=torch.float64))
        model.factors.copy_(torch.randn(D, L, generator=g, dtype=torch.float64))
    return model


def _dense(op, n: int, shape) -> torch.Tensor:
    """The (n, Dy, D) matrices of a batched operator, column by column."""
    D = torch.Size(shape).numel()
    basis = torch.eye(D, dtype=torch.float64).reshape(D, *shape)
    cols = [op(basis[d].expand(n, *shape)).reshape(n, -1) for d in range(D)]
    return torch.stack(cols, -1)


def _reference(model: PCPCA, y, A, var, obs) -> torch.Tensor:
    """log N over the observed elements with torch's dense MultivariateNormal."""
    C = model.factors @ model.factors.T
    out = []
    for i in range(y.shape[0]):
        keep = obs[i].reshape(-1) > 0
        Ai = A[i][keep]
        cov = Ai @ C @ Ai.T + torch.diag(var[i].reshape(-1)[keep])
        mvn = torch.distributions.MultivariateNormal(Ai @ model.mean, cov)
        out.append(mvn.log_prob(y[i].reshape(-1)[keep]))
    return torch.stack(out)


def test_complete_data_gamma0_is_gaussian_likelihood():
    n, S = 5, (3, 3)
    model = PCPCA(S, 2, 0.0).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.mean.normal_(generator=g)
        model.factors.normal_(generator=g)
    op = PixelOperator(torch.ones(n, *S, dtype=torch.float64), torch.ones(n, dtype=torch.long),
                       torch.ones(n, dtype=torch.float64))
    y = torch.randn(n, *S, generator=g, dtype=torch.float64)
    var = 0.1 + torch.rand(n, *S, generator=g, dtype=torch.float64)
    ref = _reference(model, y, _dense(op, n, S), var, torch.ones_like(y))
    torch.testing.assert_close(model.log_likelihood(y, op, var), ref)
    # gamma = 0: the objective is the plain log-likelihood of the target rows
    torch.testing.assert_close(model.objective(y, op, var, y[:2], op[:2], var[:2]), ref.sum())


def test_masked_downsampled_rows_use_observed_elements_only():
    n, S = 4, (4, 4)
    g = torch.Generator().manual_seed(1)
    model = PCPCA(S, 3, 0.5).double()
    with torch.no_grad():
        model.mean.normal_(generator=g)
        model.factors.normal_(generator=g)
    mask = torch.ones(n, *S, dtype=torch.float64)
    mask[0, :2, :2] = 0
    mask[1, 2:, :] = 0
    op = PixelOperator(mask, torch.tensor([1, 2, 1, 2]), torch.tensor([1.0, 0.5, 2.0, 1.0], dtype=torch.float64))
    y = torch.randn(n, *S, generator=g, dtype=torch.float64) * mask
    var = torch.where(mask > 0, 0.1 + torch.rand(n, *S, generator=g, dtype=torch.float64), 1.0)
    ll = model.log_likelihood(y, op, var)
    torch.testing.assert_close(ll, _reference(model, y, _dense(op, n, S), var, mask))
    # unobserved placeholders carry no information
    y2 = torch.where(mask > 0, y, 7.0)
    var2 = torch.where(mask > 0, var, 123.0)
    torch.testing.assert_close(model.log_likelihood(y2, op, var2), ll)
    # and the objective is target minus gamma background
    torch.testing.assert_close(model.objective(y[:2], op[:2], var[:2], y[2:], op[2:], var[2:]),
                               ll[:2].sum() - 0.5 * ll[2:].sum())


def test_objective_gradient_matches_finite_differences():
    """Autograd through the Woodbury / Cholesky path is the objective's true gradient (so Adam on
    -objective ascends it), checked along a random direction in float64."""
    g = torch.Generator().manual_seed(2)
    model = _model(6, 2, 0.4, seed=3)
    A = torch.randn(20, 4, 6, generator=g, dtype=torch.float64)
    y = torch.randn(20, 4, generator=g, dtype=torch.float64)
    var = torch.full((20, 4), 0.2, dtype=torch.float64)
    t, b = slice(0, 12), slice(12, 20)
    op = DenseOperator(A)

    def objective():
        return model.objective(y[t], op[t], var[t], y[b], op[b], var[b])

    params = list(model.parameters())
    grads = torch.autograd.grad(objective(), params)
    direction = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
    h = 1e-5
    with torch.no_grad():
        values = []
        for sign in (1, -1):
            for p, d in zip(params, direction):
                p.add_(sign * h * d)
            values.append(objective())
            for p, d in zip(params, direction):
                p.sub_(sign * h * d)
        before = objective()
        numeric = (values[0] - values[1]) / (2 * h)
        analytic = sum((gr * d).sum() for gr, d in zip(grads, direction))
        torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-6)
        for p, gr in zip(params, grads):
            p.add_(1e-4 * gr)
        assert objective() > before


def test_posterior_matches_closed_form():
    g = torch.Generator().manual_seed(4)
    D, M, L = 4, 3, 2
    model = _model(D, L, 0.0, seed=5)
    A = torch.randn(1, M, D, generator=g, dtype=torch.float64)
    y = torch.randn(1, M, generator=g, dtype=torch.float64)
    var = torch.tensor([[0.3, 0.1, 0.5]], dtype=torch.float64)
    x = model.sample_posterior(y, DenseOperator(A), var, samples=40000, generator=g)[0]
    C = model.factors @ model.factors.T
    gain = C @ A[0].T @ torch.linalg.inv(A[0] @ C @ A[0].T + torch.diag(var[0]))
    mean = model.mean + gain @ (y[0] - A[0] @ model.mean)
    cov = C - gain @ A[0] @ C
    torch.testing.assert_close(x.mean(0), mean, atol=4 * cov.diagonal().max().sqrt().item() / 200, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.03 * cov.diagonal().max().item(), rtol=0)
    assert x.shape == (40000, D)


def test_prior_samples_and_state_round_trip():
    model = _model(5, 2, 0.3, seed=6).float()
    x = model.sample_prior(20000, generator=torch.Generator().manual_seed(0))
    C = model.factors @ model.factors.T
    torch.testing.assert_close(torch.cov(x.T), C.detach(), atol=0.05 * C.diagonal().max().item(), rtol=0)
    clone = PCPCA.from_state(model.state())
    assert clone.gamma == 0.3 and clone.shape == (5,)
    torch.testing.assert_close(clone.factors, model.factors)


def test_contrastive_direction():
    """Background varies along e1; the target adds a weaker e2. PCA (gamma 0) picks e1, PCPCA e2."""
    g = torch.Generator().manual_seed(7)
    D, n = 6, 400
    e1, e2 = torch.eye(D)[0], torch.eye(D)[1]
    # the same e1 amplitudes in both views, so that the contrast along e1 is exactly (1 - gamma) 9
    a = 3.0 * torch.randn(n, 1, generator=g)
    bkg = a * e1 + 0.1 * torch.randn(n, D, generator=g)
    tgt = a * e1 + 1.5 * torch.randn(n, 1, generator=g) * e2 + 0.1 * torch.randn(n, D, generator=g)
    op = DenseOperator(torch.eye(D).expand(n, D, D))
    var = torch.full((n, D), 0.01)
    cosines = {}
    for gamma in (0.0, 0.9):
        model, trace = fit_pcpca(tgt, op, var, bkg, op, var, shape=(D,), latent=1, gamma=gamma, steps=60, lr=1e-2,
                                 batch_size=100, generator=torch.Generator().manual_seed(0))
        w = model.factors[:, 0].detach()
        cosines[gamma] = (w @ e1).abs() / w.norm(), (w @ e2).abs() / w.norm()
    assert cosines[0.0][0] > 0.99
    assert cosines[0.9][1] > 0.99


def test_fit_increases_objective_and_separates_masked_images():
    """A short schedule like the paper's (more steps raise the objective but move the shared mean
    towards the target mean / (1 - gamma): eq. 20 pushes it away from the background)."""
    toy = contrastive_toy(150, 150, 8, seed=0, contamination=0.5)
    ops = toy.operators()
    t, b = slice(toy.nb, None), slice(0, toy.nb)
    args = (toy.y[t], ops[0][t], toy.variance[t], toy.y[b], ops[1][b], toy.variance[b])
    kw = dict(shape=(8, 8), latent=3, gamma=0.9, lr=1e-3, batch_size=50)
    init, _ = fit_pcpca(*args, steps=0, generator=torch.Generator().manual_seed(0), **kw)
    model, trace = fit_pcpca(*args, steps=30, generator=torch.Generator().manual_seed(0), **kw)
    with torch.no_grad():
        assert model.objective(*args) > init.objective(*args)
    assert len(trace) == 30 and sum(trace[-5:]) > sum(trace[:5])
    x = model.sample_posterior(toy.y[t], ops[0][t], toy.variance[t], samples=8,
                               generator=torch.Generator().manual_seed(1)).mean(1)
    truth, mask = toy.truth[t, 0], toy.mask[t]
    assert masked_mse(x, truth, mask) < 0.5 * masked_mse(toy.y[t], truth, mask)


def test_pseudo_inverse_of_pixel_rows():
    mask = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])
    op = PixelOperator(mask, torch.ones(2, dtype=torch.long), torch.tensor([2.0, 4.0]))
    x = pseudo_inverse(op, torch.tensor([[[2.0, 0.0]], [[4.0, 8.0]]]), (1, 2))
    # row 0's missing pixel takes the mean of the rows that observe it
    torch.testing.assert_close(x, torch.tensor([[[1.0, 2.0]], [[1.0, 2.0]]]))


def test_bad_arguments():
    model = PCPCA((3,), 1, 0.5)
    op = DenseOperator(torch.eye(3).expand(4, 3, 3))
    with pytest.raises(ValueError, match="differ in shape"):
        model.log_likelihood(torch.zeros(4, 3), op, torch.ones(4, 2))
    with pytest.raises(ValueError, match="operator maps"):
        model.log_likelihood(torch.zeros(4, 2), op, torch.ones(4, 2))
    y, var = torch.randn(4, 3), torch.ones(4, 3)
    with pytest.raises(ValueError, match="bounded"):
        fit_pcpca(y, op, var, torch.randn(8, 3), DenseOperator(torch.eye(3).expand(8, 3, 3)), torch.ones(8, 3),
                  shape=(3,), latent=1, gamma=0.5, steps=1, lr=1e-3, batch_size=4, generator=torch.Generator())
