"""Base URLs: which are accepted and in what normal form, which are refused and how."""

from __future__ import annotations

import pytest

from pipeline.errors import UsageError
from pipeline.shell.http.endpoint import BaseUrl, parse_base_url


@pytest.mark.parametrize(("raw", "url", "address"), [
    ("https://api.apimart.ai", "https://api.apimart.ai", "api.apimart.ai:443"),
    ("  HTTPS://API.apimart.AI/  ", "https://api.apimart.ai", "api.apimart.ai:443"),
    ("https://gateway.example/apimart/", "https://gateway.example/apimart",
     "gateway.example:443"),
    ("https://10.0.0.7:8443", "https://10.0.0.7:8443", "10.0.0.7:8443"),
    ("http://127.0.0.1:8000", "http://127.0.0.1:8000", "127.0.0.1:8000"),
    ("http://127.9.9.9:8000/", "http://127.9.9.9:8000", "127.9.9.9:8000"),
    ("http://localhost", "http://localhost", "localhost:80"),
    ("http://[::1]:8000", "http://[::1]:8000", "[::1]:8000"),
    ("https://[2001:db8::1]", "https://[2001:db8::1]", "[2001:db8::1]:443"),
])
def test_accepted_base_urls_have_one_normal_form(raw: str, url: str, address: str) -> None:
    """Accepted URLs lose case, spaces and trailing slashes; HOST:PORT names the default
    port of the scheme when none is written."""
    checked = parse_base_url(raw)
    assert isinstance(checked, BaseUrl)
    assert checked.url == url
    assert checked.address == address


@pytest.mark.parametrize(("raw", "says"), [
    ("http://[::1", "cannot be parsed"),
    ("http://127.0.0.1:99999", "cannot be parsed"),
    ("api.apimart.ai", "is not an http(s) URL"),
    ("ftp://api.apimart.ai", "is not an http(s) URL"),
    ("https://", "has no host"),
    ("https://user:pass@api.apimart.ai", "holds a user name or password"),
    ("https://token@api.apimart.ai", "holds a user name or password"),
    ("https://api.apimart.ai/?x=", "has a query or fragment"),
    ("https://api.apimart.ai?", "has a query or fragment"),
    ("https://api.apimart.ai/#", "has a query or fragment"),
    ("https://api.apimart.ai/v1", "ends in /v1, which imgspec adds to every request itself: "
     "give https://api.apimart.ai"),
    ("https://gateway.example/apimart/V1/", "give https://gateway.example/apimart"),
    ("http://api.apimart.example", "plain http to a host other than this machine"),
    ("http://10.0.0.7:8000", "use https://10.0.0.7:8000"),
    ("http://localhost.example", "plain http to a host other than this machine"),
    ("https://exa mple.com", "holds spaces, control or non-ASCII characters"),
    ("https://bücher.example", "holds spaces, control or non-ASCII characters"),
    ("https://-bad-.example", "has an invalid host"),
    ("https://a..b", "has an invalid host"),
])
def test_refused_base_urls_say_what_is_wrong_and_where_from(raw: str, says: str) -> None:
    """Each refusal is a UsageError naming the URL, its source and what to do."""
    with pytest.raises(UsageError) as caught:
        parse_base_url(raw, source="APIMART_BASE_URL")
    message = str(caught.value)
    assert says in message
    assert "(from APIMART_BASE_URL)" in message
    assert caught.value.exit_code == 2
