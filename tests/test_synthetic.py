"""Synthetic COSMOS tiles: drizzled-tile contract, truth bookkeeping, WCS, photometry, noise, seeds."""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import galsim
import h5py
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from galsep.data.noise import inverse_variance, noise_parameters
from galsep.sources.synthetic import contamination_fractions, make_tile
from galsep.sources.synthetic import observe, population, render
from galsep.sources.synthetic.psf import hst_psf

PARAMS = dict(
    tiles=2,
    tile_size=256,
    star_mag_range=[17.0, 25.0],
    ra=150.1,
    dec=2.2,
    exposure_time=2028.0,
    ncombine=4,
    sky_rate=0.1,
    read_noise=5.0,
    noise_scale=1.0,
    targets_per_tile=10,
    target_mag_range=[20.0, 23.5],
    interloper_density=3.0,
    interloper_mag_range=[23.5, 27.0],
    star_rate=0.3,
    cosmic_ray_rate=1.0,
    hot_pixel_rate=0.001,
    edge_width=16,
    psf_fwhm=0.09,
    pixel_scale=0.05,
    cutout_size=32,
)


def _make(dirpath: Path, index: int = 0, seed: int = 7, **overrides) -> dict:
    dirpath.mkdir(parents=True, exist_ok=True)
    paths = {
        k: dirpath / f"t{index}.{ext}" for k, ext in (("tile", "fits"), ("truth", "h5"), ("targets", "ecsv"))
    }
    make_tile(
        f"t{index}", index, {**PARAMS, **overrides}, seed, paths["tile"], paths["truth"], paths["targets"]
    )
    return paths


def _load(paths: dict) -> dict:
    with fits.open(paths["tile"]) as hdul:
        out = {
            "primary": hdul[0].header.copy(),
            "sci_header": hdul["SCI"].header.copy(),
            "sci": hdul["SCI"].data.copy(),
            "wht": hdul["WHT"].data.copy(),
        }
    with h5py.File(paths["truth"], "r") as f:
        out["noiseless"], out["noise"] = f["noiseless"][...], f["noise"][...]
        out["components"] = {k: d[...] for k, d in f["components"].items()}
        out["stamps"] = {
            int(k): (d[...], int(d.attrs["x0"]), int(d.attrs["y0"])) for k, d in f["targets"].items()
        }
        out["units"] = f.attrs["units"]
    out["targets"] = Table.read(paths["targets"], format="ascii.ecsv")
    return out


@pytest.fixture(scope="module")
def tile(tmp_path_factory) -> dict:
    paths = _make(tmp_path_factory.mktemp("synthetic"))
    return {"paths": paths, **_load(paths)}


def test_sci_is_noiseless_plus_noise_where_covered(tile):
    covered = tile["wht"] > 0
    assert tile["sci"].dtype.name == "float32" and tile["wht"].dtype.name == "float32"
    assert np.array_equal(tile["sci"][covered], (tile["noiseless"] + tile["noise"])[covered])
    assert (tile["sci"][~covered] == 0).all() and (tile["noise"][~covered] == 0).all()
    e = PARAMS["edge_width"]
    border = np.ones(covered.shape, bool)
    border[e:-e, e:-e] = False
    assert not covered[border].any() and covered[~border].mean() > 0.95
    # most of the interior has all exposures; chip-gap strips and rejected pixels have fewer
    interior = tile["wht"][~border]
    assert np.median(interior) == pytest.approx(PARAMS["exposure_time"], rel=0.02)
    assert (interior < 0.9 * PARAMS["exposure_time"]).mean() > 0.05


