"""Real data source: HST/ACS COSMOS F814W drizzled tiles from MAST and Galaxy Zoo: Hubble targets.

Three steps, each a subcommand of ``python -m galsep.sources.mast`` called by ``rules/mast.smk``:

``query``     ask MAST (astroquery.mast.Observations) for the CALACS drizzled images of the COSMOS
              programmes, drop excluded tiles, keep the longest exposure of each pointing, and write
              one row per tile (``resources/mast/products.ecsv``).
``download``  fetch one drizzled product with HTTP range resume, retries with exponential backoff, a
              length check against the server and the archive's recorded size, and a FITS check
              (SCI and WHT present, CHECKSUM/DATASUM verified when the file has them). Completed files
              live in a download cache and are hard-linked into ``resources/tiles/{tile}.fits``.
``targets``   read the Galaxy Zoo: Hubble catalogue (files or VizieR), keep galaxies with COSMOS
              imaging that volunteers did not flag as star/artefact, assign each to the tile whose
              SCI WCS footprint and WHT > 0 coverage contain it (the best one where tiles overlap),
              and write ``resources/targets.ecsv``.
Failures the user can act on (offline, unknown column, refused download) raise :class:`MastError`;
the CLI prints them as one line and exits 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import Table

from galsep.io import atomic_path, sha256_file

log = logging.getLogger("galsep.sources.mast")

CHUNK = 1 << 20  # bytes per streamed read
MAX_BACKOFF = 300.0  # seconds; the longest wait between two attempts


class MastError(RuntimeError):
    """A failure of the real-data source that the user can act on; the message says how."""


# The ``mast:`` config section with its defaults (the lead's config.yaml and schema mirror these).
DEFAULT_CONFIG: dict = {
    "proposal_ids": [9822, 10092],  # COSMOS ACS programmes (cycles 12 and 13)
    "filter": "F814W",
    "provenance": "CALACS",
    "instrument": "ACS/WFC",
    "product": "DRZ",  # productSubGroupDescription of the drizzled product (DRC: CTE-corrected)
    "tiles_limit": None,  # null: all tiles; N: the first N tiles by name
    # tiles dominated by a big bright object (noted by the reference); exclusion matches the tile
    # name (obs_id lowercased), the obs_id or the target name
    "exclude_tiles": ["COSMOS18-11B", "COSMOS33-08B", "COSMOS09-15A"],
    "match_radius": 20.0,  # arcsec: observations closer than this are one pointing
    "edge_margin": 64,  # pixels: overlap resolution counts edge distances beyond this as equal
    "download": {
        "retries": 5,
        "backoff": 10.0,  # seconds, doubling each retry (at most 300 s)
        "timeout": 300.0,  # seconds without data before a connection counts as lost
        "cache_dir": "resources/mast/downloads",
    },
    "gzh": {
        "source": "files",  # "files" (catalogues below) or "vizier"
        "catalogues": ["resources/gzh/metadata_main.csv", "resources/gzh/gz_hubble_main.csv"],
        "vizier_catalog": "J/MNRAS/464/4176",
        "id_column": "zooniverse_id",
        "ra_column": "RA",
        "dec_column": "DEC",
        "imaging_column": "imaging",
        "imaging_value": "COSMOS",
        "artifact_column": "t01_smooth_or_features_a03_star_or_artifact_flag",
        "mag_column": None,  # F814W AB magnitude column if the catalogue has one; else mag is NaN
        "keep_columns": [],
    },
}


def merged_config(defaults: dict, overrides: dict) -> dict:
    """``defaults`` updated recursively with ``overrides`` (neither is modified)."""
    out = dict(defaults)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged_config(out[key], value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------------------------------
# Query: observations -> one drizzled product per tile


@dataclass(frozen=True)
class QuerySpec:
    """What to ask MAST for (the ``mast:`` config section)."""

    proposal_ids: tuple[int, ...] = (9822, 10092)
    filter: str = "F814W"
    provenance: str = "CALACS"
    instrument: str = "ACS/WFC"
    product: str = "DRZ"
    exclude: tuple[str, ...] = ()
    tiles_limit: int | None = None
    match_radius: float = 20.0  # arcsec; observations closer than this are the same pointing


def tile_name(obs_id: str) -> str:
    """Filesystem-safe tile name of an observation: its obs_id lowercased."""
    name = re.sub(r"[^a-z0-9_.-]+", "_", str(obs_id).strip().lower())
    if not name or name.startswith("."):
        raise MastError(f"cannot make a tile name from obs_id {obs_id!r}")
    return name


def _offline(what: str, err: Exception) -> MastError:
    return MastError(
        f"cannot reach MAST to {what} ({type(err).__name__}: {err}). Check the network connection"
        " (this machine may be offline) and rerun; finished downloads are kept and resumed."
    )


def _network_errors() -> tuple[type[BaseException], ...]:
    import requests

    return (requests.exceptions.RequestException, ConnectionError, TimeoutError)


def query_observations(spec: QuerySpec, timeout: float = 600.0) -> Table:
    """Observations of ``spec`` from MAST (one row per observation, CAOM columns)."""
    from astroquery.mast import Observations

    Observations.TIMEOUT = timeout  # the portal's long-polling limit
    Observations._portal_api_connection.TIMEOUT = timeout
    criteria = dict(
        proposal_id=[str(p) for p in spec.proposal_ids],
        filters=spec.filter,
        provenance_name=spec.provenance,
        dataproduct_type="image",
    )
    if spec.instrument:
        criteria["instrument_name"] = spec.instrument
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NoResultsWarning is handled below
            obs = Observations.query_criteria(**criteria)
    except _network_errors() as err:
        raise _offline("query observations", err) from err
    if len(obs) == 0:
        raise MastError(f"MAST returned no observations for {criteria}")
    return obs


def _clusters(ra: np.ndarray, dec: np.ndarray, radius_arcsec: float) -> np.ndarray:
    """Label of the pointing of each observation: single-linkage groups within ``radius_arcsec``."""
    from astropy.coordinates import SkyCoord, search_around_sky
    import astropy.units as u

    n = len(ra)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    coords = SkyCoord(ra * u.deg, dec * u.deg)
    i1, i2, _, _ = search_around_sky(coords, coords, radius_arcsec * u.arcsec)
    for a, b in zip(i1, i2):
        ra_, rb_ = root(a), root(b)
        if ra_ != rb_:
            parent[max(ra_, rb_)] = min(ra_, rb_)
    return np.array([root(i) for i in range(n)])


def select_tiles(obs: Table, spec: QuerySpec) -> Table:
    """Drop excluded observations, keep the longest exposure per pointing, then apply the limit.

    Exclusion comes first so that an excluded re-observation lets its sibling through. Exclusion
    matches the tile name, the obs_id or the target name, case-insensitively. Pointings are
    observations within ``spec.match_radius`` of each other; ties go to the smaller obs_id. The result
    is sorted by tile name (so ``tiles_limit`` takes a reproducible subset) and has a ``tile`` column.
    """
    for col in ("obs_id", "target_name", "t_exptime", "s_ra", "s_dec"):
        if col not in obs.colnames:
            raise MastError(f"MAST observation table lacks column {col!r} (has {obs.colnames})")
    obs = obs.copy()
    obs["tile"] = [tile_name(o) for o in obs["obs_id"]]
    excluded = {e.strip().lower() for e in spec.exclude}
    keep = np.array(
        [
            not ({str(t).lower(), str(o).lower(), str(n).lower()} & excluded)
            for t, o, n in zip(obs["tile"], obs["obs_id"], obs["target_name"])
        ],
        dtype=bool,
    )
    obs = obs[keep]
    if len(obs) == 0:
        raise MastError("every observation is excluded by mast.exclude_tiles")
    labels = _clusters(np.asarray(obs["s_ra"], float), np.asarray(obs["s_dec"], float), spec.match_radius)
    exptime = np.asarray(obs["t_exptime"], float)
    chosen = []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        # longest exposure first, then the smallest obs_id for a reproducible tie-break
        order = sorted(idx, key=lambda i: (-exptime[i], str(obs["tile"][i])))
        chosen.append(order[0])
    out = obs[sorted(chosen, key=lambda i: str(obs["tile"][i]))]
    if spec.tiles_limit is not None and spec.tiles_limit > 0:
        out = out[: spec.tiles_limit]
    return out


def query_products(obs: Table, product: str = "DRZ") -> Table:
    """The drizzled product (``productSubGroupDescription == product``) of each chosen observation."""
    from astroquery.mast import Observations

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            products = Observations.get_product_list(obs)
    except _network_errors() as err:
        raise _offline("list data products", err) from err
    for col in ("obsID", "productSubGroupDescription", "dataURI", "productFilename", "size"):
        if col not in products.colnames:
            raise MastError(f"MAST product table lacks column {col!r} (has {products.colnames})")
    sub = np.array([str(s).upper() for s in products["productSubGroupDescription"]])
    products = products[sub == product.upper()]
    rows = []
    for row in obs:
        mine = products[np.array([str(o) == str(row["obsid"]) for o in products["obsID"]], dtype=bool)]
        if len(mine) == 0:
            raise MastError(f"observation {row['obs_id']} has no {product} product in MAST")
        # the association's own product is named after it; otherwise take the largest file
        named = [i for i, f in enumerate(mine["productFilename"]) if str(f).lower().startswith(row["tile"])]
        best = named[0] if named else int(np.argmax(np.asarray(mine["size"], float)))
        p = mine[best]
        rows.append(
            {
                "tile": row["tile"],
                "obs_id": str(row["obs_id"]),
                "obsid": str(row["obsid"]),
                "target_name": str(row["target_name"]),
                "proposal_id": str(row["proposal_id"]) if "proposal_id" in obs.colnames else "",
                "s_ra": float(row["s_ra"]),
                "s_dec": float(row["s_dec"]),
                "exptime": float(row["t_exptime"]),
                "dataURL": str(row["dataURL"]) if "dataURL" in obs.colnames else "",
                "dataURI": str(p["dataURI"]),
                "productFilename": str(p["productFilename"]),
                "size": int(p["size"]) if np.isfinite(float(p["size"])) else -1,
            }
        )
    table = Table(rows=rows)
    table["s_ra"].unit = table["s_dec"].unit = "deg"
    table["exptime"].unit = "s"
    table["size"].unit = "byte"
    return table


def write_products(spec: QuerySpec, output: str | Path, timeout: float = 600.0) -> Table:
    """Query MAST and write the chosen tiles' products table (ECSV) atomically."""
    obs = query_observations(spec, timeout=timeout)
    chosen = select_tiles(obs, spec)
    table = query_products(chosen, spec.product)
    table.meta.update(
        proposal_ids=list(spec.proposal_ids), filter=spec.filter, provenance=spec.provenance,
        instrument=spec.instrument, product=spec.product, exclude=list(spec.exclude),
        tiles_limit=spec.tiles_limit, observations_found=len(obs),
    )
    with atomic_path(output) as tmp:
        table.write(tmp, format="ascii.ecsv")
    log.info("%d observations, %d tiles chosen, %.1f GB to download", len(obs), len(table),
             max(table["size"].sum(), 0) / 1e9)
    return table


