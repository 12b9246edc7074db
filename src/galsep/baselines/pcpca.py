"""Probabilistic contrastive PCA (PCPCA, Li, Jones & Engelhardt 2020) on incomplete, noisy data.

DDPRISM (arXiv 2510.05205) appendix C.1, eq. 20-22: the target source is x = mu + W z, z ~ N(0, I_L),
seen through a per-row operator with known diagonal noise, so y_i ~ N(A_i mu, A_i W W^T A_i^T +
diag(var_i)). PCPCA maximises

    sum_{target i} log N(y_i | ...) - gamma sum_{background j} log N(y_j | ...)

over (mu, W): directions that the background view also explains are penalised. The paper writes the
negative of this as a loss. Every per-row term uses Woodbury and the matrix determinant lemma on the
L x L matrix I + M^T diag(1/var) M with M = A W, so no D x D matrix is ever formed. Elements whose
operator row is zero (masked pixels, an absent source) are left out of the likelihood: their value
and variance are arbitrary placeholders in the views.

The helpers :func:`observed`, :func:`pseudo_inverse`, :func:`loadings`, :func:`latent_posterior`
and :func:`lowrank_log_likelihood` are shared with :mod:`galsep.baselines.clvm`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from galsep.data.operators import DenseOperator, PixelOperator
from galsep.errors import ConfigError
from galsep.inference.memory import fails_at_batch, run_chunked
from galsep.inference.mmps import Operator
from galsep.inference.training import batches, lr_factor

__all__ = ["PCPCA", "fit_pcpca", "observed", "pseudo_inverse", "loadings", "latent_posterior",
           "lowrank_log_likelihood", "precision", "fill_factors", "standard_normal", "check_shapes", "maximise"]


def observed(op: Operator, y: Tensor) -> Tensor:
    """1 where an element of y sees the source (its row of A is nonzero), else 0; (N, *Sy) like y."""
    if isinstance(op, PixelOperator):
        return (op.mask * (op.coef != 0)[:, None, None]).to(y.dtype).expand_as(y)
    if isinstance(op, DenseOperator):
        return (op.matrix != 0).any(-1).to(y.dtype).expand_as(y)
    return torch.ones_like(y)


def pseudo_inverse(op: Operator, y: Tensor, shape: Sequence[int]) -> Tensor:
    """Least-squares source estimates A_i^+ y_i, (N, *Sy) -> (N, *S).

    Pixel operators: y / coef where observed (y is block-replicated, so this is P_f x plus noise);
    pixels no row observes take the mean of the rows that do (zeros would add spurious variance to
    any covariance of the estimates), 0 if none does. Dense operators: torch.linalg.pinv. Any other
    operator: the adjoint A^T y (exact for the identity).
    """
    if isinstance(op, PixelOperator):
        seen = observed(op, y) > 0
        x = torch.where(seen, y / torch.where(seen, op.coef[:, None, None], 1.0), 0.0)
        count = seen.sum(0)
        fill = x.sum(0) / count.clamp_min(1)
        return torch.where(seen, x, fill)
    if isinstance(op, DenseOperator):
        return torch.einsum("bnm,bm->bn", torch.linalg.pinv(op.matrix), y)
    return op.T(y).reshape(y.shape[0], *shape)


def loadings(op: Operator, factors: Tensor, shape: Sequence[int], n: int) -> Tensor:
    """Per-row loadings M_i = A_i W: factors (D, L) -> (n, Dy, L), applying the operator to each column."""
    L = factors.shape[1]
    cols = factors.T.reshape(1, L, *shape).expand(n, L, *shape).reshape(n * L, *shape)
    rows = torch.arange(n, device=factors.device).repeat_interleave(L)
    return op[rows](cols).reshape(n, L, -1).transpose(1, 2)


def latent_posterior(r: Tensor, M: Tensor, precision: Tensor) -> tuple[Tensor, Tensor]:
    """Exact posterior of z ~ N(0, I) given r = M z + n, n ~ N(0, diag(1 / precision)).

    Args:
        r: residuals (N, Dy); M: loadings (N, Dy, L); precision: (N, Dy), 0 on unobserved elements.
    Returns:
        mean (N, L) in r's dtype and the lower Cholesky factor (N, L, L) of the posterior precision
        K = I + M^T diag(precision) M, in float64.
    """
    # float64: K's entries reach SNR x |W|^2, and float32 rounding of the Gram matrix of nearly parallel
    # loadings makes K indefinite or its solve meaningless long before the problem is ill-posed
    M, PM = M.double(), (precision[..., None] * M).double()
    chol = torch.linalg.cholesky(M.mT @ PM + torch.eye(M.shape[-1], dtype=torch.float64, device=M.device))
    return torch.cholesky_solve(PM.mT @ r[..., None].double(), chol)[..., 0].to(r.dtype), chol


def precision(variance: Tensor, obs: Tensor) -> Tensor:
    """1 / variance where obs > 0, else 0 (the placeholder variance of unobserved elements is ignored)."""
    seen = obs > 0
    return torch.where(seen, 1 / torch.where(seen, variance, 1.0), 0.0)


def lowrank_log_likelihood(r: Tensor, M: Tensor, variance: Tensor, obs: Tensor) -> Tensor:
    """log N(r_i | 0, M_i M_i^T + diag(variance_i)) over the elements where obs_i = 1.

    The quadratic form is evaluated as min_z |r - M z|^2_P + |z|^2 (= r^T C^-1 r at z = E[z | r]), a sum
    of non-negative terms, rather than r^T P r - b^T K^-1 b, which cancels badly in float32 at high SNR.

    Args:
        r: residuals y_i - E[y_i], (N, Dy); M: loadings (N, Dy, L); variance, obs: (N, Dy).
    Returns:
        (N,) log-densities.
    """
    p = precision(variance, obs)
    z, chol = latent_posterior(r, M, p)
    e = r - (M @ z[..., None])[..., 0]
    quad = (p * e**2).sum(-1) + (z**2).sum(-1)
    logdet = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1).to(r.dtype)
    logdet = logdet + torch.where(obs > 0, variance, 1.0).log().mul(obs).sum(-1)
    return -0.5 * (quad + logdet + obs.sum(-1) * math.log(2 * math.pi))


def check_shapes(y: Tensor, variance: Tensor) -> None:
    if y.shape != variance.shape:
        raise ValueError(f"y {tuple(y.shape)} and variance {tuple(variance.shape)} differ in shape")


def standard_normal(shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal draws from ``generator`` (on its own device), moved to ``like``'s device and dtype."""
    device = generator.device if generator is not None else like.device
    return torch.randn(*shape, generator=generator, device=device).to(like)


