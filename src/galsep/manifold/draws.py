"""Posterior and prior draws of one method on one setting, in one format for the metrics.

Output (``results/manifold/{setting}/{method}/draws.pt``): {"setting", "method",
"posterior" (N, K, D): one draw per observation of the setting's views, "prior" (M, K, D), "seconds" (the
method's whole cost: its EM stages or its fit, and the draws), "device", "params"}; a source the method does
not model (PCPCA models the contrastive target alone) is NaN. Where the draws come from:
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

from galsep.errors import ConfigError, InputError
from galsep.inference.priors import Prior
from galsep.manifold.data import observations
from galsep.manifold.settings import EM_METHODS, Setting, baselines
from galsep.methods import Contrast, get
from galsep.seeding import generator

__all__ = ["baseline_draws", "em_draws", "make_draws", "mean_draws", "population"]

Log = Callable[[str], None]


def population(data: Mapping[str, Any], source: int) -> Tensor:
    """Every true draw of a source in the dataset, all views, (V N, D): its distribution."""
    return data["x"][:, :, source].flatten(0, 1)


def em_draws(setting: Setting, stage: Mapping[str, Any], p: Mapping[str, Any], device: torch.device,
             log: Log) -> tuple[Tensor, Tensor]:
    """Posterior: the stage's last E-step; prior: draws from each source's final prior."""
    if list(stage["views"]) != list(setting.views) or list(stage["sources"]) != list(range(setting.sources)):
        raise InputError(f"stage {stage['stage']} of {stage['dataset']} covers views {stage['views']} and sources"
                         f" {stage['sources']}, setting {setting.name} needs {list(setting.views)}, "
                         f"{list(range(setting.sources))}")
    em = p["em"]
    shape = tuple(stage["samples"].shape[2:])
    prior = []
    for k in range(setting.sources):
        gen = generator(p["seed"], "manifold", setting.name, p["method"], "prior", k, device=device)
        model = Prior.from_entry(stage["priors"][k], shape, bound=em["clip"]).to(device)
        prior.append(model.sample(p["prior_samples"], shape, sampler=em["sampler"], generator=gen).cpu())
        log(f"[{setting.name}/{p['method']}] {p['prior_samples']} prior draws of source {k + 1}")
    return stage["samples"], torch.stack(prior, 1)


def baseline_draws(setting: Setting, data: Mapping[str, Any], p: Mapping[str, Any], device: torch.device,
                   log: Log) -> tuple[Tensor, Tensor]:
    """Fit a registered contrastive method (galsep.methods) on the setting's dataset and draw from it.

    Target: view K (every source); background: view K - 1, made of source K - 1 (and the sources before
    it); methods that model every source jointly see views 1..K.
    """
    method, s = get(p["method"]), p["baseline"]
    if not setting.contrastive:
        raise ConfigError(f"{method.name} is a contrastive baseline: setting {setting.name} is not contrastive")
    K = setting.sources
    target = observations(data, [K - 1], range(K)).to(device)
    contrast = Contrast(target, observations(data, [K - 2], range(K)).to(device),
                        observations(data, range(K), range(K)).to(device), K - 1, K - 2)
    model = method.fit(contrast, s, generator=generator(p["seed"], "manifold", setting.name, method.name, "fit",
                                                        device=device), log=log)
    draw = generator(p["seed"], "manifold", setting.name, method.name, "draws", device=device)
    posterior = method.draw(model, target, 1, s, generator=draw)[:, 0].cpu()
    prior = method.sample_prior(model, p["prior_samples"], K, generator=draw).cpu()
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
            raise InputError(f"{method} draws need the EM stage records")
        posterior, prior = em_draws(setting, stages[-1], p, device, log)
    elif method in baselines():
        posterior, prior = baseline_draws(setting, data, p, device, log)
    else:
        posterior, prior = mean_draws(setting, data, p)
    seconds = time.perf_counter() - start
    log(f"[{setting.name}/{method}] draws done in {seconds:.0f}s")
    return {"setting": setting.name, "method": method, "posterior": posterior.float(), "prior": prior.float(),
            "seconds": seconds + sum(s["seconds"] for s in stages), "device": str(device), "params": dict(p)}
