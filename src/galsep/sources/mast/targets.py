"""The targets: Galaxy Zoo: Hubble galaxies with COSMOS imaging, each assigned to a tile.

The catalogue comes from files (:func:`read_catalogue_files`, joined on the id column) or VizieR
(:func:`read_catalogue_vizier`); :func:`select_galaxies` keeps COSMOS galaxies that volunteers did
not flag as star/artefact; :func:`assign_tiles` gives each the tile whose SCI WCS footprint and
WHT > 0 coverage contain it (where tiles overlap, the one where it lies farthest from the coverage
edge, then the deeper); :func:`write_targets` does it all and writes ``resources/targets.ecsv``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.table import Table

from galsep.io import atomic_path
from galsep.sources.mast.errors import BACKOFF, RETRIES, MastError, bounded_session, with_retries

__all__ = [
    "CatalogueColumns",
    "assign_tiles",
    "find_column",
    "numeric_ids",
    "read_catalogue_files",
    "read_catalogue_vizier",
    "select_galaxies",
    "tile_coverage",
    "write_targets",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogueColumns:
    """Names of the Galaxy Zoo: Hubble columns used (matched case-insensitively); see :meth:`from_config`."""

    id: str
    ra: str
    dec: str
    imaging: str
    imaging_value: str  # the value of ``imaging`` that marks COSMOS imaging
    artifact: str  # the star/artefact flag
    mag: str  # F814W AB magnitude column; '' or absent gives NaN
    keep: tuple[str, ...]  # further columns copied into the targets

    @classmethod
    def from_config(cls, gzh: Mapping[str, Any]) -> CatalogueColumns:
        """The columns named in a ``mast.gzh`` config section (its defaults filled from the schema);
        its other keys (source, catalogues, vizier_catalog) are ignored."""
        return cls(
            id=str(gzh["id_column"]),
            ra=str(gzh["ra_column"]),
            dec=str(gzh["dec_column"]),
            imaging=str(gzh["imaging_column"]),
            imaging_value=str(gzh["imaging_value"]),
            artifact=str(gzh["artifact_column"]),
            mag=str(gzh["mag_column"] or ""),
            keep=tuple(str(c) for c in gzh["keep_columns"]),
        )


def find_column(table: Table, name: str, source: str, section: str = "mast.gzh") -> str:
    """The actual column name matching ``name`` case-insensitively, or a clear error naming the table
    ``source`` and the config ``section`` whose key sets the name."""
    for col in table.colnames:
        if col.lower() == name.lower():
            return col
    raise MastError(
        f"{source}: no column {name!r} (it has {len(table.colnames)} columns:"
        f" {', '.join(table.colnames[:12])}{', ...' if len(table.colnames) > 12 else ''}); set the"
        f" column name under {section} in config.yaml"
    )


def read_catalogue_files(paths: Sequence[str | PathLike[str]], id_column: str) -> tuple[Table, str]:
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
        merged = _merge_on_id(merged, table, find_column(table, id_column, str(path)), id_column)
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


def read_catalogue_vizier(catalog: str, id_column: str, timeout: float = 600.0, retries: int = RETRIES,
                          backoff: float = BACKOFF) -> tuple[Table, str]:
    """Fetch every table of the VizieR catalogue ``catalog`` (all rows) and join them on ``id_column``.

    The request is MAST's: transient failures (read timeouts, resets, HTTP 429/5xx) are retried with
    backoff, no network (VizieR's name does not resolve, the connection is refused or gets no answer
    within 10 s) fails at once (:func:`~galsep.sources.mast.errors.with_retries`); ``timeout`` is the
    read timeout.
    """
    import requests
    from astroquery.vizier import Vizier

    viz = Vizier(columns=["**"], row_limit=-1, timeout=timeout)
    bounded_session(viz._session, read=timeout)

    def raise_for_status(response: requests.Response, *args: object, **kwargs: object) -> None:
        response.raise_for_status()  # astroquery would parse an HTTP error page as the catalogue

    viz._session.hooks["response"].append(raise_for_status)
    tables = with_retries(f"fetch VizieR catalogue {catalog}", lambda: viz.get_catalogs(catalog), retries, backoff,
                          host=viz.VIZIER_SERVER, service="VizieR", settings="mast.gzh.vizier_catalog",
                          instead="download the catalogue there and set mast.gzh.source: files")
    if isinstance(tables, str):  # astroquery's answer to a body it could not parse as a VOTable
        raise MastError(f"VizieR sent no VOTable for {catalog} (it starts {tables[:80]!r}); rerun later, or"
                        " download the catalogue and set mast.gzh.source: files")
    if len(tables) == 0:
        raise MastError(f"VizieR returned no table for {catalog}")
    merged = None
    for table in tables.values():
        try:
            key = find_column(table, id_column, f"VizieR {catalog}")
        except MastError:
            continue
        table = Table(table, masked=False) if not table.has_masked_values else table
        merged = _merge_on_id(merged, table, key, id_column)
    if merged is None:
        raise MastError(f"VizieR {catalog}: no table has the id column {id_column!r}")
    return merged, f"VizieR {catalog}"


def numeric_ids(ids: np.ndarray) -> np.ndarray:
    """int64 object ids of catalogue ids (N,) given as text: the ids themselves when all are integers,
    else each id's rank in the catalogue sorted by id (stable when a selection of rows changes)."""
    try:
        return np.array([int(i) for i in ids], dtype=np.int64)
    except ValueError:
        numeric = np.empty(len(ids), dtype=np.int64)
        numeric[np.argsort(ids, kind="stable")] = np.arange(len(ids))
        return numeric


def _truthy(values: npt.ArrayLike) -> np.ndarray:
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
    key = find_column(table, cols.id, source)
    ra, dec = find_column(table, cols.ra, source), find_column(table, cols.dec, source)
    imaging = find_column(table, cols.imaging, source)
    artifact = find_column(table, cols.artifact, source)
    keep = [find_column(table, c, source) for c in cols.keep]
    mag = None
    if cols.mag:
        try:
            mag = find_column(table, cols.mag, source)
        except MastError:
            log.warning("%s: no magnitude column %r; mag is NaN", source, cols.mag)
    ids = np.asarray(table[key]).astype(str)
    numeric = numeric_ids(ids)
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
    for k, (xi, yi) in enumerate(zip(x, y, strict=True)):
        yy, xx = yi + dy, xi + dx
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        bad = ~inside
        bad[inside] = ~covered[yy[inside], xx[inside]]
        dist[k] = min(r[bad].min(), cap) if bad.any() else cap
    return dist


def tile_coverage(
    path: str | PathLike[str], ra: np.ndarray, dec: np.ndarray, edge_cap: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def assign_tiles(targets: Table, tiles: Sequence[str | PathLike[str]], edge_cap: int = 64) -> Table:
    """Keep the targets that some tile covers and name the best such tile in column ``tile``.

    Where tiles overlap, the galaxy goes to the tile where it is farthest from the coverage edge
    (distances beyond ``edge_cap`` pixels, half a cutout, count as equal) and then to the deeper WHT.
    """
    ra = np.asarray(targets["ra"], float)
    dec = np.asarray(targets["dec"], float)
    cand_t, cand_k, cand_d, cand_w = [], [], [], []
    for j, path in enumerate(tiles):
        idx, dist, wht = tile_coverage(path, ra, dec, edge_cap)
        cand_t.append(idx)
        cand_k.append(np.full(len(idx), j))
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
    tiles: Sequence[str | PathLike[str]],
    output: str | PathLike[str],
    cols: CatalogueColumns,
    catalogues: Sequence[str | PathLike[str]] = (),
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