class PCPCA(nn.Module):
    """Target-source model x = mean + factors z, z ~ N(0, I_L), with the contrastive weight gamma.

    Args:
        shape: S, one source's shape (D = prod(S)).
        latent: L, number of factors.
        gamma: weight of the background term in :meth:`objective`.

    Parameters ``mean`` (D,) and ``factors`` (D, L) (also available as ``W``).
    """

    # set by galsep.methods.pcpca: the index of the modelled source, the fit's objective per step
    target_source: int
    trace: list[float]

    def __init__(self, shape: Sequence[int], latent: int, gamma: float) -> None:
        super().__init__()
        if latent < 1:
            raise ValueError(f"latent must be positive, got {latent}")
        self.shape, self.latent, self.gamma = tuple(int(s) for s in shape), int(latent), float(gamma)
        D = math.prod(self.shape)
        self.mean = nn.Parameter(torch.zeros(D))
        self.factors = nn.Parameter(torch.zeros(D, self.latent))

    @property
    def W(self) -> Tensor:
        return self.factors

    def _residual_and_loadings(self, y: Tensor, op: Operator) -> tuple[Tensor, Tensor]:
        n = y.shape[0]
        Am = op(self.mean.reshape(self.shape).expand(n, *self.shape))
        if Am.shape != y.shape:
            raise ValueError(f"operator maps {self.shape} to {tuple(Am.shape[1:])}, observations are "
                             f"{tuple(y.shape[1:])}")
        return (y - Am).flatten(1), loadings(op, self.factors, self.shape, n)

    def log_likelihood(self, y: Tensor, op: Operator, variance: Tensor) -> Tensor:
        """log N(y_i | A_i mu, A_i W W^T A_i^T + diag(variance_i)) over observed elements; y (N, *Sy) -> (N,)."""
        check_shapes(y, variance)
        r, M = self._residual_and_loadings(y, op)
        return lowrank_log_likelihood(r, M, variance.flatten(1), observed(op, y).flatten(1))

    def objective(self, target_y: Tensor, target_op: Operator, target_var: Tensor, background_y: Tensor,
                  background_op: Operator, background_var: Tensor) -> Tensor:
        """The PCPCA objective to maximise (minus the loss of eq. 20): scalar."""
        return (self.log_likelihood(target_y, target_op, target_var).sum()
                - self.gamma * self.log_likelihood(background_y, background_op, background_var).sum())

    @torch.no_grad()
    def sample_posterior(self, y: Tensor, op: Operator, variance: Tensor, *, samples: int,
                         generator: torch.Generator | None = None, batch_size: int = 256) -> Tensor:
        """Exact draws of the target x ~ N(mu, W W^T) given y = A x + n: (N, *Sy) -> (N, samples, *S).

        x = mu + W z with z from its exact Gaussian posterior N(K^-1 M^T P r, K^-1); the prior has no
        isotropic term (the model is eq. 21's: all of x's variance lies in W's span), so neither has
        the posterior. ``batch_size`` rows at a time, halved where CUDA runs out of memory.
        """
        check_shapes(y, variance)

        def run(rows: slice) -> Tensor:
            yb, opb, vb = y[rows], op[rows], variance[rows]
            r, M = self._residual_and_loadings(yb, opb)
            z, chol = latent_posterior(r, M, precision(vb.flatten(1), observed(opb, yb).flatten(1)))
            eps = standard_normal((yb.shape[0], self.latent, samples), generator, chol)
            z = z[..., None] + torch.linalg.solve_triangular(chol.mT, eps, upper=True).to(z)
            return self.mean + torch.einsum("dl,nls->nsd", self.factors, z)

        # a chunk that runs out of CUDA memory is retried in halves (galsep.inference.memory)
        out = run_chunked(y.shape[0], batch_size, run, what="drawing from PCPCA's posterior")
        return torch.cat(out).reshape(y.shape[0], samples, *self.shape)

    @torch.no_grad()
    def sample_prior(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n draws of mean + W z, (n, *S)."""
        z = standard_normal((n, self.latent), generator, self.factors)
        return (self.mean + z @ self.factors.T).reshape(n, *self.shape)

    def state(self) -> dict[str, Any]:
        """Constructor arguments and weights, for ``torch.save``."""
        return {"shape": self.shape, "latent": self.latent, "gamma": self.gamma,
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PCPCA:
        model = cls(state["shape"], state["latent"], state["gamma"])
        model.load_state_dict(state["state_dict"])
        return model


@torch.no_grad()
def _initialise(model: PCPCA, target_y: Tensor, target_op: Operator, background_y: Tensor,
                background_op: Operator, generator: torch.Generator) -> None:
    """The paper's "smart initialisation": PCPCA's closed form on pseudo-inverse reconstructions.

    mean = mean of the target reconstructions; W = V (lambda - s^2)^1/2 from the top-L eigenpairs of
    C_target - gamma C_background with positive lambda, s^2 the median eigenvalue (the contrast's noise
    floor: most directions carry only noise); see :func:`fill_factors` for the columns left over.
    This forms the D x D contrast once (8 MB in float64 at 32 x 32); the likelihood never does.
    """
    xt = pseudo_inverse(target_op, target_y, model.shape).flatten(1).double()
    xb = pseudo_inverse(background_op, background_y, model.shape).flatten(1).double()
    mean = xt.mean(0)
    ct, cb = torch.cov(xt.T, correction=0), torch.cov(xb.T, correction=0)
    lam, vec = torch.linalg.eigh(ct - model.gamma * cb)
    floor = lam.median().clamp_min(0)
    lam, vec = lam.flip(0)[:model.latent], vec.flip(1)[:, :model.latent]
    W = vec * (lam - floor).clamp_min(0).sqrt()
    model.mean.copy_(mean)
    model.factors.copy_(fill_factors(W, model.latent, 1e-3 * xt.std().item(), generator))


def fill_factors(factors: Tensor, latent: int, scale: float, generator: torch.Generator | None) -> Tensor:
    """(D, r) -> (D, latent): columns that are missing or shorter than ``scale`` become random with norm
    ~``scale``. A zero column is a saddle point of every likelihood here and would never move."""
    D = factors.shape[0]
    scale = max(scale, 1e-6)
    W = torch.zeros(D, latent, dtype=factors.dtype, device=factors.device)
    W[:, :factors.shape[1]] = factors[:, :latent]
    jitter = scale / math.sqrt(D) * standard_normal((D, latent), generator, W)
    return torch.where(W.norm(dim=0) > scale, W, jitter)


def maximise(model: nn.Module, objective: Callable[[], Tensor], *, steps: int, lr: float, lr_schedule: str,
             batch_size: int, log: Callable[[int, float], None] | None = None) -> list[float]:
    """Adam ascent on ``objective()`` (a fresh minibatch estimate per call): the values per step, with
    ``log(step, value)`` after each. The model ends in eval mode.

    ``batch_size`` (the rows of a minibatch) is for the message of a step that runs out of CUDA memory:
    :class:`~galsep.errors.OutOfMemoryError` naming it and the enclosing ``batch_setting``'s key (not
    retried, see :func:`galsep.inference.memory.fails_at_batch`).
    """
    trace: list[float] = []
    if steps > 0:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(lr_schedule, steps))
        for step in range(steps):
            with fails_at_batch(f"fitting (step {step + 1}/{steps})", batch_size, "the fit's batch_size"):
                value = objective()
                opt.zero_grad(set_to_none=True)
                (-value).backward()
            opt.step()
            sched.step()
            trace.append(value.item())
            if log is not None:
                log(step, trace[-1])
    model.eval()
    return trace


def fit_pcpca(target_y: Tensor, target_op: Operator, target_var: Tensor, background_y: Tensor,
              background_op: Operator, background_var: Tensor, *, shape: Sequence[int], latent: int,
              gamma: float, steps: int, lr: float, batch_size: int, generator: torch.Generator,
              log: Callable[[int, float], None] | None = None) -> tuple[PCPCA, list[float]]:
    """Fit PCPCA: smart initialisation, then Adam on the objective with the LR decayed linearly to 0.

    Eq. 20 shares mu between the views, so its background term pushes mu away from the background
    mean: with equal precisions the optimum is mu = (m_target - gamma m_background) / (1 - gamma), for
    a target view y = x + b that is E[x] / (1 - gamma) + E[b], not E[x]. Long fits raise the
    objective and lose separation (the paper: "more iterations hampered performance"); its tuned
    schedule was 10 epochs at lr 1e-3 decayed linearly to 0.

    Args:
        target_y, target_var: the target view (e.g. galaxies), (Nt, *Sy); target_op: the target source's
            operator in that view.
        background_y, background_var: the background view (e.g. randoms), (Nb, *Sy); background_op: the
            background source's operator in that view.
        shape: S; latent: L; gamma: contrastive weight, gamma * Nb < Nt (otherwise the objective grows
            without bound as |W| -> infinity).
        steps, lr, batch_size: Adam steps, initial LR, rows drawn from each view per step.
        generator: draws the minibatches and the initial jitter.
        log: called as log(step, objective) after every step.
    Returns:
        the model (on the data's device, in eval mode) and the objective per step: the minibatch's
        unbiased estimate of the full objective, divided by Nt + Nb (per row).
    """
    check_shapes(target_y, target_var)
    check_shapes(background_y, background_var)
    nt, nb = target_y.shape[0], background_y.shape[0]
    if gamma < 0 or gamma * nb >= nt:
        raise ConfigError(f"pcpca gamma: need 0 <= gamma * Nb < Nt for a bounded objective, got gamma={gamma},"
                          f" Nb={nb}, Nt={nt}; lower the pcpca method's gamma")
    model = PCPCA(shape, latent, gamma).to(target_y)
    _initialise(model, target_y, target_op, background_y, background_op, generator)
    bt, bb = min(batch_size, nt), min(batch_size, nb)
    it_t, it_b = batches(nt, bt, generator), batches(nb, bb, generator)

    def objective() -> Tensor:
        i, j = next(it_t).to(target_y.device), next(it_b).to(target_y.device)
        return (nt / bt * model.log_likelihood(target_y[i], target_op[i], target_var[i]).sum()
                - gamma * nb / bb * model.log_likelihood(background_y[j], background_op[j],
                                                         background_var[j]).sum()) / (nt + nb)

    return model, maximise(model, objective, steps=steps, lr=lr, lr_schedule="linear", batch_size=max(bt, bb),
                           log=log)