def test_header_looks_like_acs_f814w_drz(tile):
    h, s = tile["primary"], tile["sci_header"]
    expected = dict(TELESCOP="HST", INSTRUME="ACS", DETECTOR="WFC", FILTER1="CLEAR1L", FILTER2="F814W")
    assert {k: h[k] for k in expected} == expected and h["SYNTHETI"] is True
    assert s["BUNIT"] == "ELECTRONS/S" and h["NCOMBINE"] == PARAMS["ncombine"]
    for key in (
        "EXPTIME",
        "MDRIZSKY",
        "READNSEA",
        "READNSEB",
        "READNSEC",
        "READNSED",
        "PHOTFLAM",
        "PHOTPLAM",
        "PHOTZPT",
    ):
        assert key in h
    # the noise model reads back the simulation's sky rate and read noise
    p = noise_parameters(h)
    assert p["sky_rate"] == pytest.approx(PARAMS["sky_rate"]) and p["read_noise"] == pytest.approx(
        PARAMS["read_noise"]
    )
    # ACS/WFC F814W AB zeropoint (STScI tables: 25.94)
    assert observe.ab_zeropoint(h["PHOTFLAM"], h["PHOTPLAM"]) == pytest.approx(25.94, abs=0.01)


def _noise_z(t: dict) -> np.ndarray:
    """SCI minus the noiseless light, in units of the header model's sigma, on covered pixels."""
    ivar = inverse_variance(t["wht"], **noise_parameters(t["primary"]))
    covered = ivar > 0
    return (t["sci"][covered].astype(np.float64) - t["noiseless"][covered]) * np.sqrt(ivar[covered])


def test_noise_matches_header_model_and_noise_scale(tile, tmp_path):
    z = _noise_z(tile)
    n = z.size
    # sample mean and std of n standard normals: 5-sigma bounds 5/sqrt(n) and 5/sqrt(2n)
    assert abs(z.mean()) < 5 / np.sqrt(n) and abs(z.std() - 1) < 5 / np.sqrt(2 * n)
    # the dithered strips (fewer exposures) have their own, larger sigma, and it matches too
    ivar = inverse_variance(tile["wht"], **noise_parameters(tile["primary"]))
    strips = ivar[ivar > 0] < 0.8 * np.median(ivar[ivar > 0])
    assert strips.sum() > 1000 and abs(z[strips].std() - 1) < 5 / np.sqrt(2 * strips.sum())
    # noise_scale enters the header's model exactly: twice the sigma of the unscaled model
    scaled = _load(_make(tmp_path, noise_scale=2.0))
    model = noise_parameters(scaled["primary"])
    header_ivar = inverse_variance(scaled["wht"], **model)
    unscaled_ivar = inverse_variance(
        scaled["wht"], **{**model, "sky_rate": PARAMS["sky_rate"], "read_noise": PARAMS["read_noise"]}
    )
    covered = scaled["wht"] > 0
    assert np.allclose(header_ivar[covered], unscaled_ivar[covered] / 4, rtol=1e-5)
    z = _noise_z(scaled)
    assert abs(z.std() - 1) < 5 / np.sqrt(2 * z.size)


def test_wcs_has_cd_keywords_and_targets_sit_on_their_light(tile):
    s = tile["sci_header"]
    assert all(f"CD{i}_{j}" in s for i in (1, 2) for j in (1, 2)) and not any(
        k.startswith(("PC1_", "PC2_", "CDELT")) for k in s
    )
    assert s["CTYPE1"] == "RA---TAN" and s["CTYPE2"] == "DEC--TAN"
    wcs = WCS(s)
    cd = np.array([[s["CD1_1"], s["CD1_2"]], [s["CD2_1"], s["CD2_2"]]])
    assert np.sqrt(abs(np.linalg.det(cd))) * 3600 == pytest.approx(0.05, rel=1e-9)
    assert np.linalg.det(cd) < 0  # east to the left, as on the sky
    t = tile["targets"]
    x, y = wcs.world_to_pixel_values(t["ra"], t["dec"])
    for oid, px, py in zip(t["object_id"], x, y):
        stamp, x0, y0 = tile["stamps"][int(oid)]
        yy, xx = np.mgrid[: stamp.shape[0], : stamp.shape[1]]
        w = stamp.astype(np.float64)
        cx, cy = x0 + (w * xx).sum() / w.sum(), y0 + (w * yy).sum() / w.sum()
        assert abs(px - cx) < 0.01 and abs(py - cy) < 0.01
    # targets keep a quarter cutout away from the uncovered border
    m = PARAMS["edge_width"] + PARAMS["cutout_size"] / 4 - 0.5
    assert (x > m).all() and (y > m).all() and (x < 255 - m).all() and (y < 255 - m).all()


