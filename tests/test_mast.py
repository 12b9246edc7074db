"""The real-data source (galsep.sources.mast), offline: MAST and VizieR replayed from recorded responses.

Like astroquery's own tests, the request layer is patched (``PortalAPI._request`` for the MAST portal,
``requests.Session.request`` or the transport adapter for VizieR) and serves the files in
``tests/data/mast``; downloads go to a fake HTTP server that serves a generated drizzled tile with a
real ACS-like header and can drop the connection or be unreachable. The network faults run the real
request stack down to the socket: no name resolution, refused connections, connections that get no
answer (the socket's connect patched: a firewall cannot be made locally), and a real local server
that accepts and never answers (read timeouts). The settings are the ``mast:`` defaults of the config schema, filled in
by Snakemake's ``validate`` as in the workflow. Live tests are marked ``remote_data`` and skipped by
default.
"""

from __future__ import annotations

import copy
import dataclasses
import errno
import json
import logging
import re
import shlex
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from astropy.io import fits
from astropy.table import Table
from astroquery.mast import discovery_portal
from astroquery.utils.mocks import MockResponse

from galsep.sources.mast import MastError, download, query, targets
from galsep.sources.mast.__main__ import main
from galsep.sources.mast.products import read_products
from galsep.sources.synthetic.observe import wcs_header
from galsep.data.tiles import read_tile

from conftest import make_wcs

DATA = Path(__file__).parent / "data" / "mast"
REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def validated(mast: dict | None) -> dict:
    """The ``mast:`` section as the workflow sees it: config.yaml with ``mast`` (absent if None) validated
    against the schema by Snakemake, which fills in the defaults."""
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.pop("mast", None)
    if mast is not None:
        config["mast"] = copy.deepcopy(mast)
    validate(config, str(SCHEMA))
    return config["mast"]


@pytest.fixture(autouse=True)
def no_astroquery_cache():
    """astroquery caches answers (VizieR's) in the user's cache for a week: a replayed answer would be
    served to every later test, which then never reaches the patched request layer."""
    from astroquery import cache_conf

    with cache_conf.set_temp("cache_active", False):
        yield


DEFAULTS = validated({})
SPEC = dataclasses.replace(query.QuerySpec.from_config(DEFAULTS), exclude=("COSMOS18-11B",))
COLUMNS = targets.CatalogueColumns.from_config(DEFAULTS["gzh"])


# ---------------------------------------------------------------------------------------------
# Settings and the command line


def test_mast_defaults_come_from_the_schema():
    """No mast section, an empty one or a partial nested one: validate fills every default, at every level."""
    for mast in (None, {}):
        m = validated(mast)
        assert m["proposal_ids"] == [9822, 10092] and m["filter"] == "F814W" and m["tiles_limit"] is None
        assert m["exclude_tiles"] == ["COSMOS18-11B", "COSMOS33-08B", "COSMOS09-15A"]
        assert m["download"] == {"retries": 5, "backoff": 10.0, "timeout": 300.0,
                                 "cache_dir": "resources/mast/downloads"}
        assert m["gzh"]["source"] == "files" and m["gzh"]["id_column"] == "zooniverse_id"
        assert m["gzh"]["mag_column"] is None and m["gzh"]["keep_columns"] == []
    m = validated({"tiles_limit": 2, "download": {"retries": 1}, "gzh": {"source": "vizier"}})
    assert m["tiles_limit"] == 2 and m["match_radius"] == 20.0
    assert m["download"] == {**DEFAULTS["download"], "retries": 1}
    assert m["gzh"] == {**DEFAULTS["gzh"], "source": "vizier"}
    # every key says what it is and has its default in the schema
    section = yaml.safe_load(SCHEMA.read_text())["properties"]["mast"]

    def keys(node, prefix):
        for key, sub in node["properties"].items():
            yield prefix + key, sub
            if sub.get("type") == "object":
                yield from keys(sub, f"{prefix}{key}.")

    assert [k for k, sub in keys(section, "mast.") if not {"description", "default"} <= set(sub)] == []


