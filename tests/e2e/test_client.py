"""ApiClient against the real simulator over HTTP on 127.0.0.1 (and a few scripted servers
there too, for replies the simulator never gives).

Backoff sleeps are switched off with ``stamina.set_testing`` (restored after each
test), so retried faults cost no wall time; the one test that checks a real
Retry-After wait turns testing mode off for itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import stamina
from aiohttp import web
from PIL import Image

from pipeline.errors import (
    ApiError,
    ApiUnreachable,
    AuthError,
    BalanceExhausted,
    RequestRejected,
    TransientError,
    UsageError,
)
from pipeline.shell.http.client import ApiClient, TaskState
from pipeline.shell.http.downloads import Downloaded, DownloadLimits
from pipeline.shell.http.retrying import WAIT_INITIAL, WAIT_JITTER, RetryEvent
from pipeline.simulator import ManualClock, SimulatorConfig, run_in_thread
from tests.e2e.scripted import Handler, scripted

KEY = "sk-live-TOPSECRET-7f3a9c2e5d1b"
WRONG_KEY = "sk-wrong-ALSOSECRET-0b1c2d3e"
FAST = (0.05, 0.05)  # task latency in the simulator, seconds


def body(seed: int = 1, **extra: Any) -> dict[str, Any]:
    """A small valid text-to-image request (1K, so images render fast)."""
    return {"model": "wan2.7-image", "prompt": "a lighthouse", "size": "1K", "seed": seed, **extra}


@pytest.fixture(autouse=True)
def no_backoff() -> Iterator[None]:
    """Retries keep their attempt limits but sleep 0 s; testing mode is restored after."""
    was_testing = stamina.is_testing()
    with stamina.set_testing(True, attempts=1000, cap=True):
        yield
    assert stamina.is_testing() == was_testing


@contextlib.contextmanager
def simulator(**options: Any) -> Iterator[Any]:
    """A simulator on a free port with key KEY and the given config options."""
    options.setdefault("latency", FAST)
    with run_in_thread(SimulatorConfig(api_key=KEY, seed=7, **options)) as sim:
        yield sim


def run(
    base_url: str,
    scenario: Callable[[ApiClient], Awaitable[Any]],
    *,
    events: list[RetryEvent] | None = None,
    **options: Any,
) -> Any:
    """Run ``scenario(client)`` in a fresh event loop with an ApiClient on ``base_url``."""
    options.setdefault("api_key", KEY)
    hook = events.append if events is not None else None

    async def main() -> Any:
        async with ApiClient(base_url=base_url, on_retry=hook, **options) as client:
            return await scenario(client)

    return asyncio.run(main())


def run_scripted(
    handler: Handler, scenario: Callable[[ApiClient], Awaitable[Any]], **options: Any
) -> Any:
    """Run ``scenario(client)`` with an ApiClient whose API is a scripted server."""
    options.setdefault("api_key", KEY)

    async def main() -> Any:
        async with scripted(handler) as base_url, \
                ApiClient(base_url=base_url, **options) as client:
            return await scenario(client)

    return asyncio.run(main())


async def finish(client: ApiClient, task_id: str, deadline: float = 10.0) -> TaskState:
    """Poll until the task is finished (bounded)."""
    give_up = time.monotonic() + deadline
    while True:
        state = await client.poll(task_id)
        if state.finished:
            return state
        assert time.monotonic() < give_up, f"task {task_id} did not finish"
        await asyncio.sleep(0.02)


async def generate(
    client: ApiClient, folder: Path, seed: int, key: str
) -> tuple[TaskState, list[Downloaded]]:
    """Submit, poll to completion and download every image of one request."""
    created = await client.submit(body(seed), idempotency_key=key)
    done = await finish(client, created.task_id)
    assert done.status == "completed", done
    assert done.task_id == created.task_id
    files = []
    for i, image in enumerate(done.images):
        # The folder need not exist: download() creates it with the file.
        files.append(await client.download(image.url, folder / "new" / f"{seed}-{i}.png.part"))
    return done, files


def free_port() -> int:
    """A TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the normal path -----------------------------------------------------------


def test_submit_poll_download_happy_path(tmp_path: Path) -> None:
    """A request is created, completes, and its image lands verified on disk."""
    with simulator() as sim:

        async def scenario(client: ApiClient) -> tuple[TaskState, TaskState, Downloaded]:
            created = await client.submit(body(n=2), idempotency_key="happy-1")
            done = await finish(client, created.task_id)
            got = await client.download(done.images[1].url, tmp_path / "1.png.part")
            return created, done, got

        created, done, got = run(sim.base_url, scenario)
        ledger = sim.ledger()
    assert created.status in ("pending", "processing", "completed")
    assert created.task_id.startswith("task_")
    assert done.status == "completed"
    assert done.progress == 100
    assert done.estimated_time is not None
    assert len(done.images) == 2
    assert all(image.expires_at is not None for image in done.images)
    data = (tmp_path / "1.png.part").read_bytes()
    assert got == Downloaded(hashlib.sha256(data).hexdigest(), len(data), 1024, 1024, "PNG")
    assert (ledger.tasks_created, ledger.images_charged, ledger.downloads_ok) == (1, 2, 1)


