"""The ``image_urls`` a submission sends: URLs as they are, local images as data URIs.

This is the ``inputs: inline`` way; with ``inputs: upload`` (the default),
:mod:`pipeline.uploads` sends the local images of ``sources`` as uploaded URLs.
Two steps, so the event loop never reads or encodes a file (a 20 MB input takes
28-70 ms to read and base64-encode): ``sources`` decides on the loop what each
input will be, from the lock entries as they are now; ``encode`` reads and
encodes in a worker thread.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ImgspecError
from pipeline.instances import DataInput, FileInput, ImageInput, UrlInput
from pipeline.lockfile import LockEntry
from pipeline.workspace import Workspace


@dataclass(frozen=True, slots=True)
class Send:
    """Sent as it is: an http(s) URL or a data URI already written."""

    text: str


@dataclass(frozen=True, slots=True)
class ReadWorkspace:
    """A local image of the manifest's folder, sent as a data URI."""

    path: str
    mime: str


@dataclass(frozen=True, slots=True)
class ReadOutput:
    """An upstream image on disk (its link is about to expire), sent as a data URI."""

    path: Path
    mime: str


Source = Send | ReadWorkspace | ReadOutput


def sources(inputs: Sequence[ImageInput], entries: Mapping[str, LockEntry], *,
            now: float, url_margin: float,
            output_file: Callable[[str], Path]) -> list[Source]:
    """What to send for each input, decided from the lock entries (on the event loop).

    An upstream image goes by its result link while that is valid for ``url_margin``
    seconds more, else as the file on disk (``output_file`` resolves a lockfile path).
    """
    out: list[Source] = []
    for item in inputs:
        if isinstance(item, UrlInput):
            out.append(Send(item.url))
        elif isinstance(item, DataInput):
            out.append(Send(item.uri))
        elif isinstance(item, FileInput):
            out.append(ReadWorkspace(item.path, item.mime))
        else:
            entry = entries.get(item.key)
            if entry is None or entry.status != "done" or item.index >= len(entry.outputs):
                raise ImgspecError(f"upstream image {item.ref} is not available")
            output = entry.outputs[item.index]
            fresh = output.expires_at is not None and output.expires_at > now + url_margin
            if output.url and fresh:
                out.append(Send(output.url))
            else:
                path = output_file(output.path)
                fmt = path.suffix.lstrip(".").lower()
                out.append(ReadOutput(path, f"image/{'jpeg' if fmt == 'jpg' else fmt}"))
    return out


def encode(items: Sequence[Source], workspace: Workspace) -> list[str]:
    """(In a worker thread.) The ``image_urls`` strings: files read and base64-encoded."""
    out = []
    for item in items:
        if isinstance(item, Send):
            out.append(item.text)
        elif isinstance(item, ReadWorkspace):
            out.append(data_uri(item.mime, workspace.read_bytes(item.path)))
        else:
            out.append(data_uri(item.mime, item.path.read_bytes()))
    return out


def data_uri(mime: str, data: bytes) -> str:
    """``data:MIME;base64,...``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