def read_products(path: str | Path) -> Table:
    """The products table written by :func:`write_products`."""
    table = Table.read(path, format="ascii.ecsv")
    for col in ("tile", "dataURI", "size"):
        if col not in table.colnames:
            raise MastError(f"{path}: products table lacks column {col!r}; delete it and rerun")
    return table


# --------------------------------------------------------------------------------------------------
# Download: resumable, retried, verified


def download_url(uri: str, base_url: str | None = None) -> str:
    """The MAST download URL of a data URI (the one ``Observations.download_file`` uses)."""
    from urllib.parse import quote

    if uri.startswith(("http://", "https://")):
        return uri
    if base_url is None:
        from astroquery.mast import conf

        base_url = conf.server + "/api/v0.1/Download/file"
    return base_url + "?uri=" + quote(uri, safe=":/")


def verify_tile(path: str | Path) -> None:
    """Raise :class:`MastError` unless ``path`` is a readable drizzled tile (SCI + WHT, checksums)."""
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", AstropyUserWarning)  # checksum mismatches are warnings
            with fits.open(path, checksum=True, memmap=False) as hdul:
                names = [h.name for h in hdul]
                missing = [e for e in ("SCI", "WHT") if e not in names]
                if missing:
                    raise MastError(f"{path}: no {missing} extension (has {names}); not a drizzled tile")
                for name in ("SCI", "WHT"):
                    data = hdul[name].data
                    if data is None or data.ndim != 2:
                        raise MastError(f"{path}: extension {name} is not a 2-D image")
    except MastError:
        raise
    except (OSError, ValueError, TypeError, AstropyUserWarning) as err:
        raise MastError(f"{path}: corrupt or truncated FITS file ({type(err).__name__}: {err})") from err


