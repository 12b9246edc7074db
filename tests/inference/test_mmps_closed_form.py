"""Joint MMPS posterior for two Gaussian sources against the closed-form joint Gaussian posterior.

Source 1 is seen through a random pixel mask, source 2 through 2x2 block downsampling (and, for some
samples, not at all: coefficient 0), y = A1 x1 + A2 x2 + n with heteroscedastic noise. With Gaussian
priors the Tweedie moments are exact (Cov[x | x_t] = sigma^2 J), so MMPS with a converged CG *is* the
closed form E[x | x_t, y]; any error beyond round-off is a bug. Run with -s to see the error tables.
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch import Tensor, nn

from galsep.inference.gaussian import LowRankGaussian, operator_matrix
from galsep.inference.mmps import JointPosterior, sample_joint_posterior
from galsep.inference.schedule import VESchedule
from galsep.data.operators import DenseOperator, PixelOperator

from workflow import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from closed_form import evaluate, pipeline_samplers  # noqa: E402  (the benchmark's problem and statistics)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("single_thread")


def _prior(side: int, rank: int, seed: int) -> LowRankGaussian:
    g = torch.Generator().manual_seed(seed)
    D = side * side
    return LowRankGaussian(torch.randn(D, generator=g, dtype=F64), torch.randn(D, rank, generator=g, dtype=F64) / 2,
                           0.3)


def _problem(B: int, side: int, seed: int, absent: bool = True):
    """Two priors, their operators (mask / 2x downsampling), y and noise variance for B samples."""
    g = torch.Generator().manual_seed(seed)
    priors = [_prior(side, 4, seed + 1), _prior(side, 3, seed + 2)]
    ones = torch.ones(B, side, side, dtype=F64)
    mask = (torch.rand(B, side, side, generator=g) < 0.7).to(F64)
    coef2 = torch.full((B,), 0.8, dtype=F64)
    if absent:
        coef2[0] = 0.0  # source 2 absent from the first observation
    ops = [PixelOperator(mask, torch.ones(B, dtype=torch.long), torch.ones(B, dtype=F64)),
           PixelOperator(ones, torch.full((B,), 2, dtype=torch.long), coef2)]
    noise_var = 0.02 * (1 + torch.rand(B, side, side, generator=g, dtype=F64))
    x = torch.stack([p.sample(B, shape=(side, side), generator=g) for p in priors], 1)
    y = ops[0](x[:, 0]) + ops[1](x[:, 1]) + noise_var.sqrt() * torch.randn(B, side, side, generator=g, dtype=F64)
    return priors, ops, y, noise_var


def _matrix(op: PixelOperator, b: int, side: int) -> Tensor:
    """Dense matrix (D, D) of sample b's operator (galsep's own ``operator_matrix``)."""
    return operator_matrix(op[b:b + 1], 1, (side, side))[0]


def _closed_form(priors, ops, y, noise_var, side: int, x_t: Tensor | None = None,
                 sigma: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-sample E[x | x_t, y] and Cov[x | x_t, y] of the joint state (B, 2D), by dense Gaussian conditioning.

    Without x_t this is the posterior p(x | y) itself.
    """
    B, D = y.shape[0], side * side
    m = torch.cat([p.mean for p in priors])
    C = torch.block_diag(*[p.covariance() for p in priors])
    means, covs = [], []
    for b in range(B):
        mb, Cb = m, C
        if x_t is not None:  # condition on x_t = x + sigma_k eps_k first
            St = torch.diag(torch.repeat_interleave(sigma[b] ** 2, D))
            G = Cb @ torch.linalg.inv(Cb + St)
            mb, Cb = mb + G @ (x_t[b].reshape(-1) - mb), Cb - G @ Cb
        A = torch.cat([_matrix(op, b, side) for op in ops], 1)
        S = A @ Cb @ A.T + torch.diag(noise_var[b].reshape(-1))
        K = Cb @ A.T @ torch.linalg.inv(S)
        means.append(mb + K @ (y[b].reshape(-1) - A @ mb))
        covs.append(Cb - K @ A @ Cb)
    return torch.stack(means), torch.stack(covs)


