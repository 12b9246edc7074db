"""Bad data (issue 18 item 7): each case is a clear error naming the file, the target or tile and the
cause, or a drop that is logged, counted and listed in the drop table beside the cutouts."""

from __future__ import annotations

import os
import time

import h5py
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from conftest import write_tile
from galsep.config import failed_job_logs, failure_report
from galsep.data.cutouts import make_cutouts, read_dropped
from galsep.data.tiles import InputError
from galsep.data.views import read_view

SIZE = 32


def _cut(small_tile, tmp_path, tiles=None, **kw):
    args = dict(size=SIZE, randoms_per_tile=20, random_min_distance=40.0, max_nan_fraction=0.5, seed=1)
    args.update(kw)
    logged: list[str] = []
    counts = make_cutouts(
        tiles or [small_tile["tile"]], small_tile["targets"], tmp_path / "g.h5", tmp_path / "r.h5",
        log=logged.append, **args,
    )
    return counts, logged


def _edit_targets(small_tile, fn):
    t = Table.read(small_tile["targets"], format="ascii.ecsv")
    t = fn(t)
    t.write(small_tile["targets"], format="ascii.ecsv", overwrite=True)


def _no_outputs(tmp_path):
    return not any((tmp_path / n).exists() for n in ("g.h5", "r.h5", "dropped.ecsv"))


def test_clean_run_writes_an_empty_drop_table(small_tile, tmp_path):
    counts, _ = _cut(small_tile, tmp_path)
    assert counts["dropped"] == 0 and len(read_dropped(tmp_path / "dropped.ecsv")) == 0


def test_all_zero_weight_tile_is_an_error_naming_it(small_tile, tmp_path):
    with fits.open(small_tile["tile"]) as h:
        sci = h["SCI"].data
    bad = write_tile(small_tile["tile"].with_name("tileB.fits"), sci, np.zeros_like(sci), small_tile["wcs"])
    with pytest.raises(InputError, match=r"tileB\.fits: tile tileB has no observed pixel \(its WHT extension is zero"):
        _cut(small_tile, tmp_path, tiles=[small_tile["tile"], bad])
    assert _no_outputs(tmp_path)


def test_nan_block_drops_are_listed_with_object_tile_and_reason(small_tile, tmp_path):
    with fits.open(small_tile["tile"]) as h:
        sci, wht = h["SCI"].data.copy(), h["WHT"].data
    x, y = small_tile["xy"][0]
    sci[int(y) - 20 : int(y) + 20, int(x) - 20 : int(x) + 20] = np.nan  # a NaN block over target 1
    write_tile(small_tile["tile"], sci, wht, small_tile["wcs"])
    counts, logged = _cut(small_tile, tmp_path)
    dropped = read_dropped(tmp_path / "dropped.ecsv")
    assert list(dropped["object_id"]) == [1] and list(dropped["tile"]) == ["tileA"]
    assert list(dropped["reason"]) == ["nan_fraction"] and "max_nan_fraction = 0.5" in dropped["detail"][0]
    assert counts["dropped"] == 1 and 1 not in set(h5py.File(tmp_path / "g.h5")["object_id"][...])
    assert any("dropped target 1 (tile tileA)" in line for line in logged)
    assert "listed in" in logged[-1] and "1 nan_fraction" in logged[-1]
    # the switch makes a drop an error naming the target
    for p in tmp_path.glob("*.h5"):
        p.unlink()
    (tmp_path / "dropped.ecsv").unlink()
    msg = r"1 of 3 targets cannot be cut \(1 nan_fraction\) .*on_drop is 'error': 1 \(tile tileA\): 100% of its"
    with pytest.raises(InputError, match=msg):
        _cut(small_tile, tmp_path, on_drop="error")
    assert _no_outputs(tmp_path)


def test_target_naming_a_missing_tile_is_listed(small_tile, tmp_path):
    _edit_targets(small_tile, lambda t: (t.__setitem__("tile", ["tileA", "tileZ", "tileA"]), t)[1])
    counts, logged = _cut(small_tile, tmp_path)
    dropped = read_dropped(tmp_path / "dropped.ecsv")
    assert counts["dropped"] == 1 and list(dropped["object_id"]) == [2] and dropped["reason"][0] == "unknown_tile"
    assert "'tileZ' is not among the 1 tiles of this run (tileA)" in dropped["detail"][0]


def test_target_off_its_tile_is_listed_naming_target_and_tile(small_tile, tmp_path):
    def move(t):
        t.add_row({"object_id": 999999, "ra": 10.0, "dec": -30.0, "tile": "tileA", "mag": 21.0})
        t["ra"][1] += 0.1  # target 2 moved 6 arcmin off its tile
        return t

    _edit_targets(small_tile, move)
    counts, logged = _cut(small_tile, tmp_path)
    dropped = read_dropped(tmp_path / "dropped.ecsv")
    assert sorted(dropped["object_id"]) == [2, 999999] and set(dropped["reason"]) == {"off_tile"}
    assert all("off tile tileA (200 x 200 pixels" in d for d in dropped["detail"])
    with pytest.raises(InputError, match=r"2 of 4 targets .*: 2 \(tile tileA\): its centre \(ra "):
        _cut(small_tile, tmp_path / "x", on_drop="error")