def test_rate_limit_spaces_requests() -> None:
    """max_rate=20 spaces 11 concurrent polls over at least 0.5 s."""
    with simulator() as sim:

        async def scenario(client: ApiClient) -> float:
            created = await client.submit(body(), idempotency_key="rate-1")
            started = time.monotonic()
            await asyncio.gather(*(client.poll(created.task_id) for _ in range(11)))
            return time.monotonic() - started

        elapsed = run(sim.base_url, scenario, max_rate=20.0)
    assert elapsed >= 0.45


# -- errors that are not retried -------------------------------------------------


def test_wrong_key_is_auth_error() -> None:
    """401 from the API is an AuthError at once, for submit and poll alike."""
    events: list[RetryEvent] = []
    with simulator() as sim:

        async def scenario(client: ApiClient) -> list[ApiError]:
            errors: list[ApiError] = []
            for call in (
                client.submit(body(), idempotency_key="auth-1"),
                client.poll("task_00000000000000000000000000"),
            ):
                with pytest.raises(AuthError) as caught:
                    await call
                errors.append(caught.value)
            return errors

        errors = run(sim.base_url, scenario, api_key=WRONG_KEY, events=events)
        ledger = sim.ledger()
    assert [e.status for e in errors] == [401, 401]
    assert "invalid API key" in str(errors[0])
    assert events == []
    assert ledger.tasks_created == 0


def test_rule_violation_is_rejected_with_the_simulators_message() -> None:
    """A 400 rule violation is a RequestRejected carrying the API's own message."""
    events: list[RetryEvent] = []
    with simulator() as sim:

        async def scenario(client: ApiClient) -> RequestRejected:
            with pytest.raises(RequestRejected) as caught:
                await client.submit(body(n=5), idempotency_key="rule-1")
            return caught.value

        error = run(sim.base_url, scenario, events=events)
        ledger = sim.ledger()
    assert error.status == 400
    assert error.api_message.startswith("invalid request: n: n is 5")
    assert events == []
    assert (ledger.submissions, ledger.tasks_created) == (1, 0)


def test_unknown_task_and_unknown_file_are_rejected(tmp_path: Path) -> None:
    """404 on a task id or an image URL is a RequestRejected, not retried."""
    events: list[RetryEvent] = []
    with simulator() as sim:

        async def scenario(client: ApiClient) -> list[RequestRejected]:
            errors = []
            with pytest.raises(RequestRejected) as caught:
                await client.poll("task_NOPE")
            errors.append(caught.value)
            with pytest.raises(RequestRejected) as caught:
                await client.download(f"{sim.base_url}/files/nope.png", tmp_path / "x.part")
            errors.append(caught.value)
            return errors

        errors = run(sim.base_url, scenario, events=events)
    assert [e.status for e in errors] == [404, 404]
    assert events == []
    assert not (tmp_path / "x.part").exists()


def test_reused_key_with_another_body_is_rejected() -> None:
    """An Idempotency-Key reused for a different body is a RequestRejected (422)."""
    with simulator() as sim:

        async def scenario(client: ApiClient) -> RequestRejected:
            await client.submit(body(1), idempotency_key="same")
            with pytest.raises(RequestRejected) as caught:
                await client.submit(body(2), idempotency_key="same")
            return caught.value

        error = run(sim.base_url, scenario)
        ledger = sim.ledger()
    assert error.status == 422
    assert "Idempotency-Key" in error.api_message
    assert ledger.tasks_created == 1


# -- retries and idempotency -------------------------------------------------------


FAULTS = {
    "submit.429": 0.15,
    "submit.5xx": 0.15,
    "submit.reset": 0.15,
    "submit.lost_reply": 0.15,
    "poll.429": 0.15,
    "poll.5xx": 0.15,
    "poll.malformed": 0.15,
    "download.5xx": 0.3,
    "download.truncate": 0.3,
}


