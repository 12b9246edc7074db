"""The MAST source's errors: :class:`MastError`, and which network failures count as "offline"."""

from __future__ import annotations

from galsep.errors import InputError

__all__ = ["MastError", "network_errors", "offline_error"]


class MastError(InputError):
    """A failure of the real-data source that the user can act on; the message says how.

    Offline archive, unknown catalogue column, refused or failed download: the stage command line
    (:func:`galsep.cli.run`) reports it as one line, without a traceback, and exits with status 2.
    """


def offline_error(what: str, err: Exception) -> MastError:
    """The error for a network failure while trying to ``what`` (e.g. "query observations")."""
    return MastError(
        f"cannot reach MAST to {what} ({type(err).__name__}: {err}). Check the network connection"
        " (this machine may be offline) and rerun; finished downloads are kept and resumed."
    )


def network_errors() -> tuple[type[Exception], ...]:
    """Exception types of a lost or unreachable network (requests imported only when asked)."""
    import requests

    return (requests.exceptions.RequestException, ConnectionError, TimeoutError)
