"""Batched conjugate gradient for one SPD system per sample, given as a matrix-free matvec.

Every sample of a batch (B, *S) is its own system M_b v_b = b_b; inner products reduce over all
non-batch dims, so images need no flattening by the caller. Following the DDPRISM reference (arXiv
2510.05205), a step whose curvature p^T M p is not positive (or not finite) is skipped for that sample
instead of turning it into NaN: learned denoiser Jacobians are not exactly symmetric positive, notably
at large sigma.

The matvec may also return an auxiliary tensor linear in its input (``aux=True``); CG then returns
that linear map applied to the solution, accumulated from the matvec calls it made anyway. MMPS
(Rozet et al., arXiv 2405.13712) uses this to get J^T A^T v without one more vector-Jacobian product
per source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, cast

import torch
from torch import Tensor

__all__ = ["CGResult", "conjugate_gradient", "adaptive_conjugate_gradient"]


class CGResult(NamedTuple):
    """Solution (B, *S), residual norm ||b - M x|| (B,), auxiliary map of x (or None), iterations run."""

    x: Tensor
    residual: Tensor
    aux: Tensor | None
    iterations: int


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner product, (B, *S) x (B, *S) -> (B,)."""
    return (a * b).flatten(1).sum(1)


def _pad(s: Tensor, x: Tensor) -> Tensor:
    return s.reshape(s.shape + (1,) * (x.ndim - s.ndim))


def conjugate_gradient(matvec: Callable[[Tensor], Tensor | tuple[Tensor, Tensor]], b: Tensor, *,
                       maxiter: int, tol: float = 0.0, floor: float = 1e-32,
                       regularisation: float = 0.0, aux: bool = False,
                       precond: Tensor | None = None, x0: Tensor | None = None, best: bool = False) -> CGResult:
    """Solve (M + lambda I) x = b per sample from x0 (default 0), optionally preconditioned by a diagonal P.

    Args:
        matvec: v (B, *S) -> M v (B, *S), or (M v, L v) with L linear (batch-first) when ``aux``.
        b: right-hand sides, shape (B, *S).
        maxiter: most iterations (each costs one matvec).
        tol: a sample stops once its absolute residual norm is <= tol; all stop when every one has.
        floor: lower bound on a positive curvature p^T (M + lambda I) p in the step-size division.
        regularisation: lambda >= 0 added to the diagonal.
        aux: the matvec returns a pair; the result carries L x.
        precond: diagonal of P ~ M + lambda I, shape (B, *S), positive: CG then runs on P^-1/2 M P^-1/2
            (Jacobi preconditioning), so a P that captures M's spread of scales (heteroscedastic noise,
            masked pixels) makes even one iteration nearly exact. None is P = I.
        x0: starting point (B, *S), e.g. the solution of a nearby system; costs one more matvec.
        best: return each sample's iterate of smallest residual norm among 0, x0 and the iterates, not
            the last: with an indefinite or non-symmetric M (a learned Jacobian at large sigma) CG can
            diverge, and a solve must then not be worse than no correction at all.
    Returns:
        :class:`CGResult`.
    """
    if maxiter < 1:
        raise ValueError(f"maxiter must be >= 1, got {maxiter}")

    def apply(v: Tensor) -> tuple[Tensor, Tensor | None]:
        out = matvec(v)
        mv, lv = cast("tuple[Tensor, Tensor | None]", out if aux else (out, None))
        if regularisation:
            mv = mv + regularisation * v
        return mv, lv

    def solve_p(r: Tensor) -> Tensor:
        return r if precond is None else r / precond

    if x0 is None:
        x, lx, r = torch.zeros_like(b), None, b
    else:
        m0, lx = apply(x0)
        x, r = x0, b - m0
    z = solve_p(r)
    p = z
    rz = _dot(r, z)
    rr = _dot(r, r)
    # the best iterate so far per sample, starting from x = 0 (residual b); its L x (None: L 0)
    best_x, best_lx, best_rr = torch.zeros_like(b), None, _dot(b, b)

    def keep(x: Tensor, lx: Tensor | None, rr: Tensor) -> None:
        nonlocal best_x, best_lx, best_rr
        take = rr < best_rr  # NaN never wins
        best_x = torch.where(_pad(take, x), x, best_x)
        if lx is not None:
            best_lx = torch.where(_pad(take, lx), lx, torch.zeros_like(lx) if best_lx is None else best_lx)
        best_rr = torch.where(take, rr, best_rr)

    if best and x0 is not None:
        keep(x, lx, rr)
    it = 0
    for it in range(1, maxiter + 1):
        active = rr.sqrt() > tol
        # the early stop reads the device (a host sync that splits a compiled graph); with tol = 0, the
        # pipeline's setting, a sample is only done when exactly solved, which the mask below handles
        if tol > 0 and not bool(active.any()):
            it -= 1
            break
        mp, lp = apply(p)
        curv = _dot(p, mp)
        ok = active & torch.isfinite(curv) & (curv > 0)
        # zero the step where the curvature is unusable or the sample has converged, as the reference
        # does; torch.where (not alpha * ...) so that a NaN in M p cannot leak into a skipped sample
        alpha = torch.where(ok, rz / curv.clamp_min(floor), torch.zeros_like(rz))
        x = torch.where(_pad(ok, x), x + _pad(alpha, x) * p, x)
        if aux:
            assert lp is not None  # the matvec returned its pair
            step = torch.where(_pad(ok, lp), _pad(alpha, lp) * lp, torch.zeros_like(lp))
            lx = step if lx is None else lx + step
        r = torch.where(_pad(ok, r), r - _pad(alpha, r) * mp, r)
        z = solve_p(r)
        rz_new = _dot(r, z)
        beta = rz_new / rz.clamp_min(floor)
        # a broken sample restarts from steepest descent; a converged one keeps its direction
        p = torch.where(_pad(ok, p), z + _pad(beta, p) * p, torch.where(_pad(active, p), z, p))
        rz, rr = rz_new, _dot(r, r)
        if best:
            keep(x, lx, rr)
    if best:
        x, lx, rr = best_x, best_lx, best_rr
    if aux and lx is None:  # every b was already solved by x0 = 0; L 0 = 0 but its shape comes from L
        lx = torch.zeros_like(cast(Tensor, apply(x)[1]))
    return CGResult(x, rr.sqrt(), lx, it)


