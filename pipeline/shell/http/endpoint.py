"""The API's base URL, checked and normalised once, at the edge.

A base URL is ``http(s)://HOST[:PORT][/PATH]``: a host (a name or an IP
literal), no ``user:password@``, no query or fragment (each request's path and
query are added to it), and a path only for a gateway that serves the API under
a prefix. A path ending in ``/v1`` is refused with the fix, since every request
adds ``/v1/...`` itself and the API would answer each one 404.

The key travels in an ``Authorization`` header, so a base URL is accepted only
where nobody between this machine and the API can read it: https anywhere, plain
http only to this machine (127.0.0.0/8, ::1, ``localhost``: the simulator).

Pure: no I/O. A refusal is a :class:`~pipeline.errors.UsageError` (exit 2)
naming what is wrong and where the URL came from.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from pipeline.core.apimart.replies import is_loopback, shorten
from pipeline.errors import UsageError

__all__ = ["BaseUrl", "parse_base_url"]

EXAMPLE: Final = "https://api.apimart.ai"
# A DNS name: dot-separated labels of letters, digits, hyphens (and the underscores some
# internal names carry), none starting or ending with a hyphen; an optional final dot.
_LABEL: Final = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOSTNAME: Final = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")


@dataclass(frozen=True, slots=True)
class BaseUrl:
    """A checked base URL: ``url`` is its normal form (no trailing slash), what requests
    are built on; ``host`` and ``port`` (the scheme's default when not written) name
    where connections go."""

    url: str
    scheme: str
    host: str
    port: int
    path: str

    @property
    def address(self) -> str:
        """``HOST:PORT`` as a person would type it (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_base_url(raw: str, *, source: str | None = None) -> BaseUrl:
    """Check ``raw`` and return its normal form; UsageError saying what is wrong.

    ``source`` names where ``raw`` came from (``--base-url``, ``APIMART_BASE_URL``),
    so the message says what to change.
    """
    text = raw.strip()
    shown = shorten(text, 100)

    def refuse(problem: str, fix: str = f"give e.g. {EXAMPLE}") -> UsageError:
        where = "" if source is None else f" (from {source})"
        return UsageError(f"the base URL {shown!r}{where} {problem}: {fix}")

    if not text.isascii() or not text.isprintable() or " " in text:
        raise refuse("holds spaces, control or non-ASCII characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:  # "[::1" (an unclosed bracket), a port past 65535, ...
        raise refuse(f"cannot be parsed ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise refuse("is not an http(s) URL")
    if "@" in parts.netloc:
        raise refuse("holds a user name or password",
                     "remove the part before '@'; the API key goes in APIMART_API_KEY")
    host = (parts.hostname or "").lower()
    if not host:
        raise refuse("has no host")
    if not _valid_host(host):
        raise refuse(f"has an invalid host {shorten(host, 60)!r}")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise refuse("has a query or fragment ('?' or '#'), which no request could carry",
                     "remove it")
    path = parts.path.rstrip("/")
    origin = f"{scheme}://{f'[{host}]' if ':' in host else host}"
    origin += "" if port is None else f":{port}"
    if path.lower().endswith("/v1"):
        fixed = origin + path[:-3]
        raise refuse("ends in /v1, which imgspec adds to every request itself",
                     f"give {fixed}")
    if scheme == "http" and not is_loopback(host):
        raise refuse("uses plain http to a host other than this machine, so the API key "
                     "would travel unencrypted",
                     f"use https://{origin.removeprefix('http://')}{path} (plain http "
                     "only to 127.0.0.1, ::1 or localhost)")
    return BaseUrl(url=origin + path, scheme=scheme, host=host,
                   port=port if port is not None else (443 if scheme == "https" else 80),
                   path=path)


def _valid_host(host: str) -> bool:
    """An IP address (v4, or v6 from inside brackets) or a DNS name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _HOSTNAME.fullmatch(host) is not None and len(host) <= 253
    return True
