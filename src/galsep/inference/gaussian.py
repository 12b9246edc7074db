"""Gaussian priors with low-rank-plus-isotropic covariance: analytic denoiser, PPCA fit and Gaussian EM.

This is the EM initialisation of DDPRISM (paper section 4, appendix D): a few EM laps in which the
prior is N(mu, U U^T + s^2 I), the E-step draws joint posterior samples with the same MMPS sampler as
the diffusion priors (the analytic denoiser is differentiable, so the VJPs work unchanged) and the
M-step refits each prior by probabilistic PCA (Tipping & Bishop 1999).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Unpack

import torch
from torch import Tensor, nn

from galsep.inference.mmps import Operator, SamplingSettings, sample_joint_posterior

__all__ = ["LowRankGaussian", "fit_ppca", "gaussian_em", "operator_matrix", "posterior_moments"]


class LowRankGaussian(nn.Module):
    """N(mean, U U^T + s^2 I) on flattened states of D = prod(S) elements, usable as a denoiser.

    An ``nn.Module`` with buffers and no parameters, so it moves with ``.to`` and is treated like a
    network denoiser by the samplers.

    Args:
        mean: shape (D,).
        factors: U, shape (D, r).
        noise: s, the isotropic standard deviation (> 0).
    """

    mean: Tensor
    factors: Tensor
    _q: Tensor
    _lam: Tensor

    def __init__(self, mean: Tensor, factors: Tensor, noise: float) -> None:
        super().__init__()
        if mean.ndim != 1 or factors.ndim != 2 or factors.shape[0] != mean.shape[0]:
            raise ValueError(f"need mean (D,) and factors (D, r), got {tuple(mean.shape)}, {tuple(factors.shape)}")
        if not noise > 0:
            raise ValueError(f"noise must be positive, got {noise}")
        # a Python float: s enters the gains in double precision whatever the buffers' dtype
        self.noise = float(noise)
        self.register_buffer("mean", mean)
        self.register_buffer("factors", factors)
        # U = Q diag(sqrt(lam)) W^T: the covariance is s^2 I + Q diag(lam) Q^T with Q orthonormal, so
        # every Woodbury solve below is a projection on Q, never an inverse of a D x D (or r x r) matrix
        q, sv, _ = torch.linalg.svd(factors, full_matrices=False)
        self.register_buffer("_q", q, persistent=False)
        self.register_buffer("_lam", sv**2, persistent=False)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def rank(self) -> int:
        return int(self.factors.shape[1])

    def covariance(self) -> Tensor:
        """The dense (D, D) covariance; for tests and small D only."""
        return self.factors @ self.factors.T + self.noise**2 * torch.eye(self.dim, dtype=self.mean.dtype,
                                                                           device=self.mean.device)

    def forward(self, x_t: Tensor, sigma: Tensor) -> Tensor:
        """E[x | x_t] = mu + C (C + sigma^2 I)^-1 (x_t - mu); x_t (B, *S), sigma (B,) -> (B, *S).

        In C's eigenbasis the gain is (lam + s^2) / (lam + s^2 + sigma^2) along Q and s^2 / (s^2 + sigma^2)
        elsewhere; written as gains (not x_t - sigma^2 (...)^-1) it stays accurate at both ends of sigma.
        """
        shape = x_t.shape
        z = x_t.reshape(shape[0], -1) - self.mean
        s2, v = self.noise**2, sigma.reshape(-1, 1) ** 2
        g_perp = s2 / (s2 + v)
        g_par = (self._lam + s2) / (self._lam + s2 + v)
        out = self.mean + g_perp * z + ((g_par - g_perp) * (z @ self._q)) @ self._q.T
        return out.reshape(shape)

    def sample(self, n: int, *, shape: Sequence[int] | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """n draws, shape (n, D) or (n, *shape)."""
        kw: dict[str, Any] = dict(generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        x = self.mean + torch.randn(n, self.rank, **kw) @ self.factors.T + self.noise * torch.randn(n, self.dim, **kw)
        return x if shape is None else x.reshape(n, *shape)

    def state(self) -> dict[str, Any]:
        """Plain tensors (on the CPU) and a float, for ``torch.save`` and ``weights_only`` loading."""
        return {"mean": self.mean.detach().cpu(), "factors": self.factors.detach().cpu(), "noise": self.noise}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LowRankGaussian:
        return cls(state["mean"], state["factors"], float(state["noise"]))

    @classmethod
    def standard(cls, dim: int, rank: int, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> LowRankGaussian:
        """N(0, I) with zero factors of the given rank: the usual EM starting point."""
        return cls(torch.zeros(dim, dtype=dtype, device=device), torch.zeros(dim, rank, dtype=dtype, device=device),
                   1.0)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rank={self.rank}, noise={self.noise:.3g}"


def fit_ppca(samples: Tensor, rank: int, *, min_var: float = 1e-6) -> LowRankGaussian:
    """Maximum-likelihood probabilistic PCA (Tipping & Bishop 1999, eq. 7, 15, 16).

    mu is the sample mean; with l_1 >= ... the eigenvalues of the (1/N) sample covariance and Q_r the top
    r eigenvectors, s^2 = mean of the D - r discarded eigenvalues and U = Q_r (L_r - s^2 I)^{1/2}.

    Args:
        samples: shape (N, *S) with prod(S) = D.
        rank: r, clipped to min(N, D).
        min_var: floor on s^2 (keeps the prior proper when the samples span fewer than D dims).
    Returns:
        the fitted :class:`LowRankGaussian` (dtype and device of ``samples``).
    """
    x = samples.reshape(samples.shape[0], -1)
    N, D = x.shape
    mean = x.mean(0)
    xc = (x - mean).double()
    rank = min(rank, N, D)
    # eigen-decompose the smaller of the two Gram matrices
    if N < D:
        lam, vec = torch.linalg.eigh(xc @ xc.T / N)
        lam, vec = lam.flip(0)[:rank], vec.flip(1)[:, :rank]
        q = xc.T @ vec
        q = q / q.norm(dim=0).clamp_min(1e-300)
    else:
        lam, q = torch.linalg.eigh(xc.T @ xc / N)
        lam, q = lam.flip(0)[:rank], q.flip(1)[:, :rank]
    lam = lam.clamp_min(0)
    total = xc.pow(2).sum() / N
    s2 = ((total - lam.sum()) / (D - rank)).item() if D > rank else 0.0
    s2 = max(s2, min_var)
    factors = q * (lam - s2).clamp_min(0).sqrt()
    return LowRankGaussian(mean, factors.to(samples.dtype), s2**0.5)


def gaussian_em(y: Tensor, operators: Sequence[Operator], noise_var: Tensor, *, shape: Sequence[int],
                rank: int | Sequence[int], laps: int, priors: Sequence[LowRankGaussian] | None = None,
                fixed: Sequence[int] = (), generator: torch.Generator | None = None,
                log: Callable[[int, list[LowRankGaussian], Tensor], None] | None = None,
                **sampling: Unpack[SamplingSettings]) -> tuple[list[LowRankGaussian], Tensor]:
    """Monte-Carlo EM for K low-rank Gaussian priors from incomplete, noisy observations.

    Each lap: E-step = one joint posterior sample per observation from :func:`sample_joint_posterior`
    with the current analytic priors; M-step = :func:`fit_ppca` of each non-fixed source's samples.

    Args:
        y: observations (B, *Sy); operators: K operators (B, *S) -> (B, *Sy); noise_var: (B, *Sy).
        shape: S, the shape of one source sample.
        rank: PPCA rank, one for all sources or one per source.
        laps: number of EM laps.
        priors: starting priors (default N(0, I) for every source).
        fixed: indices of sources whose prior is held fixed (e.g. a known background).
        generator: seeds all sampling.
        log: called after every lap with (lap, priors, samples).
        **sampling: forwarded to :func:`sample_joint_posterior` (schedule is required; steps, corrections,
            tau, batch_size, cg_iters, ...).
    Returns:
        the final priors and the last E-step's samples (B, K, *S).
    """
    K = len(operators)
    D = math.prod(shape)
    ranks = [rank] * K if isinstance(rank, int) else list(rank)
    if priors is None:
        priors = [LowRankGaussian.standard(D, r, dtype=y.dtype, device=y.device) for r in ranks]
    priors = list(priors)
    samples = torch.empty(0)
    for lap in range(laps):
        samples = sample_joint_posterior(priors, operators, y, noise_var, shape=shape, generator=generator,
                                         **sampling)
        priors = [p if k in fixed else fit_ppca(samples[:, k], ranks[k]) for k, p in enumerate(priors)]
        if log is not None:
            log(lap, priors, samples)
    return priors, samples


def operator_matrix(op: Operator, batch: int, shape: Sequence[int], dtype: torch.dtype = torch.float64) -> Tensor:
    """The dense matrices (B, Dy, D) of a batched operator of B rows on states of shape S (D = prod(S)).

    For small D only (closed-form checks): it applies ``op`` to each of the D basis vectors.
    """
    D = math.prod(shape)
    basis = torch.eye(D, dtype=dtype).reshape(D, *shape)
    return torch.stack([op(basis[d].expand(batch, *shape)).flatten(1) for d in range(D)], -1)


def posterior_moments(priors: Sequence[LowRankGaussian], operators: Sequence[Operator], y: Tensor,
                      noise_var: Tensor, shape: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Exact joint posterior of K Gaussian sources given y = sum_k A_k x_k + n, n ~ N(0, diag(noise_var)).

    With the joint prior N(m, C) (C block-diagonal) and A = [A_1 ... A_K]:
    E[x | y] = m + C A^T S^-1 (y - A m), Cov[x | y] = C - C A^T S^-1 A C, S = A C A^T + diag(noise_var).
    Dense: for small states only (the closed-form checks of the sampler).

    Args:
        priors: K priors on states of shape S; operators: K batched operators; y, noise_var: (B, *Sy).
    Returns:
        mean (B, K D) and covariance (B, K D, K D), in float64, the sources concatenated in order.
    """
    m = torch.cat([p.mean.double() for p in priors])
    C = torch.block_diag(*[p.covariance().double() for p in priors])
    A = torch.cat([operator_matrix(op, y.shape[0], shape) for op in operators], -1)
    S = A @ C @ A.mT + torch.diag_embed(noise_var.flatten(1).double())
    K = torch.linalg.solve(S, A @ C).mT
    mean = m + (K @ (y.flatten(1).double() - A @ m)[..., None])[..., 0]
    return mean, C - K @ A @ C
