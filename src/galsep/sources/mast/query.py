"""The MAST query: COSMOS observations -> one drizzled product per tile -> the products table.

:func:`query_observations` asks MAST (``astroquery.mast.Observations``) for the CALACS drizzled
images of the COSMOS programmes; :func:`select_tiles` drops excluded tiles and keeps the longest
exposure of each pointing (observations within ``match_radius`` of each other, single linkage);
:func:`query_products` finds each chosen observation's drizzled product; :func:`write_products`
does all three and writes the table (:mod:`galsep.sources.mast.products`) atomically. Each MAST
request is retried with backoff on transient failures (read timeouts, resets, HTTP 429/5xx); no
network at all (MAST's name does not resolve, the connection is refused, or it gets no answer within
10 s) fails at once, with one line.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.table import Table

from galsep.io import atomic_path
from galsep.sources.mast.errors import BACKOFF, MAST_HOST, RETRIES, MastError, bounded_session, with_retries

if TYPE_CHECKING:
    from astroquery.mast.observations import ObservationsClass

__all__ = ["QuerySpec", "query_observations", "query_products", "select_tiles", "tile_name", "write_products"]

log = logging.getLogger(__name__)

def _mast_host() -> str:
    from urllib.parse import urlsplit

    from astroquery.mast import conf

    return urlsplit(conf.server).hostname or MAST_HOST


def _portal(timeout: float) -> ObservationsClass:
    """astroquery's MAST ``Observations``, its portal's long-polling limit ``timeout`` seconds and its
    requests bounded (:func:`~galsep.sources.mast.errors.bounded_session`: a 10 s connect timeout, and a
    read timeout of ``timeout``, where astroquery passes none)."""
    from astroquery.mast import Observations

    Observations.TIMEOUT = timeout
    portal = Observations._portal_api_connection
    portal.TIMEOUT = timeout
    bounded_session(portal._session, read=timeout)
    return Observations


@dataclass(frozen=True)
class QuerySpec:
    """What to ask MAST for: the query keys of the ``mast:`` config section (see :meth:`from_config`)."""

    proposal_ids: tuple[int, ...]
    filter: str
    provenance: str
    instrument: str  # '' queries every instrument
    product: str  # productSubGroupDescription of the drizzled product (DRZ, or DRC: CTE-corrected)
    exclude: tuple[str, ...]  # tile names, obs_ids or target names
    tiles_limit: int | None  # None: every tile; N: the first N tiles by name
    match_radius: float  # arcsec; observations closer than this are the same pointing

    @classmethod
    def from_config(cls, mast: Mapping[str, Any]) -> QuerySpec:
        """The query of a ``mast:`` config section (its defaults filled from the schema); other keys
        of ``mast`` are ignored."""
        return cls(
            proposal_ids=tuple(int(p) for p in mast["proposal_ids"]),
            filter=str(mast["filter"]),
            provenance=str(mast["provenance"]),
            instrument=str(mast["instrument"] or ""),
            product=str(mast["product"]),
            exclude=tuple(str(e) for e in mast["exclude_tiles"]),
            tiles_limit=int(mast["tiles_limit"]) if mast["tiles_limit"] else None,
            match_radius=float(mast["match_radius"]),
        )


def tile_name(obs_id: str) -> str:
    """Filesystem-safe tile name of an observation: its obs_id lowercased."""
    name = re.sub(r"[^a-z0-9_.-]+", "_", str(obs_id).strip().lower())
    if not name or name.startswith("."):
        raise MastError(f"cannot make a tile name from obs_id {obs_id!r}")
    return name


def query_observations(spec: QuerySpec, timeout: float = 600.0, retries: int = RETRIES,
                       backoff: float = BACKOFF) -> Table:
    """Observations of ``spec`` from MAST (one row per observation, CAOM columns).

    Transient failures are retried (:func:`~galsep.sources.mast.errors.with_retries`); no network, or a
    connection unanswered for 10 s, fails at once."""
    Observations = _portal(timeout)
    criteria = dict(
        proposal_id=[str(p) for p in spec.proposal_ids],
        filters=spec.filter,
        provenance_name=spec.provenance,
        dataproduct_type="image",
    )
    if spec.instrument:
        criteria["instrument_name"] = spec.instrument

    def ask() -> Table:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NoResultsWarning is handled below
            return Observations.query_criteria(**criteria)

    obs = with_retries("query observations", ask, retries, backoff, host=_mast_host())
    if len(obs) == 0:
        raise MastError(f"MAST returned no observations for {criteria}")
    return obs


def _clusters(ra: np.ndarray, dec: np.ndarray, radius_arcsec: float) -> np.ndarray:
    """Label of the pointing of each observation: single-linkage groups within ``radius_arcsec``."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord, search_around_sky

    n = len(ra)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    coords = SkyCoord(ra * u.deg, dec * u.deg)
    i1, i2, _, _ = search_around_sky(coords, coords, radius_arcsec * u.arcsec)
    for a, b in zip(i1, i2, strict=True):
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
            for t, o, n in zip(obs["tile"], obs["obs_id"], obs["target_name"], strict=True)
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


def query_products(obs: Table, product: str = "DRZ", retries: int = RETRIES, backoff: float = BACKOFF,
                   timeout: float = 600.0) -> Table:
    """The drizzled product (``productSubGroupDescription == product``) of each chosen observation."""
    Observations = _portal(timeout)

    def ask() -> Table:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Observations.get_product_list(obs)

    products = with_retries("list data products", ask, retries, backoff, host=_mast_host())
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


def write_products(spec: QuerySpec, output: str | PathLike[str], timeout: float = 600.0, retries: int = RETRIES,
                   backoff: float = BACKOFF) -> Table:
    """Query MAST and write the chosen tiles' products table (ECSV) atomically."""
    obs = query_observations(spec, timeout=timeout, retries=retries, backoff=backoff)
    chosen = select_tiles(obs, spec)
    table = query_products(chosen, spec.product, retries=retries, backoff=backoff, timeout=timeout)
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

