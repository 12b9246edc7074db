"""The project's errors: what a user can fix (bad input, impossible config) as opposed to bugs.

The stage command line turns these into one-line messages; any other exception is a programming
error and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DiskFullError", "GalsepError", "InputError", "OutOfMemoryError"]


class GalsepError(Exception):
    """Base of the errors a user can act on; the message says what is wrong and how to fix it."""


class InputError(GalsepError, ValueError):
    """Input data that the workflow cannot use (a file, a table, a tile, a checkpoint)."""


class ConfigError(GalsepError, ValueError):
    """A config value is impossible; the message names the key."""


class DiskFullError(GalsepError, OSError):
    """A write failed for lack of space (or quota); the message names the path, the space free and
    the space the write needed (as far as it is known). Nothing that looks complete is left behind."""


class OutOfMemoryError(GalsepError, MemoryError):
    """The accelerator ran out of memory even at the smallest batch tried; the message names the batch
    that failed and the config key to lower (see :mod:`galsep.inference.memory`)."""
