"""Carrying out a ``reuse``: a paid result's images into the instance's folder, for nothing.

Each image is copied from its file when the file's bytes have the recorded
sha256 (checked on the bytes written, never on the name), else downloaded from
its recorded link and checked the same way (``fetch_by_link``, which the run's
``refetch`` of a damaged image uses too: only a link on the API's site is fetched,
as ``LinkTrust`` says, and ``ApiClient.download`` refuses one it must not
follow). The new lock entry records the images, the task that made them, where
they came from (``reused_from``) and ``charged`` 0: the money was counted where
it was paid.

When an image can be had neither way, nothing is paid here: the entry is
recorded as failed with the reason, so the next plan prices the instance
(``retry``), as ``refetch`` does for a dead link. A transient download failure
leaves the instance unfinished, to be reused by the next run.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
from dataclasses import replace
from decimal import Decimal
from pathlib import Path, PurePath

from pipeline.core.apimart.links import LinkTrust, host_of
from pipeline.core.lock.lockfile import LockEntry, Output
from pipeline.core.lock.reuse import PaidImage, link_valid
from pipeline.core.planning.plan import PlanItem, resolved_request
from pipeline.errors import RequestRejected, TransientError
from pipeline.shell.http.client import ApiClient
from pipeline.shell.http.downloads import Downloaded, inspect_image
from pipeline.shell.store.files import write_all
from pipeline.shell.store.lockstore import LockStore
from pipeline.shell.store.outputs import utc_now
from pipeline.shell.store.store import OutputStore

# Images are at most tens of MB: read whole, hashed and written in one go.
MAX_IMAGE_BYTES = 64 * 1024 * 1024


class Unfinished(Exception):
    """A download failed for now; the instance is left for the next run."""


class Unavailable(Exception):
    """An image can be had neither from its file nor from its link."""


async def fetch_by_link(url: str | None, sha256: str, *, links: LinkTrust, client: ApiClient,
                        outputs: OutputStore, job: str, key: str, index: int,
                        previous: str | None) -> tuple[PurePath, Downloaded]:
    """A recorded image, downloaded again by its recorded link and put in its place (its
    final path and what was downloaded): the very image recorded (``sha256``), or
    ``Unavailable`` saying why not (a link off the API's site is not fetched);
    ``Unfinished`` when the download failed in a way that may pass."""
    trusted = links.recorded(url)
    if trusted is None:
        raise Unavailable(f"the recorded link on {host_of(url or '')} is not the API's; "
                          "it was not fetched")
    temp = outputs.temp_path(job, key, index)
    try:
        got = await client.download(trusted, temp)
    except RequestRejected as exc:
        temp.unlink(missing_ok=True)
        raise Unavailable(f"the link no longer works ({exc})") from exc
    except TransientError as exc:
        temp.unlink(missing_ok=True)
        raise Unfinished(f"download failed: {exc}") from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if got.sha256 != sha256:
        temp.unlink(missing_ok=True)
        raise Unavailable("the link now serves a different image")
    final = await asyncio.to_thread(functools.partial(
        outputs.install, temp, job, key, index, got.format, sha256=got.sha256,
        previous=previous))
    return final, got


async def adopt(item: PlanItem, *, client: ApiClient, outputs: OutputStore,
                store: LockStore, now: float, links: LinkTrust) -> LockEntry:
    """The ``done`` entry of ``item``, its images in place; raises ``Unfinished`` or
    ``Unavailable`` (nothing recorded: the caller records the outcome)."""
    reuse = item.reuse
    assert reuse is not None
    inst = item.instance
    previous = store.get(inst.key)
    made: list[Output] = []
    if reuse.by_task:
        made = await _from_task(item, client=client, outputs=outputs, previous=previous)
    for index, image in enumerate(reuse.result.images):
        prior = previous.outputs[index].path if previous is not None and index < len(
            previous.outputs) else None
        made.append(await _one(item, index, image, client=client, outputs=outputs, now=now,
                               links=links, previous=prior))
    request = resolved_request(inst, store.entries) or dict(inst.request)
    stamp = utc_now()
    return LockEntry(
        key=inst.key, job=inst.job, fingerprint=item.fingerprint or "", status="done",
        request=request, matrix=dict(inst.matrix), seed=inst.seed, idempotency_key=None,
        task_id=reuse.result.task_id, attempts=0, last_error=None, cost=Decimal(0),
        charged=previous.charged if previous is not None else Decimal(0),
        created_at=stamp, updated_at=stamp, outputs=tuple(made), reroll=item.reroll,
        reused_from=reuse.result.source)


def unavailable(item: PlanItem, store: LockStore, message: str) -> LockEntry:
    """The ``failed`` entry recorded when the result cannot be reused: the next plan
    prices the instance (``retry``) instead of promising it free again."""
    inst = item.instance
    previous = store.get(inst.key)
    stamp = utc_now()
    return LockEntry(
        key=inst.key, job=inst.job, fingerprint=item.fingerprint or "", status="failed",
        request=resolved_request(inst, store.entries) or dict(inst.request),
        matrix=dict(inst.matrix), seed=inst.seed, attempts=0,
        last_error=f"could not reuse {item.reuse.result.source if item.reuse else '-'}: "
                   f"{message}",
        charged=previous.charged if previous is not None else Decimal(0),
        created_at=stamp, updated_at=stamp, reroll=item.reroll)


async def _one(item: PlanItem, index: int, image: PaidImage, *, client: ApiClient,
               outputs: OutputStore, now: float, links: LinkTrust,
               previous: str | None) -> Output:
    job, key = item.job, item.key
    if image.file is not None:
        copied = await asyncio.to_thread(_copy, image, outputs, job, key, index, previous)
        if copied is not None:
            return copied
    if not link_valid(image, now):
        raise Unavailable(f"image {index}: its file is gone or changed (sha256 differs) and "
                          "its link has expired")
    recorded = image.output
    try:
        final, got = await fetch_by_link(recorded.url, recorded.sha256, links=links,
                                         client=client, outputs=outputs, job=job, key=key,
                                         index=index, previous=previous)
    except Unavailable as exc:
        raise Unavailable(f"image {index}: its file is gone or changed, and {exc}") from exc
    return replace(recorded, path=outputs.relative(final), bytes=got.bytes, width=got.width,
                   height=got.height)


async def _from_task(item: PlanItem, *, client: ApiClient, outputs: OutputStore,
                     previous: LockEntry | None) -> list[Output]:
    """The images of the result's task, asked of the API (a poll costs nothing)."""
    assert item.reuse is not None
    task_id = item.reuse.result.task_id or ""
    job, key = item.job, item.key
    try:
        state = await client.poll(task_id)
    except RequestRejected as exc:
        raise Unavailable(f"its task {task_id} is unknown to the API ({exc})") from exc
    except TransientError as exc:
        raise Unfinished(f"asking for task {task_id} failed: {exc}") from exc
    if state.status != "completed" or not state.images:
        raise Unavailable(f"its task {task_id} has no images to give ({state.status})")
    made = []
    for index, image in enumerate(state.images):
        temp = outputs.temp_path(job, key, index)
        try:
            got = await client.download(image.url, temp)
        except RequestRejected as exc:
            raise Unavailable(f"image {index} of task {task_id}: its link no longer works "
                              f"({exc})") from exc
        except TransientError as exc:
            raise Unfinished(f"download failed: {exc}") from exc
        prior = (previous.outputs[index].path
                 if previous is not None and index < len(previous.outputs) else None)
        final = await asyncio.to_thread(functools.partial(
            outputs.install, temp, job, key, index, got.format, sha256=got.sha256,
            previous=prior))
        made.append(Output(outputs.relative(final), got.sha256, got.bytes, got.width,
                           got.height, image.url, image.expires_at))
    return made


def _copy(image: PaidImage, outputs: OutputStore, job: str, key: str, index: int,
          previous: str | None) -> Output | None:
    """(In a worker thread.) The image copied into place if its file's bytes are the
    recorded ones, else None."""
    assert image.file is not None
    recorded = image.output
    try:
        # Not blocking: a FIFO planted where the image was must not hang the run.
        fd = os.open(image.file, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
                     | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_IMAGE_BYTES + 1)
    except OSError:
        return None
    if len(data) != recorded.bytes or hashlib.sha256(data).hexdigest() != recorded.sha256:
        return None
    info = inspect_image(data)
    if info is None:
        return None
    fmt, width, height = info
    temp = outputs.temp_path(job, key, index)
    temp.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    # The bytes written are read back and checked: a copy is trusted by its content only.
    if hashlib.sha256(Path(temp).read_bytes()).hexdigest() != recorded.sha256:
        temp.unlink(missing_ok=True)
        return None
    final = outputs.install(temp, job, key, index, fmt, sha256=recorded.sha256,
                            previous=previous)
    return replace(recorded, path=outputs.relative(final), width=width, height=height)
