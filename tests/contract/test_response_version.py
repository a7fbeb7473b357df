"""Response version 2026-07-27: the header on every call, the versioned envelope, replays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from multidict import CIMultiDict

from pipeline.core.apimart.replies import RESPONSE_VERSION, parse_poll, parse_submit
from pipeline.core.lock.journal import journal_line
from pipeline.errors import BalanceExhausted, TransientError
from pipeline.shell.store import lockstore as journal
from pipeline.simulator import RunningSimulator
from tests.contract.conftest import FOUR_SHOPS
from tests.e2e.conftest import KEY, Imgspec, Project
from tests.simulator.simkit import StartSim

TASK = "task_01KA040M0HP1GJWBJYZMKX1XS1"
URL = "https://upload.apimart.ai/f/image/a.png"


def versioned(task: dict[str, Any], result: dict[str, Any] | None = None) -> dict[str, Any]:
    """A versioned-envelope reply holding ``task`` (and ``result``)."""
    generation: dict[str, Any] = {"task": task}
    if result is not None:
        generation["result"] = result
    return {"version": RESPONSE_VERSION, "request_id": "req_1",
            "data": {"id": TASK, "object": "image.generation", "generation": generation}}


def test_versioned_poll_reply_is_parsed_like_todays() -> None:
    """A completed task in the versioned envelope gives the same state as the flat shape."""
    images = {"images": [{"url": [URL], "expires_at": 1763174708}]}
    state = parse_poll(versioned({"status": "completed", "progress": 100}, images), TASK)
    flat = parse_poll({"code": 200, "data": {"id": TASK, "status": "completed",
                                             "progress": 100, "result": images}}, TASK)
    assert state == flat
    assert state.images[0].url == URL
    assert state.images[0].expires_at == 1763174708


def test_versioned_submit_reply_carries_request_id_and_replay() -> None:
    """The body's request_id is kept, and Idempotency-Replayed: true marks a replay."""
    state = parse_submit(versioned({"status": "pending"}), request_id="req_header",
                         replayed="true")
    assert (state.task_id, state.status) == (TASK, "pending")
    assert state.request_id == "req_1"
    assert state.replayed
    plain = parse_submit({"code": 200, "data": [{"task_id": TASK, "status": "pending"}]},
                         request_id="req_header", replayed=None)
    assert plain.request_id == "req_header"
    assert not plain.replayed


def test_versioned_error_envelope_is_classified_by_its_code() -> None:
    """A versioned ``error`` with code 402 is the balance error; a garbled one is transient."""
    with pytest.raises(BalanceExhausted):
        parse_submit({"request_id": "r", "error": {"code": 402, "message": "no money"}})
    with pytest.raises(TransientError):
        parse_submit({"request_id": "r", "error": {"code": "??", "message": "eh"}})
    with pytest.raises(TransientError):
        parse_poll(versioned({"status": "completed"}) | {"data": {"generation": []}}, TASK)


def test_simulator_answers_the_envelope_the_switch_chooses(start_sim: StartSim) -> None:
    """"requested" answers versioned only to the header; "legacy" never; both name the request."""
    sim = start_sim()
    legacy = start_sim(envelope="legacy")
    body = {"model": "wan2.7-image", "prompt": "a shop"}
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=sim.base_url, headers=auth) as client:
        old = client.post("/v1/images/generations", json=body)
        new = client.post("/v1/images/generations", json=body,
                          headers={"X-APIMart-Response-Version": RESPONSE_VERSION})
    assert "code" in old.json()
    assert old.headers["X-Request-Id"].startswith("req_")
    assert new.headers["X-APIMart-Response-Version"] == RESPONSE_VERSION
    data = new.json()
    assert data["request_id"] == new.headers["X-Request-Id"]
    assert data["data"]["generation"]["task"]["status"] in ("pending", "processing")
    with httpx.Client(base_url=legacy.base_url, headers=auth) as client:
        kept = client.post("/v1/images/generations", json=body,
                           headers={"X-APIMart-Response-Version": RESPONSE_VERSION})
    assert "code" in kept.json()
    assert "X-APIMart-Response-Version" not in kept.headers


def test_client_sends_the_version_header_on_every_call(project: Project, start_sim: StartSim,
                                                       imgspec: Imgspec) -> None:
    """A run against a simulator that answers only versioned requests completes."""
    sim: RunningSimulator = start_sim()
    project.manifest.write_text(FOUR_SHOPS)
    seen: list[str] = []
    original = aiohttp.ClientSession._request

    async def spy(self: aiohttp.ClientSession, method: str, url: Any,
                  **kw: Any) -> aiohttp.ClientResponse:
        seen.append(CIMultiDict(kw.get("headers") or {}).get(
            "X-APIMart-Response-Version", ""))
        return await original(self, method, url, **kw)

    with pytest.MonkeyPatch.context() as mp:
        # Every request an aiohttp session sends passes here (session.request, .get).
        mp.setattr(aiohttp.ClientSession, "_request", spy)
        result = imgspec("run", str(project.manifest), "--base-url", sim.base_url, "--yes")
    assert result.exit_code == 0, result.output
    assert seen
    assert set(seen) == {RESPONSE_VERSION}


def test_replayed_submission_is_journaled_and_not_charged_twice(
        project: Project, start_sim: StartSim, imgspec: Imgspec) -> None:
    """A lost submit reply is replayed: journaled as Idempotency-Replayed, charged once."""
    sim = start_sim(faults={"submit.lost_reply": 0.5}, seed=1)
    project.manifest.write_text(FOUR_SHOPS)
    lines: list[dict[str, Any]] = []
    original = journal_line

    def spy(key: str, entry: Any, submission: Any = None) -> str:
        line = original(key, entry, submission)
        lines.append(json.loads(line))
        return line

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(journal, "journal_line", spy)
        result = imgspec("run", str(project.manifest), "--base-url", sim.base_url, "--yes",
                         "--concurrency", "1")
    assert result.exit_code == 0, result.output
    submissions = [line["submission"] for line in lines if "submission" in line]
    assert len(submissions) == 4
    assert all(s["request_id"].startswith("req_") for s in submissions)
    replayed = [s for s in submissions if s["replayed"]]
    ledger = sim.ledger()
    assert ledger.faults.get("submit.lost_reply", 0) >= 1
    assert replayed
    assert ledger.tasks_created == 4
    assert ledger.images_charged == 4
    entries = json.loads(Path(project.lockfile).read_text())["entries"]
    assert {s["task_id"] for s in submissions} == {e["task_id"] for e in entries.values()}
