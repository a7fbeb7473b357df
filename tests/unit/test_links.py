"""Which recorded URLs a run trusts: the API's site by the Public Suffix List, and under
--simulate the links of earlier in-process simulators moved onto the current one."""

from __future__ import annotations

import pytest

from pipeline.core.apimart.links import LinkTrust, for_lockfile, host_of

APIMART = LinkTrust.for_base_url("https://api.apimart.ai")


@pytest.mark.parametrize(("url", "trusted"), [
    ("https://upload.apimart.ai/f/image/a.png", True),
    ("https://api.apimart.ai/files/a.png", True),
    ("https://apimart.ai/a.png", True),
    ("http://upload.apimart.ai/a.png", False),  # plain http off the API's own origin
    ("https://evil.example/x.png", False),
    ("https://apimart.ai.evil.example/x.png", False),
    ("https://notapimart.ai/x.png", False),
    ("ftp://upload.apimart.ai/x.png", False),
    ("https://[::1", False),
    ("https://upload.apimart.ai/a b.png", False),  # not a plain URL
    ("", False),
])
def test_the_apimart_site_is_trusted_and_nothing_else(url: str, trusted: bool) -> None:
    """Hosts of apimart.ai over https are the API's; lookalikes and other schemes are not."""
    assert (APIMART.recorded(url) is not None) is trusted


def test_a_shared_hosting_domain_trusts_only_its_own_tenant() -> None:
    """A proxy on a shared domain (a public suffix) does not trust its neighbours."""
    proxy = LinkTrust.for_base_url("https://me.herokuapp.com")
    assert proxy.recorded("https://me.herokuapp.com/x.png") is not None
    assert proxy.recorded("https://evil.herokuapp.com/x.png") is None


def test_a_loopback_api_trusts_its_exact_origin_only() -> None:
    """Against a simulator, another port is another server."""
    local = LinkTrust.for_base_url("http://127.0.0.1:5555")
    assert local.recorded("http://127.0.0.1:5555/files/a.png") is not None
    assert local.recorded("http://127.0.0.1:4444/files/a.png") is None
    assert local.recorded("https://evil.example/x.png") is None


def test_simulate_links_move_to_the_current_simulator() -> None:
    """Under --simulate, the simulator's signed paths on any loopback port are rebased."""
    sim = LinkTrust.for_base_url("http://127.0.0.1:5555", simulator=True)
    assert sim.recorded("http://127.0.0.1:4444/files/t-0-1-ab.png") == \
        "http://127.0.0.1:5555/files/t-0-1-ab.png"
    assert sim.recorded("http://localhost:4444/uploads/u.png") == \
        "http://127.0.0.1:5555/uploads/u.png"
    assert sim.recorded("http://127.0.0.1:4444/elsewhere") is None
    assert sim.recorded("http://10.1.2.3:4444/files/a.png") is None


def test_a_merge_judges_simulate_lockfiles_by_any_loopback_simulator() -> None:
    """`lock merge` of a --simulate lockfile keeps simulator links; of another, the API's."""
    assert for_lockfile("shop.simulate.lock.json", "https://api.apimart.ai").recorded(
        "http://127.0.0.1:4444/uploads/u.png") is not None
    assert for_lockfile("shop.lock.json", "https://api.apimart.ai").recorded(
        "http://127.0.0.1:4444/uploads/u.png") is None
    assert host_of("https://evil.example:8443/x") == "evil.example:8443"
