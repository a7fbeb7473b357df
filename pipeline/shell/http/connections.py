"""How the client reaches a host: one connection pool, its trust store, a proxy per host.

One shared ``aiohttp.ClientSession`` (HTTP/1.1, no cookies, no connection limit:
the executor bounds what is in flight), made by the first request, inside the
running event loop.

Proxies are the environment's (HTTP(S)_PROXY / ALL_PROXY / NO_PROXY), read by the
standard library's ``getproxies`` and ``proxy_bypass``, once per host. aiohttp has
no per-host cached equivalent: its ``trust_env`` reads the environment and the
netrc file again on every request, in two worker-thread trips, and then adds the
netrc logins of the hosts themselves, which would clash with the API key's header;
and a ``proxy=`` given to a request holds for every hop of its redirects. So the
session keeps ``trust_env`` off and each request (each redirect hop of a download,
see :mod:`pipeline.shell.http.image_fetch`) is given the proxy of its own host.
A loopback host (the simulator) is never reached through a proxy, which could not
reach it.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
from typing import Final
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
from yarl import URL

from pipeline.core.apimart.links import Origin
from pipeline.core.apimart.replies import is_loopback

__all__ = ["NO_ORIGIN", "Connections", "env_proxy", "origin", "trust_store"]

_log = logging.getLogger(__name__)

NO_ORIGIN: Final[Origin] = ("", "", None)


def origin(url: str) -> Origin:
    """(scheme, host, port) of ``url``, lower-cased; a port out of range is -1, no real
    origin's. ValueError for what urlsplit cannot split (a malformed IPv6 host)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    return (parts.scheme.lower(), (parts.hostname or "").lower(), port)


@functools.cache
def trust_store() -> ssl.SSLContext:
    """SSL_CERT_FILE or SSL_CERT_DIR when set, else certifi's bundle (the trust store
    httpx used, so nothing changed for a user). One per process: it takes ~16 ms to build.
    """
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi  # only for an https API: not on the simulator's path

    return ssl.create_default_context(cafile=certifi.where())


def env_proxy(scheme: str, host: str) -> URL | None:
    """The proxy HTTP(S)_PROXY / ALL_PROXY / NO_PROXY give for ``scheme``://``host``;
    never one for a loopback host (the simulator).

    A proxy's credentials stay in its URL, where aiohttp reads them in every version.
    aiohttp speaks to http proxies only: another (socks5://...) is ignored, with a
    warning.
    """
    if not host or is_loopback(host) or proxy_bypass(host):
        return None
    proxies = getproxies()
    value = proxies.get(scheme) or proxies.get("all")
    if not value:
        return None
    try:
        proxy = URL(value if "://" in value else f"http://{value}")
    except ValueError:
        proxy = None
    if proxy is None or proxy.scheme != "http" or not proxy.host:
        _log.warning("ignoring the proxy set for %s URLs: aiohttp reaches hosts only "
                     "through http:// proxies", scheme)
        return None
    return proxy


class Connections:
    """The client's connection pool and the proxy of each host it has reached.

    ``tls``: the API is https, so the pool trusts :func:`trust_store`; an http origin
    (the simulator) leaves https links, if any, to aiohttp's default.
    """

    __slots__ = ("_http", "_proxies", "_timeout", "_tls")

    def __init__(self, *, timeout: aiohttp.ClientTimeout, tls: bool) -> None:
        self._timeout = timeout
        self._tls = tls
        self._proxies: dict[tuple[str, str], URL | None] = {}
        self._http: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The connection pool, made by the first request (inside the running loop)."""
        session = self._http
        if session is None:
            connector = aiohttp.TCPConnector(limit=0, ssl=trust_store() if self._tls else True)
            # No cookies: the API sets none, and a jar costs work on every request.
            session = self._http = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar())
        return session

    def proxy(self, scheme: str, host: str) -> URL | None:
        """The proxy (if any) for ``scheme``://``host``, looked up once per host."""
        key = (scheme, host)
        try:
            return self._proxies[key]
        except KeyError:
            found = self._proxies[key] = env_proxy(scheme, host)
            return found

    async def aclose(self) -> None:
        """Close the pool. Calling it twice is harmless."""
        if self._http is not None:
            await self._http.close()
