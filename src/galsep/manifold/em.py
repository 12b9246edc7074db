"""The EM driver of the manifold experiment: one stage of a chain, in process (vectors are small).

A thin driver over the EM core :mod:`galsep.inference.em` (DDPRISM, arXiv 2510.05205). A stage
(settings.Dataset.stage_views) learns the priors of its trained sources from its views with the other
sources frozen at the previous stage:
  1. Gaussian start: ``gaussian.laps`` laps of Gaussian EM, then one E-step under the final Gaussian
     priors, as the DDPRISM code does;
  2. diffusion laps: per lap, an M-step per trained source (its MLP denoiser on the current samples;
     weights continue, optimiser and LR schedule restart), then an E-step with every source's prior:
     joint MMPS (method ``ddprism``) or Gibbs rounds from the previous lap's samples (``gibbs``).
Method ``gaussian`` stops after step 1 (a sanity floor). The last E-step's samples are the posterior
the table judges. Every draw is seeded from (seed, dataset, method, stage, phase, lap, source). Priors
are kept as checkpoint entries (:mod:`galsep.inference.priors`), the same layout as the image pipeline's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from galsep.errors import ConfigError, InputError
from galsep.inference.em import e_step, gaussian_start, m_step
from galsep.inference.priors import Prior, schedule_of
from galsep.manifold.data import observations
from galsep.manifold.settings import Dataset
from galsep.seeding import derive_seed, generator

__all__ = ["per_stage", "run_stage"]

Log = Callable[[str], None]


def per_stage(value: int | Sequence[int], stage: int) -> int:
    """A count given once for all stages or as a list with one entry per stage (stage counts from 1)."""
    if isinstance(value, int):
        return value
    if stage > len(value):
        raise ConfigError(f"a per-stage list {list(value)} has no entry for stage {stage}")
    return int(value[stage - 1])


def _sinkhorn_line(samples: Tensor, truth: Tensor, sources: Sequence[int], n: int, reg: float,
                   values: dict[str, float]) -> str:
    from galsep.evaluation.metrics import sinkhorn

    if n <= 0:
        return ""
    for i, k in enumerate(sources):
        values[f"source{k + 1}"] = sinkhorn(samples[:n, i], truth[:n, i], eps=reg)
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
    assert obs.truth is not None
    key = ("manifold", ds.name, method, stage)
    label = f"[{ds.name}/{method} stage {stage}]"
    clip, schedule = em["clip"], schedule_of(em["diffusion"])
    entries: dict[int, dict[str, Any]] = {}
    if frozen:
        if previous is None:
            raise InputError(f"{label} needs the previous stage's priors for sources {[k + 1 for k in frozen]}")
        entries.update({k: previous["priors"][k] for k in frozen})
    pos = {k: i for i, k in enumerate(sources)}
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    n_hist = min(p["history_samples"], len(obs))
    mine = [pos[k] for k in trained]

    def record(lap: int, samples: Tensor, losses: dict[str, float]) -> str:
        values: dict[str, float] = {}
        line = _sinkhorn_line(samples[:, mine].cpu(), obs.truth[:, mine].cpu(), trained, n_hist,  # type: ignore[index]
                              p["sinkhorn_reg"], values)
        history.append({"lap": lap, "seconds": time.perf_counter() - start, "loss": losses, "sinkhorn": values})
        return line

    # 1. Gaussian start
    gaussian = em["gaussian"]
    laps_g = gaussian["laps"] if method != "gibbs" else em["gibbs"]["gaussian_laps"]

    def gaussian_log(lap: int, samples: Tensor) -> None:
        if (lap + 1) % max(1, laps_g // 10) == 0 or lap + 1 == laps_g:
            log(f"{label} gaussian lap {lap + 1}/{laps_g} {time.perf_counter() - start:.0f}s")

    fixed = {pos[k]: Prior.from_entry(entries[k], obs.shape, bound=clip).to(device) for k in frozen}
    priors, samples = gaussian_start(obs, fixed, schedule=schedule, rank=gaussian["rank"], laps=laps_g,
                                     sampler=gaussian["sampler"], generator=generator(seed, *key, "gaussian",
                                                                                      device=device),
                                     final_estep=True, log=gaussian_log)
    for k in trained:
        entries[k] = priors[pos[k]].entry  # type: ignore[assignment]
    log(f"{label} gaussian start done in {time.perf_counter() - start:.0f}s{record(0, samples, {})}")

    # 2. diffusion laps
    laps = 0 if method == "gaussian" else per_stage(em["gibbs"]["laps"] if method == "gibbs" else em["laps"], stage)
    models: dict[int, torch.nn.Module] = {}
    for lap in range(1, laps + 1):
        lap_start = time.perf_counter()
        losses = {}
        for k in trained:
            t = em["train"]
            step = m_step(samples[:, pos[k]], network=em["network"], train=t, schedule=schedule, bound=clip,
                          init_seed=derive_seed(seed, *key, "init", lap, k),
                          generator=generator(seed, *key, "train", lap, k, device=device), model=models.get(k))
            models[k] = step.model
            entries[k] = step.prior.entry  # type: ignore[assignment]
            losses[f"source{k + 1}"] = float(np.mean(step.losses[-max(1, t["steps"] // 10):]))
        train_s = time.perf_counter() - lap_start
        priors = [Prior.from_entry(entries[k], obs.shape, bound=clip).to(device) for k in sources]
        samples = e_step(method, priors, obs, em["sampler"], gibbs=em.get("gibbs"), previous=samples,
                         generator=generator(seed, *key, "estep", lap, device=device))
        line = record(lap, samples, losses)
        log(f"{label} lap {lap}/{laps}: loss " + " ".join(f"{k} {v:.4g}" for k, v in losses.items())
            + f", train {train_s:.0f}s, E-step {time.perf_counter() - lap_start - train_s:.0f}s,"
            f" total {time.perf_counter() - start:.0f}s{line}")
    return {
        "dataset": ds.name, "method": method, "stage": stage, "sources": sources, "trained": trained,
        "views": views, "priors": entries, "samples": samples.detach().cpu(), "history": history,
        "seconds": time.perf_counter() - start, "device": str(device), "params": dict(p),
    }
