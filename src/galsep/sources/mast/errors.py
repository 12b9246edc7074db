"""The MAST source's errors: :class:`MastError`, and which network failures count as "offline".

A network failure is either *unreachable* (:func:`unreachable`: the host's name does not resolve,
the connection is refused or there is no route; on the first attempt this means no network, and is
reported at once by :func:`offline_error`) or *transient* (timeouts, dropped connections, HTTP
429/5xx), which the stages retry with backoff.
"""

from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit

from galsep.errors import InputError

__all__ = ["MAST_HOST", "MastError", "host_of", "http_status", "network_errors", "offline_error", "unreachable"]

MAST_HOST = "mast.stsci.edu"

# what the resolver and the kernel say, as requests/urllib3 pass it on in the message
_NO_NAME = ("failed to resolve", "name or service not known", "temporary failure in name resolution",
            "nodename nor servname", "no address associated with hostname", "getaddrinfo failed",
            "name resolution")
_REFUSED = ("connection refused", "[errno 111]")
_NO_ROUTE = ("network is unreachable", "no route to host", "[errno 101]", "[errno 113]")


class MastError(InputError):
    """A failure of the real-data source that the user can act on; the message says how.

    Offline archive, unknown catalogue column, refused or failed download: the stage command line
    (:func:`galsep.cli.run`) reports it as one line, without a traceback, and exits with status 2.
    """


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and what it wraps: causes, contexts, exception args, urllib3's ``reason``."""
    out: list[BaseException] = []
    todo = [err]
    while todo:
        e = todo.pop()
        if any(e is o for o in out) or len(out) > 50:
            continue
        out.append(e)
        nested = [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
        todo.extend(x for x in nested if isinstance(x, BaseException))
    return out


def unreachable(err: BaseException) -> str | None:
    """Why the host cannot be reached at all ("name resolution failed", "connection refused", "no
    route to the network"), or None when ``err`` is not such a failure (a timeout, a reset, HTTP)."""
    chain = _chain(err)
    for e in chain:
        if isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError":
            return "name resolution failed"
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, OSError) and e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "no route to the network"
    for e in chain:
        text = str(e).lower()
        if any(t in text for t in _NO_NAME):
            return "name resolution failed"
        if any(t in text for t in _REFUSED):
            return "connection refused"
        if any(t in text for t in _NO_ROUTE):
            return "no route to the network"
    return None


def http_status(err: BaseException) -> int | None:
    """The HTTP status of a ``requests`` HTTPError (from ``raise_for_status``), else None."""
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    return int(status) if isinstance(status, int) else None


def host_of(url: str | None, err: BaseException | None = None) -> str:
    """The host of ``url``, or of the request that failed in ``err``, or MAST's."""
    request = getattr(err, "request", None)
    for u in (getattr(request, "url", None), url):
        if isinstance(u, str) and urlsplit(u).hostname:
            return str(urlsplit(u).hostname)
    return MAST_HOST


def offline_error(what: str, err: Exception, host: str = MAST_HOST, reason: str | None = None) -> MastError:
    """The error for a network failure while trying to ``what`` (e.g. "query observations")."""
    reason = reason or unreachable(err)
    if reason:
        return MastError(
            f"cannot reach MAST at {host} to {what}: {reason} ({type(err).__name__}: {err}). This machine seems"
            f" to have no network: run the workflow where {host} is reachable (or download the tiles there"
            " first), or set `source: synthetic` in the config; finished downloads are kept and resumed."
        )
    return MastError(
        f"cannot reach MAST at {host} to {what} ({type(err).__name__}: {err}). Check the network connection"
        " (this machine may be offline) and rerun; finished downloads are kept and resumed."
    )


def network_errors() -> tuple[type[Exception], ...]:
    """Exception types of a lost or unreachable network (requests imported only when asked)."""
    import requests

    return (requests.exceptions.RequestException, ConnectionError, TimeoutError)
