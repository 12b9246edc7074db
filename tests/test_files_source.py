"""Bring your own images (source: files): a demo directory runs through the catalogue in the tiny config,
every supported unit and weight map gives the same tile, and each bad input is a clear error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.table import Table

from galsep.data.tiles import read_tile
from galsep.errors import InputError
from galsep.sources.files.__main__ import main
from galsep.sources.files.demo import write_demo
from galsep.sources.files.images import ImageSettings, write_tile
from galsep.sources.files.layout import find_images
from galsep.sources.files.targets import OUTSIDE_REASON, TargetColumns, write_targets
from workflow import copy_workflow, snakemake

SEED = 11
EXP = ImageSettings(sci_extension="SCI", weight_extension="WHT", weight_type="EXP", bunit=None)
COLS = TargetColumns(id="id", ra="ra", dec="dec")


def _files(directory: Path, **over) -> dict:
    return {"directory": str(directory), "pattern": "*_drz.fits", "sci_extension": "SCI",
            "weight_extension": "WHT", "weight_replace": None, "weight_type": "EXP", "bunit": None,
            "targets": str(directory / "targets.csv"), "id_column": "id", "ra_column": "ra",
            "dec_column": "dec"} | over


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """Two 256-pixel images in e-/s with WHT exposure maps, and their targets."""
    root = tmp_path_factory.mktemp("demo") / "mydata"
    write_demo(root, tiles=2, seed=SEED)
    return root


@pytest.fixture(scope="module")
def base_tile(demo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("base") / "field00_drz.fits"
    write_tile(demo / "field00_drz.fits", None, out, EXP)
    return out


@pytest.fixture
def image(demo, tmp_path) -> Path:
    """A copy of the first demo image, to spoil."""
    return Path(shutil.copy(demo / "field00_drz.fits", tmp_path / "img_drz.fits"))


def _edit(path: Path, fn) -> None:
    with fits.open(path) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    fn(hdul)
    hdul.writeto(path, overwrite=True)


# ---------------------------------------------------------------------------------------------------
# Units and weight maps


@pytest.mark.parametrize("weight_type, units, separate", [("IVM", "erg/s/cm2/A", True), ("EXP", "ELECTRONS", False)])
def test_every_unit_and_weight_map_gives_the_same_tile(base_tile, tmp_path, weight_type, units, separate):
    """The same simulated image stored in other units (FLAM with PHOTFLAM, electrons with EXPTIME) and with
    an inverse-variance map in a separate file reads back as the e-/s + exposure-map tile: same SCI, same
    inverse variance (so the IVM path reproduces the ACS noise model's values), same WCS."""
    write_demo(tmp_path / "d", tiles=1, seed=SEED, weight_type=weight_type, units=units, separate=separate)
    images = find_images(_files(tmp_path / "d", pattern="*_sci.fits" if separate else "*_drz.fits",
                                weight_replace=["_sci", "_wht"] if separate else None))
    (img,) = images.values()
    assert (img.weight is not None) == separate
    write_tile(img.image, img.weight, tmp_path / "t.fits", ImageSettings("SCI", "WHT", weight_type, None))
    ref, got = read_tile(base_tile), read_tile(tmp_path / "t.fits")
    assert got.header["BUNIT"] == "ELECTRONS/S"
    np.testing.assert_allclose(got.sci, ref.sci, rtol=1e-5, atol=1e-9)
    covered = ref.ivar > 0
    assert np.array_equal(got.ivar > 0, covered) and covered.mean() > 0.5
    np.testing.assert_allclose(got.ivar[covered], ref.ivar[covered], rtol=1e-5)
    x, y = np.array([0.0, 100.0, 255.0]), np.array([0.0, 200.0, 255.0])
    np.testing.assert_allclose(got.wcs.pixel_to_world_values(x, y), ref.wcs.pixel_to_world_values(x, y), rtol=1e-12)


def test_bunit_override_replaces_a_missing_header_unit(image, base_tile, tmp_path):
    def strip(h):
        for hdu in h:
            hdu.header.remove("BUNIT", ignore_missing=True)
    _edit(image, strip)
    with pytest.raises(InputError, match=r"img_drz\.fits: the header has no BUNIT.*set files\.bunit"):
        write_tile(image, None, tmp_path / "t.fits", EXP)
    write_tile(image, None, tmp_path / "t.fits", ImageSettings("SCI", "WHT", "EXP", "ELECTRONS/S"))
    np.testing.assert_array_equal(read_tile(tmp_path / "t.fits").sci, read_tile(base_tile).sci)


# ---------------------------------------------------------------------------------------------------
# Bad images: each a clear error naming the file and what to do


def test_missing_directory_and_no_match_are_errors_naming_them(tmp_path):
    with pytest.raises(InputError, match=r"files\.directory .*nowhere: no such directory; set files\.directory"):
        find_images(_files(tmp_path / "nowhere"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"no file matches files\.pattern '\*_drz\.fits' \(the directory holds"
                                         r" notes\.txt\); set files\.pattern"):
        find_images(_files(tmp_path))


def test_missing_weight_map_is_an_error_naming_it(image, tmp_path):
    _edit(image, lambda h: h.pop(2))  # drop the WHT extension
    with pytest.raises(InputError, match=r"img_drz\.fits: no extension 'WHT' with the weight map \(it has"
                                         r" \['PRIMARY', 'SCI'\]\); set files\.weight_extension .*"
                                         r"files\.weight_replace"):
        write_tile(image, None, tmp_path / "t.fits", EXP)
    assert not (tmp_path / "t.fits").exists()
    # a separate weight file that is not there fails when the workflow is parsed, before any job
    with pytest.raises(InputError, match=r"img_drz\.fits: its weight map .*img_wht\.fits does not exist"):
        find_images(_files(tmp_path, weight_replace=["_drz", "_wht"]))


def test_weight_pattern_overlap_is_an_error(demo, tmp_path):
    write_demo(tmp_path, tiles=1, seed=SEED, separate=True)
    with pytest.raises(InputError, match=r"files\.pattern '\*\.fits' matches weight files too"):
        find_images(_files(tmp_path, pattern="*.fits", weight_replace=["_sci", "_wht"]))


@pytest.mark.parametrize("bunit", ["MJy/sr", "COUNTS/S", "Jy"])
def test_unknown_units_are_refused_naming_them(image, tmp_path, bunit):
    _edit(image, lambda h: h["SCI"].header.update(BUNIT=bunit))
    with pytest.raises(InputError, match=rf"img_drz\.fits: SCI is in unknown units BUNIT = '{bunit}'; galsep needs"
                                         r" e-/s and converts ELECTRONS \(with EXPTIME\) and erg/s/cm\^2/A"):
        write_tile(image, None, tmp_path / "t.fits", EXP)


def test_flux_density_without_photflam_is_refused(image, tmp_path):
    def flam(h):
        h["SCI"].header["BUNIT"] = "erg/s/cm2/A"
        for hdu in h:
            hdu.header.remove("PHOTFLAM", ignore_missing=True)
    _edit(image, flam)
    with pytest.raises(InputError, match=r"SCI is in 'erg/s/cm2/A' but the header has no positive PHOTFLAM"):
        write_tile(image, None, tmp_path / "t.fits", EXP)


def test_exposure_weights_without_noise_keywords_point_to_ivm(image, tmp_path):
    def strip(h):
        for hdu in h:
            hdu.header.remove("MDRIZSKY", ignore_missing=True)
    _edit(image, strip)
    with pytest.raises(InputError, match=r"img_drz\.fits: .*lacks \['MDRIZSKY'\].*set files\.weight_type: IVM"):
        write_tile(image, None, tmp_path / "t.fits", EXP)


def test_image_without_celestial_wcs_is_refused(image, tmp_path):
    def strip(h):
        for key in ("CTYPE1", "CTYPE2"):
            h["SCI"].header[key] = "LINEAR"
    _edit(image, strip)
    with pytest.raises(InputError, match=r"img_drz\.fits: the science extension's header has no celestial WCS"):
        write_tile(image, None, tmp_path / "t.fits", EXP)


def test_a_bad_image_is_one_line_and_exit_2(image, tmp_path, caplog):
    _edit(image, lambda h: h["SCI"].header.update(BUNIT="MJy/sr"))
    params = '{"sci_extension": "SCI", "weight_extension": "WHT", "weight_type": "EXP", "bunit": null}'
    assert main(["tile", "--image", str(image), "--weight=", "--out", str(tmp_path / "t.fits"),
                 "--params", params]) == 2
    assert "galsep.sources.files tile: " in caplog.text and "unknown units" in caplog.text


# ---------------------------------------------------------------------------------------------------
# Targets


@pytest.fixture
def tiles(demo, tmp_path) -> list[Path]:
    out = []
    for name in ("field00_drz", "field01_drz"):
        write_tile(demo / f"{name}.fits", None, tmp_path / f"{name}.fits", EXP)
        out.append(tmp_path / f"{name}.fits")
    return out


def _table(demo, tmp_path, fn) -> Path:
    t = Table.read(demo / "targets.csv", format="ascii.csv")
    t = fn(t)
    t.write(tmp_path / "targets.csv", format="ascii.csv", overwrite=True)
    return tmp_path / "targets.csv"


def test_targets_go_to_the_image_that_covers_them(demo, tiles, tmp_path):
    placed = write_targets(tiles, demo / "targets.csv", tmp_path / "t.ecsv", tmp_path / "o.ecsv", COLS)
    table = Table.read(demo / "targets.csv", format="ascii.csv")
    assert sorted(placed["object_id"]) == sorted(table["id"]) and len(Table.read(tmp_path / "o.ecsv")) == 0
    # the demo's ids are tile index * 1e6 + k, so each target's tile is known
    expect = np.where(np.asarray(placed["object_id"]) < 1_000_000, "field00_drz", "field01_drz")
    assert list(placed["tile"]) == list(expect)


def test_targets_outside_some_images_are_listed_or_an_error(demo, tiles, tmp_path):
    from astropy.table import vstack

    def add_outside(t):
        far = Table({"id": [77, 78], "ra": [10.0, 10.1], "dec": [-30.0, -30.0], "mag": [21.0, 21.0]})
        return vstack([t, far])
    table = _table(demo, tmp_path, add_outside)
    placed = write_targets(tiles, table, tmp_path / "t.ecsv", tmp_path / "o.ecsv", COLS)
    outside = Table.read(tmp_path / "o.ecsv")
    assert list(outside["object_id"]) == [77, 78] and set(outside["reason"]) == {OUTSIDE_REASON}
    assert "(ra 10.000000, dec -30.000000) is on no observed pixel of the 2 image(s)" in outside["detail"][0]
    assert 77 not in placed["object_id"] and len(placed) == 20
    with pytest.raises(InputError, match=r"targets\.csv: 2 of 22 targets are outside every image and cutouts\.on_drop"
                                         r" is 'error': 77 \(ra 10\.000000.*set cutouts\.on_drop: list"):
        write_targets(tiles, table, tmp_path / "t2.ecsv", tmp_path / "o2.ecsv", COLS, on_drop="error")
    assert not (tmp_path / "t2.ecsv").exists()


def test_targets_outside_every_image_are_an_error(demo, tiles, tmp_path):
    def shift(t):
        t["ra"] = t["ra"] + 1.0
        return t
    table = _table(demo, tmp_path, shift)
    with pytest.raises(InputError, match=r"targets\.csv: none of its 20 targets falls on an observed pixel .* of the 2"
                                         r" image\(s\) \(field00_drz, field01_drz\); check that files\.ra_column"):
        write_targets(tiles, table, tmp_path / "t.ecsv", tmp_path / "o.ecsv", COLS)
    assert not (tmp_path / "t.ecsv").exists()


@pytest.mark.parametrize("column, key", [("id", "files.id_column"), ("ra", "files.ra_column"),
                                         ("dec", "files.dec_column")])
def test_missing_target_column_is_an_error_naming_the_key(demo, tiles, tmp_path, column, key):
    table = _table(demo, tmp_path, lambda t: t[[c for c in t.colnames if c != column]])
    with pytest.raises(InputError, match=rf"targets\.csv: no column '{column}' \(it has 3 columns: .*\); set the"
                                         rf" column name under {key}"):
        write_targets(tiles, table, tmp_path / "t.ecsv", tmp_path / "o.ecsv", COLS)


def test_target_table_in_fits_with_other_column_names(demo, tiles, tmp_path):
    t = Table.read(demo / "targets.csv", format="ascii.csv")
    t.rename_columns(["id", "ra", "dec"], ["NUMBER", "ALPHA_J2000", "DELTA_J2000"])
    t.write(tmp_path / "cat.fits")
    cols = TargetColumns(id="number", ra="alpha_j2000", dec="delta_j2000")
    placed = write_targets(tiles, tmp_path / "cat.fits", tmp_path / "t.ecsv", tmp_path / "o.ecsv", cols)
    assert len(placed) == len(t)


# ---------------------------------------------------------------------------------------------------
# The workflow


def test_missing_directory_or_table_fails_before_any_job(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    (wf / "files.yaml").write_text("source: files\nfiles: {directory: nowhere}\n")
    proc = snakemake(wf, "-n", "--configfile", "config.yaml", "files.yaml", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "files.directory nowhere: no such directory" in out
    assert "jobid" not in out
    # so does a missing target table
    write_demo(wf / "mydata", tiles=1, seed=SEED)
    (wf / "files.yaml").write_text("source: files\nfiles: {directory: mydata, pattern: '*_drz.fits'}\n")
    proc = snakemake(wf, "-n", "--configfile", "config.yaml", "files.yaml", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "files.targets images/targets.csv: no such file; set files.targets" in out
    assert "jobid" not in out


@pytest.mark.slow
def test_demo_directory_runs_through_the_catalogue(tmp_path):
    """`python -m galsep.sources.files demo` + the tiny config: tiles, targets, cutouts, views, the EM priors,
    posterior shards and the catalogue, with one target off the images listed and no evaluation."""
    wf = copy_workflow(tmp_path / "wf")
    assert main(["demo", str(wf / "mydata"), "--seed", str(SEED)]) == 0
    targets = wf / "mydata" / "targets.csv"
    with targets.open("a") as f:
        f.write("99,10.0,-30.0,21.0\n")
    snakemake(wf, "--cores", "2", "--configfile", "tests/configs/tiny.yaml", "mydata/files.yaml")
    ds = xr.open_zarr(wf / "results/catalogue.zarr", consolidated=False)
    table = Table.read(targets, format="ascii.csv")
    assert sorted(ds["object_id"].values) == sorted(i for i in table["id"] if i != 99)
    assert set(ds["tile"].values) == {"field00_drz", "field01_drz"}
    assert "truth_galaxy" not in ds and ds["galaxy"].attrs["units"] == "e-/s"
    assert np.isfinite(ds["galaxy_mean"].values).all()
    outside = Table.read(wf / "resources/files/outside.ecsv")
    assert list(outside["object_id"]) == [99]
    assert not (wf / "results/metrics.json").exists() and not (wf / "results/compare").exists()
    # the tiles the cutouts read hold the user's pixels (in e-/s already: unchanged)
    for name in ("field00_drz", "field01_drz"):
        with fits.open(wf / "mydata" / f"{name}.fits") as h:
            assert np.array_equal(read_tile(wf / "resources/tiles" / f"{name}.fits").sci, h["SCI"].data)