def _publish(cached: Path, output: Path) -> None:
    """Put the verified cached file at ``output`` atomically (hard link, copy across filesystems)."""
    with atomic_path(output) as tmp:
        try:
            os.link(cached, tmp)
        except OSError:
            shutil.copyfile(cached, tmp)


class _Retry(Exception):
    """A transient failure: wait and try again."""


def _fetch(session, url: str, part: Path, timeout: float) -> int | None:
    """One attempt: append to ``part`` from where it stops. Returns the total length if known."""
    import requests

    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout)
    except _network_errors() as err:
        raise _Retry(f"{type(err).__name__}: {err}") from err
    with response:
        status = response.status_code
        if status == 416:  # nothing left past `have`: the server's file is not longer than ours
            total = _content_range_total(response.headers.get("Content-Range", ""))
            if total is not None and total == have:
                return total
            part.unlink(missing_ok=True)
            raise _Retry(f"range {have}- refused (HTTP 416); restarting from scratch")
        if status == 429 or status >= 500:
            raise _Retry(f"HTTP {status} from the server")
        if status >= 400:
            raise MastError(
                f"MAST refused {url} (HTTP {status}); the product may be proprietary or withdrawn:"
                " add the tile to mast.exclude_tiles or rerun the query"
            )
        if status == 206:
            total = _content_range_total(response.headers.get("Content-Range", ""))
            mode = "ab"
        else:  # 200: the whole file, whatever we asked for
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
            mode = "wb"
        try:
            with open(part, mode) as fh:
                for block in response.iter_content(CHUNK):
                    if block:
                        fh.write(block)
        except (requests.exceptions.RequestException, ConnectionError, TimeoutError, OSError) as err:
            raise _Retry(f"connection lost after {part.stat().st_size} bytes ({type(err).__name__})") from err
    return total


