"""Gibbs sampling (one source at a time against the residual) on the two-source Gaussian problem.

For Gaussian priors each conditional mean is affine in the other source, so the expected state of the
chain follows block Gauss-Seidel exactly: m1 <- E[x1 | y - A2 m2], m2 <- E[x2 | y - A1 m1]. The test
checks the Monte-Carlo chain against that prediction round by round, and that it converges to the
closed-form joint posterior mean.
"""

from __future__ import annotations

import pytest
import torch

from galsep.inference.gibbs import gibbs_sample
from galsep.inference.schedule import VESchedule
from galsep.data.operators import PixelOperator

from .test_mmps_closed_form import _closed_form, _matrix, _problem

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("single_thread")


def test_gibbs_follows_gauss_seidel_and_converges_to_posterior_mean() -> None:
    side, N, rounds = 4, 1024, 8
    priors, ops, y, noise_var = _problem(1, side, seed=5, absent=False)
    post_mean = _closed_form(priors, ops, y, noise_var, side)[0][0]
    # predicted chain means: conditional gains K_k = C_k A_k^T (A_k C_k A_k^T + Sigma)^-1
    A = [_matrix(op, 0, side) for op in ops]
    Sig, yy = torch.diag(noise_var[0].reshape(-1)), y[0].reshape(-1)
    gain = [p.covariance() @ A[k].T @ torch.linalg.inv(A[k] @ p.covariance() @ A[k].T + Sig)
            for k, p in enumerate(priors)]

    rep = lambda t: t.expand(N, *t.shape[1:])  # noqa: E731
    ops_n = [PixelOperator(rep(op.mask), rep(op.factor), rep(op.coef)) for op in ops]
    x = torch.zeros(N, 2, side, side, dtype=F64)
    m = [torch.zeros(side * side, dtype=F64) for _ in range(2)]
    g = torch.Generator().manual_seed(0)
    errs = []
    print("\nGibbs round, rel err of chain mean to posterior mean (MC / Gauss-Seidel prediction)")
    for r in range(rounds):
        for k in range(2):
            j = 1 - k
            m[k] = priors[k].mean + gain[k] @ (yy - A[j] @ m[j] - A[k] @ priors[k].mean)
        x = gibbs_sample(priors, ops_n, rep(y), rep(noise_var), shape=(side, side), schedule=VESchedule(1e-3, 1e2),
                         rounds=1, steps=32, init=x, generator=g, cg_iters=16, cg_tol=0.0, regularisation=None)
        flat = x.reshape(N, -1)
        pred = torch.cat(m)
        # 5 standard errors of the Monte-Carlo mean, from the chain's own spread (32 components)
        se = flat.std(0) / N**0.5
        assert ((flat.mean(0) - pred).abs() < 5 * se).all(), ((flat.mean(0) - pred) / se).abs().max()
        errs.append(((flat.mean(0) - post_mean).norm() / post_mean.norm()).item())
        pred_err = ((pred - post_mean).norm() / post_mean.norm()).item()
        print(f"{r + 1:3d} {errs[-1]:.4f} / {pred_err:.4f}")
    # Gauss-Seidel contracts by ~0.58 per round here (0.34 after one round, 0.006 after eight); the final
    # Monte-Carlo error is dominated by sampling noise sqrt(tr Cov / N) / ||mean|| ~ 1 %
    assert errs[0] > 0.25 and errs[-1] < 0.05
