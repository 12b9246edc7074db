"""Normalisation, observation operators and view files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from galsep.data.normalise import Stretch
from galsep.data.operators import DenseOperator, IdentityOperator, PixelOperator, block_project
from galsep.data.views import make_view, observe, read_view


def test_normalisation_round_trip_and_constants():
    s = Stretch()
    flux = np.array([-0.5, -0.01, 0.0, 0.003, 0.2, 5.0])
    y = s.forward(flux)
    assert np.allclose(y, np.clip(0.2 * np.arcsinh(flux / 0.1), -2, 2))
    assert np.allclose(s.inverse(y), flux, rtol=1e-12)
    # clipped values come back at the clip edge, not beyond
    assert s.forward(np.array([1e6]))[0] == 2.0 and s.inverse(np.array([3.0]))[0] == pytest.approx(s.inverse(2.0))
    # the reference's variance: 4 / max(ivar, 2.5)
    assert np.allclose(s.variance(np.array([0.0, 1.0, 10.0])), [4 / 2.5, 4 / 2.5, 0.4])
    # and 4 is the squared slope of the stretch at zero: variance is exact for faint pixels
    eps = 1e-6
    assert (s.forward(np.array([eps]))[0] / eps) ** 2 == pytest.approx(4.0, rel=1e-6)


def _adjoint_gap(op, x, y) -> float:
    lhs = (op(x) * y).sum()
    rhs = (x * op.T(y)).sum()
    return abs(lhs - rhs).item() / max(abs(lhs).item(), 1e-12)


@pytest.mark.parametrize("kind", ["identity", "mask", "down2", "down4", "mixed", "dense"])
def test_operators_are_adjoint(kind):
    g = torch.Generator().manual_seed(0)
    B, H = 6, 16
    x = torch.randn(B, H, H, generator=g, dtype=torch.float64)
    y = torch.randn(B, H, H, generator=g, dtype=torch.float64)
    ones = torch.ones(B, H, H, dtype=torch.float64)
    mask = (torch.rand(B, H, H, generator=g) > 0.3).double()
    coef = torch.rand(B, generator=g, dtype=torch.float64)
    op = {
        "identity": IdentityOperator(),
        "mask": PixelOperator(mask, torch.ones(B, dtype=torch.long), coef),
        "down2": PixelOperator(ones, torch.full((B,), 2), coef),
        "down4": PixelOperator(ones, torch.full((B,), 4), coef),
        "mixed": PixelOperator(mask, torch.tensor([1, 2, 4, 1, 2, 4]), coef),
    }.get(kind)
    if kind == "dense":
        op = DenseOperator(torch.randn(B, 3, 5, generator=g, dtype=torch.float64))
        x, y = x.flatten(1)[:, :5], y.flatten(1)[:, :3]
    assert _adjoint_gap(op, x, y) < 1e-12


def test_block_projection_is_a_projector_that_keeps_block_means():
    x = torch.randn(3, 8, 8, dtype=torch.float64)
    p = block_project(x, 2)
    assert torch.allclose(block_project(p, 2), p)
    assert torch.allclose(p.reshape(3, 4, 2, 4, 2).mean((2, 4)), x.reshape(3, 4, 2, 4, 2).mean((2, 4)))


def test_observe_downsampled_variance_is_the_block_mean():
    rng = np.random.default_rng(1)
    clean = rng.normal(size=(2, 8, 8))
    var = rng.uniform(0.5, 2.0, size=(2, 8, 8))
    mask = np.ones((2, 8, 8), np.uint8)
    mask[1, 0, 0] = 0
    y, v, m = observe(clean, var, mask, np.array([1, 2]))
    assert np.allclose(y[0], clean[0]) and np.allclose(v[0], var[0])
    # a 2x2 block with one missing pixel is unobserved as a whole
    assert (m[1, :2, :2] == 0).all() and y[1, 0, 0] == 0 and m[1, 2:, :].all()
    assert np.isclose(v[1, 2, 2], var[1, 2:4, 2:4].mean())


def _write_cutouts(path, n, rng, truth=True, size=16):
    with h5py.File(path, "w") as f:
        gal = rng.exponential(0.5, (n, size, size)) * truth
        ran = rng.normal(0, 0.05, (n, size, size))
        flux = gal + ran
        flux[0, :3] = np.nan
        mask = np.isfinite(flux).astype(np.uint8)
        f["flux"], f["mask"] = flux.astype(np.float32), mask
        f["ivar"] = np.where(mask, 400.0, 0.0).astype(np.float32)
        f["object_id"] = np.arange(n)
        f["truth_galaxy"], f["truth_random"] = gal.astype(np.float32), ran.astype(np.float32)


def test_views_from_cutouts(tmp_path):
    rng = np.random.default_rng(2)
    paths = {"galaxies": tmp_path / "g.h5", "randoms": tmp_path / "r.h5"}
    _write_cutouts(paths["galaxies"], 10, rng)
    _write_cutouts(paths["randoms"], 12, rng, truth=False)
    kw = dict(stretch=Stretch(), downsample_2x=0.3, downsample_4x=0.3, mixed_fraction=0.5, seed=0, log=lambda s: None)
    for view in ("galaxies", "randoms", "mixed_galaxy", "mixed_random"):
        make_view(view, paths, tmp_path / f"{view}.h5", **kw)
    g = read_view(tmp_path / "galaxies.h5")
    assert g.sources == ("galaxy", "random") and torch.equal(g.coef[0], torch.tensor([1.0, 1.0]))
    assert read_view(tmp_path / "randoms.h5").coef[:, 0].eq(0).all()
    assert torch.isfinite(g.y).all() and (g.variance > 0).all()
    # the NaN rows of the first cutout are unobserved in the view
    assert (g.mask[0, :3] == 0).all()
    # each observation is its operators applied to the normalised truths (contrastive: the
    # observed image itself, so compare where it is observed at full resolution)
    full = g.factor == 1
    m = read_view(tmp_path / "mixed_galaxy.h5")
    assert torch.equal(m.coef[0], torch.tensor([1.0, 0.5])) and len(m) == 5
    ops = m.operators()
    noiseless = sum(op(m.truth[:, k]) for k, op in enumerate(ops))
    # A block-replicated pixel of an f-times downsampled view carries 1/f^2 of the noise variance
    # that the operator representation assigns to it (galsep.data.operators): undo that to compare.
    z = (m.y - noiseless) / m.variance.sqrt() * m.factor[:, None, None]
    resid = z[m.mask > 0]
    assert 0.8 < resid.std() < 1.2  # the drawn noise in units of its std: ~1000 pixels, ~5 sigma
    assert full.any()


def test_bad_downsampling_shares_fail(tmp_path):
    from galsep.data.views import draw_factors

    with pytest.raises(ValueError, match="exceeds 1"):
        draw_factors(5, 0.7, 0.6, 16, np.random.default_rng(0))
    with pytest.raises(ValueError, match="not divisible by 4"):
        draw_factors(5, 0.0, 0.5, 18, np.random.default_rng(0))