def test_faults_are_retried_and_nothing_is_charged_twice(tmp_path: Path) -> None:
    """With every retryable fault at a high seeded rate, 12 concurrent items all succeed once."""
    events: list[RetryEvent] = []
    count = 12
    # Latency 0: tasks are done at creation, so the number of requests per stage
    # (and with the seed, which faults fire) does not depend on timing.
    with simulator(latency=(0.0, 0.0), faults=FAULTS) as sim:

        async def scenario(client: ApiClient) -> list[tuple[TaskState, list[Downloaded]]]:
            return await asyncio.gather(
                *(generate(client, tmp_path, i, f"faults-{i}") for i in range(count))
            )

        results = run(sim.base_url, scenario, events=events, retry_attempts=15)
        ledger = sim.ledger()
    assert len({state.task_id for state, _ in results}) == count
    assert all(files[0].format == "PNG" for _, files in results)
    assert (ledger.tasks_created, ledger.images_charged, ledger.downloads_ok) == (count,) * 3
    assert all(ledger.faults.get(name, 0) > 0 for name in FAULTS), ledger.faults
    assert ledger.replays >= ledger.faults["submit.lost_reply"]
    assert {e.operation for e in events} == {"submit", "poll", "download"}
    assert len(events) == sum(ledger.faults.values())
    # stamina's testing mode (this module's fixture) sleeps 0 s and says so.
    assert all(e.attempt >= 1 and e.wait == 0 for e in events)


def test_backoff_is_stamina_s_with_the_client_s_settings() -> None:
    """Without Retry-After, stamina waits WAIT_INITIAL plus jitter before the first retry."""
    events: list[RetryEvent] = []
    with simulator(faults={"poll.5xx": 1.0}) as sim:

        async def scenario(client: ApiClient) -> None:
            with pytest.raises(TransientError):
                await client.poll("task_anything")

        with stamina.set_testing(False):
            run(sim.base_url, scenario, events=events, retry_attempts=2)
    assert [(e.operation, e.attempt) for e in events] == [("poll", 1)]
    assert WAIT_INITIAL <= events[0].wait <= WAIT_INITIAL + WAIT_JITTER


def test_lost_replies_are_retried_with_the_same_key() -> None:
    """A POST whose reply is lost is retried with its key: one task, the rest replays."""
    events: list[RetryEvent] = []
    with simulator(faults={"submit.lost_reply": 1.0}) as sim:

        async def scenario(client: ApiClient) -> TransientError:
            with pytest.raises(TransientError) as caught:
                await client.submit(body(), idempotency_key="lost-1")
            return caught.value

        error = run(sim.base_url, scenario, events=events, retry_attempts=3)
        ledger = sim.ledger()
    assert "ServerDisconnectedError" in str(error)  # aiohttp's name, not a "timeout"
    assert [(e.operation, e.attempt) for e in events] == [("submit", 1), ("submit", 2)]
    assert (ledger.submissions, ledger.tasks_created, ledger.replays) == (3, 1, 2)
    assert ledger.images_charged == 1


def test_lost_reply_then_resubmit_yields_the_same_task() -> None:
    """After lost replies, the task id returned is the key's task: a resubmit replays it."""
    events: list[RetryEvent] = []
    with simulator(faults={"submit.lost_reply": 0.5}) as sim:

        async def scenario(client: ApiClient) -> list[tuple[str, str]]:
            pairs = []
            for i in range(6):
                first = await client.submit(body(i), idempotency_key=f"lost-{i}")
                again = await client.submit(body(i), idempotency_key=f"lost-{i}")
                pairs.append((first.task_id, again.task_id))
            return pairs

        pairs = run(sim.base_url, scenario, events=events, retry_attempts=15)
        ledger = sim.ledger()
    assert all(first == again for first, again in pairs)
    assert ledger.faults["submit.lost_reply"] > 0
    assert ledger.tasks_created == len(pairs) == ledger.images_charged
    assert ledger.submissions == 2 * len(pairs) + len(events)
    assert ledger.replays == ledger.submissions - ledger.tasks_created


def test_retries_give_up_after_retry_attempts() -> None:
    """A fault that never clears ends in a TransientError after exactly retry_attempts tries."""
    events: list[RetryEvent] = []
    with simulator(faults={"poll.5xx": 1.0}) as sim:

        async def scenario(client: ApiClient) -> TransientError:
            created = await client.submit(body(), idempotency_key="give-up")
            with pytest.raises(TransientError) as caught:
                await client.poll(created.task_id)
            return caught.value

        error = run(sim.base_url, scenario, events=events, retry_attempts=4)
        ledger = sim.ledger()
    assert error.status in (502, 503, 504)
    assert len(events) == 3
    assert ledger.polls == 4


