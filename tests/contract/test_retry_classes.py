"""Retry classes as the official client: 408, 429, 502, 503, 504 retried; 500 and the rest not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from pipeline.core.apimart.replies import RETRIED_STATUSES, error_for_status
from pipeline.errors import ApiError, RequestRejected, TransientError
from pipeline.shell.http.client import ApiClient
from tests.e2e.scripted import scripted

KEY = "sk-retry-classes"
TASK = "task_01KA040M0HP1GJWBJYZMKX1XS1"


def _calls_for(status: int, *, retry_after: str | None = None) -> tuple[int, ApiError]:
    """How many requests one poll makes when the API always answers ``status``."""
    calls = 0

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return web.json_response({"code": status, "message": "no"}, status=status,
                                 headers=headers)

    async def scenario() -> ApiError:
        async with scripted(answer) as base_url, \
                ApiClient(base_url=base_url, api_key=KEY, retry_attempts=3) as client:
            with pytest.raises(ApiError) as caught:
                await client.poll(TASK)
            return caught.value

    error = asyncio.run(scenario())
    return calls, error


@pytest.mark.parametrize("status", sorted(RETRIED_STATUSES))
def test_retried_statuses_are_retried_honouring_retry_after(status: int) -> None:
    """Each of 408, 429, 502, 503, 504 is tried again (Retry-After 0 keeps it quick)."""
    calls, error = _calls_for(status, retry_after="0")
    assert calls == 3
    assert isinstance(error, TransientError)
    assert error.retryable


@pytest.mark.parametrize("status", [500, 501, 505, 425])
def test_other_server_statuses_are_not_retried_but_stay_unknown(status: int) -> None:
    """500 and kin: one request, and a non-retryable TransientError (the item is resumed)."""
    calls, error = _calls_for(status)
    assert calls == 1
    assert isinstance(error, TransientError)
    assert not error.retryable


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    """A 4xx outside the table is refused at once."""
    calls, error = _calls_for(status)
    assert calls == 1
    assert isinstance(error, RequestRejected)


def test_retry_table_in_the_manual_matches_the_code() -> None:
    """The manual's retry table (docs/running.md) lists exactly the retried statuses."""
    readme = (Path(__file__).resolve().parents[2] / "docs" / "running.md").read_text()
    table = readme[readme.index("| Status | Retried"):].split("\n\n")[0]
    retried = {int(row.split("|")[1].strip()) for row in table.splitlines()[2:]
               if row.split("|")[2].strip().startswith("yes")
               and row.split("|")[1].strip().isdigit()}
    assert retried == set(RETRIED_STATUSES)
    assert error_for_status(500, "x").retryable is False  # type: ignore[attr-defined]