def _content_range_total(value: str) -> int | None:
    m = re.search(r"/(\d+)\s*$", value)
    return int(m.group(1)) if m else None


def download_tile(
    uri: str,
    output: str | Path,
    *,
    cache_dir: str | Path,
    size: int | None = None,
    retries: int = 5,
    backoff: float = 10.0,
    timeout: float = 300.0,
    base_url: str | None = None,
    session=None,
    sleep: Callable[[float], None] | None = None,
) -> Path:
    """Download the product ``uri`` to ``output``, resuming and retrying; return ``output``.

    The bytes go to ``cache_dir/.{name}.part`` (kept between attempts and runs, so a new attempt asks
    only for the missing range), are checked (length against the server's, FITS structure and
    checksums) and renamed to ``cache_dir/{name}``; ``output`` appears, atomically, only after that.
    Transient errors (no connection, timeouts, dropped streams, HTTP 429/5xx, corrupt files) are
    retried ``retries`` times with waits of ``backoff * 2**k`` seconds (at most 300 s).
    ``size`` is the archive's recorded size in bytes; a mismatch is reported, not fatal, because the
    archive can recalibrate a product without updating the record.
    """
    import requests

    output = Path(output)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    name = Path(uri.split("?")[0]).name or output.name
    cached = cache_dir / name
    part = cache_dir / f".{name}.part"
    if cached.exists():
        try:
            verify_tile(cached)
            _publish(cached, output)
            log.info("%s: reused %s from the download cache", output, cached)
            return output
        except MastError as err:
            log.warning("cached %s is unusable (%s); downloading again", cached, err)
            cached.unlink()
    sleep = sleep or time.sleep
    url = download_url(uri, base_url)
    own_session = session is None
    session = session or requests.Session()
    last = "no attempt made"
    try:
        for attempt in range(retries + 1):
            if attempt:
                wait = min(backoff * 2 ** (attempt - 1), MAX_BACKOFF)
                log.warning("attempt %d/%d failed (%s); retrying in %.0f s", attempt, retries + 1, last, wait)
                sleep(wait)
            try:
                total = _fetch(session, url, part, timeout)
                got = part.stat().st_size
                if total is not None and got != total:
                    raise _Retry(f"stream ended at {got} of {total} bytes")
                try:
                    verify_tile(part)
                except MastError as err:
                    part.unlink(missing_ok=True)  # bad bytes cannot be resumed: start over
                    raise _Retry(str(err)) from err
            except _Retry as err:
                last = str(err)
                continue
            if size is not None and size > 0 and got != size:
                log.warning("%s: %d bytes, the archive records %d; the FITS file checks out", name, got, size)
            os.replace(part, cached)
            log.info("%s: %d bytes, sha256 %s", name, got, sha256_file(cached))
            _publish(cached, output)
            return output
    finally:
        if own_session:
            session.close()
    kept = f"; {part.stat().st_size} bytes are kept in {part} and the next run resumes" if part.exists() else ""
    raise MastError(
        f"could not download {uri} after {retries + 1} attempts (last: {last}). Check the network"
        f" connection and rerun{kept}."
    )


