"""The EM core of DDPRISM (Wagner-Carena, Akhmetzhanova & Erickson, arXiv 2510.05205, section 4 and
algorithm 1; after Rozet et al., arXiv 2405.13712): the three steps every driver composes.

    gaussian_start  a few Monte-Carlo EM laps with low-rank Gaussian priors (joint MMPS E-step, PPCA
                    M-step), the initialisation of the paper's appendix D;
    m_step          train one source's diffusion denoiser on the current posterior samples (weights
                    continue from the previous lap; optimiser and learning-rate schedule restart);
    e_step          one joint posterior draw per observation under every source's prior: joint MMPS
                    (method ``ddprism``) or Gibbs rounds (``gibbs``, the paper's appendix B).

The drivers are thin: the image pipeline's per-lap Snakemake jobs (:mod:`galsep.inference.stages`),
the 1-D manifold experiment (:mod:`galsep.manifold.em`) and ``benchmarks/manifold_oracle.py``. Every
sampler setting comes from a config ``sampler`` section through :func:`sampler_kwargs` (no hidden
defaults); the noise schedule comes from the priors (:class:`~galsep.inference.priors.Prior`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from galsep.inference.gaussian import LowRankGaussian, gaussian_em
from galsep.inference.gibbs import gibbs_sample
from galsep.inference.mmps import sample_joint_posterior
from galsep.inference.observations import Observations
from galsep.inference.priors import Prior, build_denoiser
from galsep.inference.schedule import VESchedule
from galsep.inference.training import train_denoiser

__all__ = ["MStep", "e_step", "gaussian_start", "m_step", "sampler_kwargs", "schedule_of_priors"]

Log = Callable[[str], None]

# the keys of a config ``sampler`` section, all required: the schemas document each with its default
SAMPLER_KEYS = ("steps", "corrections", "tau", "cg_iters", "precondition", "warm_start", "cg_tol", "denom_floor",
                "regularisation", "reg_threshold", "batch_size")


def sampler_kwargs(sampler: Mapping[str, Any], schedule: VESchedule) -> dict[str, Any]:
    """Arguments of :func:`~galsep.inference.mmps.sample_joint_posterior` from a config ``sampler`` section
    (predictor-corrector steps, corrections and tau; CG iterations, tolerance, curvature floor and the
    regularised re-solve; observations per call)."""
    missing = [k for k in SAMPLER_KEYS if k not in sampler]
    if missing:
        raise KeyError(f"sampler settings lack {missing}: every sampler section needs {list(SAMPLER_KEYS)}")
    kw = {k: sampler[k] for k in SAMPLER_KEYS}
    return {"schedule": schedule, **kw}


def schedule_of_priors(priors: Sequence[Prior]) -> VESchedule:
    """The one schedule every prior of a joint posterior shares."""
    first = priors[0].schedule
    for p in priors[1:]:
        if (p.schedule.sigma_min, p.schedule.sigma_max) != (first.sigma_min, first.sigma_max):
            raise ValueError(f"priors on different schedules ({first} and {p.schedule}) cannot be sampled jointly")
    return first


def gaussian_start(obs: Observations, frozen: Mapping[int, Prior], *, schedule: VESchedule, rank: int, laps: int,
                   sampler: Mapping[str, Any], generator: torch.Generator, final_estep: bool,
                   log: Callable[[int, Tensor], None] | None = None) -> tuple[list[Prior], Tensor]:
    """Gaussian EM of every source of ``obs`` not in ``frozen`` (whose priors stay fixed).

    Args:
        obs: the observations of every source in the posterior.
        frozen: source index -> its fixed prior.
        schedule, rank, laps, sampler: the VE schedule, the PPCA rank, the EM laps, the E-step's sampler.
        generator: seeds every draw.
        final_estep: draw the returned samples under the final Gaussian priors (the DDPRISM code's
            choice, used by the manifold experiment); else return the last lap's E-step samples (drawn
            before its M-step; the image pipeline's ``samples0``).
        log: called after each lap with (lap, samples).
    Returns:
        the priors of every source (learned ones Gaussian) and the samples (N, K, *S).
    """
    D = math.prod(obs.shape)
    start: list[torch.nn.Module] = [
        frozen[k] if k in frozen else LowRankGaussian.standard(D, rank, device=obs.y.device)
        for k in range(len(obs.sources))
    ]
    kw = sampler_kwargs(sampler, schedule)
    fitted, samples = gaussian_em(
        obs.y, obs.operators(), obs.variance, shape=obs.shape, rank=rank, laps=laps, priors=start,  # type: ignore[arg-type]
        fixed=tuple(frozen), generator=generator, log=None if log is None else lambda lap, _, s: log(lap, s), **kw,
    )
    priors = [frozen[k] if k in frozen else Prior.gaussian_of(g, schedule)
              for k, g in enumerate(fitted)]
    if final_estep:
        samples = sample_joint_posterior(priors, obs.operators(), obs.y, obs.variance, shape=obs.shape,
                                         generator=generator, **kw)
    return priors, samples


@dataclass
class MStep:
    """What one source's M-step made: the trained model, its prior (EMA weights) and the step losses."""

    model: torch.nn.Module
    prior: Prior
    losses: list[float]


