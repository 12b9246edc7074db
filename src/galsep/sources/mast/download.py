"""The download of one drizzled product: resumable, retried with backoff, verified, cached.

:func:`download_tile` streams the product into a ``.part`` file of the download cache, resuming with
HTTP range requests, retries transient failures with exponential backoff, checks the length against
the server's, the FITS structure (SCI and WHT) and the CHECKSUM/DATASUM keywords
(:func:`verify_tile`), then keeps the file in the cache and hard-links it to the tile's path.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from os import PathLike
from pathlib import Path
from typing import Protocol, Self

from galsep.io import atomic_path, disk_full_error, is_disk_full, sha256_file
from galsep.sources.mast.errors import (
    MAX_BACKOFF,
    MastError,
    bounded_session,
    host_of,
    network_errors,
    offline_error,
    unreachable,
)

__all__ = ["CHUNK", "MAX_BACKOFF", "HTTPResponse", "HTTPSession", "download_tile", "download_url", "verify_tile"]

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per streamed read


class HTTPResponse(Protocol):
    """What :func:`download_tile` reads of a response (``requests.Response`` has it)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def iter_content(self, chunk_size: int) -> Iterator[bytes]: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *args: object) -> None: ...


class HTTPSession(Protocol):
    """What :func:`download_tile` needs of a session (``requests.Session`` has it)."""

    def get(self, url: str, *, headers: Mapping[str, str] | None = ..., stream: bool = ...,
            timeout: float | None = ...) -> HTTPResponse: ...

    def close(self) -> None: ...


def download_url(uri: str, base_url: str | None = None) -> str:
    """The MAST download URL of a data URI (the one ``Observations.download_file`` uses)."""
    from urllib.parse import quote

    if uri.startswith(("http://", "https://")):
        return uri
    if base_url is None:
        from astroquery.mast import conf

        base_url = conf.server + "/api/v0.1/Download/file"
    return base_url + "?uri=" + quote(uri, safe=":/")


def verify_tile(path: str | PathLike[str]) -> None:
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
    """A failure worth another attempt: wait and try again.

    ``cause`` is the network error of a request that never connected (the host is unreachable: no
    network on the first attempt, not worth retrying); None for a transient failure.
    """

    def __init__(self, message: str, cause: Exception | None = None) -> None:
        super().__init__(message)
        self.cause = cause


def _fetch(session: HTTPSession, url: str, part: Path, timeout: float) -> int | None:
    """One attempt: append to ``part`` from where it stops. Returns the total length if known."""
    import requests

    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout)
    except network_errors() as err:
        raise _Retry(f"{type(err).__name__}: {err}", err if unreachable(err) else None) from err
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
            if is_disk_full(err, part.parent):
                need = total - have if total is not None and mode == "ab" else total
                raise disk_full_error(part, err, needed=need) from err
            raise _Retry(f"connection lost after {part.stat().st_size} bytes ({type(err).__name__})") from err
    return total


def _content_range_total(value: str) -> int | None:
    m = re.search(r"/(\d+)\s*$", value)
    return int(m.group(1)) if m else None


def download_tile(
    uri: str,
    output: str | PathLike[str],
    *,
    cache_dir: str | PathLike[str],
    size: int | None = None,
    retries: int = 5,
    backoff: float = 10.0,
    timeout: float = 300.0,
    base_url: str | None = None,
    session: HTTPSession | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Path:
    """Download the product ``uri`` to ``output``, resuming and retrying; return ``output``.

    The bytes go to ``cache_dir/.{name}.part`` (kept between attempts and runs, so a new attempt asks
    only for the missing range), are checked (length against the server's, FITS structure and
    checksums) and renamed to ``cache_dir/{name}``; ``output`` appears, atomically, only after that.
    Transient errors (timeouts, dropped streams, HTTP 429/5xx, corrupt files, an unreachable host
    after the first attempt) are retried ``retries`` times with waits of ``backoff * 2**k`` seconds
    (at most 300 s). An unreachable host on the first attempt (its name does not resolve, the
    connection is refused or gets no answer within 10 s: no network, or a firewall) is a
    :class:`MastError` at once, without retries; so is a disk without space for the bytes
    (:class:`~galsep.errors.DiskFullError`). ``timeout`` is the read timeout of each request.
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
    # a connection unanswered for 10 s gives up (then fails at once, as no network, on the first attempt)
    session = session or bounded_session(requests.Session(), read=timeout)
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
                if attempt == 0 and err.cause is not None:  # never connected: no network, do not wait
                    raise offline_error(f"download {uri}", err.cause, host_of(url, err.cause)) from err.cause
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

