"""Posterior and prior draws of one method on one setting, in one format for the metrics.

Output (``results/manifold/{setting}/{method}/draws.pt``): {"setting", "method",
"posterior" (N, K, D): one draw per observation of the setting's views, "prior" (M, K, D), "seconds" (the
method's whole cost: its EM stages or its fit, and the draws), "device", "params"}; a source the method does not model (PCPCA models the contrastive target alone)
is NaN. Where the draws come from:
    ddprism, gibbs, gaussian  the last E-step of the setting's EM stage (its samples are the posterior
                              under the final priors), and prior draws by PC sampling (exact for Gaussians)
    pcpca                     fitted here on view K (target) against view K-1 (background)
    clvm_linear, clvm_vae     fitted here on views 1..K (source k absent from the views before k)
    prior_mean                every draw is the source's true mean (a floor)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from galsep.manifold.data import observations
from galsep.manifold.em import schedule
from galsep.manifold.models import sample_prior
from galsep.manifold.settings import BASELINES, EM_METHODS, Setting
from galsep.seeding import generator

Log = Callable[[str], None]


def population(data: Mapping[str, Any], source: int) -> Tensor:
    """Every true draw of a source in the dataset, all views, (V N, D): its distribution."""
    return data["x"][:, :, source].flatten(0, 1)


def em_draws(setting: Setting, stage: Mapping[str, Any], p: Mapping[str, Any], device: torch.device,
             log: Log) -> tuple[Tensor, Tensor]:
    """Posterior: the stage's last E-step; prior: draws from each source's final prior."""
    if list(stage["views"]) != list(setting.views) or list(stage["sources"]) != list(range(setting.sources)):
        raise ValueError(f"stage {stage['stage']} of {stage['dataset']} covers views {stage['views']} and sources"
                         f" {stage['sources']}, setting {setting.name} needs {list(setting.views)}, "
                         f"{list(range(setting.sources))}")
    em = p["em"]
    D = stage["samples"].shape[-1]
    prior = []
    for k in range(setting.sources):
        gen = generator(p["seed"], "manifold", setting.name, p["method"], "prior", k, device=device)
        prior.append(sample_prior(stage["priors"][k], p["prior_samples"], D, schedule=schedule(em),
                                  sampler=em["sampler"], clip=em["clip"], generator=gen, device=device).cpu())
        log(f"[{setting.name}/{p['method']}] {p['prior_samples']} prior draws of source {k + 1}")
    return stage["samples"], torch.stack(prior, 1)


def baseline_draws(setting: Setting, data: Mapping[str, Any], p: Mapping[str, Any], device: torch.device,
                   log: Log) -> tuple[Tensor, Tensor]:
    """Fit a contrastive baseline on the setting's dataset and draw from it."""
    method, s = p["method"], p["baseline"]
    if not setting.contrastive:
        raise ValueError(f"{method} is a contrastive baseline: setting {setting.name} is not contrastive")
    K = setting.sources
    target = observations(data, [K - 1], range(K)).to(device)
    D = target.matrices.shape[-1]
    gen = generator(p["seed"], "manifold", setting.name, method, "fit", device=device)
    every = max(1, s["steps"] // 10)

    def fit_log(step: int, value: float) -> None:
        if (step + 1) % every == 0:
            log(f"[{setting.name}/{method}] step {step + 1}/{s['steps']} objective {value:.4g}")

    posterior = torch.full((len(target), K, D), float("nan"))
    prior = torch.full((p["prior_samples"], K, D), float("nan"))
    draw = generator(p["seed"], "manifold", setting.name, method, "draws", device=device)
    if method == "pcpca":
        from galsep.baselines.pcpca import fit_pcpca

        background = observations(data, [K - 2], range(K - 1)).to(device)
        ops = target.operators()[K - 1]
        model, _ = fit_pcpca(
            target.y, ops, target.variance, background.y, background.operators()[K - 2], background.variance,
            shape=(D,), latent=s["latent"], gamma=s["gamma"], steps=s["steps"], lr=s["lr"],
            batch_size=s["batch_size"], generator=gen, log=fit_log)
        posterior[:, K - 1] = model.sample_posterior(target.y, ops, target.variance, samples=1,
                                                     generator=draw)[:, 0].cpu()
        prior[:, K - 1] = model.sample_prior(p["prior_samples"], generator=draw).cpu()
        return posterior, prior
    from galsep.baselines.clvm import fit_clvm_linear, fit_clvm_vae

    every_view = observations(data, range(K), range(K)).to(device)
    common = dict(shape=(D,), latents=list(s["latents"][:K]), steps=s["steps"], lr=s["lr"],
                  batch_size=s["batch_size"], generator=gen, log=fit_log)
    if method == "clvm_linear":
        model, _ = fit_clvm_linear(every_view.y, every_view.operators(), every_view.variance, **common)
    else:
        model, _ = fit_clvm_vae(every_view.y, every_view.operators(), every_view.variance, hidden=s["hidden"],
                                layers=s["layers"], dropout=s["dropout"], **common)
    with torch.no_grad():
        posterior = model.sample_posterior(target.y, target.operators(), target.variance, samples=1,
                                           generator=draw)[:, 0].cpu()
        prior = model.sample_prior(p["prior_samples"], generator=draw).cpu()
    return posterior, prior


def mean_draws(setting: Setting, data: Mapping[str, Any], p: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    """The floor: every posterior and prior draw is the true mean of its source."""
    mean = torch.stack([population(data, k).mean(0) for k in range(setting.sources)])  # (K, D)
    n = len(setting.views) * data["y"].shape[1]
    return mean.expand(n, -1, -1).clone(), mean.expand(p["prior_samples"], -1, -1).clone()


def make_draws(setting: Setting, data: Mapping[str, Any], stages: Sequence[Mapping[str, Any]], p: Mapping[str, Any],
               device: torch.device, log: Log = print) -> dict[str, Any]:
    """The draws record of the module docstring.

    ``stages`` are the EM stage records of the method's chain up to the setting's stage, in order (EM
    methods only): the last gives the draws, all count towards ``fit_seconds``.
    """
    method = p["method"]
    start = time.perf_counter()
    if method in EM_METHODS:
        if not stages:
            raise ValueError(f"{method} draws need the EM stage records")
        posterior, prior = em_draws(setting, stages[-1], p, device, log)
    elif method in BASELINES:
        posterior, prior = baseline_draws(setting, data, p, device, log)
    else:
        posterior, prior = mean_draws(setting, data, p)
    seconds = time.perf_counter() - start
    log(f"[{setting.name}/{method}] draws done in {seconds:.0f}s")
    return {"setting": setting.name, "method": method, "posterior": posterior.float(), "prior": prior.float(),
            "seconds": seconds + sum(s["seconds"] for s in stages), "device": str(device), "params": dict(p)}
