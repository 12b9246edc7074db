"""The image pipeline's EM jobs: thin file drivers over :mod:`galsep.inference.em`, one Snakemake job each.

Files of a chain (``results/prior/{chain}/``; chains in :mod:`galsep.workflow`): gaussian.pt and
samples0.pt (the Gaussian start), then per lap k: lap{k}.pt (M-step on samples{k-1}.pt) and
samples{k}.pt (the E-step under lap k, gathered from estep{k}/shard{i}.pt). Checkpoints follow the one
layout of :mod:`galsep.inference.priors`; samples files are {"chain", "lap", "sources", "samples"
(N, K_trained, H, W)}.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from galsep.data.views import read_view
from galsep.errors import InputError
from galsep.inference.em import e_step, gaussian_start, m_step
from galsep.inference.memory import batch_setting, chunk_progress
from galsep.inference.observations import Observations, shard_rows, stack
from galsep.inference.priors import Prior, load_checkpoint, save_checkpoint, schedule_of
from galsep.io import atomic_path, load_torch
from galsep.seeding import derive_seed, generator, pick_device
from galsep.workflow import Chain

__all__ = ["estep_shard", "gather_samples", "gaussian_stage", "lap_stage"]

Log = Callable[[str], None]


def _chain_observations(chain: Chain, view_paths: Sequence[str]) -> Observations:
    return stack([read_view(v) for v in view_paths], chain.sources)


def _frozen(chain: Chain, frozen_paths: Sequence[str], shape: Sequence[int], bound: float,
            device: torch.device, precision: str) -> dict[int, Prior]:
    offset = len(chain.trained)
    return {offset + i: Prior.from_entry(load_checkpoint(path)["sources"][source], shape, bound=bound,
                                         where=str(path), precision=precision).to(device)
            for i, (source, path) in enumerate(zip(chain.frozen, frozen_paths, strict=True))}


def _stats(samples: torch.Tensor) -> str:
    return f"mean {samples.mean():.3g} std {samples.std():.3g} min {samples.min():.3g} max {samples.max():.3g}"


def _save_samples(path: str | Path, chain: Chain, samples: torch.Tensor, lap: int) -> None:
    """samples (N, K_trained, H, W) in normalised units."""
    with atomic_path(path) as tmp:
        torch.save({"chain": chain.name, "lap": lap, "sources": list(chain.trained), "samples": samples}, tmp)


def _load_samples(path: str | Path) -> torch.Tensor:
    data = load_torch(path)
    if "samples" not in data:
        raise InputError(f"{path} is not a samples file of the EM (no 'samples'); rerun the job that made it")
    return data["samples"]


def gaussian_stage(
    chain: Chain, view_paths: Sequence[str], frozen_paths: Sequence[str], out: str, samples_out: str,
    p: Mapping[str, Any], log: Log = print,
) -> None:
    """Gaussian EM for the chain's trained sources; writes the priors and the last E-step's samples."""
    device = pick_device(p["device"])
    obs = _chain_observations(chain, view_paths).to(device)
    em = p["em"]
    start = time.perf_counter()
    trained = len(chain.trained)

    def lap_log(lap: int, samples: torch.Tensor) -> None:
        log(f"[{chain.name}] gaussian lap {lap + 1}/{em['gaussian_laps']} {time.perf_counter() - start:.0f}s"
            f" samples: {_stats(samples[:, :trained])}")

    with batch_setting("em.sampler.batch_size") as batch:
        priors, samples = gaussian_start(
            obs, _frozen(chain, frozen_paths, obs.shape, p["clip"], device, p["precision"]),
            schedule=schedule_of(p["diffusion"]),
            rank=em["gaussian_rank"], laps=em["gaussian_laps"], sampler=em["sampler"],
            generator=generator(p["seed"], chain.name, "gaussian", device=device), final_estep=False, log=lap_log,
        )
    log(f"[{chain.name}] gaussian E-steps: {batch.describe()}")
    save_checkpoint(out, {
        "chain": chain.name, "lap": 0, "params": dict(p), "device": str(device), "seconds": time.perf_counter() - start,
        "sources": {s: pr.entry for s, pr in zip(chain.trained, priors, strict=False)},
    })
    _save_samples(samples_out, chain, samples[:, :trained].cpu(), lap=0)


def lap_stage(
    chain: Chain, lap: int, previous: str, samples_path: str, out: str, p: Mapping[str, Any], log: Log = print,
) -> None:
    """M-step of lap ``lap``: train each trained source's denoiser on the current posterior samples.

    Weights continue from the previous lap (a fresh network after the Gaussian start); the optimiser
    and learning-rate schedule restart every lap.
    """
    device = pick_device(p["device"])
    prev = load_checkpoint(previous)
    data = _load_samples(samples_path).to(device)
    t = p["em"]["train"]
    entries, losses = {}, {}
    start = time.perf_counter()
    for k, source in enumerate(chain.trained):
        before = prev["sources"][source]

        def lap_log(s: str, source: str = source) -> None:
            log(f"[{chain.name}] lap {lap} {source}: {s}")

        with batch_setting("em.train.batch_size"):  # an out-of-memory step fails naming the key (no retry)
            step = m_step(
                data[:, k], network=p["network"], train=t, schedule=schedule_of(p["diffusion"]), bound=p["clip"],
                init_seed=derive_seed(p["seed"], chain.name, "init", lap, source),
                generator=generator(p["seed"], chain.name, "train", lap, source, device=device),
                weights=before["model"] if before.get("kind") == "diffusion" else None,
                progress=p.get("progress", False), log=lap_log,
            )
        entries[source] = step.prior.entry
        losses[source] = step.losses
        log(f"[{chain.name}] lap {lap} {source}: trained {t['steps']} steps (batch {t['batch_size']})"
            f" in {time.perf_counter() - start:.0f}s,"
            f" final loss {np.mean(step.losses[-max(1, t['steps'] // 10):]):.4g}")
    save_checkpoint(out, {
        "chain": chain.name, "lap": lap, "params": dict(p), "device": str(device),
        "seconds": time.perf_counter() - start, "losses": losses, "sources": entries,
    })


def estep_shard(
    chain: Chain, lap: int, lap_path: str, frozen_paths: Sequence[str], view_paths: Sequence[str],
    shard: int, shards: int, out: str, p: Mapping[str, Any], log: Log = print,
) -> None:
    """E-step of lap ``lap`` on one shard of the chain's observations: a posterior sample per row."""
    device = pick_device(p["device"])
    obs = _chain_observations(chain, view_paths)
    rows = shard_rows(len(obs), shard, shards)
    obs = obs.rows(rows).to(device)
    ckpt = load_checkpoint(lap_path)
    priors = [Prior.from_entry(ckpt["sources"][s], obs.shape, bound=p["clip"], where=lap_path,
                               precision=p["precision"]).to(device) for s in chain.trained]
    priors += list(_frozen(chain, frozen_paths, obs.shape, p["clip"], device, p["precision"]).values())
    start = time.perf_counter()
    report = chunk_progress(log, f"[{chain.name}] lap {lap} E-step shard {shard + 1}/{shards}")
    with batch_setting("em.sampler.batch_size", progress=report) as batch:
        samples = e_step("ddprism", priors, obs, p["em"]["sampler"], progress=p.get("progress", False),
                         generator=generator(p["seed"], chain.name, "estep", lap, shard, device=device))
    trained = samples[:, : len(chain.trained)].cpu()
    log(f"[{chain.name}] lap {lap} E-step shard {shard + 1}/{shards}: {len(obs)} rows in"
        f" {time.perf_counter() - start:.0f}s ({batch.describe()}), {_stats(trained)}")
    with atomic_path(out) as tmp:
        torch.save({"rows": (rows.start, rows.stop), "samples": trained}, tmp)


def gather_samples(chain: Chain, lap: int, shard_paths: Sequence[str], out: str) -> None:
    """Concatenate E-step shards in row order."""
    parts = sorted((load_torch(s) for s in shard_paths),
                   key=lambda d: d["rows"][0])
    for a, b in zip(parts, parts[1:], strict=False):
        if a["rows"][1] != b["rows"][0]:
            raise InputError(f"E-step shards of {chain.name} lap {lap} do not tile the rows: {a['rows']} {b['rows']}")
    _save_samples(out, chain, torch.cat([d["samples"] for d in parts]), lap=lap)