def test_retry_after_is_honoured() -> None:
    """A 429's Retry-After is waited for for real before the retry."""
    events: list[RetryEvent] = []
    with simulator(faults={"submit.429": 1.0}, retry_after=1) as sim:

        async def scenario(client: ApiClient) -> float:
            started = time.monotonic()
            with pytest.raises(TransientError) as caught:
                await client.submit(body(), idempotency_key="ra-1")
            assert caught.value.retry_after == 1.0
            assert caught.value.status == 429
            return time.monotonic() - started

        with stamina.set_testing(False):
            elapsed = run(sim.base_url, scenario, events=events, retry_attempts=2)
    assert len(events) == 1
    assert 1.0 <= events[0].wait <= 1.5
    assert elapsed >= 1.0


def test_retry_after_beyond_the_deadline_stops_at_once() -> None:
    """A Retry-After longer than retry_timeout is not slept: the error carries it instead."""
    events: list[RetryEvent] = []
    with simulator(faults={"poll.429": 1.0}, retry_after=600) as sim:

        async def scenario(client: ApiClient) -> TransientError:
            with pytest.raises(TransientError) as caught:
                await client.poll("task_anything")
            return caught.value

        error = run(sim.base_url, scenario, events=events, retry_timeout=30.0)
    assert error.retry_after == 600.0
    assert events == []


def test_refused_first_connection_fails_at_once_naming_host_and_port() -> None:
    """A refused connection before the API ever answered is an ApiUnreachable at once:
    no retry, HOST:PORT and the option to check named, nothing sent."""
    events: list[RetryEvent] = []
    port = free_port()

    async def scenario(client: ApiClient) -> ApiUnreachable:
        with pytest.raises(ApiUnreachable) as caught:
            await client.poll("task_x")
        return caught.value

    error = run(f"http://127.0.0.1:{port}", scenario, events=events, retry_attempts=3)
    assert f"cannot connect to 127.0.0.1:{port} (connection refused" in str(error)
    assert "--base-url / APIMART_BASE_URL" in str(error)
    assert error.address == f"127.0.0.1:{port}"
    assert isinstance(error.__cause__, aiohttp.ClientConnectorError)
    assert events == []


@pytest.mark.parametrize(("reply", "retries"), [
    (b"", 1),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}", 2),
], ids=["hung-up", "malformed"])
def test_submit_sent_once_then_refused_is_outcome_unknown_not_unreachable(
        reply: bytes, retries: int) -> None:
    """A submit whose first attempt reached the server (which hung up, or answered 200
    with no task in its JSON) and whose retry was refused may have made a task: outcome
    unknown, so its key is replayed, never recorded as not sent. (Refusals are retried
    only after the API answered: once for the hang-up, to the last attempt after the
    malformed reply.)"""
    events: list[RetryEvent] = []

    async def scenario(client_options: dict[str, Any]) -> TransientError:
        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1024)  # the POST arrived
            writer.write(reply)
            await writer.drain()
            writer.close()
            server.close()  # nothing listens any more: the retry is refused

        server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with ApiClient(base_url=f"http://127.0.0.1:{port}", api_key=KEY,
                             on_retry=events.append, **client_options) as client:
            with pytest.raises(TransientError) as caught:
                await client.submit(body(), idempotency_key="sent-1")
        return caught.value

    error = asyncio.run(scenario({"retry_attempts": 3}))
    assert not isinstance(error, ApiUnreachable)
    assert "outcome unknown" in str(error)
    assert isinstance(error.__cause__, ApiUnreachable)
    assert len(events) == retries


def test_refused_connection_after_the_api_answered_is_retried() -> None:
    """Once the API has answered, a refused connection (a restart, say) is retried like any
    network failure before it is an ApiUnreachable."""
    events: list[RetryEvent] = []
    with simulator() as sim:
        base_url = sim.base_url

        async def scenario(client: ApiClient) -> ApiUnreachable:
            await client.balance()
            sim.stop()
            with pytest.raises(ApiUnreachable) as caught:
                await client.balance()
            return caught.value

        error = run(base_url, scenario, events=events, retry_attempts=3)
    assert error.retryable
    assert len(events) == 2


