"""The neighbour mask: the light of another catalogued target inside a cutout, found by SExtractor's
segmentation of the tile (galsep.data.neighbours), checked against the truth of close pairs; and the
views that leave it unobserved (views.mask_neighbours)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from test_synthetic import _make

from galsep.data.cutouts import make_cutouts
from galsep.data.neighbours import others, target_owner
from galsep.data.normalise import Stretch
from galsep.data.tiles import InputError
from galsep.data.views import make_view

QUIET = dict(interloper_density=0.0, star_rate=0.0, cosmic_ray_rate=0.0, hot_pixel_rate=0.0)
SIZE = 32
STRETCH = Stretch(arcsinh_scale=0.1, stretch=0.2, clip=2.0, ivar_floor=2.5)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict:
    """Cutouts of a quiet field where every target has a catalogued neighbour 0.4-0.8" away (so the
    truth's random light is the neighbours' light), and of a field of isolated targets."""
    out = {}
    for name, kw in (("pairs", dict(close_pair_fraction=1.0, close_pair_separation=[0.4, 0.8])),
                     ("isolated", dict(close_pair_fraction=0.0, targets_per_tile=3))):
        d = tmp_path_factory.mktemp(name)
        paths = _make(d, tile_size=256, edge_width=0, **QUIET, **({"targets_per_tile": 6} | kw))
        make_cutouts([paths["tile"]], paths["targets"], d / "g.h5", d / "r.h5", size=SIZE, randoms_per_tile=10,
                     random_min_distance=0, max_nan_fraction=0.5, seed=1, truth_paths=[paths["truth"]],
                     log=lambda s: None)
        out[name] = d
    return out


def test_mask_covers_the_neighbour_and_spares_the_central_galaxy(pairs):
    with h5py.File(pairs["pairs"] / "g.h5") as f:
        nb, own, rest = f["neighbour"][...] > 0, np.nan_to_num(f["truth_galaxy"][...]), np.nan_to_num(f["truth_random"][...])
    assert len(nb) == 6
    for k in range(len(nb)):
        # the neighbour's segment and its grown edge hold most of the neighbour's light in the box (its
        # faint wings beyond 1.5 sigma stay) ...
        assert rest[k][nb[k]].sum() > 0.6 * rest[k].sum()
        # ... and take much less of the central galaxy's; never its centre
        assert own[k][nb[k]].sum() < 0.35 * own[k].sum()
        c = SIZE // 2
        assert not nb[k][c - 1 : c + 1, c - 1 : c + 1].any()
    # over the field the split is clean: most neighbour light masked, most central light kept
    assert rest[nb].sum() / rest.sum() > 0.7 and own[nb].sum() / own.sum() < 0.2


def test_isolated_targets_mask_nothing_and_randoms_mask_every_target(pairs):
    with h5py.File(pairs["isolated"] / "g.h5") as f:
        assert f["neighbour"].attrs["units"].startswith("1 = ")
        nb, own = f["neighbour"][...] > 0, np.nan_to_num(f["truth_galaxy"][...])
    assert own[nb].sum() < 0.01 * own.sum()
    with h5py.File(pairs["pairs"] / "r.h5") as f:  # random cutouts at uniform positions fall on targets
        nb, light = f["neighbour"][...] > 0, np.nan_to_num(f["truth_random"][...])
    assert nb.any() and light[nb].sum() > 0.7 * light.sum()


def test_blend_is_split_between_its_targets():
    """Two targets in one undeblended segment share it by nearest position; the dilation stops at the
    other target's pixels."""
    yy, xx = np.mgrid[:64, :64]
    sci = np.exp(-((xx - 32.0) ** 2 + (yy - 32.0) ** 2) / (2 * 6.0**2)) * 2.0  # one blob, two catalogued
    ivar = np.full(sci.shape, 1e4)
    owner = target_owner(sci, ivar, np.array([[28.0, 32.0], [36.0, 32.0], [np.nan, np.nan]]))
    assert (owner[32, 20:30] == 0).all() and (owner[32, 35:40] == 1).all() and (owner != 2).all()
    first = others(owner, 0, dilate=3)
    assert first[32, 36] and not (first & (owner == 0)).any()
    assert (others(owner, None, dilate=0) == (owner >= 0)).all()


def test_views_leave_the_neighbours_unobserved_only_when_asked(pairs, tmp_path):
    d = pairs["pairs"]
    cut = {"galaxies": d / "g.h5", "randoms": d / "r.h5"}
    kw = dict(stretch=STRETCH, downsample_2x=0.0, downsample_4x=0.0, mixed_fraction=0.5, seed=3, log=lambda s: None)
    make_view("galaxies", cut, tmp_path / "plain.h5", **kw)
    make_view("galaxies", cut, tmp_path / "masked.h5", mask_neighbours=True, **kw)
    with h5py.File(d / "g.h5") as f:
        nb, observed = f["neighbour"][...] > 0, f["mask"][...] > 0
    with h5py.File(tmp_path / "plain.h5") as p, h5py.File(tmp_path / "masked.h5") as m:
        assert (p["mask"][...] > 0).sum() == observed.sum()
        assert np.array_equal(m["mask"][...] > 0, observed & ~nb)
        assert (m["y"][...][nb] == 0).all()
        keep = ~nb
        assert np.array_equal(m["y"][...][keep], p["y"][...][keep])


def test_mask_neighbours_on_old_cutouts_is_a_clear_error(pairs, tmp_path):
    old = tmp_path / "old.h5"
    with h5py.File(pairs["pairs"] / "g.h5") as f, h5py.File(old, "w") as g:
        for k in f:
            if k != "neighbour":
                f.copy(k, g)
        g.attrs.update(f.attrs)
    with pytest.raises(InputError, match="rerun the cutouts stage"):
        make_view("galaxies", {"galaxies": old, "randoms": pairs["pairs"] / "r.h5"}, tmp_path / "v.h5",
                  stretch=STRETCH, downsample_2x=0.0, downsample_4x=0.0, mixed_fraction=0.5, seed=3,
                  mask_neighbours=True, log=lambda s: None)
    assert not (tmp_path / "v.h5").exists()
