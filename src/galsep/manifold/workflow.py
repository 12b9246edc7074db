"""What rules/manifold.smk asks of the config: files of every job and the settings each job gets.

Kept out of the Snakefile so that the rules stay declarative (and `snakemake --lint` clean) and the
wiring is testable without Snakemake.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from galsep.manifold.settings import EM_METHODS, Setting, baselines, dataset, setting

__all__ = ["ROOT", "Plan"]

ROOT = "results/manifold"


class Plan:
    """The jobs of a manifold config.

    Args:
        config: the whole Snakemake config (its ``manifold`` section, ``seed`` and ``device``).
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.mf = config["manifold"]
        self.settings: dict[str, Setting] = {s: setting(s, self.mf["data"]["smoothness"]) for s in self.mf["settings"]}
        self.pairs = [(s, m) for s in self.mf["settings"] for m in self.mf["methods"] if self.settings[s].applies(m)]

    def outputs(self) -> list[str]:
        return [f"{ROOT}/table.json", f"{ROOT}/table.md"]

    def metrics_files(self) -> list[str]:
        return [f"{ROOT}/{s}/{m}/metrics.json" for s, m in self.pairs]

    def data_file(self, setting_name: str) -> str:
        return f"{ROOT}/data/{self.settings[setting_name].dataset.name}.pt"

    @staticmethod
    def stage_file(dataset_name: str, method: str, stage: int | str) -> str:
        """A chain's stage record; contrastive stage 1 (one source) is DDPRISM's for Gibbs too."""
        if method == "gibbs" and dataset_name == "contrastive" and int(stage) == 1:
            method = "ddprism"
        return f"{ROOT}/{dataset_name}/{method}/stage{stage}.pt"

    def previous(self, dataset_name: str, method: str, stage: int | str) -> list[str]:
        """The chain's previous stage record (none for the first stage)."""
        stage = int(stage)
        return [self.stage_file(dataset_name, method, stage - 1)] if stage > 1 else []

    def chain(self, setting_name: str, method: str) -> list[str]:
        """The EM stage records a setting's draws need (EM methods only), in order."""
        if method not in EM_METHODS:
            return []
        s = self.settings[setting_name]
        return [self.stage_file(s.dataset.name, method, k) for k in range(1, s.stage + 1)]

    def em(self, schedule: str, method: str) -> dict[str, Any]:
        """The EM settings a method's stages use: the Gaussian start, and the laps unless it is the floor."""
        em = self.mf[schedule]
        keys = ["diffusion", "clip", "gaussian"]
        if method == "ddprism":
            keys += ["network", "train", "laps", "sampler"]
        elif method == "gibbs":
            keys += ["network", "train", "gibbs", "sampler"]
        return {k: em[k] for k in keys}

    def data_params(self) -> dict[str, Any]:
        return {"seed": self.config["seed"], "data": self.mf["data"]}

    def fit_params(self, dataset_name: str, method: str) -> dict[str, Any]:
        return {
            "seed": self.config["seed"], "device": self.config["device"],
            "em": self.em(dataset(dataset_name).schedule, method),
            "history_samples": self.mf["metrics"]["history_samples"],
            "sinkhorn_reg": self.mf["metrics"]["sinkhorn_reg"],
        }

    def evaluate_params(self, setting_name: str, method: str) -> dict[str, Any]:
        """Settings of the draws (the prior sampler, or the baseline's fit) and of the metrics."""
        em = self.mf[self.settings[setting_name].dataset.schedule]
        return {
            "seed": self.config["seed"], "device": self.config["device"], "smoothness": self.mf["data"]["smoothness"],
            "prior_samples": self.mf["metrics"]["prior_samples"], "metrics": self.mf["metrics"],
            "em": {k: em[k] for k in ("diffusion", "clip", "sampler")} if method in EM_METHODS else None,
            "baseline": self.mf["baselines"][method] if method in baselines() else None,
        }

    def table_params(self) -> dict[str, Any]:
        return {k: self.mf[k] for k in ("size", "settings", "methods", "metrics")}