def test_proxy_environment_is_not_used_for_a_loopback_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP(S)_PROXY without NO_PROXY does not divert calls to a simulator on 127.0.0.1."""
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, dead_proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with simulator() as sim:

        async def scenario(client: ApiClient) -> TaskState:
            return await client.submit(body(), idempotency_key="proxy-1")

        state = run(sim.base_url, scenario, retry_attempts=1)
    assert state.task_id


def test_submit_and_poll_say_when_they_were_asked() -> None:
    """Each TaskState carries the monotonic time its request was sent, for poll pacing."""
    with simulator() as sim:

        async def scenario(client: ApiClient) -> tuple[float, TaskState, TaskState, float]:
            before = time.monotonic()
            created = await client.submit(body(), idempotency_key="asked-1")
            polled = await client.poll(created.task_id)
            return before, created, polled, time.monotonic()

        before, created, polled, after = run(sim.base_url, scenario)
    assert created.asked_at is not None
    assert polled.asked_at is not None
    assert before <= created.asked_at <= polled.asked_at <= after


# -- downloads ---------------------------------------------------------------------


def test_truncated_download_is_retried_then_transient(tmp_path: Path) -> None:
    """A download cut short is retried by download() itself; if it persists, TransientError."""
    events: list[RetryEvent] = []
    dest = tmp_path / "img.part"
    with simulator(faults={"download.truncate": 1.0}) as sim:

        async def scenario(client: ApiClient) -> TransientError:
            created = await client.submit(body(), idempotency_key="trunc-1")
            done = await finish(client, created.task_id)
            with pytest.raises(TransientError) as caught:
                await client.download(done.images[0].url, dest)
            return caught.value

        error = run(sim.base_url, scenario, events=events, retry_attempts=3)
        ledger = sim.ledger()
    assert "ClientPayloadError" in str(error)  # aiohttp's name for a body cut short
    assert [e.operation for e in events] == ["download", "download"]
    assert (ledger.downloads, ledger.downloads_ok) == (3, 0)
    assert not dest.exists()


def test_expired_url_is_rejected_and_a_re_poll_gives_a_fresh_one(tmp_path: Path) -> None:
    """A URL past its expires_at is a RequestRejected (410); re-polling yields a working URL."""
    clock = ManualClock()
    events: list[RetryEvent] = []
    with simulator(clock=clock, latency=(0.0, 0.0), url_ttl=60.0) as sim:

        async def scenario(client: ApiClient) -> tuple[RequestRejected, str, str, Downloaded]:
            created = await client.submit(body(), idempotency_key="exp-1")
            done = await finish(client, created.task_id)
            old = done.images[0]
            assert old.expires_at is not None
            clock.advance(old.expires_at - clock() + 1)
            with pytest.raises(RequestRejected) as caught:
                await client.download(old.url, tmp_path / "a.part")
            fresh = (await client.poll(created.task_id)).images[0]
            got = await client.download(fresh.url, tmp_path / "b.part")
            return caught.value, old.url, fresh.url, got

        error, old_url, fresh_url, got = run(sim.base_url, scenario, events=events)
    assert error.status == 410
    assert "re-poll" in str(error)
    assert fresh_url != old_url
    assert got.width == 1024
    assert events == []
    assert not (tmp_path / "a.part").exists()


def test_injected_expired_download_is_rejected_at_once(tmp_path: Path) -> None:
    """The simulator's download.expired fault (410) is a RequestRejected without retries."""
    events: list[RetryEvent] = []
    with simulator(faults={"download.expired": 1.0}) as sim:

        async def scenario(client: ApiClient) -> RequestRejected:
            created = await client.submit(body(), idempotency_key="exp-2")
            done = await finish(client, created.task_id)
            with pytest.raises(RequestRejected) as caught:
                await client.download(done.images[0].url, tmp_path / "a.part")
            return caught.value

        error = run(sim.base_url, scenario, events=events)
        ledger = sim.ledger()
    assert error.status == 410
    assert events == []
    assert ledger.downloads == 1


def test_download_larger_than_the_limit_is_rejected(tmp_path: Path) -> None:
    """An image bigger than max_download_bytes is refused, and the partial file removed."""
    with simulator() as sim:

        async def scenario(client: ApiClient) -> RequestRejected:
            created = await client.submit(body(), idempotency_key="big-1")
            done = await finish(client, created.task_id)
            with pytest.raises(RequestRejected) as caught:
                await client.download(done.images[0].url, tmp_path / "a.part")
            return caught.value

        error = run(sim.base_url, scenario, max_download_bytes=1000)
    assert "1,000-byte limit" in str(error)
    assert not (tmp_path / "a.part").exists()


# -- the key never leaks -------------------------------------------------------------


async def _echo_key(request: web.BaseRequest) -> web.StreamResponse:
    """A hostile server: every reply quotes the Authorization header back."""
    auth = request.headers.get("Authorization", "")
    path = request.path
    if path.endswith("/timeout"):
        await asyncio.sleep(60)  # the client times out first; its hang-up cancels this
    if path.endswith("/reset"):
        # A garbled status line quoting the key, then a hang-up: aiohttp's own error
        # message quotes the line, key and all.
        transport = request.transport
        assert transport is not None
        transport.write(f"HTTP/1.1 2OO connection reset; sent {auth}\r\n\r\n".encode())
        transport.close()
        return web.Response()
    status = int(path.rsplit("/", 1)[-1]) if path.rsplit("/", 1)[-1].isdigit() else 400
    headers = {"Location": f"https://elsewhere/?k={auth}"} if 300 <= status < 400 else {}
    if path.startswith("/files/"):
        return web.Response(status=status, text=f"denied for {auth}", headers=headers)
    return web.json_response({"message": f"bad token {auth}"}, status=status, headers=headers)


