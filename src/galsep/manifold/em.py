"""The EM driver of the manifold experiment: one stage of a chain, in process (vectors are small).

A stage (settings.Dataset.stage_views) learns the priors of its trained sources from its views with
the other sources frozen at the previous stage:
  1. Gaussian start: ``gaussian.laps`` laps of :func:`~galsep.inference.gaussian.gaussian_em` (joint
     MMPS E-step, PPCA M-step; exact posterior sampling for Gaussian priors), then one E-step under the
     final Gaussian priors, as the DDPRISM code does;
  2. diffusion laps: per lap, train each trained source's MLP denoiser on the current samples
     (:func:`~galsep.inference.training.train_denoiser`; weights continue, optimiser and LR schedule
     restart) then an E-step with every source's prior: joint MMPS
     (:func:`~galsep.inference.mmps.sample_joint_posterior`, method ``ddprism``) or Gibbs
     (:func:`~galsep.inference.gibbs.gibbs_sample` from the previous lap's samples, method ``gibbs``).
Method ``gaussian`` stops after step 1 (a sanity floor). The last E-step's samples are the posterior
the table judges. Every draw is seeded from (seed, dataset, method, stage, phase, lap, source).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from galsep.inference.gaussian import LowRankGaussian, gaussian_em
from galsep.inference.gibbs import gibbs_sample
from galsep.inference.mmps import sample_joint_posterior
from galsep.inference.schedule import VESchedule
from galsep.inference.training import train_denoiser
from galsep.manifold.data import Observations, observations
from galsep.manifold.models import build_denoiser, denoiser, diffusion_entry, gaussian_entry
from galsep.manifold.settings import Dataset
from galsep.seeding import derive_seed, generator

Log = Callable[[str], None]


def schedule(em: Mapping[str, Any]) -> VESchedule:
    return VESchedule(em["diffusion"]["sigma_min"], em["diffusion"]["sigma_max"])


def per_stage(value: int | Sequence[int], stage: int) -> int:
    """A count given once for all stages or as a list with one entry per stage (stage counts from 1)."""
    if isinstance(value, int):
        return value
    if stage > len(value):
        raise ValueError(f"a per-stage list {list(value)} has no entry for stage {stage}")
    return int(value[stage - 1])


def cg_kwargs(sampler: Mapping[str, Any]) -> dict[str, Any]:
    """JointPosterior's CG settings from a sampler section (a null regularisation disables re-solves)."""
    return dict(cg_iters=sampler["cg_iters"], denom_floor=sampler["denom_floor"],
                regularisation=sampler["regularisation"], reg_threshold=sampler["reg_threshold"])