# --------------------------------------------------------------------------------------------------
# Targets: Galaxy Zoo: Hubble galaxies with COSMOS imaging, assigned to tiles


@dataclass(frozen=True)
class CatalogueColumns:
    """Names of the Galaxy Zoo: Hubble columns used (matched case-insensitively)."""

    id: str = "zooniverse_id"
    ra: str = "RA"
    dec: str = "DEC"
    imaging: str = "imaging"
    imaging_value: str = "COSMOS"
    artifact: str = "t01_smooth_or_features_a03_star_or_artifact_flag"
    mag: str = ""  # F814W AB magnitude column; '' or absent gives NaN
    keep: tuple[str, ...] = ()


def _find(table: Table, name: str, source: str) -> str:
    """The actual column name matching ``name`` case-insensitively, or a clear error."""
    for col in table.colnames:
        if col.lower() == name.lower():
            return col
    raise MastError(
        f"{source}: no column {name!r} (it has {len(table.colnames)} columns:"
        f" {', '.join(table.colnames[:12])}{', ...' if len(table.colnames) > 12 else ''}); set the"
        " column name under mast.gzh in config.yaml"
    )


def read_catalogue_files(paths: Sequence[str | Path], id_column: str) -> tuple[Table, str]:
    """Read one or more catalogue files (CSV, ECSV, FITS, VOTable) and join them on ``id_column``."""
    merged, names = None, []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise MastError(f"Galaxy Zoo: Hubble catalogue {path} does not exist; download it (see docs/real-data.md)")
        fmt = "ascii.csv" if path.name.lower().endswith((".csv", ".csv.gz")) else None
        try:
            table = Table.read(path, format=fmt) if fmt else Table.read(path)
        except Exception as err:  # astropy raises many types for unreadable tables
            raise MastError(f"{path}: cannot read the catalogue ({type(err).__name__}: {err})") from err
        merged = _merge_on_id(merged, table, _find(table, id_column, str(path)), id_column)
        names.append(str(path))
    if merged is None:
        raise MastError("no Galaxy Zoo: Hubble catalogue given (mast.gzh.catalogues)")
    return merged, " + ".join(names)


def _merge_on_id(merged: Table | None, table: Table, key: str, id_column: str) -> Table:
    """Left-join ``table`` onto ``merged`` by its id column ``key`` (renamed to ``id_column``, as text);
    where both carry a column, the earlier table's wins."""
    from astropy.table import join

    if key != id_column:
        table.rename_column(key, id_column)
    table[id_column] = table[id_column].astype(str)
    if merged is None:
        return table
    table.remove_columns([c for c in table.colnames if c in merged.colnames and c != id_column])
    return join(merged, table, keys=id_column, join_type="left")


