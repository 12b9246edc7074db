"""Every numpy stream comes from galsep.seeding with its own key: a synthetic tile, its random cutout
positions and each view draw from different streams, and the same key always gives the same one."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from galsep.data import cutouts, views
from galsep.data.normalise import Stretch
from galsep.seeding import numpy_generator
from galsep.sources.synthetic import make_tile, observe

SEED = 1


class _Stop(Exception):
    pass


def _capture(monkeypatch, module, name: str) -> list[np.ndarray]:
    """Replace ``module.name`` by a stub that records the first draws of the generator it is given, then stops."""
    seen = []

    def grab(*args, **kwargs):
        rng = next(a for a in (*args, *kwargs.values()) if isinstance(a, np.random.Generator))
        seen.append(rng.random(8))
        raise _Stop

    monkeypatch.setattr(module, name, grab)
    return seen


def _tile_stream(monkeypatch, tmp_path, index: int) -> np.ndarray:
    seen = _capture(monkeypatch, observe, "tile_wcs")  # the tile's first use of its generator
    params = dict(tile_size=64, edge_width=4, targets_per_tile=1, ra=150.1, dec=2.2)
    with pytest.raises(_Stop):
        make_tile("tileA", index, params, SEED, tmp_path / "t.fits", tmp_path / "t.h5", tmp_path / "t.ecsv")
    return seen[0]


def _cutout_stream(monkeypatch, tmp_path, small_tile) -> np.ndarray:
    seen = _capture(monkeypatch, cutouts, "random_positions")
    with pytest.raises(_Stop):
        cutouts.make_cutouts([small_tile["tile"]], small_tile["targets"], tmp_path / "g.h5", tmp_path / "r.h5",
                             size=32, randoms_per_tile=5, random_min_distance=20.0, max_nan_fraction=0.5,
                             seed=SEED, log=lambda s: None)
    return seen[0]


def test_tile_and_its_cutouts_draw_different_streams(monkeypatch, tmp_path, small_tile):
    # the first (and here only) tile: index 0 in the field and in the list of tiles of the cutouts
    tile = _tile_stream(monkeypatch, tmp_path, 0)
    cut = _cutout_stream(monkeypatch, tmp_path, small_tile)
    assert not np.allclose(tile, cut)
    assert np.array_equal(tile, numpy_generator(SEED, "synthetic", "tile", 0).random(8))
    assert np.array_equal(cut, numpy_generator(SEED, "cutouts", "randoms", "tileA").random(8))


def _write_cutouts(path, n=4, size=8):
    with h5py.File(path, "w") as f:
        f["flux"] = np.ones((n, size, size), np.float32)
        f["ivar"] = np.full((n, size, size), 400.0, np.float32)
        f["mask"] = np.ones((n, size, size), np.uint8)
        f["object_id"] = np.arange(n)


def test_each_view_has_its_own_stream(monkeypatch, tmp_path):
    paths = {"galaxies": tmp_path / "g.h5", "randoms": tmp_path / "r.h5"}
    for p in paths.values():
        _write_cutouts(p)
    seen = _capture(monkeypatch, views, "draw_factors")
    for view in ("galaxies", "randoms"):
        with pytest.raises(_Stop):
            views.make_view(view, paths, tmp_path / f"{view}.h5", stretch=Stretch(), downsample_2x=0.3,
                            downsample_4x=0.3, mixed_fraction=0.5, seed=SEED, log=lambda s: None)
    assert np.array_equal(seen[0], numpy_generator(SEED, "views", "galaxies").random(8))
    assert np.array_equal(seen[1], numpy_generator(SEED, "views", "randoms").random(8))
    # names with the same character sum (the old seed) are different keys
    assert sum(map(ord, "randoms")) == sum(map(ord, "smodnar"))
    assert not np.allclose(numpy_generator(SEED, "views", "randoms").random(8),
                           numpy_generator(SEED, "views", "smodnar").random(8))


def test_same_key_same_stream_other_key_or_seed_other_stream():
    a = numpy_generator(7, "synthetic", "tile", 3).random(16)
    assert np.array_equal(a, numpy_generator(7, "synthetic", "tile", 3).random(16))
    for other in (numpy_generator(7, "synthetic", "tile", 4), numpy_generator(8, "synthetic", "tile", 3),
                  numpy_generator(7, "cutouts", "randoms", 3)):
        assert not np.allclose(a, other.random(16))
