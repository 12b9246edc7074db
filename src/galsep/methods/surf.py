"""SURF, Separation via Unsupervised Remixing Flow (Li et al., ICML 2026, arXiv 2606.04921; implementation
in :mod:`galsep.baselines.surf`): a mixture-consistent flow-matching separator (FLOSS) trained from the
views alone by teacher-student remixing of teacher galaxy samples with real random cutouts, with an EMA
teacher started from a Noisier2Noise regression teacher. Generative (several draws per galaxy); needs
full-resolution pixel data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from galsep.methods.base import Contrast, Log, Method

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from galsep.baselines.surf import SURF
    from galsep.inference.observations import Observations

__all__ = ["SURFMethod"]


class SURFMethod(Method):
    name = "surf"
    title = "SURF"
    summary = ("A SURF flow-matching separator (Li et al. 2026) was trained from the galaxy cutouts alone by "
               "remixing its EMA teacher's galaxy draws with real random cutouts, started from a regression teacher;"
               " the draws come from integrating its flow.")
    fitted = True
    full_resolution = True

    def fit(self, data: Contrast, settings: Mapping[str, Any], *, generator: torch.Generator, log: Log) -> SURF:
        from galsep.baselines.surf import fit_surf
        from galsep.inference.memory import batch_setting

        t, b = data.target, data.background
        if t.mask is None or b.mask is None:
            from galsep.errors import ConfigError

            raise ConfigError("method 'surf' needs pixel observations with masks")
        with batch_setting(f"methods.{self.name}.batch_size"):  # names it on CUDA out of memory
            return fit_surf(
                t.y, t.variance, t.mask, b.y, b.variance, b.mask, steps=settings["steps"],
                regression_steps=settings["regression_steps"], batch_size=settings["batch_size"], lr=settings["lr"],
                channels=settings["channels"], ema=settings["ema"], beta_fraction=settings["beta_fraction"],
                teacher_steps=settings["teacher_steps"], native_fraction=settings["native_fraction"],
                generator=generator, log=lambda line: log(f"[{self.name}] {line}"), mixture_factor=t.factor,
                source_factor=b.factor,
                # synthetic views know the true galaxies: the learning curve then traces the galaxy MSE (a
                # diagnostic of the log and the saved trace; the training never sees it)
                truth=None if t.truth is None else t.truth[:, data.target_source],
            )

    def load(self, state: Mapping[str, Any], device: torch.device) -> SURF:
        from galsep.baselines.surf import SURF

        model = SURF.from_state(dict(state))
        model.net.to(device)
        model.mu, model.spread = model.mu.to(device), model.spread.to(device)
        return model

    def draw(self, model: object, obs: Observations, samples: int, settings: Mapping[str, Any], *,
             generator: torch.Generator, progress: bool = False) -> Tensor:
        import torch

        from galsep.baselines.surf import SURF

        if not isinstance(model, SURF):
            raise TypeError(f"method 'surf' draws with a fitted SURF model, got {type(model).__name__}")
        if obs.mask is None:
            from galsep.errors import ConfigError

            raise ConfigError("method 'surf' needs pixel observations with masks")
        from galsep.inference.memory import batch_setting

        with torch.no_grad(), batch_setting(f"methods.{self.name}.draw_batch_size"):  # named on out of memory
            return model.separate(obs.y, obs.variance, obs.mask, samples, steps=settings["sample_steps"],
                                  generator=generator, batch_size=settings["draw_batch_size"], factor=obs.factor)
