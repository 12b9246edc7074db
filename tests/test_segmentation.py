"""The segmentation deblender: on a cutout with a galaxy and a detached interloper, the interloper goes
to the random light and the galaxy's flux is recovered within the noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from snakemake.utils import validate

from galsep.data.normalise import Stretch
from galsep.data.operators import PixelOperator
from galsep.inference.observations import Observations
from galsep.methods import get
from workflow import ROOT

SIZE = 32


def _settings() -> dict:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    validate(config, str(ROOT / "workflow/schemas/config.schema.yaml"))
    return config["methods"]["segmentation"]


def _observation(n: int, rng: np.random.Generator, sigma: float, stretch: Stretch):
    """n cutouts: an exponential galaxy at the centre and a compact interloper 11 px away; flux e-/s."""
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(float)
    c = (SIZE - 1) / 2
    gal = 0.3 * np.exp(-np.hypot(xx - c, yy - c) / 1.5)
    inter = 0.5 * np.exp(-0.5 * ((xx - c - 11) ** 2 + (yy - c + 3) ** 2) / 1.0**2)
    sky = 0.002
    flux = gal + inter + sky + sigma * rng.standard_normal((n, SIZE, SIZE))
    ivar = np.full((n, SIZE, SIZE), 1 / sigma**2)
    mask = torch.ones(n, SIZE, SIZE)
    coef = torch.ones(n, 2)
    obs = Observations(("galaxy", "random"), torch.as_tensor(stretch.forward(flux), dtype=torch.float32),
                       torch.as_tensor(stretch.variance(ivar)),
                       tuple(PixelOperator(mask, torch.ones(n, dtype=torch.long), coef[:, k]) for k in range(2)),
                       coef, (SIZE, SIZE), mask=mask, factor=torch.ones(n, dtype=torch.long),
                       normalisation=vars(stretch))
    return obs, gal, inter


def test_the_interloper_goes_to_the_random_light_and_the_galaxy_flux_is_kept():
    stretch, sigma = Stretch(), 0.003
    obs, gal, inter = _observation(8, np.random.default_rng(0), sigma, stretch)
    method = get("segmentation")
    assert method.deterministic and not method.fitted and not method.uses_priors
    draws = method.draw(None, obs, 4, _settings(), generator=torch.Generator())
    assert draws.shape == (8, 1, 2, SIZE, SIZE)
    g, r = (stretch.inverse((draws[:, 0, 0] + draws[:, 0, 1]).numpy()) - stretch.inverse(draws[:, 0, 1].numpy()),
            stretch.inverse(draws[:, 0, 1].numpy()))
    # the draws add up to the observation
    assert np.allclose(g + r, stretch.inverse(obs.y.numpy()), atol=1e-5)
    # no interloper light in the galaxy
    near_interloper = inter > 0.05 * inter.max()
    assert np.abs(g[:, near_interloper]).max() < 3 * sigma
    # the galaxy's flux: what the segment misses (faint wings below threshold) and the border background's
    # error over the segment's pixels are the budget, a few per cent for this galaxy
    residual = g.sum((1, 2)) / gal.sum() - 1
    assert np.median(np.abs(residual)) < 0.05 and np.abs(residual).max() < 0.1
    # the interloper's light is in the random light
    assert (r * near_interloper).sum((1, 2)) == pytest.approx((inter * near_interloper).sum(), rel=0.05)


def test_nothing_detected_leaves_everything_to_the_random_light():
    stretch = Stretch()
    rng = np.random.default_rng(1)
    obs, _, _ = _observation(2, rng, 0.003, stretch)
    empty = Observations(obs.sources, torch.zeros_like(obs.y), obs.variance, obs.ops, obs.coef, obs.shape,
                         mask=obs.mask, factor=obs.factor, normalisation=obs.normalisation)
    draws = get("segmentation").draw(None, empty, 1, _settings(), generator=torch.Generator())
    assert torch.equal(draws[:, 0, 0], torch.zeros_like(empty.y))


def test_views_without_their_normalisation_are_a_clear_error():
    obs, _, _ = _observation(1, np.random.default_rng(2), 0.003, Stretch())
    bare = Observations(obs.sources, obs.y, obs.variance, obs.ops, obs.coef, obs.shape, mask=obs.mask)
    with pytest.raises(ValueError, match="normalisation"):
        get("segmentation").draw(None, bare, 1, _settings(), generator=torch.Generator())