def _ours(error: BaseException) -> Iterator[BaseException]:
    """The error and every imgspec error chained under it (aiohttp's own are not ours)."""
    seen: BaseException | None = error
    while isinstance(seen, ApiError):
        yield seen
        seen = seen.__cause__ or seen.__context__


def test_the_key_never_leaks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No error path puts the key in str(), repr(), a retry event or a log record."""
    caplog.set_level(logging.DEBUG)
    events: list[RetryEvent] = []
    errors: list[BaseException] = []

    async def collect(call: Awaitable[Any]) -> None:
        with pytest.raises(ApiError) as caught:
            await call
        errors.append(caught.value)

    def hostile(client: ApiClient, base_url: str) -> Iterator[Awaitable[Any]]:
        # A generator, so a failing call leaves no un-awaited coroutines behind.
        for status in (301, 400, 401, 402, 404, 409, 422, 429, 500, 503):
            yield client.poll(str(status))
        yield client.poll("timeout")
        yield client.poll("reset")
        yield client.submit(body(), idempotency_key="k")
        for name in ("403", "410", "502", "reset"):
            yield client.download(f"{base_url}/files/{name}", tmp_path / "x")

    async def against_hostile() -> None:
        async with scripted(_echo_key) as base_url, ApiClient(
            base_url=base_url,
            api_key=KEY,
            on_retry=events.append,
            retry_attempts=2,
            timeout=0.5,
        ) as client:
            assert KEY not in repr(client)
            for call in hostile(client, base_url):
                await collect(call)

    asyncio.run(against_hostile())

    with simulator(faults={"poll.malformed": 1.0, "download.truncate": 1.0}) as sim:

        async def against_simulator(client: ApiClient) -> None:
            await collect(client.submit(body(n=9), idempotency_key="leak-1"))
            created = await client.submit(body(), idempotency_key="leak-2")
            await collect(client.poll(created.task_id))
            await collect(client.download(f"{sim.base_url}/files/nope.png", tmp_path / "y"))

        run(sim.base_url, against_simulator, events=events, retry_attempts=2)
        run(sim.base_url, lambda c: collect(c.poll("task_x")), api_key=WRONG_KEY)

    kinds = {type(e) for e in errors}
    assert kinds == {AuthError, BalanceExhausted, RequestRejected, TransientError}
    assert len(errors) == 21
    texts = [text for e in errors for c in _ours(e) for text in (str(c), repr(c))]
    texts += [repr(e) for e in events] + [f"{r.getMessage()} {r.__dict__}" for r in caplog.records]
    for secret in (KEY, WRONG_KEY):
        assert not [t for t in texts if secret in t]
    assert any("***" in t for t in texts)  # the hostile echoes were there, and masked


@pytest.mark.parametrize(
    ("status", "content"),
    [
        (200, b'{"code": 200, "data": {"id": "t", "progress": ' + b"9" * 5000 + b"}}"),
        (200, b"[" * 100_000),
        (200, b'{"code": 200, "data": {"id": "t", "status": "processing", "progress": NaN, '
              b'"estimated_time": -1e999}}'),
        (200, b'{"code": [], "data": {}}'),
        (200, b"\xff\xfe not utf-8"),
        (503, b"[" * 100_000),
        (429, b'{"message": ' + b"1" * 5000 + b"}"),
    ],
    ids=["5000-digit-number", "deep-nesting", "nan-and-overflow", "list-code", "not-utf8",
         "deep-error-body", "huge-number-error-body"],
)
def test_hostile_poll_bodies_are_api_errors_not_crashes(status: int, content: bytes) -> None:
    """A poll reply no JSON decoder can use ends as an ApiError (retried as malformed or
    by status), never as a foreign exception, which the CLI would call an internal error."""

    async def reply(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=status, body=content)

    async def poll(client: ApiClient) -> TaskState:
        return await client.poll("t")

    try:
        state = run_scripted(reply, poll, retry_attempts=2)
    except ApiError:
        return
    assert state.progress is None
    assert state.estimated_time is None


def test_result_url_with_a_forbidden_scheme_is_refused_before_any_request(
        tmp_path: Path) -> None:
    """download() refuses file://, gopher:// and remote plain-http URLs without a request."""
    requests: list[str] = []

    async def record(request: web.BaseRequest) -> web.StreamResponse:
        requests.append(request.path)
        return web.Response(status=200, body=b"")

    async def fetch(client: ApiClient) -> list[str]:
        reasons = []
        for url in ("file:///etc/passwd", "gopher://localhost/1/a.png",
                    "http://cdn.example.com/a.png"):
            with pytest.raises(RequestRejected) as caught:
                await client.download(url, tmp_path / "x.png")
            reasons.append(str(caught.value))
        return reasons

    reasons = run_scripted(record, fetch)
    assert "file: scheme" in reasons[0]
    assert "gopher: scheme" in reasons[1]
    assert "plain http to a remote host" in reasons[2]
    assert not requests
    assert not (tmp_path / "x.png").exists()


