"""The ``image_urls`` a submission sends: URLs as they are, local images as data URIs.

This is the ``inputs: inline`` way; with ``inputs: upload`` (the default),
:mod:`pipeline.shell.http.uploads` sends the local images of ``sources`` as uploaded URLs.
Two steps, so the event loop never reads or encodes a file (a 20 MB input takes
tens of milliseconds to read and base64-encode): ``sources`` decides on the loop what each
input will be, from the lock entries as they are now; ``encode`` reads and
encodes in a worker thread.

A local image is sent only when the bytes read are the ones the plan hashed
(:func:`read_checked`): a file changed between plan and run would be paid for
under the plan's fingerprint, so the item fails instead (``InputChanged``) and
the next plan prices the new file. An upstream image's recorded result link is
sent only on the API's site (:class:`pipeline.core.apimart.links.LinkTrust`); otherwise its
file on disk goes.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.core.apimart.links import LinkTrust
from pipeline.core.expansion.instances import DataInput, FileInput, ImageInput, UrlInput
from pipeline.core.lock.lockfile import LockEntry
from pipeline.core.manifest.workspace import Workspace
from pipeline.errors import ImgspecError, InputChanged
from pipeline.shell.store.files import read_regular


@dataclass(frozen=True, slots=True)
class Send:
    """Sent as it is: an http(s) URL or a data URI already written."""

    text: str


@dataclass(frozen=True, slots=True)
class ReadWorkspace:
    """A local image of the manifest's folder, sent as a data URI."""

    path: str
    mime: str
    sha256: str  # what the plan hashed: only these bytes are sent


@dataclass(frozen=True, slots=True)
class ReadOutput:
    """An upstream image on disk (its link is about to expire), sent as a data URI."""

    path: Path
    mime: str
    sha256: str  # what the lockfile recorded for it: only these bytes are sent


Source = Send | ReadWorkspace | ReadOutput


def sources(inputs: Sequence[ImageInput], entries: Mapping[str, LockEntry], *,
            now: float, url_margin: float, output_file: Callable[[str], Path],
            links: LinkTrust) -> list[Source]:
    """What to send for each input, decided from the lock entries (on the event loop).

    An upstream image goes by its result link while that is valid for ``url_margin``
    seconds more and on the API's site (``links``), else as the file on disk
    (``output_file`` resolves a lockfile path).
    """
    out: list[Source] = []
    for item in inputs:
        if isinstance(item, UrlInput):
            out.append(Send(item.url))
        elif isinstance(item, DataInput):
            out.append(Send(item.uri))
        elif isinstance(item, FileInput):
            out.append(ReadWorkspace(item.path, item.mime, item.sha256))
        else:
            entry = entries.get(item.key)
            if entry is None or entry.status != "done" or item.index >= len(entry.outputs):
                raise ImgspecError(f"upstream image {item.ref} is not available")
            output = entry.outputs[item.index]
            fresh = output.expires_at is not None and output.expires_at > now + url_margin
            url = links.recorded(output.url)
            if url and fresh:
                out.append(Send(url))
            else:
                path = output_file(output.path)
                fmt = path.suffix.lstrip(".").lower()
                out.append(ReadOutput(path, f"image/{'jpeg' if fmt == 'jpg' else fmt}",
                                      output.sha256))
    return out


def encode(items: Sequence[Source], workspace: Workspace) -> list[str]:
    """(In a worker thread.) The ``image_urls`` strings: files read and base64-encoded."""
    out = []
    for item in items:
        if isinstance(item, Send):
            out.append(item.text)
        else:
            out.append(data_uri(item.mime, read_checked(item, workspace)[0]))
    return out


def read_checked(source: ReadWorkspace | ReadOutput, workspace: Workspace) -> tuple[bytes, str]:
    """(In a worker thread.) A local image's bytes and name, when they are what the plan
    hashed; ``InputChanged`` otherwise, so nothing is sent for it."""
    if isinstance(source, ReadWorkspace):
        data = workspace.read_bytes(source.path)
        name, shown = PurePosixPath(source.path).name, source.path
    else:
        data = read_regular(source.path)
        name, shown = source.path.name, source.path.as_posix()
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.sha256:
        raise InputChanged(
            f"input {shown} changed since the plan (sha256 {source.sha256[:12]}… planned, "
            f"{digest[:12]}… read); nothing was sent for it: run again to plan it anew")
    return data, name


def data_uri(mime: str, data: bytes) -> str:
    """``data:MIME;base64,...``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
