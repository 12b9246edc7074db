"""Contrastive latent variable models (CLVM, Severson et al. 2019) for K sources on incomplete data.

Observation model (DDPRISM, arXiv 2510.05205, appendix C.1, generalised from K = 2 to any K):

    y_i = sum_k A_ik x_ik + n_i,   n_i ~ N(0, diag(variance_i)),   z_ik ~ N(0, I_{L_k}),

with x_k = W_k z_k + mu_k (:class:`CLVMLinear`, exact marginal likelihood, eq. 23-26 for the latent
posterior) or x_k = decoder_k(z_k) (:class:`CLVMVAE`, ELBO with an amortised encoder that sees the
operators). A source absent from a view has a zero operator there, so its latents stay at the prior.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from galsep.baselines.pcpca import (
    check_shapes,
    fill_factors,
    latent_posterior,
    loadings,
    lowrank_log_likelihood,
    maximise,
    observed,
    precision,
    pseudo_inverse,
    standard_normal,
)
from galsep.data.operators import Index
from galsep.errors import InputError
from galsep.inference.gaussian import fit_ppca
from galsep.inference.memory import run_chunked
from galsep.inference.mmps import Operator
from galsep.inference.training import batches

__all__ = ["CLVMLinear", "CLVMVAE", "fit_clvm_linear", "fit_clvm_vae", "initial_sources", "mlp"]


def _union_observed(y: Tensor, operators: Sequence[Operator]) -> Tensor:
    """1 where any source reaches an element of y, (N, *Sy)."""
    return torch.stack([observed(op, y) for op in operators]).amax(0)


def _check(y: Tensor, operators: Sequence[Operator], variance: Tensor, K: int) -> None:
    check_shapes(y, variance)
    if len(operators) != K:
        raise ValueError(f"the model has {K} sources, got {len(operators)} operators")


def _rows(operators: Sequence[Operator], idx: Index) -> list[Operator]:
    return [op[idx] for op in operators]


@torch.no_grad()
def initial_sources(y: Tensor, operators: Sequence[Operator], *, shape: Sequence[int], latents: Sequence[int],
                    generator: torch.Generator | None) -> list[tuple[Tensor, Tensor]]:
    """Per-source (mean (D,), factors (D, L_k)) from PPCA of pseudo-inverse reconstructions.

    Sources are taken greedily, the most widely observed first (the background of a contrastive
    setup). Each is fitted on the rows where no source not yet fitted is present if there are any (for
    contrastive views: the background alone in its own view), else on every row it is present in, after
    subtracting the fitted sources' means from y. A rough start that Adam refines.
    """
    present = torch.stack([observed(op, y).flatten(1).amax(1) > 0 for op in operators])  # (K, N)
    order = sorted(range(len(operators)), key=lambda k: -int(present[k].sum()))
    residual, out, todo = y.clone(), {}, set(range(len(operators)))
    for k in order:
        todo.discard(k)
        alone = present[k].clone()
        for j in todo:
            alone &= ~present[j]
        rows = (alone if alone.sum() >= 2 else present[k]).nonzero()[:, 0]
        if rows.numel() < 2:
            raise InputError(f"source {k} is observed in fewer than 2 rows")
        x = pseudo_inverse(operators[k][rows], residual[rows], shape)
        g = fit_ppca(x, latents[k])
        out[k] = g.mean, fill_factors(g.factors, latents[k], 1e-3 * x.std().item(), generator)
        residual -= operators[k](g.mean.reshape(shape).expand(y.shape[0], *shape))
    return [out[k] for k in range(len(operators))]


class CLVMLinear(nn.Module):
    """Linear K-source CLVM: x_k = W_k z_k + mu_k.

    Args:
        shape: S, one source's shape (D = prod(S)).
        latents: L_k per source.

    Parameters ``means`` (K, D) and ``factors`` (K tensors (D, L_k)).
    """

    trace: list[float]  # the fit's objective per step, set by galsep.methods.clvm

    def __init__(self, shape: Sequence[int], latents: Sequence[int]) -> None:
        super().__init__()
        if not latents or min(latents) < 1:
            raise ValueError(f"need a positive latent size per source, got {list(latents)}")
        self.shape, self.latents = tuple(int(s) for s in shape), tuple(int(n) for n in latents)
        D = math.prod(self.shape)
        self.means = nn.Parameter(torch.zeros(len(self.latents), D))
        self.factors = nn.ParameterList([nn.Parameter(torch.zeros(D, n)) for n in self.latents])

    @property
    def sources(self) -> int:
        return len(self.latents)

    def _residual_and_loadings(self, y: Tensor, operators: Sequence[Operator]) -> tuple[Tensor, Tensor]:
        n, S = y.shape[0], self.shape
        expected = cast(Tensor, sum(op(mu.reshape(S).expand(n, *S))
                                    for op, mu in zip(operators, self.means, strict=True)))
        if expected.shape != y.shape:
            raise ValueError(f"operators map {S} to {tuple(expected.shape[1:])}, observations are "
                             f"{tuple(y.shape[1:])}")
        M = torch.cat([loadings(op, W, S, n) for op, W in zip(operators, self.factors, strict=True)], -1)
        return (y - expected).flatten(1), M

    def log_likelihood(self, y: Tensor, operators: Sequence[Operator], variance: Tensor) -> Tensor:
        """Exact log p(y_i) over observed elements, (N, *Sy) -> (N,)."""
        _check(y, operators, variance, self.sources)
        r, M = self._residual_and_loadings(y, operators)
        return lowrank_log_likelihood(r, M, variance.flatten(1), _union_observed(y, operators).flatten(1))

    @torch.no_grad()
    def sample_posterior(self, y: Tensor, operators: Sequence[Operator], variance: Tensor, *, samples: int,
                         generator: torch.Generator | None = None, batch_size: int = 256) -> Tensor:
        """Exact joint posterior draws x_k = W_k z_k + mu_k, (N, *Sy) -> (N, samples, K, *S)."""
        _check(y, operators, variance, self.sources)

        def run(rows: slice) -> Tensor:
            yb, ops, vb = y[rows], _rows(operators, rows), variance[rows]
            r, M = self._residual_and_loadings(yb, ops)
            z, chol = latent_posterior(r, M, precision(vb.flatten(1), _union_observed(yb, ops).flatten(1)))
            eps = standard_normal((yb.shape[0], M.shape[-1], samples), generator, chol)
            z = z[..., None] + torch.linalg.solve_triangular(chol.mT, eps, upper=True).to(z)
            return self._decode(z.mT)

        # a chunk that runs out of CUDA memory is retried in halves (galsep.inference.memory)
        return torch.cat(run_chunked(y.shape[0], batch_size, run, what="drawing from the linear CLVM's posterior"))

    def _decode(self, z: Tensor) -> Tensor:
        """z (..., sum L) -> x (..., K, *S)."""
        x = [mu + zk @ W.T for mu, W, zk in zip(self.means, self.factors, z.split(self.latents, -1), strict=True)]
        return torch.stack(x, -2).reshape(*z.shape[:-1], self.sources, *self.shape)

    @torch.no_grad()
    def sample_prior(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """(n, K, *S)."""
        return self._decode(standard_normal((n, sum(self.latents)), generator, self.means))

    def state(self) -> dict[str, Any]:
        """Constructor arguments and weights, for ``torch.save``."""
        return {"shape": self.shape, "latents": self.latents,
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CLVMLinear:
        model = cls(state["shape"], state["latents"])
        model.load_state_dict(state["state_dict"])
        return model


def fit_clvm_linear(y: Tensor, operators: Sequence[Operator], variance: Tensor, *, shape: Sequence[int],
                    latents: Sequence[int], steps: int, lr: float, batch_size: int, generator: torch.Generator,
                    log: Callable[[int, float], None] | None = None) -> tuple[CLVMLinear, list[float]]:
    """Maximum marginal likelihood by Adam (cosine LR to 0) from :func:`initial_sources`.

    Args:
        y, variance: all views' rows stacked, (N, *Sy); operators: K operators (N, *S) -> (N, *Sy).
        shape: S; latents: L_k per source; steps, lr, batch_size: Adam steps, peak LR, rows per step.
        generator: draws the minibatches and the initial jitter.
        log: called as log(step, mean log-likelihood of the minibatch).
    Returns:
        the model (on y's device, eval mode) and the minibatch mean log-likelihood per row at each step.
    """
    model = CLVMLinear(shape, latents).to(y)
    _check(y, operators, variance, model.sources)
    with torch.no_grad():
        for k, (mu, W) in enumerate(initial_sources(y, operators, shape=shape, latents=latents,
                                                    generator=generator)):
            model.means[k].copy_(mu)
            model.factors[k].copy_(W)
    return model, _adam(model, lambda i: model.log_likelihood(y[i], _rows(operators, i), variance[i]).mean(),
                        y.shape[0], steps=steps, lr=lr, batch_size=batch_size, generator=generator, log=log)


def _adam(model: nn.Module, objective: Callable[[Tensor], Tensor], n: int, *, steps: int, lr: float,
          batch_size: int, generator: torch.Generator, log: Callable[[int, float], None] | None) -> list[float]:
    """Maximise objective(row indices) by Adam with a cosine LR; leaves the model in eval mode."""
    device = next(model.parameters()).device
    it = batches(n, min(batch_size, n), generator)
    return maximise(model, lambda: objective(next(it).to(device)), steps=steps, lr=lr, lr_schedule="cosine",
                    batch_size=min(batch_size, n), log=log)


def mlp(features: int, out: int, hidden: int, layers: int, dropout: float) -> nn.Sequential:
    """``layers`` hidden layers Linear -> SiLU -> LayerNorm -> Dropout (DDPRISM's MLPs), then Linear."""
    widths = [features] + [hidden] * layers
    blocks = [nn.Sequential(nn.Linear(a, b), nn.SiLU(), nn.LayerNorm(b), nn.Dropout(dropout))
              for a, b in zip(widths[:-1], widths[1:], strict=True)]
    return nn.Sequential(*blocks, nn.Linear(widths[-1], out))


class CLVMVAE(nn.Module):
    """CLVM-VAE: q(z | y, A) diagonal Gaussian from an MLP encoder, x_k = decoder_k(z_k).

    The encoder sees the operators through its input, the concatenation over sources of A_k^T(y / var)
    and A_k^T(1 / var) (precision-weighted back-projections; zero on elements no source observes),
    standardised with statistics of the training data (buffers ``feature_loc``, ``feature_scale``).

    Args:
        shape: S; latents: L_k per source; hidden, layers, dropout: every MLP's width, depth and dropout.
    """

    feature_loc: Tensor
    feature_scale: Tensor
    trace: list[float]  # the fit's objective per step, set by galsep.methods.clvm

    def __init__(self, shape: Sequence[int], latents: Sequence[int], hidden: int = 256, layers: int = 3,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if not latents or min(latents) < 1:
            raise ValueError(f"need a positive latent size per source, got {list(latents)}")
        self.shape, self.latents = tuple(int(s) for s in shape), tuple(int(n) for n in latents)
        self.hidden, self.layers, self.dropout = int(hidden), int(layers), float(dropout)
        D, K = math.prod(self.shape), len(self.latents)
        self.encoder = mlp(2 * K * D, 2 * sum(self.latents), hidden, layers, dropout)
        self.decoders = nn.ModuleList(mlp(n, D, hidden, layers, dropout) for n in self.latents)
        self.register_buffer("feature_loc", torch.zeros(2 * K * D))
        self.register_buffer("feature_scale", torch.ones(2 * K * D))

    @property
    def sources(self) -> int:
        return len(self.latents)

    def features(self, y: Tensor, operators: Sequence[Operator], variance: Tensor) -> Tensor:
        """Raw encoder input, (N, *Sy) -> (N, 2 K D)."""
        p = precision(variance, _union_observed(y, operators))
        return torch.cat([op.T(p * y).flatten(1) for op in operators] + [op.T(p).flatten(1) for op in operators], 1)

    def encode(self, y: Tensor, operators: Sequence[Operator], variance: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z | y), each (N, sum L)."""
        h = self.encoder((self.features(y, operators, variance) - self.feature_loc) / self.feature_scale)
        mean, logvar = h.chunk(2, -1)
        return mean, logvar.clamp(-20.0, 10.0)

    def decode(self, z: Tensor) -> Tensor:
        """z (..., sum L) -> x (..., K, *S)."""
        x = [dec(zk) for dec, zk in zip(self.decoders, z.split(self.latents, -1), strict=True)]
        return torch.stack(x, -2).reshape(*z.shape[:-1], self.sources, *self.shape)

    def elbo(self, y: Tensor, operators: Sequence[Operator], variance: Tensor, *,
             generator: torch.Generator | None = None, samples: int = 1) -> Tensor:
        """Reparameterised ELBO per row, E_q[log N(y | sum_k A_k x_k, diag var)] - KL(q || N(0, I)); (N,).

        The likelihood counts observed elements only, as in :class:`CLVMLinear`, so the two compare.
        """
        _check(y, operators, variance, self.sources)
        mean, logvar = self.encode(y, operators, variance)
        eps = standard_normal((samples, *mean.shape), generator, mean)
        x = self.decode(mean + (0.5 * logvar).exp() * eps)  # (samples, N, K, *S)
        # row j of the flattened draws belongs to observation j % N
        ops = _rows(operators, torch.arange(y.shape[0], device=y.device).repeat(samples)) if samples > 1 else operators
        pred = cast(Tensor, sum(op(x[:, :, k].flatten(0, 1)) for k, op in enumerate(ops))).unflatten(0, (samples, -1))
        obs = _union_observed(y, operators)
        p = precision(variance, obs)
        loglik = -0.5 * ((p * (y - pred) ** 2).flatten(2).sum(-1).mean(0)
                         + (torch.where(obs > 0, variance, 1.0).log() * obs).flatten(1).sum(-1)
                         + obs.flatten(1).sum(-1) * math.log(2 * math.pi))
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(-1)
        return loglik - kl

    @torch.no_grad()
    def sample_posterior(self, y: Tensor, operators: Sequence[Operator], variance: Tensor, *, samples: int,
                         generator: torch.Generator | None = None, batch_size: int = 256) -> Tensor:
        """z ~ q(z | y), x_k = decoder_k(z_k) (dropout off): (N, *Sy) -> (N, samples, K, *S)."""
        _check(y, operators, variance, self.sources)
        training = self.training
        self.eval()

        def run(rows: slice) -> Tensor:
            mean, logvar = self.encode(y[rows], _rows(operators, rows), variance[rows])
            eps = standard_normal((mean.shape[0], samples, mean.shape[1]), generator, mean)
            return self.decode(mean[:, None] + (0.5 * logvar[:, None]).exp() * eps)

        try:  # a chunk that runs out of CUDA memory is retried in halves (galsep.inference.memory)
            out = run_chunked(y.shape[0], batch_size, run, what="drawing from the CLVM-VAE's posterior")
        finally:
            self.train(training)
        return torch.cat(out)

    @torch.no_grad()
    def sample_prior(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """(n, K, *S), dropout off."""
        training = self.training
        self.eval()
        x = self.decode(standard_normal((n, sum(self.latents)), generator, self.feature_loc))
        self.train(training)
        return x

    def state(self) -> dict[str, Any]:
        """Constructor arguments and weights, for ``torch.save``."""
        return {"shape": self.shape, "latents": self.latents, "hidden": self.hidden, "layers": self.layers,
                "dropout": self.dropout, "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CLVMVAE:
        model = cls(state["shape"], state["latents"], state["hidden"], state["layers"], state["dropout"])
        model.load_state_dict(state["state_dict"])
        return model.eval()


def fit_clvm_vae(y: Tensor, operators: Sequence[Operator], variance: Tensor, *, shape: Sequence[int],
                 latents: Sequence[int], hidden: int, layers: int, dropout: float, steps: int, lr: float,
                 batch_size: int, generator: torch.Generator,
                 log: Callable[[int, float], None] | None = None) -> tuple[CLVMVAE, list[float]]:
    """Maximise the ELBO by Adam (cosine LR to 0).

    Initial weights and dropout masks come from a forked global RNG seeded from ``generator``, so a fit
    is reproducible. The decoders start near constant outputs at :func:`initial_sources`' means.

    Args:
        y, variance: all views' rows stacked, (N, *Sy); operators: K operators (N, *S) -> (N, *Sy).
        shape: S; latents: L_k per source; hidden, layers, dropout: MLP width, depth, dropout.
        steps, lr, batch_size: Adam steps, peak LR, rows per step.
        generator: draws the minibatches, the reparameterisation noise and the RNG seed.
        log: called as log(step, mean ELBO of the minibatch).
    Returns:
        the model (on y's device, eval mode) and the minibatch mean ELBO per row at each step.
    """
    devices = [y.device] if y.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(torch.randint(2**62, (), generator=generator, device=generator.device)))
        model = CLVMVAE(shape, latents, hidden, layers, dropout).to(y)
        _check(y, operators, variance, model.sources)
        with torch.no_grad():
            f = model.features(y, operators, variance)
            std = f.std(0)
            model.feature_loc.copy_(f.mean(0))
            # constant features (an element nothing observes) pass through unscaled
            model.feature_scale.copy_(torch.where(std > 1e-6 * std.max(), std, 1.0))
            for dec, (mu, _) in zip(model.decoders, initial_sources(y, operators, shape=shape, latents=latents,
                                                                     generator=generator), strict=True):
                head = cast(nn.Linear, cast(nn.Sequential, dec)[-1])  # the output layer of :func:`mlp`
                head.bias.copy_(mu)
                # start near the mean model: a default-scale output layer adds O(1) noise to every pixel,
                # and the known small noise variance turns that into an ELBO of -1e5 per row
                head.weight.mul_(1e-2)
        trace = _adam(model, lambda i: model.elbo(y[i], _rows(operators, i), variance[i], generator=generator).mean(),
                      y.shape[0], steps=steps, lr=lr, batch_size=batch_size, generator=generator, log=log)
    return model, trace