def test_parsing_the_workflow_imports_no_astropy_or_torch():
    """rules/common.smk imports the products module when the Snakefile is parsed: it must stay light."""
    code = ("import sys, galsep.sources.mast.products; "
            "print(sorted(m for m in ('astropy', 'torch', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture
def cli(capsys):
    """Run ``python -m galsep.sources.mast STAGE --params JSON ARGS`` in-process: (exit status, stderr)."""
    log = logging.getLogger("galsep")
    before = list(log.handlers)

    def call(stage: str, params: dict, *args: str) -> tuple[int, str]:
        status = main([stage, "--params", json.dumps(params), *args])
        return status, capsys.readouterr().err

    yield call
    for handler in log.handlers[len(before):]:  # galsep.cli.logger adds handlers on every call
        handler.close()
    log.handlers[:] = before


# ---------------------------------------------------------------------------------------------
# MAST portal replay


@pytest.fixture
def portal(monkeypatch):
    """Patch the MAST portal request layer; returns the list of (service, params) requests made."""
    calls: list[tuple[str, dict]] = []
    # astroquery keeps fetched column configs on the class: start each test without them
    monkeypatch.setattr(discovery_portal.PortalAPI, "_column_configs", {})

    def replay(self, method="POST", url=None, data=None, headers=None, **kwargs):
        if "columnsconfig" in url:
            calls.append(("columnsconfig", {"colConfigId": data.split("=", 1)[1]}))
            return [MockResponse((DATA / "caom_columnsconfig.json").read_bytes())]
        request = json.loads(urllib.parse.unquote(data.split("=", 1)[1]))
        calls.append((request["service"], request["params"]))
        if request["service"] == "Mast.Caom.Filtered":
            return [MockResponse((DATA / "caom_filtered.json").read_bytes())]
        if request["service"] == "Mast.Caom.Products":
            # serve only the requested observations' products, as the service does
            wanted = set(request["params"]["obsid"].split(","))
            body = json.loads((DATA / "caom_products.json").read_text())
            body["data"] = [r for r in body["data"] if r["obsID"] in wanted]
            return [MockResponse(json.dumps(body).encode())]
        raise AssertionError(f"unexpected MAST request {request['service']}")

    monkeypatch.setattr(discovery_portal.PortalAPI, "_request", replay)
    return calls


def test_query_sends_the_cosmos_criteria(portal):
    obs = query.query_observations(SPEC)
    assert len(obs) == 7
    service, params = next(c for c in portal if c[0] == "Mast.Caom.Filtered")
    filters = {f["paramName"]: f["values"] for f in params["filters"]}
    assert filters["provenance_name"] == ["CALACS"]
    assert filters["filters"] == ["F814W"]
    assert sorted(filters["proposal_id"]) == ["10092", "9822"]
    assert filters["dataproduct_type"] == ["image"]
    assert filters["instrument_name"] == ["ACS/WFC"]


def test_tile_selection_longest_exposure_and_exclusion(portal):
    chosen = query.select_tiles(query.query_observations(SPEC), SPEC)
    # one tile per pointing: the 507 s re-observation of COSMOS01-01 loses to the 2028 s one;
    # COSMOS18-11B (longer, but excluded) lets COSMOS18-11A through; the COSMOS30-08 tie goes to
    # the smaller obs_id
    assert list(chosen["tile"]) == ["j8pu01010", "j8pu02010", "j9cv18110", "j9cv30080"]
    no_exclusion = query.select_tiles(query.query_observations(SPEC), dataclasses.replace(SPEC, exclude=()))
    assert "j9cv18120" in no_exclusion["tile"] and "j9cv18110" not in no_exclusion["tile"]
    limited = query.select_tiles(query.query_observations(SPEC), dataclasses.replace(SPEC, tiles_limit=2))
    assert list(limited["tile"]) == ["j8pu01010", "j8pu02010"]


def test_products_table_has_one_drizzled_product_per_tile(portal, tmp_path):
    out = tmp_path / "products.ecsv"
    query.write_products(SPEC, out)
    table = read_products(out)
    assert list(table["tile"]) == ["j8pu01010", "j8pu02010", "j9cv18110", "j9cv30080"]
    assert all(uri == f"mast:HST/product/{t}_drz.fits" for uri, t in zip(table["dataURI"], table["tile"]))
    assert set(table["exptime"]) == {2028.0, 1800.0}
    assert np.all(table["size"] > 0)
    _, params = next(c for c in portal if c[0] == "Mast.Caom.Products")
    assert sorted(params["obsid"].split(",")) == ["2003001001", "2003001003", "2003002001", "2003002003"]


def test_offline_query_is_one_clear_line(monkeypatch, tmp_path, cli):
    monkeypatch.setattr(discovery_portal.PortalAPI, "_column_configs", {})

    def unreachable(self, *args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve 'mast.stsci.edu'")

    monkeypatch.setattr(discovery_portal.PortalAPI, "_request", unreachable)
    status, err = cli("query", {**DEFAULTS, "timeout": 5.0}, "--out", str(tmp_path / "p.ecsv"))
    assert status == 2
    assert "galsep.sources.mast query: cannot reach MAST" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.ecsv").exists()


# ---------------------------------------------------------------------------------------------
# Downloads from a fake archive


def write_drz(path: Path, shape=(120, 140), ra=150.1, dec=2.2, seed=0) -> Path:
    """A small drizzled ACS/WFC F814W product with the header keywords of a pipeline drz file."""
    rng = np.random.default_rng(seed)
    wcs = make_wcs(shape, ra, dec)
    primary = fits.PrimaryHDU()
    primary.header.update(
        DATE="2024-03-01", FILENAME=path.name, FILETYPE="SCI", TELESCOP="HST", INSTRUME="ACS",
        EQUINOX=2000.0, ROOTNAME="j8pu01010", PROPOSID=9822, TARGNAME="COSMOS01-01", DETECTOR="WFC",
        FILTER1="CLEAR1L", FILTER2="F814W", EXPTIME=2028.0, TEXPTIME=2028.0, NCOMBINE=4, CCDGAIN=1.0,
        READNSEA=5.08, READNSEB=4.73, READNSEC=4.72, READNSED=5.11, PHOTFLAM=7.0723e-20,
        PHOTPLAM=8057.0, NDRIZIM=8, D001DEXP=507.0,
    )
    header = wcs_header(wcs)
    wht = np.full(shape, 2028.0, np.float32)
    wht[60:64, :] = 1014.0  # chip gap: half the exposures
    wht[:, :6] = 0.0
    sci = rng.normal(0.0, 0.01, shape).astype(np.float32)
    sci_hdu = fits.ImageHDU(sci, header=header, name="SCI")
    sci_hdu.header.update(BUNIT="ELECTRONS/S", MDRIZSKY=50.7, EXPTIME=2028.0)
    wht_hdu = fits.ImageHDU(wht, header=header, name="WHT")
    ctx_hdu = fits.ImageHDU(np.full(shape, 15, np.int32), header=header, name="CTX")
    fits.HDUList([primary, sci_hdu, wht_hdu, ctx_hdu]).writeto(path, checksum=True, overwrite=True)
    return path


class FakeResponse:
    def __init__(self, status, body=b"", headers=None, fail_after=None):
        self.status_code, self.body, self.headers, self.fail_after = status, body, headers or {}, fail_after

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def iter_content(self, chunk):
        sent = 0
        step = 4096
        while sent < len(self.body):
            if self.fail_after is not None and sent >= self.fail_after:
                raise requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead")
            yield self.body[sent : sent + step]
            sent += step


class FakeArchive:
    """Serves one file over 'HTTP' with Range support; can drop streams or be unreachable."""

    def __init__(self, body: bytes, drops: list[int | None] | None = None, offline: bool = False, watch=None):
        self.body, self.drops, self.offline, self.watch = body, list(drops or []), offline, watch
        self.requests: list[dict] = []

    def get(self, url, headers=None, stream=False, timeout=None):
        self.requests.append({"url": url, **(headers or {})})
        if self.watch is not None:
            assert not self.watch.exists(), "the output appeared before the download finished"
        if self.offline:
            raise requests.exceptions.ConnectionError("[Errno -3] Temporary failure in name resolution")
        start = 0
        m = re.match(r"bytes=(\d+)-", (headers or {}).get("Range", ""))
        if m:
            start = int(m.group(1))
            if start >= len(self.body):
                return FakeResponse(416, headers={"Content-Range": f"bytes */{len(self.body)}"})
        part = self.body[start:]
        fail = self.drops.pop(0) if self.drops else None
        if m:
            return FakeResponse(206, part, {"Content-Range": f"bytes {start}-{len(self.body) - 1}/{len(self.body)}",
                                            "Content-Length": str(len(part))}, fail)
        return FakeResponse(200, part, {"Content-Length": str(len(part)), "Accept-Ranges": "bytes"}, fail)

    def close(self):
        pass


@pytest.fixture
def drz_bytes(tmp_path) -> bytes:
    return write_drz(tmp_path / "source_drz.fits").read_bytes()


URI = "mast:HST/product/j8pu01010_drz.fits"


def test_download_writes_a_tile_the_pipeline_reads(tmp_path, drz_bytes):
    out = tmp_path / "tiles" / "j8pu01010.fits"
    archive = FakeArchive(drz_bytes, watch=out)
    download.download_tile(URI, out, cache_dir=tmp_path / "cache", session=archive, size=len(drz_bytes))
    assert out.read_bytes() == drz_bytes
    assert archive.requests[0]["url"].endswith("Download/file?uri=mast:HST/product/j8pu01010_drz.fits")
    tile = read_tile(out)
    assert tile.sci.shape == tile.ivar.shape == (120, 140)
    assert np.all(tile.ivar[:, :6] == 0) and np.all(tile.ivar[:, 6:] > 0)
    # reads scale with the coverage, so ivar is proportional to WHT: half the exposures, half the ivar
    assert np.allclose(tile.ivar[60:64, 6:], 0.5 * tile.ivar[0, 6], rtol=1e-6)


def test_interrupted_download_resumes_from_the_bytes_it_has(tmp_path, drz_bytes):
    out = tmp_path / "tiles" / "t.fits"
    archive = FakeArchive(drz_bytes, drops=[40960], watch=out)
    sleeps: list[float] = []
    download.download_tile(URI, out, cache_dir=tmp_path / "cache", session=archive, backoff=2.0, sleep=sleeps.append)
    assert out.read_bytes() == drz_bytes
    assert "Range" not in archive.requests[0]
    assert archive.requests[1]["Range"] == "bytes=40960-"  # only the missing part is asked for
    assert sleeps == [2.0]


def test_failed_download_leaves_no_tile_and_the_next_run_resumes(tmp_path, drz_bytes, capsys, monkeypatch):
    out = tmp_path / "tiles" / "t.fits"
    cache = tmp_path / "cache"
    archive = FakeArchive(drz_bytes, drops=[8192, 0, 0, 0])
    sleeps: list[float] = []
    with pytest.raises(MastError, match="after 4 attempts") as info:
        download.download_tile(URI, out, cache_dir=cache, session=archive, retries=3, backoff=1.0, sleep=sleeps.append)
    assert "next run resumes" in str(info.value)
    assert sleeps == [1.0, 2.0, 4.0]  # exponential backoff
    assert not out.exists() and not (cache / "j8pu01010_drz.fits").exists()
    assert (cache / ".j8pu01010_drz.fits.part").stat().st_size == 8192
    archive = FakeArchive(drz_bytes)
    download.download_tile(URI, out, cache_dir=cache, session=archive, sleep=lambda s: None)
    assert archive.requests[0]["Range"] == "bytes=8192-"
    assert out.read_bytes() == drz_bytes


def test_corrupt_download_is_refetched_not_published(tmp_path, drz_bytes):
    bad = bytearray(drz_bytes)
    bad[-3000] ^= 0xFF  # a flipped bit in the WHT data: DATASUM no longer matches
    out = tmp_path / "t.fits"

    class Flaky(FakeArchive):
        def get(self, *args, **kwargs):
            self.body = bytes(bad) if not self.requests else drz_bytes
            return super().get(*args, **kwargs)

    archive = Flaky(drz_bytes)
    download.download_tile(URI, out, cache_dir=tmp_path / "cache", session=archive, sleep=lambda s: None)
    assert len(archive.requests) == 2 and "Range" not in archive.requests[1]  # restarted, not resumed
    assert out.read_bytes() == drz_bytes


def test_cached_download_needs_no_network(tmp_path, drz_bytes):
    cache = tmp_path / "cache"
    download.download_tile(URI, tmp_path / "a.fits", cache_dir=cache, session=FakeArchive(drz_bytes))
    offline = FakeArchive(drz_bytes, offline=True)
    download.download_tile(URI, tmp_path / "b.fits", cache_dir=cache, session=offline)
    assert offline.requests == [] and (tmp_path / "b.fits").read_bytes() == drz_bytes


def test_offline_download_is_one_clear_line(tmp_path, monkeypatch, cli):
    monkeypatch.setattr(download.time, "sleep", lambda s: None)

    def unreachable(self, method, url, **kwargs):
        raise requests.exceptions.ConnectionError("Max retries exceeded with url: /api/v0.1/Download/file")

    monkeypatch.setattr(requests.Session, "request", unreachable)
    out = tmp_path / "tiles" / "t.fits"
    params = {**DEFAULTS["download"], "uri": URI, "size": -1, "retries": 2, "cache_dir": str(tmp_path / "c")}
    status, err = cli("download", params, "--out", str(out))
    assert status == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after a warning per failed attempt
    assert "galsep.sources.mast download: could not download" in last and "after 3 attempts" in last
    assert "ConnectionError" in last and "network" in last
    assert not out.exists()


def test_http_refusal_is_not_retried(tmp_path):
    class Refusing(FakeArchive):
        def get(self, url, headers=None, **kwargs):
            self.requests.append({"url": url})
            return FakeResponse(401)

    archive = Refusing(b"")
    with pytest.raises(MastError, match="HTTP 401"):
        download.download_tile(URI, tmp_path / "t.fits", cache_dir=tmp_path / "c", session=archive, sleep=lambda s: None)
    assert len(archive.requests) == 1


# ---------------------------------------------------------------------------------------------
# Targets: catalogue selection, footprints, overlaps


def _tile(path: Path, shape, ra, dec, rot, wht_fn=None) -> Path:
    wcs = make_wcs(shape, ra, dec, rot_deg=rot)
    wht = np.full(shape, 2028.0, np.float32)
    if wht_fn is not None:
        wht_fn(wht)
    primary = fits.PrimaryHDU()
    primary.header.update(EXPTIME=2028.0, NCOMBINE=4, READNSEA=5.0, READNSEB=5.0, READNSEC=5.0, READNSED=5.0)
    header = wcs_header(wcs)
    sci = fits.ImageHDU(np.zeros(shape, np.float32), header=header, name="SCI")
    sci.header.update(BUNIT="ELECTRONS/S", MDRIZSKY=50.7)
    fits.HDUList([primary, sci, fits.ImageHDU(wht, header=header, name="WHT")]).writeto(path)
    return path


def test_footprint_gap_and_overlap_assignment(tmp_path):
    shape = (200, 200)
    # tile A rotated by 30 deg (so its RA/Dec bounding box holds sky it does not cover), with a
    # 10-pixel chip gap of WHT = 0 through rows 95..104; tile B overlaps A's east part
    a = _tile(tmp_path / "a.fits", shape, 150.1, 2.2, 30.0, lambda w: w.__setitem__(slice(95, 105), 0.0))
    wa = make_wcs(shape, 150.1, 2.2, rot_deg=30.0)
    b_centre = wa.pixel_to_world_values(180.0, 50.0)
    b = _tile(tmp_path / "b.fits", shape, float(b_centre[0]), float(b_centre[1]), 0.0)
    wb = make_wcs(shape, float(b_centre[0]), float(b_centre[1]), rot_deg=0.0)
    pix_a = {  # pixel positions in A
        1: (50.0, 150.0),   # deep inside A only
        2: (20.0, 99.0),    # in A's chip gap, not in B: dropped
        3: (190.0, 50.0),   # 10 px from A's edge, well inside B: goes to B
        4: (150.0, 45.0),   # in A and B, beyond the cap from both edges, equal WHT: the first tile
    }
    ra, dec = zip(*(wa.pixel_to_world_values(*xy) for xy in pix_a.values()))
    ra, dec = list(map(float, ra)), list(map(float, dec))
    # 5: a corner of A's RA/Dec bounding box, outside A's rotated footprint (and outside B)
    corner = np.array(wa.pixel_to_world_values([0, 199, 0, 199], [0, 0, 199, 199]))
    eps = 1e-5  # deg, 0.7 pixel inside the box

    def outside(w, r, d):
        x, y = w.world_to_pixel_values(r, d)
        return not (-0.5 <= x < 199.5 and -0.5 <= y < 199.5)

    box = [(r, d) for r in (corner[0].min() + eps, corner[0].max() - eps)
           for d in (corner[1].min() + eps, corner[1].max() - eps)]
    r5, d5 = next((r, d) for r, d in box if outside(wa, r, d) and outside(wb, r, d))
    ra.append(float(r5))
    dec.append(float(d5))
    galaxies = Table({"object_id": np.arange(1, 6, dtype=np.int64), "ra": ra, "dec": dec})
    out = targets.assign_tiles(galaxies, [a, b], edge_cap=32)
    assert dict(zip(out["object_id"], out["tile"])) == {1: "a", 3: "b", 4: "a"}


def _catalogue_files(tmp_path: Path) -> tuple[Path, Path]:
    meta = Table({
        "zooniverse_id": ["AHZ1", "AHZ2", "AHZ3", "AHZ4"],
        "RA": [150.1, 150.1001, 150.0999, 53.1],
        "DEC": [2.2, 2.2001, 2.1999, -27.8],
        "imaging": ["COSMOS", "COSMOS", "COSMOS", "GEMS"],
        "Z_BEST": [0.5, 0.7, 1.1, 0.3],
    })
    morph = Table({
        "zooniverse_id": ["AHZ3", "AHZ2", "AHZ1", "AHZ4"],
        "t01_smooth_or_features_a03_star_or_artifact_flag": ["False", "True", "False", "False"],
        "t01_smooth_or_features_a01_smooth_weighted_fraction": [0.1, 0.2, 0.8, 0.5],
    })
    mp, gp = tmp_path / "metadata_main.csv", tmp_path / "gz_hubble_main.csv"
    meta.write(mp, format="ascii.csv")
    morph.write(gp, format="ascii.csv")
    return mp, gp


def test_catalogue_files_joined_and_filtered(tmp_path):
    mp, gp = _catalogue_files(tmp_path)
    table, source = targets.read_catalogue_files([mp, gp], "zooniverse_id")
    cols = dataclasses.replace(COLUMNS, keep=("Z_BEST", "t01_smooth_or_features_a01_smooth_weighted_fraction"))
    gal = targets.select_galaxies(table, cols, source)
    # AHZ2 flagged as star/artefact, AHZ4 is not COSMOS imaging
    assert list(gal["catalogue_id"]) == ["AHZ1", "AHZ3"]
    assert list(gal["t01_smooth_or_features_a01_smooth_weighted_fraction"]) == [0.8, 0.1]  # joined by id
    assert gal["object_id"].dtype == np.int64 and len(set(gal["object_id"])) == 2
    assert np.all(np.isnan(gal["mag"]))  # no magnitude column configured


def test_missing_column_names_the_column_and_the_file(tmp_path, cli):
    mp, gp = _catalogue_files(tmp_path)
    tile = _tile(tmp_path / "a.fits", (50, 50), 150.1, 2.2, 0.0)
    params = {"gzh": {**DEFAULTS["gzh"], "artifact_column": "t01_star_flag"}, "edge_margin": 64, "timeout": 5.0}
    status, err = cli("targets", params, "--tiles", str(tile), "--catalogues", str(mp), str(gp),
                      "--out", str(tmp_path / "t.ecsv"))
    assert status == 2 and "Traceback" not in err
    assert "'t01_star_flag'" in err and "metadata_main.csv" in err and "gz_hubble_main.csv" in err


def test_targets_from_a_replayed_vizier_votable(tmp_path, monkeypatch):
    seen = []

    def replay(self, method, url, data=None, **kwargs):
        seen.append(data)
        return MockResponse((DATA / "gzh_vizier.vot").read_bytes(), url=url)

    monkeypatch.setattr(requests.Session, "request", replay)
    tile = _tile(tmp_path / "j8pu01010.fits", (400, 400), 150.1, 2.2, 12.0)
    out = tmp_path / "targets.ecsv"
    cols = dataclasses.replace(COLUMNS, mag="MAG_BEST_HI")
    targets.write_targets([tile], out, cols, vizier="J/MNRAS/464/4176")
    assert "-source=J/MNRAS/464/4176" in seen[0] and "-out.max=unlimited" in seen[0]  # row_limit=-1
    t = Table.read(out, format="ascii.ecsv")
    # AHZ2000003 flagged, AHZ3000001 is GEMS imaging, AHZ2000005 lies 60" away, off the 20" tile
    assert list(t["catalogue_id"]) == ["AHZ2000001", "AHZ2000002", "AHZ2000004"]
    assert list(t["tile"]) == ["j8pu01010"] * 3
    assert t["object_id"].dtype == np.int64 and str(t["ra"].unit) == "deg"
    assert np.allclose(t["mag"], [21.3, 22.8, 23.4])


# ---------------------------------------------------------------------------------------------
# Workflow wiring and live tests


def _stage_params(text: str, stage: str) -> list[dict]:
    """The --params of each ``python -m galsep.sources.mast STAGE`` shell command of a dry run."""
    found = []
    for line in re.findall(rf"^Shell command: (python -m galsep\.sources\.mast {stage} .*)$", text, re.M):
        argv = shlex.split(line)
        found.append(json.loads(argv[argv.index("--params") + 1]))
    return found


def test_rules_dry_run(tmp_path):
    """The real workflow with source: mast plans the query first, then one download per tile of the
    products table, the targets, and the downstream stages; every mast stage gets its settings as one
    --params JSON object that the stage's own parser reads."""
    from workflow import copy_workflow, snakemake

    wf = copy_workflow(tmp_path / "wf")
    (wf / "gz_hubble_main.csv").write_text("zooniverse_id\n")
    (wf / "mast.yaml").write_text("source: mast\nmast:\n  tiles_limit: 2\n  gzh:\n    catalogues: [gz_hubble_main.csv]\n")
    args = ("-n", "-p", "--cores", "1", "--configfile", "config.yaml", "mast.yaml")
    # before the query, only the checkpoint can be planned
    text = (lambda r: r.stdout + r.stderr)(snakemake(wf, *args))
    assert re.search(r"^mast_products\s+1$", text, re.M) and "rule mast_tile" not in text, text
    (query_params,) = _stage_params(text, "query")
    assert query.QuerySpec.from_config(query_params) == dataclasses.replace(
        query.QuerySpec.from_config(DEFAULTS), tiles_limit=2)
    assert query_params["timeout"] == 300.0 and "gzh" not in query_params and "download" not in query_params

    (wf / "resources" / "mast").mkdir(parents=True)
    table = Table({"tile": ["j8pu01010", "j9cv18110"], "dataURI": [f"mast:HST/product/{t}_drz.fits" for t in
                   ("j8pu01010", "j9cv18110")], "size": [216581760, 216581760]})
    table.write(wf / "resources" / "mast" / "products.ecsv", format="ascii.ecsv")
    text = (lambda r: r.stdout + r.stderr)(snakemake(wf, *args))
    assert re.search(r"^mast_tile\s+2$", text, re.M) and re.search(r"^mast_targets\s+1$", text, re.M), text
    assert re.search(r"^cutouts\s+1$", text, re.M) and "synthetic_tile" not in text, text
    downloads = sorted(_stage_params(text, "download"), key=lambda p: p["uri"])
    assert downloads == [{**DEFAULTS["download"], "uri": f"mast:HST/product/{t}_drz.fits", "size": 216581760}
                         for t in ("j8pu01010", "j9cv18110")]
    (target_params,) = _stage_params(text, "targets")
    assert target_params == {"gzh": {**DEFAULTS["gzh"], "catalogues": ["gz_hubble_main.csv"]},
                             "edge_margin": 64, "timeout": 300.0}
    assert "--catalogues gz_hubble_main.csv" in text
    # the commands parse with the stage command line's own parser
    (line,) = re.findall(r"^Shell command: python -m galsep\.sources\.mast (targets .*?) >", text, re.M)
    from galsep.sources.mast.__main__ import parser

    parsed = parser().parse_args(shlex.split(line))
    assert parsed.tiles == ["resources/tiles/j8pu01010.fits", "resources/tiles/j9cv18110.fits"]
    assert parsed.out == "resources/targets.ecsv" and json.loads(parsed.params) == target_params


@pytest.mark.remote_data
def test_live_query_finds_cosmos_tiles(tmp_path):
    table = query.write_products(dataclasses.replace(SPEC, exclude=(), tiles_limit=2), tmp_path / "products.ecsv")
    assert len(table) == 2 and all(str(u).endswith("_drz.fits") for u in table["dataURI"])


@pytest.mark.remote_data
def test_live_download_one_tile(tmp_path):
    table = query.write_products(dataclasses.replace(SPEC, exclude=(), tiles_limit=1), tmp_path / "products.ecsv")
    out = download.download_tile(str(table["dataURI"][0]), tmp_path / "tile.fits", cache_dir=tmp_path / "cache",
                             size=int(table["size"][0]))
    assert read_tile(out).sci.ndim == 2


def test_real_tile_runs_through_cutouts_and_views(tmp_path):
    """A drz-like tile and a Galaxy Zoo CSV go through targets, cutouts and views like synthetic data."""
    from galsep.data.cutouts import make_cutouts
    from galsep.data.normalise import Stretch
    from galsep.data.views import make_view, read_view

    shape = (300, 300)
    tile = _tile(tmp_path / "j8pu01010.fits", shape, 150.1, 2.2, 12.0)
    wcs = make_wcs(shape, 150.1, 2.2, rot_deg=12.0)
    xy = [(80.0, 90.0), (200.0, 210.0), (150.0, 60.0)]
    with fits.open(tile, mode="update") as hdul:  # galaxies and sky noise where the catalogue says
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        img = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0) for x, y in xy)
        hdul["SCI"].data = (img + np.random.default_rng(0).normal(0, 0.01, shape)).astype(np.float32)
    radec = wcs.pixel_to_world_values(*np.array(xy).T)
    csv = tmp_path / "gz.csv"
    rows = [f"AHZ{i},{ra},{dec},COSMOS,0" for i, (ra, dec) in enumerate(zip(*radec), start=2000001)]
    csv.write_text("zooniverse_id,RA,DEC,imaging,t01_smooth_or_features_a03_star_or_artifact_flag\n"
                   + "\n".join(rows) + "\n")
    targets_out = tmp_path / "targets.ecsv"
    targets.write_targets([tile], targets_out, COLUMNS, catalogues=[csv])
    counts = make_cutouts([tile], targets_out, tmp_path / "g.h5", tmp_path / "r.h5", size=32, randoms_per_tile=5,
                          random_min_distance=40, max_nan_fraction=0.2, seed=0, log=lambda s: None)
    assert counts["galaxies"] == 3 and counts["randoms"] > 0
    for view in ("galaxies", "randoms"):
        make_view(view, {"galaxies": tmp_path / "g.h5", "randoms": tmp_path / "r.h5"}, tmp_path / f"{view}.h5",
                  stretch=Stretch(), downsample_2x=0.0, downsample_4x=0.0, mixed_fraction=0.5, seed=0,
                  log=lambda s: None)
    g = read_view(tmp_path / "galaxies.h5")
    # each galaxy sits at the centre of its cutout: the brightest pixels are the central four
    c = g.y[:, 15:17, 15:17].mean((1, 2))
    assert (c > 0.9 * g.y.amax((1, 2))).all() and g.truth is None