def test_tiles_have_their_own_sky():
    rng = np.random.default_rng(0)
    shape = (1024, 1024)
    wcss = [observe.tile_wcs(k, shape, 150.1, 2.2, 0.05, rng) for k in range(9)]
    corners = np.array([[0, 0], [1023, 0], [0, 1023], [1023, 1023], [511.5, 511.5]], dtype=float)
    for a, wa in enumerate(wcss):
        sky = wa.pixel_to_world_values(corners[:, 0], corners[:, 1])
        for b, wb in enumerate(wcss):
            if a != b:
                px, py = wb.world_to_pixel_values(*sky)
                inside = (px > -0.5) & (px < 1023.5) & (py > -0.5) & (py < 1023.5)
                assert not inside.any(), (a, b)
    assert len({observe.spiral_cell(k) for k in range(50)}) == 50


def test_components_add_up_and_stamps_carry_catalogue_flux(tile):
    comps = tile["components"]
    total = sum(c.astype(np.float64) for c in comps.values())
    assert np.allclose(total, tile["noiseless"], rtol=1e-6, atol=1e-7)
    placed = np.zeros(tile["noiseless"].shape)
    for stamp, x0, y0 in tile["stamps"].values():
        placed[y0 : y0 + stamp.shape[0], x0 : x0 + stamp.shape[1]] += stamp
    assert np.allclose(placed, comps["targets"], rtol=1e-6, atol=1e-7)
    for name in ("interlopers", "stars", "cosmic_rays", "hot_pixels"):
        assert comps[name].sum() > 0, name
    # All model light lies within the truncation radius, at least PSF_MARGIN pixels inside the stamp
    # edge, so a stamp loses at most the PSF's light outside a box of half-side PSF_MARGIN.
    psf = hst_psf(PARAMS["psf_fwhm"])
    m = render.PSF_MARGIN
    kept = psf.drawImage(nx=2 * m + 1, ny=2 * m + 1, scale=0.05).array.sum()
    h = tile["primary"]
    zp = observe.ab_zeropoint(h["PHOTFLAM"], h["PHOTPLAM"])
    t = tile["targets"]
    checked = 0
    for oid, mag, flux in zip(t["object_id"], t["mag"], t["flux"]):
        stamp, x0, y0 = tile["stamps"][int(oid)]
        assert flux == pytest.approx(10 ** (-0.4 * (mag - zp)), rel=1e-9)
        clipped = min(x0, y0) == 0 or x0 + stamp.shape[1] == 256 or y0 + stamp.shape[0] == 256
        if not clipped:
            # upper bound: GalSim's FFT drawing accuracy (folding threshold 5e-3 of the peak region)
            assert kept * flux * 0.999 <= stamp.sum() <= flux * 1.002
            checked += 1
    # how many stamps touch the tile edge depends on the draw (4 of 10 are unclipped at seed 7)
    assert kept > 0.97 and checked >= 3


def test_catalogue_columns_units_and_ids(tile, tmp_path):
    t = tile["targets"]
    assert tile["units"] == "e-/s"
    assert (
        t["object_id"].dtype == np.int64 and len(set(t["object_id"])) == len(t) == PARAMS["targets_per_tile"]
    )
    units = {"ra": u.deg, "dec": u.deg, "mag": u.mag, "half_light_radius": u.arcsec, "position_angle": u.deg}
    for col, unit in units.items():
        assert t[col].unit == unit, col
    assert t["ra"].dtype == np.float64 and t["dec"].dtype == np.float64 and set(t["tile"]) == {"t0"}
    assert set(t["object_id"]) == set(tile["stamps"])
    lo, hi = PARAMS["target_mag_range"]
    assert ((t["mag"] >= lo) & (t["mag"] <= hi)).all()
    assert ((t["ellipticity"] >= 0) & (t["ellipticity"] < 1)).all()
    assert ((t["bulge_fraction"] >= 0) & (t["bulge_fraction"] <= 1)).all()
    other = _load(_make(tmp_path, index=1))  # the same seed: the rule passes the field's seed to all
    assert not set(other["targets"]["object_id"]) & set(t["object_id"])
    assert not np.allclose(other["targets"]["mag"], t["mag"]) and not np.array_equal(
        other["wht"], tile["wht"]
    )


