"""The EM stages of DDPRISM: Gaussian initialisation, diffusion laps and sharded E-steps.

A *chain* learns the priors of some sources from some views, with other sources' priors frozen:
    contrastive: chain "random" (randoms view, learns random), then chain "galaxy" (galaxies view,
                 learns galaxy, random frozen at its last lap) - DDPRISM's simplified algorithm;
    joint:       chain "joint" (all views at once, learns every source) - DDPRISM's algorithm 1.
Files of a chain (``results/prior/{chain}/``): gaussian.pt, samples0.pt (its last E-step), then per
lap k: lap{k}.pt (trained on samples{k-1}.pt) and samples{k}.pt (posterior under lap k, gathered from
estep{k}/shard{i}.pt).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galsep.inference.gaussian import LowRankGaussian, gaussian_em
from galsep.inference.mmps import sample_joint_posterior
from galsep.inference.schedule import VESchedule
from galsep.inference.training import train_denoiser
from galsep.io import atomic_path
from galsep.data.operators import PixelOperator
from galsep.inference.priors import build_denoiser, load_checkpoint, prior_of, save_checkpoint
from galsep.seeding import derive_seed, generator, pick_device
from galsep.data.views import read_view

Log = Callable[[str], None]


@dataclass(frozen=True)
class Chain:
    """Which views a chain learns from, which sources it trains and which it takes frozen."""

    name: str
    views: tuple[str, ...]
    trained: tuple[str, ...]
    frozen: tuple[str, ...] = ()


def chains(schedule: str, views: Sequence[str]) -> list[Chain]:
    """The chains of a schedule, in the order they run."""
    if schedule == "contrastive":
        return [Chain("random", ("randoms",), ("random",)), Chain("galaxy", ("galaxies",), ("galaxy",), ("random",))]
    if schedule == "joint":
        mixed = tuple(v for v in views if v.startswith("mixed_")) or ("randoms", "galaxies")
        return [Chain("joint", mixed, ("galaxy", "random"))]
    raise ValueError(f"unknown EM schedule {schedule!r}: contrastive or joint")


@dataclass
class Observations:
    """The stacked observations of a chain's views, for the sources the chain samples."""

    sources: tuple[str, ...]
    y: torch.Tensor  # (N, H, W)
    variance: torch.Tensor  # (N, H, W)
    mask: torch.Tensor  # (N, H, W)
    factor: torch.Tensor  # (N,)
    coef: torch.Tensor  # (N, K)

    def operators(self) -> list[PixelOperator]:
        return [PixelOperator(self.mask, self.factor, self.coef[:, k]) for k in range(len(self.sources))]

    def rows(self, idx: slice) -> Observations:
        return Observations(
            self.sources, self.y[idx], self.variance[idx], self.mask[idx], self.factor[idx], self.coef[idx]
        )

    def to(self, device: torch.device) -> Observations:
        return Observations(
            self.sources, *(t.to(device) for t in (self.y, self.variance, self.mask, self.factor, self.coef))
        )

    def __len__(self) -> int:
        return self.y.shape[0]


def load_observations(view_paths: Sequence[str | Path], sources: Sequence[str]) -> Observations:
    """Stack views, keeping the coefficient columns of ``sources`` (in that order)."""
    parts = [read_view(p) for p in view_paths]
    cols = [[v.sources.index(s) for s in sources] for v in parts]
    return Observations(
        tuple(sources),
        torch.cat([v.y for v in parts]),
        torch.cat([v.variance for v in parts]),
        torch.cat([v.mask for v in parts]),
        torch.cat([v.factor for v in parts]),
        torch.cat([v.coef[:, c] for v, c in zip(parts, cols)]),
    )


def sampled_sources(chain: Chain) -> tuple[str, ...]:
    """Sources in the chain's posterior: trained then frozen (a source absent from every view of the
    chain, like the galaxy in the randoms view, is left out: its posterior is its prior)."""
    return chain.trained + chain.frozen