# ---------------------------------------------------------------------------------------------
# Network faults: no network fails at once, transient failures are retried (issue 18 item 1)


class Sleeps(list):
    """Stands in for time.sleep: records the waits, never sleeps."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps(monkeypatch) -> Sleeps:
    record = Sleeps()
    monkeypatch.setattr("time.sleep", record)
    return record


@pytest.fixture(params=["name resolution", "connection refused"])
def no_network(request, monkeypatch):
    """The real request stack (requests, urllib3, astroquery) down to the socket, on a machine with no
    network: MAST's name does not resolve, or every connection is refused (a closed local port).
    Returns the list of hosts looked up, one per connection attempt."""
    import socket

    looked_up: list[str] = []
    real = socket.getaddrinfo
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]

    def getaddrinfo(host, port, *args, **kwargs):
        looked_up.append(host)
        if request.param == "name resolution":
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real("127.0.0.1", closed_port, socket.AF_INET, socket.SOCK_STREAM)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


def test_no_network_download_fails_at_once_naming_host_and_fix(tmp_path, no_network, sleeps, cli):
    out = tmp_path / "tiles" / "t.fits"
    params = {**DEFAULTS["download"], "uri": URI, "size": -1, "cache_dir": str(tmp_path / "c")}  # retries: 5
    start = time.monotonic()
    status, err = cli("download", params, "--out", str(out))
    assert time.monotonic() - start < 5
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "galsep.sources.mast download: cannot reach MAST at mast.stsci.edu" in err
    assert "source: synthetic" in err and "where mast.stsci.edu is reachable" in err
    assert no_network == ["mast.stsci.edu"] and sleeps == []  # one attempt, no backoff
    assert not out.exists()


def test_no_network_query_fails_at_once_naming_host_and_fix(tmp_path, no_network, sleeps, cli, monkeypatch):
    monkeypatch.setattr(discovery_portal.PortalAPI, "_column_configs", {})
    start = time.monotonic()
    status, err = cli("query", {**DEFAULTS, "timeout": 300.0}, "--out", str(tmp_path / "p.ecsv"))
    assert time.monotonic() - start < 5
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "galsep.sources.mast query: cannot reach MAST at mast.stsci.edu to query observations" in err
    assert "source: synthetic" in err
    assert no_network == ["mast.stsci.edu"] and sleeps == []
    assert not (tmp_path / "p.ecsv").exists()


def test_transient_download_failures_are_retried_with_backoff(tmp_path, drz_bytes, sleeps):
    """A reset connection, a connect timeout after it, HTTP 503 and a stream cut mid-transfer are retried
    (10, 20, 40, 80 s); the host vanishing after the first attempt too (the network was there). A
    connect timeout on the first attempt is a firewall, not a transient failure (see below)."""
    import socket

    failures = [
        requests.exceptions.ConnectionError(ConnectionResetError(104, "Connection reset by peer")),
        requests.exceptions.ConnectTimeout("Connection to mast.stsci.edu timed out. (connect timeout=10)"),
        FakeResponse(503),
        requests.exceptions.ConnectionError(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")),
    ]

    class Flaky(FakeArchive):
        def get(self, url, headers=None, **kwargs):
            if failures:
                self.requests.append({"url": url, **(headers or {})})
                failure = failures.pop(0)
                if isinstance(failure, Exception):
                    raise failure
                return failure
            return super().get(url, headers=headers, **kwargs)

    out = tmp_path / "t.fits"
    archive = Flaky(drz_bytes, drops=[40960])
    download.download_tile(URI, out, cache_dir=tmp_path / "cache", session=archive)
    assert out.read_bytes() == drz_bytes
    assert sleeps == [10.0, 20.0, 40.0, 80.0, 160.0]  # the defaults: 5 retries from 10 s, doubling
    assert len(archive.requests) == 6 and archive.requests[-1]["Range"] == "bytes=40960-"


def test_transient_query_failures_are_retried_then_succeed(portal, sleeps, monkeypatch):
    replay = discovery_portal.PortalAPI._request
    response = requests.Response()
    response.status_code = 503
    failures = [requests.exceptions.ReadTimeout("Read timed out. (read timeout=600)"),
                requests.exceptions.HTTPError("503 Server Error: Service Unavailable", response=response)]

    def flaky(self, *args, **kwargs):
        if failures:
            raise failures.pop(0)
        return replay(self, *args, **kwargs)

    monkeypatch.setattr(discovery_portal.PortalAPI, "_request", flaky)
    obs = query.query_observations(SPEC)
    assert len(obs) == 7 and sleeps == [10.0, 20.0]


def test_query_refused_by_mast_is_not_retried(portal, sleeps, monkeypatch):
    response = requests.Response()
    response.status_code = 401

    def refuse(self, *args, **kwargs):
        raise requests.exceptions.HTTPError("401 Client Error: Unauthorized", response=response)

    monkeypatch.setattr(discovery_portal.PortalAPI, "_request", refuse)
    with pytest.raises(MastError, match="MAST refused to query observations \\(HTTP 401"):
        query.query_observations(SPEC)
    assert sleeps == []


def test_query_gives_up_after_the_retries(portal, sleeps, monkeypatch):
    def timeout(self, *args, **kwargs):
        raise requests.exceptions.ReadTimeout("Read timed out.")

    monkeypatch.setattr(discovery_portal.PortalAPI, "_request", timeout)
    with pytest.raises(MastError, match="could not query observations after 3 attempts"):
        query.query_observations(SPEC, retries=2, backoff=1.0)
    assert sleeps == [1.0, 2.0]


def test_download_onto_a_full_disk_names_free_and_needed(tmp_path, drz_bytes, sleeps, monkeypatch):
    """ENOSPC while the bytes stream in is not a network failure: no retries, the space it needs."""
    import builtins

    from galsep.errors import DiskFullError

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, block):
            if self.f.tell() >= 8192:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(block)

    monkeypatch.setattr(download, "open", lambda *a, **k: Full(builtins.open(*a, **k)), raising=False)
    out = tmp_path / "t.fits"
    with pytest.raises(DiskFullError) as info:
        download.download_tile(URI, out, cache_dir=tmp_path / "cache", session=FakeArchive(drz_bytes))
    message = str(info.value)
    assert ".j8pu01010_drz.fits.part" in message and "free" in message
    assert f"needed {len(drz_bytes) / 1024:.1f} KiB" in message
    assert sleeps == [] and not out.exists()


# ---------------------------------------------------------------------------------------------
# VizieR offline, firewalled nodes (connections that get no answer), read timeouts (issue 18 item 1)


def _targets_cli(tmp_path: Path, cli, timeout: float = 600.0) -> tuple[int, str]:
    """The targets stage with ``mast.gzh.source: vizier`` (its command line, as the rule runs it)."""
    tile = _tile(tmp_path / "j8pu01010.fits", (60, 60), 150.1, 2.2, 0.0)
    params = {"gzh": {**DEFAULTS["gzh"], "source": "vizier"}, "edge_margin": 64, "timeout": timeout}
    return cli("targets", params, "--tiles", str(tile), "--out", str(tmp_path / "targets.ecsv"))


def test_no_network_vizier_fails_at_once_naming_host_and_fix(tmp_path, no_network, sleeps, cli):
    start = time.monotonic()
    status, err = _targets_cli(tmp_path, cli)
    assert time.monotonic() - start < 5
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    host = "vizier.cds.unistra.fr"  # astroquery.vizier.conf.server's first mirror
    assert f"galsep.sources.mast targets: cannot reach VizieR at {host} to fetch VizieR catalogue" in err
    assert "mast.gzh.source: files" in err and "source: synthetic" in err
    assert no_network == [host] and sleeps == []  # one attempt, no backoff
    assert not (tmp_path / "targets.ecsv").exists()


@pytest.fixture
def firewalled(monkeypatch) -> list[float | None]:
    """A node whose firewall drops outgoing connections: names resolve, but a connection request gets
    no answer, so the socket's connect ends in a timeout (raised at once, without waiting the timeout
    out). Returns the connect timeout of every attempt."""
    import socket

    timeouts: list[float | None] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        return real("192.0.2.1", port, socket.AF_INET, socket.SOCK_STREAM)  # TEST-NET-1, never contacted

    def connect(self, address):
        timeouts.append(self.gettimeout())
        raise TimeoutError("timed out")  # what the kernel's connect gives after `timeout` seconds unanswered

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return timeouts


@pytest.mark.parametrize("stage", ["query", "download", "targets"])
def test_firewalled_node_fails_after_one_short_connect(tmp_path, firewalled, sleeps, cli, monkeypatch, stage):
    """A connection that gets no answer waits 10 s (CONNECT_TIMEOUT, not the 300-600 s read timeout),
    once: the user reads one line naming the host, the firewall and the fix within ~10 s, not after
    the retries' 5 minutes."""
    from galsep.sources.mast.errors import CONNECT_TIMEOUT

    monkeypatch.setattr(discovery_portal.PortalAPI, "_column_configs", {})
    if stage == "query":
        status, err = cli("query", {**DEFAULTS, "timeout": 600.0}, "--out", str(tmp_path / "p.ecsv"))
        host = "mast.stsci.edu"
    elif stage == "download":
        params = {**DEFAULTS["download"], "uri": URI, "size": -1, "cache_dir": str(tmp_path / "c")}
        status, err = cli("download", params, "--out", str(tmp_path / "t.fits"))
        host = "mast.stsci.edu"
    else:
        status, err = _targets_cli(tmp_path, cli)
        host = "vizier.cds.unistra.fr"
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"cannot reach {'VizieR' if stage == 'targets' else 'MAST'} at {host}" in err
    assert f"no answer within {CONNECT_TIMEOUT:g} s (a firewall may be dropping it" in err
    assert CONNECT_TIMEOUT == 10.0 and firewalled == [CONNECT_TIMEOUT]  # one attempt of 10 s
    assert sleeps == []


