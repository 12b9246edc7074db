"""Real COSMOS morphologies (synthetic.galaxies: cosmos) and close pairs of targets (synthetic.close_pair_*).

The real galaxies are the 100-galaxy GalSim-format sample in ../shared/data/cosmos_real_galaxies (never
copied into the repository); the tests that need it skip where it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

from galsep.errors import ConfigError, InputError
from galsep.sources.synthetic import contamination_fractions, cosmos
from galsep.sources.synthetic.tile import centroid
from test_synthetic import PARAMS, _load, _make

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = "data/cosmos_real_galaxies"


def _sample_dir() -> Path | None:
    for shared in (ROOT / ".." / "shared", Path("/work/shared")):
        if (shared / SAMPLE / "real_galaxy_catalog_26_extension_example.fits").is_file():
            return (shared / SAMPLE).resolve()
    return None


needs_sample = pytest.mark.skipif(
    _sample_dir() is None, reason=f"the real-galaxy sample ../shared/{SAMPLE} is absent (it is never in the repo)"
)
QUIET = dict(interloper_density=0.0, star_rate=0.0, cosmic_ray_rate=0.0, hot_pixel_rate=0.0)


@pytest.fixture(scope="module")
def fields(tmp_path_factory) -> dict:
    """A small cosmos tile and the parametric one of the same seed (same positions and magnitudes)."""
    base = tmp_path_factory.mktemp("cosmos")
    real = dict(galaxies="cosmos", cosmos_dir=str(_sample_dir()))
    return {"cosmos": _load(_make(base / "cosmos", **real)), "parametric": _load(_make(base / "parametric"))}


def _unclipped(t: dict, n: int = 256) -> list[tuple[int, np.ndarray]]:
    out = []
    for oid in t["targets"]["object_id"]:
        stamp, x0, y0 = t["stamps"][int(oid)]
        if min(x0, y0) > 0 and x0 + stamp.shape[1] < n and y0 + stamp.shape[0] < n:
            out.append((int(oid), stamp))
    return out


@needs_sample
def test_rendered_flux_matches_the_magnitude(fields):
    t = fields["cosmos"]
    zp = t["targets"].meta["zeropoint_ab"]
    mags = dict(zip(t["targets"]["object_id"], t["targets"]["mag"], strict=True))
    checked = _unclipped(t)
    assert len(checked) >= 3
    for oid, stamp in checked:
        assert stamp.sum(dtype=np.float64) == pytest.approx(10 ** (-0.4 * (mags[oid] - zp)), rel=0.01)
    # the same positions and magnitudes as the parametric field of the seed, other light
    p = fields["parametric"]
    assert np.array_equal(t["targets"]["mag"], p["targets"]["mag"])
    assert not np.allclose(t["components"]["targets"], p["components"]["targets"])


def _asymmetry(stamp: np.ndarray) -> float:
    """A = sum|I - I_180| / sum|I| about the light centroid, on the stamp smoothed by 1.5 pixels
    (so that the real stamps' own pixel noise does not count as asymmetry)."""
    w = ndimage.gaussian_filter(stamp.astype(np.float64), 1.5)
    yy, xx = np.mgrid[: w.shape[0], : w.shape[1]]
    cy, cx = (w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()
    w = ndimage.shift(w, ((w.shape[0] - 1) / 2 - cy, (w.shape[1] - 1) / 2 - cx), order=3, mode="constant")
    return float(np.abs(w - w[::-1, ::-1]).sum() / np.abs(w).sum())


@needs_sample
def test_real_galaxies_are_not_parametric(fields):
    a_real = np.median([_asymmetry(s) for _, s in _unclipped(fields["cosmos"])])
    a_param = np.median([_asymmetry(s) for _, s in _unclipped(fields["parametric"])])
    # bulge + disk profiles are point-symmetric up to resampling (~0.01); real galaxies are not
    assert a_param < 0.03 and a_real > 0.15 and a_real > 5 * a_param


@needs_sample
def test_cosmos_tile_keeps_the_tile_contract(fields):
    t = fields["cosmos"]
    covered = t["wht"] > 0
    assert t["sci"].dtype.name == "float32" and t["wht"].dtype.name == "float32"
    assert np.array_equal(t["sci"][covered], (t["noiseless"] + t["noise"])[covered])
    assert (t["sci"][~covered] == 0).all() and t["sci_header"]["BUNIT"] == "ELECTRONS/S"
    s = t["sci_header"]
    assert all(f"CD{i}_{j}" in s for i in (1, 2) for j in (1, 2)) and s["CTYPE1"] == "RA---TAN"
    total = sum(c.astype(np.float64) for c in t["components"].values())
    assert np.allclose(total, t["noiseless"], rtol=1e-6, atol=1e-7)
    placed = np.zeros(t["noiseless"].shape)
    for stamp, x0, y0 in t["stamps"].values():
        placed[y0 : y0 + stamp.shape[0], x0 : x0 + stamp.shape[1]] += stamp
    assert np.allclose(placed, t["components"]["targets"], rtol=1e-6, atol=1e-7)
    assert t["components"]["interlopers"].sum() > 0  # interlopers are real galaxies too
    # the catalogue position is the light centroid of the target's truth stamp
    tab = t["targets"]
    x, y = WCS(s).world_to_pixel_values(tab["ra"], tab["dec"])
    for oid, px, py in zip(tab["object_id"], x, y, strict=True):
        cx, cy = centroid(*t["stamps"][int(oid)])
        assert abs(px - cx) < 0.01 and abs(py - cy) < 0.01
    assert set(tab["cosmos_ident"]) <= set(cosmos.open_catalogue(_sample_dir()).ident)
    # sizes measured on the real images: COSMOS galaxies at I = 20-23.5 are 0.1-1.5" across
    hlr = np.asarray(tab["half_light_radius"])
    assert tab["half_light_radius"].unit == "arcsec" and ((hlr > 0.05) & (hlr < 2.0)).all()
    assert ((tab["ellipticity"] >= 0) & (tab["ellipticity"] < 1)).all()


@needs_sample
def test_same_seed_same_cosmos_tile(fields, tmp_path):
    again = _load(_make(tmp_path, galaxies="cosmos", cosmos_dir=str(_sample_dir())))
    assert np.array_equal(again["noiseless"], fields["cosmos"]["noiseless"])


def test_cosmos_needs_a_galsim_catalogue(tmp_path):
    with pytest.raises(ConfigError, match="cosmos_dir"):
        _make(tmp_path / "a", galaxies="cosmos")
    with pytest.raises(InputError, match="no such directory"):
        _make(tmp_path / "b", galaxies="cosmos", cosmos_dir=str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no GalSim RealGalaxyCatalog"):
        cosmos.open_catalogue(empty)
    fits.BinTableHDU.from_columns([fits.Column("A", "E", array=np.zeros(2))]).writeto(
        empty / "real_galaxy_catalog_x.fits"
    )
    with pytest.raises(InputError, match="not a GalSim RealGalaxyCatalog"):
        cosmos.open_catalogue(empty)


def test_pick_matches_magnitudes():
    rng = np.random.default_rng(0)
    cat = np.array([20.0, 22.0, 22.3, 25.0])
    real = cosmos.pick(rng, np.array([22.1] * 200 + [18.0, 26.0]), cat)
    assert set(real.index[:200]) == {1, 2}  # both within MATCH_WINDOW, drawn at random
    assert real.index[200] == 0 and real.index[201] == 3  # none within: the nearest
    assert ((real.angle >= 0) & (real.angle < 2 * np.pi)).all()


def test_close_pairs_and_the_neighbour_policy(tmp_path):
    """Two catalogued galaxies in one cutout box: the central's truth is its own light only, the
    contamination fraction counts the neighbour's, and the table names the neighbour."""
    pairs = dict(close_pair_fraction=1.0, close_pair_separation=[0.4, 0.8], targets_per_tile=4)
    t = _load(_make(tmp_path / "pairs", tile_size=128, edge_width=0, **QUIET, **pairs))
    tab = t["targets"]
    ids = [int(i) for i in tab["object_id"]]
    centres = np.array([centroid(*t["stamps"][i]) for i in ids])
    d = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert np.allclose(tab["neighbour_distance"], d.min(axis=1) * 0.05)
    assert np.allclose(tab["neighbour_mag"], np.asarray(tab["mag"])[d.argmin(axis=1)])
    close = np.asarray(tab["neighbour_distance"]) < 1.0
    assert close.all()  # every target is in a pair: 2 pairs of 4
    size = PARAMS["cutout_size"]
    stamps = [t["stamps"][i] for i in ids]
    frac = contamination_fractions(t["noiseless"], stamps, size)

    def light(stamp: np.ndarray, x0: int, y0: int) -> np.ndarray:
        full = np.zeros(t["noiseless"].shape)
        full[y0 : y0 + stamp.shape[0], x0 : x0 + stamp.shape[1]] = stamp
        return full

    for k in range(len(ids)):
        j = int(d[k].argmin())
        xa, ya = (int(np.rint(v)) - size // 2 for v in centres[k])
        box = (slice(max(ya, 0), ya + size), slice(max(xa, 0), xa + size))
        own = light(*stamps[k])
        others = sum(light(*stamps[m]) for m in range(len(ids)) if m != k)
        nb = light(*stamps[j])
        # the neighbour's light is in the central's box ...
        assert nb[box].sum() > 0.05 * own[box].sum()
        # ... it is contamination: the fraction is all the others' light in the box over the central's ...
        assert frac[k] == pytest.approx(others[box].sum() / own[box].sum(), rel=1e-4)
        assert frac[k] >= nb[box].sum() / own[box].sum() * (1 - 1e-4)
        # ... and not the central's truth: at the neighbour's centre the central's stamp is the lesser light
        jx, jy = (int(np.rint(v)) for v in centres[j])
        assert own[jy, jx] < nb[jy, jx] and t["components"]["targets"][jy, jx] == pytest.approx(
            own[jy, jx] + others[jy, jx], rel=1e-5
        )


def test_close_pairs_move_only_targets(tmp_path):
    base = _load(_make(tmp_path / "a"))
    moved = _load(_make(tmp_path / "b", close_pair_fraction=0.6))
    assert np.array_equal(base["components"]["interlopers"], moved["components"]["interlopers"])
    assert np.array_equal(base["noise"], moved["noise"])
    assert np.array_equal(base["targets"]["mag"], moved["targets"]["mag"])
    near = (np.asarray(moved["targets"]["neighbour_distance"]) <= 1.0).sum()
    assert near >= 6 > (np.asarray(base["targets"]["neighbour_distance"]) <= 1.0).sum()
