"""Joint moment-matching posterior sampling (MMPS) for K independent sources (DDPRISM section 3, eq. 7-9).

Observation model per sample: y = sum_k A_k x_k + n, n ~ N(0, diag(noise_var)). With Tweedie's
moments D_k = E[x_k | x_k,t] and Cov[x_k | x_k,t] = sigma_k^2 J_k (J_k the denoiser's Jacobian), the
Gaussian approximation of p(x | x_t) gives

    E[x_k | x_t, y] = D_k + sigma_k^2 J_k^T A_k^T v,
    (Sigma_y + sum_j sigma_j^2 A_j J_j A_j^T) v = y - sum_j A_j D_j,

solved per sample by conjugate gradient with vector-Jacobian products only (J is symmetric for an
exact denoiser, so J v is taken as J^T v). The system matrix is never formed.

Posterior mean (Rao-Blackwellised): E[x | y] = E_{x_t ~ p(x_t | y)} E[x | x_t, y], and
Var E[x | x_t, y] <= Var[x | y], so the posterior denoiser's output at a level sigma along each draw's
trajectory estimates E[x | y] with less Monte-Carlo noise than the draw itself. Too large a sigma and the
Gaussian approximation of p(x | x_t) biases it; :func:`sample_joint_posterior_and_mean` keeps, per
observation, the output at the sampler call whose sigma is nearest (in log) to a given level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, Required, TypedDict, Unpack

import torch
from torch import Tensor, nn

from galsep.inference.cg import CGResult, adaptive_conjugate_gradient
from galsep.inference.memory import run_chunked
from galsep.inference.samplers import pc_sample
from galsep.inference.schedule import VESchedule

Denoiser = Callable[[Tensor, Tensor], Tensor]

__all__ = ["Operator", "JointPosterior", "PosteriorSettings", "SamplingSettings", "sample_joint_posterior",
           "sample_joint_posterior_and_mean"]


class Operator(Protocol):
    """A per-sample batched linear map: ``op(x)`` = A x and ``op.T(y)`` = A^T y (see galsep.data.operators)."""

    def __call__(self, x: Tensor) -> Tensor: ...

    def T(self, y: Tensor) -> Tensor: ...

    def __getitem__(self, idx: slice | Tensor) -> Operator: ...

    def gram_diagonal(self) -> Tensor | float: ...


class PosteriorSettings(TypedDict, total=False):
    """The CG settings of :class:`JointPosterior` (keyword arguments of its constructor)."""

    cg_iters: int
    precondition: bool
    warm_start: bool
    cg_tol: float
    denom_floor: float
    regularisation: float | None
    reg_threshold: float | None


class SamplingSettings(PosteriorSettings, total=False):
    """Keyword arguments of :func:`sample_joint_posterior` beyond the observations, shape and generator."""

    schedule: Required[VESchedule]
    steps: int
    corrections: int
    tau: float
    batch_size: int | None
    progress: bool


def _pad(s: Tensor, x: Tensor) -> Tensor:
    return s.reshape(s.shape + (1,) * (x.ndim - s.ndim))


def _vjp(D: Denoiser, x: Tensor, sigma: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """D(x, sigma) (detached) and u -> J^T u = (u^T dD/dx)^T, differentiating the input only.

    The parameters of an nn.Module denoiser have requires_grad switched off while the forward graph
    is recorded (and restored right after), so the graph neither saves what weight gradients would
    need nor lets any gradient reach a parameter: frozen and trainable priors are treated alike.
    """
    params = [p for p in D.parameters() if p.requires_grad] if isinstance(D, nn.Module) else []
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            d = D(x, sigma)
    finally:
        for p in params:
            p.requires_grad_(True)

    def vjp(u: Tensor) -> Tensor:
        (g,) = torch.autograd.grad(d, x, u, retain_graph=True)
        return g

    return d.detach(), vjp


class JointPosterior:
    """Denoiser of the joint state of K sources given observations y: x_t (B, K, *S) -> E[x | x_t, y].

    Args:
        denoisers: K prior denoisers D_k(x (B, *S), sigma (B,)) -> (B, *S); callables or nn.Modules
            (put modules in eval mode). Only the input is differentiated: parameters' requires_grad is
            switched off during the forward and restored, so no parameter ever gets a gradient from
            here and frozen and trainable priors behave the same.
        operators: K observation operators A_k mapping (B, *S) -> (B, *Sy).
        y: observations, shape (B, *Sy).
        noise_var: per-element noise variance, shape (B, *Sy).
        cg_iters: CG iterations (reference default 1: one VJP per source and call).
        precondition: Jacobi-precondition the CG by P = Sigma_y + sum_k sigma_k^2 j_k diag(A_k A_k^T), where
            j_k = 1 - ||x_t,k - D_k||^2 / (n sigma_k^2) estimates tr(J_k) / n (exact in expectation for a
            Gaussian prior: E||x_t - D||^2 = sigma^4 tr((C + sigma^2 I)^-1)); free, it reuses D_k.
        warm_start: start each call's CG from the previous call's solution v (the sampler's calls solve
            nearby systems); one more VJP per source and call.
            With either, the CG returns each sample's iterate of smallest residual (0 included): two
            preconditioned or warm-started steps on a learned, indefinite Jacobian at large sigma
            otherwise overshoot (seen: posterior means of +-100 on data in [-2, 2]).
        cg_tol: absolute residual norm at which a sample's CG stops early.
        denom_floor: floor on the CG curvature in the regularised re-solve (reference "denominator minimum").
        regularisation: lambda added to the system's diagonal when re-solving; None disables re-solves.
        reg_threshold: samples whose CG residual norm exceeds this are re-solved; None disables re-solves.
            Defaults are the DDPRISM galaxy experiment's (paper table 3).

        keep_sigma: a level per sample, (B,); with it, ``kept`` (B, K, *S) holds, per sample, the output of
            the call whose sigma (its first source's) was nearest in log to it (the later call on a tie).

    After each call, ``last`` holds the :class:`CGResult` (residual norms per sample) for diagnostics.
    """

    def __init__(self, denoisers: Sequence[Denoiser], operators: Sequence[Operator], y: Tensor,
                 noise_var: Tensor, *, cg_iters: int = 1, precondition: bool = False, warm_start: bool = False,
                 cg_tol: float = 1e-6,
                 denom_floor: float = 1e-3,
                 regularisation: float | None = 1e-2, reg_threshold: float | None = 10.0,
                 keep_sigma: Tensor | None = None) -> None:
        if len(denoisers) != len(operators) or not denoisers:
            raise ValueError(f"need one operator per denoiser, got {len(denoisers)} and {len(operators)}")
        if y.shape != noise_var.shape:
            raise ValueError(f"y {tuple(y.shape)} and noise_var {tuple(noise_var.shape)} differ in shape")
        self.denoisers = list(denoisers)
        self.operators = list(operators)
        self.y, self.noise_var = y, noise_var
        self.cg_iters, self.cg_tol, self.precondition = cg_iters, cg_tol, precondition
        self.warm_start = warm_start
        self.denom_floor, self.regularisation, self.reg_threshold = denom_floor, regularisation, reg_threshold
        self.last: CGResult | None = None
        self.keep_sigma = keep_sigma
        self.kept: Tensor | None = None
        self._kept_gap: Tensor | None = None

    def __call__(self, x_t: Tensor, sigma: Tensor) -> Tensor:
        """x_t (B, K, *S), sigma (B,) or per source (B, K) -> E[x | x_t, y] (B, K, *S), detached."""
        K = len(self.denoisers)
        if x_t.shape[1] != K:
            raise ValueError(f"state has {x_t.shape[1]} sources, posterior has {K}")
        if sigma.ndim == 1:
            sigma = sigma[:, None].expand(-1, K)
        var = sigma**2
        means, vjps = [], []
        for k, (D, x) in enumerate(zip(self.denoisers, x_t.unbind(1), strict=True)):
            d, vjp = _vjp(D, x, sigma[:, k])
            means.append(d)
            vjps.append(vjp)
        with torch.no_grad():
            ops = self.operators
            residual = self.y - sum(A(d) for A, d in zip(ops, means, strict=True))

            def matvec(v: Tensor) -> tuple[Tensor, Tensor]:
                # inner_k = J_k^T A_k^T v; the CG accumulates it along the solution for free
                inner = [vjp(A.T(v)) for A, vjp in zip(ops, vjps, strict=True)]
                mv = self.noise_var * v
                for k, (A, u) in enumerate(zip(ops, inner, strict=True)):
                    mv = mv + _pad(var[:, k], v) * A(u)
                return mv, torch.stack(inner, 1)

            precond = self._jacobi(x_t, means, var) if self.precondition else None
            self.last = adaptive_conjugate_gradient(
                matvec, residual, maxiter=self.cg_iters, tol=self.cg_tol, floor=self.denom_floor,
                regularisation=self.regularisation, threshold=self.reg_threshold, aux=True, precond=precond,
                x0=self.last.x if self.warm_start and self.last is not None else None,
                best=self.precondition or self.warm_start)
            mean = torch.stack(means, 1)
            assert self.last.aux is not None  # aux=True: the CG accumulates the inner products
            out = mean + var.reshape(var.shape + (1,) * (mean.ndim - 2)) * self.last.aux
            if self.keep_sigma is not None:
                self._keep(out, sigma[:, 0])
            return out

    def _keep(self, out: Tensor, sigma: Tensor) -> None:
        gap = (sigma.log() - self.keep_sigma.log()).abs()  # type: ignore[union-attr]
        if self.kept is None or self._kept_gap is None:
            self.kept, self._kept_gap = out.clone(), gap
            return
        closer = gap <= self._kept_gap
        self.kept = torch.where(_pad(closer, out), out, self.kept)
        self._kept_gap = torch.where(closer, gap, self._kept_gap)


    def _jacobi(self, x_t: Tensor, means: Sequence[Tensor], var: Tensor) -> Tensor:
        """Diagonal P (B, *Sy) ~ the system matrix: Sigma_y + sum_k sigma_k^2 j_k diag(A_k A_k^T)."""
        p = self.noise_var
        for k, (A, d) in enumerate(zip(self.operators, means, strict=True)):
            x = x_t[:, k]
            j = (1 - (x - d).flatten(1).square().mean(1) / var[:, k]).clamp(0.0, 1.0)
            p = p + _pad(var[:, k] * j, p) * A.gram_diagonal()
        # a pixel no source reaches and observed without noise would give P = 0; its residual is 0 too
        return p.clamp_min(torch.finfo(p.dtype).tiny ** 0.5)


def _sample(denoisers: Sequence[Denoiser], operators: Sequence[Operator], y: Tensor, noise_var: Tensor, *,
            shape: Sequence[int], schedule: VESchedule, steps: int, corrections: int, tau: float,
            generator: torch.Generator | None, batch_size: int | None, progress: bool, mean_sigma: Tensor | None,
            posterior: PosteriorSettings) -> tuple[Tensor, Tensor | None]:
    B, K = y.shape[0], len(denoisers)
    chunk = B if batch_size is None else batch_size

    def run(idx: slice) -> tuple[Tensor, Tensor | None]:
        post = JointPosterior(denoisers, [A[idx] for A in operators], y[idx], noise_var[idx],
                              keep_sigma=None if mean_sigma is None else mean_sigma[idx], **posterior)
        n = idx.stop - idx.start
        x1 = schedule.sigma_max * torch.randn((n, K, *shape), generator=generator, device=y.device,
                                              dtype=y.dtype)
        draws = pc_sample(post, x1, schedule, steps=steps, corrections=corrections, tau=tau,
                          generator=generator, progress=progress)
        return draws, post.kept

    out = run_chunked(B, chunk, run, what="sampling the posterior")
    draws = torch.cat([d for d, _ in out], 0)
    if mean_sigma is None:
        return draws, None
    return draws, torch.cat([m for _, m in out if m is not None], 0)


def sample_joint_posterior(denoisers: Sequence[Denoiser], operators: Sequence[Operator], y: Tensor,
                           noise_var: Tensor, *, shape: Sequence[int], schedule: VESchedule, steps: int = 64,
                           corrections: int = 1, tau: float = 1e-2, generator: torch.Generator | None = None,
                           batch_size: int | None = None, progress: bool = False,
                           **posterior: Unpack[PosteriorSettings]) -> Tensor:
    """Draw one joint posterior sample per observation with the predictor-corrector sampler.

    Args:
        denoisers, operators, y, noise_var: as in :class:`JointPosterior`; y is (B, *Sy).
        shape: the shape S of one source sample.
        schedule: VE schedule; x1 = sigma_max N(0, I).
        steps, corrections, tau: PC sampler settings (see ``samplers.pc_sample``).
        generator: seeds x1 and the Langevin noise; lives on y's device.
        batch_size: process observations in chunks of this many (memory); None = all at once. A chunk
            that runs out of CUDA memory is retried in halves (see :mod:`galsep.inference.memory`);
            without that the chunks, and so the draws, are those of a plain loop.
        progress: tqdm bar per chunk.
        **posterior: CG settings forwarded to :class:`JointPosterior`.
    Returns:
        samples, shape (B, K, *S), detached.
    """
    draws, _ = _sample(denoisers, operators, y, noise_var, shape=shape, schedule=schedule, steps=steps,
                       corrections=corrections, tau=tau, generator=generator, batch_size=batch_size,
                       progress=progress, mean_sigma=None, posterior=posterior)
    return draws


def sample_joint_posterior_and_mean(denoisers: Sequence[Denoiser], operators: Sequence[Operator], y: Tensor,
                                    noise_var: Tensor, *, mean_sigma: Tensor, shape: Sequence[int],
                                    schedule: VESchedule, steps: int = 64, corrections: int = 1, tau: float = 1e-2,
                                    generator: torch.Generator | None = None, batch_size: int | None = None,
                                    progress: bool = False, **posterior: Unpack[PosteriorSettings]
                                    ) -> tuple[Tensor, Tensor]:
    """:func:`sample_joint_posterior`'s draws (the same ones, for the same generator) and, per draw, the
    Rao-Blackwellised estimate of E[x | y]: the posterior denoiser's output along the draw's trajectory at
    the call whose sigma is nearest in log to ``mean_sigma`` (B,) (module docstring).

    Returns:
        draws and estimates, each (B, K, *S), detached.
    """
    if mean_sigma.shape != y.shape[:1]:
        raise ValueError(f"mean_sigma needs one level per observation, {tuple(y.shape[:1])}, got"
                         f" {tuple(mean_sigma.shape)}")
    draws, mean = _sample(denoisers, operators, y, noise_var, shape=shape, schedule=schedule, steps=steps,
                          corrections=corrections, tau=tau, generator=generator, batch_size=batch_size,
                          progress=progress, mean_sigma=mean_sigma, posterior=posterior)
    assert mean is not None  # mean_sigma given: every chunk kept its estimates
    return draws, mean
