"""Which URLs read from a lockfile a run may use: its uploads and its result links.

A lockfile is a file anyone with the repository can edit, so a URL in it is a
claim, not a fact. Sent as an input (a recorded upload, or an upstream image's
result link), a foreign URL makes the run pay for edits of someone else's image;
fetched as a repair, it puts someone else's bytes in the output folder. So a
recorded URL is used only on the API's own site: the base URL's origin, or over
https a host of the same registrable domain (APIMart answers uploads and results
on ``upload.apimart.ai`` for ``api.apimart.ai``). The registrable domain comes
from the Public Suffix List, private section included, so a proxy at
``me.herokuapp.com`` trusts itself, not every other tenant of ``herokuapp.com``.
A loopback or IP address base URL (the simulator) trusts its exact origin only.
Anything else is ignored: an upload is redone (free), an upstream image is sent
from its file on disk, a repair does not fetch it.

Under ``run --simulate`` the API is an in-process simulator on a new port each
time. Its result and upload URLs are signed with the seed its state file keeps,
so every simulator of that state file serves the same paths: a loopback link of
the ``--simulate`` lockfile is rebased onto the current simulator's origin
instead of being distrusted (or fetched from a port nobody listens on).

Pure: strings in, strings out.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit, urlunsplit

from pipeline.core.apimart.replies import is_loopback, result_url_problem

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

Origin = tuple[str, str, int | None]  # (scheme, host, port), as the HTTP client compares them

# The paths the simulator signs: result images and uploaded inputs.
_SIMULATOR_PATHS: Final = ("/files/", "/uploads/")


def origin_of(url: str) -> Origin | None:
    """(scheme, lower-case host, port or None) of an http(s) URL; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        return None
    return scheme, host, port


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@functools.cache
def _suffixes() -> PublicSuffixList:
    """The bundled Public Suffix List, parsed once (~0.2 s), only when a name needs it."""
    from publicsuffixlist import PublicSuffixList  # imported by the runs that need it

    return PublicSuffixList()


def _site(host: str) -> str | None:
    """The registrable domain whose hosts share the API's trust (``api.apimart.ai`` ->
    ``apimart.ai``); None for an address, loopback, or a name that is itself a suffix."""
    if _is_address(host) or is_loopback(host):
        return None
    site: str | None = _suffixes().privatesuffix(host.rstrip("."))
    return site


@dataclass(frozen=True, slots=True)
class LinkTrust:
    """The API's origin, and how a run reads the URLs its lockfile recorded."""

    api: Origin
    simulator: bool = False  # run --simulate: the lockfile's loopback links are a simulator's

    @classmethod
    def for_base_url(cls, base_url: str, *, simulator: bool = False) -> LinkTrust:
        """The trust of a run against ``base_url`` (an http(s) URL, checked by the client)."""
        found = origin_of(base_url)
        return cls(found if found is not None else ("", "", None), simulator)

    def on_site(self, url: str) -> bool:
        """Whether ``url`` is on the API's origin, or over https on its site."""
        found = origin_of(url)
        if found is None or not self.api[1]:
            return False
        if found == self.api:
            return True
        site = _site(self.api[1])
        scheme, host, _port = found
        return (site is not None and scheme == "https"
                and (host == site or host.endswith("." + site)))

    def recorded(self, url: str | None) -> str | None:
        """A URL the lockfile recorded, as the run may use it now; None when it is foreign."""
        if not url:
            return None
        if self.simulator:
            url = self._rebased(url)
        http_api = self.api[1] if self.api[0] == "http" else ""
        if result_url_problem(url, api_host=http_api) is not None:
            return None  # not a plain URL imgspec would fetch or send at all
        return url if self.on_site(url) else None

    def _rebased(self, url: str) -> str:
        """An earlier in-process simulator's link, moved onto the current simulator's port."""
        scheme, host, port = self.api
        found = origin_of(url)
        if found is None or found[0] != "http" or not is_loopback(found[1]):
            return url
        parts = urlsplit(url)
        if not parts.path.startswith(_SIMULATOR_PATHS):
            return url
        netloc = f"[{host}]" if ":" in host else host
        if port is not None:
            netloc += f":{port}"
        return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))


def for_lockfile(name: str, base_url: str) -> LinkTrust:
    """How a merge judges the upload URLs of lockfile ``name``: a ``--simulate``
    lockfile's on any loopback simulator, any other's on the API at ``base_url``."""
    if name.endswith(".simulate.lock.json"):
        return LinkTrust(("http", "127.0.0.1", None), simulator=True)
    return LinkTrust.for_base_url(base_url)


def host_of(url: str) -> str:
    """The host (and port) a URL names, for messages."""
    found = origin_of(url)
    if found is None:
        return "a non-http(s) URL"
    _scheme, host, port = found
    return host[:80] if port is None else f"{host[:80]}:{port}"