def read_catalogue_vizier(catalog: str, id_column: str, timeout: float = 600.0) -> tuple[Table, str]:
    """Fetch every table of the VizieR catalogue ``catalog`` (all rows) and join them on ``id_column``."""
    from astroquery.vizier import Vizier

    viz = Vizier(columns=["**"], row_limit=-1, timeout=timeout)
    try:
        tables = viz.get_catalogs(catalog)
    except _network_errors() as err:
        raise _offline(f"fetch VizieR catalogue {catalog}", err) from err
    if len(tables) == 0:
        raise MastError(f"VizieR returned no table for {catalog}")
    merged = None
    for table in tables.values():
        try:
            key = _find(table, id_column, f"VizieR {catalog}")
        except MastError:
            continue
        table = Table(table, masked=False) if not table.has_masked_values else table
        merged = _merge_on_id(merged, table, key, id_column)
    if merged is None:
        raise MastError(f"VizieR {catalog}: no table has the id column {id_column!r}")
    return merged, f"VizieR {catalog}"


def _truthy(values) -> np.ndarray:
    """Flags stored as bool, 0/1 or 'True'/'False' strings (masked counts as unflagged)."""
    out = []
    for v in np.ma.filled(np.ma.asarray(values).astype(object), False):
        if isinstance(v, (bytes, str)):
            out.append(v.strip().lower() in {"1", "true", "t", "yes", "y"})
        else:
            out.append(bool(v) and np.isfinite(float(v)))
    return np.array(out, dtype=bool)


def select_galaxies(table: Table, cols: CatalogueColumns, source: str) -> Table:
    """COSMOS galaxies not flagged as star/artefact, normalised to object_id, ra, dec, mag + kept columns.

    ``object_id`` (int64) is the catalogue id when it is an integer, else the rank of the id in the
    whole catalogue sorted by id (stable when the selection changes); the id itself is kept as
    ``catalogue_id``.
    """
    key = _find(table, cols.id, source)
    ra, dec = _find(table, cols.ra, source), _find(table, cols.dec, source)
    imaging = _find(table, cols.imaging, source)
    artifact = _find(table, cols.artifact, source)
    keep = [_find(table, c, source) for c in cols.keep]
    mag = None
    if cols.mag:
        try:
            mag = _find(table, cols.mag, source)
        except MastError:
            log.warning("%s: no magnitude column %r; mag is NaN", source, cols.mag)
    ids = np.asarray(table[key]).astype(str)
    try:
        numeric = np.array([int(i) for i in ids], dtype=np.int64)
    except ValueError:
        numeric = np.empty(len(ids), dtype=np.int64)
        numeric[np.argsort(ids, kind="stable")] = np.arange(len(ids))
    sel = np.array([str(v).strip().upper() == cols.imaging_value.upper() for v in table[imaging]])
    sel &= ~_truthy(table[artifact])
    sel &= np.isfinite(np.ma.filled(np.ma.asarray(table[ra], float), np.nan))
    sel &= np.isfinite(np.ma.filled(np.ma.asarray(table[dec], float), np.nan))
    rows = table[sel]
    out = Table()
    out["object_id"] = numeric[sel]
    out["ra"] = np.asarray(np.ma.filled(np.ma.asarray(rows[ra], float), np.nan), dtype=np.float64)
    out["dec"] = np.asarray(np.ma.filled(np.ma.asarray(rows[dec], float), np.nan), dtype=np.float64)
    out["ra"].unit = out["dec"].unit = "deg"
    mags = np.ma.filled(np.ma.asarray(rows[mag], float), np.nan) if mag else np.full(len(rows), np.nan)
    out["mag"] = np.asarray(mags, dtype=np.float64)
    out["mag"].unit = "mag"
    out["catalogue_id"] = ids[sel]
    for c in keep:
        if c not in out.colnames:
            out[c] = rows[c]
    if len(np.unique(out["object_id"])) != len(out):
        raise MastError(f"{source}: column {cols.id!r} is not unique among the selected galaxies")
    return out