def m_step(samples: Tensor, *, network: Mapping[str, Any], train: Mapping[str, Any], schedule: VESchedule,
           bound: float | None, init_seed: int, generator: torch.Generator, model: torch.nn.Module | None = None,
           weights: Mapping[str, Tensor] | None = None, progress: bool = False, log: Log | None = None) -> MStep:
    """Train one source's denoiser on its posterior samples (N, *S).

    A fresh network (``model`` None) draws its initial weights (and dropout) from torch's global
    generator, which is forked and seeded with ``init_seed`` so that a lap is reproducible; ``weights``
    (the previous lap's) continue training, else ``model`` continues as it is.
    """
    device = samples.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(init_seed)
        if model is None:
            model = build_denoiser(network, samples.shape[1:]).to(device)
        if weights is not None:
            model.load_state_dict(weights)
        result = train_denoiser(
            model, samples.detach(), schedule=schedule, steps=train["steps"], batch_size=train["batch_size"],  # type: ignore[arg-type]
            lr=train["lr"], lr_schedule=train["lr_schedule"], grad_clip=train["grad_clip"],
            ema_decay=train["ema_decay"], weight_decay=train["weight_decay"], generator=generator,
            augment=train["augment"], progress=progress, log=log,
        )
    return MStep(model, Prior.network_of(network, model, result.ema, schedule, bound=bound), result.losses)


def e_step(method: str, priors: Sequence[Prior], obs: Observations, sampler: Mapping[str, Any], *,
           generator: torch.Generator, gibbs: Mapping[str, Any] | None = None, previous: Tensor | None = None,
           progress: bool = False) -> Tensor:
    """One posterior draw per observation, (N, K, *S), under every source's prior.

    ``ddprism``: joint MMPS with the predictor-corrector sampler. ``gibbs``: ``gibbs["rounds"]`` rounds of
    one-source conditional draws (``gibbs["steps"]`` PC steps each) started from ``previous`` (zeros at
    first); with a single source it is the joint draw.
    """
    schedule = schedule_of_priors(priors)
    kw = sampler_kwargs(sampler, schedule)
    if method == "gibbs" and len(priors) > 1:
        if gibbs is None:
            raise ValueError("a Gibbs E-step needs its settings (rounds, steps)")
        init = previous if previous is not None else torch.zeros(len(obs), len(priors), *obs.shape,
                                                                 device=obs.y.device)
        cg = {k: kw[k] for k in ("cg_iters", "precondition", "warm_start", "cg_tol", "denom_floor", "regularisation",
                                 "reg_threshold")}
        return gibbs_sample(priors, obs.operators(), obs.y, obs.variance, shape=obs.shape, schedule=schedule,
                            rounds=gibbs["rounds"], steps=gibbs["steps"], corrections=kw["corrections"],
                            tau=kw["tau"], init=init, generator=generator, **cg)
    if method not in ("ddprism", "gibbs"):
        raise ValueError(f"unknown E-step method {method!r}: ddprism or gibbs")
    return sample_joint_posterior(priors, obs.operators(), obs.y, obs.variance, shape=obs.shape,
                                  generator=generator, progress=progress, **kw)
