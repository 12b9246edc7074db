"""The separation stage: every method's draws of the galaxy and the random light, in one format.

Methods (config ``method`` for the catalogue, ``compare`` for the side-by-side table):
    ddprism      joint MMPS posterior under the EM-learned diffusion priors (the default)
    gibbs        DDPRISM's Gibbs alternative with the same priors (appendix B)
    basis        BASIS annealed Langevin with the same priors' scores
    pcpca        probabilistic contrastive PCA (target source only: the random light is the residual)
    clvm_linear  contrastive latent variable model, linear
    clvm_vae     contrastive latent variable model, VAE
    nes          Neural Egg Separation (deterministic: one "draw")
The diffusion methods share the priors of ``results/prior``; the others are fitted on the randoms
(background) and galaxies (target) views by :func:`fit_baseline` into ``results/baselines/{method}.pt``.
Every method writes shards ``{"rows", "draws" (n, S, K, H, W) normalised, "sources", "method",
"seconds", "device"}``, so the catalogue and the evaluation treat them alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from galsep.inference.em import Observations, load_observations, sampling_kwargs, shard_rows
from galsep.io import atomic_path
from galsep.inference.priors import load_checkpoint, prior_of
from galsep.seeding import generator, pick_device

SOURCES = ("galaxy", "random")
DIFFUSION = ("ddprism", "gibbs", "basis")
BASELINES = ("pcpca", "clvm_linear", "clvm_vae", "nes")
METHODS = DIFFUSION + BASELINES

Log = Callable[[str], None]


def _contrast(obs: Observations) -> tuple[Observations, Observations]:
    """(target, background) rows: galaxies-view rows hold the galaxy, randoms-view rows do not."""
    target = obs.coef[:, 0] > 0
    idx = torch.arange(len(obs))
    return obs.rows(idx[target]), obs.rows(idx[~target])


def fit_baseline(method: str, view_paths: Sequence[str], out: str, p: Mapping[str, Any], log: Log = print) -> None:
    """Fit a non-diffusion method on the randoms and galaxies views and save it to ``out``."""
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}: one of {', '.join(BASELINES)}")
    device = pick_device(p["device"])
    obs = load_observations(view_paths, SOURCES).to(device)
    shape = tuple(obs.y.shape[1:])
    s = p["settings"]
    gen = generator(p["seed"], "baseline", method, device=device)
    start = time.perf_counter()
    def fit_log(step: int, value: float) -> None:
        # a line per tenth of the fit: the objective per row and the time so far
        if (step + 1) % max(1, s["steps"] // 10) == 0 or step + 1 == s["steps"]:
            log(f"[{method}] step {step + 1}/{s['steps']}: objective {value:.5g} ({time.perf_counter() - start:.0f}s)")

    if method == "pcpca":
        from galsep.baselines.pcpca import fit_pcpca

        tgt, bkg = _contrast(obs)
        model, trace = fit_pcpca(
            tgt.y, tgt.operators()[0], tgt.variance, bkg.y, bkg.operators()[1], bkg.variance, shape=shape,
            latent=s["latent"], gamma=s["gamma"], steps=s["steps"], lr=s["lr"], batch_size=s["batch_size"],
            generator=gen, log=fit_log,
        )
    elif method in ("clvm_linear", "clvm_vae"):
        from galsep.baselines.clvm import fit_clvm_linear, fit_clvm_vae

        latents = [s["latents"][src] for src in SOURCES]
        common = dict(shape=shape, latents=latents, steps=s["steps"], lr=s["lr"], batch_size=s["batch_size"],
                      generator=gen, log=fit_log)
        if method == "clvm_linear":
            model, trace = fit_clvm_linear(obs.y, obs.operators(), obs.variance, **common)
        else:
            model, trace = fit_clvm_vae(obs.y, obs.operators(), obs.variance, hidden=s["hidden"],
                                        layers=s["layers"], dropout=s["dropout"], **common)
    else:
        from galsep.baselines.nes import fit_nes

        tgt, bkg = _contrast(obs)
        model, trace = fit_nes(
            tgt.y, tgt.mask, bkg.y, bkg.mask, iterations=s["iterations"], steps=s["steps"],
            batch_size=s["batch_size"], lr=s["lr"], channels=s["channels"], generator=gen,
            log=lambda line: log(f"[{method}] {line}"), mixture_factor=tgt.factor, source_factor=bkg.factor,
        )
    seconds = time.perf_counter() - start
    log(f"[{method}] fitted on {len(obs)} observations in {seconds:.0f}s on {device}")
    with atomic_path(out) as tmp:
        torch.save({"method": method, "model": model.state(), "trace": trace, "params": dict(p),
                    "seconds": seconds, "device": str(device)}, tmp)


def _load_baseline(method: str, path: str):
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt["method"] != method:
        raise ValueError(f"{path} holds a {ckpt['method']!r} model, not {method!r}")
    if method == "pcpca":
        from galsep.baselines.pcpca import PCPCA as cls
    elif method == "clvm_linear":
        from galsep.baselines.clvm import CLVMLinear as cls
    elif method == "clvm_vae":
        from galsep.baselines.clvm import CLVMVAE as cls
    else:
        from galsep.baselines.nes import NES as cls
    return cls.from_state(ckpt["model"])


def _diffusion_draws(method: str, obs: Observations, prior_paths: Sequence[str], S: int, p: Mapping[str, Any],
                     gen: torch.Generator, device: torch.device) -> Tensor:
    """(n * S, K, H, W) draws of the rows of ``obs`` repeated S times."""
    priors = [prior_of(load_checkpoint(path), s, bound=p["clip"]).to(device)
              for s, path in zip(SOURCES, prior_paths, strict=True)]
    rep = obs.rows(torch.arange(len(obs)).repeat_interleave(S)).to(device)
    shape = tuple(obs.y.shape[1:])
    s = p["settings"]
    if method == "ddprism":
        from galsep.inference.mmps import sample_joint_posterior

        return sample_joint_posterior(priors, rep.operators(), rep.y, rep.variance, shape=shape, generator=gen,
                                      progress=p.get("progress", False), **sampling_kwargs(p, s["sampler"]))
    if method == "gibbs":
        from galsep.inference.gibbs import gibbs_sample

        kw = sampling_kwargs(p, s["sampler"])
        return gibbs_sample(priors, rep.operators(), rep.y, rep.variance, shape=shape, rounds=s["rounds"],
                            generator=gen, **kw)
    from galsep.baselines.basis import basis_sample

    return basis_sample(priors, rep.operators(), rep.y, rep.variance, shape=shape,
                        sigma_max=p["diffusion"]["sigma_max"], sigma_min=p["diffusion"]["sigma_min"],
                        levels=s["levels"], steps_per_level=s["steps_per_level"], step_size=s["step_size"],
                        generator=gen, batch_size=s["batch_size"], progress=p.get("progress", False))


def _baseline_draws(method: str, model, obs: Observations, S: int, gen: torch.Generator,
                    device: torch.device) -> Tensor:
    """(n, S, K, H, W) draws of a fitted baseline."""
    obs = obs.to(device)
    ops = obs.operators()
    if method == "nes":
        model.net.to(device)
        galaxy, random = model.separate(obs.y, obs.mask, factor=obs.factor)
        return torch.stack([galaxy, random], 1)[:, None]
    model = model.to(device)
    if method == "pcpca":
        galaxy = model.sample_posterior(obs.y, ops[0], obs.variance, samples=S, generator=gen)
        # PCPCA models the target source only: the contaminating light is what the galaxy leaves
        rep = torch.arange(len(obs), device=device).repeat_interleave(S)
        random = obs.mask[:, None] * (obs.y[:, None] - ops[0][rep](galaxy.flatten(0, 1)).unflatten(0, (len(obs), S)))
        return torch.stack([galaxy, random], 2)
    return model.sample_posterior(obs.y, ops, obs.variance, samples=S, generator=gen)


def separation_shard(
    method: str, view_path: str, shard: int, shards: int, out: str, p: Mapping[str, Any], *,
    prior_paths: Sequence[str] = (), model_path: str | None = None, log: Log = print,
) -> None:
    """Draws of every row of shard ``shard`` of the galaxies view by ``method``.

    ``prior_paths`` are the galaxy and random priors (diffusion methods), ``model_path`` the fitted
    baseline (the others). Writes the shard format of the module docstring.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: one of {', '.join(METHODS)}")
    device = pick_device(p["device"])
    obs = load_observations([view_path], SOURCES)
    rows = shard_rows(len(obs), shard, shards)
    obs = obs.rows(rows)
    S = 1 if method == "nes" else p["settings"]["samples"]
    gen = generator(p["seed"], "separation", method, shard, device=device)
    start = time.perf_counter()
    if method in DIFFUSION:
        draws = _diffusion_draws(method, obs, prior_paths, S, p, gen, device)
        draws = draws.reshape(len(obs), S, *draws.shape[1:])
    else:
        if model_path is None:
            raise ValueError(f"method {method!r} needs its fitted model (results/baselines/{method}.pt)")
        with torch.no_grad():
            draws = _baseline_draws(method, _load_baseline(method, model_path), obs, S, gen, device)
    seconds = time.perf_counter() - start
    draws = draws.detach().cpu()
    log(f"{method} shard {shard + 1}/{shards}: {draws.shape[0]} objects x {draws.shape[1]} draws in"
        f" {seconds:.0f}s on {device}")
    with atomic_path(out) as tmp:
        torch.save({"rows": (rows.start, rows.stop), "draws": draws, "sources": list(SOURCES), "method": method,
                    "seconds": seconds, "device": str(device)}, tmp)
