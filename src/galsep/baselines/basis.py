"""BASIS: source separation by annealed Langevin dynamics (Jayaram & Thickstun 2020, arXiv 2002.07942; paper 000).

The K sources are sampled jointly from the relaxed posterior p_sigma(x) p_gamma(y | x) while sigma
anneals geometrically from sigma_max to sigma_min. At level sigma_i every source takes the step of
eq. (6) / Algorithm 1,

    x_k <- x_k + eta_i [s_k(x_k, sigma_i) + A_k^T (y - sum_j A_j x_j) / gamma_i^2] + sqrt(2 eta_i) eps,

with the prior score s_k = (D_k(x_k, sigma_i) - x_k) / sigma_i^2 from the learned denoisers and all
sources updated from the same state (one joint Langevin step). Departures from the paper:

- Sign: Algorithm 1 and eq. (5) print the likelihood term with a minus sign; the gradient of
  log N(y | sum_j A_j x_j, gamma^2) is the plus sign used here (the printed sign pushes the
  sources away from the mixture).
- Noise: the paper separates noiseless mixtures with gamma_i^2 = sigma_i^2. Our observations carry
  noise of known variance, so gamma_i^2 = sigma_i^2 + noise_var (elementwise): sigma_i^2 accounts
  for the noise on x_sigma, noise_var for the observation's own. The constraint then tightens to the
  noise level at the end of the annealing instead of to zero (which would overfit the noise).
- Initialisation: the paper draws x ~ Uniform(X), X the data box. The workflow's normalised data
  lie in [-2, 2] = [-sigma_max, sigma_max], so the default draws Uniform(-sigma_max, sigma_max);
  pass ``init`` for anything else.
- Output: the last state, as in the paper (no closing denoiser call): it is a draw of
  p_{sigma_min}(x | y), whose extra sigma_min noise is far below the observation noise.

Step size: eta_i = step_size sigma_i^2 / sigma_min^2 (Algorithm 1, delta = step_size), i.e. a
constant tau = step_size / sigma_min^2 relative to the noise variance. The paper's delta = 2e-5 at
sigma_min = 0.01 is tau = 0.2. The prior term contracts by at most tau per step and the likelihood
term (gamma_i^2 >= sigma_i^2) by at most tau sum_k |A_k|^2, so the step is stable for
tau (1 + sum_k |A_k|^2) < 2: tau < 2/3 for two sources with unit coefficients (tau = 1 diverges,
measured). tau = 0.5 mixes best within that bound; smaller tau freezes the chain earlier (eta
shrinks with sigma^2), leaving draws farther from the posterior for the same number of steps.

Cost: K denoiser calls per step, levels * steps_per_level steps, no vector-Jacobian products.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from galsep.inference.memory import run_chunked
from galsep.inference.mmps import Denoiser, Operator
from galsep.inference.samplers import _progress, langevin_step
from galsep.inference.schedule import VESchedule

__all__ = ["basis_sample", "basis_levels"]


def basis_levels(sigma_max: float, sigma_min: float, levels: int) -> list[float]:
    """The noise levels sigma_1 = sigma_max > ... > sigma_L = sigma_min, geometric, ``levels`` >= 2 of them."""
    if levels < 2:
        raise ValueError(f"levels must be >= 2 (sigma_max and sigma_min), got {levels}")
    schedule = VESchedule(sigma_min, sigma_max)
    t = torch.linspace(1.0, 0.0, levels, dtype=torch.float64)
    return schedule.sigma(t).tolist()


def basis_sample(denoisers: Sequence[Denoiser], operators: Sequence[Operator], y: Tensor, noise_var: Tensor, *,
                 shape: Sequence[int], sigma_max: float, sigma_min: float, levels: int, steps_per_level: int,
                 step_size: float, generator: torch.Generator | None = None, batch_size: int | None = None,
                 progress: bool = False, init: Tensor | None = None) -> Tensor:
    """Draw one joint sample of K sources per observation with BASIS annealed Langevin dynamics.

    Args:
        denoisers: K prior denoisers D_k(x (B, *S), sigma (B,)) -> E[x_k | x_k + sigma eps] (B, *S).
        operators: K observation operators A_k mapping (B, *S) -> (B, *Sy), one row per observation.
        y: observations, shape (N, *Sy).
        noise_var: per-element noise variance of y, shape (N, *Sy).
        shape: S, the shape of one source sample.
        sigma_max, sigma_min: first and last noise level (0 < sigma_min < sigma_max).
        levels: number of geometric noise levels (>= 2).
        steps_per_level: Langevin steps at each level (the paper's T).
        step_size: the paper's delta; eta_i = delta sigma_i^2 / sigma_min^2 (see the module docstring).
        generator: seeds the initial state and the Langevin noise; lives on y's device.
        batch_size: observations per chunk (memory); None = all at once. A chunk that runs out of CUDA
            memory is retried in halves; without that the chunks, and so the draws, are a plain loop's.
        progress: tqdm bar over levels, per chunk.
        init: initial state (N, K, *S); default Uniform(-sigma_max, sigma_max).
    Returns:
        samples, shape (N, K, *S).
    """
    K, N, S = len(denoisers), y.shape[0], tuple(shape)
    if K == 0 or len(operators) != K:
        raise ValueError(f"need one operator per denoiser, got {len(denoisers)} and {len(operators)}")
    if y.shape != noise_var.shape:
        raise ValueError(f"y {tuple(y.shape)} and noise_var {tuple(noise_var.shape)} differ in shape")
    if steps_per_level < 1 or step_size <= 0:
        raise ValueError(f"need steps_per_level >= 1 and step_size > 0, got {steps_per_level}, {step_size}")
    if init is not None and init.shape != (N, K, *S):
        raise ValueError(f"init has shape {tuple(init.shape)}, expected {(N, K, *S)}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sigmas = basis_levels(sigma_max, sigma_min, levels)
    tau = step_size / sigma_min**2
    chunk = N if batch_size is None else batch_size

    @torch.no_grad()
    def run(idx: slice) -> Tensor:
        ops, yc, var = [A[idx] for A in operators], y[idx], noise_var[idx]
        n = yc.shape[0]
        if init is None:
            u = torch.rand((n, K, *S), generator=generator, device=y.device, dtype=y.dtype)
            x = sigma_max * (2 * u - 1)
        else:
            x = init[idx].to(y.dtype).clone()
        for sigma in _progress(sigmas, progress, len(sigmas)):
            s = torch.full((n,), sigma, device=y.device, dtype=y.dtype)
            inv_gamma2 = 1 / (sigma**2 + var)
            eta = tau * sigma**2
            for _ in range(steps_per_level):
                # the likelihood gradient is taken at the current state, before any source moves
                r = (yc - sum(A(x[:, k]) for k, A in enumerate(ops))) * inv_gamma2
                x = torch.stack([langevin_step(D, x[:, k], s, tau, generator) + eta * A.T(r)
                                 for k, (D, A) in enumerate(zip(denoisers, ops, strict=True))], 1)
        if not torch.isfinite(x).all():
            raise FloatingPointError(f"BASIS diverged (non-finite state); step_size {step_size:g} "
                                     f"(tau = {tau:g}) is too large")
        return x

    # a chunk that runs out of CUDA memory is retried in halves (galsep.inference.memory)
    out = run_chunked(N, chunk, run, what="sampling with BASIS")
    return torch.cat(out, 0)
