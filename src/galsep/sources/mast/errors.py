"""The MAST source's errors: :class:`MastError`, which network failures count as "offline", and the
retry policy of every request the source makes (MAST's portal and downloads, VizieR).

A network failure is either *unreachable* (:func:`unreachable`: the host's name does not resolve,
the connection is refused, there is no route, or the connection gets no answer within
:data:`CONNECT_TIMEOUT` seconds, as behind a firewall that drops it; on the first attempt this means
no network, and is reported at once by :func:`offline_error`) or *transient* (read timeouts, dropped
connections, HTTP 429/5xx, and any of these after a first attempt that connected), which
:func:`with_retries` and the download retry with backoff, waits of ``backoff * 2**k`` seconds (at
most :data:`MAX_BACKOFF`).

Why a connect timeout on the first attempt is not retried: the kernel already resends an unanswered
connection request (SYN) after 1, 3 and 7 s, so a lost packet is recovered within the
:data:`CONNECT_TIMEOUT` = 10 s of one attempt; a connection still unanswered after that is dropped on
purpose, and retrying it with backoff would keep the user waiting for minutes. :func:`bounded_session`
gives every request of a ``requests`` session that connect timeout, whatever read timeout it is given.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from galsep.errors import InputError

if TYPE_CHECKING:
    import requests

__all__ = ["BACKOFF", "CONNECT_TIMEOUT", "MAST_HOST", "MAX_BACKOFF", "RETRIES", "MastError", "bounded_session",
           "host_of", "http_status", "network_errors", "offline_error", "unreachable", "with_retries"]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAST_HOST = "mast.stsci.edu"
CONNECT_TIMEOUT = 10.0  # seconds a connection may go unanswered (see the module docstring)
RETRIES = 5  # retries of a request that failed transiently (as mast.download.retries)
BACKOFF = 10.0  # seconds before the first retry, doubling (as mast.download.backoff)
MAX_BACKOFF = 300.0  # seconds; the longest wait between two attempts

# what the resolver and the kernel say, as requests/urllib3 pass it on in the message
_NO_NAME = ("failed to resolve", "name or service not known", "temporary failure in name resolution",
            "nodename nor servname", "no address associated with hostname", "getaddrinfo failed",
            "name resolution")
_REFUSED = ("connection refused", "[errno 111]")
_NO_ROUTE = ("network is unreachable", "no route to host", "[errno 101]", "[errno 113]")
_NO_ANSWER = ("connect timeout=",)  # urllib3's "Connection to HOST timed out. (connect timeout=10)"


def _no_answer() -> str:
    return (f"the connection got no answer within {CONNECT_TIMEOUT:g} s (a firewall may be dropping it, as on many"
            " cluster compute nodes)")


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
    route to the network", the connection unanswered), or None when ``err`` is not such a failure (a
    read timeout, a reset, HTTP)."""
    chain = _chain(err)
    for e in chain:
        if isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError":
            return "name resolution failed"
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, OSError) and e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "no route to the network"
        if type(e).__name__ in ("ConnectTimeout", "ConnectTimeoutError"):  # requests', urllib3's
            return _no_answer()
    for e in chain:
        text = str(e).lower()
        if any(t in text for t in _NO_NAME):
            return "name resolution failed"
        if any(t in text for t in _REFUSED):
            return "connection refused"
        if any(t in text for t in _NO_ROUTE):
            return "no route to the network"
        if any(t in text for t in _NO_ANSWER):
            return _no_answer()
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


def offline_error(what: str, err: Exception, host: str = MAST_HOST, reason: str | None = None, *,
                  service: str = "MAST", instead: str = "download the tiles there first") -> MastError:
    """The error for a network failure while trying to ``what`` (e.g. "query observations") at
    ``service`` on ``host``; ``instead`` is what the user can do elsewhere than on this machine."""
    reason = reason or unreachable(err)
    if reason:
        return MastError(
            f"cannot reach {service} at {host} to {what}: {reason} ({type(err).__name__}: {err}). This machine"
            f" seems to have no network (or none to {host}): run the workflow where {host} is reachable (or"
            f" {instead}), or set `source: synthetic` in the config; finished downloads are kept and resumed."
        )
    return MastError(
        f"cannot reach {service} at {host} to {what} ({type(err).__name__}: {err}). Check the network connection"
        " (this machine may be offline) and rerun; finished downloads are kept and resumed."
    )


def with_retries(what: str, call: Callable[[], T], retries: int = RETRIES, backoff: float = BACKOFF, *,
                 host: str = MAST_HOST, service: str = "MAST", settings: str = "the mast: query settings",
                 instead: str = "download the tiles there first") -> T:
    """``call()``, retried on transient network failures with waits of ``backoff * 2**k`` s.

    No network (``host`` does not resolve, the connection is refused or unanswered) on the first
    attempt is a :class:`MastError` at once (:func:`offline_error`); an HTTP 4xx other than 429 is one
    too, without retries, naming the ``settings`` to check.
    """
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            wait = min(backoff * 2 ** (attempt - 1), MAX_BACKOFF)
            log.warning("%s: attempt %d/%d failed (%s: %s); retrying in %.0f s", what, attempt, retries + 1,
                        type(last).__name__, last, wait)
            time.sleep(wait)
        try:
            return call()
        except network_errors() as err:
            status = http_status(err)
            if status is not None and 400 <= status < 500 and status != 429:
                raise MastError(f"{service} refused to {what} (HTTP {status}: {err}); check {settings}, or rerun"
                                " later if the service is being changed") from err
            if attempt == 0 and unreachable(err):  # no network: retrying would only wait
                raise offline_error(what, err, host, service=service, instead=instead) from err
            last = err
    assert last is not None
    raise MastError(
        f"could not {what} after {retries + 1} attempts (last: {type(last).__name__}: {last}). {service} may be"
        f" down or slow: check https://{host} and the network connection, and rerun later."
    ) from last


def bounded_session(session: requests.Session, read: float | None = None) -> requests.Session:
    """``session``, whose requests give up connecting after :data:`CONNECT_TIMEOUT` seconds.

    Every request gets the timeout pair (connect, read): the read timeout it was given (a number, or
    the read part of a pair), else ``read``; a request given none and ``read`` None waits for data
    without limit, as before. astroquery's MAST portal passes no timeout at all, VizieR one number for
    both; without this a connection that gets no answer waits for the kernel's own limit (about two
    minutes on Linux) on every attempt. Returns ``session`` (changed in place).
    """
    from requests.adapters import HTTPAdapter

    class BoundedAdapter(HTTPAdapter):
        def send(self, request: requests.PreparedRequest, stream: bool = False,
                 timeout: float | tuple[float | None, float | None] | None = None, verify: bool | str = True,
                 cert: str | tuple[str, str] | None = None, proxies: dict[str, str] | None = None,
                 ) -> requests.Response:
            wait = timeout[1] if isinstance(timeout, tuple) else timeout
            return super().send(request, stream=stream, timeout=(CONNECT_TIMEOUT, read if wait is None else wait),
                                verify=verify, cert=cert, proxies=proxies)

    for prefix in ("https://", "http://"):
        session.mount(prefix, BoundedAdapter())
    return session


def network_errors() -> tuple[type[Exception], ...]:
    """Exception types of a lost or unreachable network (requests imported only when asked)."""
    import requests

    return (requests.exceptions.RequestException, ConnectionError, TimeoutError)