def test_dripping_download_is_rejected_below_the_minimum_rate(tmp_path: Path) -> None:
    """A host sending a byte a second is cut off after one rate window, as too slow, and
    the partial file is removed."""
    with simulator(faults={"download.drip": 1.0}) as sim:

        async def scenario(client: ApiClient) -> str:
            created = await client.submit(body(), idempotency_key="drip")
            state = await finish(client, created.task_id)
            with pytest.raises(RequestRejected) as caught:
                await client.download(state.images[0].url, tmp_path / "x.png")
            return str(caught.value)

        limits = DownloadLimits(deadline=30.0, min_rate=100.0, window=0.3)
        message = run(sim.base_url, scenario, download_limits=limits)
    assert "below the minimum of 100 bytes/s" in message
    assert not (tmp_path / "x.png").exists()


def test_download_limits_come_from_the_environment() -> None:
    """IMGSPEC_DOWNLOAD_* override the defaults; a bad value is a usage error naming it."""

    assert DownloadLimits.from_env({}) == DownloadLimits(300.0, 1024.0, 30.0)
    limits = DownloadLimits.from_env({"IMGSPEC_DOWNLOAD_DEADLINE": "5",
                                      "IMGSPEC_DOWNLOAD_MIN_RATE": "0",
                                      "IMGSPEC_DOWNLOAD_RATE_WINDOW": "2"})
    assert limits == DownloadLimits(5.0, 0.0, 2.0)
    with pytest.raises(UsageError, match="IMGSPEC_DOWNLOAD_DEADLINE"):
        DownloadLimits.from_env({"IMGSPEC_DOWNLOAD_DEADLINE": "soon"})
    with pytest.raises(UsageError, match="positive"):
        DownloadLimits.from_env({"IMGSPEC_DOWNLOAD_RATE_WINDOW": "0"})


# -- redirects, proxies, base URLs -----------------------------------------------------


def _redirect(status: int, location: str) -> web.Response:
    """A redirect reply."""
    return web.Response(status=status, headers={"Location": location})


