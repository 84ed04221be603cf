"""``*_url`` inputs: downloads that reach only public addresses, within a size cap and a total deadline.

The address judgement (``is_safe_address``), the connection pinned to the checked address
(``PinnedIPAdapter``: the socket dials the address, while the Host header, SNI and certificate check
keep the name) and the streamed size cap (``iter_content_capped``) are runpod's ``rp_ssrf``. Its
``safe_get`` is not used whole, because it falls short of what the hostile-input tests demand:

- the private-address switch is the environment variable RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS, read
  by the SDK, not this worker's ALLOW_PRIVATE_URLS setting;
- it has no total deadline and no hold on its sockets, so a server that trickles its headers one
  byte at a time, or a chain of slow redirects, could hold the job for as long as it likes;
- its errors quote the whole URL (query-string signatures included), and a host name that is not
  valid IDNA escapes as a bare UnicodeError;
- its session trusts the environment, so ``~/.netrc`` credentials would go to user-chosen hosts.

So the redirect loop, the messages and the deadline are ours, around its parts.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import SplitResult, urljoin, urlsplit

import requests
import urllib3
import urllib3.connection
import urllib3.exceptions

from .config import Settings
from .errors import InputError, shown, shown_url
from .runpod_sdk import rp_ssrf

MAX_REDIRECTS = 5
CHUNK_BYTES = 1 << 20


def check_public_url(key: str, url: str, settings: Settings) -> list[str]:
    """Refuse non-http(s) URLs and hosts with any non-public address; return the addresses to dial.

    The download connects to these addresses only, so a name that answers differently a moment
    later (DNS rebinding) cannot steer it elsewhere. With ALLOW_PRIVATE_URLS any address is returned.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        scheme = shown(parts.scheme) if parts.scheme else "a bare path"
        raise InputError(key, f"only http and https URLs are accepted, not {scheme}.")
    if not parts.hostname:
        raise InputError(key, "the URL has no host.")
    try:
        infos = socket.getaddrinfo(parts.hostname, _port(key, parts), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(key, f"the host {shown(parts.hostname)} could not be resolved ({exc}).") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise InputError(key, f"the host {shown(parts.hostname)} has no address.")
    if not settings.allow_private_urls:
        _refuse_non_public(key, parts.hostname, addresses)
    return addresses


def _refuse_non_public(key: str, host: str, addresses: list[str]) -> None:
    """Any non-public answer refuses the host: the caller may not pick which address gets used."""
    for address in addresses:
        if not rp_ssrf.is_safe_address(address.split("%")[0]):
            raise InputError(key, f"the host {shown(host)} resolves to {address}, a non-public address "
                                  "the worker does not fetch.")


def _port(key: str, parts: SplitResult) -> int:
    try:
        return parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InputError(key, "the URL's port is not a number from 0 to 65535.") from None


def download_url(key: str, url: str, target: Path, settings: Settings) -> None:
    """Stream a URL to disk, checking every redirect hop and bounding size and total time."""
    session = requests.Session()
    session.trust_env = False  # no proxies or netrc from the environment: the checked address is the real target
    deadline = time.monotonic() + settings.download_total_timeout_s
    sockets: list[socket.socket] = []
    # Slow headers, slow redirects and trickled bodies all dodge the per-read timeout; at the
    # deadline every socket of this download is shut down, which wakes whatever read is blocked.
    watchdog = threading.Timer(settings.download_total_timeout_s, _shut_all, args=(sockets,))
    watchdog.daemon = True
    watchdog.start()
    try:
        response = _follow_redirects(session, key, url, settings, sockets, deadline)
        with response, open(target, "wb") as sink:
            _stream_body(response, key, sink, settings, deadline)
    except (requests.RequestException, OSError, ValueError, urllib3.exceptions.HTTPError) as exc:
        if time.monotonic() >= deadline - 0.05:
            raise InputError(key, f"the download took longer than {settings.download_total_timeout_s:g} s.") from None
        if isinstance(exc, requests.Timeout):
            raise InputError(key, f"the download from {shown_url(url)} timed out.") from None
        raise InputError(key, f"the download from {shown_url(url)} failed: {type(exc).__name__}.") from None
    finally:
        watchdog.cancel()
        session.close()


def _shut_all(sockets: list[socket.socket]) -> None:
    for sock in list(sockets):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _follow_redirects(session: requests.Session, key: str, url: str, settings: Settings,
                      sockets: list[socket.socket], deadline: float) -> requests.Response:
    """Each hop is checked like the first: a public site may redirect to the metadata address."""
    for _ in range(MAX_REDIRECTS + 1):
        response = _get_pinned(session, url, check_public_url(key, url, settings), settings, sockets, deadline)
        if response.is_redirect:
            response.close()
            url = urljoin(url, response.headers.get("location", ""))
            continue
        if response.status_code != 200:
            response.close()
            raise InputError(key, f"{shown_url(url)} answered HTTP {response.status_code}.")
        return response
    raise InputError(key, f"the URL redirected more than {MAX_REDIRECTS} times.")


def _get_pinned(session: requests.Session, url: str, addresses: list[str], settings: Settings,
                sockets: list[socket.socket], deadline: float) -> requests.Response:
    """GET from the first checked address that takes the connection (as rp_ssrf does: a name's first
    address is often IPv6, which a pod may not route)."""
    timeout = (settings.download_connect_timeout_s, settings.download_read_timeout_s)
    prefix = f"{urlsplit(url).scheme}://"
    for index, address in enumerate(addresses):
        previous = session.adapters.get(prefix)
        session.mount(prefix, GuardedAdapter(address, sockets))
        if previous is not None:
            previous.close()
        try:
            return session.get(url, stream=True, timeout=timeout, allow_redirects=False)
        except requests.ConnectionError:
            if index == len(addresses) - 1 or time.monotonic() >= deadline:
                raise
    raise AssertionError("check_public_url returns at least one address")


class GuardedAdapter(rp_ssrf.PinnedIPAdapter):
    """rp_ssrf's pinned adapter that also records each socket it opens, for the deadline to shut."""

    def __init__(self, address: str, sockets: list[socket.socket]) -> None:
        self.sockets = sockets  # before the base class builds its pool manager
        super().__init__(address, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _recording_pool(urllib3.HTTPConnectionPool, urllib3.connection.HTTPConnection, self.sockets),
            "https": _recording_pool(urllib3.HTTPSConnectionPool, urllib3.connection.HTTPSConnection, self.sockets),
        }


def _recording_pool(pool: type, connection: type, sockets: list[socket.socket]) -> type:
    def new_conn(self: urllib3.connection.HTTPConnection) -> socket.socket:
        sock = connection._new_conn(self)
        sockets.append(sock)
        return sock

    recording = type(f"Recording{connection.__name__}", (connection,), {"_new_conn": new_conn})
    return type(f"Recording{pool.__name__}", (pool,), {"ConnectionCls": recording})


def _stream_body(response: requests.Response, key: str, sink: BinaryIO, settings: Settings, deadline: float) -> None:
    limit = settings.max_download_bytes
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise InputError(key, f"the file is {int(declared)} bytes, over the {limit}-byte download limit.")
    try:
        for chunk in rp_ssrf.iter_content_capped(response, CHUNK_BYTES, limit):
            if time.monotonic() > deadline:
                raise InputError(key, f"the download took longer than {settings.download_total_timeout_s:g} s.")
            sink.write(chunk)
    except rp_ssrf.SSRFError:  # only the cap raises it here
        raise InputError(key, f"the file is larger than the {limit}-byte download limit.") from None
