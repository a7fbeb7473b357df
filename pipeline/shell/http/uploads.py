"""Local input images by upload: each image uploaded once per content, its URL sent.

The upload page (``POST /v1/uploads/images``) says generation endpoints no longer
take base64 data; the wan2.7 page still lists it. The manifest's ``inputs``
chooses: ``upload`` (the default) or ``inline`` (data URIs, :mod:`pipeline.shell.http.sendable`).

With ``upload``, every local image a submission sends (a file of the manifest's
folder, or an upstream image on disk whose link expired) is hashed in a worker
thread; a URL recorded in the lockfile's ``uploads`` for that sha256 is reused
while it has ``margin`` seconds left, else the image is uploaded (once, however
many submissions want it at the same moment) and the new URL journaled before it
is returned. So a submission is recorded as ``submitting`` only after every upload
it sends is confirmed and durable: a paid task is never tied to an unconfirmed
upload, and replaying its Idempotency-Key sends the very same body. An upload
whose outcome is unknown is simply redone (uploads are free).

What is read is what the plan hashed (:func:`pipeline.shell.http.sendable.read_checked`),
and what is uploaded is checked as an input image first: a file swapped between
plan and run is neither uploaded nor paid for. A recorded URL is reused only on
the API's site (:class:`pipeline.core.apimart.links.LinkTrust`) or on a host the API's own
upload replies named in this run; any other is ignored, with a warning, and the
image uploaded again, so a lockfile cannot make a run pay for edits of someone
else's image.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from pipeline.core.apimart.images import check_image
from pipeline.core.apimart.links import LinkTrust, Origin, host_of, origin_of
from pipeline.core.lock.lockfile import Upload
from pipeline.core.manifest.model import InputsMode
from pipeline.core.manifest.workspace import Workspace
from pipeline.errors import InputChanged
from pipeline.shell.http.client import Uploaded
from pipeline.shell.http.sendable import (
    ReadOutput,
    ReadWorkspace,
    Send,
    Source,
    encode,
    read_checked,
)
from pipeline.shell.store.lockstore import LockStore

# A URL is reused only while it lives this much longer: a task may wait in the API's
# queue, and the run itself may go on for hours, before the image is fetched.
UPLOAD_MARGIN: Final = 6 * 3600.0


class Uploader(Protocol):
    """What uploads need of the API client (:meth:`client.ApiClient.upload_image`)."""

    async def upload_image(self, data: bytes, *, filename: str,
                           content_type: str) -> Uploaded: ...


@dataclass(frozen=True, slots=True)
class _Local:
    """A local image read for sending: its bytes, their sha256, and how to name it."""

    data: bytes
    sha256: str
    filename: str
    mime: str


def _read(source: ReadWorkspace | ReadOutput, workspace: Workspace) -> _Local:
    """(Worker thread.) Read one local image; ``InputChanged`` unless it is the planned one."""
    data, name = read_checked(source, workspace)
    return _Local(data, source.sha256, name, source.mime)


def _check(local: _Local) -> None:
    """(Worker thread.) Refuse to upload what the API would refuse as an input image."""
    _info, problems = check_image(local.data)
    if problems:
        raise InputChanged(f"input {local.filename} is not an image the API takes "
                           f"({problems[0].message}); nothing was sent for it: fix the file "
                           "and run again")


class Inputs:
    """Turns a submission's sources into its ``image_urls``; one per run (shares uploads)."""

    def __init__(self, *, mode: InputsMode, client: Uploader, store: LockStore,
                 workspace: Workspace, clock: Callable[[], float], links: LinkTrust,
                 warn: Callable[[str], None] = lambda _message: None,
                 margin: float = UPLOAD_MARGIN) -> None:
        self.mode = mode
        self.client = client
        self.store = store
        self.workspace = workspace
        self.clock = clock
        self.links = links
        self.warn = warn
        self.margin = margin
        self._pending: dict[str, asyncio.Future[str]] = {}  # sha256 -> URL, while uploading
        self._answered: set[Origin] = set()  # origins the API's upload replies named
        self.uploaded = 0  # uploads this run made

    async def image_urls(self, sources: Sequence[Source], *, replay: bool = False) -> list[str]:
        """The strings to send; with ``upload``, only once each upload is durable.

        ``replay``: the submission replays an Idempotency-Key, so a recorded URL is
        reused while it has not expired at all (a new one would change the body).

        Raises the client's ApiError when an upload fails (TransientError once its
        retries are spent; RequestRejected for a refused image), and ``InputChanged``
        for a file that is not the planned one or not an image: nothing is sent then.
        """
        if self.mode == "inline":
            return await asyncio.to_thread(encode, sources, self.workspace)
        out: list[str] = []
        for source in sources:
            if isinstance(source, Send):
                out.append(source.text)
                continue
            local = await asyncio.to_thread(_read, source, self.workspace)
            out.append(await self._url(local, replay=replay))
        return out

    def _trusted(self, url: str) -> str | None:
        """A recorded upload URL as it may be sent now; None when it is foreign."""
        found = self.links.recorded(url)
        if found is None and origin_of(url) in self._answered:
            found = url
        return found

    async def _url(self, local: _Local, *, replay: bool) -> str:
        margin = 0.0 if replay else self.margin
        known = self.store.uploads.get(local.sha256)
        if known is not None and known.expires_at > self.clock() + margin:
            trusted = self._trusted(known.url)
            if trusted is not None:
                # A replayed key sends the URL its first submission sent, byte for byte: a
                # --simulate link moved onto this process's port would be another body.
                return known.url if replay else trusted
        else:
            known = None  # expired: nothing to trust or distrust
        pending = self._pending.get(local.sha256)
        if pending is not None:  # another submission is uploading the same image
            return await asyncio.shield(pending)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[local.sha256] = future
        try:
            await asyncio.to_thread(_check, local)
            got = await self.client.upload_image(local.data, filename=local.filename,
                                                 content_type=local.mime)
            answered = origin_of(got.url)
            if answered is not None:
                self._answered.add(answered)
            await self.store.commit_upload(local.sha256, Upload(got.url, got.expires_at))
            self.uploaded += 1
            url = got.url
            if known is not None and self._trusted(known.url) is None:
                self.warn(f"ignored the lockfile's upload URL for {local.filename} on "
                          f"{host_of(known.url)}, not the API's; uploaded the image again")
            elif known is not None and replay:
                # The API answers uploads on that host after all: a replayed key sends the
                # URL its first submission sent, or the API would see another body.
                url = known.url
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._pending[local.sha256]
        future.set_result(url)
        return url