def joint_kwargs(em: Mapping[str, Any], sampler: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments of sample_joint_posterior (and gaussian_em's E-step) from a sampler section."""
    return dict(schedule=schedule(em), steps=sampler["steps"], corrections=sampler["corrections"],
                tau=sampler["tau"], batch_size=sampler["batch_size"], **cg_kwargs(sampler))


def estep(method: str, priors: Sequence, obs: Observations, em: Mapping[str, Any], *, previous: Tensor | None,
          gen: torch.Generator) -> Tensor:
    """One posterior draw per observation, (N, K, D): joint MMPS, or Gibbs rounds from ``previous``."""
    ops, shape = obs.operators(), (obs.matrices.shape[-1],)
    if method == "gibbs" and len(priors) > 1:
        g, s = em["gibbs"], em["sampler"]
        init = previous if previous is not None else torch.zeros(len(obs), len(priors), *shape, device=obs.y.device)
        return gibbs_sample(priors, ops, obs.y, obs.variance, shape=shape, schedule=schedule(em),
                            rounds=g["rounds"], steps=g["steps"], corrections=s["corrections"], tau=s["tau"],
                            init=init, generator=gen, **cg_kwargs(s))
    return sample_joint_posterior(priors, ops, obs.y, obs.variance, shape=shape, generator=gen,
                                  **joint_kwargs(em, em["sampler"]))


def _sinkhorn_line(samples: Tensor, truth: Tensor, sources: Sequence[int], n: int, reg: float,
                   values: dict[str, float]) -> str:
    from galsep.manifold.metrics import sinkhorn

    if n <= 0:
        return ""
    for i, k in enumerate(sources):
        values[f"source{k + 1}"] = sinkhorn(samples[:n, i], truth[:n, i], reg=reg)
    return " sinkhorn " + " ".join(f"{k} {v:.3g}" for k, v in values.items())


def run_stage(data: Mapping[str, Any], ds: Dataset, method: str, stage: int, previous: Mapping[str, Any] | None,
              p: Mapping[str, Any], device: torch.device, log: Log = print) -> dict[str, Any]:
    """Run one EM stage; returns the stage record (priors of every source so far, samples, history).

    Args:
        data: the dataset (data.load_dataset).
        ds: its description.
        method: ddprism, gibbs or gaussian.
        stage: 1-based stage; ``previous`` is stage - 1's record of the same chain (None at stage 1).
        p: {"seed", "em" (the dataset's schedule section), "history_samples", "sinkhorn_reg"}.
        device: where to compute.
    """
    em, seed = p["em"], p["seed"]
    views, trained, frozen = ds.stage_views(stage)
    sources = sorted(trained + frozen)
    obs = observations(data, views, sources).to(device)
    D = obs.matrices.shape[-1]
    key = ("manifold", ds.name, method, stage)
    label = f"[{ds.name}/{method} stage {stage}]"
    clip = em["clip"]
    entries: dict[int, dict[str, Any]] = {}
    if frozen:
        if previous is None:
            raise ValueError(f"{label} needs the previous stage's priors for sources {[k + 1 for k in frozen]}")
        entries.update({k: previous["priors"][k] for k in frozen})
    pos = {k: i for i, k in enumerate(sources)}
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    n_hist = min(p["history_samples"], len(obs))

    # 1. Gaussian start
    gaussian = em["gaussian"]
    laps_g = gaussian["laps"] if method != "gibbs" else em["gibbs"]["gaussian_laps"]
    priors = [denoiser(entries[k], D, clip=clip, device=device) if k in frozen
              else LowRankGaussian.standard(D, gaussian["rank"], device=device) for k in sources]
    gen = generator(seed, *key, "gaussian", device=device)

    def gaussian_log(lap: int, pri, samples) -> None:
        every = max(1, laps_g // 10)
        if (lap + 1) % every == 0 or lap + 1 == laps_g:
            log(f"{label} gaussian lap {lap + 1}/{laps_g} {time.perf_counter() - start:.0f}s")

    priors, _ = gaussian_em(obs.y, obs.operators(), obs.variance, shape=(D,), rank=gaussian["rank"], laps=laps_g,
                            priors=priors, fixed=tuple(pos[k] for k in frozen), generator=gen, log=gaussian_log,
                            **joint_kwargs(em, gaussian["sampler"]))
    samples = sample_joint_posterior(priors, obs.operators(), obs.y, obs.variance, shape=(D,), generator=gen,
                                     **joint_kwargs(em, gaussian["sampler"]))
    for k in trained:
        entries[k] = gaussian_entry(priors[pos[k]])
    values: dict[str, float] = {}
    line = _sinkhorn_line(samples[:, [pos[k] for k in trained]].cpu(), obs.truth[:, [pos[k] for k in trained]].cpu(),
                          trained, n_hist, p["sinkhorn_reg"], values)
    history.append({"lap": 0, "seconds": time.perf_counter() - start, "loss": {}, "sinkhorn": values})
    log(f"{label} gaussian start done in {time.perf_counter() - start:.0f}s{line}")

    # 2. diffusion laps
    laps = 0 if method == "gaussian" else per_stage(em["gibbs"]["laps"] if method == "gibbs" else em["laps"], stage)
    models: dict[int, torch.nn.Module] = {}
    for lap in range(1, laps + 1):
        t = em["train"]
        lap_start = time.perf_counter()
        losses = {}
        for k in trained:
            # a fresh network's initial weights (and dropout) draw from torch's global generator
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(derive_seed(seed, *key, "init", lap, k))
                if k not in models:
                    models[k] = build_denoiser(em["network"], D).to(device)
                result = train_denoiser(
                    models[k], samples[:, pos[k]].detach(), schedule=schedule(em), steps=t["steps"],
                    batch_size=t["batch_size"], lr=t["lr"], lr_schedule=t["lr_schedule"], grad_clip=t["grad_clip"],
                    ema_decay=t["ema_decay"], weight_decay=t["weight_decay"],
                    generator=generator(seed, *key, "train", lap, k, device=device),
                )
            entries[k] = diffusion_entry(em["network"], models[k], result.ema)
            losses[f"source{k + 1}"] = float(np.mean(result.losses[-max(1, t["steps"] // 10):]))
        train_s = time.perf_counter() - lap_start
        priors = [denoiser(entries[k], D, clip=clip, device=device) for k in sources]
        samples = estep(method, priors, obs, em, previous=samples,
                        gen=generator(seed, *key, "estep", lap, device=device))
        values = {}
        line = _sinkhorn_line(samples[:, [pos[k] for k in trained]].cpu(),
                              obs.truth[:, [pos[k] for k in trained]].cpu(), trained, n_hist, p["sinkhorn_reg"], values)
        history.append({"lap": lap, "seconds": time.perf_counter() - start, "loss": losses, "sinkhorn": values})
        log(f"{label} lap {lap}/{laps}: loss " + " ".join(f"{k} {v:.4g}" for k, v in losses.items())
            + f", train {train_s:.0f}s, E-step {time.perf_counter() - lap_start - train_s:.0f}s,"
            f" total {time.perf_counter() - start:.0f}s{line}")
    return {
        "dataset": ds.name, "method": method, "stage": stage, "sources": sources, "trained": trained,
        "views": views, "priors": entries, "samples": samples.detach().cpu(), "history": history,
        "seconds": time.perf_counter() - start, "device": str(device), "params": dict(p),
    }