def _rel(a: Tensor, b: Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_mmps_denoiser_equals_closed_form_at_several_sigma() -> None:
    B, side = 4, 8
    priors, ops, y, noise_var = _problem(B, side, seed=0)
    g = torch.Generator().manual_seed(1)
    print("\nMMPS E[x|x_t,y] vs closed form, relative error (8x8, two sources)")
    print(f"{'sigma':>8} {'cg=1':>10} {'cg=2':>10} {'cg=8':>10} {'cg=128':>10}")
    for s in (1e-2, 1e-1, 1.0, 10.0):
        sigma = torch.full((B,), s, dtype=F64)
        x = torch.stack([p.sample(B, shape=(side, side), generator=g) for p in priors], 1)
        x_t = x + s * torch.randn(x.shape, generator=g, dtype=F64)
        exact, _ = _closed_form(priors, ops, y, noise_var, side, x_t, sigma[:, None].expand(B, 2))
        errs = {}
        for iters in (1, 2, 8, 128):
            post = JointPosterior(priors, ops, y, noise_var, cg_iters=iters, cg_tol=0.0, regularisation=None)
            out = post(x_t, sigma)
            assert out.shape == (B, 2, side, side)
            errs[iters] = _rel(out.reshape(B, -1), exact)
        print(f"{s:8.0e} " + " ".join(f"{errs[i]:10.2e}" for i in (1, 2, 8, 128)))
        # a converged float64 CG on a 64-dim SPD system leaves ~1e-12; 1e-8 still fails any real mistake
        assert errs[128] < 1e-8
        # (no bound for one plain CG step: its correction can be worse than ignoring y, see the next test)


def test_mmps_per_source_sigma_matches_closed_form() -> None:
    B, side = 3, 8
    priors, ops, y, noise_var = _problem(B, side, seed=3)
    g = torch.Generator().manual_seed(4)
    sigma = torch.tensor([[0.05, 2.0], [1.0, 0.1], [0.3, 0.3]], dtype=F64)
    x_t = torch.stack([p.sample(B, shape=(side, side), generator=g) for p in priors], 1)
    x_t = x_t + sigma[:, :, None, None] * torch.randn(x_t.shape, generator=g, dtype=F64)
    exact, _ = _closed_form(priors, ops, y, noise_var, side, x_t, sigma)
    out = JointPosterior(priors, ops, y, noise_var, cg_iters=128, cg_tol=0.0, regularisation=None)(x_t, sigma)
    assert _rel(out.reshape(B, -1), exact) < 1e-8  # as above: round-off only


def test_mmps_sampler_matches_closed_form_posterior_moments() -> None:
    """One observation, N posterior draws: sample mean and covariance vs the closed form, by CG iterations.

    The joint state is 32-dim and y 16-dim, so CG is exact at 16 iterations. Tolerances (as in
    test_samplers.py): mean entry i has standard error sqrt(C_ii / N), covariance entry (i, j)
    sqrt((C_ii C_jj + C_ij^2) / N) (Gaussian fourth moments); we allow 5 standard errors plus the
    sampler's own bias: 128 DDIM steps shrink variances by about 4.6/128 ~ 4 % (test_samplers.py), so
    covariance entries get 5 % of sqrt(C_ii C_jj) more. sigma_max = 100 makes the x1 ~ N(0, sigma_max^2)
    start exact to (posterior std / sigma_max) ~ 0.3 % of the mean offset. The sampler runs in float32
    (statistics at the 1e-2 level, float32 round-off at 1e-7) to halve the cost.
    """
    side, N = 4, 2048
    priors, ops, y, noise_var = _problem(1, side, seed=5, absent=False)
    mean, cov = _closed_form(priors, ops, y, noise_var, side)
    mean, cov = mean[0], cov[0]
    f32 = lambda t: t.float().expand(N, *t.shape[1:])  # noqa: E731
    ops_n = [PixelOperator(f32(op.mask), op.factor.expand(N), f32(op.coef)) for op in ops]
    priors32 = [p.to(dtype=torch.float32) for p in priors]
    schedule = VESchedule(1e-3, 1e2)
    d = torch.diag(cov)
    se_mean = (d / N).sqrt()
    se_cov = ((d[:, None] * d[None, :] + cov**2) / N).sqrt()
    bias_cov = 0.05 * (d[:, None] * d[None, :]).sqrt()
    print(f"\nMMPS posterior samples vs closed form (4x4, two sources, N={N}, 128 PC steps)")
    print(f"sampling noise (relative): mean {(d.sum() / N).sqrt() / mean.norm():.3f}, "
          f"cov {((cov.norm() ** 2 + cov.trace() ** 2) / N).sqrt() / cov.norm():.3f}")
    print(f"{'cg':>4} {'mean rel err':>14} {'cov rel err':>12} {'max |z| mean':>13} {'max |z| cov':>12}")
    worst = {}
    for iters in (1, 2, 4, 8, 16):
        x = sample_joint_posterior(priors32, ops_n, f32(y), f32(noise_var), shape=(side, side), schedule=schedule,
                                   steps=128, corrections=1, tau=1e-2, generator=torch.Generator().manual_seed(6),
                                   cg_iters=iters, cg_tol=0.0, regularisation=None)
        x = x.reshape(N, -1).double()
        m_hat, c_hat = x.mean(0), torch.cov(x.T)
        z_mean = ((m_hat - mean).abs() / se_mean).max().item()
        z_cov = (((c_hat - cov).abs() - bias_cov).clamp_min(0) / se_cov).max().item()
        worst[iters] = (z_mean, z_cov)
        print(f"{iters:4d} {_rel(m_hat, mean):14.4f} {_rel(c_hat, cov):12.4f} {z_mean:13.1f} {z_cov:12.1f}")
    for iters in (8, 16):
        assert worst[iters][0] < 5 and worst[iters][1] < 5, worst[iters]


# ---- the pipeline's own sampler settings (config.yaml) against the closed form ---------------------------------


@pytest.mark.parametrize("section", ["em", "posterior"])
@pytest.mark.parametrize("seed", [0, 1])
def test_pipeline_sampler_matches_closed_form_posterior(section: str, seed: int) -> None:
    """Draws with every sampler setting of config.yaml (not hand-picked ones) against the exact posterior.

    N independent draws of one observation (8x8, two sources, 128-dim joint state). The mean's error e
    must be within 3 standard errors as a vector: N e^T C^-1 e is chi^2 with d = 128 degrees of freedom
    for an unbiased sampler, so z = (N e^T C^-1 e - d) / sqrt(2 d) < 3. The spread: tr(Cov_hat) / tr(C)
    in [0.95, 1.05] (its sampling error is ~1 % here). One plain CG step (the reference's and galsep's
    earlier default) fails both by far: z ~ 1500-2500, trace ratio 2.4-2.9.
    """
    settings = pipeline_samplers()
    sampler = settings[section]
    got = evaluate(sampler, settings["diffusion"], side=8, seed=seed, draws=2048)
    z, trace = got["z"], got["trace"]
    print(f"\n{section} sampler {sampler} seed {seed}: mean z {z:.2f}, trace ratio {trace:.3f}")
    assert z < 3, z
    assert 0.95 <= trace <= 1.05, trace


# ---- network denoisers: VJPs against explicit Jacobians, gradients, seeds ----------------------------------


class TinyDenoiser(nn.Module):
    """EDM-preconditioned 2-layer MLP on 6-D vectors: a generic (non-symmetric) Jacobian."""

    def __init__(self, dim: int = 6, hidden: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, dim)).double()

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        s = sigma[:, None]
        h = self.net(torch.cat([x / (1 + s**2).sqrt(), s.log()], 1))
        return x / (1 + s**2) + s / (1 + s**2).sqrt() * h


