"""Task lifecycle, reply shapes and URL expiry, on a manual clock."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from pipeline.simulator import ManualClock, RunningSimulator
from tests.simulator.simkit import body, create, image_url, poll, result_urls, submit

pytestmark = pytest.mark.timeout(60)


def test_task_goes_pending_processing_completed(client: httpx.Client, clock: ManualClock) -> None:
    """A task moves through processing to completed at its latency, progress rising to 100."""
    tid = create(client, n=2)
    first = poll(client, tid)
    assert first["status"] in ("pending", "processing")
    assert first["estimated_time"] == 10
    assert "result" not in first
    assert "completed" not in first
    clock.advance(5)
    middle = poll(client, tid)
    assert middle["status"] == "processing"
    assert middle["progress"] == 50
    clock.advance(5)
    done = poll(client, tid)
    assert done["status"] == "completed"
    assert done["progress"] == 100
    assert done["completed"] - done["created"] == done["actual_time"] == 10
    assert len(done["result"]["images"]) == 2
    assert "error" not in done


def test_pending_phase_is_first_tenth_when_present(
    client: httpx.Client, clock: ManualClock
) -> None:
    """Tasks that start pending turn processing after 10% of their latency."""
    pending = [
        tid
        for tid in (create(client) for _ in range(8))
        if poll(client, tid)["status"] == "pending"
    ]
    assert pending, "some tasks should start pending (chosen by task id hash)"
    clock.advance(1.01)
    assert all(poll(client, tid)["status"] == "processing" for tid in pending)


def test_estimated_time_is_ceiling_of_sampled_latency(
    start_sim: Any, connect: Any, clock: ManualClock
) -> None:
    """With a latency range, each task's estimate is the ceiling of a latency inside the range."""
    client = connect(start_sim(latency=(2.0, 8.0)))
    tids = [create(client) for _ in range(20)]
    estimates = {tid: poll(client, tid)["estimated_time"] for tid in tids}
    assert all(2 <= e <= 8 for e in estimates.values())
    assert len(set(estimates.values())) > 1
    clock.advance(8)
    for tid in tids:
        data = poll(client, tid)
        assert data["status"] == "completed"
        assert data["actual_time"] <= estimates[tid]
        assert math.ceil(data["actual_time"]) >= estimates[tid] - 1


def test_unknown_task_is_404(client: httpx.Client) -> None:
    """Polling a task id that was never issued gets 404."""
    response = client.get("/v1/tasks/task_NOPE")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


def test_language_query_is_accepted(client: httpx.Client) -> None:
    """The documented ?language= query does not change the answer."""
    tid = create(client)
    for language in ("en", "zh", "ko", "ja"):
        assert client.get(f"/v1/tasks/{tid}", params={"language": language}).status_code == 200


def test_failed_task_has_error_and_no_result(
    start_sim: Any, connect: Any, clock: ManualClock
) -> None:
    """A failed task reports status failed with error {message, code}, no result or completed."""
    client = connect(start_sim(faults={"task.fail": 1.0}))
    tid = create(client)
    clock.advance(10)
    data = poll(client, tid)
    assert data["status"] == "failed"
    assert set(data["error"]) == {"message", "code"}
    assert data["error"]["message"]
    assert "result" not in data
    assert "completed" not in data


def test_reply_shapes_vary_between_documented_variants(
    client: httpx.Client, clock: ManualClock
) -> None:
    """Across tasks, code is both 200 and "success", and url both a string and a list."""
    submit_codes, poll_codes, url_kinds = set(), set(), set()
    for _ in range(24):
        reply = submit(client, body()).json()
        submit_codes.add(reply["code"])
        tid = reply["data"][0]["task_id"]
        clock.advance(10)
        polled = client.get(f"/v1/tasks/{tid}").json()
        poll_codes.add(polled["code"])
        url_kinds.add(type(polled["data"]["result"]["images"][0]["url"]).__name__)
    assert submit_codes == {200, "success"}
    assert poll_codes == {200, "success"}
    assert url_kinds == {"str", "list"}


def test_shapes_are_stable_per_task(client: httpx.Client, clock: ManualClock) -> None:
    """Polling one task twice gives byte-identical replies (shape chosen by task id)."""
    tid = create(client)
    clock.advance(10)
    assert client.get(f"/v1/tasks/{tid}").content == client.get(f"/v1/tasks/{tid}").content


def test_urls_expire_with_410_and_repoll_gives_fresh_ones(
    client: httpx.Client, clock: ManualClock
) -> None:
    """A result URL works until expires_at, then 410; a new poll hands out a working URL."""
    tid = create(client)
    clock.advance(10)
    data = poll(client, tid)
    image = data["result"]["images"][0]
    assert image["expires_at"] == data["completed"] + 86_400
    url = image_url(image)
    assert client.get(url).status_code == 200
    clock.advance(86_399)
    assert client.get(url).status_code == 200
    clock.advance(1)
    expired = client.get(url)
    assert expired.status_code == 410
    assert "poll the task" in expired.json()["message"]
    (fresh,) = result_urls(client, tid)
    assert fresh != url
    assert client.get(fresh).status_code == 200


def test_url_ttl_is_configurable(start_sim: Any, connect: Any, clock: ManualClock) -> None:
    """url_ttl sets how long a result URL lives."""
    client = connect(start_sim(url_ttl=60))
    tid = create(client)
    clock.advance(10)
    (url,) = result_urls(client, tid)
    clock.advance(60)
    assert client.get(url).status_code == 410


def test_unknown_or_forged_file_is_404(
    sim: RunningSimulator, client: httpx.Client, clock: ManualClock
) -> None:
    """A file token that was never issued, or whose signature is wrong, gets 404."""
    tid = create(client)
    clock.advance(10)
    (url,) = result_urls(client, tid)
    forged = url[:-8] + ("0000" if url[-8:-4] != "0000" else "1111") + ".png"
    assert client.get(forged).status_code == 404
    assert client.get(sim.base_url + "/files/nothing.png").status_code == 404


def test_downloads_need_no_auth(client: httpx.Client, clock: ManualClock) -> None:
    """Result URLs work without a key, like the API's CDN links."""
    tid = create(client)
    clock.advance(10)
    (url,) = result_urls(client, tid)
    assert httpx.get(url).status_code == 200
