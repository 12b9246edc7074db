"""Batched conjugate gradient against dense solves, its curvature guard and its adaptive re-solve."""

from __future__ import annotations

import torch
from torch import Tensor

from galsep.inference.cg import adaptive_conjugate_gradient, conjugate_gradient


def _spd(B: int, n: int, seed: int, cond: float = 100.0) -> Tensor:
    """B random SPD matrices with eigenvalues log-spaced in [1, cond], float64."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(B, n, n, generator=g, dtype=torch.float64))
    lam = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64)
    return q @ torch.diag_embed(lam.expand(B, n)) @ q.transpose(1, 2)


def _matvec(M: Tensor, shape: tuple[int, ...]):
    """Matvec on (B, *shape) states for per-sample matrices M (B, n, n), n = prod(shape)."""
    return lambda v: torch.einsum("bij,bj->bi", M, v.flatten(1)).reshape(v.shape[0], *shape)


def test_cg_solves_spd_systems_on_image_shaped_batches() -> None:
    B, shape = 4, (3, 4)
    M = _spd(B, 12, seed=0)
    b = torch.randn(B, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = conjugate_gradient(_matvec(M, shape), b, maxiter=40)
    exact = torch.linalg.solve(M, b.flatten(1)).reshape(B, *shape)
    # CG is exact after n = 12 steps in exact arithmetic; with cond 100 in float64 the round-off left
    # after the extra iterations is ~1e-13, so 1e-9 is a loose bound that still catches any per-sample mixup
    assert torch.allclose(res.x, exact, rtol=0, atol=1e-9 * exact.abs().max())
    assert (res.residual < 1e-9).all()


def test_cg_tolerance_stops_early_and_bounds_residual() -> None:
    B = 3
    M = _spd(B, 30, seed=2, cond=10.0)
    b = torch.randn(B, 30, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    res = conjugate_gradient(_matvec(M, (30,)), b, maxiter=100, tol=1e-6)
    assert res.iterations < 30  # cond 10: error shrinks ~0.5 per step, 1e-6 within ~25 steps
    assert (res.residual <= 1e-6).all()
    # the reported residual is the true one
    true = (b - _matvec(M, (30,))(res.x)).flatten(1).norm(dim=1)
    assert torch.allclose(res.residual, true, atol=1e-10)


def test_cg_guard_zeroes_nonpositive_curvature_steps() -> None:
    B, n = 3, 5
    M = _spd(B, n, seed=4)
    M[1] = -torch.eye(n, dtype=torch.float64)  # p^T M p < 0 for every p
    b = torch.randn(B, n, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def matvec(v: Tensor) -> Tensor:
        out = torch.einsum("bij,bj->bi", M, v)
        out[2] = float("nan")  # a blown-up Jacobian product
        return out

    res = conjugate_gradient(matvec, b, maxiter=10)
    assert torch.isfinite(res.x).all() and torch.isfinite(res.residual[:2]).all()
    assert (res.x[1:] == 0).all()  # skipped samples keep x0 = 0, as the reference does
    assert torch.allclose(res.x[0], torch.linalg.solve(M[0], b[0]), atol=1e-9)


def test_cg_auxiliary_map_equals_map_of_solution() -> None:
    B, n = 2, 6
    M = _spd(B, n, seed=6)
    G = torch.randn(B, 3, n, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    b = torch.randn(B, n, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    for iters in (1, 3, 20):
        res = conjugate_gradient(lambda v: (torch.einsum("bij,bj->bi", M, v), torch.einsum("bij,bj->bi", G, v)),
                                 b, maxiter=iters, aux=True)
        # linear accumulation: exact up to float64 round-off
        assert torch.allclose(res.aux, torch.einsum("bij,bj->bi", G, res.x), atol=1e-12)


def test_adaptive_cg_resolves_only_bad_samples_with_regularisation() -> None:
    B, n, lam = 3, 6, 0.5
    M = _spd(B, n, seed=9)
    M[2] = 0.0  # singular: curvature 0, the plain solve stays at 0 with residual ||b||
    b = torch.randn(B, n, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    mv = lambda v: torch.einsum("bij,bj->bi", M, v)  # noqa: E731
    plain = conjugate_gradient(mv, b, maxiter=30)
    res = adaptive_conjugate_gradient(mv, b, maxiter=30, floor=1e-3, regularisation=lam, threshold=1e-6)
    assert torch.equal(res.x[:2], plain.x[:2])  # good samples keep the unregularised solution
    assert torch.allclose(res.x[2], b[2] / lam, atol=1e-12)  # (0 + lam I) x = b
    # threshold None disables the re-solve; threshold 0 re-solves every sample with +lam I
    assert torch.equal(adaptive_conjugate_gradient(mv, b, maxiter=30, regularisation=lam, threshold=None).x,
                       plain.x)
    reg = adaptive_conjugate_gradient(mv, b, maxiter=30, regularisation=lam, threshold=0.0).x
    eye = torch.eye(n, dtype=torch.float64)
    assert torch.allclose(reg, torch.linalg.solve(M + lam * eye, b), atol=1e-9)


def test_jacobi_preconditioning_is_exact_in_one_step_on_diagonal_systems_and_converges_in_general() -> None:
    """A diagonal system with a 1e3 spread of scales (heteroscedastic noise): plain CG needs many steps, PCG one."""
    B, n = 3, 40
    g = torch.Generator().manual_seed(5)
    diag = torch.exp(torch.rand(B, n, generator=g, dtype=torch.float64) * 7)
    b = torch.randn(B, n, generator=g, dtype=torch.float64)
    exact = b / diag
    plain = conjugate_gradient(lambda v: diag * v, b, maxiter=1)
    pcg = conjugate_gradient(lambda v: diag * v, b, maxiter=1, precond=diag)
    assert torch.allclose(pcg.x, exact, atol=1e-12)
    assert ((plain.x - exact).norm() > 0.5 * exact.norm())
    # a dense SPD system with a poor diagonal guess: still the exact solution after n steps
    M = _spd(B, 12, seed=6) + torch.diag_embed(diag[:, :12])
    rhs = b[:, :12]
    res = conjugate_gradient(_matvec(M, (12,)), rhs, maxiter=40, precond=diag[:, :12] + 3.0)
    assert torch.allclose(res.x, torch.linalg.solve(M, rhs), atol=1e-9)


def test_warm_start_from_the_solution_needs_no_iteration_and_carries_the_aux_map() -> None:
    """x0 = the solution: the residual is ~0 and L x is computed from x0's matvec (not dropped)."""
    B, n = 2, 10
    M = _spd(B, n, seed=7)
    L = torch.randn(B, 3, n, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    b = torch.randn(B, n, generator=torch.Generator().manual_seed(9), dtype=torch.float64)

    def matvec(v: Tensor) -> tuple[Tensor, Tensor]:
        return _matvec(M, (n,))(v), torch.einsum("bij,bj->bi", L, v)

    x = torch.linalg.solve(M, b)
    res = conjugate_gradient(matvec, b, maxiter=3, tol=1e-8, aux=True, x0=x)
    assert res.iterations == 0 and (res.residual < 1e-8).all()
    assert torch.allclose(res.aux, torch.einsum("bij,bj->bi", L, x), atol=1e-12)
    # from a nearby point, a few steps reach the solution
    near = conjugate_gradient(matvec, b, maxiter=n, aux=True, x0=x + 0.1)
    assert torch.allclose(near.x, x, atol=1e-8)
    assert torch.allclose(near.aux, torch.einsum("bij,bj->bi", L, near.x), atol=1e-8)


def test_best_iterate_is_never_worse_than_no_solve_on_a_non_symmetric_system() -> None:
    """M = I + 5 K with K antisymmetric: p^T M p > 0, so no step is skipped, yet CG's residual grows 5x.

    With ``best`` the solve returns each sample's iterate of smallest residual (0 included), and the
    residual it reports is that iterate's; the aux map follows the chosen iterate.
    """
    B, n = 4, 12
    g = torch.Generator().manual_seed(11)
    a = torch.randn(B, n, n, generator=g, dtype=torch.float64)
    M = torch.eye(n, dtype=torch.float64) + 5 * (a - a.mT) / 2
    b = torch.randn(B, n, generator=g, dtype=torch.float64)
    L = torch.randn(B, 2, n, generator=g, dtype=torch.float64)

    def matvec(v: Tensor) -> tuple[Tensor, Tensor]:
        return _matvec(M, (n,))(v), torch.einsum("bij,bj->bi", L, v)

    plain = conjugate_gradient(matvec, b, maxiter=2, aux=True)
    safe = conjugate_gradient(matvec, b, maxiter=2, aux=True, best=True)
    assert (plain.residual > b.norm(dim=1)).any()  # the plain solve is worse than v = 0 somewhere
    assert (safe.residual <= b.norm(dim=1) + 1e-12).all()
    true_res = (b - torch.einsum("bij,bj->bi", M, safe.x)).norm(dim=1)
    assert torch.allclose(safe.residual, true_res, atol=1e-10)
    assert torch.allclose(safe.aux, torch.einsum("bij,bj->bi", L, safe.x), atol=1e-10)