def test_target_without_truth_stamp_is_an_error_naming_it(small_tile, tmp_path):
    truth = tmp_path / "tileA.h5"
    with h5py.File(truth, "w") as f:
        f["noiseless"] = np.zeros(small_tile["shape"], np.float32)
        for k in (1, 2):  # no stamp for target 3
            d = f.create_dataset(f"targets/{k}", data=np.zeros((8, 8), np.float32))
            d.attrs["x0"], d.attrs["y0"] = 50, 50
    with pytest.raises(InputError, match=r"tileA\.h5: no truth stamp for target 3 of tile tileA"):
        _cut(small_tile, tmp_path, truth_paths=[truth])


def test_empty_target_table_says_so(small_tile, tmp_path):
    _edit_targets(small_tile, lambda t: t[:0])
    with pytest.raises(InputError, match=r"targets\.ecsv: the target table is empty"):
        _cut(small_tile, tmp_path)


def test_every_target_dropped_says_why_not_the_nan_limit(small_tile, tmp_path):
    _edit_targets(small_tile, lambda t: (t.__setitem__("tile", ["tileZ"] * 3), t)[1])
    with pytest.raises(InputError, match=r"all 3 targets were dropped \(3 unknown_tile\)"):
        _cut(small_tile, tmp_path)
    assert _no_outputs(tmp_path)


def test_no_random_positions_says_why(small_tile, tmp_path):
    with pytest.raises(InputError, match=r"cutouts.randoms_per_tile is 0"):
        _cut(small_tile, tmp_path, randoms_per_tile=0)


def test_bad_on_drop_value_is_a_config_error(small_tile, tmp_path):
    from galsep.errors import ConfigError

    with pytest.raises(ConfigError, match="cutouts.on_drop"):
        _cut(small_tile, tmp_path, on_drop="ignore")


def test_truncated_view_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "galaxies.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("y", data=np.random.default_rng(0).normal(size=(64, 32, 32)), compression="gzip")
        f["mask"] = np.ones((64, 32, 32), np.uint8)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for _ in range(2):  # and again on a rerun: the message stays while the bad file does
        with pytest.raises(InputError, match=r"galaxies\.h5: cannot read the view file .*delete it and rerun"):
            read_view(path)


def test_view_missing_a_dataset_names_the_file(tmp_path):
    path = tmp_path / "randoms.h5"
    with h5py.File(path, "w") as f:
        f["y"] = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(InputError, match=r"randoms\.h5: cannot read the view file \(KeyError"):
        read_view(path)


def test_failure_report_prints_each_failed_jobs_error(tmp_path):
    logs = tmp_path / "logs"
    (logs / "views").mkdir(parents=True)
    start = time.time() - 1
    (logs / "cutouts.log").write_text("21:00:00 tileA: 3 targets\n21:00:01 galsep cutouts: tileB.fits: no pixel\n")
    (logs / "views" / "old.log").write_text("galsep views: stale\n")
    os.utime(logs / "views" / "old.log", (start - 100, start - 100))
    (logs / "views" / "galaxies.log").write_text("Traceback (most recent call last):\n  ...\nValueError: boom\n")
    smk = tmp_path / "run.snakemake.log"
    smk.write_text(
        "Error in rule cutouts:\n    jobid: 3\n    output: results/cutouts/galaxies.h5\n"
        f"    log: {logs / 'cutouts.log'} (check log file(s) for error details)\n    shell:\n"
    )
    assert failed_job_logs([smk], start, logs) == failed_job_logs(smk, start, logs)  # Snakemake 9: a list
    jobs = failed_job_logs(smk, start, logs)
    assert [r for r, _ in jobs] == ["cutouts", "galaxies"]
    report = failure_report(smk, start, logs)
    assert "rule cutouts failed: galsep cutouts: tileB.fits: no pixel" in report
    assert "ValueError: boom" in report and "stale" not in report
    assert failure_report(None, time.time() + 10, logs) == ""


@pytest.mark.slow
def test_failing_stage_shows_its_error_on_the_terminal(tmp_path):
    """The real workflow on a tiny synthetic field with one tile's WHT zeroed: the error is on stderr."""
    from workflow import copy_workflow, snakemake

    work = copy_workflow(tmp_path / "wf")
    cfg = ("--configfile", "tests/configs/tiny.yaml")
    snakemake(work, "resources/targets.ecsv", "--cores", "2", *cfg)
    tile = sorted((work / "resources" / "tiles").glob("*.fits"))[0]
    with fits.open(tile) as h:
        h["WHT"].data[...] = 0
        h.writeto(tile, overwrite=True)
    proc = snakemake(work, "results/cutouts/galaxies.h5", "--cores", "2", *cfg, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "galsep: rule cutouts failed: " in out and f"{tile.name}: tile {tile.stem} has no observed pixel" in out




def test_truncated_cutout_file_names_it_in_the_views_stage(small_tile, tmp_path):
    from galsep.data.normalise import Stretch
    from galsep.data.views import make_view

    _cut(small_tile, tmp_path)
    data = (tmp_path / "g.h5").read_bytes()
    (tmp_path / "g.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"g\.h5: cannot read the cutout file .*rerun .* cutouts stage"):
        make_view("galaxies", {"galaxies": tmp_path / "g.h5", "randoms": tmp_path / "r.h5"}, tmp_path / "v.h5",
                  stretch=Stretch(), downsample_2x=0.0, downsample_4x=0.0, mixed_fraction=0.5, seed=0,
                  log=lambda s: None)
    assert not (tmp_path / "v.h5").exists()
