"""The astronomers' baseline: detect and deblend every source in the cutout with SExtractor's algorithm
(Bertin & Arnouts 1996, through ``sep``, Barbary 2016) and keep the segment of the central source.

Per cutout, in flux units (the view's arcsinh stretch undone): the background is the sigma-clipped
median of the cutout's border; sources are pixels ``detect_sigma`` noise sigmas above it over at least
``min_area`` pixels (after sep's default 3x3 smoothing), split by multi-threshold deblending
(``deblend_thresholds`` levels, ``deblend_contrast``); the galaxy is the background-subtracted light of
the segment holding the centre (the segment nearest to the centre if none does; nothing if nothing is
detected) and the random light is everything else, background included. Deterministic: one draw. The
thresholds are the usual SExtractor settings, not tuned on the truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from galsep.methods.base import Method

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import Tensor

    from galsep.inference.observations import Observations

__all__ = ["Segmentation", "central_segment"]


def central_segment(flux: np.ndarray, err: np.ndarray, mask: np.ndarray, settings: Mapping[str, Any]
                    ) -> tuple[np.ndarray, float]:
    """The central source's segment (H, W) bool and the background level of one cutout.

    Args:
        flux: (H, W) e-/s; err: (H, W) its noise sigma; mask: (H, W) True where observed.
        settings: detect_sigma, deblend_contrast, deblend_thresholds, min_area, border.
    """
    import numpy as np
    import sep
    from astropy.stats import sigma_clipped_stats

    H, W = flux.shape
    b = settings["border"]
    frame = np.zeros((H, W), bool)
    frame[:b], frame[-b:], frame[:, :b], frame[:, -b:] = True, True, True, True
    ring = flux[frame & mask]
    background = float(sigma_clipped_stats(ring, sigma=3.0)[1]) if ring.size >= 8 else 0.0
    data = np.ascontiguousarray(np.where(mask, flux - background, 0.0), dtype=np.float64)
    noise = np.ascontiguousarray(np.where(mask, err, np.inf), dtype=np.float64)
    objects, seg = sep.extract(data, settings["detect_sigma"], err=noise, mask=~mask, minarea=settings["min_area"],
                               deblend_nthresh=settings["deblend_thresholds"],
                               deblend_cont=settings["deblend_contrast"], segmentation_map=True)
    if len(objects) == 0:
        return np.zeros((H, W), bool), background
    cy, cx = (H - 1) / 2, (W - 1) / 2
    label = int(seg[int(round(cy)), int(round(cx))])
    if label == 0:
        label = 1 + int(np.argmin((objects["x"] - cx) ** 2 + (objects["y"] - cy) ** 2))
    return seg == label, background


class Segmentation(Method[None]):
    name = "segmentation"
    title = "Segmentation (SExtractor)"
    summary = ("Every cutout was segmented with SExtractor's detection and deblending (Bertin & Arnouts 1996, "
               "through sep): the segment of the central source, background-subtracted, is the galaxy, everything "
               "else the contaminating light. It is deterministic: each draw is its one estimate.")
    deterministic = True
    full_resolution = True

    def draw(self, model: None, obs: Observations, samples: int, settings: Mapping[str, Any], *,
             generator: torch.Generator, progress: bool = False) -> Tensor:
        import numpy as np
        import torch

        from galsep.data.normalise import Stretch
        from galsep.errors import InputError

        if obs.normalisation is None or obs.mask is None:
            raise InputError("segmentation needs image observations read from a view (their normalisation)")
        stretch = Stretch(**obs.normalisation)
        y, var = obs.y.double().cpu().numpy(), obs.variance.double().cpu().numpy()
        observed = obs.mask.cpu().numpy() > 0
        flux = stretch.inverse(y)
        # the views' variance is the stretch's slope at zero squared over ivar: back to e-/s
        err = np.sqrt(var) * stretch.arcsinh_scale / stretch.stretch
        galaxy = np.zeros_like(y)
        for i in range(len(y)):
            segment, background = central_segment(flux[i], err[i], observed[i], settings)
            keep = segment & observed[i]
            galaxy_flux = np.where(keep, flux[i] - background, 0.0)
            # normalised parts whose split_flux gives exactly these fluxes: random = what the galaxy leaves
            random = stretch.forward(flux[i] - galaxy_flux)
            galaxy[i] = np.where(observed[i], y[i] - random, 0.0)
        g = torch.as_tensor(galaxy, dtype=obs.y.dtype, device=obs.y.device)
        return torch.stack([g, obs.mask * (obs.y - g)], 1)[:, None]