class EnergyDenoiser(nn.Module):
    """D = x - a(sigma) grad E(x) with E a softplus MLP energy: symmetric Jacobian I - a Hessian, as a true denoiser."""

    def __init__(self, dim: int = 6, hidden: int = 16, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(torch.randn(hidden, dim, generator=g, dtype=F64) / hidden**0.5)
        self.b = nn.Parameter(torch.randn(hidden, generator=g, dtype=F64))
        self.w = nn.Parameter(torch.rand(hidden, generator=g, dtype=F64))

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        a = (sigma**2 / (1 + sigma**2))[:, None]
        return x - a * (self.w * torch.sigmoid(x @ self.W.T + self.b)) @ self.W


def _jacobians(D: nn.Module, x: Tensor, sigma: Tensor) -> Tensor:
    """Explicit per-sample Jacobians dD(x_b)/dx_b, (B, n, n)."""
    return torch.stack([torch.autograd.functional.jacobian(lambda u: D(u[None], sigma[b:b + 1])[0], x[b])
                        for b in range(x.shape[0])])


def _dense_problem(B: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ops = [DenseOperator(torch.randn(B, 4, 6, generator=g, dtype=F64)) for _ in range(2)]
    noise_var = 0.1 + torch.rand(B, 4, generator=g, dtype=F64)
    y = torch.randn(B, 4, generator=g, dtype=F64)
    x_t = torch.randn(B, 2, 6, generator=g, dtype=F64)
    sigma = torch.tensor([0.1, 1.0, 5.0], dtype=F64)[:B]
    return ops, y, noise_var, x_t, sigma


def test_vjp_one_cg_step_matches_explicit_jacobians() -> None:
    """cg = 1 is closed form even for a non-symmetric Jacobian: v = alpha r, alpha = r.r / r.M r, M as implemented."""
    B = 3
    dens = [TinyDenoiser(seed=0), TinyDenoiser(seed=1)]
    ops, y, noise_var, x_t, sigma = _dense_problem(B, seed=7)
    out = JointPosterior(dens, ops, y, noise_var, cg_iters=1, regularisation=None)(x_t, sigma)
    with torch.no_grad():
        d = [D(x_t[:, k], sigma) for k, D in enumerate(dens)]
    J = [_jacobians(D, x_t[:, k], sigma) for k, D in enumerate(dens)]
    A = [op.matrix for op in ops]
    s2 = sigma[:, None, None] ** 2
    r = y - sum(torch.einsum("bij,bj->bi", A[k], d[k]) for k in range(2))
    # the VJPs give u^T J = J^T u, so the implemented system matrix is Sigma_y + sigma^2 A J^T A^T
    M = torch.diag_embed(noise_var) + sum(s2 * A[k] @ J[k].mT @ A[k].mT for k in range(2))
    alpha = (r * r).sum(1) / torch.einsum("bi,bij,bj->b", r, M, r)
    v = alpha[:, None] * r
    expect = torch.stack([d[k] + s2[:, 0] * torch.einsum("bji,bj->bi", J[k], torch.einsum("bji,bj->bi", A[k], v))
                          for k in range(2)], 1)
    assert torch.allclose(out, expect, atol=1e-12)  # float64, same arithmetic up to ordering
    assert not out.requires_grad
    assert all(p.grad is None for D in dens for p in D.parameters())


def test_vjp_converged_cg_matches_dense_solve_for_symmetric_jacobian() -> None:
    B = 3
    dens = [EnergyDenoiser(seed=0), EnergyDenoiser(seed=1)]
    ops, y, noise_var, x_t, sigma = _dense_problem(B, seed=8)
    out = JointPosterior(dens, ops, y, noise_var, cg_iters=50, cg_tol=0.0, regularisation=None)(x_t, sigma)
    with torch.no_grad():
        d = [D(x_t[:, k], sigma) for k, D in enumerate(dens)]
    J = [_jacobians(D, x_t[:, k], sigma) for k, D in enumerate(dens)]
    assert torch.allclose(J[0], J[0].mT, atol=1e-12)
    A = [op.matrix for op in ops]
    s2 = sigma[:, None, None] ** 2
    r = y - sum(torch.einsum("bij,bj->bi", A[k], d[k]) for k in range(2))
    M = torch.diag_embed(noise_var) + sum(s2 * A[k] @ J[k] @ A[k].mT for k in range(2))
    v = torch.linalg.solve(M, r)
    expect = torch.stack([d[k] + s2[:, 0] * torch.einsum("bij,bj->bi", J[k] @ A[k].mT, v) for k in range(2)], 1)
    # a 4-dim SPD system: CG is exact after 4 steps; the rest is float64 round-off
    assert torch.allclose(out, expect, atol=1e-10)


def test_frozen_and_trainable_priors_get_no_gradients() -> None:
    """Sampling under grad mode with one frozen (requires_grad off) and one trainable prior: math equal, no grads."""
    B = 3
    frozen, live = TinyDenoiser(seed=0), TinyDenoiser(seed=1)
    frozen.requires_grad_(False)
    ops, y, noise_var, _, _ = _dense_problem(B, seed=9)
    kw = dict(shape=(6,), schedule=VESchedule(1e-2, 1e1), steps=6, cg_iters=2)
    x = sample_joint_posterior([frozen, live], ops, y, noise_var, generator=torch.Generator().manual_seed(0), **kw)
    # requires_grad is switched off only while the forward graph is recorded, then restored
    assert all(p.requires_grad for p in live.parameters()) and not any(p.requires_grad for p in frozen.parameters())
    frozen.requires_grad_(True)
    with torch.no_grad():
        x2 = sample_joint_posterior([frozen, live], ops, y, noise_var, generator=torch.Generator().manual_seed(0),
                                    **kw)
    assert torch.equal(x, x2) and not x.requires_grad
    assert all(p.grad is None for D in (frozen, live) for p in D.parameters())


def test_seeds_give_identical_samples() -> None:
    B = 3
    dens = [TinyDenoiser(seed=0), TinyDenoiser(seed=1)]
    ops, y, noise_var, _, _ = _dense_problem(B, seed=10)
    kw = dict(shape=(6,), schedule=VESchedule(1e-2, 1e1), steps=8, cg_iters=2)
    draw = lambda seed: sample_joint_posterior(dens, ops, y, noise_var,  # noqa: E731
                                               generator=torch.Generator().manual_seed(seed), **kw)
    a, b, c = draw(0), draw(0), draw(1)
    assert a.shape == (B, 2, 6) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    # chunked sampling (memory) is seeded too: the chunks draw from the generator in order
    chunked = lambda: sample_joint_posterior(dens, ops, y, noise_var, batch_size=2,  # noqa: E731
                                             generator=torch.Generator().manual_seed(0), **kw)
    d = chunked()
    assert d.shape == (B, 2, 6) and torch.equal(d, chunked())


def test_indefinite_jacobian_stays_finite_with_adaptive_regularisation() -> None:
    """D = -2 x has J = -2 I: sigma^2 A J A^T swamps Sigma_y at large sigma and the system is negative definite.

    The curvature guard keeps v finite (zero step); the residual then exceeds the threshold and the
    +lambda I re-solve runs, as in the reference. Nothing may become NaN.
    """
    B = 3
    ops, y, noise_var, x_t, _ = _dense_problem(B, seed=11)
    bad = lambda x, s: -2 * x  # noqa: E731
    for s in (0.01, 1.0, 30.0):
        sigma = torch.full((B,), s, dtype=F64)
        post = JointPosterior([bad, bad], ops, y, noise_var, cg_iters=4, regularisation=1e-2, reg_threshold=1e-3)
        out = post(x_t, sigma)
        assert torch.isfinite(out).all() and torch.isfinite(post.last.residual).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_rao_blackwellised_mean_matches_closed_form_with_less_noise(seed: int) -> None:
    """The catalogue's posterior mean (config.yaml's posterior.mean_sigma and sampler) against the closed form.

    Each draw's kept E[x | x_t, y] estimates E[x | y] (Rao-Blackwell: Var E[x | x_t, y] <= Var[x | y]). Two
    CG iterations leave it slightly biased, so the test is the catalogue's use: the mean of posterior.samples
    estimates is closer to the exact mean than the mean of as many draws, and its bias is a small part of the
    draws' error. The draws themselves are the plain sampler's.
    """
    import yaml

    from galsep.inference.em import sampler_kwargs
    from galsep.inference.mmps import sample_joint_posterior_and_mean

    from closed_form import galaxy_like_problem, posterior_moments  # noqa: E402

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    settings = pipeline_samplers()
    side, N = 8, 2048
    priors, ops, y, noise_var = galaxy_like_problem(side, seed)
    mean, _ = (m[0] for m in posterior_moments(priors, ops, y, noise_var, (side, side)))

    def rep(t: Tensor) -> Tensor:
        return t.float().expand(N, *t.shape[1:])

    ops_n = [PixelOperator(rep(op.mask), op.factor.expand(N), rep(op.coef)) for op in ops]
    kw = sampler_kwargs({**settings["posterior"], "batch_size": None},
                        VESchedule(settings["diffusion"]["sigma_min"], settings["diffusion"]["sigma_max"]))
    dens = [p.to(dtype=torch.float32) for p in priors]
    level = torch.full((N,), config["posterior"]["mean_sigma"] * float(noise_var.sqrt().median()))
    draws, est = sample_joint_posterior_and_mean(dens, ops_n, rep(y), rep(noise_var), mean_sigma=level,
                                                 shape=(side, side), generator=torch.Generator().manual_seed(seed),
                                                 **kw)
    plain = sample_joint_posterior(dens, ops_n, rep(y), rep(noise_var), shape=(side, side),
                                   generator=torch.Generator().manual_seed(seed), **kw)
    assert torch.equal(draws, plain)
    x, r = draws.reshape(N, -1).double(), est.reshape(N, -1).double()
    S = config["posterior"]["samples"]
    # squared error of the catalogue's mean of S draws against the exact mean, over N / S catalogues
    err = lambda s: (s.reshape(N // S, S, -1).mean(1) - mean).square().sum(1).mean().item()  # noqa: E731
    bias = (r.mean(0) - mean).square().sum().item()
    print(f"\nseed {seed}: error of {S}-draw means: draws {err(x):.4g}, estimates {err(r):.4g}"
          f" (their bias^2 {bias:.3g}); variance ratio {r.var(0).sum().item() / x.var(0).sum().item():.3f}")
    assert err(r) < 0.7 * err(x)
    assert bias < 0.2 * err(x)