class SilentServer:
    """A real HTTP server on 127.0.0.1 that accepts every connection; the first ``silent`` requests get
    no answer (the client's read times out), the later ones ``body``."""

    def __init__(self, body: bytes, silent: int) -> None:
        import socket
        import threading

        self.body, self.silent, self.requests = body, silent, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                request += chunk
            self.requests += 1
            if self.requests <= self.silent:
                self.held.append(conn)  # accepted, read, never answered
                continue
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
            conn.sendall(head.encode() + self.body)
            conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def silent_server(drz_bytes):
    servers: list[SilentServer] = []

    def start(silent: int) -> SilentServer:
        servers.append(SilentServer(drz_bytes, silent))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_read_timeouts_of_a_server_that_never_answers_are_retried(tmp_path, drz_bytes, sleeps, silent_server):
    """A host that accepts the connection but never answers is transient: retried with backoff, and
    the tile arrives when it answers again."""
    server = silent_server(silent=2)
    base = f"http://127.0.0.1:{server.port}/api/v0.1/Download/file"
    out = tmp_path / "t.fits"
    download.download_tile(URI, out, cache_dir=tmp_path / "cache", base_url=base, timeout=0.3)
    assert out.read_bytes() == drz_bytes
    assert server.requests == 3 and sleeps == [10.0, 20.0]


