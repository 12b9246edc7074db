"""Cutouts: centring to sub-pixel precision, WCS round trip, tile edges, random positions, bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from galsep.data.cutouts import cubic_weights, make_cutouts, subpixel_cutout
from galsep.data.tiles import InputError, read_tile

SIZE = 32


def _cut(small_tile, tmp_path, **kw):
    args = dict(size=SIZE, randoms_per_tile=20, random_min_distance=40.0, max_nan_fraction=0.5, seed=1)
    args.update(kw)
    counts = make_cutouts(
        [small_tile["tile"]], small_tile["targets"], tmp_path / "g.h5", tmp_path / "r.h5", log=lambda s: None, **args
    )
    return counts, h5py.File(tmp_path / "g.h5", "r"), h5py.File(tmp_path / "r.h5", "r")


def test_cubic_weights_reproduce_quadratics():
    taps = np.arange(-1, 3)
    for frac in (0.0, 0.25, 0.5, 0.9):
        w = cubic_weights(frac)
        for p in range(3):  # constants, slopes and curvature are interpolated exactly
            assert np.dot(w, taps.astype(float) ** p) == pytest.approx(frac**p, abs=1e-12)
    assert np.allclose(cubic_weights(0.0), [0, 1, 0, 0], atol=1e-12)


def test_target_lands_at_cutout_centre(small_tile, tmp_path):
    _, gal, _ = _cut(small_tile, tmp_path)
    c = (SIZE - 1) / 2
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for k in range(2):  # the two interior targets: smooth Gaussians at fractional positions
        flux = gal["flux"][k]
        w = np.where(np.isfinite(flux), flux, 0) * ((xx - c) ** 2 + (yy - c) ** 2 < 10**2)
        cx, cy = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
        # 0.01 pixel is the bar; noise (0.01 e-/s) moves the centroid by ~1e-3 pixel
        assert abs(cx - c) < 0.01 and abs(cy - c) < 0.01


def test_cutout_wcs_round_trip(small_tile):
    tile = read_tile(small_tile["tile"])
    x, y = 77.37, 101.81
    sky = tile.wcs.pixel_to_world(x, y)
    _, _, wcs = subpixel_cutout([tile.sci], [1 / np.maximum(tile.ivar, 1e-9)], tile.wcs, x, y, SIZE)
    px, py = wcs.world_to_pixel(sky)
    assert px == pytest.approx((SIZE - 1) / 2, abs=1e-6) and py == pytest.approx((SIZE - 1) / 2, abs=1e-6)
    # and a pixel of the cutout maps back to the tile pixel it came from
    back = tile.wcs.world_to_pixel(wcs.pixel_to_world(0, 0))
    assert back[0] == pytest.approx(x - (SIZE - 1) / 2, abs=1e-6)


def test_overhanging_cutout_is_nan_and_masked(small_tile, tmp_path):
    _, gal, _ = _cut(small_tile, tmp_path)
    ids = list(gal["object_id"][...])
    k = ids.index(3)  # centred 12 pixels from the tile's lower edge, inside a 10-pixel uncovered band
    flux, mask, ivar = gal["flux"][k], gal["mask"][k], gal["ivar"][k]
    assert np.isnan(flux[0]).all() and (mask[0] == 0).all() and (ivar[0] == 0).all()
    assert np.isfinite(flux[mask == 1]).all() and (ivar[mask == 1] > 0).all()
    assert (mask == 0).sum() > SIZE  # more than one row is missing


def test_nan_limit_rejects_cutouts(small_tile, tmp_path):
    counts, gal, _ = _cut(small_tile, tmp_path, max_nan_fraction=0.05)
    assert 3 not in set(gal["object_id"][...]) and counts["rejected_nan"] >= 1


def test_randoms_keep_their_distance(small_tile, tmp_path):
    counts, _, ran = _cut(small_tile, tmp_path, random_min_distance=45.0)
    assert counts["randoms"] > 0
    xy = np.stack([ran["x"][...], ran["y"][...]], axis=1)
    d = np.linalg.norm(xy[:, None] - small_tile["xy"][None], axis=-1)
    assert d.min() >= 45.0
    # their recorded sky positions are where their centres are
    sky = small_tile["wcs"].pixel_to_world(xy[:, 0], xy[:, 1])
    sep = sky.separation(SkyCoord(ran["ra"][...], ran["dec"][...], unit="deg")).arcsec
    assert sep.max() < 1e-6


def test_corrupt_tile_fails_clearly_and_leaves_nothing(small_tile, tmp_path):
    path = small_tile["tile"]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # a truncated download
    with pytest.raises(InputError, match="corrupt or truncated"):
        _cut(small_tile, tmp_path)
    assert not (tmp_path / "g.h5").exists() and not (tmp_path / "r.h5").exists()
    assert not list(tmp_path.glob(".*tmp*"))


def test_missing_catalogue_column_fails_clearly(small_tile, tmp_path):
    from astropy.table import Table

    t = Table.read(small_tile["targets"], format="ascii.ecsv")
    t.remove_column("dec")
    t.write(small_tile["targets"], format="ascii.ecsv", overwrite=True)
    with pytest.raises(InputError, match=r"lacks column\(s\) \['dec'\]"):
        _cut(small_tile, tmp_path)
    assert not (tmp_path / "g.h5").exists()
