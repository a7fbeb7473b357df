"""Auth, request rules and input images, over real HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from pipeline.simulator import RunningSimulator
from tests.simulator.simkit import (
    PRO,
    STD,
    SUBMIT,
    body,
    create,
    data_uri,
    png_size,
    result_urls,
    submit,
    task_id,
)
from tests.unit.test_rules import DOC_EXAMPLES, INVALID

pytestmark = pytest.mark.timeout(60)


def assert_error_shape(response: httpx.Response, status: int) -> str:
    """Check the simulator's JSON error body and return its message."""
    assert response.status_code == status, response.text
    reply: dict[str, Any] = response.json()
    assert reply["code"] == status
    assert reply["message"]
    assert reply["error"]["message"] == reply["message"]
    assert reply["error"]["type"]
    return str(reply["message"])


def test_submit_without_key_is_401(sim: RunningSimulator) -> None:
    """A POST without Authorization gets 401 with a JSON message."""
    response = httpx.post(sim.base_url + SUBMIT, json=body())
    assert "Authorization" in assert_error_shape(response, 401)


def test_wrong_key_is_401_on_submit_and_poll(sim: RunningSimulator) -> None:
    """A wrong bearer key gets 401 on both endpoints."""
    headers = {"Authorization": "Bearer nope"}
    response = httpx.post(sim.base_url + SUBMIT, json=body(), headers=headers)
    assert "invalid API key" in assert_error_shape(response, 401)
    response = httpx.get(sim.base_url + "/v1/tasks/task_X", headers=headers)
    assert_error_shape(response, 401)


def test_custom_api_key_is_honoured(start_sim: Any) -> None:
    """The configured key is accepted and the default one is not."""
    sim = start_sim(api_key="k2")
    ok = httpx.post(sim.base_url + SUBMIT, json=body(), headers={"Authorization": "Bearer k2"})
    assert ok.status_code == 200
    bad = httpx.post(
        sim.base_url + SUBMIT, json=body(), headers={"Authorization": "Bearer sim-key"}
    )
    assert bad.status_code == 401


@pytest.mark.parametrize("payload", DOC_EXAMPLES, ids=[f"doc-{i + 1}" for i in range(7)])
def test_documented_examples_are_accepted(client: httpx.Client, payload: dict[str, object]) -> None:
    """All seven example bodies of the API document create a task."""
    task_id(submit(client, payload))


@pytest.mark.parametrize(("payload", "field", "fragment"), INVALID.values(), ids=INVALID.keys())
def test_every_rule_is_enforced_with_400(
    client: httpx.Client, payload: dict[str, object], field: str, fragment: str
) -> None:
    """Each rule the validator knows is rejected by the simulator with 400 naming it."""
    message = assert_error_shape(submit(client, payload), 400)
    assert fragment in message


def test_400_names_every_problem(client: httpx.Client) -> None:
    """A body with several problems gets one 400 naming each of them."""
    message = assert_error_shape(submit(client, body(model=STD, n=9, size="4K", seed=-3)), 400)
    for fragment in ("n is 9", "4K is only available", "seed is -3"):
        assert fragment in message


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object")],
    ids=["malformed-json", "json-array"],
)
def test_unreadable_bodies_are_400(client: httpx.Client, raw: bytes, fragment: str) -> None:
    """A body that is not a JSON object is rejected with 400."""
    response = client.post(SUBMIT, content=raw, headers={"Content-Type": "application/json"})
    assert fragment in assert_error_shape(response, 400)


def test_warnings_do_not_reject(client: httpx.Client) -> None:
    """Fields the API ignores (unknown field, thinking_mode when editing) still get 200."""
    task_id(submit(client, body(image_urls=["https://example.com/a.png"], thinking_mode=True)))
    task_id(submit(client, body(style="noir")))


@pytest.mark.parametrize(
    ("size", "fragment"),
    [((200, 300), "width is 200"), ((2400, 240), "aspect")],
    ids=["too-small", "aspect-10:1"],
)
def test_data_uri_inputs_are_checked(
    client: httpx.Client, size: tuple[int, int], fragment: str
) -> None:
    """A data URI image outside the input limits is rejected with 400 naming the image."""
    payload = body(image_urls=["https://example.com/a.png", data_uri(*size)])
    message = assert_error_shape(submit(client, payload), 400)
    assert "image 2" in message
    assert fragment in message


def test_malformed_data_uri_is_400(client: httpx.Client) -> None:
    """A data URI whose base64 does not decode is rejected with 400."""
    payload = body(image_urls=["data:image/png;base64,@@@"])
    assert "image 1" in assert_error_shape(submit(client, payload), 400)


def test_bbox_checked_against_data_uri_size(client: httpx.Client) -> None:
    """Boxes are checked against the decoded size of a data URI input."""
    uri = data_uri(400, 300)
    inside = body(image_urls=[uri], bbox_list=[[[0, 0, 400, 300]]])
    task_id(submit(client, inside))
    outside = body(image_urls=[uri], bbox_list=[[[0, 0, 401, 300]]])
    assert "outside the 400x300 image" in assert_error_shape(submit(client, outside), 400)


def test_own_image_urls_are_resolved(
    sim: RunningSimulator, client: httpx.Client, clock: Any
) -> None:
    """An input URL the simulator handed out is resolved to that image's real size."""
    (url,) = _completed_urls(client, clock, size="16:9", resolution="1K")
    payload = body(image_urls=[url], bbox_list=[[[0, 0, 1361, 10]]])
    assert "outside the 1360x768 image" in assert_error_shape(submit(client, payload), 400)
    tid = task_id(submit(client, body(image_urls=[url], size="1K")))
    clock.advance(11)
    (out,) = result_urls(client, tid)
    assert png_size(client.get(out).content) == (1360, 768)


def test_unknown_and_expired_own_urls_are_400(
    sim: RunningSimulator, client: httpx.Client, clock: Any
) -> None:
    """Inputs pointing at a missing or expired simulator image are rejected like failed fetches."""
    missing = f"{sim.base_url}/files/task_{'0' * 26}-0-0-0123456789abcdef.png"
    assert "HTTP 404" in assert_error_shape(submit(client, body(image_urls=[missing])), 400)
    (url,) = _completed_urls(client, clock)
    clock.advance(86_400)
    assert "HTTP 410" in assert_error_shape(submit(client, body(image_urls=[url])), 400)


def test_invalid_host_cannot_be_fetched(client: httpx.Client) -> None:
    """An input on a reserved .invalid host is rejected as unfetchable."""
    payload = body(image_urls=["https://images.example.invalid/a.png"])
    assert "could not download" in assert_error_shape(submit(client, payload), 400)


def test_ledger_needs_no_auth(sim: RunningSimulator) -> None:
    """GET /_sim/ledger answers JSON without a key."""
    reply = httpx.get(sim.base_url + "/_sim/ledger").json()
    assert reply["submissions"] == 0
    assert reply["currency"] == "CNY"


def _completed_urls(client: httpx.Client, clock: Any, **fields: object) -> list[str]:
    tid = create(client, model=PRO, **fields)
    clock.advance(11)
    return result_urls(client, tid)