def shard_rows(n: int, shard: int, shards: int) -> slice:
    """Contiguous block ``shard`` of ``shards`` over n rows."""
    bounds = np.linspace(0, n, shards + 1).round().astype(int)
    return slice(int(bounds[shard]), int(bounds[shard + 1]))


def _schedule(p: Mapping[str, Any]) -> VESchedule:
    return VESchedule(p["diffusion"]["sigma_min"], p["diffusion"]["sigma_max"])


def sampling_kwargs(p: Mapping[str, Any], sampler: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments of ``sample_joint_posterior`` from the stage settings and one ``sampler`` section."""
    return dict(
        schedule=_schedule(p),
        steps=sampler["steps"],
        corrections=sampler["corrections"],
        tau=sampler["tau"],
        cg_iters=sampler["cg_iters"],
        batch_size=sampler["batch_size"],
    )


def _frozen_priors(chain: Chain, frozen_paths: Sequence[str | Path], bound: float) -> list:
    return [
        prior_of(load_checkpoint(path), source, bound=bound)
        for source, path in zip(chain.frozen, frozen_paths, strict=True)
    ]


def _stats(samples: torch.Tensor) -> str:
    return f"mean {samples.mean():.3g} std {samples.std():.3g} min {samples.min():.3g} max {samples.max():.3g}"


def gaussian_stage(
    chain: Chain, view_paths: Sequence[str], frozen_paths: Sequence[str], out: str, samples_out: str,
    p: Mapping[str, Any], log: Log = print,
) -> None:
    """Gaussian EM for the chain's trained sources; writes the priors and the last E-step's samples."""
    device = pick_device(p["device"])
    obs = load_observations(view_paths, sampled_sources(chain)).to(device)
    shape = tuple(obs.y.shape[1:])
    gen = generator(p["seed"], chain.name, "gaussian", device=device)
    frozen = [m.to(device) for m in _frozen_priors(chain, frozen_paths, p["clip"])]
    D = int(np.prod(shape))
    priors = [LowRankGaussian.standard(D, p["em"]["gaussian_rank"], device=device) for _ in chain.trained]
    fixed = tuple(range(len(chain.trained), len(chain.trained) + len(frozen)))
    start = time.perf_counter()

    def lap_log(lap: int, pri, samples) -> None:
        log(f"[{chain.name}] gaussian lap {lap + 1}/{p['em']['gaussian_laps']} {time.perf_counter() - start:.0f}s"
            f" samples: {_stats(samples[:, : len(chain.trained)])}")

    priors, samples = gaussian_em(
        obs.y, obs.operators(), obs.variance, shape=shape, rank=p["em"]["gaussian_rank"],
        laps=p["em"]["gaussian_laps"], priors=priors + frozen, fixed=fixed, generator=gen, log=lap_log,
        **sampling_kwargs(p, p["em"]["sampler"]),
    )
    save_checkpoint(out, {
        "kind": "gaussian", "chain": chain.name, "lap": 0, "params": dict(p), "device": str(device),
        "seconds": time.perf_counter() - start,
        "sources": {s: {"gaussian": pr.state_dict()} for s, pr in zip(chain.trained, priors)},
    })
    _save_samples(samples_out, chain, samples[:, : len(chain.trained)].cpu(), lap=0)


def _save_samples(path: str | Path, chain: Chain, samples: torch.Tensor, lap: int) -> None:
    """samples (N, K_trained, H, W) in normalised units."""
    with atomic_path(path) as tmp:
        torch.save({"chain": chain.name, "lap": lap, "sources": list(chain.trained), "samples": samples}, tmp)


def lap_stage(
    chain: Chain, lap: int, previous: str, samples_path: str, out: str, p: Mapping[str, Any], log: Log = print,
) -> None:
    """M-step of lap ``lap``: train each trained source's denoiser on the current posterior samples.

    Weights continue from the previous lap (a fresh network after the Gaussian start); the optimiser
    and learning-rate schedule restart every lap.
    """
    device = pick_device(p["device"])
    prev = load_checkpoint(previous)
    data = torch.load(samples_path, map_location="cpu", weights_only=False)["samples"].to(device)
    t = p["em"]["train"]
    entries, losses = {}, {}
    start = time.perf_counter()
    for k, source in enumerate(chain.trained):
        # the fresh network's initial weights (and dropout) draw from torch's global generator
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(p["seed"], chain.name, "init", lap, source))
            model = build_denoiser(p["network"])
            if prev["kind"] == "diffusion":
                model.load_state_dict(prev["sources"][source]["model"])
            gen = generator(p["seed"], chain.name, "train", lap, source, device=device)
            result = train_denoiser(
                model, data[:, k], schedule=_schedule(p), steps=t["steps"], batch_size=t["batch_size"], lr=t["lr"],
                lr_schedule=t["lr_schedule"], grad_clip=t["grad_clip"], ema_decay=t["ema_decay"],
                weight_decay=t["weight_decay"], generator=gen, progress=p.get("progress", False),
                log=lambda s, source=source: log(f"[{chain.name}] lap {lap} {source}: {s}"),
            )
        entries[source] = {"model": model.state_dict(), "ema": result.ema.state_dict()}
        losses[source] = result.losses
        log(f"[{chain.name}] lap {lap} {source}: trained {t['steps']} steps in {time.perf_counter() - start:.0f}s,"
            f" final loss {np.mean(result.losses[-max(1, t['steps'] // 10):]):.4g}")
    save_checkpoint(out, {
        "kind": "diffusion", "chain": chain.name, "lap": lap, "network": dict(p["network"]), "params": dict(p),
        "device": str(device), "seconds": time.perf_counter() - start, "losses": losses, "sources": entries,
    })


def estep_shard(
    chain: Chain, lap: int, lap_path: str, frozen_paths: Sequence[str], view_paths: Sequence[str],
    shard: int, shards: int, out: str, p: Mapping[str, Any], log: Log = print,
) -> None:
    """E-step of lap ``lap`` on one shard of the chain's observations: a posterior sample per row."""
    device = pick_device(p["device"])
    obs = load_observations(view_paths, sampled_sources(chain))
    rows = shard_rows(len(obs), shard, shards)
    obs = obs.rows(rows).to(device)
    ckpt = load_checkpoint(lap_path)
    priors = [prior_of(ckpt, s, bound=p["clip"]).to(device) for s in chain.trained] + [
        m.to(device) for m in _frozen_priors(chain, frozen_paths, p["clip"])
    ]
    gen = generator(p["seed"], chain.name, "estep", lap, shard, device=device)
    start = time.perf_counter()
    samples = sample_joint_posterior(
        priors, obs.operators(), obs.y, obs.variance, shape=tuple(obs.y.shape[1:]), generator=gen,
        progress=p.get("progress", False), **sampling_kwargs(p, p["em"]["sampler"]),
    )
    trained = samples[:, : len(chain.trained)].cpu()
    log(f"[{chain.name}] lap {lap} E-step shard {shard + 1}/{shards}: {len(obs)} rows in"
        f" {time.perf_counter() - start:.0f}s, {_stats(trained)}")
    with atomic_path(out) as tmp:
        torch.save({"rows": (rows.start, rows.stop), "samples": trained}, tmp)


def gather_samples(chain: Chain, lap: int, shard_paths: Sequence[str], out: str) -> None:
    """Concatenate E-step shards in row order."""
    parts = sorted((torch.load(s, map_location="cpu", weights_only=False) for s in shard_paths),
                   key=lambda d: d["rows"][0])
    for a, b in zip(parts, parts[1:]):
        if a["rows"][1] != b["rows"][0]:
            raise ValueError(f"E-step shards of {chain.name} lap {lap} do not tile the rows: {a['rows']} {b['rows']}")
    _save_samples(out, chain, torch.cat([d["samples"] for d in parts]), lap=lap)
