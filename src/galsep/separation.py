"""The separation stage: every registered method's draws of the galaxy and the random light, in one format.

The methods are :mod:`galsep.methods`' registry. Methods that use the EM-learned priors draw with the
priors of ``results/prior``; fitted methods are fitted on the randoms (background) and galaxies (target)
views by :func:`fit_stage` into ``results/baselines/{method}.pt``. Every method writes shards
``{"rows", "draws" (n, S, K, H, W) normalised, "sources", "method", "seconds", "device"}`` (and
``"mean_estimates"``, same shape, for a method whose :meth:`~galsep.methods.Method.separate` gives them), so the
catalogue and the evaluation treat them alike. A method that models every source but one (PCPCA models
the galaxy only) gets that source's light as the observation minus the others' on observed pixels, so
that the draws add up to the observation like every other method's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor

from galsep.data.views import read_view
from galsep.errors import ConfigError, InputError
from galsep.inference.memory import batch_setting, chunk_progress
from galsep.inference.observations import Observations, shard_rows, stack
from galsep.inference.priors import Prior, load_checkpoint
from galsep.io import atomic_path, load_torch
from galsep.methods import Contrast, Method, get
from galsep.seeding import generator, pick_device
from galsep.workflow import SOURCES

__all__ = ["contrast", "fill_residual", "fit_stage", "separation_shard"]

Log = Callable[[str], None]


def contrast(obs: Observations, target: str = "galaxy", background: str = "random") -> Contrast:
    """The contrastive split of stacked views: rows holding ``target`` against rows without it."""
    t, b = obs.sources.index(target), obs.sources.index(background)
    return Contrast(obs.rows(obs.holding(t)), obs.rows(obs.lacking(t)), obs, t, b)


def _check_pixels(method: Method, obs: Observations) -> None:
    if method.full_resolution and (obs.mask is None or obs.factor is None or bool((obs.factor != 1).any())):
        raise ConfigError(f"method {method.name!r} needs full-resolution pixel observations: set"
                          " views.downsample_2x and views.downsample_4x to 0")


def fit_stage(name: str, view_paths: Sequence[str], out: str, p: Mapping[str, Any], log: Log = print) -> None:
    """Fit a fitted method on the randoms and galaxies views and save its model to ``out``."""
    method = get(name)
    if not method.fitted:
        raise ConfigError(f"method {name!r} is not fitted (it draws with the EM priors): nothing to fit")
    device = pick_device(p["device"])
    obs = stack([read_view(v) for v in view_paths], SOURCES).to(device)
    _check_pixels(method, obs)
    start = time.perf_counter()
    model = method.fit(contrast(obs), p["settings"], generator=generator(p["seed"], "baseline", name, device=device),
                       log=log)
    seconds = time.perf_counter() - start
    log(f"[{name}] fitted on {len(obs)} observations in {seconds:.0f}s on {device}")
    with atomic_path(out) as tmp:
        torch.save({"method": name, "model": method.state(model), "trace": list(getattr(model, "trace", [])),
                    "params": dict(p), "seconds": seconds, "device": str(device)}, tmp)


def _load_model(method: Method, path: str, device: torch.device) -> object:
    ckpt = load_torch(path)
    if ckpt.get("method") != method.name:
        raise InputError(f"{path} holds a {ckpt.get('method')!r} model, not {method.name!r}")
    return method.load(ckpt["model"], device)


def fill_residual(draws: Tensor, obs: Observations) -> Tensor:
    """Draws (n, S, K, *S) with exactly one all-NaN source get it as the masked residual of the others."""
    missing = [k for k in range(draws.shape[2]) if torch.isnan(draws[:, :, k]).all()]
    if len(missing) != 1 or obs.mask is None:
        return draws
    (j,) = missing
    n, S = draws.shape[:2]
    rep = torch.arange(n, device=draws.device).repeat_interleave(S)
    ops = obs.operators()
    # a Tensor: the sum has a term for every source but j
    model = cast(Tensor, sum(ops[k][rep](draws[:, :, k].flatten(0, 1)) for k in range(draws.shape[2]) if k != j))
    draws = draws.clone()
    draws[:, :, j] = obs.mask[:, None] * (obs.y[:, None] - model.unflatten(0, (n, S)))
    return draws


def separation_shard(
    name: str, view_path: str, shard: int, shards: int, out: str, p: Mapping[str, Any], *,
    prior_paths: Sequence[str] = (), model_path: str | None = None, log: Log = print,
) -> None:
    """Draws of every row of shard ``shard`` of the galaxies view by method ``name``.

    ``prior_paths`` are the galaxy and random priors (methods that use them), ``model_path`` the fitted
    model (the others). Writes the shard format of the module docstring.
    """
    method = get(name)
    device = pick_device(p["device"])
    obs = read_view(view_path).select(SOURCES)
    rows = shard_rows(len(obs), shard, shards)
    obs = obs.rows(rows).to(device)
    _check_pixels(method, obs)
    S = 1 if method.deterministic else p["settings"]["samples"]
    gen = generator(p["seed"], "separation", name, shard, device=device)
    start = time.perf_counter()
    if method.uses_priors:
        if len(prior_paths) != len(SOURCES):
            raise ConfigError(f"method {name!r} needs one prior per source {SOURCES}, got {list(prior_paths)}")
        model: Any = [Prior.from_entry(load_checkpoint(path)["sources"][s], obs.shape, bound=p["clip"],
                                       where=path, precision=p["precision"]).to(device)
                      for s, path in zip(SOURCES, prior_paths, strict=True)]
    elif method.fitted:
        if model_path is None:
            raise ConfigError(f"method {name!r} needs its fitted model (results/baselines/{name}.pt)")
        model = _load_model(method, model_path, device)
    else:
        model = None  # a method that needs neither priors nor a fit (it works on each observation alone)
    section = method.section if method.section != "methods" else f"methods.{name}"
    report = chunk_progress(log, f"{name} shard {shard + 1}/{shards}")
    with batch_setting(f"{section}.sampler.batch_size", progress=report) as batch:  # methods that draw with MMPS
        draws, mean = method.separate(model, obs, S, p["settings"], generator=gen, progress=p.get("progress", False))
        draws = fill_residual(draws, obs)
    seconds = time.perf_counter() - start
    draws = draws.detach().cpu()
    used = "" if batch.requested is None else f" ({batch.describe()})"
    log(f"{name} shard {shard + 1}/{shards}: {draws.shape[0]} objects x {draws.shape[1]} draws in"
        f" {seconds:.0f}s on {device}{used}")
    shard_data = {"rows": (rows.start, rows.stop), "draws": draws, "sources": list(SOURCES), "method": name,
                  "seconds": seconds, "device": str(device)}
    if mean is not None:
        shard_data["mean_estimates"] = mean.detach().cpu()
    with atomic_path(out) as tmp:
        torch.save(shard_data, tmp)