def _edge_distance(covered: np.ndarray, x: np.ndarray, y: np.ndarray, cap: int) -> np.ndarray:
    """Distance [pixels] from each (x, y) to the nearest uncovered pixel or the image edge, capped."""
    h, w = covered.shape
    dist = np.empty(len(x))
    dy, dx = np.mgrid[-cap : cap + 1, -cap : cap + 1]
    r = np.hypot(dx, dy)
    for k, (xi, yi) in enumerate(zip(x, y)):
        yy, xx = yi + dy, xi + dx
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        bad = ~inside
        bad[inside] = ~covered[yy[inside], xx[inside]]
        dist[k] = min(r[bad].min(), cap) if bad.any() else cap
    return dist


def tile_coverage(path: str | Path, ra: np.ndarray, dec: np.ndarray, edge_cap: int = 64):
    """Which targets a tile covers, with their edge distance [pixels] and WHT there.

    A target is covered when its nearest pixel (through the SCI WCS) is inside the image and has
    WHT > 0 — the real footprint, not a bounding box. Returns (index array, edge distance, wht).
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(path, memmap=True) as hdul:
        wcs = WCS(hdul["SCI"].header, naxis=2)
        wht = np.asarray(hdul["WHT"].data, dtype=np.float32)
    h, w = wht.shape
    with np.errstate(invalid="ignore"):
        px, py = wcs.world_to_pixel_values(ra, dec)
    xi, yi = np.round(px), np.round(py)
    inside = np.isfinite(xi) & np.isfinite(yi) & (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    idx = np.flatnonzero(inside)
    xi, yi = xi[idx].astype(int), yi[idx].astype(int)
    covered = np.isfinite(wht) & (wht > 0)
    ok = covered[yi, xi]
    idx, xi, yi = idx[ok], xi[ok], yi[ok]
    return idx, _edge_distance(covered, xi, yi, edge_cap), wht[yi, xi].astype(np.float64)


def assign_tiles(targets: Table, tiles: Sequence[str | Path], edge_cap: int = 64) -> Table:
    """Keep the targets that some tile covers and name the best such tile in column ``tile``.

    Where tiles overlap, the galaxy goes to the tile where it is farthest from the coverage edge
    (distances beyond ``edge_cap`` pixels, half a cutout, count as equal) and then to the deeper WHT.
    """
    ra = np.asarray(targets["ra"], float)
    dec = np.asarray(targets["dec"], float)
    cand_t, cand_k, cand_d, cand_w = [], [], [], []
    for k, path in enumerate(tiles):
        idx, dist, wht = tile_coverage(path, ra, dec, edge_cap)
        cand_t.append(idx)
        cand_k.append(np.full(len(idx), k))
        cand_d.append(dist)
        cand_w.append(wht)
    if not tiles:
        raise MastError("no tiles to assign targets to")
    t, k = np.concatenate(cand_t), np.concatenate(cand_k)
    d, wv = np.concatenate(cand_d), np.concatenate(cand_w)
    # best candidate first within each target: larger capped distance, then deeper WHT, then tile order
    order = np.lexsort((k, -wv, -d, t))
    t, k = t[order], k[order]
    first = np.ones(len(t), dtype=bool)
    first[1:] = t[1:] != t[:-1]
    best_t, best_k = t[first], k[first]
    out = targets[best_t]
    out["tile"] = np.array([Path(tiles[i]).stem for i in best_k], dtype=str)
    out.sort("object_id")
    return out


def write_targets(
    tiles: Sequence[str | Path],
    output: str | Path,
    cols: CatalogueColumns,
    catalogues: Sequence[str | Path] = (),
    vizier: str | None = None,
    edge_cap: int = 64,
    timeout: float = 600.0,
) -> Table:
    """Build ``targets.ecsv`` from the catalogue (files, or VizieR when ``vizier`` is given)."""
    if vizier:
        table, source = read_catalogue_vizier(vizier, cols.id, timeout=timeout)
    else:
        table, source = read_catalogue_files(catalogues, cols.id)
    galaxies = select_galaxies(table, cols, source)
    targets = assign_tiles(galaxies, tiles, edge_cap)
    targets.meta.update(source=source, catalogue_rows=len(table), galaxies_selected=len(galaxies))
    if len(targets) == 0:
        raise MastError(f"none of the {len(galaxies)} selected galaxies falls on the {len(tiles)} tile(s)")
    with atomic_path(output) as tmp:
        targets.write(tmp, format="ascii.ecsv")
    log.info("%d catalogue rows, %d galaxies selected, %d on %d tiles", len(table), len(galaxies),
             len(targets), len(tiles))
    return targets


# --------------------------------------------------------------------------------------------------
# Command line (called by rules/mast.smk)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m galsep.sources.mast", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("query", help="query MAST and write the products table")
    q.add_argument("--output", required=True)
    q.add_argument("--proposal-ids", type=int, nargs="+", required=True)
    q.add_argument("--filter", required=True)
    q.add_argument("--provenance", required=True)
    q.add_argument("--instrument", default="")
    q.add_argument("--product", default="DRZ")
    q.add_argument("--exclude", nargs="*", default=[])
    q.add_argument("--tiles-limit", type=int, default=0, help="0: all tiles")
    q.add_argument("--match-radius", type=float, default=20.0)
    q.add_argument("--timeout", type=float, default=600.0)

    d = sub.add_parser("download", help="download one tile")
    d.add_argument("--uri", required=True)
    d.add_argument("--output", required=True)
    d.add_argument("--cache-dir", required=True)
    d.add_argument("--size", type=int, default=-1)
    d.add_argument("--retries", type=int, default=5)
    d.add_argument("--backoff", type=float, default=10.0)
    d.add_argument("--timeout", type=float, default=300.0)

    t = sub.add_parser("targets", help="write the target catalogue")
    t.add_argument("--tiles", nargs="+", required=True)
    t.add_argument("--output", required=True)
    t.add_argument("--catalogues", nargs="*", default=[])
    t.add_argument("--vizier", default="")
    t.add_argument("--id-column", default=CatalogueColumns.id)
    t.add_argument("--ra-column", default=CatalogueColumns.ra)
    t.add_argument("--dec-column", default=CatalogueColumns.dec)
    t.add_argument("--imaging-column", default=CatalogueColumns.imaging)
    t.add_argument("--imaging-value", default=CatalogueColumns.imaging_value)
    t.add_argument("--artifact-column", default=CatalogueColumns.artifact)
    t.add_argument("--mag-column", default="")
    t.add_argument("--keep-columns", nargs="*", default=[])
    t.add_argument("--edge-margin", type=int, default=64)
    t.add_argument("--timeout", type=float, default=600.0)
    return p


def main(argv: Iterable[str] | None = None) -> int:
    """Entry point of ``python -m galsep.sources.mast``; returns the exit status."""
    args = _parser().parse_args(None if argv is None else list(argv))
    for name in ("exclude", "catalogues", "keep_columns"):  # Snakemake renders [] as ''
        if hasattr(args, name):
            setattr(args, name, [v for v in getattr(args, name) if v])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        if args.command == "query":
            spec = QuerySpec(
                proposal_ids=tuple(args.proposal_ids), filter=args.filter, provenance=args.provenance,
                instrument=args.instrument, product=args.product, exclude=tuple(args.exclude),
                tiles_limit=args.tiles_limit or None, match_radius=args.match_radius,
            )
            write_products(spec, args.output, timeout=args.timeout)
        elif args.command == "download":
            download_tile(
                args.uri, args.output, cache_dir=args.cache_dir,
                size=args.size if args.size > 0 else None, retries=args.retries,
                backoff=args.backoff, timeout=args.timeout,
            )
        else:
            cols = CatalogueColumns(
                id=args.id_column, ra=args.ra_column, dec=args.dec_column, imaging=args.imaging_column,
                imaging_value=args.imaging_value, artifact=args.artifact_column, mag=args.mag_column,
                keep=tuple(args.keep_columns),
            )
            write_targets(
                args.tiles, args.output, cols, catalogues=args.catalogues, vizier=args.vizier or None,
                edge_cap=args.edge_margin, timeout=args.timeout,
            )
    except MastError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