def adaptive_conjugate_gradient(matvec: Callable[[Tensor], Tensor | tuple[Tensor, Tensor]], b: Tensor, *,
                                maxiter: int, tol: float = 0.0, floor: float = 1e-32,
                                regularisation: float | None = None, threshold: float | None = None,
                                aux: bool = False, precond: Tensor | None = None,
                                x0: Tensor | None = None, best: bool = False) -> CGResult:
    """CG, re-solved with +lambda I and the curvature ``floor`` for samples whose residual exceeds ``threshold``.

    This is the reference's adaptive regularisation: the first solve is plain (tiny floor); only when some
    sample's residual norm is above ``threshold`` is the regularised system solved (for the whole batch,
    since the matvec is batched) and that sample's solution replaced. ``regularisation`` or ``threshold``
    None disables the re-solve. Shapes as in :func:`conjugate_gradient`; the residual returned is that
    of the system each sample was finally solved for.
    """
    plain = conjugate_gradient(matvec, b, maxiter=maxiter, tol=tol, aux=aux, precond=precond, x0=x0, best=best)
    if regularisation is None or threshold is None:
        return plain
    bad = ~(plain.residual <= threshold)  # NaN residuals count as bad
    if not bool(bad.any()):
        return plain
    reg = conjugate_gradient(matvec, b, maxiter=maxiter, tol=tol, floor=floor, regularisation=regularisation,
                             aux=aux, precond=None if precond is None else precond + regularisation, x0=x0,
                             best=best)

    def pick(u: Tensor, v: Tensor) -> Tensor:
        return torch.where(_pad(bad, u), v, u)

    # both solves ran with the same ``aux``, so both or neither carry L x
    lx = None if plain.aux is None else pick(plain.aux, cast(Tensor, reg.aux))
    return CGResult(pick(plain.x, reg.x), pick(plain.residual, reg.residual), lx,
                    max(plain.iterations, reg.iterations))