def _png(side: int = 64) -> bytes:
    """A small real PNG image."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (200, 40, 40)).save(out, format="PNG")
    return out.getvalue()


def test_download_redirects_carry_the_key_only_while_at_the_api_origin(tmp_path: Path) -> None:
    """A download follows redirects; the key goes to the API origin's hops only, and stays
    dropped once a hop has left it, even when a later hop comes back."""
    seen: list[tuple[str, str, str]] = []  # (server, path, Authorization)
    image = _png()

    def recorder(name: str, routes: dict[str, Callable[[], web.StreamResponse]]) -> Handler:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            seen.append((name, request.path, request.headers.get("Authorization", "")))
            return routes[request.path]()
        return handle

    async def scenario() -> Downloaded:
        api_routes: dict[str, Callable[[], web.StreamResponse]] = {}
        cdn_routes: dict[str, Callable[[], web.StreamResponse]] = {}
        async with scripted(recorder("api", api_routes)) as api, \
                scripted(recorder("cdn", cdn_routes)) as cdn:
            api_routes["/files/start"] = lambda: _redirect(302, "/files/same")
            api_routes["/files/same"] = lambda: _redirect(307, f"{cdn}/img")
            cdn_routes["/img"] = lambda: _redirect(302, f"{api}/files/back")
            api_routes["/files/back"] = lambda: web.Response(body=image,
                                                             content_type="image/png")
            async with ApiClient(base_url=api, api_key=KEY) as client:
                return await client.download(f"{api}/files/start", tmp_path / "a.png")

    got = asyncio.run(scenario())
    assert seen == [("api", "/files/start", f"Bearer {KEY}"),
                    ("api", "/files/same", f"Bearer {KEY}"),
                    ("cdn", "/img", ""),
                    ("api", "/files/back", "")]
    assert got == Downloaded(hashlib.sha256(image).hexdigest(), len(image), 64, 64, "PNG")


def test_redirect_on_an_api_call_is_an_error_naming_the_base_url() -> None:
    """A 3xx to a poll is not followed: it fails at once, telling the user to check the
    base URL."""
    paths: list[str] = []

    async def moved(request: web.BaseRequest) -> web.StreamResponse:
        paths.append(request.path)
        return web.Response(status=301, headers={"Location": "https://api.example.com/v1/"})

    async def poll(client: ApiClient) -> RequestRejected:
        with pytest.raises(RequestRejected) as caught:
            await client.poll("task_1")
        return caught.value

    error = run_scripted(moved, poll)
    assert "unexpected redirect to https://api.example.com/v1/: check the base URL" in str(error)
    assert paths == ["/v1/tasks/task_1"]


def test_endless_download_redirects_are_rejected(tmp_path: Path) -> None:
    """A download redirected in a loop stops after 20 redirects, as a RequestRejected."""
    paths: list[str] = []

    async def loop(request: web.BaseRequest) -> web.StreamResponse:
        paths.append(request.path)
        return _redirect(302, "/files/again")

    async def scenario() -> RequestRejected:
        async with scripted(loop) as api, ApiClient(base_url=api, api_key=KEY) as client:
            with pytest.raises(RequestRejected) as caught:
                await client.download(f"{api}/files/a.png", tmp_path / "a.png")
            return caught.value

    error = asyncio.run(scenario())
    assert "more than 20 redirects" in str(error)
    assert len(paths) == 21
    assert not (tmp_path / "a.png").exists()


def test_proxy_environment_tunnels_to_a_remote_api_without_seeing_the_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY (with its credentials) carries the calls to a remote https API origin in
    a CONNECT tunnel: the proxy is asked for the host, and never sees the key."""
    seen: list[tuple[str, str, str, str]] = []

    async def proxy(request: web.BaseRequest) -> web.StreamResponse:
        seen.append((request.method, request.host, request.headers.get("Authorization", ""),
                     request.headers.get("Proxy-Authorization", "")))
        return web.Response(status=403, text="no tunnels here")

    async def scenario() -> ApiError:
        async with scripted(proxy) as proxy_url:
            monkeypatch.setenv("HTTPS_PROXY", proxy_url.replace("://", "://user:pw@"))
            async with ApiClient(base_url="https://api.example.test", api_key=KEY,
                                 retry_attempts=1) as client:
                with pytest.raises(ApiError) as caught:
                    await client.balance()
                return caught.value

    for name in ("NO_PROXY", "no_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    error = asyncio.run(scenario())
    assert KEY not in str(error)
    assert seen == [("CONNECT", "api.example.test", "",
                     "Basic " + base64.b64encode(b"user:pw").decode())]


def test_plain_http_to_a_remote_api_is_refused_before_any_request() -> None:
    """An http base URL naming another machine is a UsageError when the client is made:
    the key would cross the network in clear."""
    with pytest.raises(UsageError, match="plain http to a host other than this machine"):
        ApiClient(base_url="http://api.example.test", api_key=KEY)


def test_base_url_with_a_port_out_of_range_is_a_usage_error() -> None:
    """A base URL whose port is past 65535 is refused as a usage error, not a crash."""
    with pytest.raises(UsageError, match="cannot be parsed"):
        ApiClient(base_url="http://127.0.0.1:99999", api_key=KEY)


def test_local_file_error_during_a_download_is_not_retried(tmp_path: Path) -> None:
    """A download whose file cannot be written fails once, naming the local file, with no
    retry (and no network error is mistaken for it)."""
    events: list[RetryEvent] = []
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    with simulator() as sim:

        async def scenario(client: ApiClient) -> TransientError:
            created = await client.submit(body(), idempotency_key="disk-1")
            done = await finish(client, created.task_id)
            with pytest.raises(TransientError) as caught:
                await client.download(done.images[0].url, blocker / "x.png.part")
            return caught.value

        error = run(sim.base_url, scenario, events=events)
        ledger = sim.ledger()
    assert f"download: local file {blocker / 'x.png.part'}" in str(error)
    assert isinstance(error.__cause__, OSError)
    assert not error.retryable
    assert events == []
    assert ledger.downloads == 1


def test_submit_that_times_out_is_transient_and_retried_with_its_key() -> None:
    """A POST with no reply in time has an unknown outcome: a TransientError, retried with
    the same Idempotency-Key (so the server could only replay it)."""
    keys: list[str] = []

    async def silent(request: web.BaseRequest) -> web.StreamResponse:
        keys.append(request.headers.get("Idempotency-Key", ""))
        await asyncio.sleep(60)  # the client times out first; its hang-up cancels this
        return web.Response()

    async def submit(client: ApiClient) -> TransientError:
        with pytest.raises(TransientError) as caught:
            await client.submit(body(), idempotency_key="slow-1")
        return caught.value

    error = run_scripted(silent, submit, timeout=0.3, retry_attempts=2)
    assert str(error).startswith("submit: timed out")
    assert isinstance(error.__cause__, TimeoutError)
    assert error.retryable
    assert keys == ["slow-1", "slow-1"]
