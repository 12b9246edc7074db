"""Final joint posterior sampling for the galaxies view, in shards of rows."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from galsep.diffusion.mmps import sample_joint_posterior
from galsep.em import load_observations, sampling_kwargs, shard_rows
from galsep.io import atomic_path
from galsep.priors import load_checkpoint, prior_of
from galsep.seeding import generator, pick_device

SOURCES = ("galaxy", "random")


def posterior_shard(
    prior_paths: Mapping[str, str], view_path: str, shard: int, shards: int, out: str, p: Mapping[str, Any],
    log: Callable[[str], None] = print,
) -> None:
    """``p['posterior']['samples']`` joint draws for each row of shard ``shard`` of the galaxies view.

    Writes {"rows": (start, stop), "draws": (n, S, K, H, W) normalised, "sources", "seconds", "device"}.
    """
    device = pick_device(p["device"])
    obs = load_observations([view_path], SOURCES)
    rows = shard_rows(len(obs), shard, shards)
    obs = obs.rows(rows)
    S = p["posterior"]["samples"]
    rep = torch.arange(len(obs)).repeat_interleave(S)
    obs = obs.rows(rep).to(device)
    priors = [prior_of(load_checkpoint(prior_paths[s]), s, bound=p["clip"]).to(device) for s in SOURCES]
    start = time.perf_counter()
    draws = sample_joint_posterior(
        priors, obs.operators(), obs.y, obs.variance, shape=tuple(obs.y.shape[1:]),
        generator=generator(p["seed"], "posterior", shard, device=device), progress=p.get("progress", False),
        **sampling_kwargs(p, p["posterior"]["sampler"]),
    )
    seconds = time.perf_counter() - start
    draws = draws.cpu().reshape(rows.stop - rows.start, S, *draws.shape[1:])
    log(f"posterior shard {shard + 1}/{shards}: {draws.shape[0]} objects x {S} draws in {seconds:.0f}s on {device}")
    with atomic_path(out) as tmp:
        torch.save({"rows": (rows.start, rows.stop), "draws": draws, "sources": list(SOURCES),
                    "seconds": seconds, "device": str(device)}, tmp)