def test_same_seed_same_bytes_other_seed_other_tile(tile, tmp_path):
    again = _make(tmp_path / "again")
    assert again["tile"].read_bytes() == tile["paths"]["tile"].read_bytes()
    assert again["targets"].read_bytes() == tile["paths"]["targets"].read_bytes()
    assert again["truth"].read_bytes() == tile["paths"]["truth"].read_bytes()
    a = _load(again)
    assert np.array_equal(a["noiseless"], tile["noiseless"]) and np.array_equal(a["noise"], tile["noise"])
    assert all(np.array_equal(a["stamps"][k][0], tile["stamps"][k][0]) for k in tile["stamps"])
    b = _load(_make(tmp_path / "other", seed=8))
    assert not np.array_equal(b["sci"], tile["sci"]) and not np.allclose(
        b["targets"]["ra"], tile["targets"]["ra"]
    )


def test_half_light_radius_of_bulge_plus_disk():
    rng = np.random.default_rng(3)
    gals = population.galaxies(rng, 3, (20.0, 21.0), 0.33, 25.94, (0, 1, 0, 1), (0.1, 0.6))
    hlr = render.composite_half_light_radius(gals)
    n = 400_000
    for i in range(len(gals)):
        # photons shot from GalSim's own radial profiles; the shear conserves area, so the circularised
        # radius sqrt(q x^2 + y^2 / q) in the frame of the major axis is the one to count within
        photons = render.galaxy_profile(gals, i).shoot(n, galsim.BaseDeviate(i + 1))
        c, s_ = np.cos(gals.beta[i]), np.sin(gals.beta[i])
        major, minor = c * photons.x + s_ * photons.y, -s_ * photons.x + c * photons.y
        q = gals.q[i]
        inside = np.sqrt(q * major**2 + minor**2 / q) < hlr[i]
        assert inside.mean() == pytest.approx(0.5, abs=5 * 0.5 / np.sqrt(n))  # binomial, 5 sigma
        assert photons.flux.sum() == pytest.approx(gals.flux[i], rel=1e-6)


def test_psf_has_requested_fwhm():
    psf = hst_psf(0.1)
    fwhm = psf.drawImage(nx=121, ny=121, scale=0.004, method="no_pixel").calculateFWHM()
    assert fwhm == pytest.approx(0.1, rel=0.03)  # image FWHM is measured on a 0.004" grid
    with pytest.raises(ValueError, match="diffraction limit"):
        hst_psf(0.05)


def test_contamination_fraction_closed_form():
    stamp = np.zeros((5, 5), np.float32)
    stamp[2, 2] = 4.0  # own flux 4 at pixel (12, 12)
    noiseless = np.full((30, 30), 0.01, np.float32)
    noiseless[12, 12] += 4.0
    frac = contamination_fractions(noiseless, [(stamp, 10, 10)], size=8)
    assert frac[0] == pytest.approx(0.01 * 64 / 4, rel=1e-5)  # 64 pixels of 0.01 around 4
    covered = np.ones((30, 30), bool)
    covered[:12] = False  # half the box missing
    frac = contamination_fractions(noiseless, [(stamp, 10, 10)], size=8, covered=covered)
    assert frac[0] == pytest.approx(0.01 * 32 / 4, rel=1e-5)


def test_quiet_knobs_leave_only_the_targets(tmp_path):
    quiet = dict(interloper_density=0.0, star_rate=0.0, cosmic_ray_rate=0.0, hot_pixel_rate=0.0)
    t = _load(_make(tmp_path, ncombine=1, edge_width=0, tile_size=128, targets_per_tile=3, **quiet))
    assert np.array_equal(t["noiseless"], t["components"]["targets"])
    assert all(not c.any() for k, c in t["components"].items() if k != "targets")
    assert (t["wht"] > 0).mean() > 0.9  # one exposure, no border: covered but for rejected pixels
