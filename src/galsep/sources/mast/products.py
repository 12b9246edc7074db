"""The products table (``resources/mast/products.ecsv``): one row per tile, written by the query.

The query (:func:`galsep.sources.mast.query.write_products`) writes it; the downloads take each tile's
``dataURI`` and ``size`` from it, and ``rules/common.smk`` reads the tile list from it after the
``mast_products`` checkpoint. Because the Snakefile imports this module when it is parsed, it imports
no astropy, torch or h5py at module level: :func:`read_products` imports astropy when called.
"""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING

from galsep.sources.mast.errors import MastError

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["REQUIRED_COLUMNS", "read_products"]

REQUIRED_COLUMNS = ("tile", "dataURI", "size")  # what the workflow and the downloads use


def read_products(path: str | PathLike[str]) -> Table:
    """The products table written by :func:`galsep.sources.mast.query.write_products`."""
    from astropy.table import Table

    table = Table.read(path, format="ascii.ecsv")
    for col in REQUIRED_COLUMNS:
        if col not in table.colnames:
            raise MastError(f"{path}: products table lacks column {col!r}; delete it and rerun")
    return table