def test_a_server_that_never_answers_gives_up_after_the_retries(tmp_path, sleeps, silent_server):
    server = silent_server(silent=10)
    base = f"http://127.0.0.1:{server.port}/api/v0.1/Download/file"
    with pytest.raises(MastError) as info:
        download.download_tile(URI, tmp_path / "t.fits", cache_dir=tmp_path / "cache", base_url=base, timeout=0.3,
                               retries=2)
    message = str(info.value)
    assert "after 3 attempts" in message and "ReadTimeout" in message and "read timeout=0.3" in message
    assert server.requests == 3 and sleeps == [10.0, 20.0] and not (tmp_path / "t.fits").exists()


def test_transient_vizier_failures_are_retried_then_succeed(tmp_path, sleeps, monkeypatch):
    """VizieR's request, at the transport adapter (under the session, its hooks and timeouts): a read
    timeout and HTTP 503 are retried (10, 20 s), then the catalogue is read; every request was sent
    with the 10 s connect timeout and the stage's read timeout."""
    from requests.adapters import HTTPAdapter

    sent: list = []

    def response(status: int, body: bytes, request) -> requests.Response:
        r = requests.Response()
        r.status_code, r._content, r.url, r.request = status, body, request.url, request
        return r

    def send(self, request, stream=False, timeout=None, **kwargs):
        sent.append(timeout)
        if len(sent) == 1:
            raise requests.exceptions.ReadTimeout("Read timed out. (read timeout=600)", request=request)
        if len(sent) == 2:
            return response(503, b"<html>Service Unavailable</html>", request)
        return response(200, (DATA / "gzh_vizier.vot").read_bytes(), request)

    monkeypatch.setattr(HTTPAdapter, "send", send)
    tile = _tile(tmp_path / "j8pu01010.fits", (400, 400), 150.1, 2.2, 12.0)
    cols = dataclasses.replace(COLUMNS, mag="MAG_BEST_HI")
    t = targets.write_targets([tile], tmp_path / "targets.ecsv", cols, vizier="J/MNRAS/464/4176", timeout=600.0)
    assert list(t["catalogue_id"]) == ["AHZ2000001", "AHZ2000002", "AHZ2000004"]
    assert sent == [(10.0, 600.0)] * 3 and sleeps == [10.0, 20.0]


def test_vizier_refusal_is_not_retried(tmp_path, sleeps, monkeypatch):
    from requests.adapters import HTTPAdapter

    def send(self, request, **kwargs):
        r = requests.Response()
        r.status_code, r._content, r.url, r.request = 404, b"no such catalogue", request.url, request
        return r

    monkeypatch.setattr(HTTPAdapter, "send", send)
    with pytest.raises(MastError) as info:
        targets.read_catalogue_vizier("J/NOPE/1/2", "OBJID")
    assert "VizieR refused to fetch VizieR catalogue J/NOPE/1/2 (HTTP 404" in str(info.value)
    assert "mast.gzh.vizier_catalog" in str(info.value) and sleeps == []
